"""Audio as arrays: float32 samples, mixed to mono (with a warning when the channels cancel out), resampled with
soxr, and the checks that an input's samples and format are usable (see :mod:`w2vlm.limits`). :mod:`w2vlm.audio`
decodes files and other inputs into these arrays."""

from __future__ import annotations

import logging

import numpy as np

from w2vlm import limits
from w2vlm.errors import AudioError

logger = logging.getLogger("w2vlm.audio")


def as_float32(array: np.ndarray, name: str) -> np.ndarray:
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
    array = as_float32(array, name)
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
    # the mean of the channels as a matrix-vector product: ~40x faster than numpy's mean over a short axis (a
    # 30 s stereo block: 0.2 ms instead of 9), and the same numbers for 2 channels
    weights = np.full(array.shape[channel_axis], 1.0 / array.shape[channel_axis], np.float32)
    mono = np.ascontiguousarray(array @ weights if channels_last else weights @ array, dtype=np.float32)
    _check_cancelling(array, mono, name)
    return mono


_CANCELLING_WARNED: dict[str, None] = {}  # names warned about, oldest first (at most 256 kept)


def _check_cancelling(array: np.ndarray, mono: np.ndarray, name: str) -> None:
    """Warn (once per name) when the channels cancel out in the mix: audible channels (above -60 dBFS) whose
    mean is 20 dB quieter than they are, as when one channel is the other with its polarity inverted. The
    model would then hear near-silence and give no words."""
    if name in _CANCELLING_WARNED or mono.size == 0:
        return
    step = max(1, mono.size // 4096)  # every step-th sample: enough to tell, and cheap on long blocks
    frames = array[::step] if array.shape[0] == mono.size else array[:, ::step]
    channels = float(np.mean(np.square(frames, dtype=np.float32)))
    if channels > 1e-6 and float(np.mean(np.square(mono[::step]))) < 0.01 * channels:
        _CANCELLING_WARNED[name] = None
        while len(_CANCELLING_WARNED) > 256:
            del _CANCELLING_WARNED[next(iter(_CANCELLING_WARNED))]
        logger.warning(
            "%s: its channels cancel out when mixed to mono (one has its polarity inverted?); the mix is near "
            "silence. Transcribe one channel, e.g. ffmpeg -i IN -af 'pan=mono|c0=c0' OUT.wav",
            name,
        )


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


def check_finite(array: np.ndarray, name: str, offset: int = 0, sampling_rate: int | None = None) -> None:
    """AudioError naming the first NaN or infinite sample (``offset``: the array's first sample in the input)."""
    bad = ~np.isfinite(array)
    if bad.any():
        at = offset + int(np.argmax(bad))
        where = f"sample {at}" + (f", {at / sampling_rate:.3f} s" if sampling_rate else "")
        raise AudioError(f"{name}: audio contains NaN or infinite samples (the first at {where})")


def check_waveform(array: np.ndarray, sampling_rate: int, name: str, min_duration_s: float) -> np.ndarray:
    if array.size == 0:
        raise AudioError(f"{name}: contains no audio samples")
    check_finite(array, name, 0, sampling_rate)
    min_samples = int(np.ceil(min_duration_s * sampling_rate))
    if array.shape[0] < min_samples:
        raise AudioError(
            f"{name}: audio is too short: {array.shape[0]} samples ({array.shape[0] / sampling_rate:.4f} s) "
            f"at {sampling_rate} Hz; need at least {min_samples} samples ({min_duration_s} s)"
        )
    return array


def check_format(name: str, channels: int, sampling_rate: int) -> None:
    """Refuse a channel count or sampling rate outside :mod:`w2vlm.limits` (before anything is decoded)."""
    if not 1 <= channels <= limits.MAX_AUDIO_CHANNELS:
        raise AudioError(
            f"{name}: the audio has {channels} channels; expected 1..{limits.MAX_AUDIO_CHANNELS} "
            "(w2vlm.limits.MAX_AUDIO_CHANNELS)"
        )
    if not limits.MIN_AUDIO_SAMPLE_RATE <= sampling_rate <= limits.MAX_AUDIO_SAMPLE_RATE:
        raise AudioError(
            f"{name}: the audio's sampling rate is {sampling_rate} Hz; expected {limits.MIN_AUDIO_SAMPLE_RATE}.."
            f"{limits.MAX_AUDIO_SAMPLE_RATE} Hz (w2vlm.limits.MIN/MAX_AUDIO_SAMPLE_RATE)"
        )


__all__ = ["as_float32", "check_finite", "check_format", "check_waveform", "resample", "to_mono"]
