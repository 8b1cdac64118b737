"""Atomic writes: the permissions of a plain write, the old file kept on failure, no temporary files left."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from w2vlm.errors import OutputError, W2vlmError
from w2vlm.fileio import atomic_open, atomic_path, atomic_write_json, atomic_write_text, check_output, current_umask


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_umask_read_without_changing_it(umask_027: None) -> None:
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_new_file_gets_the_mode_a_plain_write_gives(tmp_path: Path, umask_027: None) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    out = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert out.read_text(encoding="utf-8") == "héllo\n"
    assert _mode(out) == _mode(plain) == 0o640


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "attrs.json"
    target.write_text("{}")
    os.chmod(target, 0o604)
    atomic_write_json(target, {"alpha": 0.5, "name": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"alpha": 0.5, "name": "é"}
    assert _mode(target) == 0o604
    assert [p.name for p in tmp_path.iterdir()] == ["attrs.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("savefig failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_binary_and_bad_mode(tmp_path: Path) -> None:
    with atomic_open(tmp_path / "a.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode must be"), atomic_open(tmp_path / "b", "a"):
        pass


def test_outputs_that_cannot_be_written_are_named_errors(tmp_path: Path) -> None:
    """A parent that is a file, a folder where a file goes, a file where a folder goes: an OutputError (a
    W2vlmError, and still an OSError) naming what is in the way, before anything is written."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match=r"afile/sub/r\.json: cannot write it: .*afile is a file, not a folder"):
        atomic_write_text(afile / "sub" / "r.json", "{}")
    with pytest.raises(OutputError, match="is a folder; expected a file name"):
        atomic_write_text(tmp_path, "{}")
    with pytest.raises(OutputError, match="is a file; expected a folder"):
        check_output(afile, folder=True)
    with pytest.raises(OutputError, match="afile is a file, not a folder"):
        check_output(afile / "out", folder=True)
    assert issubclass(OutputError, W2vlmError) and issubclass(OutputError, OSError)
    assert check_output(tmp_path / "new" / "deeper" / "r.json") == tmp_path / "new" / "deeper" / "r.json"
    assert (tmp_path / "new" / "deeper").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "new"]  # no temporaries left
    assert afile.read_text() == "x"


def test_commands_check_their_outputs_before_the_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from w2vlm.cli import app

    (tmp_path / "afile").write_text("x")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat\n")
    runner = CliRunner()
    for args in (
        ["build-lm", str(corpus), "-o", str(tmp_path / "afile" / "lm.arpa")],
        ["transcribe", str(corpus), "-o", str(tmp_path / "afile")],
        ["tune", str(corpus), "-o", str(tmp_path / "afile" / "r.json")],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, (args, res.output)
        assert "afile" in res.output and "Traceback" not in res.output
