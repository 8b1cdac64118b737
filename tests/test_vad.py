"""Voice activity detection and speech segments: the Segmenter's state machine on hand-made probabilities, Silero VAD
on the example recordings, SpeechFinder over blocks of audio, the segments' merge and split, and the engine's
segmented path with the embedded default model."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from w2vlm.engine import DecodeConfig, Engine, EngineConfig, vad
from w2vlm.engine import silero as vadnet
from w2vlm.engine.config import DEFAULT_MAX_SEGMENT_S
from w2vlm.engine.inputs import READ_BLOCK_S, InputInfo, InputReader
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


# ------------------------------------------------------------------------------------------------ Silero VAD

needs_vad = pytest.mark.skipif(not vadnet.available(), reason="the 'vad' extra (silero-vad) is not installed")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RATE = 16000


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """The example recordings (16 kHz), in a fixed order."""
    import soundfile as sf

    out = []
    for path in sorted(EXAMPLES.glob("*.wav")):
        audio, rate = sf.read(str(path), dtype="float32")
        assert rate == RATE
        out.append(audio)
    assert len(out) == 4
    return out


@pytest.fixture(scope="module")
def silero() -> vadnet.SileroVad:
    if not vadnet.available():
        pytest.skip("the 'vad' extra is not installed")
    return vadnet.SileroVad.shared()


def _speech_span(clip: np.ndarray) -> tuple[int, int]:
    """Where a clip's speech is (samples): the first and last 32 ms frame within 25 dB of its loudest one."""
    frames = clip[: clip.size // 512 * 512].reshape(-1, 512)
    level = 20 * np.log10(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-12)
    loud = np.flatnonzero(level > level.max() - 25)
    return int(loud[0]) * 512, (int(loud[-1]) + 1) * 512


def _to_vad_rate(audio: np.ndarray) -> np.ndarray:
    import soxr

    low = soxr.resample(audio, RATE, vadnet.VAD_RATE).astype(np.float32)
    return low[: low.size // 256 * 256]


def _reference_probs(audio: np.ndarray, rate: int = vadnet.VAD_RATE) -> np.ndarray:
    """Silero VAD run as it is meant to be run: the wheel's own TorchScript model, frame by frame, its state carried
    from the input's start."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(vadnet.model_path()), map_location="cpu")
    model.reset_states()
    frame = vadnet.RATES[rate][0]
    with torch.inference_mode():
        out = [
            float(model(torch.from_numpy(audio[k * frame : (k + 1) * frame])[None], rate))
            for k in range(audio.size // frame)
        ]
    return np.array(out, np.float32)


def _joined(clips: list[np.ndarray], gaps: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``gaps[0], clips[0], gaps[1], clips[1], ..., gaps[-1]`` and each clip's speech span in the result."""
    parts: list[np.ndarray] = []
    spans = []
    at = 0
    for gap, clip in zip(gaps, clips):
        at += gap.size
        lo, hi = _speech_span(clip)
        spans.append((at + lo, at + hi))
        parts += [gap, clip]
        at += clip.size
    parts += gaps[len(clips) :]
    return np.concatenate(parts).astype(np.float32), spans


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def _noise_floor(seconds: float, seed: int, level: float = 1e-3) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(np.float32)


@needs_vad
def test_probabilities_are_high_in_speech_and_low_in_silence(silero: vadnet.SileroVad, clips: list[np.ndarray]) -> None:
    for clip in clips:
        low = _to_vad_rate(np.concatenate([_silence(1.0), clip, _silence(1.5)]))
        probs = silero.probs(low)
        assert probs.dtype == np.float32 and probs.shape == (low.size // 256,)
        assert ((probs >= 0) & (probs <= 1)).all()
        lo, hi = _speech_span(clip)
        first = math.ceil((RATE + lo) / 512)  # frames (32 ms) wholly inside the speech
        last = (RATE + hi) // 512
        inside = probs[first:last]
        assert inside.mean() > 0.75 and (inside > 0.5).mean() > 0.9
        assert probs[: RATE // 512 - 2].max() < 0.05  # digital silence before the clip
        after = math.ceil((RATE + clip.size) / 512) + 10  # from 0.3 s after its end
        assert probs[after:].max() < 0.1


@needs_vad
@pytest.mark.parametrize("peak_dbfs", [-45.0, -55.0])
def test_quiet_speech_is_found(silero: vadnet.SileroVad, clips: list[np.ndarray], peak_dbfs: float) -> None:
    """Silero's network is level-sensitive: the wheel's own model finds under half of the speech frames of the
    example clips scaled to a loudest frame at -45 dBFS (a quarter at -55). Each row of the VAD's input is raised
    towards LEVEL_DBFS first, so a quiet recording is found nearly as the same recording at its own level."""
    gaps = [_silence(1.0), *[_noise_floor(1.2, k) for k in range(3)], _silence(1.0)]
    audio, spans = _joined(clips, gaps)
    low = _to_vad_rate(audio)
    loudest = np.sqrt((low.reshape(-1, 256).astype(np.float64) ** 2).mean(axis=1)).max()
    quiet = (low * (10 ** (peak_dbfs / 20) / loudest)).astype(np.float32)
    speech = np.zeros(low.size // 256, bool)
    for lo, hi in spans:
        speech[math.ceil(lo / 512) : hi // 512] = True
    wheel = _reference_probs(quiet)
    assert (wheel[speech] > 0.5).mean() < 0.5  # what the level costs without the gain
    ours, loud = silero.probs(quiet), silero.probs(low)
    assert (ours[speech] > 0.5).mean() > 0.8
    assert ((ours > 0.5) == (loud > 0.5)).mean() > 0.85
    assert (ours[~speech] > 0.5).mean() <= (loud[~speech] > 0.5).mean() + 0.02  # no more speech in the gaps


def test_row_gains_raise_quiet_rows_only() -> None:
    own = np.zeros((6, 256), np.float32)
    own[0:2] = 0.3  # -10 dBFS: left as it is
    own[2:4] = 10 ** (-50 / 20)  # 20 dB under the level: raised by 20 dB
    own[4] = 10 ** (-70 / 20)  # a noise floor: raised by at most MAX_GAIN_DB
    index = np.array([[0, 2, 4, 5], [1, 3, 6, 6]])  # 6: no audio
    gains = 20 * np.log10(vadnet._row_gains(own, index))
    np.testing.assert_allclose(gains, [0.0, 20.0, vadnet.MAX_GAIN_DB, vadnet.MAX_GAIN_DB], atol=1e-4)


@needs_vad
def test_a_call_at_a_row_of_another_gain_gives_the_probabilities_of_one_call(
    silero: vadnet.SileroVad, clips: list[np.ndarray]
) -> None:
    """Rows of different gains (a loud clip, then the same quiet): each row's warm-up frames are computed at the
    row's own gain, so a call that starts at any whole row, given the audio before it, still gives the numbers of
    one call over the whole input."""
    loud = _to_vad_rate(np.concatenate([clips[0], _silence(0.5), clips[1]]))
    quiet = _to_vad_rate(np.concatenate([_silence(0.3), 0.005 * clips[2], _silence(0.5), 0.005 * clips[3]]))
    low = np.concatenate([loud, quiet, loud[: 3 * vadnet.ROW_FRAMES * 256], quiet])  # calls with quiet rows only
    probs = silero.probs(low)
    rows = -(-probs.size // vadnet.ROW_FRAMES)
    assert rows >= 5
    for row in range(1, rows):
        at = row * vadnet.ROW_FRAMES * 256
        # to rounding: torch's kernels round a frame or two by ~1e-8 differently when a call starts at some rows
        # (the same without the gain); a warm-up at the wrong gain moves probabilities by up to ~1
        np.testing.assert_allclose(silero.probs(low[at:], low[:at]), probs[row * vadnet.ROW_FRAMES :], atol=1e-6)


@needs_vad
def test_probabilities_of_short_inputs(silero: vadnet.SileroVad) -> None:
    assert silero.probs(np.zeros(255, np.float32)).size == 0
    assert silero.probs(np.zeros(256 * 3 + 100, np.float32)).size == 3  # whole frames only


@needs_vad
def test_batched_probabilities_follow_a_continuous_run(silero: vadnet.SileroVad, clips: list[np.ndarray]) -> None:
    """probs() runs rows of ROW_FRAMES frames as one batch, each from a fresh state warmed up on the audio before
    it; its decisions are mostly those of one continuous frame-by-frame run with the state carried through the
    whole input, and where they differ, the fresh states find speech that the carried state misses (none in the
    silence)."""
    audio, spans = _joined(clips * 2, [_silence(1.0)] * 9)
    low = _to_vad_rate(audio)
    probs = silero.probs(low)
    reference = _reference_probs(low)
    assert probs.size == reference.size > 2 * vadnet.ROW_FRAMES  # several rows
    speech = np.zeros(probs.size, bool)  # frames inside the clips' speech
    for lo, hi in spans:
        speech[math.ceil(lo / 512) : hi // 512] = True
    ours, theirs = probs > 0.5, reference > 0.5
    assert (ours == theirs).mean() >= 0.94
    assert (ours == speech).mean() >= (theirs == speech).mean()  # at least as right as the continuous run
    assert (ours & ~theirs & ~speech).sum() <= 0.01 * probs.size  # no speech the continuous run does not see
    assert np.abs(probs - reference).mean() < 0.055
    # a call that starts at a whole row, given the audio before it, gives the same probabilities as one call
    for row in (1, 2):
        at = row * vadnet.ROW_FRAMES * 256
        np.testing.assert_array_equal(silero.probs(low[at:], low[:at]), probs[row * vadnet.ROW_FRAMES :])
    # the first row starts at the input's start, like the reference (after warm-up frames of zeros)
    first = slice(0, vadnet.ROW_FRAMES)
    assert np.abs(probs[first] - reference[first]).max() < 0.1


@needs_vad
@pytest.mark.parametrize("rate", [8000, 16000])
def test_network_is_the_wheels_model(rate: int, clips: list[np.ndarray]) -> None:
    """The batched network (the STFT and convolutions over all frames, the LSTM in one call) gives the numbers of
    the wheel's TorchScript model run frame by frame, and of its ONNX model where onnxruntime is installed."""
    import soxr
    import torch

    audio = np.concatenate([_silence(0.5), clips[0], _noise_floor(0.7, 3), clips[2]])
    audio = audio if rate == RATE else soxr.resample(audio, RATE, rate).astype(np.float32)
    frame, context = vadnet.RATES[rate]
    frames = audio.size // frame
    signal = np.concatenate([np.zeros(context, np.float32), audio])
    windows = np.stack([signal[k * frame : k * frame + context + frame] for k in range(frames)])
    net = vadnet.SileroVad(rate=rate).network
    with torch.inference_mode():
        ours = net.recur(net.encode(torch.from_numpy(windows))[:, None, :])[:, 0]  # one row, zero state
    reference = _reference_probs(audio, rate)
    assert ours.shape == reference.shape and reference.max() > 0.9 and reference.min() < 0.1
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(vadnet.model_path().with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    onnx = []
    for k in range(frames):
        prob, state = session.run(None, {"input": windows[k][None], "state": state, "sr": np.array(rate, np.int64)})
        onnx.append(float(prob[0, 0]))
    np.testing.assert_allclose(ours, np.array(onnx, np.float32), atol=2e-5)


@needs_vad
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script / save, to make a file of another layout
def test_a_model_file_of_another_layout_is_a_named_error(tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "other.jit"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(bad))
    with pytest.raises(vadnet.VadUnavailable, match=r"other\.jit: not a layout"):
        vadnet.SileroVad(bad)
    (tmp_path / "junk.jit").write_bytes(b"\x00" * 63)
    with pytest.raises(vadnet.VadUnavailable, match=r"junk\.jit"):
        vadnet.SileroVad(tmp_path / "junk.jit")


# ------------------------------------------------------------------------------------------------ SpeechFinder

DEFAULT_PARAMS = VadParams(threshold=0.5, min_speech_s=0.25, min_silence_s=0.3, pad_s=0.2, max_segment_s=20.0)


def _find(
    silero: vadnet.SileroVad, blocks: list[np.ndarray], params: VadParams = DEFAULT_PARAMS
) -> tuple[list[vad.Speech], vad.SpeechFinder]:
    finder = vad.SpeechFinder(silero, RATE, params)
    return list(finder.segments(iter(blocks))), finder


def _random_blocks(audio: np.ndarray, seed: int, most: int = 20_000) -> list[np.ndarray]:
    """``audio`` cut at random places (some blocks empty, some a single sample)."""
    rng = np.random.default_rng(seed)
    blocks = []
    at = 0
    while at < audio.size:
        size = int(rng.choice([0, 1, int(rng.integers(2, most))]))
        blocks.append(audio[at : at + size])
        at += size
    return blocks


def _summary(found: list[vad.Speech]) -> list[tuple[int, int, float]]:
    return [(s.start, s.audio.size, s.speech_prob) for s in found]


@pytest.fixture(scope="module")
def layout(clips: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The example clips between digital silences and noise floors, and where their speech is."""
    gaps = [_silence(1.5), _noise_floor(1.2, 1), _silence(2.0), _noise_floor(1.0, 2), _silence(1.0)]
    return _joined(clips, gaps)


@needs_vad
def test_one_segment_per_clip_near_its_speech(
    silero: vadnet.SileroVad, layout: tuple[np.ndarray, list[tuple[int, int]]]
) -> None:
    audio, spans = layout
    found, finder = _find(silero, [audio])
    assert finder.samples == audio.size
    assert len(found) == len(spans)
    pad = round(DEFAULT_PARAMS.pad_s * RATE)
    for speech, (lo, hi) in zip(found, spans):
        np.testing.assert_array_equal(speech.audio, audio[speech.start : speech.start + speech.audio.size])
        start, end = speech.start + pad, speech.start + speech.audio.size - pad  # without the padding
        assert abs(start - lo) <= 0.3 * RATE and abs(end - hi) <= 0.3 * RATE
        assert speech.start <= lo and hi <= speech.start + speech.audio.size  # all of the speech is in it
        assert 0.7 < speech.speech_prob <= 1.0
    for a, b in itertools.pairwise(found):
        assert a.start + a.audio.size <= b.start


@needs_vad
def test_segments_do_not_depend_on_the_blocks(
    silero: vadnet.SileroVad, layout: tuple[np.ndarray, list[tuple[int, int]]]
) -> None:
    audio, _ = layout
    whole, _ = _find(silero, [audio])
    for seed in (1, 2):
        blocks = _random_blocks(audio, seed)
        found, finder = _find(silero, blocks)
        assert finder.samples == audio.size
        assert _summary(found) == _summary(whole)
        for a, b in zip(found, whole):
            np.testing.assert_array_equal(a.audio, b.audio)


@needs_vad
def test_padding_never_reaches_into_a_neighbour(silero: vadnet.SileroVad, clips: list[np.ndarray]) -> None:
    # speech trimmed to its loud part, 0.4 s apart: more than min_silence, less than two pads
    speech = [clip[slice(*_speech_span(clip))] for clip in clips[2:]]
    for pad_s in (0.2, 0.5):
        audio, spans = _joined(speech, [_silence(0.5), _silence(0.4), _silence(0.5)])
        params = VadParams(0.5, 0.25, 0.3, pad_s, 20.0)
        found, _ = _find(silero, [audio], params)
        assert len(found) == 2
        first, second = found
        assert first.start + first.audio.size <= second.start
        assert first.start + first.audio.size <= spans[1][0]  # the first has none of the second's speech
        assert second.start <= spans[1][0] and spans[1][1] <= second.start + second.audio.size


@needs_vad
@pytest.mark.parametrize(
    "kind",
    ["silence", "white noise", "quiet white noise", "50 Hz hum"],
)
def test_no_speech_in_thirty_seconds_of(silero: vadnet.SileroVad, kind: str) -> None:
    n = 30 * RATE
    rng = np.random.default_rng(7)
    audio = {
        "silence": np.zeros(n),
        "white noise": 0.1 * rng.standard_normal(n),
        "quiet white noise": 0.003 * rng.standard_normal(n),
        "50 Hz hum": 0.3 * np.sin(2 * np.pi * 50 * np.arange(n) / RATE),
    }[kind].astype(np.float32)
    found, finder = _find(silero, [audio[i : i + 48_000] for i in range(0, n, 48_000)])
    assert found == [] and finder.samples == n


@needs_vad
def test_inputs_shorter_than_a_frame(silero: vadnet.SileroVad) -> None:
    found, finder = _find(silero, [np.zeros(100, np.float32)])
    assert found == [] and finder.samples == 100
    found, finder = _find(silero, [])
    assert found == [] and finder.samples == 0


def _long_input(clips: list[np.ndarray], seconds: float, seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """About ``seconds`` of the clips in random order between random gaps, with stretches of clips read
    back to back (one long stretch of speech, which max_segment_s cuts)."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    gaps: list[np.ndarray] = []
    total = 0
    while total < seconds * RATE:
        run = int(rng.integers(8, 14)) if rng.random() < 0.1 else 1
        for k in range(run):
            gap = _silence(0.05) if k else _noise_floor(float(rng.uniform(0.6, 2.0)), int(rng.integers(1 << 30)))
            clip = clips[int(rng.integers(len(clips)))]
            clip = clip[slice(*_speech_span(clip))] if run > 1 else clip
            gaps.append(gap)
            chosen.append(clip)
            total += gap.size + clip.size
    gaps.append(_silence(1.0))
    return _joined(chosen, gaps)


def _watched(finder: vad.SpeechFinder, blocks: list[np.ndarray], sizes: list[int]) -> list[tuple[int, int, float]]:
    """The finder's segments of ``blocks`` as (start, length, speech probability); ``sizes`` gets the size of the
    audio the finder holds as each block is read."""

    def feed() -> Iterator[np.ndarray]:
        for block in blocks:
            held = segments.gi_frame.f_locals["audio"]
            sizes.append(held.size)
            yield block

    segments = finder.segments(feed())
    out = []
    for speech in segments:
        out.append((speech.start, speech.audio.size, speech.speech_prob))  # the audio is not kept
        assert speech.audio.size <= (DEFAULT_PARAMS.max_segment_s + 2 * DEFAULT_PARAMS.pad_s) * RATE
    return out


def _covered(found: list[tuple[int, int, float]], spans: list[tuple[int, int]]) -> bool:
    """Whether every speech span lies within the segments, give or take 0.1 s at its edges."""
    mask = np.zeros(max(hi for _, hi in spans) + 1, bool)
    for start, size, _ in found:
        mask[start : start + size] = True
    edge = RATE // 10
    return all(mask[lo + edge : hi - edge].all() for lo, hi in spans)


@needs_vad
def test_ten_minutes_in_small_blocks_hold_bounded_audio(silero: vadnet.SileroVad, clips: list[np.ndarray]) -> None:
    audio, spans = _long_input(clips, 600, seed=3)
    block = RATE  # one second
    finder = vad.SpeechFinder(silero, RATE, DEFAULT_PARAMS)
    held: list[int] = []
    found = _watched(finder, [audio[i : i + block] for i in range(0, audio.size, block)], held)
    assert finder.samples == audio.size
    # the audio waiting for the VAD, the open segment and its padding, one block: never the whole input
    bound = (vad._VAD_BLOCK_S + DEFAULT_PARAMS.max_segment_s + DEFAULT_PARAMS.pad_s) * RATE + 2 * block
    assert len(held) == -(-audio.size // block) and max(held) <= bound < audio.size / 3
    assert _covered(found, spans)
    for (start, size, _), (following, _, _) in itertools.pairwise(found):
        assert start + size <= following
    assert max(size for _, size, _ in found) > 0.9 * DEFAULT_PARAMS.max_segment_s * RATE  # long speech was cut
    # the same segments as from the input in one block
    whole, _ = _find(silero, [audio])
    assert _summary(whole) == found


@needs_vad
def test_the_vad_runs_on_batches_and_drops_what_it_no_longer_needs(
    silero: vadnet.SileroVad, clips: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vad, "_VAD_BLOCK_S", 4.0)  # the VAD runs every 4 s of audio
    audio, spans = _long_input(clips, 90, seed=5)
    block = RATE // 2
    finder = vad.SpeechFinder(silero, RATE, DEFAULT_PARAMS)
    held: list[int] = []
    found = _watched(finder, [audio[i : i + block] for i in range(0, audio.size, block)], held)
    bound = (4.0 + DEFAULT_PARAMS.max_segment_s + DEFAULT_PARAMS.pad_s) * RATE + 2 * block
    assert max(held) <= bound
    assert _covered(found, spans)
    # the same segments as from the input in one block, or in random blocks
    assert _summary(_find(silero, [audio])[0]) == found
    assert _summary(_find(silero, _random_blocks(audio, 9, most=3 * RATE))[0]) == found


# ------------------------------------------------------------------------------------------------ InputReader


def test_which_inputs_use_vad(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    reader = InputReader(RATE, 320)
    auto = EngineConfig()
    assert not reader.uses_vad(auto.vad_above_s, auto)  # up to vad_above_s: the whole input
    assert reader.uses_vad(auto.vad_above_s + 0.1, auto) == vadnet.available()
    assert not reader.uses_vad(600.0, auto.with_(chunk_length_s=5.0))  # windows asked for
    assert reader.uses_vad(1.0, auto.with_(vad=True))
    assert not reader.uses_vad(600.0, auto.with_(vad=False))
    assert reader.uses_vad(4.0, auto.with_(vad_above_s=3.0)) == vadnet.available()

    monkeypatch.setattr(vadnet, "available", lambda: False)  # without the extra: windows, with one warning
    with caplog.at_level("WARNING", logger="w2vlm.engine"):
        assert not reader.uses_vad(600.0, auto)
        assert not reader.uses_vad(600.0, auto)
    assert sum("voice activity detection is off" in r.getMessage() for r in caplog.records) == 1

    assert reader.vad_params(auto).max_segment_s == DEFAULT_MAX_SEGMENT_S
    assert InputReader(RATE, 320, 12.0).vad_params(auto).max_segment_s == 12.0  # the model's own
    assert InputReader(RATE, 320, 12.0).vad_params(auto.with_(max_segment_s=5.0)).max_segment_s == 5.0


@needs_vad
def test_units_are_speech_segments_for_long_inputs(clips: list[np.ndarray], tmp_path: Path) -> None:
    import soundfile as sf

    reader = InputReader(RATE, 320)
    config = EngineConfig()
    short = clips[0]
    info = InputInfo()
    (unit,) = reader.units(short, "short", config, info=info)
    assert unit[0] == 0 and unit[2:] == (0, True, None) and unit[1] is short
    assert not info.segmented and info.samples == short.size

    # longer than the file reader's blocks and than what the VAD collects before it runs
    audio, spans = _long_input(clips, 130, seed=11)
    assert audio.size > READ_BLOCK_S * RATE
    path = tmp_path / "long.wav"
    sf.write(str(path), audio, RATE, subtype="FLOAT")
    from_file, from_array = InputInfo(), InputInfo()
    units = list(reader.units(str(path), "long.wav", config, info=from_file))
    assert from_file.segmented and from_file.samples == audio.size and from_file.vad_seconds > 0
    assert all(right == 0 and not last and prob is not None and prob > 0.0 for _, _, right, last, prob in units)
    assert np.mean([prob for *_, prob in units]) > 0.5  # a segment's mean may dip below the threshold, not most
    assert _covered([(start, a.size, 0.0) for start, a, *_ in units], spans)
    # the file, read block by block, gives what the same audio in memory gives
    same = list(reader.units(audio, "array", config, info=from_array))
    assert [(u[0], u[1].size, u[4]) for u in units] == [(u[0], u[1].size, u[4]) for u in same]
    assert from_array.samples == audio.size
    for (start, piece, *_), (_, other, *_) in zip(units, same):
        np.testing.assert_array_equal(piece, other)
        np.testing.assert_array_equal(piece, audio[start : start + piece.size])


# ------------------------------------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def default_engine() -> Engine:
    """The embedded default model's engine, on the CPU."""
    pytest.importorskip("torch")
    pytest.importorskip("w2vlm.decoder")
    if not vadnet.available():
        pytest.skip("the 'vad' extra is not installed")
    from w2vlm.errors import ModelError
    from w2vlm.pipeline import pipeline

    try:
        return pipeline("automatic-speech-recognition", device="cpu").engine
    except ModelError as exc:
        pytest.skip(f"no embedded default model: {exc}")


@pytest.fixture(scope="module")
def joined(clips: list[np.ndarray]) -> tuple[np.ndarray, list[float]]:
    """The four clips with a second of silence before, between and after them (about 18 s), and where each clip
    begins (seconds)."""
    gap = _silence(1.0)
    starts = []
    at = gap.size
    for clip in clips:
        starts.append(at / RATE)
        at += clip.size + gap.size
    return np.concatenate([gap] + [x for clip in clips for x in (clip, gap)]), starts


NON_SPEECH = {
    "white noise": (0.1 * np.random.default_rng(12).standard_normal(12 * RATE)).astype(np.float32),
    "silence": np.zeros(12 * RATE, np.float32),
}


@pytest.fixture(scope="module")
def one_by_one(default_engine: Engine, clips: list[np.ndarray]) -> list[Transcript]:
    out = list(default_engine.transcribe(clips))
    assert all(t.error is None and t.text for t in out)
    return out


@pytest.fixture(scope="module")
def by_mode(default_engine: Engine, joined: tuple[np.ndarray, list[float]]) -> dict[str, list[Transcript]]:
    """Transcripts of the joined clips and the non-speech inputs with VAD on (by default) and off."""
    inputs = [joined[0], *NON_SPEECH.values()]
    return {
        "vad": list(default_engine.transcribe(inputs)),
        "no vad": list(default_engine.transcribe(inputs, config=default_engine.config.with_(vad=False))),
    }


def test_long_input_with_vad_reads_as_the_clips_one_by_one(
    by_mode: dict[str, list[Transcript]],
    one_by_one: list[Transcript],
    joined: tuple[np.ndarray, list[float]],
    clips: list[np.ndarray],
) -> None:
    audio, starts = joined
    out = by_mode["vad"][0]
    assert out.error is None and out.duration == pytest.approx(audio.size / RATE)
    assert out.text == " ".join(t.text for t in one_by_one)
    assert len(out.segments) == len(clips)
    assert [w.word for w in out.words] == [w.word for s in out.segments for w in s.words]
    for segment, alone, start, clip in zip(out.segments, one_by_one, starts, clips):
        assert segment.text == alone.text
        assert segment.speech_prob is not None and 0.5 < segment.speech_prob <= 1.0
        assert segment.no_speech_prob is not None and segment.no_speech_prob < 0.5
        end = start + clip.size / RATE
        assert start - 0.3 <= segment.start < segment.end <= end + 0.3
        for w, w1 in zip(segment.words, alone.words):  # in file time: the clip's times, moved by its start
            assert segment.start <= w.start <= w.end <= segment.end
            assert w.start == pytest.approx(w1.start + start, abs=0.06)
            assert w.end == pytest.approx(w1.end + start, abs=0.06)


def test_long_input_without_vad_has_segments_at_pauses(
    by_mode: dict[str, list[Transcript]], joined: tuple[np.ndarray, list[float]], clips: list[np.ndarray]
) -> None:
    out = by_mode["no vad"][0]
    assert out.error is None and out.text
    assert len(out.segments) == len(clips)  # a second between clips is a pause
    assert " ".join(s.text for s in out.segments) == out.text
    for segment, start, clip in zip(out.segments, joined[1], clips):
        assert segment.speech_prob is None
        assert segment.no_speech_prob is not None and segment.no_speech_prob < 0.5
        assert start - 0.1 <= segment.start < segment.end <= start + clip.size / RATE + 0.1


@pytest.mark.parametrize("mode", ["vad", "no vad"])
def test_no_words_from_non_speech(by_mode: dict[str, list[Transcript]], mode: str) -> None:
    for name, out in zip(NON_SPEECH, by_mode[mode][1:]):
        assert (out.error, out.text, out.words, out.segments) == (None, "", [], []), name
        assert out.duration == pytest.approx(12.0)


def test_segment_log_probs_and_transcribe_parts_make_the_same_transcripts(
    default_engine: Engine,
    by_mode: dict[str, list[Transcript]],
    joined: tuple[np.ndarray, list[float]],
    clips: list[np.ndarray],
) -> None:
    inputs = [joined[0], *NON_SPEECH.values(), clips[0]]
    names = [f"input {i}" for i in range(len(inputs))]
    got = list(default_engine.segment_log_probs(inputs, names=names))
    assert all(error is None for _, _, error in got)
    (speech, noise, silence, short) = [parts for parts, _, _ in got]
    assert len(speech) == len(clips) and all(prob is not None for _, prob, _ in speech)
    for (offset, _, _), segment, start in zip(speech, by_mode["vad"][0].segments, joined[1]):
        assert start - 0.3 <= offset <= segment.start  # where each segment's audio begins in the input
    assert noise == [] and silence == []
    assert len(short) == 1 and short[0][:2] == (0.0, None)  # a short input: all its frames, no VAD

    items = [(name, parts, seconds) for name, (parts, seconds, _) in zip(names, got)]
    decoded = default_engine.decoding.transcribe_parts(items, DecodeConfig(), default_engine.decode_threads)
    expected = [*by_mode["vad"], *default_engine.transcribe([clips[0]])]
    for a, b in zip(decoded, expected):
        assert a.text == b.text and a.duration == pytest.approx(b.duration)
        assert [(w.word, w.start, w.end) for w in a.words] == [(w.word, w.start, w.end) for w in b.words]
        assert [(s.start, s.end, s.text, s.speech_prob) for s in a.segments] == [
            (s.start, s.end, s.text, s.speech_prob) for s in b.segments
        ]
        # the same frames, but computed in other batches (other padding): equal up to rounding
        for s, s1 in zip(a.segments, b.segments):
            assert s.no_speech_prob == pytest.approx(s1.no_speech_prob, abs=1e-4)


@needs_vad
@pytest.mark.parametrize("config", [{"vad": True}, {"vad": False}, {"vad": False, "chunk_length_s": 4.0}])
def test_stream_segments_are_the_transcripts_segments(
    default_engine: Engine, joined: tuple[np.ndarray, list[float]], config: dict
) -> None:
    audio, _ = joined
    cfg = default_engine.config.with_(**config)
    (whole,) = default_engine.transcribe([audio], config=cfg)
    streamed = list(default_engine.stream_segments(audio, config=cfg))
    assert whole.segments and [(s.start, s.end, s.text) for s in streamed] == [
        (s.start, s.end, s.text) for s in whole.segments
    ]
