from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")
pytest.importorskip("soxr")
pytest.importorskip("av")

from conftest import make_sine, write_audio_file
from w2vlm.audio import audio_duration, iter_audio_blocks, load_audio, to_mono
from w2vlm.errors import AudioError


def _dominant_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg"])
def test_soundfile_formats_roundtrip(tmp_path: Path, suffix: str) -> None:
    data = make_sine(1.0, 16000, 440.0)
    path = write_audio_file(tmp_path / f"a.{suffix}", data, 16000)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - 16000) <= 64
    assert abs(_dominant_freq(out, 16000) - 440.0) < 3.0
    if suffix in ("wav", "flac"):  # lossless (16-bit PCM)
        np.testing.assert_allclose(out, data, atol=1e-3)


@pytest.mark.parametrize(
    ("suffix", "codec"), [("mp3", "libmp3lame"), ("m4a", "aac"), ("opus", "libopus"), ("webm", "libopus")]
)
def test_ffmpeg_formats(tmp_path: Path, suffix: str, codec: str) -> None:
    sr = 48000 if codec == "libopus" else 44100
    data = make_sine(1.0, sr, 440.0)
    path = write_audio_file(tmp_path / f"a.{suffix}", data, sr, codec=codec)
    out = load_audio(path, sampling_rate=16000)
    assert out.dtype == np.float32 and out.ndim == 1
    # encoders add priming/padding samples; the duration stays close to 1 s
    assert 15000 < out.size < 18500
    assert abs(_dominant_freq(out, 16000) - 440.0) < 5.0
    rms = float(np.sqrt(np.mean(out[2000:14000] ** 2)))  # a 0.5 sine has rms 0.354
    assert 0.3 < rms < 0.4


def test_m4a_bytes_and_filelike(tmp_path: Path) -> None:
    path = write_audio_file(tmp_path / "a.m4a", make_sine(0.5, 22050), 22050, codec="aac")
    from_path = load_audio(path)
    from_bytes = load_audio(path.read_bytes())
    with open(path, "rb") as fh:
        from_file = load_audio(fh)
    np.testing.assert_allclose(from_bytes, from_path, atol=1e-6)
    np.testing.assert_allclose(from_file, from_path, atol=1e-6)


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    stereo = make_sine(1.0, 16000, 300.0, channels=2)
    path = write_audio_file(tmp_path / "st.wav", stereo, 16000)
    out = load_audio(path)
    np.testing.assert_allclose(out, stereo.mean(axis=1), atol=1e-3)
    # same for a stereo mp3 via PyAV
    mp3 = write_audio_file(tmp_path / "st.mp3", stereo, 16000, codec="libmp3lame")
    out_mp3 = load_audio(mp3)
    assert out_mp3.ndim == 1


def test_resampling_preserves_frequency(tmp_path: Path) -> None:
    path = write_audio_file(tmp_path / "a44.wav", make_sine(2.0, 44100, 1000.0), 44100)
    out = load_audio(path, sampling_rate=16000)
    assert abs(out.size - 32000) <= 2
    assert abs(_dominant_freq(out, 16000) - 1000.0) < 2.0


def test_numpy_array_inputs() -> None:
    mono = make_sine(0.5, 16000)
    np.testing.assert_array_equal(load_audio(mono), mono)
    stereo = make_sine(0.5, 16000, channels=2)
    np.testing.assert_allclose(load_audio(stereo), stereo.mean(axis=1), atol=1e-7)
    np.testing.assert_allclose(load_audio(stereo.T.copy()), stereo.mean(axis=1), atol=1e-7)
    pcm16 = (mono * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm16), mono, atol=1e-4)
    f64 = load_audio(mono.astype(np.float64))
    assert f64.dtype == np.float32


def test_dict_inputs_resample(tmp_path: Path) -> None:
    x8k = make_sine(1.0, 8000, 500.0)
    for key in ("array", "raw"):
        out = load_audio({key: x8k, "sampling_rate": 8000})
        assert out.size == 16000
        assert abs(_dominant_freq(out, 16000) - 500.0) < 2.0
    path = write_audio_file(tmp_path / "d.wav", x8k, 8000)
    assert load_audio({"path": str(path)}).size == 16000
    assert load_audio({"bytes": path.read_bytes(), "path": "d.wav"}).size == 16000


def test_dict_without_rate_errors() -> None:
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio({"array": make_sine(0.1)})
    with pytest.raises(AudioError, match="expected 'array'"):
        load_audio({"foo": 1})


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"nope\.wav: no such audio file"):
        load_audio(missing)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav: the file is empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="empty"):
        load_audio(b"")


def test_non_audio_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 50)
    with pytest.raises(AudioError, match=r"notes\.wav"):
        load_audio(text)


def test_corrupt_file(tmp_path: Path) -> None:
    good = write_audio_file(tmp_path / "g.mp3", make_sine(1.0, 16000), 16000, codec="libmp3lame")
    raw = bytearray(good.read_bytes())
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, size=len(raw), dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp3"
    bad.write_bytes(garbage)
    with pytest.raises(AudioError, match=r"corrupt\.mp3"):
        load_audio(bad)
    truncated = tmp_path / "trunc.wav"
    truncated.write_bytes(write_audio_file(tmp_path / "t.wav", make_sine(1.0), 16000).read_bytes()[:30])
    with pytest.raises(AudioError, match=r"trunc\.wav"):
        load_audio(truncated)


