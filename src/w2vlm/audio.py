"""Audio input: decoding, mixing to mono and resampling.

:func:`load_audio` turns whatever a user hands over (a path, raw bytes, a numpy array, a
``{"array", "sampling_rate"}`` dict as produced by 🤗 datasets, or an open binary file) into a mono float32
waveform at the requested sampling rate. Files are read with soundfile (libsndfile: wav, flac, ogg, mp3, ...)
and, when libsndfile cannot read them, with PyAV (anything ffmpeg decodes: m4a/aac, opus, webm, video
containers, ...). Resampling uses soxr.

:func:`iter_audio_blocks` reads a file block by block, so a long recording never has to sit in memory whole.

Inputs are checked before they cost memory (see :mod:`w2vlm.limits`): channel count, sampling rate, file size
and, for :func:`load_audio`, the duration (read block by block, so a header that lies about the length
allocates nothing). PyAV always hands over interleaved samples, because its conversion of planar frames with
more than 8 channels to numpy crashes the process (PyAV 18).
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

from w2vlm import limits
from w2vlm.audio_arrays import check_finite, check_format, check_waveform, resample, to_mono
from w2vlm.errors import AudioError

logger = logging.getLogger("w2vlm.audio")

#: Shortest input accepted: wav2vec2's convolutional front end needs 400 samples (25 ms at 16 kHz)
#: for one output frame.
MIN_DURATION_S = 0.025

AudioInput = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray | dict | BinaryIO

_URL_PREFIXES = ("http://", "https://", "ftp://")


#: File extensions of audio, as folders are walked for it by ``transcribe``, ``eval`` and the manifests (a
#: file named explicitly is tried whatever its name).
_EXTENSION_NAMES = (
    "wav wave flac mp3 ogg oga opus spx m4a m4b aac wma aif aiff aifc au snd caf amr 3gp webm mka mkv mp4 mov avi wv"
)
AUDIO_EXTENSIONS = frozenset("." + name for name in _EXTENSION_NAMES.split())


def is_url(value: object) -> bool:
    """True for strings that look like an http(s)/ftp URL."""
    return isinstance(value, str) and value.lower().startswith(_URL_PREFIXES)


def _too_long(name: str, seconds: float, max_s: float, what: str = "is") -> AudioError:
    return AudioError(
        f"{name}: the audio {what} {seconds:.1f} s long; at most {max_s:g} s is accepted "
        "(w2vlm.limits.MAX_AUDIO_DURATION_S, or the caller's max_duration_s)"
    )


class _Collector:
    """Mono blocks of one input, refusing more than ``max_s`` seconds of audio as soon as it is decoded."""

    def __init__(self, name: str, max_s: float) -> None:
        self.name, self.max_s = name, max_s
        self.blocks: list[np.ndarray] = []
        self.samples = 0
        self.rate = 0

    def add(self, mono: np.ndarray, rate: int) -> None:
        self.rate = rate
        self.samples += mono.shape[0]
        if self.samples > self.max_s * rate:
            raise _too_long(self.name, self.samples / rate, self.max_s, "is more than")
        self.blocks.append(mono)

    def result(self) -> np.ndarray:
        if len(self.blocks) == 1:
            return self.blocks[0]
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# decoding of encoded audio


def _open_soundfile(source: str | io.BytesIO) -> Any:
    """``soundfile.SoundFile(source)``, set up for reading front to back. soundfile seeks to where it is after
    every read; in an MP3 that restarts libmpg123's decoder, which then prints "part2_3_length ... too large"
    to stderr for each block after the first that starts in the bit reservoir (samples unchanged). An MP3 handle
    is therefore marked as not seekable, so that reads follow each other without a seek."""
    import soundfile as sf

    handle = sf.SoundFile(source)
    if handle.format == "MP3":
        handle.seekable = lambda: False  # type: ignore[method-assign]
    return handle


def _decode_soundfile(source: str | io.BytesIO, name: str, max_s: float) -> tuple[np.ndarray, int] | None:
    """Decode with libsndfile (mixed to mono, block by block); None when libsndfile cannot read it."""
    import soundfile as sf

    try:
        handle = _open_soundfile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        logger.debug("soundfile could not open the input (%s); trying PyAV", exc)
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return None
    with handle:
        sr = int(handle.samplerate)
        check_format(name, int(handle.channels), sr)
        if handle.frames > max_s * sr:  # the header's length: refused before any block is read
            raise _too_long(name, handle.frames / sr, max_s, "header says it is")
        out = _Collector(name, max_s)
        step = max(1, 30 * sr)
        try:
            while True:
                data = handle.read(step, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                out.add(to_mono(data, name, channels_last=True), sr)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            logger.debug("soundfile could not decode the input (%s); trying PyAV", exc)
            if isinstance(source, io.BytesIO):
                source.seek(0)
            return None
    return out.result(), sr


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


#: Samples per block PyAV hands over: codecs decode 20-60 ms frames, and each costs as much in Python calls as in
#: decoding; the resampler gathers them into blocks of this many (a 60-minute opus file: ~10 s of CPU before)
_AV_FRAME_SAMPLES = 16384


def _main_audio_stream(container: Any) -> Any:
    """The audio stream a player would play: the first one marked as the default, else the first one (a film
    with several audio tracks marks the one to use)."""
    import av

    default = av.stream.Disposition.default
    marked = [s for s in container.streams.audio if int(s.disposition) & int(default)]
    return (marked or list(container.streams.audio))[0]


def _av_samples(frame: Any, channels: int) -> np.ndarray:
    """(samples, channels) of a packed float frame (one plane, whatever the channel count)."""
    flat = frame.to_ndarray().astype(np.float32, copy=False).reshape(-1)
    return flat.reshape(-1, channels)


def _iter_av_frames(source: str | io.BytesIO, name: str) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (samples, channels) float32 blocks and their sampling rate, decoded with PyAV."""
    import av

    container = _open_av(source, name)
    try:
        stream = _main_audio_stream(container)
        resampler = None
        channels = 0
        damaged: list[BaseException] = []
        try:
            for frame in _decoded_frames(container, stream, damaged):
                if resampler is None:
                    channels = int(frame.layout.nb_channels)
                    check_format(name, channels, int(frame.sample_rate))
                    # packed float keeps the channels and rate (mixing and resampling happen afterwards); never
                    # planar: PyAV's to_ndarray crashes on planar frames of more than 8 channels
                    resampler = av.AudioResampler(
                        format="flt", layout=frame.layout, rate=frame.sample_rate, frame_size=_AV_FRAME_SAMPLES
                    )
                elif int(frame.layout.nb_channels) != channels:
                    raise AudioError(
                        f"{name}: the channel count changes within the stream ({channels} -> "
                        f"{frame.layout.nb_channels}); not supported"
                    )
                for out in resampler.resample(frame):
                    yield _av_samples(out, channels), int(out.sample_rate)
            if resampler is not None:
                for out in resampler.resample(None):
                    yield _av_samples(out, channels), int(out.sample_rate)
        except av.error.FFmpegError as exc:
            raise AudioError(f"{name}: corrupt or unsupported audio data (ffmpeg: {_ffmpeg_reason(exc)})") from exc
        if damaged:
            if resampler is None:  # nothing decoded at all
                reason = _ffmpeg_reason(damaged[0])
                raise AudioError(f"{name}: corrupt or unsupported audio data (ffmpeg: {reason})") from damaged[0]
            logger.warning(
                "%s: %d damaged packet(s) skipped (ffmpeg: %s); the audio around them was read, as ffmpeg reads it",
                name,
                len(damaged),
                _ffmpeg_reason(damaged[0]),
            )
    finally:
        container.close()


