"""Averaging the weights of CTC model folders: checkpoint averaging within a run, or a "model soup" of the end
points of consecutive fine-tuning runs of one lineage, which often decodes a little better than any one of them.

Every floating-point tensor of ``model.safetensors`` becomes the (weighted) mean over the inputs, computed in
float64 and stored in the inputs' dtype; other tensors must be equal in all inputs. The result is a model folder
in the hub layout: its other files (config, feature extractor, tokenizer, ``alphabet.json``,
``language_model/``) come from the last input, and ``training_info.json`` records what was averaged.

An input is a model folder (one with ``model.safetensors``) or a folder of them, such as the
``OUTPUT.snapshots`` folder that ``w2vlm train --snapshot-every N`` writes; its model folders are taken in name
order (``step-0000250``, ``step-0000500``, ...).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from w2vlm.errors import ModelError
from w2vlm.fileio import check_output

WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "training_info.json"


class AverageError(ModelError, ValueError):
    """The inputs cannot be averaged (missing file, different tensors, bad weights, output in the way)."""


def normalised_weights(weights: Sequence[float], count: int) -> list[float]:
    """``weights`` checked (one per input, finite, >= 0, positive sum) and scaled to sum to 1."""
    if len(weights) != count:
        raise AverageError(f"weights: expected {count} values (one per input), got {len(weights)}")
    if any(not w >= 0 or w == float("inf") for w in weights) or sum(weights) <= 0:
        raise AverageError(f"weights must be finite and >= 0 with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    return [w / total for w in weights]


def average_state_dicts(states: Sequence[dict[str, Any]], weights: Sequence[float]) -> dict[str, Any]:
    """Weighted mean of the float tensors of ``states``; other tensors must match exactly. ``weights`` are
    normalised to sum to 1."""
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


def _config_dtype(config_file: Path, state: dict[str, Any]) -> None:
    """Make ``config.json``'s dtype (copied from the last input) say what the averaged weights are in (the first
    input's dtype: inputs saved in float16 and float32 gave float16 weights under a float32 config)."""
    kinds = {str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()}
    if len(kinds) != 1 or not config_file.is_file():
        return
    config = json.loads(config_file.read_text())
    dtype = kinds.pop()
    stale = [key for key in ("dtype", "torch_dtype") if key in config and config[key] != dtype]
    if stale:
        config.update(dict.fromkeys(stale, dtype))
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def model_folders(inputs: Sequence[str | Path], last: int | None = None) -> list[Path]:
    """The model folders named by ``inputs`` (a folder of model folders stands for those, in name order);
    with ``last``, only the last so many of them."""
    found: list[Path] = []
    for given in inputs:
        path = Path(given)
        if (path / WEIGHTS_FILE).is_file():
            found.append(path)
            continue
        inner = sorted(p for p in path.iterdir() if (p / WEIGHTS_FILE).is_file()) if path.is_dir() else []
        if not inner:
            what = "no such folder" if not path.exists() else f"no {WEIGHTS_FILE} in it or in its subfolders"
            raise AverageError(
                f"{path}: {what} (expected a model folder written by `w2vlm train`, or a folder of them such as "
                "OUTPUT.snapshots)"
            )
        found.extend(inner)
    if last is not None:
        if last < 1:
            raise AverageError(f"--last (last): {last}; expected a number >= 1")
        found = found[-last:]
    return found


def average_models(
    inputs: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
    last: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the (weighted) mean of the model folders ``inputs`` to the model folder ``out`` and return it.

    ``weights`` gives one weight per model folder after expansion (default: equal); ``last`` keeps only the
    last so many folders. ``out`` must not exist (or be empty) unless ``overwrite``, and may not be an input.
    """
    from safetensors.torch import load_file, save_file

    models = model_folders(inputs, last)
    if len(models) < 2:
        raise AverageError(f"give at least two model folders to average, got {len(models)}")
    out = Path(out)
    resolved = out.resolve()
    for m in models:  # replacing the output must not delete an input: not one of them, nor a folder above one
        where = m.resolve()
        if where == resolved or resolved in where.parents:
            what = "is one of the inputs" if where == resolved else f"holds the input {m}"
            raise AverageError(f"output {out} {what}; write to a new folder")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise AverageError(f"output {out} already exists; choose a new folder, or overwrite it (--overwrite)")
    check_output(out, folder=True)  # (--overwrite replaces a model folder, never a file)
    norm = normalised_weights(list(weights) if weights is not None else [1.0] * len(models), len(models))
    states = []
    for m in models:
        try:
            states.append(load_file(str(m / WEIGHTS_FILE)))
        except Exception as exc:  # safetensors raises its own error types for bad headers and truncated files
            raise AverageError(f"{m / WEIGHTS_FILE}: not a readable safetensors file ({exc})") from None
    try:
        averaged = average_state_dicts(states, norm)
    except AverageError as exc:
        names = ", ".join(f"input {i + 1} = {m}" for i, m in enumerate(models))
        raise AverageError(f"{exc} ({names})") from None

    infos = []
    for m in models:
        p = m / INFO_FILE
        try:
            infos.append(json.loads(p.read_text()) if p.is_file() else None)
        except (OSError, ValueError):
            infos.append(None)
    info = dict(infos[-1] or {})
    info.pop("dev", None)  # the last input's dev score is not this model's
    info["averaged_from"] = [
        {"model": str(m), "weight": w, "steps": (i or {}).get("steps"), "dev": (i or {}).get("dev")}
        for m, w, i in zip(models, norm, infos)
    ]

    tmp = out.with_name(out.name + ".tmp-average")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(models[-1], tmp, ignore=shutil.ignore_patterns(WEIGHTS_FILE, INFO_FILE))
    save_file(averaged, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    _config_dtype(tmp / "config.json", averaged)
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    tmp.rename(out)
    return out
