"""Windows over long inputs, and the frame-exact stitching of their outputs.

A long input is cut into windows of ``chunk`` samples every ``chunk - left - right`` samples (the strides are
context shared with the neighbours); the last window is moved back so that it is a full window ending at the
input's end. Each window's output keeps the frames of its centre, so frame ``i`` of the stitched result is the
model's frame for samples ``[i·r, i·r + receptive field)`` (``r`` = samples per frame) as if the input had been
run whole, apart from the context each frame saw. Windows may be computed in any order (the engine sorts them
by length); :class:`Stitcher` puts their frames back in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from w2vlm.engine.model_runner import MIN_WINDOW_SAMPLES
from w2vlm.errors import AudioError


@dataclass
class Window:
    """A piece of one input: its place (``item``, ``index``, ``start`` sample), its length, the samples of
    right context whose frames belong to the next window, and its prepared model input. A speech segment found
    by voice activity detection is a window of its own that is never stitched: it has its ``speech_prob``."""

    item: int
    index: int
    start: int
    samples: int
    right: int
    is_last: bool
    prepared: Any = None
    speech_prob: float | None = None


def chunk_sizes(
    chunk_length_s: float, stride_length_s: float | Sequence[float] | None, sampling_rate: int, ratio: int
) -> tuple[int, int, int]:
    """(window, left stride, right stride) in samples, multiples of ``ratio``; strides default to a sixth."""
    if chunk_length_s <= 0:
        raise ValueError(f"chunk_length_s: must be positive; got {chunk_length_s}")
    if stride_length_s is None:
        stride_length_s = chunk_length_s / 6
    if isinstance(stride_length_s, (int, float)):
        stride_length_s = (stride_length_s, stride_length_s)
    left_s, right_s = (float(x) for x in stride_length_s)
    if not (math.isfinite(left_s) and math.isfinite(right_s)) or left_s < 0 or right_s < 0:
        raise ValueError(f"stride_length_s: strides must be finite and at least 0 s; got ({left_s}, {right_s})")
    chunk = round(chunk_length_s * sampling_rate / ratio) * ratio
    left = round(left_s * sampling_rate / ratio) * ratio
    right = round(right_s * sampling_rate / ratio) * ratio
    if chunk - left - right <= 0:
        raise ValueError(
            f"stride_length_s: strides ({left_s}, {right_s}) s leave no centre in {chunk_length_s} s "
            "windows; the strides together must be shorter than chunk_length_s"
        )
    return chunk, left, right


def cut_windows(
    blocks: Iterable[np.ndarray], chunk: int, left: int, right: int, ratio: int, what: str = "input"
) -> Iterator[tuple[int, np.ndarray, int, bool]]:
    """Yield ``(start, audio, right context, is_last)`` windows from consecutive blocks of audio, reading only
    as far ahead as the next window needs (so a long file is never in memory whole)."""
    step = chunk - left - right
    buf = np.zeros(0, np.float32)
    buf_start = 0  # absolute sample index of buf[0]
    start = 0  # start of the next window
    prev_start: int | None = None
    iterator = iter(blocks)
    exhausted = False
    while True:
        while not exhausted and buf_start + buf.size <= start + chunk:
            block = next(iterator, None)
            if block is None:
                exhausted = True
            elif block.size:
                buf = np.concatenate([buf, block]) if buf.size else block
        total = buf_start + buf.size
        if total > start + chunk:
            yield start, buf[start - buf_start : start - buf_start + chunk], right, False
            prev_start = start
            start += step
            # keep audio from the window just yielded on: the final window may reach back into it
            buf, buf_start = buf[prev_start - buf_start :], prev_start
            continue
        # the input ends within the next window: a last, full-length window ending at the end
        last_start = max(0, (total - chunk) // ratio * ratio)
        if prev_start is not None:
            last_start = max(last_start, prev_start)
        window = buf[last_start - buf_start :]
        if window.size < MIN_WINDOW_SAMPLES:
            raise AudioError(
                f"{what}: audio is too short ({window.size} samples); the model needs at least "
                f"{MIN_WINDOW_SAMPLES} samples"
            )
        yield last_start, window, 0, True
        return


class Stitcher:
    """Collects the outputs of one input's windows (in any order) and hands out their centres in order, as
    soon as the windows before them are in (so a long input can be decoded while it is being computed)."""

    def __init__(self, ratio: int) -> None:
        self.ratio = ratio
        self.parts: dict[int, tuple[int, int, np.ndarray]] = {}
        self.count: int | None = None  # windows in all, known once the last one was cut
        self.next = 0  # the next window to hand out
        self.emitted = 0  # frames handed out so far

    def add(self, window: Window, log_probs: np.ndarray) -> None:
        self.parts[window.index] = (window.start, window.right, log_probs)

    @property
    def complete(self) -> bool:
        """All windows were handed out."""
        return self.count is not None and self.next == self.count

    def ready(self) -> list[np.ndarray]:
        """The centres of the windows that can be handed out now, in order (each frame exactly once)."""
        pieces = []
        while self.next in self.parts:
            start, right, lp = self.parts.pop(self.next)
            self.next += 1
            first = start // self.ratio
            lo = max(0, self.emitted - first)
            hi = lp.shape[0] - right // self.ratio
            if hi > lo:
                pieces.append(lp[lo:hi])
                self.emitted = first + hi
        return pieces


def join(pieces: list[np.ndarray], vocab: int) -> np.ndarray:
    """Consecutive pieces of log-probabilities as one (frames, vocab) matrix."""
    if not pieces:
        return np.zeros((0, vocab), np.float32)
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


__all__ = ["Stitcher", "Window", "chunk_sizes", "cut_windows", "join"]
