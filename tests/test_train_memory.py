"""Tests of w2vlm.train's memory limit (--max-memory) and giving free pages back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import model_weights
from train_helpers import train_config
from w2vlm.train import train

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_max_memory_releases_free_pages_then_stops_and_resume_goes_on(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import w2vlm.train.loop as train_module
    import w2vlm.train.memory as memory_module

    whole = train(train_config(tiny_manifest, tmp_path / "whole", epochs=6, batch_seconds=1.5, dev_manifest=None))
    assert whole.steps > 12 and whole.stopped_for is None

    # resident memory climbs 0.1 GB a step; giving free pages back takes 0.3 GB off the first time it is over
    # the limit, then nothing (the release right after loading the data finds nothing to give back)
    held = {"gb": 1.0}
    released: list[float] = []

    def fake_release() -> str:
        released.append(held["gb"])
        held["gb"] -= 0.3 if sum(gb > 1.5 for gb in released) == 1 and held["gb"] > 1.5 else 0.0
        return "jemalloc"

    real_step = train_module.train_step

    def growing_step(*args: object, **kwargs: object) -> object:
        held["gb"] += 0.1
        return real_step(*args, **kwargs)

    for module in (train_module, memory_module):
        monkeypatch.setattr(module, "resident_memory_gb", lambda: held["gb"])
    monkeypatch.setattr(memory_module, "release_free_memory", fake_release)
    monkeypatch.setattr(train_module, "train_step", growing_step)
    out = tmp_path / "model"
    with caplog.at_level("INFO", logger="w2vlm"):
        stopped = train(
            train_config(
                tiny_manifest, out, epochs=6, batch_seconds=1.5, dev_manifest=None, max_memory_gb=1.5, log_every=5
            )
        )
    # checked every 10 steps: at step 10 (2.0 GB) the release (to 1.7 GB) is not enough, so it stops there
    assert stopped.stopped_for == "memory" and stopped.steps == 10 and released == [1.0, pytest.approx(2.0)]
    assert "resident memory 2.0 GB over --max-memory 1.5 GB: jemalloc gave 0.3 GB back" in caplog.text
    assert "run the same command with --resume" in caplog.text
    assert json.loads((out / "training_info.json").read_text())["paused"] is True
    assert re.search(r"step 5 epoch \d+ loss \S+ lr \S+ \d+s mem 1\.5 GB", caplog.text)  # the log shows it

    from typer.testing import CliRunner

    from w2vlm.cli import EXIT_MEMORY, app

    held["gb"], released[:] = 1.0, []
    common = ["--preset", "tiny", "--batch-seconds", "1.5", "--warmup", "2", "--device", "cpu", "-q"]
    res = CliRunner().invoke(
        app, ["train", str(tiny_manifest), "-o", str(tmp_path / "cli"), "--epochs", "6", "--max-memory", "1.5", *common]
    )
    assert res.exit_code == EXIT_MEMORY == 75, res.output
    assert "stopped: over --max-memory 1.5 GB; --resume goes on" in res.output

    monkeypatch.setattr(train_module, "train_step", real_step)
    done = train(train_config(tiny_manifest, out, epochs=6, batch_seconds=1.5, dev_manifest=None, resume=True))
    assert done.steps == whole.steps and done.stopped_for is None
    a, b = model_weights(tmp_path / "whole"), model_weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_max_memory_already_exceeded_after_loading_is_not_enforced(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart could not get under a limit the loaded data already passes: warn and train on, instead of
    stopping at once (a `--resume` loop would never end)."""
    import w2vlm.train.loop as train_module
    import w2vlm.train.memory as memory_module

    for module in (train_module, memory_module):
        monkeypatch.setattr(module, "resident_memory_gb", lambda: 3.0)
    monkeypatch.setattr(memory_module, "release_free_memory", lambda: None)
    with caplog.at_level("WARNING", logger="w2vlm"):
        result = train(train_config(tiny_manifest, tmp_path / "m", epochs=4, dev_manifest=None, max_memory_gb=2.0))
    assert result.stopped_for is None and result.epochs_completed == 4
    assert "before the first step" in caplog.text


def test_free_memory_is_given_back_once_after_loading_the_data(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The arrays freed while decoding the audio (and writing the cache) go back to the system before the first
    step, with or without --max-memory, and the log says how much that was."""
    import w2vlm.train.loop as train_module
    import w2vlm.train.memory as memory_module

    held = {"gb": 5.0}
    calls: list[int] = []
    real_step = train_module.train_step

    def fake_release() -> str:
        calls.append(len(steps))
        held["gb"] = 2.0
        return "jemalloc"

    steps: list[None] = []

    def counting_step(*args: object, **kwargs: object) -> object:
        steps.append(None)
        return real_step(*args, **kwargs)

    for module in (train_module, memory_module):
        monkeypatch.setattr(module, "resident_memory_gb", lambda: held["gb"])
    monkeypatch.setattr(memory_module, "release_free_memory", fake_release)
    monkeypatch.setattr(train_module, "train_step", counting_step)
    with caplog.at_level("INFO", logger="w2vlm"):
        result = train(train_config(tiny_manifest, tmp_path / "m", epochs=2, dev_manifest=None, log_every=1))
    assert result.stopped_for is None and steps
    assert calls == [0]  # once, before any step; no --max-memory, so never again
    assert "after loading the data: jemalloc gave 3.0 GB of free memory back (2.0 GB resident)" in caplog.text
    assert re.search(r"step 1 epoch 0 loss \S+ lr \S+ \d+s mem 2\.0 GB", caplog.text)

    calls.clear()
    steps.clear()
    held["gb"] = 2.0  # nothing to give back: nothing is said
    caplog.clear()
    with caplog.at_level("INFO", logger="w2vlm"):
        train(train_config(tiny_manifest, tmp_path / "n", epochs=1, dev_manifest=None))
    assert calls == [0] and "after loading the data" not in caplog.text


def test_release_free_memory_gives_pages_back(tmp_path: Path) -> None:
    """Under jemalloc with page decay off (the recipe's setting) freed memory stays resident until purged; under
    glibc malloc_trim runs. Each in a fresh interpreter, since the allocator is chosen at process start."""
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from w2vlm.train.memory import release_free_memory, resident_memory_gb\n"
        "xs = [np.ones(1_000_000 + 997 * i) for i in range(40)]\n"  # ~320 MB in large blocks
        "del xs\n"
        "before = resident_memory_gb()\n"
        "which = release_free_memory()\n"
        "print(which, before, resident_memory_gb())\n"
    )
    jemalloc = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    runs = {"glibc": {}}
    if jemalloc.exists():
        runs["jemalloc"] = {"LD_PRELOAD": str(jemalloc), "MALLOC_CONF": "narenas:1,dirty_decay_ms:-1,muzzy_decay_ms:-1"}
    import os

    for name, env in runs.items():
        res = subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr
        which, before, after = res.stdout.split()
        assert which == name
        if name == "jemalloc":  # decay off kept the freed pages until the purge
            assert float(before) - float(after) > 0.2, res.stdout
