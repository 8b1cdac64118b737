"""Shared pieces of the VAD tests: the example recordings, Silero VAD, the wheel's own model run frame by frame,
and audio made of clips, silences and noise floors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from w2vlm.engine import silero as vadnet

needs_vad = pytest.mark.skipif(not vadnet.available(), reason="the 'vad' extra (silero-vad) is not installed")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RATE = 16000


def example_clips() -> list[np.ndarray]:
    """The example recordings (16 kHz), in a fixed order."""
    import soundfile as sf

    out = []
    for path in sorted(EXAMPLES.glob("*.wav")):
        audio, rate = sf.read(str(path), dtype="float32")
        assert rate == RATE
        out.append(audio)
    assert len(out) == 4
    return out


def shared_silero() -> vadnet.SileroVad:
    """The process's Silero VAD (the test skips when the extra is not installed)."""
    if not vadnet.available():
        pytest.skip("the 'vad' extra is not installed")
    return vadnet.SileroVad.shared()


def embedded_engine() -> object:
    """The embedded default model's engine, on the CPU (the test skips without torch, the decoder, the 'vad' extra
    or the embedded model)."""
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


def speech_span(clip: np.ndarray) -> tuple[int, int]:
    """Where a clip's speech is (samples): the first and last 32 ms frame within 25 dB of its loudest one."""
    frames = clip[: clip.size // 512 * 512].reshape(-1, 512)
    level = 20 * np.log10(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-12)
    loud = np.flatnonzero(level > level.max() - 25)
    return int(loud[0]) * 512, (int(loud[-1]) + 1) * 512


def to_vad_rate(audio: np.ndarray) -> np.ndarray:
    import soxr

    low = soxr.resample(audio, RATE, vadnet.VAD_RATE).astype(np.float32)
    return low[: low.size // 256 * 256]


def reference_probs(audio: np.ndarray, rate: int = vadnet.VAD_RATE) -> np.ndarray:
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


def joined_with_gaps(clips: list[np.ndarray], gaps: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``gaps[0], clips[0], gaps[1], clips[1], ..., gaps[-1]`` and each clip's speech span in the result."""
    parts: list[np.ndarray] = []
    spans = []
    at = 0
    for gap, clip in zip(gaps, clips):
        at += gap.size
        lo, hi = speech_span(clip)
        spans.append((at + lo, at + hi))
        parts += [gap, clip]
        at += clip.size
    parts += gaps[len(clips) :]
    return np.concatenate(parts).astype(np.float32), spans


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def noise_floor(seconds: float, seed: int, level: float = 1e-3) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(np.float32)
