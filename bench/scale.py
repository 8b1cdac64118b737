"""The decoder at real-world scale (issue 35): big LMs, big vocabularies, beams 10-1000, against the anchors.

    python bench/scale.py --kenlm-python bench/.venv-anchors/bin/python          # everything (hours)
    python bench/scale.py --orders 3 --vocabs 32 1000 --beams 100 --anchors ctc-beam-decoder
    python bench/scale.py --quick                                                 # smoke run, minutes

Steps, each reusing what an earlier run left in ``--workdir``:

1. the 16 M-word corpus of Debian text that ``scale_lm.py`` builds (apt-get download, nothing installed);
2. one LM per ``--orders`` with ``w2vlm build-lm`` (ARPA + unigrams.txt), and its binary form with
   ``w2vlm convert-lm``;
3. loading (``arpa_load.py``, with ``--kenlm-python``): peak RSS and time of the ARPA file and of the binary,
   against ``kenlm.Model`` on the ARPA file, each in a fresh process;
4. decoding (``decoder.py``, one process per setting): w2vlm and the anchors on the same 100 utterances of
   simulated emissions, for every LM x vocabulary (32 = the characters; 256/1000 add multi-letter pieces) x
   beam width: frames/s, the ratio to each anchor, and top-1 agreement with pyctcdecode when it runs.

The table printed at the end has one row per LM x vocabulary x beam.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from scale_lm import build_corpus  # noqa: E402


def w2vlm_cli(*args: str) -> None:
    """The ``w2vlm`` command of this interpreter's environment."""
    subprocess.run([str(Path(sys.executable).with_name("w2vlm")), *args], check=True)


def make_lms(work: Path, orders: list[int]) -> list[Path]:
    corpus = build_corpus(work)
    lms = []
    for n in orders:
        folder = work / f"lm{n}"
        arpa = folder / "lm.arpa"
        if not arpa.exists():
            folder.mkdir(parents=True, exist_ok=True)
            w2vlm_cli("build-lm", str(corpus), "-o", str(arpa), "--order", str(n), "-q")
        if not (folder / "lm.w2vlm").exists():
            w2vlm_cli("convert-lm", str(arpa), "-q")
        lms.append(arpa)
    return lms


def decode_setting(lm: Path, vocab: int, beam: int, anchors: str, utterances: int, out: Path) -> dict:
    cmd = [
        sys.executable,
        str(BENCH / "decoder.py"),
        "--lm",
        str(lm),
        "--vocab",
        str(vocab),
        "--beam-width",
        str(beam),
        "--hotwords",
        "0",
        "--threads",
        "1",
        "--utterances",
        str(utterances),
        "--json",
        str(out),
    ]
    cmd += ["--anchors", anchors] if anchors else ["--no-anchors"]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    if not out.exists():
        return {"error": "decoder.py wrote no result"}
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = {r["decoder"]: r for r in data["summary"]["rows"] if r["hotwords"] == 0}
    mine = rows.get("w2vlm batch 1 thr", {}).get("frames_per_s")
    result = {"w2vlm": mine, "anchors": {}}
    for label, r in rows.items():
        if not label.startswith("w2vlm"):
            result["anchors"][label.split(" (")[0]] = r["frames_per_s"]
    agreement = data["summary"].get("agreement", {}).get("0")
    if agreement:
        result["top1"] = agreement["fraction"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / ".data" / "scale")
    ap.add_argument("--orders", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--vocabs", type=int, nargs="+", default=[32, 256, 1000])
    ap.add_argument("--beams", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--anchors", default="ctc-beam-decoder,pyctcdecode", help="decoder.py --anchors ('' for none)")
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--kenlm-python", help="a Python with the kenlm module: also measure loading")
    ap.add_argument("--quick", action="store_true", help="3-gram, 32 labels, beam 10, 10 utterances, no anchors")
    args = ap.parse_args()
    if args.quick:
        args.orders, args.vocabs, args.beams, args.utterances, args.anchors = [3], [32], [10], 10, ""
    args.workdir.mkdir(parents=True, exist_ok=True)
    lms = make_lms(args.workdir, args.orders)
    if args.kenlm_python:
        files = [str(p) for lm in lms for p in (lm, lm.with_name("lm.w2vlm"))]
        subprocess.run(
            [sys.executable, str(BENCH / "arpa_load.py"), "--kenlm-python", args.kenlm_python, *files], check=True
        )
    anchors = [a for a in args.anchors.split(",") if a]
    print(
        f"\n{'LM':<6} {'labels':>6} {'beam':>5} {'w2vlm fr/s':>11}"
        + "".join(f" {a:>18}" for a in anchors)
        + f" {'top-1 = pyctcdecode':>20}"
    )
    for n, lm in zip(args.orders, lms, strict=True):
        for vocab in args.vocabs:
            for beam in args.beams:
                out = args.workdir / f"decode-{n}-{vocab}-{beam}.json"
                r = decode_setting(lm, 0 if vocab <= 32 else vocab, beam, args.anchors, args.utterances, out)
                if "error" in r or r["w2vlm"] is None:
                    print(f"{n}-gram {vocab:>6} {beam:>5}  failed: {r.get('error', 'no w2vlm row')}")
                    continue
                line = f"{n}-gram {vocab:>6} {beam:>5} {r['w2vlm']:>11,.0f}"
                for a in anchors:
                    fps = r["anchors"].get(a)
                    cell = f"{fps:,.0f} ({r['w2vlm'] / fps:.2f}x)" if fps else "n/a"
                    line += f" {cell:>18}"
                top1 = r.get("top1")
                cell = f"{top1:.0%}" if top1 is not None else "n/a"
                line += f" {cell:>20}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
