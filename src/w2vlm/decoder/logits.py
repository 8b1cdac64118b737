"""Checking a matrix of logits or probabilities and turning it into log-probabilities, as pyctcdecode does."""

from __future__ import annotations

from typing import Any

import numpy as np

from w2vlm.errors import DecoderInputError

MIN_TOKEN_CLIP_P = 1e-15
_LOG_MIN_P = float(np.log(MIN_TOKEN_CLIP_P))


def check_logits(logits: Any, vocab_size: int) -> np.ndarray:
    """Validate a (frames, vocab) matrix of logits or probabilities: a float array (no copy when possible)."""
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
    # float64 (and integers) stay double: the search then adds exactly what pyctcdecode adds
    wide = a.dtype == np.float64 or np.issubdtype(a.dtype, np.integer)
    a = a.astype(np.float64 if wide else np.float32, copy=False)
    bad = np.isnan(a) | np.isposinf(a)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DecoderInputError(
            f"logits contain {'NaN' if np.isnan(a[row, col]) else '+inf'} at frame {row}, column {col} "
            f"({int(bad.any(axis=1).sum())} bad frames in all)"
        )
    finite_rows = np.isfinite(a).any(axis=1)
    if not finite_rows.all():
        row = int(np.argmin(finite_rows))
        raise DecoderInputError(f"logits frame {row} is -inf in every column")
    return a


def to_log_probs(logits: Any, vocab_size: int) -> np.ndarray:
    """Validate a (frames, vocab) matrix and return its log-probabilities, C-contiguous: float64 for a float64 (or
    integer) input, computed with pyctcdecode's formulas, float32 otherwise.

    Rows that are probabilities (all values in [0, 1], rows summing to 1) are logged; anything else is taken
    as logits and log-softmaxed. Values are clipped at log(1e-15) like pyctcdecode.
    """
    a = check_logits(logits, vocab_size)
    if a.shape[0] == 0:
        return a
    sums = a.sum(axis=1, dtype=np.float64)
    if a.min() >= 0.0 and a.max() <= 1.0 and np.allclose(sums, 1.0, atol=1e-3):
        with np.errstate(divide="ignore"):
            out = np.log(np.clip(a, MIN_TOKEN_CLIP_P, 1.0))
    else:
        m = a.max(axis=1, keepdims=True)
        shifted = a - m
        with np.errstate(divide="ignore", under="ignore"):
            out = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        np.clip(out, _LOG_MIN_P, 0.0, out=out)
    return np.ascontiguousarray(out, dtype=np.float64 if a.dtype == np.float64 else np.float32)
