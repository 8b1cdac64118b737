"""Accuracy of the embedded default model: greedy vs beam search + LM WER/CER on held-out synthetic speech.

    python bench/accuracy.py                    # .data/speech/test (made by the recipe when missing)
    python bench/accuracy.py --manifest M.jsonl --model DIR --count 200
    python bench/accuracy.py --by reverb --by snr_db:10    # also per value of manifest fields

The test set is the recipe's (``recipes/embedded/README.md``): sentences from the held-out slice of the
corpus, never seen by the acoustic model or the LM, spoken by espeak-ng voice variants held out of training,
with noise and reverberation. When ``--manifest`` is not given and ``.data/speech/test/manifest.jsonl`` does
not exist, it is made with the recipe's ``corpus.py`` (Debian packages via ``apt-get download``) and
``synth.py --voices test --seed 2`` (espeak-ng). Targets (issue 6): greedy WER <= 15 % and >= 30 % relative WER
reduction from the LM; the script prints both and whether they are met.

Real speech (issue 34): ``--real`` also scores the real-speech dev sets made by ``recipes/embedded/real_speech.py``
in ``--real-dir`` (default ``.data/real``): ``fsdd_dev`` (Free Spoken Digit Dataset, takes 0-4), ``asterisk_dev``
(the held-out slice of the Asterisk prompts) and ``pocketsphinx_dev`` (pocketsphinx-testdata), each beside the
synthetic test set, greedy and beam + LM (``--no-lm``: greedy only). With ``--json`` the summary then has one
entry per set under ``sets``::

    python bench/accuracy.py --real
    python bench/accuracy.py --real --model DIR --json figures.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".data"
TEST_MANIFEST = DATA / "speech" / "test" / "manifest.jsonl"
REAL_DIR = DATA / "real"
REAL_SETS = ("fsdd_dev", "asterisk_dev", "pocketsphinx_dev")


def make_test_set(count: int) -> Path:
    """The recipe's held-out test set (sentences and voices unseen in training)."""
    recipe = ROOT / "recipes" / "embedded"
    if not (DATA / "corpus" / "test.txt").is_file():
        subprocess.run([sys.executable, str(recipe / "corpus.py"), "--out", str(DATA / "corpus")], check=True)
    cmd = [
        sys.executable,
        str(recipe / "synth.py"),
        "--sentences",
        str(DATA / "corpus" / "test.txt"),
        "--out",
        str(TEST_MANIFEST.parent),
        "--voices",
        "test",
        "--seed",
        "2",
    ]
    if count:
        cmd += ["--count", str(count)]
    subprocess.run(cmd, check=True)
    return TEST_MANIFEST


