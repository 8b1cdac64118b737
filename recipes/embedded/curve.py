"""Learning curve of the embedded model on real speech: WER against the kind and the amount of training data.

Every point continues the shipped model (``--init-from``) for the same number of optimizer steps with the
same settings (learning rate, warm-up, batch seconds, seed); only the training mix changes. Then the model is
scored greedy and with beam search + the shipped LM on the real dev sets (``pocketsphinx_dev``, the FSDD
speakers held out entirely, ``fsdd_unseen``; the held-out takes of the trained FSDD speakers, ``fsdd_dev``;
``asterisk_dev``) and on the first utterances of the synthetic test set.

A mix is drawn from three pools, as shares of the audio hours that the step budget can see
(``steps x batch seconds``): ``espeak`` (``synth.py``, the recipe's training voices), ``tts`` (flite,
festival and Piper, augmented by ``voices.py augment``) and ``real`` (FSDD takes 5-49 of the trained speakers
and the Asterisk training prompts, augmented). A pool is used copy by copy: the first (clean) copy of every
source clip in a seeded order, then every second copy, and so on, cycling when the budget asks for more. The
``real`` pool can be cut to a fraction of its source clips (a SHA-1 slice of the clip ids, so the 1/4 set is
inside the 1/2 set); the real share stays the same, so a smaller real set is seen more often, not less.

Usage (after ``real_speech.py --unseen-speakers``, ``kit.py synth``, ``synth.py`` and ``voices.py augment``;
see the recipe README)::

    python recipes/embedded/curve.py run [--steps 60] [--points espeak,all_real,...]  # -> .data/curve/results.json
    python recipes/embedded/curve.py table                                           # markdown table
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_speech

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "src" / "w2vlm" / "assets" / "model"


@dataclass(frozen=True)
class Point:
    """One training mix: shares of the audio hours by pool, and the fraction of real source clips used."""

    name: str
    espeak: float
    tts: float = 0.0
    real: float = 0.0
    real_fraction: float = 1.0
    steps: int = -1  # -1: --steps; 0: no training (the shipped model); else this budget instead of --steps


# in the order they run (most informative first). Where real speech is in the mix it is 60 % of the audio, so
# that a budget of 100 steps x 32 s can see about one pass over all of it (60 steps: 0.55); espeak : tts 58 : 42
POINTS = (
    Point("shipped", 1.0, steps=0),
    Point("espeak", 1.0),
    Point("all_real", 0.24, 0.16, 0.60),
    Point("tts", 0.58, 0.42),
    Point("real_1/4", 0.24, 0.16, 0.60, 0.25),
    Point("real_1/2", 0.24, 0.16, 0.60, 0.5),
    Point("real_1/8", 0.24, 0.16, 0.60, 0.125),
    Point("espeak+real", 0.40, 0.0, 0.60),
    Point("all_real_x4", 0.24, 0.16, 0.60, steps=240),  # the all_real mix with 4x the default budget
    Point("real_1/4_x4", 0.24, 0.16, 0.60, 0.25, steps=240),
    Point("tts_x4", 0.58, 0.42, steps=240),
)
DEV_SETS = ("pocketsphinx_dev", "fsdd_unseen", "fsdd_dev", "asterisk_dev", "synth_test")


def read_abs(manifest: Path) -> list[dict]:
    """Records of a manifest with absolute audio paths."""
    out = []
    for rec in real_speech.read_jsonl(manifest):
        audio = Path(rec["audio"])
        out.append({**rec, "audio": str(audio if audio.is_absolute() else (manifest.parent / audio).resolve())})
    return out


def clip_key(rec: dict, index: int) -> tuple[str, int]:
    """(source clip, copy number) of a record: ``voices.py augment`` names its outputs ``MM_IIIIII_CC.wav``."""
    parts = Path(rec["audio"]).stem.split("_")
    if "aug" in rec and len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"{parts[0]}_{parts[1]}", int(parts[2])
    return str(index), 0


def in_fraction(clip_id: str, fraction: float) -> bool:
    """Whether a source clip is in the ``fraction`` slice (nested: a smaller slice is inside a larger one)."""
    return int(hashlib.sha1(clip_id.encode()).hexdigest()[:8], 16) / 16**8 < fraction


def layered(records: list[dict], seed: int) -> list[dict]:
    """Records copy by copy: every source clip's copy 0 in a seeded order, then every copy 1, ..."""
    by_copy: dict[int, list[dict]] = {}
    for i, rec in enumerate(records):
        by_copy.setdefault(clip_key(rec, i)[1], []).append(rec)
    out: list[dict] = []
    for copy in sorted(by_copy):
        layer = by_copy[copy]
        random.Random(seed * 1000 + copy).shuffle(layer)
        out.extend(layer)
    return out


