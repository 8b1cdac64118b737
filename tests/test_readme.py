"""Every Python block of the README runs as written, from the repository root, against the embedded model
and ``examples/`` (each in a fresh interpreter, in a temporary folder that sees ``examples/`` and the
package's assets through symlinks, so the files a block writes land there)."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.M | re.S)
NEEDS = {  # a block's imports that need an extra, and the module that tells whether it is installed
    "from openai import": ("openai", "fastapi"),
    "w2vlm.distributed": ("ray",),
    "import torch": ("torch",),
    "w2vlm.pipeline": ("torch",),
    "import w2vlm\n": ("torch",),
}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_block_runs(block: str, tmp_path: Path) -> None:
    for marker, modules in NEEDS.items():
        if marker in block:
            for module in modules:
                if importlib.util.find_spec(module) is None:
                    pytest.skip(f"needs {module}")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "src").symlink_to(ROOT / "src")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if "127.0.0.1:8000" in block:  # the server block talks to `w2vlm serve` on its default port
        if not _port_free(8000):
            pytest.skip("port 8000 is taken: cannot start the server the block talks to")
        _run_with_server(block, tmp_path, env)
        return
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, f"README block failed:\n{block}\n--- stderr:\n{done.stderr[-3000:]}"


def _run_with_server(block: str, cwd: Path, env: dict[str, str]) -> None:
    import time

    server = subprocess.Popen([sys.executable, "-m", "w2vlm.cli", "serve", "--port", "8000"], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _port_free(8000):
            assert server.poll() is None, f"the server did not start:\n{server.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the server did not start within 120 s"
            time.sleep(0.5)
        done = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, f"README block failed:\n{block}\n--- stderr:\n{done.stderr[-3000:]}"
        assert "the children" in done.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