def _decoded_frames(container: Any, stream: Any, damaged: list[BaseException]) -> Iterator[Any]:
    """The stream's decoded frames, packet by packet; a packet that does not decode (a file cut short, a
    damaged stretch) is skipped and its error added to ``damaged``, as ffmpeg's own tool goes on past it."""
    import av

    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.FFmpegError as exc:
            if isinstance(exc, av.error.EOFError):
                return
            damaged.append(exc)


def _decode_av(source: str | io.BytesIO, name: str, max_s: float) -> tuple[np.ndarray, int]:
    out = _Collector(name, max_s)
    for block, sr in _iter_av_frames(source, name):
        out.add(to_mono(block, name, channels_last=True), sr)
    if not out.blocks:
        raise AudioError(f"{name}: contains no audio samples (no audio frames could be decoded)")
    return out.result(), out.rate


def _decode_encoded(source: str | io.BytesIO, name: str, max_s: float) -> tuple[np.ndarray, int]:
    try:
        decoded = _decode_soundfile(source, name, max_s)
        if decoded is not None:
            return decoded
        return _decode_av(source, name, max_s)
    except MemoryError:
        raise AudioError(f"{name}: out of memory while decoding the audio") from None


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
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes)")
    if size > limits.MAX_AUDIO_FILE_BYTES:
        raise AudioError(
            f"{path}: the file has {size:,} bytes; at most {limits.MAX_AUDIO_FILE_BYTES:,} are read "
            "(w2vlm.limits.MAX_AUDIO_FILE_BYTES)"
        )


