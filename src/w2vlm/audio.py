"""Audio input: decoding, mixing to mono and resampling.

:func:`load_audio` turns whatever a user hands over (a path, raw bytes, a numpy array, a
``{"array", "sampling_rate"}`` dict as produced by 🤗 datasets, or an open binary file) into a mono float32
waveform at the requested sampling rate. Files are read with soundfile (libsndfile: wav, flac, ogg, mp3, ...)
and, when libsndfile cannot read them, with PyAV (anything ffmpeg decodes: m4a/aac, opus, webm, video
containers, ...). Resampling uses soxr.

:func:`iter_audio_blocks` reads a file block by block, so a long recording never has to sit in memory whole.
"""

from __future__ import annotations

import io
import logging
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from w2vlm.errors import AudioError

logger = logging.getLogger("w2vlm.audio")

#: Shortest input accepted: wav2vec2's convolutional front end needs 400 samples (25 ms at 16 kHz)
#: for one output frame.
MIN_DURATION_S = 0.025

AudioInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | dict | BinaryIO

_URL_PREFIXES = ("http://", "https://", "ftp://")


def is_url(value: object) -> bool:
    """True for strings that look like an http(s)/ftp URL."""
    return isinstance(value, str) and value.lower().startswith(_URL_PREFIXES)


# ----------------------------------------------------------------------------------------------------------
# helpers on arrays


def _to_float32(array: np.ndarray, name: str) -> np.ndarray:
    """Convert integer PCM to float in [-1, 1); keep floats as float32."""
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind == "i":
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float32) / scale).astype(np.float32, copy=False)
    if array.dtype.kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float32) - half) / half).astype(np.float32, copy=False)
    if array.dtype.kind == "b":
        return array.astype(np.float32)
    raise AudioError(f"{name}: audio array has dtype {array.dtype}; expected a float or integer PCM array")


def to_mono(array: np.ndarray, name: str = "audio array", channels_last: bool | None = None) -> np.ndarray:
    """Mix a (samples,), (samples, channels) or (channels, samples) array down to mono float32.

    With ``channels_last=None`` the channel axis of a 2-D array is taken to be the shorter one (soundfile
    returns (frames, channels), torchaudio and PyAV (channels, frames)).
    """
    array = np.asarray(array)
    if array.ndim == 0:
        raise AudioError(f"{name}: got a scalar; expected a 1-D waveform (samples,) or 2-D (samples, channels)")
    array = _to_float32(array, name)
    if array.ndim == 1:
        return np.ascontiguousarray(array)
    if array.ndim != 2:
        raise AudioError(
            f"{name}: audio array has {array.ndim} dimensions (shape {array.shape}); expected 1-D (samples,) "
            "or 2-D (samples, channels)"
        )
    if channels_last is None:
        channels_last = array.shape[1] <= array.shape[0]
    channel_axis = 1 if channels_last else 0
    if array.shape[channel_axis] == 1:
        return np.ascontiguousarray(array.reshape(-1))
    return np.ascontiguousarray(array.mean(axis=channel_axis, dtype=np.float32))