def score(manifest: Path, args: argparse.Namespace, check_targets: bool = True) -> dict:
    """Greedy (and beam + LM) scores of one manifest, printed; returns the summary dict."""
    from rich.console import Console

    from w2vlm.engine.config import DecodeConfig
    from w2vlm.eval import breakdown_table, evaluate

    t0 = time.perf_counter()
    report = evaluate(
        manifest,
        args.model,
        use_lm=not args.no_lm,
        decode=DecodeConfig(beam_width=args.beam_width),
        use_cache=False,
        group_by=args.by,
    )
    seconds = time.perf_counter() - t0
    scored = len(report.utterances) - len(report.failed)
    g_wer, g_cer = report.wer("greedy"), report.cer("greedy")
    print(f"{scored} utterances ({report.audio_seconds:.0f} s of audio) from {manifest}; {seconds:.1f} s in all")
    print(f"{'decoding':<16}{'WER':>8}{'CER':>8}")
    print(f"{'greedy':<16}{100 * g_wer:>7.2f}%{100 * g_cer:>7.2f}%")
    summary: dict = {"manifest": str(manifest), "utterances": scored, "greedy": {"wer": g_wer, "cer": g_cer}}
    if "lm" in report.systems:
        l_wer, l_cer = report.wer("lm"), report.cer("lm")
        rel = (g_wer - l_wer) / g_wer if g_wer else 0.0
        print(f"{'beam + LM':<16}{100 * l_wer:>7.2f}%{100 * l_cer:>7.2f}%")
        print(f"LM settings {report.decode_settings}; relative WER reduction {100 * rel:.1f}%")
        summary["lm"] = {"wer": l_wer, "cer": l_cer, "relative_wer_reduction": rel, **report.decode_settings}
        if check_targets:
            print(
                f"targets: greedy WER <= 15%: {'met' if g_wer <= 0.15 else 'NOT met'}; "
                f"LM reduction >= 30%: {'met' if rel >= 0.30 else 'NOT met'}"
            )
    for group_by in report.group_by:
        Console().print(breakdown_table(report, group_by))
        summary.setdefault("breakdown", {})[str(group_by)] = [g.to_dict() for g in report.breakdown(group_by)]
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=None, help="held-out manifest (default: the recipe's test set)")
    ap.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    ap.add_argument("--count", type=int, default=0, help="use only the first N utterances (0: all)")
    ap.add_argument("--beam-width", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    ap.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="FIELD[:WIDTH]",
        help="also score each value of this manifest field apart (repeatable; WIDTH bins numbers)",
    )
    ap.add_argument("--real", action="store_true", help="also score the real-speech dev sets (see above)")
    ap.add_argument("--real-dir", type=Path, default=None, help=f"folder of the real dev manifests (implies --real; "
                    f"default {REAL_DIR.relative_to(ROOT)})")  # fmt: skip
    ap.add_argument("--no-lm", action="store_true", help="greedy decoding only")
    args = ap.parse_args()

    from w2vlm.errors import W2vlmError

    manifest = args.manifest or (TEST_MANIFEST if TEST_MANIFEST.is_file() else make_test_set(args.count))
    if args.count:
        lines = [line for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()][: args.count]
        subset = manifest.parent / f".accuracy_first_{args.count}.jsonl"
        subset.write_text("\n".join(lines) + "\n", encoding="utf-8")
        manifest = subset
    sets = {"synthetic_test": manifest}
    if args.real or args.real_dir:
        real_dir = args.real_dir or REAL_DIR
        missing = [name for name in REAL_SETS if not (real_dir / f"{name}.jsonl").is_file()]
        if missing:
            print(f"error: {', '.join(missing)} not in {real_dir} (make them: recipes/embedded/real_speech.py)",
                  file=sys.stderr)  # fmt: skip
            return 2
        sets.update({name: real_dir / f"{name}.jsonl" for name in REAL_SETS})
    results = {}
    for name, path in sets.items():
        if len(sets) > 1:
            print(f"== {name}")
        try:
            results[name] = score(path, args, check_targets=name == "synthetic_test")
        except W2vlmError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    summary: dict = dict(results["synthetic_test"])
    if len(sets) > 1:
        summary = {"sets": results}
        print(f"{'set':<18}{'utts':>6}{'greedy WER':>12}{'CER':>8}{'LM WER':>10}{'CER':>8}")
        for name, r in results.items():
            lm = r.get("lm")
            lm_cols = f"{100 * lm['wer']:>9.2f}%{100 * lm['cer']:>7.2f}%" if lm else f"{'-':>10}{'-':>8}"
            print(f"{name:<18}{r['utterances']:>6}{100 * r['greedy']['wer']:>11.2f}%{100 * r['greedy']['cer']:>7.2f}%"
                  f"{lm_cols}")  # fmt: skip
    info = Path(args.model or ROOT / "src" / "w2vlm" / "assets" / "model") / "training_info.json"
    if info.is_file():
        t = json.loads(info.read_text())
        print(f"training: {t.get('train_seconds', 0) / 60:.0f} min on {t.get('device')}, {t.get('steps')} steps")
        summary["training"] = {k: t.get(k) for k in ("train_seconds", "device", "steps", "train_audio_hours")}
        if t.get("averaged_from"):
            parts = [f"{Path(a['model']).name} ({a['weight']:.2f})" for a in t["averaged_from"]]
            print(f"weights averaged from {', '.join(parts)} (w2vlm average)")
            summary["training"]["averaged_from"] = t["averaged_from"]
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
