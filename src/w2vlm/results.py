"""The result model shared by every surface: a :class:`Transcript` per input, made of words (with times and
confidences), characters, segments and n-best alternatives, or the error that stopped the input.

The engine (:mod:`w2vlm.engine`) produces these; the command line's writers (:mod:`w2vlm.writers`), the
server, Ray and the pipeline's dictionaries are views of them. Segments are stretches of speech: those the voice
activity detector found (each recognised on its own), or, without it, the words between pauses of
:data:`SEGMENT_PAUSE_S`. Subtitle cues and tsv rows (:meth:`Transcript.cues`) split each segment further where
a cue would pass ``max_s`` seconds (default :data:`CUE_MAX_S`) or ``max_chars`` characters (default
:data:`CUE_LINES` lines of :data:`CUE_LINE_WIDTH`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate, pairwise

SEGMENT_PAUSE_S = 0.8
CUE_MAX_S = 7.0
#: Shortest time a subtitle cue stays on screen where the next cue leaves room (a cue's words can take 0.02 s)
CUE_MIN_S = 1.0
CUE_LINE_WIDTH = 42
CUE_LINES = 2


@dataclass
class Word:
    """One word with its start and end in seconds and its confidence in [0, 1] (None when unknown)."""

    word: str
    start: float
    end: float
    confidence: float | None = None


@dataclass
class Alternative:
    """One of the n best hypotheses: its text and scores (acoustic, and acoustic + LM + word bonus)."""

    text: str
    logit_score: float | None = None
    lm_score: float | None = None


@dataclass
class Segment:
    """A stretch of speech and its words (also a subtitle cue or tsv row, which are parts of segments).

    ``speech_prob``: the voice activity detector's mean speech probability over the segment (None without
    VAD). ``no_speech_prob``: one minus the mean posterior of the tokens the model emitted in it (see
    :mod:`w2vlm.engine.segments`); None when unknown.
    """

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    speech_prob: float | None = None
    no_speech_prob: float | None = None

    @property
    def confidence(self) -> float | None:
        """The mean confidence of the segment's words (None when they have none)."""
        known = [w.confidence for w in self.words if w.confidence is not None]
        return sum(known) / len(known) if known else None


@dataclass
class Transcript:
    """The transcription of one input (a file, bytes, an array).

    ``words`` always carries the decoder's word times (they place the subtitle cues);
    ``word_timestamps`` says whether the writers should show them per word.
    """

    audio: str
    text: str
    duration: float
    words: list[Word] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    word_timestamps: bool = False
    model: str | None = None
    #: characters with their times (``timestamps="char"``), spaces left out
    chars: list[Word] = field(default_factory=list)
    #: why this input has no transcript (it could not be read or decoded); None when it has one
    error: str | None = None
    #: the exception behind ``error`` (for callers that re-raise it); not part of any output
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    #: the stretches of speech, in order (the words of all of them are ``words``)
    segments: list[Segment] = field(default_factory=list)
    #: the model's language (ISO 639) when known: its model card's or the one the caller set
    language: str | None = None

    def cues(self, max_s: float = CUE_MAX_S, max_chars: int = CUE_LINE_WIDTH * CUE_LINES) -> list[Segment]:
        """Subtitle cues: each segment, split where a cue would pass ``max_s`` seconds or ``max_chars``
        characters or at a pause; a text without segments or word times is one cue over the input."""
        if not self.segments:
            return segment_words(self.words, self.text, self.duration, max_s, max_chars)
        out: list[Segment] = []
        for seg in self.segments:
            if not seg.words:
                out.append(seg)
                continue
            for cue in segment_words(seg.words, max_s=max_s, max_chars=max_chars):
                cue.speech_prob, cue.no_speech_prob = seg.speech_prob, seg.no_speech_prob
                out.append(cue)
        return out


def held_cues(cues: Sequence[Segment], min_s: float = CUE_MIN_S, duration: float = 0.0) -> list[Segment]:
    """``cues`` as subtitles show them: each kept on screen for at least ``min_s`` seconds, as far as the next
    cue's start (and the input's ``duration``, when known) allow; a cue otherwise ends with its last word, which
    can be a fraction of a second after it starts. Only the ends move."""
    out = []
    for i, cue in enumerate(cues):
        limit = cues[i + 1].start if i + 1 < len(cues) else (duration if duration > cue.end else math.inf)
        out.append(replace(cue, end=max(cue.end, min(cue.start + min_s, limit))))
    return out


def segment_words(
    words: Sequence[Word],
    text: str = "",
    duration: float = 0.0,
    max_s: float = CUE_MAX_S,
    max_chars: int = CUE_LINE_WIDTH * CUE_LINES,
) -> list[Segment]:
    """Group words into cues: a new cue after a pause of :data:`SEGMENT_PAUSE_S`; words between pauses that
    pass ``max_s`` seconds or ``max_chars`` characters are cut into as few cues as the limits need, of even
    length where the limits allow (no cue of one stray word). A text without word times becomes one cue over
    the whole duration."""
    if not words:
        return [Segment(0.0, duration, text)] if text.strip() else []
    runs: list[list[Word]] = [[words[0]]]
    for w in words[1:]:
        if w.start - runs[-1][-1].end >= SEGMENT_PAUSE_S:
            runs.append([])
        runs[-1].append(w)
    out: list[Segment] = []
    for run in runs:
        cues = _greedy_cues(run, max_s, max_chars)
        if len(cues) > 1:
            cues = _even_cues(run, len(cues), max_s, max_chars) or cues
        out += [_segment(c) for c in cues]
    return out


def _fits(words: Sequence[Word], max_s: float, max_chars: int) -> bool:
    return len(words) == 1 or (
        words[-1].end - words[0].start <= max_s and sum(len(w.word) for w in words) + len(words) - 1 <= max_chars
    )


def _greedy_cues(words: list[Word], max_s: float, max_chars: int) -> list[list[Word]]:
    """Words in order, each cue as long as the limits allow."""
    cues: list[list[Word]] = [[]]
    for w in words:
        if cues[-1] and not _fits([*cues[-1], w], max_s, max_chars):
            cues.append([])
        cues[-1].append(w)
    return cues


def _even_cues(words: list[Word], count: int, max_s: float, max_chars: int) -> list[list[Word]] | None:
    """``words`` in ``count`` cues of about the same number of characters, or None when such cues would pass
    the limits."""
    ends = list(accumulate(len(w.word) + 1 for w in words))  # characters up to and with each word's space
    cuts = [0]
    for j in range(1, count):
        target = ends[-1] * j / count
        cut = min(range(len(ends) - 1), key=lambda b: abs(ends[b] - target)) + 1
        if cut <= cuts[-1]:
            return None
        cuts.append(cut)
    cuts.append(len(words))
    cues = [words[a:b] for a, b in pairwise(cuts)]
    return cues if all(_fits(c, max_s, max_chars) for c in cues) else None


def _segment(words: list[Word]) -> Segment:
    return Segment(words[0].start, words[-1].end, " ".join(w.word for w in words), list(words))


__all__ = [
    "CUE_LINES",
    "CUE_LINE_WIDTH",
    "CUE_MAX_S",
    "CUE_MIN_S",
    "SEGMENT_PAUSE_S",
    "Alternative",
    "Segment",
    "Transcript",
    "Word",
    "held_cues",
    "segment_words",
]
