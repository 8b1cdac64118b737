"""Average the weights of several trained model folders of the same architecture into one.

Usage::

    python recipes/embedded/average.py .data/models/run17 .data/models/run18 --out .data/models/avg17-18 \
        [--weights 0.5 0.5]

Every floating-point tensor of ``model.safetensors`` becomes the (weighted) mean over the inputs; integer
tensors (if any) must be equal in all of them. The folder's other files (config, feature extractor,
tokenizer) come from the last input, and ``training_info.json`` records what was averaged. Averaging the end
points of consecutive fine-tuning runs (a "model soup" of one lineage) often gives a model a little better
than either; the recipe only ships one when dev500 says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

WEIGHTS_FILE = "model.safetensors"


class AverageError(ValueError):
    """The inputs cannot be averaged (missing file, different tensors, bad weights)."""


def normalised_weights(weights: list[float], count: int) -> list[float]:
    """``weights`` checked (one per input, >= 0, positive sum) and scaled to sum to 1."""
    if len(weights) != count:
        raise AverageError(f"--weights: expected {count} values (one per input), got {len(weights)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise AverageError(f"--weights must be >= 0 with a positive sum, got {weights}")
    total = float(sum(weights))
    return [w / total for w in weights]


def average_state_dicts(states: list[dict], weights: list[float]) -> dict:
    """Weighted mean of float tensors; other tensors must match exactly. ``weights`` are normalised."""
    import torch

    if not states:
        raise AverageError("nothing to average: no inputs")
    norm = normalised_weights(weights, len(states))
    names = set(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != names:
            missing = sorted(names - set(state))[:3]
            extra = sorted(set(state) - names)[:3]
            raise AverageError(f"input {i + 1} has different tensors than input 1 (missing {missing}, extra {extra})")
    out = {}
    for name in sorted(names):
        first = states[0][name]
        for i, state in enumerate(states[1:], start=1):
            if state[name].shape != first.shape:
                raise AverageError(
                    f"tensor {name!r}: input {i + 1} has shape {tuple(state[name].shape)}, "
                    f"input 1 has {tuple(first.shape)}"
                )
        if first.is_floating_point():
            acc = torch.zeros(first.shape, dtype=torch.float64)
            for w, state in zip(norm, states):
                acc += w * state[name].to(torch.float64)
            out[name] = acc.to(first.dtype)
        else:
            for i, state in enumerate(states[1:], start=1):
                if not torch.equal(state[name], first):
                    raise AverageError(f"non-float tensor {name!r} differs between input 1 and input {i + 1}")
            out[name] = first.clone()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", type=Path, nargs="+", help="model folders written by `w2vlm train`")
    ap.add_argument("--out", type=Path, required=True, help="folder to write (must not be one of the inputs)")
    ap.add_argument("--weights", type=float, nargs="+", help="one weight per input (default: equal)")
    args = ap.parse_args(argv)

    from safetensors.torch import load_file, save_file

    try:
        if len(args.models) < 2:
            raise AverageError(f"give at least two model folders, got {len(args.models)}")
        out = args.out.resolve()
        if any(m.resolve() == out for m in args.models):
            raise AverageError(f"--out {args.out} is one of the inputs; write to a new folder")
        states = []
        for m in args.models:
            path = m / WEIGHTS_FILE
            if not path.is_file():
                raise AverageError(f"{path}: no such file (expected a model folder written by `w2vlm train`)")
            states.append(load_file(str(path)))
        weights = normalised_weights(args.weights or [1.0] * len(states), len(states))
        averaged = average_state_dicts(states, weights)
    except AverageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    last = args.models[-1]
    for f in last.iterdir():
        if f.is_file() and f.name not in (WEIGHTS_FILE, "training_info.json"):
            shutil.copy2(f, args.out / f.name)
    save_file(averaged, str(args.out / WEIGHTS_FILE), metadata={"format": "pt"})
    infos = []
    for m in args.models:
        p = m / "training_info.json"
        infos.append(json.loads(p.read_text()) if p.is_file() else None)
    info = dict(infos[-1] or {})
    info["averaged_from"] = [
        {"model": str(m), "weight": w, "steps": (i or {}).get("steps"), "dev": (i or {}).get("dev")}
        for m, w, i in zip(args.models, weights, infos)
    ]
    info.pop("dev", None)  # the last input's dev score is not this model's
    (args.out / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"averaged {len(states)} models ({len(averaged)} tensors) into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
