"""Writing files atomically, with the permissions a plain write would have given.

Every output w2vlm writes (transcripts, reports, plots, LM files, ``attrs.json``) goes through here: the
data is written to a temporary file in the target's folder and renamed over the target, so a reader never
sees a partial file and an interrupted run leaves the old file as it was. ``tempfile.mkstemp`` creates its
file with mode 0600; a plain ``open(path, "w")`` would have given ``0666 & ~umask`` to a new file and kept
an existing file's mode, so the temporary file is given that mode before the rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from w2vlm.errors import OutputError

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
    "check_output",
    "current_umask",
    "read_json_object",
]

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux ``/proc``)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:  # elsewhere: set and restore (briefly process-wide, hence the lock)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def _cannot_write(target: Path, exc: OSError) -> OutputError:
    """The :class:`OutputError` for ``exc`` raised while writing ``target``, naming what is in the way."""
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                return OutputError(f"{target}: cannot write it: {parent} is a file, not a folder")
            break
    if target.is_dir():
        return OutputError(f"{target}: is a folder; expected a file name")
    return OutputError(f"{target}: cannot write it ({exc.strerror or exc})")


def check_output(path: str | os.PathLike[str], folder: bool = False) -> Path:
    """Check, before the work that ends in writing it, that ``path`` (a file, or with ``folder`` a folder) can be
    written: its parent folders are made, and a folder is not where a file goes nor a file where a folder goes;
    an :class:`OutputError` naming the problem otherwise."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    if folder and target.exists() and not target.is_dir():
        raise OutputError(f"{target}: is a file; expected a folder (or a name that does not exist yet)")
    if not folder and target.is_dir():
        raise OutputError(f"{target}: is a folder; expected a file name")
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write (e.g. ``fig.savefig(tmp)``); on normal
    exit it gets the mode of the file it replaces (or ``0666 & ~umask``) and is renamed onto ``path``; on an
    exception it is removed and ``path`` is left as it was. Missing parent folders are created. A path that
    cannot be written is an :class:`OutputError`, before anything is written or when the file is put in place."""
    target = check_output(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(target))
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _cannot_write(target, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO[Any]]:
    """``open()`` for writing (``"w"`` or ``"wb"``) through :func:`atomic_path`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        if mode == "wb":
            with open(tmp, "wb") as f:
                yield f
        else:
            with open(tmp, "w", encoding=encoding, newline=newline) as f:
                yield f


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", newline="") as f:
        f.write(text)
    return Path(path)


def read_json_object(path: str | os.PathLike[str], error: type[Exception]) -> dict[str, Any]:
    """The JSON object in ``path``; a file that cannot be read, is not JSON or holds something other than an
    object raises ``error`` naming the file and the problem."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as UTF-8 JSON (non-ASCII kept, a final newline) to ``path`` atomically."""
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    return atomic_write_text(path, text + "\n")