def describe_input(source: object, label: str | None = None) -> str:
    """How errors name an audio input: a path as it is, a file object by its name; bytes, arrays and dicts by
    ``label`` (the caller's name for the input, e.g. "input 3") and their kind ("input 3 (bytes)"), or by their
    kind alone ("<bytes input>"); a dict with a ``path`` by its path."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, dict) and source.get("path"):
        return str(source["path"])
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return name
    kind = "bytes" if isinstance(source, (bytes, bytearray, memoryview)) else type(source).__name__
    return f"{label} ({kind})" if label else f"<{kind} input>"


def load_audio(
    source: AudioInput,
    sampling_rate: int = 16000,
    *,
    allow_urls: bool = False,
    min_duration_s: float = MIN_DURATION_S,
    max_duration_s: float | None = None,
    label: str | None = None,
) -> np.ndarray:
    """Load audio as a mono float32 waveform at ``sampling_rate`` Hz.

    ``source`` may be a file path, ``bytes`` holding an encoded file, an open binary file, a numpy array
    (taken to be at ``sampling_rate`` already; 2-D arrays are mixed to mono), or a dict with ``"array"`` or
    ``"raw"`` and ``"sampling_rate"`` (resampled), or ``"path"``/``"bytes"`` (🤗 datasets' undecoded form).
    URLs are refused unless ``allow_urls=True``.

    Raises :class:`~w2vlm.errors.AudioError` naming the input for missing, empty, corrupt, non-audio,
    too-short (shorter than ``min_duration_s``) or too-long input (longer than ``max_duration_s``, by default
    :data:`w2vlm.limits.MAX_AUDIO_DURATION_S`; checked while decoding, before resampling), and for channel
    counts and sampling rates outside :mod:`w2vlm.limits`. ``label``: the caller's name for an input that has none
    of its own (bytes, an array, a dict without a path), used in its errors (:func:`describe_input`).
    """
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise AudioError(f"sampling_rate must be a positive integer number of Hz; got {sampling_rate!r}")
    max_s = limits.MAX_AUDIO_DURATION_S if max_duration_s is None else float(max_duration_s)
    if not max_s > 0:
        raise AudioError(f"max_duration_s must be positive; got {max_duration_s!r}")
    name = describe_input(source, label)
    array, sr = _load_any(source, sampling_rate, allow_urls=allow_urls, name=name, max_s=max_s)
    if array.shape[0] > max_s * sr:
        raise _too_long(name, array.shape[0] / sr, max_s)
    try:
        array = resample(array, sr, sampling_rate)
    except MemoryError:
        raise AudioError(f"{name}: out of memory while resampling the audio") from None
    return check_waveform(array, sampling_rate, name, min_duration_s)


def _load_any(source: Any, sampling_rate: int, *, allow_urls: bool, name: str, max_s: float) -> tuple[np.ndarray, int]:
    if isinstance(source, dict):
        return _load_dict(source, sampling_rate, allow_urls=allow_urls, max_s=max_s, name=name)
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
            raise AudioError(f"{name}: the audio bytes are empty")
        return _decode_encoded(io.BytesIO(data), name, max_s)
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
            return _decode_encoded(io.BytesIO(data), text, max_s)
        path = Path(text).expanduser()
        _check_file(path)
        return _decode_encoded(str(path), str(path), max_s)
    if hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            raise AudioError(f"{name}: file opened in text mode; open audio files in binary mode ('rb')")
        if not data:
            raise AudioError(f"{name}: the file is empty (0 bytes read)")
        return _decode_encoded(io.BytesIO(data), name, max_s)
    raise AudioError(
        f"unsupported audio input of type {type(source).__name__}; expected a path, bytes, a numpy array, "
        "a dict with 'array'/'raw' and 'sampling_rate', or a binary file object"
    )


def _load_dict(
    source: dict, sampling_rate: int, *, allow_urls: bool, max_s: float, name: str
) -> tuple[np.ndarray, int]:
    """A dict input; ``name`` names it in errors."""
    key = "array" if "array" in source else "raw" if "raw" in source else None
    if key is not None and source[key] is not None:
        if "sampling_rate" not in source:
            raise AudioError(
                f"{name}: the audio dict has '{key}' but no 'sampling_rate'; add the rate of the array in Hz"
            )
        sr = source["sampling_rate"]
        if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise AudioError(f"{name}: the audio dict's 'sampling_rate' must be a positive integer; got {sr!r}")
        if int(sr) != sampling_rate:  # it will be resampled: the rate must be a real one
            check_format(name, 1, int(sr))
        arr = source[key]
        if type(arr).__module__.startswith("torch"):
            arr = arr.detach().cpu().numpy()
        return to_mono(np.asarray(arr), name), int(sr)
    if source.get("bytes"):
        return _decode_encoded(io.BytesIO(bytes(source["bytes"])), name, max_s)
    if source.get("path"):
        return _load_any(source["path"], sampling_rate, allow_urls=allow_urls, name=str(source["path"]), max_s=max_s)
    raise AudioError(
        f"{name}: an audio dict with keys {sorted(source)}; expected 'array' (or 'raw') with 'sampling_rate', "
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
        read = 0  # samples read at the file's own rate
        for mono, sr in stream_blocks:
            check_finite(mono, name, read, sr)
            read += mono.size
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
        handle = _open_soundfile(name)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        handle = None

    def _av_blocks() -> Iterator[tuple[np.ndarray, int]]:
        for block, sr in _iter_av_frames(name, name):
            yield to_mono(block, name, channels_last=True), sr

    if handle is None:
        yield from _emit(_av_blocks())
        return

    def _sf_blocks() -> Iterator[tuple[np.ndarray, int]]:
        with handle:
            sr = int(handle.samplerate)
            check_format(name, int(handle.channels), sr)
            step = max(1, int(block_s * sr))
            done = 0
            while True:
                try:
                    data = handle.read(step, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    # damaged data (a file cut short): ffmpeg reads on past it; its blocks from where this stopped
                    logger.debug("soundfile could not decode %s after %d samples (%s); PyAV goes on", name, done, exc)
                    break
                if data.shape[0] == 0:
                    return
                done += data.shape[0]
                yield to_mono(data, name, channels_last=True), sr
        skip = done
        for mono, rate in _av_blocks():
            if skip >= mono.size:
                skip -= mono.size
                continue
            yield mono[skip:], rate
            skip = 0

    yield from _emit(_sf_blocks())
