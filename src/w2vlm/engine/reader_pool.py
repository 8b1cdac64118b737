"""Reading processes: the engine's reading stage (load, resample, voice activity detection, features) in other
processes, for calls with many inputs.

In threads, the reading workers share the interpreter's lock with the model and decoding stages, and spend
~30 % more CPU per audio second than alone; in processes they are free of it (the engine's ceiling on 2 CPUs,
one engine with its processes warm: 1.12-1.4x; ``bench/engine.py``). A :class:`ReaderPool` belongs to one engine
and lives as long as it: a fork server (:mod:`w2vlm.engine.reader_worker`, started with ``python -m``, not
:mod:`multiprocessing`, whose children import the caller's main script again) that does the imports once, and up
to ``size`` reading processes forked from it on first need, each with the model's
:class:`~w2vlm.engine.model_runner.Preparer`. A reading thread borrows one process per input and gets the input's
units back one by one as they are made (a socket's buffer holds about one, so a process runs at most one unit
ahead of the queue it feeds). A process that dies (a library crash on a malformed file) fails only the input it
was reading, with a :class:`ReaderDied` naming it, and a new one takes its place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.engine.config import EngineConfig
from w2vlm.engine.inputs import InputInfo
from w2vlm.engine.model_runner import Prepared, Preparer
from w2vlm.errors import W2vlmError

logger = logging.getLogger("w2vlm.engine")

#: How long a stopped input may take to end in its process before the process is killed.
STOP_WAIT_S = 5.0
#: How long the fork server may take to answer a request for a new process before it is taken for hung.
FORK_WAIT_S = 10.0
#: Fork servers one pool starts at most (a server that ends is replaced, a few times).
MAX_SERVER_STARTS = 3
_POLL_S = 0.1


class ReaderDied(W2vlmError, RuntimeError):
    """A reading process ended while it read an input."""


def portable(item: Any) -> bool:
    """Whether ``item`` can be read in another process (a path, URL, bytes, an array or a dict of them; not a
    file object, which stays with the caller)."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray, np.ndarray)):
        return True
    if isinstance(item, dict):
        return all(isinstance(v, (str, bytes, int, float, np.ndarray, type(None))) for v in item.values())
    return False


class _Process:
    """One reading process (a child of the fork server ``server_pid``) and the engine's end of its socket. Its
    death shows as the socket closing; it is signalled only while it is still the server's child (the server lets
    the system reap its processes, so a dead one's pid can be another process's), and only from the process that
    started the pool (a process forked from the engine's has copies of these objects)."""

    def __init__(self, pid: int, conn: Connection, server_pid: int) -> None:
        self.pid = pid
        self.conn = conn
        self.server_pid = server_pid
        self.owner = os.getpid()
        self.tasks = 0

    def usable(self) -> bool:
        """Whether an idle process can take an input: its socket is open and quiet (an idle socket with something
        to read has been closed by the process's end, or is out of step)."""
        try:
            return not self.conn.closed and not self.conn.poll(0)
        except (EOFError, OSError):
            return False

    def ours(self) -> bool:
        """Whether ``pid`` is still this pool's reading process (Linux: a child of the fork server)."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            return False
        return fields[0] != b"Z" and int(fields[1]) == self.server_pid

    def died(self, name: str) -> ReaderDied:
        return ReaderDied(f"{name}: the reading process (pid {self.pid}) ended while it read this input")

    def kill(self) -> None:
        """Close the socket (the process ends when it sees that) and kill the process if it is still there."""
        if os.getpid() != self.owner:
            return
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.ours():
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)

    def units(
        self, item: Any, name: str, config: EngineConfig, allow_urls: bool, info: InputInfo, cancel: threading.Event
    ) -> Iterator[tuple[int, int, int, bool, float | None, Prepared]]:
        """One input's ``(start, samples, right context, is_last, speech probability, model input)`` units, read in
        this process; ``info`` filled in at the end. Raises the input's error; when ``cancel`` is set, or the
        caller stops early, the process is told to stop and its last messages are read (killed if they do not
        come within :data:`STOP_WAIT_S`). What the process logs is logged here, by the same loggers."""
        import torch

        self.tasks += 1
        task = self.tasks
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        level = logging.getLogger("w2vlm").getEffectiveLevel()
        ended = False
        try:
            self.conn.send(("read", task, item, name, config, allow_urls, level))
            while True:
                if cancel.is_set():
                    return
                message = self._next(name)
                if message is None:
                    continue
                if message[0] == "log":
                    _, _, logger_name, levelno, text = message
                    logging.getLogger(logger_name).log(levelno, "%s", text)
                    continue
                if message[0] == "unit":
                    _, _, start, samples, right, last, prob, values, is_features, valid = message
                    prepared = Prepared(torch.from_numpy(values), samples, is_features, valid)
                    yield start, samples, right, last, prob, prepared
                    continue
                ended = True
                _, _, info.samples, info.segmented, info.vad_seconds, info.vad_cpu_seconds, error = message
                if error is not None:
                    raise pickle.loads(error)
                return
        except OSError as exc:  # the request could not be sent: the process is gone
            raise self.died(name) from exc
        finally:
            if not ended:
                self._stop(task)

    def _next(self, name: str) -> Any:
        """The next message, or None when none came within a poll interval; raises :class:`ReaderDied` when the
        process's socket has closed."""
        try:
            return self.conn.recv() if self.conn.poll(_POLL_S) else None
        except (EOFError, OSError) as exc:
            raise self.died(name) from exc

    def _stop(self, task: int) -> None:
        """Stop input ``task`` and read what it still sends up to its end; kill the process if that takes longer
        than :data:`STOP_WAIT_S` or it cannot be told."""
        deadline = time.monotonic() + STOP_WAIT_S
        try:
            self.conn.send(("stop", task))
            while time.monotonic() < deadline:
                if self.conn.poll(_POLL_S):
                    message = self.conn.recv()
                    if message[0] == "end" and message[1] == task:
                        return
        except (EOFError, OSError):
            pass
        self.kill()


