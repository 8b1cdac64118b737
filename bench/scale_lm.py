"""`w2vlm build-lm` against KenLM's `lmplz` on a corpus of Debian text: time, peak RSS, counts, probabilities.

    python bench/scale_lm.py --lmplz /path/to/kenlm/build/bin/lmplz            # 3-gram and 5-gram, +/- pruning
    python bench/scale_lm.py --lmplz ... --orders 3 --repeats 3 --memory 1G

The corpus (built once in --workdir): GCIDE (dict-gcide), the fortunes (fortunes, fortunes-min), WordNet
(wordnet-base), fetched with `apt-get download` and unpacked with `dpkg -x`, plus the project's text under
.data/corpus/*.txt when present and /usr/share/doc/*/copyright, normalized as build-lm does (a-z and ').
Both tools get the same normalized text; build-lm runs as a user runs it (`w2vlm build-lm ... -q`), lmplz as
`lmplz -o N -S 4G -T tmp [--prune ...]`, each under `/usr/bin/time -v` (wall seconds, peak RSS). Each
configuration runs --repeats times, fastest kept; the ratios compare runs of the same invocation of this
script. The two ARPA files must declare the same n-gram counts, and a sample of every 500th n-gram of
w2vlm's file is looked up in lmplz's: the largest difference in log10 probability and backoff is printed.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ["dict-gcide", "fortunes", "fortunes-min", "wordnet-base"]
ROOT = Path(__file__).resolve().parent.parent


def build_corpus(workdir: Path) -> Path:
    corpus = workdir / "corpus.txt"
    if corpus.exists():
        return corpus
    from w2vlm.lm.normalize import TextNormalizer

    debs, root = workdir / "debs", workdir / "root"
    debs.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES:
        if not list(debs.glob(f"{pkg}_*.deb")):
            subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True, capture_output=True)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    texts: list[str] = []
    with gzip.open(root / "usr/share/dictd/gcide.dict.dz", "rt", encoding="utf-8", errors="replace") as f:
        texts.append(re.sub(r"<[^>]*>", " ", f.read()))
    for p in sorted((root / "usr/share/games/fortunes").glob("*")):
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"):
            texts.append(p.read_text(encoding="utf-8", errors="replace").replace("\n%\n", "\n"))
    for p in sorted((root / "usr/share/wordnet").glob("data.*")):
        glosses = [ln.split(" | ", 1)[1] for ln in p.read_text(errors="replace").splitlines() if " | " in ln]
        texts.append("\n".join(glosses))
    for p in sorted((ROOT / ".data/corpus").glob("*.txt")):
        texts.append(p.read_text(encoding="utf-8", errors="replace"))
    for p in sorted(Path("/usr/share/doc").glob("*/copyright")):
        try:
            texts.append(p.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    norm = TextNormalizer()
    lines = [ln for t in texts for ln in norm(t).split("\n") if ln]
    tmp = corpus.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(corpus)
    return corpus


def timed(cmd: list[str], stdin: Path | None = None, stdout: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of ``cmd`` under /usr/bin/time -v."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        fin = open(stdin, "rb") if stdin else None  # noqa: SIM115
        fout = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
        try:
            t0 = time.perf_counter()
            r = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name, *cmd], stdin=fin, stdout=fout,
                               stderr=subprocess.PIPE)  # fmt: skip
            wall = time.perf_counter() - t0
        finally:
            if fin:
                fin.close()
            if stdout:
                fout.close()  # type: ignore[union-attr]
        if r.returncode != 0:
            sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.decode(errors='replace')[-2000:]}")
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", Path(tf.name).read_text()).group(1))
    return wall, rss / 1024


def declared(path: Path) -> list[int]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("ngram "):
                out.append(int(line.split("=")[1]))
            elif line.startswith("\\1-grams"):
                return out
    return out


def arpa_entries(path: Path, every: int = 0, keys: set[str] | None = None) -> dict[str, tuple[float, float]]:
    """{n-gram: (log10 prob, backoff)} for every ``every``-th line, or for the n-grams in ``keys``."""
    out: dict[str, tuple[float, float]] = {}
    i = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2:
                continue
            i += 1
            if (keys is not None and parts[1] in keys) or (every and i % every == 0):
                out[parts[1]] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
    return out


def compare(mine: Path, theirs: Path) -> str:
    a, b = declared(mine), declared(theirs)
    if a != b:
        return f"COUNTS DIFFER: w2vlm {a} lmplz {b}"
    sample = arpa_entries(mine, every=500)
    other = arpa_entries(theirs, keys=set(sample))
    missing = len(set(sample) - set(other))
    dp = max(abs(sample[k][0] - other[k][0]) for k in other if sample[k][0] > -98)
    db = max(abs(sample[k][1] - other[k][1]) for k in other)
    return f"counts equal {a}; {len(other)} sampled n-grams, missing {missing}, max |dlogp| {dp:.1e} |dbo| {db:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lmplz", required=True, help="KenLM's lmplz binary (built from source)")
    ap.add_argument("--workdir", default=str(ROOT / ".data/scale_lm"), help="corpus and outputs")
    ap.add_argument("--orders", type=int, nargs="+", default=[3, 5])
    ap.add_argument("--prune", default="0 0 1", help="the pruned configuration's --prune ('' to skip)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--memory", default=None, help="build-lm --memory (default: its default)")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work)
    with open(corpus, encoding="utf-8") as f:
        words = sum(len(ln.split()) for ln in f)
    w2vlm = shutil.which("w2vlm", path=str(Path(sys.executable).parent)) or "w2vlm"
    print(f"corpus {corpus}: {words:,} words; load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    configs = [(n, None) for n in args.orders] + ([(n, args.prune) for n in args.orders] if args.prune else [])
    rows = []
    for n, prune in configs:
        tag = f"{n}gram" + ("_pruned" if prune else "")
        mine, theirs = work / f"w2vlm_{tag}.arpa", work / f"lmplz_{tag}.arpa"
        cmd = [w2vlm, "build-lm", str(corpus), "-o", str(mine), "--order", str(n), "-q"]
        cmd += ["--prune", prune] if prune else []
        cmd += ["--memory", args.memory] if args.memory else []
        kcmd = [args.lmplz, "-o", str(n), "-S", "4G", "-T", str(work), "--discount_fallback"]
        kcmd += ["--prune", *prune.split()] if prune else []
        best_w, best_k = (1e9, 0.0), (1e9, 0.0)
        for _ in range(args.repeats):  # interleaved, so both see the same load
            best_w = min(best_w, timed(cmd))
            best_k = min(best_k, timed(kcmd, stdin=corpus, stdout=theirs))
        check = compare(mine, theirs)
        rows.append((tag, best_w, best_k, check))
        print(
            f"{tag:14s} w2vlm {best_w[0]:6.1f} s {best_w[1]:6.0f} MB | lmplz {best_k[0]:6.1f} s {best_k[1]:6.0f} MB"
            f" | time x{best_w[0] / best_k[0]:.2f} RSS x{best_w[1] / best_k[1]:.2f} | {check}",
            flush=True,
        )
    print("\ncommands: " + " ".join(cmd) + "\n          " + " ".join(kcmd) + f" < {corpus}")


if __name__ == "__main__":
    main()