def test_video_without_audio_stream(tmp_path: Path) -> None:
    import av

    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioError, match=r"silent\.mp4: the file has no audio stream"):
        load_audio(path)


def test_too_short(tmp_path: Path) -> None:
    path = write_audio_file(tmp_path / "short.wav", make_sine(0.01, 16000), 16000)
    with pytest.raises(AudioError, match=r"short\.wav: audio is too short: 160 samples"):
        load_audio(path)
    with pytest.raises(AudioError, match="too short"):
        load_audio(np.zeros(10, dtype=np.float32))


def test_nan_and_bad_shapes() -> None:
    x = make_sine(0.5)
    x[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        load_audio(x)
    with pytest.raises(AudioError, match="3 dimensions"):
        load_audio(np.zeros((2, 2, 1000), dtype=np.float32))
    with pytest.raises(AudioError, match="unsupported audio input of type int"):
        load_audio(5)  # type: ignore[arg-type]
    with pytest.raises(AudioError, match="dtype"):
        load_audio(np.array(["a", "b"]))


def test_urls_refused_by_default() -> None:
    with pytest.raises(AudioError, match="allow_urls=True"):
        load_audio("https://example.invalid/a.wav")


def test_text_mode_file(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("abc")
    with open(p) as fh, pytest.raises(AudioError, match="binary mode"):
        load_audio(fh)


def test_to_mono_channel_axis() -> None:
    a = np.stack([np.ones(100), np.zeros(100)], axis=0).astype(np.float32)
    np.testing.assert_allclose(to_mono(a), np.full(100, 0.5))
    np.testing.assert_allclose(to_mono(a.T), np.full(100, 0.5))


@pytest.mark.parametrize(("sr", "codec", "suffix"), [(16000, None, "wav"), (44100, None, "flac")])
def test_iter_audio_blocks_matches_load(tmp_path: Path, sr: int, codec: str | None, suffix: str) -> None:
    rng = np.random.default_rng(1)
    data = (0.1 * rng.standard_normal(int(3.3 * sr))).astype(np.float32)
    path = write_audio_file(tmp_path / f"n.{suffix}", data, sr, codec=codec)
    whole = load_audio(path)
    blocks = list(iter_audio_blocks(path, 16000, block_s=1.0))
    assert all(b.size == 16000 for b in blocks[:-1])
    joined = np.concatenate(blocks)
    assert joined.size == whole.size
    if sr == 16000:
        np.testing.assert_array_equal(joined, whole)
    else:  # streaming and one-shot soxr agree away from the very edges
        np.testing.assert_allclose(joined[100:-100], whole[100:-100], atol=2e-3)


def test_iter_audio_blocks_rejects_nan_naming_the_sample(tmp_path: Path) -> None:
    import soundfile as sf

    x = make_sine(3.0)
    x[40_000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(
        AudioError, match=r"nan\.wav: audio contains NaN or infinite samples \(the first at sample 40000, 2\.500 s\)"
    ):
        list(iter_audio_blocks(path, 16000, block_s=1.0))
    with pytest.raises(AudioError, match=r"the first at sample 40000, 2\.500 s"):
        load_audio(path)


def test_iter_audio_blocks_pyav(tmp_path: Path) -> None:
    path = write_audio_file(tmp_path / "s.m4a", make_sine(2.5, 44100), 44100, codec="aac")
    whole = load_audio(path)
    joined = np.concatenate(list(iter_audio_blocks(path, 16000, block_s=0.5)))
    assert abs(joined.size - whole.size) <= 2
    n = min(joined.size, whole.size)
    np.testing.assert_allclose(joined[200 : n - 200], whole[200 : n - 200], atol=2e-3)


def test_audio_duration(tmp_path: Path) -> None:
    wav = write_audio_file(tmp_path / "d.wav", make_sine(1.5), 16000)
    assert audio_duration(wav) == pytest.approx(1.5)
    m4a = write_audio_file(tmp_path / "d.m4a", make_sine(1.5, 44100), 44100, codec="aac")
    dur = audio_duration(m4a)
    assert dur is not None and 1.4 < dur < 1.7


def test_bytesio_input(tmp_path: Path) -> None:
    wav = write_audio_file(tmp_path / "b.wav", make_sine(0.5), 16000)
    out = load_audio(io.BytesIO(wav.read_bytes()))
    assert out.size == 8000


def test_a_long_mp3_is_read_in_blocks_without_decoder_noise(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """MP3s over one read block (30 s) are read block by block; soundfile's seek after each read restarted
    libmpg123, which printed "part2_3_length ... too large" on stderr at block starts (samples unchanged)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    seconds = 75
    t = np.arange(seconds * 16000) / 16000
    # noise bursts and tones: frames of very different sizes, so that frames borrow from the bit reservoir
    data = (0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)).astype(np.float32)
    data += (0.2 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 1.3 * t) > 0.5)).astype(np.float32)
    path = write_audio_file(tmp_path / "long.mp3", data, 16000, codec="libmp3lame", bit_rate=32000)
    whole = sf.read(str(path), dtype="float32")[0]
    capfd.readouterr()
    blocks = np.concatenate(list(iter_audio_blocks(path, 16000, block_s=7.0)))
    loaded = load_audio(path)
    err = capfd.readouterr().err
    assert "part2_3_length" not in err
    np.testing.assert_allclose(blocks, whole, atol=1e-6)
    np.testing.assert_allclose(loaded, whole, atol=1e-6)


def test_the_default_audio_track_is_read(tmp_path: Path) -> None:
    """A file with several audio tracks: the one marked as default (what a player plays), not the first one."""
    import av

    t = np.arange(16000) / 16000
    tones = {300: np.sin(2 * np.pi * 300 * t), 1000: np.sin(2 * np.pi * 1000 * t)}
    for default, want in ((1, 1000.0), (0, 300.0)):
        path = tmp_path / f"two{default}.mkv"
        with av.open(str(path), "w", format="matroska") as out:
            streams = [out.add_stream("pcm_s16le", rate=16000, layout="mono") for _ in range(2)]
            for i, stream in enumerate(streams):  # before the first packet, which writes the header
                stream.disposition = av.stream.Disposition.default if i == default else av.stream.Disposition(0)
            for stream, tone in zip(streams, tones.values(), strict=True):
                frame = av.AudioFrame.from_ndarray(
                    (tone * 16000).astype(np.int16)[None, :], format="s16", layout="mono"
                )
                frame.sample_rate = 16000
                for packet in [*stream.encode(frame), *stream.encode(None)]:
                    out.mux(packet)
        assert _dominant_freq(load_audio(path), 16000) == pytest.approx(want, abs=3.0)
        blocks = np.concatenate(list(iter_audio_blocks(path, 16000, block_s=0.3)))
        assert _dominant_freq(blocks, 16000) == pytest.approx(want, abs=3.0)


def test_a_file_cut_short_gives_what_is_there_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A FLAC cut short (an interrupted download): its intact audio is read, as ffmpeg reads it, with a warning
    (it was an error from one reader and a raw LibsndfileError from the other); one with no intact audio is an
    AudioError naming the file."""
    data = make_sine(4.0, 16000, 440.0)
    whole = write_audio_file(tmp_path / "whole.flac", data, 16000).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level("WARNING", logger="w2vlm.audio"):
        loaded = load_audio(cut)
        blocks = np.concatenate(list(iter_audio_blocks(cut, 16000, block_s=1.0)))
    assert 0.5 * 16000 < loaded.size < 4.0 * 16000 and blocks.size == loaded.size
    np.testing.assert_allclose(loaded, data[: loaded.size], atol=1e-3)
    assert "cut.flac: 1 damaged packet(s) skipped" in caplog.text
    header_only = tmp_path / "header.flac"
    header_only.write_bytes(whole[:100])
    with pytest.raises(AudioError, match=r"header\.flac"):
        load_audio(header_only)
    with pytest.raises(AudioError, match=r"header\.flac"):
        list(iter_audio_blocks(header_only, 16000))


def test_channels_that_cancel_in_the_mix_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Stereo whose channels are each other's inverse mixes to silence: the transcript would be empty with no
    word why. A warning (once per file) says so; ordinary stereo gets none."""
    tone = make_sine(2.0, 16000, 300.0)
    inverted = write_audio_file(tmp_path / "inv.wav", np.stack([tone, -tone], axis=1), 16000)
    normal = write_audio_file(tmp_path / "ok.wav", np.stack([tone, 0.5 * tone], axis=1), 16000)
    with caplog.at_level("WARNING", logger="w2vlm.audio"):
        assert np.abs(load_audio(inverted)).max() < 1e-3
        list(iter_audio_blocks(inverted, 16000, block_s=0.5))
        load_audio(normal)
    assert caplog.text.count("inv.wav: its channels cancel out when mixed to mono") == 1
    assert "ok.wav" not in caplog.text


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"", "input 3 (bytes): the audio bytes are empty"),
        (b"\x00" * 63, "input 3 (bytes): not a readable audio file"),
        (np.zeros(0, np.float32), "input 3 (ndarray): contains no audio samples"),
        ({"array": np.zeros(10), "sampling_rate": "x"}, "input 3 (dict): the audio dict's 'sampling_rate'"),
        ({"array": np.zeros(10), "sampling_rate": 8000, "path": "a.wav"}, "a.wav: "),
        ({"bytes": b"\x01" * 64}, "input 3 (dict): not a readable audio file"),
    ],
)
def test_inputs_without_a_name_of_their_own_are_named_by_the_callers_label(source: object, message: str) -> None:
    with pytest.raises(AudioError) as info:
        load_audio(source, 16000, label="input 3")
    assert str(info.value).startswith(message)
    with pytest.raises(AudioError) as info:
        load_audio(source, 16000)  # without a label: by the input's kind
    assert not str(info.value).startswith("input 3")
