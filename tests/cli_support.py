"""What the ``w2vlm transcribe`` tests share: torch's thread count put back after each test, a folder of short
audio files, the command run in-process, and the pipeline's text to compare with (``test_cli_transcribe.py``,
``test_cli_habits.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_sine, write_audio_file
from w2vlm.cli import app


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """--threads sets torch's thread count for the process: put it back after each test."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def make_audio_dir(d: Path) -> Path:
    """Three short sines, one in a sub-folder, plus a text file that must be ignored."""
    write_audio_file(d / "one.wav", make_sine(1.0, freq=440), 16000)
    write_audio_file(d / "two.flac", make_sine(1.5, freq=300, amplitude=0.3), 16000)
    (d / "sub").mkdir()
    write_audio_file(d / "sub" / "three.wav", make_sine(0.7, 8000, freq=600), 8000)
    (d / "notes.txt").write_text("not audio\n")
    return d


def invoke(*args: str | Path):
    result = CliRunner().invoke(app, ["transcribe", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def pipeline_text(model: Path, audio: Path, **call: object) -> dict:
    import w2vlm

    pipe = w2vlm.pipeline("automatic-speech-recognition", model=str(model), device="cpu")
    return pipe(str(audio), **call)
