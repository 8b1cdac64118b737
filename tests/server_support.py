"""What the server's live tests share: a uvicorn server in a thread, noise clips, and OpenAI-style requests and
error checks (``test_server.py``, ``test_server_cli.py``)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from conftest import write_audio_file

MODEL_ID = "tiny-test"
API_KEY = "secret-key"


class LiveServer:
    """uvicorn running an app in a background thread on 127.0.0.1 with an ephemeral port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, limit_concurrency=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(16000 * seconds)) * 0.1).astype(np.float32)


def wav_bytes(audio: np.ndarray, tmp: Path, name: str) -> bytes:
    return write_audio_file(tmp / name, audio, 16000).read_bytes()


def make_clips(tmp: Path) -> dict[str, tuple[np.ndarray, bytes]]:
    """Three noise clips (the tiny model turns them into different word sequences), as arrays and wav bytes
    (16-bit PCM: the arrays here are what the server decodes from the bytes)."""
    from w2vlm.audio import load_audio

    out = {}
    for name, seconds, seed in (("a", 2.0, 1), ("b", 3.0, 2), ("c", 1.5, 3)):
        data = wav_bytes(noise(seconds, seed), tmp, f"{name}.wav")
        out[name] = (load_audio(data, 16000), data)
    return out


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def post(
    server: LiveServer,
    data: bytes | None,
    *,
    headers: dict[str, str] | None = None,
    files: dict[str, Any] | None = None,
    **fields: Any,
) -> httpx.Response:
    fields.setdefault("model", MODEL_ID)
    form = {k: v for k, v in fields.items() if v is not None}
    if files is None:
        files = {"file": ("clip.wav", data, "audio/wav")} if data is not None else None
    return httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        data=form,
        files=files,
        headers=auth() if headers is None else headers,
        timeout=60,
    )


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param
    return err