def draw(pool: list[dict], hours: float, max_duration: float) -> list[dict]:
    """Records from the front of ``pool``, cycling, until ``hours`` of audio (clips over ``max_duration`` s out)."""
    pool = [r for r in pool if r["duration"] <= max_duration]
    out: list[dict] = []
    total = 0.0
    while pool and total < hours * 3600:
        rec = pool[len(out) % len(pool)]
        out.append(rec)
        total += rec["duration"]
    return out


def build_mix(point: Point, pools: dict[str, list[dict]], hours: float, seed: int,
              max_duration: float) -> tuple[list[dict], dict[str, Any]]:  # fmt: skip
    """The training records of ``point`` (``hours`` of audio in all) and what is in them."""
    mix: list[dict] = []
    stats: dict[str, Any] = {}
    for kind in ("espeak", "tts", "real"):
        share = getattr(point, kind)
        if share <= 0:
            continue
        pool = pools[kind]
        if kind == "real":
            pool = [r for r in pool if in_fraction(r["id"], point.real_fraction)]
        drawn = draw(layered(pool, seed), hours * share, max_duration)
        sources = {clip_key(r, i)[0] if kind != "real" else r["id"] for i, r in enumerate(drawn)}
        stats[kind] = {
            "hours": round(sum(r["duration"] for r in drawn) / 3600, 3),
            "records": len(drawn),
            "distinct_source_clips": len(sources),
            "distinct_source_minutes": round(
                sum({(r.get("id") or r["audio"]): r["duration"] for r in drawn}.values()) / 60, 1
            ),
        }
        mix.extend(drawn)
    random.Random(seed).shuffle(mix)
    return mix, stats


def check_no_dev(mix: list[dict], real_dir: Path) -> None:
    """ValueError if a dev clip (or a clip of a held-out speaker) is in the mix."""
    dev = [r for s in (*real_speech.DEV_SETS, real_speech.UNSEEN_SET) for r in read_abs(real_dir / f"{s}.jsonl")]
    unseen = json.loads((real_dir / "sources.json").read_text()).get("unseen_speakers", [])
    if not unseen:
        raise ValueError(f"{real_dir} has no held-out FSDD speakers (real_speech.py --unseen-speakers)")
    real_speech.check_disjoint([r for r in mix if r.get("id")], dev, set(unseen))


