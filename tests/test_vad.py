"""Speech segments of whole inputs: SpeechFinder over blocks of audio, which inputs the engine segments, and the
engine's segmented path with the embedded default model."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vad_helpers import (
    RATE,
    embedded_engine,
    joined_with_gaps,
    needs_vad,
    noise_floor,
    silence,
    speech_span,
)
from w2vlm.engine import DecodeConfig, Engine, EngineConfig, vad
from w2vlm.engine import silero as vadnet
from w2vlm.engine.config import DEFAULT_MAX_SEGMENT_S
from w2vlm.engine.inputs import READ_BLOCK_S, InputInfo, InputReader
from w2vlm.engine.vad import VadParams
from w2vlm.results import Transcript

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


def _summary(found: list[vad.Speech]) -> list[tuple[int, int, float, int]]:
    return [(s.start, s.audio.size, s.speech_prob, s.right) for s in found]


@pytest.fixture(scope="module")
def layout(clips: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The example clips between digital silences and noise floors, and where their speech is."""
    gaps = [silence(1.5), noise_floor(1.2, 1), silence(2.0), noise_floor(1.0, 2), silence(1.0)]
    return joined_with_gaps(clips, gaps)


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
    speech = [clip[slice(*speech_span(clip))] for clip in clips[2:]]
    for pad_s in (0.2, 0.5):
        audio, spans = joined_with_gaps(speech, [silence(0.5), silence(0.4), silence(0.5)])
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
            gap = silence(0.05) if k else noise_floor(float(rng.uniform(0.6, 2.0)), int(rng.integers(1 << 30)))
            clip = clips[int(rng.integers(len(clips)))]
            clip = clip[slice(*speech_span(clip))] if run > 1 else clip
            gaps.append(gap)
            chosen.append(clip)
            total += gap.size + clip.size
    gaps.append(silence(1.0))
    return joined_with_gaps(chosen, gaps)


def _watched(finder: vad.SpeechFinder, blocks: list[np.ndarray], sizes: list[int]) -> list[tuple[int, int, float, int]]:
    """The finder's segments of ``blocks`` as (start, length, speech probability, right); ``sizes`` gets the size of the
    audio the finder holds as each block is read."""

    def feed() -> Iterator[np.ndarray]:
        for block in blocks:
            held = segments.gi_frame.f_locals["audio"]
            sizes.append(held.size)
            yield block

    segments = finder.segments(feed())
    out = []
    for speech in segments:
        out.append((speech.start, speech.audio.size, speech.speech_prob, speech.right))  # the audio is not kept
        # at most the longest segment with padding, or with the audio it shares with its neighbours at cuts
        assert speech.audio.size <= (DEFAULT_PARAMS.max_segment_s + 2 * vad.CUT_OVERLAP_S) * RATE
    return out


def _covered(found: list[tuple[int, int, float, int]], spans: list[tuple[int, int]]) -> bool:
    """Whether every speech span lies within the segments, give or take 0.1 s at its edges."""
    mask = np.zeros(max(hi for _, hi in spans) + 1, bool)
    for start, size, *_ in found:
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
    bound = (vad._VAD_BLOCK_S + DEFAULT_PARAMS.max_segment_s + vad.CUT_OVERLAP_S) * RATE + 2 * block
    assert len(held) == -(-audio.size // block) and max(held) <= bound < audio.size / 3
    assert _covered(found, spans)
    overlap = round(vad.CUT_OVERLAP_S * RATE)
    for (start, size, _, right), (following, *_) in itertools.pairwise(found):
        if right:  # a forced cut: both sides share the overlap on each side of it
            assert right == overlap and start + size - right == following + overlap
        else:
            assert start + size <= following
    assert max(size for _, size, *_ in found) > 0.9 * DEFAULT_PARAMS.max_segment_s * RATE  # long speech was cut
    assert any(right for *_, right in found)
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
    bound = (4.0 + DEFAULT_PARAMS.max_segment_s + vad.CUT_OVERLAP_S) * RATE + 2 * block
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
    assert from_file.segmented and from_file.samples == audio.size
    assert from_file.vad_seconds > 0 and from_file.vad_cpu_seconds > 0
    # right context: only at forced cuts, the audio the two sides share
    overlap = round(vad.CUT_OVERLAP_S * RATE)
    assert all(right in (0, overlap) and not last and prob and prob > 0.0 for _, _, right, last, prob in units)
    assert np.mean([prob for *_, prob in units]) > 0.5  # a segment's mean may dip below the threshold, not most
    assert _covered([(start, a.size, 0.0) for start, a, *_ in units], spans)
    # the file, read block by block, gives what the same audio in memory gives
    same = list(reader.units(audio, "array", config, info=from_array))
    assert [(u[0], u[1].size, u[2], u[4]) for u in units] == [(u[0], u[1].size, u[2], u[4]) for u in same]
    assert from_array.samples == audio.size
    for (start, piece, *_), (_, other, *_) in zip(units, same):
        np.testing.assert_array_equal(piece, other)
        np.testing.assert_array_equal(piece, audio[start : start + piece.size])


# ------------------------------------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def default_engine() -> Engine:
    """The embedded default model's engine, on the CPU."""
    return embedded_engine()


@pytest.fixture(scope="module")
def joined(clips: list[np.ndarray]) -> tuple[np.ndarray, list[float]]:
    """The four clips with a second of silence before, between and after them (about 18 s), and where each clip
    begins (seconds)."""
    gap = silence(1.0)
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
