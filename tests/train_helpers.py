"""Shared pieces of the training tests: a tone-burst stand-in for speech, 16-bit wav writing, a tiny manifest and
a small training configuration."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

from w2vlm.train import TrainConfig

SR = 16000


def tone_clip(text: str, rng: np.random.Generator) -> np.ndarray:
    """A crude 'speech' stand-in: one tone burst per character, pitch set by the character."""
    parts = []
    for ch in text:
        n = int(0.12 * SR)
        t = np.arange(n) / SR
        if ch == " ":
            parts.append(np.zeros(n // 2))
        else:
            f = 200 + 60 * (ord(ch) - ord("a"))
            parts.append(0.5 * np.sin(2 * np.pi * f * t) * np.hanning(n))
    x = np.concatenate([np.zeros(1600), *parts, np.zeros(1600)])
    return x + 0.01 * rng.standard_normal(len(x))


def write_wav(path: Path, x: np.ndarray) -> None:
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def write_tiny_manifest(tmp_path: Path) -> Path:
    """Four tone-burst clips of short texts over the letters a-d, as a JSONL manifest in ``tmp_path``."""
    rng = np.random.default_rng(0)
    texts = ["abc", "cab", "bad cab", "dab"]
    (tmp_path / "wav").mkdir()
    with open(tmp_path / "train.jsonl", "w") as f:
        for i, text in enumerate(texts):
            write_wav(tmp_path / "wav" / f"{i}.wav", tone_clip(text, rng))
            f.write(json.dumps({"audio": f"wav/{i}.wav", "text": text.upper()}) + "\n")
    return tmp_path / "train.jsonl"


def train_config(manifest: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict = {
        "manifest": manifest,
        "output_dir": out,
        "dev_manifest": manifest,
        "preset": "tiny",
        "epochs": 12,
        "batch_seconds": 4.0,
        "learning_rate": 3e-3,
        "warmup_steps": 2,
        "device": "cpu",
        "save_every": 0,
        "progress": False,
        "mask_time_prob": 0.0,
    }
    base.update(kw)
    return TrainConfig(**base)
