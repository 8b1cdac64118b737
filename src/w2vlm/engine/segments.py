"""Segments of a transcript, and the model's own evidence that a stretch of audio is speech.

On speech, the model emits its tokens with high posteriors (0.9 and more on average over the frames where a
non-blank token is the most probable); on noise it emits few tokens, with posteriors near 0.3, which a beam search
with an LM would still turn into words. :func:`frame_evidence` keeps, per frame, the posterior of the most
probable token where that token is not blank; a segment's ``no_speech_prob`` is one minus their mean over its
frames (1 when the model emitted nothing there), and a segment above the decoding's ``no_speech_threshold``
gives no words.

With voice activity detection each speech segment is decoded on its own and :func:`merge` joins the segments'
transcripts at their places in the input. Without it, :func:`split_by_pauses` makes segments of the words,
cut at pauses of :data:`~w2vlm.results.SEGMENT_PAUSE_S`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

from w2vlm.results import Alternative, Segment, Transcript, Word, segment_words

#: one decoded speech segment (or a whole input): its transcript, start seconds in the input, VAD speech
#: probability (None: not a VAD segment) and frame evidence (:func:`frame_evidence`)
DecodedPart = tuple[Transcript, float, float | None, np.ndarray]


def frame_evidence(log_probs: np.ndarray, blank: int) -> np.ndarray:
    """Per frame: the posterior of the most probable token where it is not ``blank``, else NaN (float32)."""
    if log_probs.shape[0] == 0:
        return np.zeros(0, np.float32)
    ids = log_probs.argmax(axis=1)
    top = np.exp(log_probs[np.arange(ids.size), ids].astype(np.float32))
    return np.where(ids != blank, top, np.nan).astype(np.float32)


def no_speech_prob(evidence: np.ndarray) -> float:
    """One minus the mean posterior of the tokens the model emitted over these frames (1.0 when none)."""
    emitted = evidence[~np.isnan(evidence)]
    return 1.0 if emitted.size == 0 else float(1.0 - emitted.mean())


def _frames(seconds: float, seconds_per_frame: float) -> int:
    return max(0, round(seconds / seconds_per_frame))


def _is_speech(prob: float, threshold: float | None) -> bool:
    return threshold is None or prob <= threshold


def _segment(words: list[Word], no_speech: float, speech_prob: float | None = None) -> Segment:
    return Segment(
        start=words[0].start,
        end=words[-1].end,
        text=" ".join(w.word for w in words),
        words=words,
        speech_prob=speech_prob,
        no_speech_prob=no_speech,
    )


def split_by_pauses(
    transcript: Transcript, evidence: np.ndarray, seconds_per_frame: float, threshold: float | None
) -> Transcript:
    """``transcript`` (of a whole input, decoded without VAD) with segments made of its words at pauses; the
    words of segments the model's evidence calls non-speech are removed (and the text made of the rest)."""
    if transcript.error is not None or not transcript.words:
        transcript.segments = []
        if transcript.text.strip() and not transcript.words:  # no word times: one segment over the input
            transcript.segments = [Segment(0.0, transcript.duration, transcript.text)]
        return transcript
    # the words between pauses (results.segment_words without its cue limits)
    groups = [seg.words for seg in segment_words(transcript.words, max_s=math.inf, max_chars=sys.maxsize)]
    segments = []
    for group in groups:
        lo = _frames(group[0].start, seconds_per_frame)
        hi = max(lo + 1, _frames(group[-1].end, seconds_per_frame))
        prob = no_speech_prob(evidence[lo:hi])
        if _is_speech(prob, threshold):
            segments.append(_segment(group, prob))
    if len(segments) < len(groups):
        _keep_segments(transcript, segments)
    transcript.segments = segments
    return transcript


def _keep_segments(transcript: Transcript, segments: list[Segment]) -> None:
    """Reduce a transcript to the words (and characters) of ``segments``."""
    transcript.words = [w for s in segments for w in s.words]
    transcript.text = " ".join(s.text for s in segments)
    spans = [(s.start, s.end) for s in segments]
    transcript.chars = [c for c in transcript.chars if any(a <= c.start < b or a < c.end <= b for a, b in spans)]
    transcript.alternatives = [Alternative(transcript.text)] if transcript.alternatives else []


