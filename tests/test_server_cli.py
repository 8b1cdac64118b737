"""The ``w2vlm serve`` command: its help and errors, a server it starts, and the model card's language."""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from server_support import MODEL_ID, LiveServer, assert_openai_error, make_clips, post  # noqa: E402
from w2vlm.server import ServerSettings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, bytes]]:
    return make_clips(tmp_path_factory.mktemp("clips"))


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_serve_help_and_bad_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from w2vlm.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--model",
        "--api-key",
        "--max-queue",
        "--max-upload-mb",
        "--workers",
        "--upload-timeout",
    ):
        assert option in result.output
    result = runner.invoke(app, ["serve", "--model", str(tmp_path / "missing"), "--port", "1"])
    assert result.exit_code == 1
    assert "no such model folder" in result.output
    for args, named in (
        (["--port", "70000"], "--port"),
        (["--log-level", "loud"], "--log-level"),
        (["--workers", "0"], "--workers"),
        (["--max-upload-mb", "-1"], "--max-upload-mb"),
        (["--stream-chunk", "0"], "--stream-chunk"),
    ):
        result = runner.invoke(app, ["serve", "--model", str(tmp_path / "missing"), *args])
        assert result.exit_code == 2 and named in result.output  # a usage error before the model loads


@pytest.mark.slow
def test_cli_serve_runs_a_server(tiny_ctc_dir: Path, clips: dict) -> None:
    """``w2vlm serve`` as a subprocess: it answers, then stops on SIGINT."""
    import signal
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "w2vlm.cli", "serve", "--model", str(tiny_ctc_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
        r = httpx.post(
            f"{url}/v1/audio/transcriptions",
            data={"model": tiny_ctc_dir.name},
            files={"file": ("c.wav", clips["c"][1])},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_the_model_cards_language_is_served(tiny_ctc_dir: Path, tmp_path: Path, clips: dict) -> None:
    from w2vlm.errors import ModelError
    from w2vlm.model import write_model_card

    model = tmp_path / "m"
    shutil.copytree(tiny_ctc_dir, model)
    write_model_card(model, language="en", title="m")
    with LiveServer(create_app(str(model), ServerSettings(model_id=MODEL_ID), device="cpu")) as live:
        _, data = clips["c"]
        ok = post(live, data, headers={}, response_format="verbose_json")
        assert ok.status_code == 200 and ok.json()["language"] == "english"  # as OpenAI names it
        err = assert_openai_error(post(live, data, headers={}, language="fr"), 400, "language")
        assert err["code"] == "unsupported_language"
    with pytest.raises(ModelError, match="transcribes 'en'"):
        create_app(str(model), ServerSettings(model_id=MODEL_ID, language="de"), device="cpu")
