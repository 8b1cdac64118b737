"""Seeded mutation fuzzing of w2vlm's file readers and decoder entry points (the targets: fuzz_targets.py).

Case ``i`` of a target is a pure function of ``(seed, target, i)``: seeds are small valid inputs, mutated 1-4
times (bit flips, interesting integers and floats written over fields, deletions, duplications, truncation,
line edits for text). Cases run in a child process; the parent notes the case each child is running, so a
child killed by a signal (a crash), silent for ``--timeout`` seconds (a hang) or growing its peak memory by
more than ``--max-rss-mb`` is reported with the case that did it, and a fresh child continues after it. Any
exception that is not a :class:`~w2vlm.errors.W2vlmError` is a finding too. Findings are written to ``--out``
(the input bytes, replayable with ``--replay``).

    python tests/fuzz/fuzz.py --seconds 600               # every target, 10 minutes each
    python tests/fuzz/fuzz.py --target arpa --cases 20000 --seed 3
    python tests/fuzz/fuzz.py --replay findings/arpa-3-117.bin --target arpa
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_targets import TARGET_TABLE, TARGETS

__all__ = ["TARGETS", "Report", "run_target"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_main(target_name: str, seed: int, start: int, stop: int) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    from w2vlm.errors import W2vlmError

    target = TARGET_TABLE[target_name]
    target.case(seed, 0)  # load seeds and imports before measuring
    out = sys.stdout
    for i in range(start, stop):
        data = target.case(seed, i)
        out.write(f"START {i}\n")
        out.flush()
        before = _peak_rss_mb()
        try:
            target.run(data, random.Random(i))
        except W2vlmError as e:
            if "out of memory" in str(e):
                out.write(f"FIND {i} memory {str(e)[:300]!r}\n")
        except Exception as e:  # any other exception is a finding: the API promises W2vlmError
            out.write(f"FIND {i} exception {type(e).__module__}.{type(e).__name__}: {str(e)[:300]!r}\n")
        out.write(f"DONE {i} {_peak_rss_mb() - before:.1f}\n")
        out.flush()
    out.write("END\n")
    out.flush()


# ---- parent ----------------------------------------------------------------------------------------------------
@dataclass
class Report:
    target: str
    cases: int = 0
    seconds: float = 0.0
    findings: list[str] = field(default_factory=list)


def run_target(
    target_name: str,
    seed: int,
    cases: int,
    seconds: float,
    timeout: float,
    max_rss_mb: float,
    out_dir: Path | None,
    memory_limit_mb: float,
) -> Report:
    report = Report(target_name)
    began = time.monotonic()
    next_case = 0
    target = TARGET_TABLE[target_name]
    env = dict(os.environ, W2VLM_FUZZ_AS_MB=str(memory_limit_mb))

    def record(i: int, what: str) -> None:
        report.findings.append(f"case {i}: {what}")
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{target_name}-{seed}-{i}.bin").write_bytes(target.case(seed, i))

    while next_case < cases and time.monotonic() - began < seconds:
        batch_end = min(cases, next_case + 2000)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            target_name,
            "--seed",
            str(seed),
            "--start",
            str(next_case),
            "--stop",
            str(batch_end),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        pending = b""  # bytes read from the pipe and not yet split into lines
        current = -1
        started = False
        finished = False
        while True:
            # lines already read come first: select() only knows about bytes still in the pipe
            if b"\n" not in pending:
                # a case has `timeout` seconds; a child starting up (imports, seeds) gets more
                ready, _, _ = select.select([fd], [], [], timeout if started else max(timeout, 300.0))
                if not ready:
                    proc.kill()
                    proc.wait()
                    if current < 0:
                        raise RuntimeError(f"fuzz child for {target_name} did not start within 300 s")
                    record(current, f"hang (no progress for {timeout:g} s)")
                    next_case = current + 1
                    break
                chunk = os.read(fd, 65536)
                pending += chunk
                if chunk and b"\n" not in pending:
                    continue
            if b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                line = raw.decode("utf-8", "replace") + "\n"
                started = True
            else:
                line = ""
            if not line:  # the child died
                rc = proc.wait()
                if current >= 0:
                    kind = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
                    record(current, kind)
                    next_case = current + 1
                else:
                    raise RuntimeError(f"fuzz child for {target_name} failed to start (status {rc})")
                break
            parts = line.split(maxsplit=2)
            if parts[0] == "START":
                current = int(parts[1])
            elif parts[0] == "DONE":
                report.cases += 1
                grown = float(parts[2])
                if grown > max_rss_mb:
                    record(current, f"peak memory grew by {grown:.0f} MB")
                current = -1
                next_case = int(parts[1]) + 1
                if time.monotonic() - began >= seconds:
                    proc.kill()
                    proc.wait()
                    finished = True
                    break
            elif parts[0] == "FIND":
                record(int(parts[1]), parts[2].strip())
            elif parts[0] == "END":
                proc.wait()
                finished = True
                break
        if finished and next_case >= cases:
            break
    report.seconds = time.monotonic() - began
    return report


def _limit_memory() -> None:
    mb = float(os.environ.get("W2VLM_FUZZ_AS_MB", "0") or 0)
    if mb > 0 and "asan" not in os.environ.get("LD_PRELOAD", ""):
        resource.setrlimit(resource.RLIMIT_AS, (int(mb * 1024 * 1024), resource.RLIM_INFINITY))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=[*TARGET_TABLE, "all"], default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=int, default=10**9, help="cases per target (default: until --seconds)")
    ap.add_argument("--seconds", type=float, default=60.0, help="time per target")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds without progress that make a hang")
    ap.add_argument("--max-rss-mb", type=float, default=512.0, help="peak memory growth of one case that is a finding")
    ap.add_argument("--memory-limit-mb", type=float, default=4096.0, help="address-space limit of the child")
    ap.add_argument("--out", type=Path, default=None, help="folder for the inputs of findings")
    ap.add_argument("--replay", type=Path, default=None, help="run one saved input of --target in this process")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _limit_memory()
        child_main(args.child, args.seed, args.start, args.stop)
        return 0
    if args.replay:
        TARGET_TABLE[args.target].run(args.replay.read_bytes(), random.Random(0))
        print("no crash; no exception")
        return 0
    names = TARGETS if args.target == "all" else (args.target,)
    total = 0
    for name in names:
        rep = run_target(
            name, args.seed, args.cases, args.seconds, args.timeout, args.max_rss_mb, args.out, args.memory_limit_mb
        )
        print(f"{name}: {rep.cases} cases in {rep.seconds:.1f} s, {len(rep.findings)} findings", flush=True)
        for f in rep.findings[:50]:
            print(f"  {f}")
        total += len(rep.findings)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
