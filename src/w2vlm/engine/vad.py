"""Voice activity detection: where the speech is in an input, so that each stretch of speech is recognised on its
own and silence and noise are never given to the model.

:class:`~w2vlm.engine.silero.SileroVad` (Silero VAD's network in torch, at 8 kHz; see :mod:`w2vlm.engine.silero`)
gives a speech probability per 32 ms frame, computed in rows of :data:`ROW_FRAMES` frames.

:class:`Segmenter` turns the probabilities into segments, frame by frame and without looking back further than
the open segment: speech starts at a frame at or above ``threshold`` and ends after ``min_silence_s`` below
``threshold - 0.15``; segments shorter than ``min_speech_s`` are dropped; a segment that reaches
``max_segment_s`` is cut at its quietest frame in its second half. :class:`SpeechFinder` drives both over
consecutive blocks of audio at the model's rate and hands out each segment's audio (padded by ``pad_s`` on each
side, never into its neighbours: a gap shorter than two pads is split in the middle) as soon as it is closed,
holding no more audio than the open segment needs. It runs the VAD on whole rows at the same places of the input
however the input is read, so the segments do not depend on the blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from w2vlm.engine.silero import FRAME_S, ROW_FRAMES, WARMUP_FRAMES, SileroVad

T = TypeVar("T")

#: How far below ``threshold`` a probability must fall to count as silence.
NEGATIVE_MARGIN = 0.15
#: Seconds of audio the two sides of a forced cut share (speech longer than ``max_segment_s`` without a pause):
#: each side is recognised with this much of the other, so that a word the cut goes through is whole in both,
#: and :func:`w2vlm.engine.segments.merge` keeps each word from the side its middle is on (a cut through a word
#: lost it: it came out as two fragments or not at all).
CUT_OVERLAP_S = 1.0
#: Audio collected before the VAD runs on it (seconds; larger batches, fewer calls).
_VAD_BLOCK_S = 120.0


@dataclass(frozen=True)
class VadParams:
    """Segmentation settings (see the module docstring); times in seconds. The engine makes them from its
    :class:`~w2vlm.engine.config.EngineConfig`, where the defaults are."""

    threshold: float
    min_speech_s: float
    min_silence_s: float
    pad_s: float
    max_segment_s: float


class Segmenter:
    """Speech segments from a stream of frame probabilities: ``push`` them in order, then ``finish``; both return
    the segments closed so far as ``(start frame, end frame, mean probability, cut)`` where ``cut`` says the
    segment ended at a forced cut (it was too long) rather than in silence."""

    def __init__(self, params: VadParams) -> None:
        self.threshold = params.threshold
        self.negative = max(0.01, params.threshold - NEGATIVE_MARGIN)
        self.min_speech = max(1, round(params.min_speech_s / FRAME_S))
        self.min_silence = max(1, round(params.min_silence_s / FRAME_S))
        self.max_frames = max(2, round(params.max_segment_s / FRAME_S))
        self.t = 0  # frames seen
        self.start: int | None = None  # first frame of the open segment
        self.silence: int | None = None  # first frame of the silence that may end it
        self.buf: list[float] = []  # probabilities from the open segment's start

    def push(self, probs: np.ndarray) -> list[tuple[int, int, float, bool]]:
        out: list[tuple[int, int, float, bool]] = []
        threshold, negative = self.threshold, self.negative
        for p in probs.tolist():
            t = self.t
            self.t += 1
            if self.start is None:
                if p >= threshold:
                    self.start, self.silence, self.buf = t, None, [p]
                continue
            self.buf.append(p)
            if p >= threshold:
                self.silence = None
            elif p < negative and self.silence is None:
                self.silence = t
            if self.silence is not None and self.t - self.silence >= self.min_silence:
                self._close(self.silence, False, out)
                self.start = None
            elif self.t - self.start >= self.max_frames:
                self._cut(out)
        return out

    def finish(self) -> list[tuple[int, int, float, bool]]:
        out: list[tuple[int, int, float, bool]] = []
        if self.start is not None:
            self._close(self.silence if self.silence is not None else self.t, False, out)
            self.start = None
        return out

    def _close(self, end: int, cut: bool, out: list[tuple[int, int, float, bool]]) -> None:
        assert self.start is not None
        if end - self.start >= self.min_speech:
            out.append((self.start, end, float(np.mean(self.buf[: end - self.start])), cut))

    def _cut(self, out: list[tuple[int, int, float, bool]]) -> None:
        """Close a segment that grew to the longest allowed at its quietest frame in its second half; the
        speech after that frame opens the next segment."""
        assert self.start is not None
        half = len(self.buf) // 2
        at = half + int(np.argmin(self.buf[half:]))
        end = self.start + max(1, at)
        self._close(end, True, out)
        self.buf = self.buf[end - self.start :]
        self.start = end
        if self.silence is not None and self.silence < end:
            self.silence = None


@dataclass
class Speech:
    """One segment of an input: its first sample and audio at the model's rate, and its mean speech
    probability. A segment that ends at a forced cut has ``right`` samples after the cut (the next segment's,
    which starts as far before it: :data:`CUT_OVERLAP_S`)."""

    start: int
    audio: np.ndarray
    speech_prob: float
    right: int = 0


class SpeechFinder:
    """The speech segments of one input read as consecutive blocks at ``sampling_rate`` (see the module
    docstring). ``samples`` is the input's length once :meth:`segments` is exhausted."""

    def __init__(self, vad: SileroVad, sampling_rate: int, params: VadParams) -> None:
        self.vad = vad
        self.sr = sampling_rate
        self.segmenter = Segmenter(params)
        self.pad = round(params.pad_s * sampling_rate)
        self.samples = 0
        #: time spent on the VAD (resampling to its rate, probabilities, segmenting): wall-clock seconds, and this
        #: thread's CPU seconds (what the VAD itself costs, without the time other threads had the CPU)
        self.seconds_vad = 0.0
        self.cpu_seconds_vad = 0.0

    def _timed(self, body: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return body(*args, **kwargs)
        finally:
            self.seconds_vad += time.perf_counter() - t0
            self.cpu_seconds_vad += time.thread_time() - c0

    def frame_sample(self, frame: int) -> int:
        return round(frame * FRAME_S * self.sr)

    def segments(self, blocks: Iterable[np.ndarray]) -> Iterator[Speech]:
        import soxr

        rate, frame_len = self.vad.rate, self.vad.frame
        resampler = None if self.sr == rate else soxr.ResampleStream(self.sr, rate, 1, dtype="float32")
        audio = np.zeros(0, np.float32)  # model-rate audio from sample `base` on
        base = 0
        low = np.zeros(0, np.float32)  # 8 kHz audio not yet turned into probabilities
        history = np.zeros(0, np.float32)  # 8 kHz audio just before `low` (warm-up of the next call)
        pending: list[tuple[int, int, float, bool]] = []  # closed segments (frames) waiting for their audio
        prev_end = 0  # last sample handed out (at a forced cut: the cut)
        prev_cut = False
        block_low = int(_VAD_BLOCK_S * rate)
        overlap = round(CUT_OVERLAP_S * self.sr)

        def take(final: bool) -> Iterator[Speech]:
            nonlocal audio, base, prev_end, prev_cut
            segmenter = self.segmenter
            while pending:
                f0, f1, prob, cut = pending[0]
                start = self.frame_sample(f0)
                start = max(0, start - overlap) if prev_cut else max(prev_end, start - self.pad)
                end = self.frame_sample(f1)
                own_end = end
                if cut:
                    end += overlap
                else:  # padded, but at most half way to the next segment
                    following = pending[1][0] if len(pending) > 1 else segmenter.start
                    if following is not None:
                        end += min(self.pad, (self.frame_sample(following) - end) // 2)
                    elif final or self.frame_sample(segmenter.t) >= end + 2 * self.pad:
                        end += self.pad
                    else:
                        break  # a segment may still start less than two pads after this one
                have = base + audio.size
                if end > have and not final:
                    break
                end = min(end, have)
                pending.pop(0)
                prev_end, prev_cut = (own_end if cut else end), cut
                if end > start:
                    right = max(0, end - own_end) if cut else 0
                    yield Speech(start, audio[start - base : end - base].copy(), prob, right)
            # keep only the audio a segment can still need
            first = segmenter.t if segmenter.start is None else segmenter.start
            first = pending[0][0] if pending else first
            # (the segment after a forced cut starts `overlap` before it)
            keep_from = prev_end - overlap if prev_cut else max(prev_end, self.frame_sample(first) - self.pad)
            if keep_from > base:
                drop = min(keep_from - base, audio.size)
                audio, base = audio[drop:], base + drop

        def run_vad(final: bool) -> None:
            nonlocal low, history
            frames = low.size // frame_len
            if final and low.size % frame_len:
                low = np.concatenate([low, np.zeros(frame_len - low.size % frame_len, np.float32)])
                frames = low.size // frame_len
            if not final:  # whole rows: the rows fall at the same places of the input whatever the blocks
                frames -= frames % ROW_FRAMES
            if frames == 0:
                return
            done = frames * frame_len
            probs = self._timed(self.vad.probs, low[:done], history if history.size else None)
            history = np.concatenate([history, low[:done]])[-(WARMUP_FRAMES * frame_len + self.vad.context) :]
            low = low[done:]
            pending.extend(self._timed(self.segmenter.push, probs))

        # blocks are gathered in lists and joined once per VAD run (joining each block to what is there copied a
        # 120 s buffer several times over: ~15 % of the VAD's time on long files)
        blocks_in: list[np.ndarray] = []
        low_in: list[np.ndarray] = []
        gathered = 0

        def join_blocks() -> None:
            nonlocal audio, low
            audio = np.concatenate([audio, *blocks_in]) if blocks_in else audio
            low = np.concatenate([low, *low_in]) if low_in else low
            blocks_in.clear()
            low_in.clear()

        for block in blocks:
            if block.size == 0:
                continue
            block = np.asarray(block, np.float32)
            self.samples += block.size
            blocks_in.append(block)
            converted = block if resampler is None else self._timed(resampler.resample_chunk, block)
            low_in.append(converted)
            gathered += converted.size
            if gathered >= block_low:
                join_blocks()
                run_vad(False)
                yield from take(False)
                gathered = low.size
        if resampler is not None:
            low_in.append(self._timed(resampler.resample_chunk, np.zeros(0, np.float32), last=True))
        join_blocks()
        run_vad(True)
        pending.extend(self.segmenter.finish())
        yield from take(True)


__all__ = ["CUT_OVERLAP_S", "NEGATIVE_MARGIN", "Segmenter", "Speech", "SpeechFinder", "VadParams"]
