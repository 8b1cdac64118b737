"""The transcription engine: audio in, :class:`~w2vlm.results.Transcript` out, with every stage running at
the same time.

Stages, connected by bounded queues::

    feeder ─► reading workers (load + resample audio; speech segments from the voice activity detector, or
              windows; model input on a CPU device)
           ─► window queue ─► model thread (windows sorted by length, batches by a budget of padded samples,
              forward pass, log-softmax on the device, non-blocking copy back)
           ─► assembler (waits for copies, stitches each input's windows) ─► decoder thread (native beam search
              on the decoder's thread pool, or greedy; segments of many inputs together; each input's segments
              joined, non-speech left out) ─► results, yielded in input order

Memory is bounded by the queue depths and by ``prefetch`` (inputs admitted ahead of the oldest one not yet
yielded), not by the number of inputs. An input that cannot be read or decoded gets a transcript with its
``error`` set; the others go on. One :class:`Engine` (model + decoder) serves many calls, from many threads,
each with its own :class:`~w2vlm.engine.config.DecodeConfig`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from w2vlm.engine.config import (
    DEFAULT_BATCH_SECONDS_CPU,
    DEFAULT_BATCH_SECONDS_CUDA,
    ConfigError,
    DecodeConfig,
    EngineConfig,
    available_cpus,
    reads_in_processes,
)
from w2vlm.engine.decoding import TranscriptDecoder
from w2vlm.engine.inputs import InputInfo, InputReader
from w2vlm.engine.model_runner import ModelRunner
from w2vlm.engine.reader_pool import ForkServer, ReaderPool
from w2vlm.engine.stages import Run
from w2vlm.engine.windows import Stitcher, Window, join
from w2vlm.results import Segment, Transcript


class Engine:
    """A loaded model and decoder that transcribe many inputs at once (see the module docstring).

    ``decoder``: a :class:`~w2vlm.decoder.BeamSearchDecoderCTC` (a processor's ``decoder``); without one the
    engine gives log-probabilities only (:meth:`log_probs`).
    """

    def __init__(
        self,
        model: Any,
        feature_extractor: Any,
        decoder: Any = None,
        config: EngineConfig | None = None,
        *,
        model_name: str | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.runner = ModelRunner(model, feature_extractor)
        self.sampling_rate = self.runner.sampling_rate
        self.seconds_per_frame = self.runner.ratio / self.sampling_rate
        self.vocab = int(getattr(model.config, "vocab_size", 0) or 0)
        self.decoding = None if decoder is None else TranscriptDecoder(decoder, self.seconds_per_frame, model_name)
        cpus = available_cpus()
        cuda = self.runner.on_cuda
        self.workers = self.config.workers or max(1, min(8, cpus))
        self.decode_threads = self.config.decode_threads or (cpus if cuda else max(1, cpus - cpus // 2))
        #: seconds spent per stage (read, vad, model, copy, decode), summed over calls; stages overlap in time
        self.timings: dict[str, float] = {}
        # the longest speech segment the model was made for (its config's ``max_segment_s``), if it says
        hint = getattr(model.config, "max_segment_s", None)
        longest = float(hint) if isinstance(hint, (int, float)) and hint > 0 else None
        #: reads inputs into speech segments or windows
        self.inputs = InputReader(self.sampling_rate, self.runner.ratio, longest)
        self._readers: ReaderPool | None = None
        self._readers_lock = threading.Lock()

    def reads_in_processes(self, inputs: int, config: EngineConfig) -> bool:
        """Whether a call with ``inputs`` inputs under ``config`` reads them in the engine's reading processes
        (:func:`~w2vlm.engine.config.reads_in_processes`)."""
        return reads_in_processes(config.read_processes, inputs, self.runner.on_cuda)

    def reader_pool(self, server: ForkServer | None = None) -> ReaderPool:
        """The engine's reading processes (forked one by one as calls need them, from ``server`` when given: one
        started before the model was loaded; see :mod:`w2vlm.engine.reader_pool`)."""
        with self._readers_lock:
            if self._readers is None:
                self._readers = ReaderPool(
                    self.runner.preparer,
                    self.sampling_rate,
                    self.runner.ratio,
                    self.inputs.model_max_segment_s,
                    self.workers,
                    server,
                )
            elif server is not None and server is not self._readers.server:
                server.close()
            return self._readers

    def close(self) -> None:
        """Stop the engine's reading processes, if it started any (they also end with the engine's process)."""
        with self._readers_lock:
            if self._readers is not None:
                self._readers.close()
                self._readers = None

    def batch_samples(self, config: EngineConfig) -> int:
        """Padded samples per forward pass for ``config``."""
        cuda = self.runner.on_cuda
        seconds = config.batch_seconds or (DEFAULT_BATCH_SECONDS_CUDA if cuda else DEFAULT_BATCH_SECONDS_CPU)
        return int(seconds * self.sampling_rate)

    @property
    def model(self) -> Any:
        return self.runner.model

    # ------------------------------------------------------------------------------------------ inputs

    def batches(self, windows: list[Window], config: EngineConfig | None = None) -> Iterator[list[Window]]:
        """Consecutive windows (sorted longest first) grouped so that padded samples stay within the budget."""
        config = config or self.config
        limit = config.batch_size
        budget = self.batch_samples(config)
        batch: list[Window] = []
        for w in windows:
            if batch and (
                (len(batch) + 1) * batch[0].samples > budget
                or (limit is not None and len(batch) >= limit)
                or not self.runner.can_batch(batch[0].samples, w.samples)
            ):
                yield batch
                batch = []
            batch.append(w)
        if batch:
            yield batch

    # ---------------------------------------------------------------------------------------- transcribe

    def transcribe(
        self,
        inputs: Sequence[Any],
        decode: DecodeConfig | None = None,
        *,
        names: Sequence[str] | None = None,
        config: EngineConfig | None = None,
        allow_urls: bool = False,
    ) -> Iterator[Transcript]:
        """Transcripts of ``inputs`` (paths, bytes, arrays, ``{"array", "sampling_rate"}`` dicts, file
        objects), one per input in input order, each yielded as soon as it and those before it are done.
        A failed input's transcript has ``error`` set. ``config``: this call's windows and batches (default: the
        engine's)."""
        if self.decoding is None:
            raise ConfigError("this engine has no decoder: it gives log-probabilities only (log_probs())")
        decode = decode or DecodeConfig()
        if not decode.is_greedy:
            self.decoding.search(decode)  # bad hotwords or weights: raise now, for the whole call
        config = config or self.config
        if config.vad:
            self.inputs.vad_model()  # VAD asked for without the extra: raise now, for the whole call
        yield from self._run(inputs, decode, names, config, allow_urls)

    def log_probs(
        self,
        inputs: Sequence[Any],
        *,
        names: Sequence[str] | None = None,
        config: EngineConfig | None = None,
        allow_urls: bool = False,
    ) -> Iterator[tuple[np.ndarray | None, float, BaseException | None]]:
        """Per input, in input order: ``(log-probabilities (frames, vocab), audio seconds, None)``, or
        ``(None, 0.0, exception)`` for an input that failed (without voice activity detection: each input's
        frames are all there, in one matrix)."""
        for parts, seconds, error in self._run(
            inputs, None, names, (config or self.config).with_(vad=False), allow_urls
        ):
            yield (parts[0][2] if parts else None), seconds, error

    def segment_log_probs(
        self,
        inputs: Sequence[Any],
        *,
        names: Sequence[str] | None = None,
        config: EngineConfig | None = None,
        allow_urls: bool = False,
    ) -> Iterator[tuple[list[tuple[float, float | None, np.ndarray]] | None, float, BaseException | None]]:
        """The acoustic half of :meth:`transcribe`: per input, in input order, ``(parts, audio seconds, None)``
        or ``(None, 0.0, exception)``. ``parts`` are ``(start seconds, speech probability, log-probabilities)``:
        an input's speech segments when it uses voice activity detection (none when it has no speech), else one
        part ``(0.0, None, all its frames)``. :func:`w2vlm.engine.decoding.TranscriptDecoder.transcribe_parts`
        makes the same transcript of them as :meth:`transcribe`."""
        yield from self._run(inputs, None, names, config or self.config, allow_urls)

    def stream_log_probs(
        self, item: Any, config: EngineConfig | None = None, *, allow_urls: bool = False
    ) -> Iterator[np.ndarray]:
        """One input's log-probabilities, window by window as each is computed (in this thread), stitched:
        the pieces concatenate to what :meth:`log_probs` gives. For live updates of one long input."""
        config = config or self.config
        name = _name(item, 0)
        stitcher = Stitcher(self.runner.ratio)
        for index, (start, audio, right, last) in enumerate(self.inputs.windows(item, name, config, allow_urls)):
            window = Window(0, index, start, audio.size, right, last)
            (lp,) = self.runner.forward([self.runner.prepare(audio)]).result()
            stitcher.add(window, lp)
            yield from stitcher.ready()

    def stream_segments(
        self,
        item: Any,
        decode: DecodeConfig | None = None,
        config: EngineConfig | None = None,
        *,
        allow_urls: bool = False,
    ) -> Iterator[Segment]:
        """One input's speech segments in order, each as soon as it is recognised (in this thread): the
        segments :meth:`transcribe` gives, for live updates of a long input. An input that does not use voice
        activity detection is recognised whole and its segments come at the end."""
        if self.decoding is None:
            raise ConfigError("this engine has no decoder: it gives log-probabilities only (log_probs())")
        decode = decode or DecodeConfig()
        config = config or self.config
        name = _name(item, 0)
        info = InputInfo()
        stitcher = Stitcher(self.runner.ratio)  # the windows of an input without VAD
        pieces: list[np.ndarray] = []
        held: list[tuple[float, float | None, np.ndarray]] = []  # segments that end at a forced cut
        for index, (start, audio, right, last, prob) in enumerate(
            self.inputs.units(item, name, config, allow_urls, info)
        ):
            (lp,) = self.runner.forward([self.runner.prepare(audio)]).result()
            if prob is None:  # decoded whole at the end
                stitcher.add(Window(0, index, start, audio.size, right, last), lp)
                pieces += stitcher.ready()
                continue
            held.append((start / self.sampling_rate, prob, lp))
            if right == 0:  # sides of a forced cut share audio: they go out together, each word once
                yield from self._transcribe_one(name, held, 0.0, decode).segments
                held = []
        if held:
            yield from self._transcribe_one(name, held, 0.0, decode).segments
        if not info.segmented:
            whole = [(0.0, None, join(pieces, self.vocab))]
            yield from self._transcribe_one(name, whole, info.samples / self.sampling_rate, decode).segments

    def _transcribe_one(
        self, name: str, parts: list[tuple[float, float | None, np.ndarray]], seconds: float, decode: DecodeConfig
    ) -> Transcript:
        """One input's transcript from its parts, in this thread; raises the input's error."""
        assert self.decoding is not None
        (transcript,) = self.decoding.transcribe_parts([(name, parts, seconds)], decode, self.decode_threads)
        if transcript.exception is not None:
            raise transcript.exception
        return transcript

    def _run(
        self,
        inputs: Sequence[Any],
        decode: DecodeConfig | None,
        names: Sequence[str] | None,
        config: EngineConfig,
        allow_urls: bool,
    ) -> Iterator[Any]:
        items = list(inputs)
        labels = [str(n) for n in names] if names is not None else [_name(x, i) for i, x in enumerate(items)]
        if not items:
            return
        run = Run(self, items, labels, decode, config, allow_urls)
        threads = run.start()
        pending: dict[int, Any] = {}
        nxt = 0
        try:
            while nxt < len(items):
                kind, *rest = run.results.get()
                if kind == "fatal":
                    raise rest[0]
                if kind == "end":
                    break
                i, result = rest
                pending[i] = result
                while nxt in pending:
                    out = pending.pop(nxt)
                    nxt += 1
                    run.admit.release()
                    yield out
        finally:
            run.cancel.set()
            for t in threads:
                t.join(timeout=None if nxt >= len(items) else 2.0)


def _name(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"input {index}"


__all__ = ["Engine"]
