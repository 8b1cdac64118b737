"""Decoding results: pyctcdecode's beam tuples with named fields, token spans and word confidences."""

from __future__ import annotations

from typing import Any

import numpy as np

from w2vlm import _core
from w2vlm.decoder.confidence import word_confidences
from w2vlm.decoder.logits import to_log_probs

Frames = tuple[int, int]
#: a word and its (first, last + 1) frames (pyctcdecode's name)
WordFrames = tuple[str, Frames]


class ConfidenceContext:
    """Computes the word confidences of all beams of one decoding, once, on first use."""

    def __init__(
        self, beams: list[Any], log_probs: np.ndarray, labels: list[str], lm: Any = None, normalized: bool = True
    ) -> None:
        self.beams = beams
        self.log_probs = log_probs  # logits when not ``normalized``: log-softmaxed on first use
        self.normalized = normalized
        self.labels = labels
        self.lm = lm
        self._values: list[list[float]] | None = None

    def get(self, index: int) -> list[float]:
        if self._values is None:
            lp = self.log_probs if self.normalized else to_log_probs(self.log_probs, len(self.labels))
            self._values = word_confidences(self.beams, lp, self.labels, self.lm)
            self.log_probs = None  # type: ignore[assignment]
        return self._values[index]


class _BeamExtras:
    """Attributes shared by both result tuples."""

    _confidence: tuple[ConfidenceContext, int] | None = None
    _char_source: tuple[Any, list[str]] | None = None  # (native hypothesis, labels), converted on first use
    _char_frames: list[tuple[str, Frames]] | None = None

    @property
    def char_frames(self) -> list[tuple[str, Frames]]:
        """Each emitted token (character, delimiter or BPE piece) with its frame span, in order."""
        if self._char_frames is None:
            if self._char_source is None:
                self._char_frames = []
            else:
                hyp, labels = self._char_source
                self._char_frames = [(labels[t], (s, e)) for t, s, e in hyp.tokens]
                self._char_source = None
        return self._char_frames

    @char_frames.setter
    def char_frames(self, value: list[tuple[str, Frames]]) -> None:
        self._char_frames = list(value)
        self._char_source = None

    @property
    def word_confidences(self) -> list[float]:
        """Confidence in [0, 1] of each word (see :func:`w2vlm.decoder.confidence.word_confidences`)."""
        if self._confidence is None:
            return []
        ctx, i = self._confidence
        return ctx.get(i)

    @property
    def words(self) -> list[dict[str, Any]]:
        """Words with frame spans and confidences: [{"word", "start", "end", "confidence"}, ...]."""
        conf = self.word_confidences
        return [
            {"word": w, "start": s, "end": e, "confidence": conf[i] if i < len(conf) else None}
            for i, (w, (s, e)) in enumerate(self.text_frames)  # type: ignore[attr-defined]
        ]

    def __getstate__(self) -> dict[str, Any]:
        self.char_frames  # noqa: B018 - materialise before pickling
        state = dict(self.__dict__)
        state.pop("_char_source", None)
        if state.pop("_confidence", None) is not None:
            state["_fixed_confidences"] = self.word_confidences
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        fixed = state.pop("_fixed_confidences", None)
        self.__dict__.update(state)
        if fixed is not None:
            ctx = ConfidenceContext([], np.zeros((0, 0)), [])
            ctx._values = [fixed]
            self._confidence = (ctx, 0)


class OutputBeam(_BeamExtras, tuple):
    """One hypothesis. A tuple ``(text, last_lm_state, text_frames, logit_score, lm_score)`` as in pyctcdecode,
    with named attributes and more: ``char_frames`` (each emitted token with its frame span).

    Frame spans are ``(start, end)`` with ``end`` exclusive, in logit frames.
    """

    def __new__(
        cls,
        text: str,
        last_lm_state: Any,
        text_frames: list[tuple[str, Frames]],
        logit_score: float,
        lm_score: float,
        char_frames: list[tuple[str, Frames]] | None = None,
    ) -> OutputBeam:
        self = super().__new__(cls, (text, last_lm_state, text_frames, logit_score, lm_score))
        if char_frames is not None:
            self.char_frames = char_frames
        return self

    text = property(lambda self: self[0], doc="The transcript.")
    last_lm_state = property(lambda self: self[1], doc="LM state after the last word (to continue decoding).")
    text_frames = property(lambda self: self[2], doc="[(word, (start_frame, end_frame)), ...]")
    word_frames = text_frames
    logit_score = property(lambda self: self[3], doc="Acoustic log-probability of the hypothesis.")
    lm_score = property(lambda self: self[4], doc="Ranking score: acoustic + LM + hotword terms.")

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling
        return (*tuple(self), self.char_frames)

    def __repr__(self) -> str:
        return (
            f"OutputBeam(text={self.text!r}, logit_score={self.logit_score:.3f}, lm_score={self.lm_score:.3f}, "
            f"text_frames={self.text_frames!r})"
        )


class OutputBeamMPSafe(_BeamExtras, tuple):
    """pyctcdecode's batch result: a tuple ``(text, text_frames, logit_score, lm_score)`` (no LM state)."""

    def __new__(
        cls,
        text: str,
        text_frames: list[tuple[str, Frames]],
        logit_score: float,
        lm_score: float,
        char_frames: list[tuple[str, Frames]] | None = None,
    ) -> OutputBeamMPSafe:
        self = super().__new__(cls, (text, text_frames, logit_score, lm_score))
        if char_frames is not None:
            self.char_frames = char_frames
        return self

    text = property(lambda self: self[0])
    text_frames = property(lambda self: self[1])
    word_frames = text_frames
    logit_score = property(lambda self: self[2])
    lm_score = property(lambda self: self[3])

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (*tuple(self), self.char_frames)


def output_beam(h: _core.Hypothesis, labels: list[str]) -> OutputBeam:
    """A native hypothesis as an :class:`OutputBeam` (token spans converted on first use)."""
    out = OutputBeam(h.text, h.lm_state, [(w, (s, e)) for w, s, e in h.words], h.logit_score, h.score)
    out._char_source = (h, labels)
    return out


def mp_safe(b: OutputBeam) -> OutputBeamMPSafe:
    """The 4-tuple of a beam, without its LM state (pyctcdecode's batch result)."""
    out = OutputBeamMPSafe(b.text, b.text_frames, b.logit_score, b.lm_score)
    out._char_source, out._char_frames = b._char_source, b._char_frames
    out._confidence = b._confidence
    return out


def with_confidence(
    beams: list[OutputBeam], log_probs: np.ndarray, labels: list[str], lm: Any = None, normalized: bool = True
) -> list[OutputBeam]:
    """Give beams their ``word_confidences``, computed on first use from the matrix they were decoded from."""
    ctx = ConfidenceContext(beams, log_probs, labels, lm, normalized)
    for i, b in enumerate(beams):
        b._confidence = (ctx, i)
    return beams