def assemble(
    name: str,
    parts: Sequence[DecodedPart],
    seconds: float,
    seconds_per_frame: float,
    threshold: float | None,
    model: str | None = None,
) -> Transcript:
    """One input's transcript from its decoded parts: a whole input (one part without a speech probability)
    split at its pauses (:func:`split_by_pauses`), or its VAD speech segments joined (:func:`merge`)."""
    if len(parts) == 1 and parts[0][2] is None:
        transcript, _, _, evidence = parts[0]
        transcript.duration = seconds
        return split_by_pauses(transcript, evidence, seconds_per_frame, threshold)
    return merge(name, parts, seconds, threshold, model, seconds_per_frame)


def _middle(w: Word) -> float:
    return (w.start + w.end) / 2


def _cuts(parts: Sequence[DecodedPart], seconds_per_frame: float) -> list[tuple[float, float]]:
    """Per part, the stretch of the input its words may come from: all of it, except where it overlaps the
    part before or after (the two sides of a forced cut share audio, :data:`~w2vlm.engine.vad.CUT_OVERLAP_S`);
    there the middle of the shared stretch divides them."""
    spans = [(offset, offset + evidence.size * seconds_per_frame) for _, offset, _, evidence in parts]
    bounds = [(-math.inf, math.inf) for _ in parts]
    for k in range(1, len(parts)):
        (_, end), (start, _) = spans[k - 1], spans[k]
        if end > start:
            cut = (start + end) / 2
            bounds[k - 1] = (bounds[k - 1][0], cut)
            bounds[k] = (cut, bounds[k][1])
    return bounds


def merge(
    name: str,
    parts: Sequence[DecodedPart],
    duration: float,
    threshold: float | None,
    model: str | None = None,
    seconds_per_frame: float = 0.0,
) -> Transcript:
    """One transcript from the transcripts of an input's speech segments, each given as ``(transcript, start
    seconds in the input, VAD speech probability, frame evidence)`` in order. Times move to input time; a
    segment the model calls non-speech gives no words; the first failed segment fails the whole input. Where
    two segments share audio (the sides of a forced cut; seen with ``seconds_per_frame``), each word comes from
    the segment its middle falls in, so that a word the cut goes through comes out once, whole."""
    for t, _, _, _ in parts:
        if t.error is not None:
            t.audio, t.duration, t.segments = name, duration, []
            return t
    words: list[Word] = []
    chars: list[Word] = []
    segments: list[Segment] = []
    logit = lm = 0.0
    scored = bool(parts)
    bounds = _cuts(parts, seconds_per_frame) if seconds_per_frame > 0 else [(-math.inf, math.inf)] * len(parts)
    for (t, offset, speech_prob, evidence), (lo, hi) in zip(parts, bounds, strict=True):
        prob = no_speech_prob(evidence)
        moved = [Word(w.word, w.start + offset, w.end + offset, w.confidence) for w in t.words]
        moved = [w for w in moved if lo <= _middle(w) < hi]
        if not moved or not _is_speech(prob, threshold):
            continue
        words += moved
        moved_chars = [Word(c.word, c.start + offset, c.end + offset, c.confidence) for c in t.chars]
        kept = (moved[0].start, moved[-1].end)
        chars += [c for c in moved_chars if kept[0] <= _middle(c) <= kept[1]]
        segments.append(_segment(moved, prob, speech_prob))
        best = t.alternatives[0] if t.alternatives else None
        if best is None or best.logit_score is None:
            scored = False
        else:
            logit += best.logit_score
            lm += best.lm_score or 0.0
    text = " ".join(s.text for s in segments)
    alternatives = [Alternative(text, logit if scored else None, lm if scored else None)]
    word_timestamps = any(t.word_timestamps for t, _, _, _ in parts)
    return Transcript(
        audio=name,
        text=text,
        duration=duration,
        words=words,
        alternatives=alternatives,
        word_timestamps=word_timestamps,
        model=model,
        chars=chars,
        segments=segments,
    )


__all__ = ["DecodedPart", "assemble", "frame_evidence", "merge", "no_speech_prob", "split_by_pauses"]