def _child_path() -> str | None:
    """The folder to put first on a reading process's path so that it imports this w2vlm: the one that holds
    w2vlm/ when that is not a folder the interpreter searches anyway (a source checkout, not site-packages, whose
    other packages must not come before the standard library)."""
    import site
    import sysconfig

    root = Path(__file__).resolve().parents[2]
    searched = {*site.getsitepackages(), site.getusersitepackages(), *sysconfig.get_paths().values()}
    return None if any(Path(p).resolve() == root for p in searched if p and Path(p).exists()) else str(root)


class ForkServer:
    """The process the reading processes are forked from (:mod:`w2vlm.engine.reader_worker`). It starts its
    imports at once; :meth:`configure` sends it the set-up, after which it warms up and becomes :meth:`ready`.
    Starting it before a model is loaded overlaps its start-up with the loading. One that cannot be started (a
    system other than Linux, no interpreter to run: an embedded Python) logs a warning and is never ready, so that
    its callers read in threads."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self._ready = False
        self._failed = False
        self.popen: subprocess.Popen | None = None
        ends: list[Any] = []
        try:
            if not (sys.platform == "linux" and hasattr(socket, "send_fds")):
                raise OSError(f"reading processes need Linux (fork and descriptor passing); this is {sys.platform}")
            control, theirs = socket.socketpair()
            ends.append(control)
            self.control = control
            self.messages = Connection(os.dup(control.fileno()))
            ends.append(self.messages)
            env = dict(os.environ)
            extra = _child_path()
            if extra is not None:
                env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
            env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", TRANSFORMERS_VERBOSITY="error")
            try:
                self.popen = subprocess.Popen(
                    [sys.executable, "-m", "w2vlm.engine.reader_worker", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,  # the terminal's Ctrl-C goes to the engine's process, which stops this
                )
            finally:
                theirs.close()
        except (OSError, ValueError) as exc:
            self._failed = True
            logger.warning("reading in the engine's threads: its reading processes could not be started (%s)", exc)
        self._finalizer = weakref.finalize(self, _shut, self.owner, self.popen, tuple(ends))

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def configure(self, setup: dict[str, Any]) -> None:
        """Send the set-up: ``{"preparer", "sampling_rate", "ratio", "max_segment_s"}``."""
        if self._failed:
            return
        try:
            self.messages.send(setup)
        except OSError:
            self._failed = True

    def ready(self) -> bool:
        """Whether the server has done its set-up (never, once it has failed)."""
        if not self._ready and not self._failed:
            try:
                if self.messages.poll():  # its answer, even when it has ended since
                    answer = self.messages.recv()
                    self._ready = answer[0] == "ready"
                    if not self._ready:
                        self._failed = True
                        logger.warning("reading in the engine's threads: its reading processes failed (%s)", answer[1])
            except (EOFError, OSError):
                self._failed = True
        return self._ready and self.running()

    def ended(self) -> bool:
        """Whether the server was ready once and is gone now (a new one may take its place)."""
        return self._ready and not self.running()

    def fork(self) -> _Process:
        """A new reading process (the server must be :meth:`ready`); raises OSError when the server is gone or does
        not answer within :data:`FORK_WAIT_S` (it is then killed)."""
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self.control, [b"f"], [theirs.fileno()])
        finally:
            theirs.close()
        try:
            if not self.messages.poll(FORK_WAIT_S):
                self.close()
                raise OSError(f"the reading processes' fork server did not answer within {FORK_WAIT_S:g} s")
            pid = self.messages.recv()
        except EOFError as exc:
            raise OSError("the reading processes' fork server ended") from exc
        assert self.popen is not None
        return _Process(int(pid), Connection(ours.detach()), self.popen.pid)

    def close(self) -> None:
        self._finalizer()


class ReaderPool:
    """Up to ``size`` reading processes for one engine (see the module docstring), forked from ``server`` (a new
    :class:`ForkServer` when None; one that ends is replaced, up to :data:`MAX_SERVER_STARTS` servers in all).
    Until the server is ready (its start-up takes a few seconds) :meth:`borrow` gives None and the engine reads in
    its threads, so that short calls do not wait for it. In a process forked from the one that made it, the pool
    does nothing (that process reads in its threads)."""

    def __init__(
        self,
        preparer: Preparer,
        sampling_rate: int,
        ratio: int,
        max_segment_s: float | None,
        size: int,
        server: ForkServer | None = None,
    ) -> None:
        self.size = size
        self._setup = {
            "preparer": preparer,
            "sampling_rate": sampling_rate,
            "ratio": ratio,
            "max_segment_s": max_segment_s,
        }
        self._idle: list[_Process] = []
        self._all: list[_Process] = []
        self._lock = threading.Lock()
        self._closed = False
        self._owner = os.getpid()
        self.server = server or ForkServer()
        self.server.configure(self._setup)
        self._servers = 1
        self._finalizer = weakref.finalize(self, _kill_all, self._all)

    @property
    def server_pid(self) -> int | None:
        """The fork server's process id (None when it could not be started)."""
        return self.server.pid

    @property
    def started(self) -> int:
        """Reading processes running now."""
        with self._lock:
            return len(self._all)

    def ready(self) -> bool:
        """Whether reading processes can be had now."""
        with self._lock:
            return self._usable()

    def _usable(self) -> bool:
        if self._closed or os.getpid() != self._owner:
            return False
        if self.server.ended() and self._servers < MAX_SERVER_STARTS:
            logger.warning(
                "the engine's reading processes' fork server ended (pid %s); starting another", self.server.pid
            )
            self.server.close()
            self.server = ForkServer()
            self.server.configure(self._setup)
            self._servers += 1
        return self.server.ready()

    def borrow(self) -> _Process | None:
        """An idle reading process (forked if fewer than ``size`` run), or None when all are busy, the server is
        not ready, or the pool is closed."""
        with self._lock:
            if self._closed or os.getpid() != self._owner:
                return None
            while self._idle:
                process = self._idle.pop()
                if process.usable():
                    return process
                self._drop(process)  # it ended while idle
            if len(self._all) >= self.size or not self._usable():
                return None
            try:
                process = self.server.fork()
            except OSError as exc:
                logger.warning("reading in the engine's threads: %s", exc)
                return None
            self._all.append(process)
            return process

    def give_back(self, process: _Process) -> None:
        with self._lock:
            if self._closed or not process.usable():
                self._drop(process)
                return
            self._idle.append(process)

    def _drop(self, process: _Process) -> None:
        if process in self._all:
            self._all.remove(process)
        process.kill()

    def close(self) -> None:
        """Stop the fork server and every idle reading process (one that is reading is stopped when its reader
        gives it back)."""
        if os.getpid() != self._owner:
            return
        with self._lock:
            self._closed = True
            for process in list(self._idle):
                self._drop(process)
            self._idle.clear()
        self.server.close()


def _kill_all(processes: list[_Process]) -> None:
    for process in list(processes):
        process.kill()  # nothing in a process forked from the owner


def _shut(owner: int, server: subprocess.Popen | None, ends: tuple[Any, ...]) -> None:
    if os.getpid() != owner:
        return
    for end in ends:
        with contextlib.suppress(OSError):
            end.close()
    if server is not None and server.poll() is None:
        server.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=5)


__all__ = ["FORK_WAIT_S", "MAX_SERVER_STARTS", "STOP_WAIT_S", "ForkServer", "ReaderDied", "ReaderPool", "portable"]
