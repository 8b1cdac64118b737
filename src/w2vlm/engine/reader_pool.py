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
    """One reading process (a child of the fork server) and the engine's end of its socket."""

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        self.tasks = 0

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def died(self, name: str) -> ReaderDied:
        return ReaderDied(f"{name}: the reading process (pid {self.pid}) ended while it read this input")

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)

    def units(
        self, item: Any, name: str, config: EngineConfig, allow_urls: bool, info: InputInfo, cancel: threading.Event
    ) -> Iterator[tuple[int, int, int, bool, float | None, Prepared]]:
        """One input's ``(start, samples, right context, is_last, speech probability, model input)`` units, read in
        this process; ``info`` filled in at the end. Raises the input's error; when ``cancel`` is set, or the
        caller stops early, the process is told to stop and its last messages are read (killed if they do not
        come within :data:`STOP_WAIT_S`)."""
        import torch

        self.tasks += 1
        task = self.tasks
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        ended = False
        try:
            self.conn.send(("read", task, item, name, config, allow_urls))
            while True:
                if cancel.is_set():
                    return
                message = self._next(name)
                if message is None:
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
        """The next message, or None when none came within a poll interval; raises :class:`ReaderDied`."""
        try:
            if not self.conn.poll(_POLL_S):
                if not self.alive():
                    raise self.died(name)
                return None
            return self.conn.recv()
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
                elif not self.alive():
                    break
        except (EOFError, OSError):
            pass
        self.kill()


class ForkServer:
    """The process the reading processes are forked from (:mod:`w2vlm.engine.reader_worker`). It starts its
    imports at once; :meth:`configure` sends it the set-up, after which it warms up and becomes :meth:`ready`.
    Starting it before a model is loaded overlaps its start-up with the loading."""

    def __init__(self) -> None:
        control, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])  # the folder that holds w2vlm/
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
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
        self.control = control
        self.messages = Connection(os.dup(control.fileno()))
        self._ready = False
        self._failed = False
        self._finalizer = weakref.finalize(self, _shut, self.popen, (control, self.messages))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def configure(self, setup: dict[str, Any]) -> None:
        """Send the set-up: ``{"preparer", "sampling_rate", "ratio", "max_segment_s"}``."""
        try:
            self.messages.send(setup)
        except OSError:
            self._failed = True

    def ready(self) -> bool:
        """Whether the server has done its set-up (never, once it has failed)."""
        if not self._ready and not self._failed and self.popen.poll() is None:
            try:
                if self.messages.poll():
                    answer = self.messages.recv()
                    self._ready = answer[0] == "ready"
                    if not self._ready:
                        self._failed = True
                        logger.warning("reading in the engine's threads: its reading processes failed (%s)", answer[1])
            except (EOFError, OSError):
                self._failed = True
        return self._ready and self.popen.poll() is None

    def fork(self) -> _Process:
        """A new reading process (the server must be :meth:`ready`); raises OSError when the server is gone."""
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self.control, [b"f"], [theirs.fileno()])
        finally:
            theirs.close()
        try:
            pid = self.messages.recv()
        except EOFError as exc:
            raise OSError("the reading processes' fork server ended") from exc
        return _Process(int(pid), Connection(ours.detach()))

    def close(self) -> None:
        self._finalizer()


class ReaderPool:
    """Up to ``size`` reading processes for one engine (see the module docstring), forked from ``server`` (a new
    :class:`ForkServer` when None). Until the server is ready (its start-up takes a few seconds) :meth:`borrow`
    gives None and the engine reads in its threads, so that short calls do not wait for it."""

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
        self._idle: list[_Process] = []
        self._all: list[_Process] = []
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self.server = server or ForkServer()
        self.server.configure(
            {"preparer": preparer, "sampling_rate": sampling_rate, "ratio": ratio, "max_segment_s": max_segment_s}
        )
        self._finalizer = weakref.finalize(self, _kill_all, self._all)

    @property
    def server_pid(self) -> int:
        """The fork server's process id."""
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
        # a process forked from this one (multiprocessing's fork) shares the sockets: it reads in its threads
        return not self._closed and os.getpid() == self._pid and self.server.ready()

    def borrow(self) -> _Process | None:
        """An idle reading process (forked if fewer than ``size`` run), or None when all are busy, the server is
        not ready, or the pool is closed."""
        with self._lock:
            if self._closed or os.getpid() != self._pid:
                return None
            if self._idle:
                return self._idle.pop()
            if len(self._all) >= self.size or not self._usable():
                return None
            try:
                process = self.server.fork()
            except OSError:
                return None
            self._all.append(process)
            return process

    def give_back(self, process: _Process) -> None:
        with self._lock:
            if self._closed or process.conn.closed or not process.alive():
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
        with self._lock:
            self._closed = True
            for process in list(self._idle):
                self._drop(process)
            self._idle.clear()
        self.server.close()


def _kill_all(processes: list[_Process]) -> None:
    for process in list(processes):
        process.kill()


def _shut(server: subprocess.Popen, ends: tuple[Any, ...]) -> None:
    for end in ends:
        with contextlib.suppress(OSError):
            end.close()
    if server.poll() is None:
        server.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=5)


__all__ = ["ForkServer", "ReaderDied", "ReaderPool", "portable"]