def train(steps: int, manifest: Path, out: Path, args: argparse.Namespace) -> float:
    """``w2vlm train`` continuing the shipped model; returns the wall seconds."""
    cmd = [str(Path(sys.executable).parent / "w2vlm"), "train", str(manifest), "-o", str(out),
           "--init-from", str(SHIPPED), "--epochs", "1000", "--max-steps", str(steps),
           "--batch-seconds", str(args.batch_seconds), "--lr", str(args.lr), "--warmup", str(args.warmup),
           "--save-every", "0", "--max-duration", str(args.max_duration), "--no-sortagrad",
           "--seed", str(args.seed), "--set", "hidden_dropout=0", "--set", "feat_proj_dropout=0",
           "--set", "conformer_conv_dropout=0", "--max-memory", "8", "--quiet",
           "--amp" if args.amp else "--no-amp"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    t0 = time.time()
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.time() - t0


def score(model: Path, sets: dict[str, Path], lm_dir: Path, beam_width: int) -> dict[str, dict]:
    """Greedy and beam + LM (the LM folder's alpha/beta) WER/CER of ``model`` on each manifest."""
    import evaluate
    import torch

    from w2vlm.decoder import build_ctcdecoder, load_unigrams
    from w2vlm.metrics import error_rates
    from w2vlm.processor_parts import vocab_labels

    vocab = json.loads((model / "vocab.json").read_text(encoding="utf-8"))
    attrs = json.loads((lm_dir / "attrs.json").read_text())
    decoder = build_ctcdecoder(vocab_labels(vocab), str(lm_dir / "lm.arpa"), load_unigrams(lm_dir / "unigrams.txt"),
                               alpha=attrs["alpha"], beta=attrs["beta"])  # fmt: skip
    out: dict[str, dict] = {}
    for name, manifest in sets.items():
        with torch.inference_mode():
            logprobs, refs = evaluate.compute_logits(model, manifest)
        g_wer, g_cer = error_rates(refs, evaluate.greedy(logprobs, vocab))
        hyps = decoder.decode_batch(None, logprobs, beam_width=beam_width)
        l_wer, l_cer = error_rates(refs, hyps)
        out[name] = {
            "utterances": len(refs),
            "greedy": {"wer": g_wer, "cer": g_cer},
            "lm": {"wer": l_wer, "cer": l_cer},
        }
        print(f"  {name:<17} greedy WER {100 * g_wer:6.2f}%  beam+LM WER {100 * l_wer:6.2f}%  CER {100 * l_cer:6.2f}%")
    return out


def dev_manifests(args: argparse.Namespace) -> dict[str, Path]:
    """The dev sets by name; the synthetic test subset is written to ``work/synth_test.jsonl``."""
    sets = {s: args.real / f"{s}.jsonl" for s in DEV_SETS if s != "synth_test"}
    synth = args.work / "synth_test.jsonl"
    real_speech.write_jsonl(synth, read_abs(args.synth_test)[: args.synth_count])
    return {**sets, "synth_test": synth}


def cmd_run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    pools: dict[str, list[dict]] = {}
    sets = dev_manifests(args)
    wanted = args.points.split(",") if args.points else [p.name for p in POINTS]
    for point in (p for p in POINTS if p.name in wanted):
        if point.name in results and not args.again:
            print(f"{point.name}: done already")
            continue
        print(f"{point.name}: {asdict(point)}", flush=True)
        entry: dict[str, Any] = {"point": asdict(point)}
        model = SHIPPED
        if point.steps != 0:
            if not pools:
                pools.update(espeak=read_abs(args.espeak), tts=read_abs(args.tts), real=read_abs(args.real_aug))
            steps = point.steps if point.steps > 0 else args.steps
            hours = steps * args.batch_seconds / 3600
            mix, entry["mix"] = build_mix(point, pools, hours, args.seed, args.max_duration)
            check_no_dev(mix, args.real)
            tag = point.name.replace("/", "_")
            manifest = args.work / "mixes" / f"{tag}.jsonl"
            manifest.parent.mkdir(exist_ok=True)
            real_speech.write_jsonl(manifest, mix)
            model = args.work / "models" / tag
            keys = ("batch_seconds", "lr", "warmup", "seed", "amp", "threads")
            entry["settings"] = {"steps": steps, **{k: getattr(args, k) for k in keys}}
            model.parent.mkdir(exist_ok=True)
            entry["train_seconds"] = round(train(steps, manifest, model, args), 1)
            info = json.loads((model / "training_info.json").read_text())
            entry["steps"] = info.get("steps", info.get("step"))
            print(f"  trained: {entry['steps']} steps in {entry['train_seconds']} s; mix {entry['mix']}", flush=True)
        t0 = time.time()
        entry["scores"] = score(model, sets, SHIPPED / "language_model", args.beam_width)
        entry["score_seconds"] = round(time.time() - t0, 1)
        results[point.name] = entry
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict[str, dict]) -> str:
    """Markdown: WER greedy / beam + LM per dev set (CER with beam + LM in brackets), one row per point."""
    head = "| point | espeak : tts : real | real clips (min of aug. copies) | train s | " + " | ".join(DEV_SETS) + " |"
    rows = [head, "|" + " --- |" * (4 + len(DEV_SETS))]
    for name, e in results.items():
        p = e["point"]
        real = e.get("mix", {}).get("real")
        clips = f"{real['distinct_source_clips']} ({real['distinct_source_minutes']})" if real else "0"
        cells = []
        for s in DEV_SETS:
            r = e["scores"][s]
            g, lm = r["greedy"], r["lm"]
            cells.append(f"{100 * g['wer']:.1f} / {100 * lm['wer']:.1f} ({100 * lm['cer']:.1f})")
        shares = f"{p['espeak']:.2f} : {p['tts']:.2f} : {p['real']:.2f}" if p["steps"] != 0 else "-"
        rows.append(f"| {name} | {shares} | {clips} | {e.get('train_seconds', 0):.0f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and score the points (skips those in results.json)")
    t = sub.add_parser("table", help="print the results as a markdown table")
    for p in (r, t):
        p.add_argument("--work", type=Path, default=ROOT / ".data" / "curve")
    d = ROOT / ".data" / "curve"
    r.add_argument("--points", default="", help="comma-separated point names (default: all, in order)")
    r.add_argument("--again", action="store_true", help="redo points already in results.json")
    r.add_argument("--real", type=Path, default=d / "real", help="real_speech.py output with --unseen-speakers")
    r.add_argument("--espeak", type=Path, default=d / "espeak" / "manifest.jsonl")
    r.add_argument("--tts", type=Path, default=d / "aug_tts" / "manifest.jsonl")
    r.add_argument("--real-aug", type=Path, default=d / "aug_real" / "manifest.jsonl")
    r.add_argument("--synth-test", type=Path, default=ROOT / ".data" / "speech" / "test" / "manifest.jsonl")
    r.add_argument("--synth-count", type=int, default=200)
    r.add_argument("--steps", type=int, default=60)
    r.add_argument("--batch-seconds", type=float, default=32.0)
    r.add_argument("--lr", type=float, default=5e-4)
    r.add_argument("--warmup", type=int, default=10)
    r.add_argument("--max-duration", type=float, default=16.0)
    r.add_argument("--seed", type=int, default=34)
    r.add_argument("--threads", type=int, default=1, help="1: best when the cores are shared")
    r.add_argument("--amp", action="store_true", help="bf16 autocast (2x slower than float32 on this CPU)")
    r.add_argument("--beam-width", type=int, default=100)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        cmd_run(args)
    else:
        print(table(json.loads((args.work / "results.json").read_text())))


if __name__ == "__main__":
    main()
