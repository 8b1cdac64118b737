"""Checking a matrix of logits or probabilities and turning it into log-probabilities, as pyctcdecode does.

The values are checked and normalised natively (``_core.scan_logits``, ``_core.log_probs``: for float64 numpy's
own exp, log and sum kernels, so the bits are what numpy computes, pyctcdecode's; for float32 numpy's log and sum
with w2vlm's vectorised exp, within rounding of numpy's); this module checks the shape and the type, and converts
only what the native side does not read in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from w2vlm import _core
from w2vlm.errors import DecoderInputError

MIN_TOKEN_CLIP_P = 1e-15


def as_logits(logits: Any, vocab_size: int) -> np.ndarray:
    """A (frames, vocab) matrix as the native side reads it, without a copy when possible: float64 for float64 or
    integer inputs (searched in double, as pyctcdecode computes), float32 for other floats; rows contiguous.
    Checks the type and the shape, not the values."""
    try:
        a = np.asarray(logits)
    except Exception as e:  # e.g. a CUDA tensor
        raise DecoderInputError(
            f"logits must be array-like (numpy, CPU tensor), got {type(logits).__name__}: {e}"
        ) from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DecoderInputError(f"logits must be a numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise DecoderInputError(
            f"Input logits have {a.ndim} dimensions (shape {a.shape}), but need 2: (time, vocabulary)"
        )
    if a.shape[1] != vocab_size:
        raise DecoderInputError(
            f"Input logits shape is {a.shape}, but vocabulary is size {vocab_size}. "
            "Need logits of shape: (time, vocabulary)"
        )
    if a.shape[0] == 0:
        return np.zeros((0, vocab_size), dtype=np.float32)
    wide = a.dtype == np.float64 or np.issubdtype(a.dtype, np.integer)
    a = a.astype(np.float64 if wide else np.float32, copy=False)
    if a.shape[1] > 1 and a.strides[1] != a.itemsize:
        a = np.ascontiguousarray(a)
    return a


def check_logits(logits: Any, vocab_size: int) -> np.ndarray:
    """Validate a (frames, vocab) matrix of logits or probabilities (DecoderInputError naming the frame and column
    of a NaN or +inf, or a frame that is -inf in every column); returns :func:`as_logits`' array."""
    a = as_logits(logits, vocab_size)
    if a.shape[0]:
        _core.scan_logits(a)
    return a


def to_log_probs(logits: Any, vocab_size: int) -> np.ndarray:
    """Validate a (frames, vocab) matrix and return its log-probabilities, C-contiguous: float64 for a float64 (or
    integer) input, computed with pyctcdecode's formulas, float32 otherwise.

    Rows that are probabilities (all values in [0, 1], rows summing to 1) are logged, anything else is taken as
    logits and log-softmaxed. Values are clipped at log(1e-15) like pyctcdecode.
    """
    a = as_logits(logits, vocab_size)
    if a.shape[0] == 0:
        return a
    return _core.log_probs(a)
