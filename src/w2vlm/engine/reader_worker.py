"""The engine's reading processes (:mod:`w2vlm.engine.reader_pool` starts them): each reads inputs into the
model's units, as the engine's reading threads do, and sends them back one by one.

``python -m w2vlm.engine.reader_worker FD`` starts a fork server on its end FD of a socket pair. It imports what
reading needs, then waits for its set-up (``{"preparer", "sampling_rate", "ratio", "max_segment_s"}``: the
model's :class:`~w2vlm.engine.model_runner.Preparer` and the :class:`~w2vlm.engine.inputs.InputReader`'s
arguments), loads the voice activity detector and runs each part once (~3 s of CPU in all), says ``("ready",)``
(or ``("failed", message)``), then forks one reading process per request, so that a pool of several costs one
start-up and each process starts warm. A request is a socket end, passed with ``SCM_RIGHTS``; the server answers
with the new process's pid. It ends when its socket closes; its processes end when theirs do. The server and its
processes ignore the terminal's Ctrl-C (their parent stops them).

A reading process's messages (pickled, over its socket):

- in: ``("read", task, item, name, engine config, allow_urls, log level)``; out: ``("unit", task, start, samples,
  right context, is_last, speech probability, values (numpy), is_features, valid)`` per unit, ``("log", task,
  logger name, level, message)`` for what reading logs at that level or above, then ``("end", task, samples,
  segmented, VAD seconds, VAD CPU seconds, error)``, where error is None or a pickled exception;
- in: ``("stop", task)``: stop reading that input (its ``end`` follows at once); a stop for an input that has
  already ended is ignored.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from w2vlm.errors import W2vlmError


def portable_error(exc: BaseException) -> bytes:
    """``exc`` pickled so that the other side can load it: as it is when it survives a round trip, else as a
    :class:`~w2vlm.errors.W2vlmError` with its type and message."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(W2vlmError(f"{type(exc).__name__}: {exc}"))


def _stopped(conn: Connection, task: int) -> bool:
    """Whether a stop for ``task`` has come (other messages cannot come while an input is read)."""
    while conn.poll():
        message = conn.recv()
        if message[0] == "stop" and message[1] == task:
            return True
    return False


class _Forward(logging.Handler):
    """Log records of the input being read, sent to the engine's process (``("log", task, logger, level,
    message)``), which logs them with its own handlers."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self.task: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.task is None:
            return
        try:
            self.conn.send(("log", self.task, record.name, record.levelno, record.getMessage()))
        except Exception:
            self.handleError(record)


def serve(conn: Connection, preparer: Any, reader: Any) -> None:
    """A reading process: answer read requests on ``conn`` until it closes."""
    from w2vlm.engine.inputs import InputInfo

    forward = _Forward(conn)
    root = logging.getLogger()
    root.handlers[:] = [forward]
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "read":
            continue  # a late stop for an input that had already ended
        _, task, item, name, config, allow_urls, level = message
        root.setLevel(level)
        forward.task = task
        info = InputInfo()
        error = None
        try:
            for start, audio, right, last, prob in reader.units(item, name, config, allow_urls, info):
                p = preparer(audio)
                conn.send(
                    ("unit", task, start, audio.size, right, last, prob, p.values.numpy(), p.is_features, p.valid)
                )
                if _stopped(conn, task):
                    break
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception as exc:
            error = portable_error(exc)
        forward.task = None
        try:
            conn.send(("end", task, info.samples, info.segmented, info.vad_seconds, info.vad_cpu_seconds, error))
        except OSError:
            return


def _warm_imports() -> None:
    """What every reading process needs, imported once in the server (before its set-up comes: the engine can
    start the server while it loads the model)."""
    import torch

    import w2vlm.audio
    import w2vlm.engine.inputs
    import w2vlm.engine.model_runner
    import w2vlm.engine.silero  # noqa: F401

    torch.set_num_threads(1)  # sets the count only: no thread is started before the forks


def _warm(setup: dict[str, Any]) -> tuple[Any, Any]:
    """The set-up's preparer and a reader, with the voice activity detector loaded (when installed) and each run
    once, so that the processes forked after this share it all and start warm."""
    import numpy as np

    from w2vlm.engine import silero
    from w2vlm.engine.inputs import InputReader

    preparer = setup["preparer"]
    reader = InputReader(setup["sampling_rate"], setup["ratio"], setup["max_segment_s"])
    noise = np.random.default_rng(0).normal(0.0, 0.1, setup["sampling_rate"]).astype(np.float32)
    preparer(noise)
    if silero.available():
        reader.vad_model().probs(noise[: 16 * silero.RATES[silero.VAD_RATE][0]])
    return preparer, reader


def fork_server(control: socket.socket) -> None:
    """Fork a reading process for each socket end that comes on ``control``; answer with its pid."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # ended processes are reaped by the system
    messages = Connection(os.dup(control.fileno()))
    try:
        _warm_imports()
        preparer, reader = _warm(messages.recv())
    except EOFError:
        return
    except Exception as exc:
        messages.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    messages.send(("ready",))
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            return
        if not fds:
            return  # the pool closed its end
        pid = os.fork()
        if pid == 0:  # the reading process
            control.close()
            messages.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 0
            try:
                serve(Connection(fds[0]), preparer, reader)
            except (EOFError, OSError):
                pass
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(fds[0])
        try:
            messages.send(pid)
        except OSError:
            return


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=int(argv[0]))
    try:
        fork_server(control)
    finally:
        control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
