"""Loading an ARPA file (plain or .gz): w2vlm's native reader against `kenlm.Model`, peak RSS and time.

    python bench/arpa_load.py --kenlm-python bench/.venv-anchors/bin/python lm3.arpa lm5.arpa.gz
    python bench/arpa_load.py --kenlm-python ... --before /path/to/other/checkout/.venv/bin/python lm3.arpa
    python bench/arpa_load.py --kenlm-python ... lm5.w2vlm    # w2vlm's binary form against KenLM on lm5.arpa

Each load runs in a fresh process (the Python running this script for w2vlm; --kenlm-python, an environment with
the kenlm module, for KenLM; --before, optionally, another w2vlm build such as main's, to compare two versions),
--repeats times; the fastest time and the smallest peak are kept. Peak RSS is the process's ru_maxrss after
the load, interpreter and imports included; "load" is that peak less the RSS just before the load call. Ratios
are against KenLM measured in the same invocation. KenLM reads a .gz itself when it was built with zlib.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
which, path = sys.argv[1], sys.argv[2]
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
if which == "kenlm":
    import kenlm
    before = rss_mb()
    t = time.perf_counter()
    model = kenlm.Model(path)
    order = model.order
else:
    import logging
    logging.disable(logging.WARNING)
    from w2vlm.decoder import load_ngram
    before = rss_mb()
    t = time.perf_counter()
    model = load_ngram(path)
    order = model.order
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"s": dt, "peak_mb": peak, "before_mb": before, "order": order}))
"""


def run(python: str, which: str, path: Path) -> dict:
    out = subprocess.run([python, "-c", CHILD, which, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{which} on {path} failed ({python}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(python: str, which: str, path: Path, repeats: int) -> dict:
    runs = [run(python, which, path) for _ in range(repeats)]
    return {
        "s": min(r["s"] for r in runs),
        "peak_mb": min(r["peak_mb"] for r in runs),
        "load_mb": min(r["peak_mb"] - r["before_mb"] for r in runs),
        "order": runs[0]["order"],
    }


def arpa_of(binary: Path) -> Path:
    """The ARPA file a .w2vlm binary was converted from (beside it, same stem): KenLM's reference for it."""
    for suffix in (".arpa", ".arpa.gz"):
        if (cand := binary.with_suffix(suffix)).exists():
            return cand
    raise SystemExit(f"{binary}: no {binary.stem}.arpa(.gz) beside it for KenLM to load as the reference")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="ARPA files (.arpa or .arpa.gz) or w2vlm binaries (.w2vlm: KenLM loads the ARPA file beside it)",
    )
    ap.add_argument("--kenlm-python", required=True, help="a Python with the kenlm module")
    ap.add_argument("--before", help="a Python with another w2vlm build to compare (e.g. main's)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(
        f"{'file':<16} {'MB':>7}  {'loader':<7} {'order':>5} {'peak MB':>8} {'load MB':>8} {'s':>7}  "
        f"{'peak/kenlm':>10} {'s/kenlm':>8}",
        flush=True,
    )
    for f in args.files:
        size_mb = f.stat().st_size / 2**20
        binary = f.suffix == ".w2vlm"
        ken = best(args.kenlm_python, "kenlm", arpa_of(f) if binary else f, args.repeats)
        loaders = [("w2vlm", sys.executable)] + ([("before", args.before)] if args.before and not binary else [])
        rows = [(label, best(py, "w2vlm", f, args.repeats)) for label, py in loaders]
        for label, r in [*rows, ("kenlm", ken)]:
            print(
                f"{f.name:<16} {size_mb:7.0f}  {label:<7} {r['order']:>5} {r['peak_mb']:8.0f} {r['load_mb']:8.0f} "
                f"{r['s']:7.2f}  {r['peak_mb'] / ken['peak_mb']:10.2f} {r['s'] / ken['s']:8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