def resample(array: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 waveform with soxr (high quality)."""
    if orig_sr == target_sr:
        return array
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"sampling rate must be positive; got {orig_sr} -> {target_sr}")
    import soxr

    if array.size == 0:
        return array.astype(np.float32)
    out = soxr.resample(array, orig_sr, target_sr, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def _check_waveform(array: np.ndarray, sampling_rate: int, name: str, min_duration_s: float) -> np.ndarray:
    if array.size == 0:
        raise AudioError(f"{name}: contains no audio samples")
    if not np.all(np.isfinite(array)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    min_samples = int(np.ceil(min_duration_s * sampling_rate))
    if array.shape[0] < min_samples:
        raise AudioError(
            f"{name}: audio is too short: {array.shape[0]} samples ({array.shape[0] / sampling_rate:.4f} s) "
            f"at {sampling_rate} Hz; need at least {min_samples} samples ({min_duration_s} s)"
        )
    return array


# ----------------------------------------------------------------------------------------------------------
# decoding of encoded audio


def _decode_soundfile(source: str | io.BytesIO) -> tuple[np.ndarray, int] | None:
    """Decode with libsndfile; None when libsndfile does not know the format."""
    import soundfile as sf

    try:
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        logger.debug("soundfile could not read the input (%s); trying PyAV", exc)
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return None
    return data, int(sr)


def _ffmpeg_reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None)
    return str(reason) if reason else str(exc)


def _open_av(source: str | io.BytesIO, name: str) -> Any:
    import av

    try:
        container = av.open(source, mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise AudioError(f"{name}: not a readable audio file (ffmpeg: {_ffmpeg_reason(exc)})") from exc
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{name}: the file has no audio stream")
    return container


def _iter_av_frames(source: str | io.BytesIO, name: str) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (channels, samples) float32 blocks and their sampling rate, decoded with PyAV."""
    import av

    container = _open_av(source, name)
    try:
        stream = container.streams.audio[0]
        resampler = None
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    # planar float keeps the channel layout and rate; mixing and resampling happen afterwards
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                for out in resampler.resample(frame):
                    yield out.to_ndarray().astype(np.float32, copy=False), int(out.sample_rate)
            if resampler is not None:
                for out in resampler.resample(None):
                    yield out.to_ndarray().astype(np.float32, copy=False), int(out.sample_rate)
        except av.error.FFmpegError as exc:
            raise AudioError(f"{name}: corrupt or unsupported audio data (ffmpeg: {_ffmpeg_reason(exc)})") from exc
    finally:
        container.close()


def _decode_av(source: str | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    blocks: list[np.ndarray] = []
    rate = 0
    for block, sr in _iter_av_frames(source, name):
        rate = sr
        blocks.append(to_mono(block, name, channels_last=False))
    if not blocks:
        raise AudioError(f"{name}: contains no audio samples (no audio frames could be decoded)")
    return np.concatenate(blocks), rate


def _decode_encoded(source: str | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    decoded = _decode_soundfile(source)
    if decoded is not None:
        data, sr = decoded
        return to_mono(data, name, channels_last=True), sr
    return _decode_av(source, name)


def _fetch_url(url: str, timeout: float = 30.0) -> bytes:
    logger.info("fetching audio from %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except OSError as exc:
        raise AudioError(f"{url}: could not fetch the audio ({exc})") from exc


def _check_file(path: Path) -> None:
    try:
        path.stat()
    except FileNotFoundError:
        raise AudioError(f"{path}: no such audio file") from None
    except (OSError, ValueError) as exc:
        raise AudioError(f"{str(path)[:200]}: cannot be opened as an audio file ({exc.__class__.__name__})") from None
    if not path.exists():
        raise AudioError(f"{path}: no such audio file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes)")


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name
    return f"<{type(source).__name__} input>"


def load_audio(
    source: AudioInput,
    sampling_rate: int = 16000,
    *,
    allow_urls: bool = False,
    min_duration_s: float = MIN_DURATION_S,
) -> np.ndarray:
    """Load audio as a mono float32 waveform at ``sampling_rate`` Hz.

    ``source`` may be a file path, ``bytes`` holding an encoded file, an open binary file, a numpy array
    (taken to be at ``sampling_rate`` already; 2-D arrays are mixed to mono), or a dict with ``"array"`` or
    ``"raw"`` and ``"sampling_rate"`` (resampled), or ``"path"``/``"bytes"`` (🤗 datasets' undecoded form).
    URLs are refused unless ``allow_urls=True``.

    Raises :class:`~w2vlm.errors.AudioError` naming the input for missing, empty, corrupt, non-audio or
    too-short input (shorter than ``min_duration_s``).
    """
    if sampling_rate <= 0:
        raise AudioError(f"sampling_rate must be a positive number of Hz; got {sampling_rate}")
    name = _describe(source)
    array, sr = _load_any(source, sampling_rate, allow_urls=allow_urls, name=name)
    array = resample(array, sr, sampling_rate)
    return _check_waveform(array, sampling_rate, name, min_duration_s)


def _load_any(source: Any, sampling_rate: int, *, allow_urls: bool, name: str) -> tuple[np.ndarray, int]:
    if isinstance(source, dict):
        return _load_dict(source, sampling_rate, allow_urls=allow_urls)
    if isinstance(source, np.ndarray):
        return to_mono(source, name), sampling_rate
    if type(source).__module__.startswith("torch"):
        return to_mono(source.detach().cpu().numpy(), name), sampling_rate
    if isinstance(source, (list, tuple)):
        raise AudioError(
            f"{name}: a list is not one audio input; pass a numpy array, or call the pipeline with a list "
            "to transcribe several inputs"
        )
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise AudioError("<bytes input>: the audio bytes are empty")
        return _decode_encoded(io.BytesIO(data), "<bytes input>")
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, bytes):
            text = text.decode()
        if is_url(text):
            if not allow_urls:
                raise AudioError(f"{text}: URLs are not fetched unless allow_urls=True is passed")
            data = _fetch_url(text)
            if not data:
                raise AudioError(f"{text}: the server returned no data")
            return _decode_encoded(io.BytesIO(data), text)
        path = Path(text).expanduser()
        _check_file(path)
        return _decode_encoded(str(path), str(path))
    if hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            raise AudioError(f"{name}: file opened in text mode; open audio files in binary mode ('rb')")
        if not data:
            raise AudioError(f"{name}: the file is empty (0 bytes read)")
        return _decode_encoded(io.BytesIO(data), name)
    raise AudioError(
        f"unsupported audio input of type {type(source).__name__}; expected a path, bytes, a numpy array, "
        "a dict with 'array'/'raw' and 'sampling_rate', or a binary file object"
    )


def _load_dict(source: dict, sampling_rate: int, *, allow_urls: bool) -> tuple[np.ndarray, int]:
    key = "array" if "array" in source else "raw" if "raw" in source else None
    if key is not None and source[key] is not None:
        if "sampling_rate" not in source:
            raise AudioError(f"audio dict has '{key}' but no 'sampling_rate'; add the rate of the array in Hz")
        sr = source["sampling_rate"]
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise AudioError(f"audio dict: 'sampling_rate' must be a positive integer; got {sr!r}")
        name = str(source.get("path") or f"audio dict '{key}'")
        arr = source[key]
        if type(arr).__module__.startswith("torch"):
            arr = arr.detach().cpu().numpy()
        return to_mono(np.asarray(arr), name), int(sr)
    if source.get("bytes"):
        name = str(source.get("path") or "<bytes input>")
        return _decode_encoded(io.BytesIO(bytes(source["bytes"])), name)
    if source.get("path"):
        return _load_any(source["path"], sampling_rate, allow_urls=allow_urls, name=str(source["path"]))
    raise AudioError(
        f"audio dict with keys {sorted(source)}: expected 'array' (or 'raw') with 'sampling_rate', "
        "or 'path', or 'bytes'"
    )


def audio_duration(source: str | os.PathLike) -> float | None:
    """Duration in seconds of an audio file from its header, or None when the header does not tell."""
    import soundfile as sf

    try:
        info = sf.info(os.fspath(source))
        return float(info.frames) / float(info.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        pass
    try:
        import av

        with av.open(os.fspath(source)) as container:
            if container.duration is not None:
                return float(container.duration) / 1_000_000.0
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return None


def iter_audio_blocks(
    source: str | os.PathLike,
    sampling_rate: int = 16000,
    block_s: float = 30.0,
) -> Iterator[np.ndarray]:
    """Yield a file's audio as consecutive mono float32 blocks at ``sampling_rate``, reading incrementally.

    Memory use is bounded by the block size whatever the file's length. The concatenation of the blocks
    equals :func:`load_audio` of the same file up to resampler edge effects (none when no resampling is
    needed). Raises :class:`~w2vlm.errors.AudioError` like :func:`load_audio`.
    """
    import soundfile as sf
    import soxr

    path = Path(os.fspath(source)).expanduser()
    if is_url(str(source)):
        raise AudioError(f"{source}: streaming reads need a local file")
    _check_file(path)
    name = str(path)
    block_frames = max(1, int(block_s * sampling_rate))

    def _emit(stream_blocks: Iterator[tuple[np.ndarray, int]]) -> Iterator[np.ndarray]:
        resampler = None
        pending: list[np.ndarray] = []
        pending_len = 0
        total = 0
        for mono, sr in stream_blocks:
            if sr != sampling_rate:
                if resampler is None:
                    resampler = soxr.ResampleStream(sr, sampling_rate, 1, dtype="float32", quality="HQ")
                mono = resampler.resample_chunk(mono, last=False)
            if mono.size:
                pending.append(mono)
                pending_len += mono.size
            while pending_len >= block_frames:
                joined = np.concatenate(pending)
                yield joined[:block_frames]
                total += block_frames
                rest = joined[block_frames:]
                pending, pending_len = ([rest], rest.size) if rest.size else ([], 0)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                pending.append(np.asarray(tail, dtype=np.float32))
                pending_len += tail.size
        if pending_len:
            total += pending_len
            yield np.concatenate(pending)
        if total == 0:
            raise AudioError(f"{name}: contains no audio samples")

    try:
        handle = sf.SoundFile(name)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        handle = None
    if handle is not None:

        def _sf_blocks() -> Iterator[tuple[np.ndarray, int]]:
            with handle:
                sr = int(handle.samplerate)
                step = max(1, int(block_s * sr))
                while True:
                    data = handle.read(step, dtype="float32", always_2d=True)
                    if data.shape[0] == 0:
                        break
                    yield to_mono(data, name, channels_last=True), sr

        yield from _emit(_sf_blocks())
        return

    def _av_blocks() -> Iterator[tuple[np.ndarray, int]]:
        for block, sr in _iter_av_frames(name, name):
            yield to_mono(block, name, channels_last=False), sr

    yield from _emit(_av_blocks())
