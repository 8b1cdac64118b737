"""Deepen a trained Wav2Vec2ForCTC model without changing what it computes.

New transformer layers are inserted after existing ones (interleaved, spread evenly) and start as the
identity: their attention output projection and feed-forward output layer are zero, so with the pre-layer-norm
encoder (``do_stable_layer_norm``) each new layer adds nothing to its residual stream until training moves
those weights. Their other weights get the model's usual random initialization, so gradients reach them as
soon as the zeroed output layers move. The grown model therefore starts from exactly the accuracy of the
smaller one, with more capacity to train (``w2vlm train --init-from OUT``).

    python recipes/embedded/grow.py --model src/w2vlm/assets/model --layers 8 --out .data/models/grown

Processor files (vocab, tokenizer and feature-extractor configs) are copied next to the new weights.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

PROCESSOR_FILES = (
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "alphabet.json",
)


def new_layer_positions(old: int, new: int) -> list[int | None]:
    """For each layer of the grown encoder, the index of the old layer it copies, or None for a new one.

    New layers are spread evenly: each old layer is followed by ``(new - old) // old`` new ones, the first
    ``(new - old) % old`` old layers by one more.
    """
    if old < 1 or new < old:
        raise ValueError(f"layers: cannot grow {old} layers to {new}; expected a number >= {old}")
    extra, rest = divmod(new - old, old)
    plan: list[int | None] = []
    for i in range(old):
        plan.append(i)
        plan.extend([None] * (extra + (1 if i < rest else 0)))
    return plan


def grow(model, layers: int, config_overrides: dict | None = None):
    """A copy of ``model`` (``Wav2Vec2ForCTC``, pre-LN) with ``layers`` transformer layers, same function."""
    import torch
    from transformers import Wav2Vec2ForCTC

    cfg = model.config
    if not cfg.do_stable_layer_norm:
        raise ValueError("grow: only pre-layer-norm encoders (do_stable_layer_norm=true) start as the identity")
    plan = new_layer_positions(cfg.num_hidden_layers, layers)
    new_cfg = type(cfg).from_dict({**cfg.to_dict(), "num_hidden_layers": layers, **(config_overrides or {})})
    torch.manual_seed(0)
    grown = Wav2Vec2ForCTC(new_cfg)
    old_state = model.state_dict()
    state = grown.state_dict()
    prefix = "wav2vec2.encoder.layers."
    for key in state:
        if key.startswith(prefix):
            idx, rest = key[len(prefix) :].split(".", 1)
            src = plan[int(idx)]
            if src is None:
                if rest.startswith(("attention.out_proj.", "feed_forward.output_dense.")):
                    state[key] = torch.zeros_like(state[key])
                continue
            state[key] = old_state[f"{prefix}{src}.{rest}"].clone()
        elif key in old_state:
            state[key] = old_state[key].clone()
    grown.load_state_dict(state)
    return grown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="model folder (hub layout)")
    ap.add_argument("--layers", type=int, required=True, help="transformer layers of the grown model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="set the config's attention_dropout (0 lets torch use its fused attention on CPU: ~25%% faster)",
    )
    args = ap.parse_args()

    import torch
    from transformers import Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC.from_pretrained(str(args.model), dtype="float32").eval()
    overrides = {} if args.attention_dropout is None else {"attention_dropout": args.attention_dropout}
    grown = grow(model, args.layers, overrides).eval()

    # the grown model must compute what the old one did
    x = torch.randn(2, 32000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (model(x).logits - grown(x).logits).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"grow: logits differ by {diff:.2e} after growing; expected the same function")

    args.out.mkdir(parents=True, exist_ok=True)
    grown.save_pretrained(str(args.out))
    for name in PROCESSOR_FILES:
        if (args.model / name).is_file():
            shutil.copy2(args.model / name, args.out / name)
    n_old = sum(p.numel() for p in model.parameters())
    n_new = sum(p.numel() for p in grown.parameters())
    print(
        f"{model.config.num_hidden_layers} -> {args.layers} layers, {n_old / 1e6:.2f} M -> {n_new / 1e6:.2f} M "
        f"parameters, max logit difference {diff:.1e} -> {args.out}"
    )


if __name__ == "__main__":
    main()
