"""The result model shared by every surface: a :class:`Transcript` per input, made of words (with times and
confidences), characters, segments and n-best alternatives, or the error that stopped the input.

The engine (:mod:`w2vlm.engine`) produces these; the command line's writers (:mod:`w2vlm.writers`), the
server, Ray and the pipeline's dictionaries are views of them. Subtitle cues and tsv rows group words into
segments: a new segment starts after a pause of :data:`SEGMENT_PAUSE_S`, or when it would pass
:data:`SEGMENT_MAX_S` seconds or :data:`SEGMENT_MAX_CHARS` characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SEGMENT_PAUSE_S = 0.8
SEGMENT_MAX_S = 7.0
SEGMENT_MAX_CHARS = 84


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
    """Consecutive words shown together (a subtitle cue, a tsv row)."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


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

    def segments(self) -> list[Segment]:
        return segment_words(self.words, self.text, self.duration)


def segment_words(words: Sequence[Word], text: str = "", duration: float = 0.0) -> list[Segment]:
    """Group words into segments (pauses, length and duration limits); a text without word times becomes
    one segment over the whole duration."""
    if not words:
        return [Segment(0.0, duration, text)] if text.strip() else []
    segments: list[Segment] = []
    current: list[Word] = []
    chars = 0
    for w in words:
        if current:
            pause = w.start - current[-1].end
            too_long = w.end - current[0].start > SEGMENT_MAX_S
            too_wide = chars + 1 + len(w.word) > SEGMENT_MAX_CHARS
            if pause >= SEGMENT_PAUSE_S or too_long or too_wide:
                segments.append(_segment(current))
                current, chars = [], 0
        chars += len(w.word) + (1 if current else 0)
        current.append(w)
    segments.append(_segment(current))
    return segments


def _segment(words: list[Word]) -> Segment:
    return Segment(words[0].start, words[-1].end, " ".join(w.word for w in words), list(words))


__all__ = [
    "SEGMENT_MAX_CHARS",
    "SEGMENT_MAX_S",
    "SEGMENT_PAUSE_S",
    "Alternative",
    "Segment",
    "Transcript",
    "Word",
    "segment_words",
]
