"""Attention over padded batches without a (batch, 1, frames, frames) mask.

transformers' ``sdpa`` attention builds, for every padded batch, a boolean mask of one entry per pair of frames
(``sdpa_mask``: an ``and`` of index comparisons and a ``where``), and the encoder of an acoustic model only ever
needs to hide the padded keys: every query may see every real frame. On a 15 s window (750 frames) that mask cost
as much CPU time as the attention itself in a small model (a quarter of the near-free model's forward pass in
``bench/engine.py``). :func:`padding_mask_attention` runs a model that runs ``sdpa`` on :data:`NAME`: the same
attention kernel (transformers' ``sdpa_attention_forward``), with the mask as (batch, 1, 1, frames), which
``torch.nn.functional.scaled_dot_product_attention`` broadcasts over the queries. The outputs at real frames are
the same; padded frames are never read (the engine keeps each window's own frames only).

Only the plain bidirectional mask is replaced: a call that asks for anything else (causal, sliding windows, packed
sequences, extra mask functions) gets transformers' own ``sdpa_mask``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: The attention implementation registered with transformers.
NAME = "w2vlm_sdpa"
_registered = False


def padding_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function: Any = None,
    attention_mask: Any = None,
    allow_is_bidirectional_skip: bool = False,
    **kwargs: Any,
) -> Any:
    """A mask interface for transformers' ``AttentionMaskInterface``: the (batch, 1, 1, kv) padding mask (True where
    a key is a real frame), None where nothing is padded and transformers allows that, and ``sdpa_mask`` for any
    pattern other than the plain bidirectional one."""
    from transformers import masking_utils

    plain = (
        mask_function is masking_utils.bidirectional_mask_function
        and not kwargs.get("use_vmap", False)
        and q_offset == 0
        and kv_offset == 0
        and attention_mask is not None
        and attention_mask.dim() == 2
        and attention_mask.shape[-1] == kv_length
    )
    if not plain:
        return masking_utils.sdpa_mask(
            batch_size,
            q_length,
            kv_length,
            q_offset=q_offset,
            kv_offset=kv_offset,
            mask_function=mask_function or masking_utils.bidirectional_mask_function,
            attention_mask=attention_mask,
            allow_is_bidirectional_skip=allow_is_bidirectional_skip,
            **kwargs,
        )
    keys = attention_mask.bool()
    if allow_is_bidirectional_skip and bool(keys.all()):
        return None
    return keys[:, None, None, :]


def register() -> None:
    """Make :data:`NAME` known to transformers (once per process)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    AttentionInterface.register(NAME, sdpa_attention_forward)
    AttentionMaskInterface.register(NAME, padding_mask)
    _registered = True


@contextlib.contextmanager
def padding_mask_attention(model: Any) -> Iterator[bool]:
    """Within the block, a model that runs ``sdpa`` attention runs :data:`NAME` (same kernel, padding-only mask);
    whether it does. The model's configuration is put back after, so that the model is left as it was given (one
    saved or sent to a process where w2vlm has not registered :data:`NAME` works as before). Models on other
    implementations (eager, flash attention, flex) are left as they are. Not for two threads at once on one
    model: the engine's forward passes take turns."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        yield False
        return
    register()
    config._attn_implementation = NAME
    try:
        yield True
    finally:
        config._attn_implementation = "sdpa"


__all__ = ["NAME", "padding_mask", "padding_mask_attention", "register"]
