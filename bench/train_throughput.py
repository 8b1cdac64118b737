"""Training throughput of ``w2vlm train``'s length grid (``--pad-multiple``) against ungridded batches.

    python bench/train_throughput.py                  # conformer preset, 96 s batches, 24 steps per variant
    python bench/train_throughput.py --preset small --steps 12 --threads 2

Both variants train the same from-scratch model on batches of random noise clips (4-8 s, as many as fit in
``--batch-seconds``), with the training step of ``w2vlm.train`` (model input made in torch, bf16 autocast where
the CPU has it, AdamW). The anchor pads each batch to its own random length, so nearly every step brings a
new tensor shape; the grid rounds lengths up to ``--pad-multiple`` seconds, so shapes repeat and the kernels
the CPU built for them (oneDNN makes one per shape) are reused. Prints audio seconds trained per second of
wall time for each and their ratio. Not run by the tests: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def run(args: argparse.Namespace, multiple: int) -> float:
    """Audio seconds per second over ``args.steps`` steps (after 2 warm-up steps) with this grid."""
    import tempfile

    import torch
    from transformers import AutoModelForCTC

    from w2vlm.features import model_inputs_for
    from w2vlm.train import MODEL_PRESETS, TrainConfig, build_config, cpu_has_native_bf16
    from w2vlm.train.export import make_processor
    from w2vlm.train.loop import train_step

    vocab = json.loads((ROOT / "src" / "w2vlm" / "assets" / "model" / "vocab.json").read_text())
    torch.manual_seed(0)
    model = AutoModelForCTC.from_config(build_config(vocab, args.preset))
    model.train()
    with tempfile.TemporaryDirectory() as work:  # the preset's feature extractor, as `w2vlm train` makes it
        extractor, _ = make_processor(vocab, Path(work), MODEL_PRESETS[args.preset]["family"])
    inputs = model_inputs_for(model, extractor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = cpu_has_native_bf16()
    cfg = TrainConfig(manifest=Path("unused.jsonl"), output_dir=Path("unused"))  # w2vlm train's loss settings
    rng = random.Random(1)
    audio = seconds = 0.0
    for step in range(args.steps + 2):
        length = rng.randint(4 * SR, 8 * SR)
        width = -(-length // multiple) * multiple
        n = max(1, int(args.batch_seconds * SR // width))
        x = torch.randn(n, width) * 0.1
        lens = torch.full((n,), length)
        x[:, length:] = 0
        labels = torch.randint(5, len(vocab), (n, length // 1300))
        t0 = time.perf_counter()
        feats, mask = inputs(x, lens)
        train_step(model, optimizer, feats, mask, labels, cfg, amp)
        if step >= 2:
            seconds += time.perf_counter() - t0
            audio += n * length / SR
    return audio / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="conformer")
    ap.add_argument("--batch-seconds", type=float, default=96.0)
    ap.add_argument("--pad-multiple", type=float, default=0.5, help="grid in seconds (w2vlm train's default)")
    ap.add_argument("--steps", type=int, default=24, help="timed steps per variant")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    grid = run(args, max(1, round(args.pad_multiple * SR)))
    anchor = run(args, 1)
    print(f"{args.preset}, {args.batch_seconds:g} s batches, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'batches':<28}{'audio-s/s':>10}")
    print(f"{'unrepeated shapes (anchor)':<28}{anchor:>10.1f}")
    print(f"{f'grid of {args.pad_multiple:g} s':<28}{grid:>10.1f}")
    print(f"grid / anchor: {grid / anchor:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
