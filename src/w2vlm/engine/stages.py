"""The stages of one :meth:`~w2vlm.engine.engine.Engine.transcribe` call: its queues, threads and per-input
state (feeder, reading workers, model thread, assembler, decoder thread; see :mod:`w2vlm.engine.engine`)."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from w2vlm.engine.config import DecodeConfig, EngineConfig
from w2vlm.engine.decoding import Incremental, failed
from w2vlm.engine.inputs import InputInfo
from w2vlm.engine.reader_pool import portable
from w2vlm.engine.windows import Stitcher, Window, join
from w2vlm.memory import silence_leak_report

if TYPE_CHECKING:
    from w2vlm.engine.engine import Engine

logger = logging.getLogger("w2vlm.engine")

_STOP = object()
_POLL_S = 0.1
#: At interpreter exit, how long the calls still running get to stop (see :func:`_stop_running_calls`).
EXIT_WAIT_S = 10.0
_running: weakref.WeakSet[Run] = weakref.WeakSet()
_running_lock = threading.Lock()


@atexit.register
def _stop_running_calls() -> None:
    """Stop the calls still running when the interpreter exits (a script that ends while a call runs in a daemon
    thread), and wait for their stages up to :data:`EXIT_WAIT_S`: a stage thread still inside torch or the native
    decoder when the interpreter finalises is ended by force as it takes the interpreter's lock back, and C++
    turns that into an abort ("terminate called without an active exception", exit code 134)."""
    with _running_lock:
        runs = [run for run in _running if any(t.is_alive() for t in run.threads)]
    if runs:  # whoever ran them (a daemon thread) keeps the engine alive through the exit
        silence_leak_report()
    for run in runs:
        run.cancel.set()
    deadline = time.monotonic() + EXIT_WAIT_S
    for run in runs:
        for thread in run.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def set_thread_torch_threads(count: int) -> None:
    """Run this thread's torch operators on ``count`` threads (OpenMP's count is per thread).

    torch sets a thread's count from a process-wide one on the thread's first parallel operation, so that first
    step is taken here, before this thread's own count is set: otherwise a thread took the count another thread set
    after it (the reading workers took the model stage's, and ran the VAD and features on two threads each next to
    the model's two: in about half of the runs 4-5x the context switches and a quarter of the speed)."""
    import torch

    torch.get_num_threads()  # the thread's first-use set-up (from the process-wide count), done now
    torch.set_num_threads(count)


class _Cancelled(Exception):
    pass


class Run:
    """The queues, threads and per-input state of one :meth:`Engine.transcribe` call."""

    def __init__(
        self,
        engine: Engine,
        items: Sequence[Any],
        names: list[str],
        decode: DecodeConfig | None,
        config: EngineConfig,
        urls: bool,
    ) -> None:
        self.engine = engine
        self.config = config
        self.items = items
        self.names = names
        self.decode = decode
        self.allow_urls = urls
        cfg = config
        self.cancel = threading.Event()
        self.admit = threading.Semaphore(cfg.prefetch)
        # windows waiting for the model: enough for two full batches (of ~10 s windows), so that batches fill up
        # when reading is fast; with a batch size, two batches of that size
        per_batch = cfg.batch_size or max(1, engine.batch_samples(cfg) // (10 * engine.sampling_rate))
        self.windows: queue.Queue = queue.Queue(maxsize=engine.workers + 2 * per_batch)
        self.outputs: queue.Queue = queue.Queue(maxsize=8)
        self.to_decode: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.timings = engine.timings
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        #: the engine's reading processes, when this call reads its inputs in them (a pool whose processes cannot
        #: be started says so once and gives none: the call reads in its threads)
        self.readers = engine.reader_pool() if engine.reads_in_processes(len(items), config) else None

    # ------------------------------------------------------------------------------------ plumbing

    def put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self.cancel.is_set():
                raise _Cancelled
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue, seconds: float | None = None) -> Any:
        """The next item of ``q``; with ``seconds``, raises :class:`queue.Empty` when none comes within them."""
        deadline = None if seconds is None else time.perf_counter() + seconds
        while True:
            if self.cancel.is_set():
                raise _Cancelled
            wait = _POLL_S
            if deadline is not None:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise queue.Empty
                wait = min(left, _POLL_S)
            try:
                return q.get(timeout=wait)
            except queue.Empty:
                continue

    def set_torch_threads(self, count: int) -> None:
        """This thread's torch threads (see :func:`set_thread_torch_threads`), when the config asks for them on a
        CPU."""
        if self.config.torch_threads and not self.engine.runner.on_cuda:
            set_thread_torch_threads(count)

    def add_time(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def add_read_time(self, info: InputInfo, started: float) -> None:
        """The times of reading one input (from ``started``): ``read`` (wall clock, the VAD's excluded), and where the
        VAD ran, ``vad`` (wall clock) and ``vad_cpu`` (its thread's CPU time)."""
        self.add_time("read", time.perf_counter() - started - info.vad_seconds)
        if info.segmented:
            self.add_time("vad", info.vad_seconds)
            self.add_time("vad_cpu", info.vad_cpu_seconds)

    def start(self) -> list[threading.Thread]:
        self.threads = threads = [
            threading.Thread(target=self.guard, args=(self.feed,), name="w2vlm-feed", daemon=True),
            threading.Thread(target=self.guard, args=(self.model_loop,), name="w2vlm-model", daemon=True),
            threading.Thread(target=self.guard, args=(self.assemble,), name="w2vlm-assemble", daemon=True),
            threading.Thread(target=self.guard, args=(self.decode_loop,), name="w2vlm-decode", daemon=True),
        ]
        with _running_lock:
            _running.add(self)
        for t in threads:
            t.start()
        return threads

    def guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except _Cancelled:
            pass
        except BaseException as exc:  # a bug in a stage: stop the call instead of hanging it
            logger.exception("engine stage failed")
            self.results.put(("fatal", exc))
            self.cancel.set()

    # --------------------------------------------------------------------------------------- stages

    def feed(self) -> None:
        """Admit inputs (at most ``prefetch`` ahead of the consumer) to the reading workers."""
        engine = self.engine
        # each reading worker runs its small operators (VAD, features) on one thread
        with ThreadPoolExecutor(
            max_workers=engine.workers,
            thread_name_prefix="w2vlm-read",
            initializer=self.set_torch_threads,
            initargs=(1,),
        ) as pool:
            futures = []
            for i in range(len(self.items)):
                while not self.admit.acquire(timeout=_POLL_S):
                    if self.cancel.is_set():
                        raise _Cancelled
                futures.append(pool.submit(self.read, i))
            for f in futures:
                f.result()
        self.put(self.windows, _STOP)

    def read(self, i: int) -> None:
        """Load input ``i``, cut it into windows, prepare their model input and queue them (in one of the
        engine's reading processes when this call uses them and one is free, else in this thread)."""
        if self.cancel.is_set():
            return
        readers = self.readers
        process = readers.borrow() if readers is not None and portable(self.items[i]) else None
        try:
            self.read_units(i, process)
        finally:
            if process is not None:
                readers.give_back(process)

    def units(self, i: int, process: Any, info: InputInfo) -> Iterator[tuple[int, int, int, bool, float | None, Any]]:
        """Input ``i``'s ``(start, samples, right context, is_last, speech probability, model input)`` units,
        read in ``process`` or (None) in this thread."""
        item, name = self.items[i], self.names[i]
        if process is not None:
            yield from process.units(item, name, self.config, self.allow_urls, info, self.cancel)
            return
        prepare = self.engine.runner.prepare
        for start, audio, right, last, prob in self.engine.inputs.units(item, name, self.config, self.allow_urls, info):
            yield start, audio.size, right, last, prob, prepare(audio)

    def read_units(self, i: int, process: Any) -> None:
        count = 0
        info = InputInfo()
        t0 = time.perf_counter()
        units = self.units(i, process, info)
        try:
            for start, samples, right, last, speech_prob, prepared in units:
                self.put(self.windows, Window(i, count, start, samples, right, last, prepared, speech_prob))
                count += 1
        except _Cancelled:
            return
        except Exception as exc:
            self.add_read_time(info, t0)
            self.put(self.outputs, ("error", i, exc))
            return
        finally:
            units.close()  # a reading process stops at once when this input is given up
        self.add_read_time(info, t0)
        rate = self.engine.sampling_rate
        self.put(self.outputs, ("count", i, count, info.samples / rate, info.segmented))

    def model_loop(self) -> None:
        """Sort what is waiting by length, cut it into batches within the budget, run them."""
        engine = self.engine
        runner = engine.runner
        if self.config.torch_threads:
            self.set_torch_threads(self.config.torch_threads)
        full = engine.batch_samples(self.config)
        size = self.config.batch_size
        done = False
        while not done:
            first = self.get(self.windows)
            if first is _STOP:
                break
            pool: list[Window] = [first]
            held = first.samples
            deadline = time.perf_counter() + self.config.batch_wait_s
            # what is waiting, up to two batches' worth; while less than one full batch is here and inputs are
            # still being read, wait (up to batch_wait_s) for more rather than run a batch of one or two windows
            while held < 2 * full and (size is None or len(pool) < 2 * size):
                try:
                    nxt = self.windows.get_nowait()
                except queue.Empty:
                    left = deadline - time.perf_counter()
                    if left <= 0 or held >= full or (size is not None and len(pool) >= size):
                        break
                    try:
                        nxt = self.get(self.windows, left)
                    except queue.Empty:
                        break
                if nxt is _STOP:
                    done = True
                    break
                pool.append(nxt)
                held += nxt.samples
            pool.sort(key=lambda w: w.samples, reverse=True)
            for batch in engine.batches(pool, self.config):
                t0 = time.perf_counter()
                try:
                    pending = runner.forward([w.prepared for w in batch])
                    self.put(self.outputs, ("out", batch, pending))
                except _Cancelled:
                    raise
                except Exception as exc:
                    if len(batch) == 1:
                        self.put(self.outputs, ("error", batch[0].item, exc))
                    else:  # alone, to isolate the window that fails
                        for w in batch:
                            try:
                                self.put(self.outputs, ("out", [w], runner.forward([w.prepared])))
                            except _Cancelled:
                                raise
                            except Exception as exc1:
                                self.put(self.outputs, ("error", w.item, exc1))
                for w in batch:
                    w.prepared = None
                self.add_time("model", time.perf_counter() - t0)
        self.put(self.outputs, _STOP)

    def assemble(self) -> None:
        """Wait for each batch's log-probabilities; hand each input's frames on in order: whole inputs at once,
        windowed ones piece by piece as their earlier windows are in (decoded incrementally)."""
        runner = self.engine.runner
        stitchers: dict[int, Stitcher] = {}
        seconds: dict[int, float] = {}
        failed: set[int] = set()

        def progress(i: int, st: Stitcher) -> None:
            if st.count == 1:  # a lone window: decoded whole (with others), once its duration is known
                if i in seconds and 0 in st.parts:
                    self.to_decode.put(("whole", i, join(st.ready(), self.engine.vocab), seconds.pop(i)))
                    stitchers.pop(i)
                return
            for piece in st.ready():
                self.to_decode.put(("piece", i, piece, None))
            if st.complete and i in seconds:
                self.to_decode.put(("end", i, None, seconds.pop(i)))
                stitchers.pop(i)

        while True:
            message = self.get(self.outputs)
            if message is _STOP:
                break
            kind = message[0]
            if kind == "error":
                _, i, error = message
                if i not in failed:
                    failed.add(i)
                    stitchers.pop(i, None)
                    seconds.pop(i, None)
                    self.to_decode.put(("error", i, error, 0.0))
                continue
            if kind == "count":
                _, i, count, secs, segmented = message
                if i in failed:
                    continue
                if segmented:
                    self.to_decode.put(("segments", i, count, secs))
                    continue
                st = stitchers.setdefault(i, Stitcher(runner.ratio))
                st.count, seconds[i] = count, secs
                progress(i, st)
                continue
            _, batch, pending = message
            t0 = time.perf_counter()
            outs = pending.result()
            self.add_time("copy", time.perf_counter() - t0)
            touched = []
            for w, lp in zip(batch, outs):
                if w.item in failed:
                    continue
                if w.speech_prob is not None:  # a speech segment: decoded on its own
                    offset = w.start / runner.sampling_rate
                    self.to_decode.put(("segment", w.item, (w.index, offset, w.speech_prob, lp), None))
                    continue
                st = stitchers.setdefault(w.item, Stitcher(runner.ratio))
                if w.is_last:
                    st.count = w.index + 1
                st.add(w, lp)
                touched.append(w.item)
            for i in dict.fromkeys(touched):
                progress(i, stitchers[i])
        self.to_decode.put(_STOP)

    def decode_loop(self) -> None:
        """Decode whole inputs that are ready together, on the decoder's native threads; feed windowed inputs
        to incremental decoders as their frames arrive."""
        engine = self.engine
        decoding = engine.decoding
        streams: dict[int, Incremental] = {}
        # per input: its parts by index (decoded, or log-probabilities when no decoding is wanted), and how
        # many it has and its seconds once known (one part for a whole or windowed input, its speech segments
        # for one cut by the VAD)
        parts: dict[int, dict[int, Any]] = {}
        expected: dict[int, tuple[int, float]] = {}
        stop = False
        while not stop:
            ready = [self.get(self.to_decode)]
            while True:
                try:
                    ready.append(self.to_decode.get_nowait())
                except queue.Empty:
                    break
            if ready[-1] is _STOP:
                ready.pop()
                stop = True
            t0 = time.perf_counter()
            todo: list[tuple[int, int, tuple[float, float | None, np.ndarray]]] = []  # (input, index, part)
            touched: list[int] = []
            for kind, i, payload, secs in ready:
                if kind == "whole":
                    todo.append((i, 0, (0.0, None, payload)))
                    expected[i] = (1, secs)
                elif kind == "segment":
                    index, offset, speech_prob, lp = payload
                    todo.append((i, index, (offset, speech_prob, lp)))
                elif kind == "segments":
                    expected[i] = (payload, secs)
                    touched.append(i)
                elif kind == "error":
                    streams.pop(i, None)
                    parts.pop(i, None)
                    expected.pop(i, None)
                    self.finish(i, payload, secs)
                elif kind == "piece":
                    if i not in streams:
                        streams[i] = Incremental(decoding, self.decode, self.names[i], engine.vocab)
                    streams[i].feed(payload)
                else:  # end
                    inc = streams.pop(i, None) or Incremental(decoding, self.decode, self.names[i], engine.vocab)
                    outcome = inc.finish()
                    if isinstance(outcome, BaseException):
                        self.finish(i, outcome, secs)
                        continue
                    parts[i] = {
                        0: (0.0, None, outcome) if self.decode is None else (outcome, 0.0, None, inc.evidence())
                    }
                    expected[i] = (1, secs)
                    touched.append(i)
            if todo:
                raw = [part for _, _, part in todo]
                decoded = (
                    raw
                    if self.decode is None
                    else decoding.decode_parts(
                        [self.names[i] for i, _, _ in todo], raw, self.decode, engine.decode_threads
                    )
                )
                for (i, index, _), part in zip(todo, decoded):
                    parts.setdefault(i, {})[index] = part
                    touched.append(i)
            for i in dict.fromkeys(touched):
                if i in expected and len(parts.get(i, ())) == expected[i][0]:
                    count, secs = expected.pop(i)
                    done = parts.pop(i, {})
                    got = [done[k] for k in range(count)]
                    outcome = got if self.decode is None else decoding.assemble(self.names[i], got, secs, self.decode)
                    self.finish(i, outcome, secs)
            self.add_time("decode", time.perf_counter() - t0)
        self.results.put(("end", None))

    def finish(self, i: int, outcome: Any, seconds: float) -> None:
        """Hand input ``i``'s outcome (a transcript, log-probabilities or an exception) to the consumer."""
        if self.decode is None:
            out = (None, seconds, outcome) if isinstance(outcome, BaseException) else (outcome, seconds, None)
            self.results.put(("done", i, out))
            return
        if isinstance(outcome, BaseException):
            model_name = self.engine.decoding.model_name if self.engine.decoding else None
            outcome = failed(self.names[i], outcome, model_name)
        outcome.duration = seconds
        self.results.put(("done", i, outcome))


__all__ = ["Run", "set_thread_torch_threads"]
