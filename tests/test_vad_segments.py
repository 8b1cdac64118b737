"""Speech segments: the Segmenter's state machine on hand-made probabilities, and the segments' evidence, merge
and split."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from w2vlm.engine.segments import frame_evidence, merge, no_speech_prob, split_by_pauses
from w2vlm.engine.silero import FRAME_S
from w2vlm.engine.vad import NEGATIVE_MARGIN, Segmenter, VadParams
from w2vlm.results import Alternative, Transcript, Word

Closed = tuple[int, int, float, bool]


def _params(
    threshold: float = 0.5,
    min_speech: int = 4,
    min_silence: int = 5,
    max_frames: int = 1000,
    pad_s: float = 0.2,
) -> VadParams:
    """Settings given in frames (the Segmenter rounds seconds to frames)."""
    return VadParams(threshold, min_speech * FRAME_S, min_silence * FRAME_S, pad_s, max_frames * FRAME_S)


def _segment_all(params: VadParams, probs: np.ndarray | list[float], cuts: list[int] | None = None) -> list[Closed]:
    """The segments of ``probs`` pushed in pieces cut at ``cuts`` (one push without), then finished."""
    values = np.asarray(probs, np.float32)
    seg = Segmenter(params)
    out: list[Closed] = []
    bounds = [0, *sorted(cuts or []), values.size]
    for lo, hi in itertools.pairwise(bounds):
        out += seg.push(values[lo:hi])
    return out + seg.finish()


def _frames(closed: list[Closed]) -> list[tuple[int, int, bool]]:
    return [(a, b, cut) for a, b, _, cut in closed]


# ------------------------------------------------------------------------------------------------ Segmenter


def test_one_burst_is_one_segment_with_its_frames() -> None:
    probs = [0.05] * 10 + [0.9] * 20 + [0.05] * 20
    seg = Segmenter(_params())
    closed = seg.push(np.array(probs, np.float32))
    # closed in the push itself, once min_silence frames of silence followed
    assert _frames(closed) == [(10, 30, False)]
    assert closed[0][2] == pytest.approx(0.9)
    assert seg.finish() == []


def test_speech_until_the_end_is_closed_by_finish() -> None:
    seg = Segmenter(_params())
    assert seg.push(np.array([0.1] * 3 + [0.8] * 10, np.float32)) == []
    assert _frames(seg.finish()) == [(3, 13, False)]
    # ... or at the silence that had begun but was not yet long enough
    seg = Segmenter(_params())
    assert seg.push(np.array([0.8] * 10 + [0.1] * 3, np.float32)) == []
    assert _frames(seg.finish()) == [(0, 10, False)]


def test_bursts_shorter_than_min_speech_are_dropped() -> None:
    silence = [0.0] * 10
    assert _segment_all(_params(min_speech=4), silence + [0.9] * 3 + silence) == []
    assert _frames(_segment_all(_params(min_speech=4), silence + [0.9] * 4 + silence)) == [(10, 14, False)]
    # a short burst among long ones goes, the long ones stay
    probs = silence + [0.9] * 8 + silence + [0.95] * 2 + silence + [0.9] * 6 + silence
    assert _frames(_segment_all(_params(min_speech=4), probs)) == [(10, 18, False), (40, 46, False)]


def test_gaps_shorter_than_min_silence_do_not_split() -> None:
    def probs(gap: int) -> list[float]:
        return [0.0] * 10 + [0.9] * 20 + [0.1] * gap + [0.9] * 20 + [0.0] * 10

    assert _frames(_segment_all(_params(min_silence=5), probs(4))) == [(10, 54, False)]
    assert _frames(_segment_all(_params(min_silence=5), probs(5))) == [(10, 30, False), (35, 55, False)]


def test_hysteresis_between_the_two_thresholds() -> None:
    params = _params(threshold=0.5)
    middle = 0.5 - NEGATIVE_MARGIN / 2  # between threshold - 0.15 and threshold
    assert _segment_all(params, [middle] * 100) == []  # does not start speech
    assert _frames(_segment_all(params, [0.0] * 5 + [0.5] * 6 + [0.0] * 10)) == [(5, 11, False)]  # >= starts it
    # does not end speech, however long
    assert _frames(_segment_all(params, [0.9] * 10 + [middle] * 100 + [0.0] * 10)) == [(0, 110, False)]
    # nor break a silence that has begun: the segment ends where the silence began
    assert _frames(_segment_all(params, [0.9] * 10 + [0.1] * 2 + [middle] * 3 + [0.9] * 10)) == [
        (0, 10, False),
        (15, 25, False),
    ]
    # while speech (>= threshold) does break it
    assert _frames(_segment_all(params, [0.9] * 10 + [0.1] * 2 + [0.6] + [0.1] * 2 + [0.9] * 10)) == [(0, 25, False)]


def test_long_speech_is_cut_at_the_quietest_frame_of_the_second_half() -> None:
    # 90 frames of speech from frame 5, the longest segment 40 frames; a quieter frame in the first half of the
    # first 40 frames (ignored: it is in the first half) and one in the second half, where the cut goes
    probs = [0.0] * 5 + [0.9] * 90 + [0.0] * 20
    probs[5 + 10] = 0.4  # first half of the first window
    probs[5 + 30] = 0.6  # second half of the first window: the first cut
    probs[65] = 0.7  # second half of the second window (frames 35..74): the second cut
    closed = _segment_all(_params(max_frames=40, min_silence=5, min_speech=3), probs)
    assert _frames(closed) == [(5, 35, True), (35, 65, True), (65, 95, False)]
    assert closed[0][2] == pytest.approx((29 * 0.9 + 0.4) / 30)
    assert closed[1][2] == pytest.approx((0.6 + 29 * 0.9) / 30)
    assert closed[2][2] == pytest.approx((0.7 + 29 * 0.9) / 30)


def test_a_cut_inside_a_beginning_silence_leaves_no_empty_segment() -> None:
    # speech reaches the longest length while a silence (not yet long enough) has begun: the cut goes into the
    # silence (its quietest frames) and no piece of silence becomes a segment of its own
    probs = [0.9] * 37 + [0.0] * 20
    closed = _segment_all(_params(max_frames=40, min_silence=5, min_speech=3), probs)
    assert len(closed) == 1
    start, end, _, cut = closed[0]
    assert start == 0 and 37 <= end <= 40 and cut


_runs = st.lists(
    st.tuples(st.floats(0.0, 1.0, width=32), st.integers(1, 60), st.floats(0.0, 0.2)),
    min_size=0,
    max_size=25,
)


@given(
    runs=_runs,
    seed=st.integers(0, 2**32 - 1),
    threshold=st.sampled_from([0.3, 0.5, 0.7]),
    min_speech=st.integers(1, 8),
    min_silence=st.integers(1, 12),
    max_frames=st.integers(16, 120),
    n_cuts=st.integers(0, 12),
)
@example(  # a probability exactly at the lower threshold in float32, just below it as a Python float
    runs=[(1.0, 1, 0.0), (0.35, 1, 0.0)], seed=0, threshold=0.5, min_speech=1, min_silence=1, max_frames=16, n_cuts=0
)
@settings(max_examples=150, deadline=None)
def test_segmenter_properties_and_any_chunking(
    runs: list[tuple[float, int, float]],
    seed: int,
    threshold: float,
    min_speech: int,
    min_silence: int,
    max_frames: int,
    n_cuts: int,
) -> None:
    """Bursty random probabilities (runs of a level with jitter), pushed whole or in random pieces."""
    rng = np.random.default_rng(seed)
    parts = [np.clip(level + jitter * rng.standard_normal(n), 0.0, 1.0) for level, n, jitter in runs]
    probs = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    params = _params(threshold, min_speech, min_silence, max_frames)
    whole = _segment_all(params, probs)
    cuts = sorted(rng.integers(0, probs.size + 1, n_cuts).tolist())
    assert _segment_all(params, probs, cuts) == whole
    assert _segment_all(params, probs, list(range(probs.size))) == whole  # frame by frame

    negative = max(0.01, threshold - NEGATIVE_MARGIN)
    probs = probs.astype(np.float64)  # compared as the segmenter compares them (Python floats), not in float32
    previous: Closed | None = None
    for closed in whole:
        start, end, mean, cut = closed
        assert 0 <= start < end <= probs.size
        assert min_speech <= end - start <= max(max_frames, 2)
        assert mean == pytest.approx(float(probs[start:end].mean()), abs=1e-5)
        if previous is not None:
            assert previous[1] <= start  # ordered, not overlapping
        if previous is None or not previous[3]:
            assert probs[start] >= threshold  # speech begins at a frame at the threshold ...
            assert previous is None or start >= previous[1] + min_silence  # ... after a silence long enough
        elif start != previous[1]:  # after a cut, the rest follows at once (unless it was too short to keep)
            assert probs[start] >= threshold
        if not cut and end < probs.size:
            # closed at silence: it begins below the lower threshold, and no speech frame follows it too soon
            assert probs[end] < negative
            assert (probs[end : min(end + min_silence, probs.size)] < threshold).all()
        previous = closed


# ------------------------------------------------------------------------------------------------ segments


def _words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(w, a, b, 0.9) for w, a, b in spec]


def _transcript(words: list[Word], duration: float = 10.0, **kwargs: object) -> Transcript:
    text = " ".join(w.word for w in words)
    chars = [
        Word(ch, w.start + k * (w.end - w.start) / len(w.word), w.start + (k + 1) * (w.end - w.start) / len(w.word))
        for w in words
        for k, ch in enumerate(w.word)
    ]
    fields: dict = {"alternatives": [Alternative(text, -3.0, -7.0)], "chars": chars, **kwargs}
    return Transcript(audio="x", text=text, duration=duration, words=words, **fields)


def _evidence(frames: int, emitted: dict[tuple[int, int], float]) -> np.ndarray:
    """Per-frame evidence: NaN (blank) everywhere but the given frame ranges."""
    out = np.full(frames, np.nan, np.float32)
    for (lo, hi), value in emitted.items():
        out[lo:hi] = value
    return out


def test_frame_evidence_and_no_speech_prob() -> None:
    lp = np.log(
        np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]], np.float32)
    )  # blank is token 0
    ev = frame_evidence(lp, blank=0)
    assert np.isnan(ev[0]) and np.isnan(ev[3])
    np.testing.assert_allclose(ev[1:3], [0.7, 0.6], rtol=1e-5)
    assert no_speech_prob(ev) == pytest.approx(1 - 0.65)
    assert no_speech_prob(ev[[0, 3]]) == 1.0  # nothing emitted
    assert no_speech_prob(np.zeros(0, np.float32)) == 1.0
    assert frame_evidence(np.zeros((0, 3), np.float32), 0).size == 0
    assert np.isnan(frame_evidence(lp, blank=1)[1])  # another blank id


def test_split_by_pauses_keeps_speech_and_removes_non_speech() -> None:
    spf = 0.02
    words = _words(("one", 0.0, 0.3), ("two", 0.4, 0.7), ("three", 2.0, 2.4), ("four", 4.0, 4.5))
    # frames 0..35 confident, 100..120 weak (non-speech), 200..225 confident
    evidence = _evidence(500, {(0, 35): 0.95, (100, 120): 0.2, (200, 225): 0.9})

    kept = split_by_pauses(_transcript(list(words)), evidence, spf, threshold=None)
    assert [s.text for s in kept.segments] == ["one two", "three", "four"]
    assert kept.text == "one two three four" and len(kept.words) == 4  # None keeps everything
    assert kept.segments[1].no_speech_prob == pytest.approx(0.8)
    assert all(s.speech_prob is None for s in kept.segments)
    assert (kept.segments[0].start, kept.segments[0].end) == (0.0, 0.7)

    cut = split_by_pauses(_transcript(list(words)), evidence, spf, threshold=0.5)
    assert [s.text for s in cut.segments] == ["one two", "four"]
    assert cut.text == "one two four"
    assert [w.word for w in cut.words] == ["one", "two", "four"]
    assert "".join(c.word for c in cut.chars) == "onetwofour"  # the characters of "three" went too
    assert [a.text for a in cut.alternatives] == ["one two four"]


def test_split_by_pauses_without_words_or_with_an_error() -> None:
    spf = 0.02
    ev = np.zeros(10, np.float32)
    empty = split_by_pauses(Transcript("x", "", 3.0), ev, spf, 0.5)
    assert empty.segments == [] and empty.text == ""
    untimed = split_by_pauses(Transcript("x", "some text", 3.0), ev, spf, 0.5)  # text without word times
    assert [(s.start, s.end, s.text) for s in untimed.segments] == [(0.0, 3.0, "some text")]
    broken = Transcript("x", "", 3.0, words=_words(("a", 0, 1)), error="boom")
    assert split_by_pauses(broken, ev, spf, 0.5).segments == []


def test_merge_moves_times_and_drops_non_speech_segments() -> None:
    a = _transcript(_words(("hello", 0.1, 0.5), ("there", 0.6, 0.9)))
    b = _transcript(_words(("noise", 0.0, 0.4)))
    c = _transcript(_words(("bye", 0.2, 0.4)))
    silent = Transcript("x", "", 1.0, alternatives=[Alternative("", -1.0, -1.0)])
    confident = _evidence(50, {(5, 45): 0.9})
    weak = _evidence(50, {(0, 20): 0.3})
    parts = [(a, 2.0, 0.9, confident), (b, 5.0, 0.6, weak), (silent, 6.0, 0.7, confident), (c, 8.0, 0.8, confident)]

    out = merge("file.wav", parts, 12.0, threshold=0.5, model="m")
    assert out.audio == "file.wav" and out.duration == 12.0 and out.model == "m" and out.error is None
    assert out.text == "hello there bye"
    assert [(w.word, w.start, w.end) for w in out.words] == [
        ("hello", 2.1, 2.5),
        ("there", 2.6, 2.9),
        ("bye", 8.2, 8.4),
    ]
    assert [(s.text, s.start, s.end, s.speech_prob) for s in out.segments] == [
        ("hello there", 2.1, 2.9, 0.9),
        ("bye", 8.2, 8.4, 0.8),
    ]
    assert all(s.no_speech_prob == pytest.approx(0.1) for s in out.segments)
    assert "".join(ch.word for ch in out.chars) == "hellotherebye"
    assert out.chars[0].start == pytest.approx(2.1)
    assert (out.alternatives[0].logit_score, out.alternatives[0].lm_score) == (-6.0, -14.0)  # two kept segments

    everything = merge("file.wav", parts, 12.0, threshold=None)
    assert everything.text == "hello there noise bye"
    assert [s.speech_prob for s in everything.segments] == [0.9, 0.6, 0.8]


def test_merge_of_nothing_and_of_a_failed_part() -> None:
    empty = merge("f", [], 30.0, 0.5)
    assert empty.text == "" and empty.words == [] and empty.segments == [] and empty.duration == 30.0
    assert empty.error is None

    ok = _transcript(_words(("fine", 0.0, 0.5)))
    bad = Transcript("segment", "", 0.0, error="decoder failed", exception=RuntimeError("x"))
    ev = _evidence(10, {(0, 10): 0.9})
    out = merge("f.wav", [(ok, 0.0, 0.9, ev), (bad, 3.0, 0.9, ev), (ok, 6.0, 0.9, ev)], 9.0, 0.5)
    assert out.error == "decoder failed" and isinstance(out.exception, RuntimeError)
    assert out.audio == "f.wav" and out.duration == 9.0 and out.segments == []


def test_segment_confidence_is_the_mean_word_confidence() -> None:
    words = [Word("a", 0, 1, 0.5), Word("b", 1, 2, 1.0), Word("c", 2, 3, None)]
    out = merge("f", [(_transcript(words), 0.0, 0.9, _evidence(5, {(0, 5): 1.0}))], 3.0, 0.5)
    assert out.segments[0].confidence == pytest.approx(0.75)
    assert out.segments[0].no_speech_prob == pytest.approx(0.0, abs=1e-6)


def test_the_sides_of_a_forced_cut_give_each_word_once() -> None:
    """Two segments that share audio around a forced cut (each recognised with a second of the other's audio):
    each word comes from the side its middle is on, so a word the cut goes through comes out once and whole."""
    from w2vlm.engine.segments import assemble
    from w2vlm.results import Transcript, Word

    spf = 0.02
    evidence = np.full(500, 0.9, np.float32)  # 10 s of frames the model is sure of
    # first side: 0-10 s of the input (the cut at 9 s, one second past it); second side: 8-18 s
    a = Transcript("x", "", 10.0, [Word("the", 7.0, 7.3), Word("walked", 8.8, 9.3), Word("to", 9.6, 9.8)])
    b = Transcript("x", "", 10.0, [Word("ked", 0.0, 0.2), Word("walked", 0.8, 1.3), Word("to", 1.6, 1.8)])
    b.words.append(Word("school", 2.0, 2.6))
    got = assemble("x", [(a, 0.0, 0.9, evidence), (b, 8.0, 0.9, evidence)], 18.0, spf, None)
    assert [w.word for w in got.words] == ["the", "walked", "to", "school"]
    assert [s.text for s in got.segments] == ["the", "walked to school"]  # "walked": its middle 9.05 s
    assert [w.start for w in got.words] == [7.0, 8.8, 9.6, 10.0]
    # segments that do not share audio keep all their words
    apart = assemble("x", [(a, 0.0, 0.9, evidence), (b, 10.0, 0.9, evidence)], 20.0, spf, None)
    assert len(apart.words) == 7
