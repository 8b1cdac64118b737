"""Transcription on worker threads: the :class:`Transcriber` (audio bytes → transcript or streaming events on a
loaded pipeline) and the :class:`ServerState` around it (the thread pool, admission counts, statistics).

Decoding runs on a thread pool of ``workers`` threads (the model forward and the native beam search release
the GIL), never on the event loop."""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w2vlm import limits
from w2vlm.engine.model_runner import MIN_WINDOW_SAMPLES
from w2vlm.errors import AudioError, W2vlmError
from w2vlm.pipeline import decode_config_from_kwargs
from w2vlm.results import Segment, Transcript
from w2vlm.server.responses import audio_error, internal_error, logprobs_body, segment_body, verbose_json
from w2vlm.server.settings import MAX_HOTWORDS, ServerSettings

if TYPE_CHECKING:
    from w2vlm.server.forms import TranscriptionRequest

logger = logging.getLogger("w2vlm.server")


class Upload:
    """An uploaded file as the engine reads it. Written to a temporary file, it is read block by block like a
    file given to ``w2vlm transcribe`` (memory bounded by the blocks, not by the decoded audio: a 60-minute
    opus upload of 8 MB had taken the server from 0.4 to 1.8 GB; and the first speech segment is recognised
    while the rest is still unread). Its length comes from its header (refused past ``max_audio_s``) and its
    first second is decoded now, so that an unreadable upload is refused before a response starts. An upload
    whose header does not tell its length is decoded whole, stopping at ``max_audio_s``. :meth:`close` (or
    ``with``) removes the file."""

    def __init__(self, data: bytes, filename: str, sampling_rate: int, max_audio_s: float) -> None:
        from w2vlm.audio import AUDIO_EXTENSIONS, audio_duration, iter_audio_blocks, load_audio

        self.filename = filename
        self._folder = tempfile.TemporaryDirectory(prefix="w2vlm-upload-")
        suffix = Path(filename).suffix.lower()
        self.path = str(Path(self._folder.name) / ("upload" + (suffix if suffix in AUDIO_EXTENSIONS else "")))
        try:
            Path(self.path).write_bytes(data)
            seconds = audio_duration(self.path)
            if seconds is None:
                audio = load_audio(data, sampling_rate, max_duration_s=max_audio_s)
                self.item: Any = audio
                self.seconds = audio.size / sampling_rate
                return
            if seconds > max_audio_s:
                raise AudioError(
                    f"<bytes input>: its header says it is {seconds:.1f} s long; this server takes at most "
                    f"{max_audio_s:g} s"
                )
            first = iter_audio_blocks(self.path, sampling_rate, block_s=1.0)
            block = next(first)
            first.close()
            if seconds <= 1.0 and block.size < MIN_WINDOW_SAMPLES:  # the block is all of it
                raise AudioError(
                    f"<bytes input>: audio is too short ({block.size} samples at {sampling_rate} Hz); the model "
                    f"needs at least {MIN_WINDOW_SAMPLES}"
                )
            self.item, self.seconds = self.path, seconds
        except W2vlmError as exc:
            self.close()
            raise type(exc)(self.named(exc)) from None
        except BaseException:
            self.close()
            raise

    def named(self, exc: BaseException) -> str:
        """``exc``'s message with the temporary file's path as ``<bytes input>`` (the server names the upload)."""
        return str(exc).replace(self.path, "<bytes input>")

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transcriber:
    """Audio bytes → transcript with word timings and confidences, on a loaded w2vlm pipeline.

    Thread-safe: the server calls it from several worker threads at once.
    """

    def __init__(
        self, pipe: Any, decoder_kwargs: dict[str, Any] | None = None, max_audio_s: float | None = None
    ) -> None:
        from w2vlm.processor import decoder_labels

        self.pipe = pipe
        self.max_audio_s = limits.SERVER_MAX_AUDIO_DURATION_S if max_audio_s is None else float(max_audio_s)
        self.processor = pipe.processor
        self.sampling_rate = int(pipe.sampling_rate)
        self.seconds_per_frame = pipe.ratio / pipe.sampling_rate
        self.decoder_kwargs = dict(decoder_kwargs or {})
        kwargs = {k: v for k, v in self.decoder_kwargs.items() if k != "num_threads"}
        self.decode = decode_config_from_kwargs(kwargs).with_(timestamps="word")
        labels = [str(x) for x in decoder_labels(self.processor.decoder)]
        self.alphabet = {ch for label in labels for ch in label if label.strip()}
        self.lowercase = not any(ch.isupper() for ch in self.alphabet)

    def hotwords_from_prompt(self, prompt: str | None) -> list[str]:
        """Hotwords from OpenAI's ``prompt``: comma/semicolon/newline-separated phrases when it has such
        separators, else its words; reduced to the alphabet's characters (lowercased for lowercase models)."""
        if not prompt:
            return []
        parts = re.split(r"[,;\n]+", prompt) if re.search(r"[,;\n]", prompt) else prompt.split()
        out: list[str] = []
        for part in parts:
            text = part.lower() if self.lowercase else part
            kept = "".join(ch if (ch in self.alphabet or ch.isspace()) else " " for ch in text)
            phrase = " ".join(kept.split())
            if phrase and phrase not in out:
                out.append(phrase)
        return out[:MAX_HOTWORDS]

    def open(self, data: bytes, filename: str) -> Upload:
        """``data`` ready for the engine (see :class:`Upload`); :class:`~w2vlm.errors.AudioError` for an upload
        that cannot be read or is too long, before any of it is recognised."""
        return Upload(data, filename, self.sampling_rate, self.max_audio_s)

    def _decode_kwargs(self, hotwords: list[str]) -> dict[str, Any]:
        kwargs = dict(self.decoder_kwargs)
        if hotwords:
            kwargs["hotwords"] = hotwords
        return kwargs

    def engine_config(self, vad: dict[str, Any] | None) -> Any:
        """The engine's configuration for a request: the server's, with the request's VAD settings if any."""
        config = self.pipe.engine.config
        return config.with_(**vad) if vad else config

    def transcribe(
        self, upload: Upload, hotwords: list[str], confidences: bool = True, vad: dict[str, Any] | None = None
    ) -> Transcript:
        """Decode an upload on the engine; ``confidences=False`` skips the word confidences (they cost about
        as much as the beam search itself), leaving them None; ``vad``: the request's VAD settings."""
        decode = self.decode.with_(hotwords=tuple(hotwords), word_confidences=confidences)
        config = self.engine_config(vad)
        (transcript,) = self.pipe.engine.transcribe([upload.item], decode, names=["upload"], config=config)
        if transcript.exception is not None:
            raise transcript.exception
        return transcript

    def stream(
        self,
        upload: Upload,
        hotwords: list[str],
        chunk_length_s: float,
        cancelled: threading.Event,
        detail: bool = False,
        words: bool = False,
        vad: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """OpenAI's streaming events: ``transcript.text.delta`` as text is recognised, then
        ``transcript.text.done`` with the final text.

        An upload cut into speech segments (voice activity detection) sends each segment's text as soon as the
        segment is recognised. Otherwise windows of ``chunk_length_s`` are decoded in turn and, after each, a
        word is settled when every hypothesis the beam search still holds begins with it (the common prefix of
        all beams, cut at a word boundary); a delta is sent only when the settled text extends what was sent.
        The ``done`` event's text is the authoritative transcript.

        ``detail`` (a ``verbose_json`` request): every upload goes segment by segment (one that is not cut into
        segments comes as one at the end), each delta also carries its :class:`~w2vlm.results.Segment` under
        ``"segment"`` (with word confidences), and the done event the whole :class:`Transcript` under
        ``"transcript"``; :class:`ServerState` turns both into JSON. ``words`` (``include[]=logprobs``): segment
        by segment too, each delta and the done event carrying their :class:`~w2vlm.results.Word` list (with
        confidences) under ``"words"``."""
        audio, seconds = upload.item, upload.seconds
        engine = self.pipe.engine
        config = self.engine_config(vad)
        if detail or words or engine.inputs.uses_vad(seconds, config):
            decode = self.decode.with_(hotwords=tuple(hotwords), word_confidences=detail or words)
            segments: list[Segment] = []
            for segment in engine.stream_segments(audio, decode, config):
                if cancelled.is_set():
                    return
                delta = (" " if segments else "") + segment.text
                event: dict[str, Any] = {"type": "transcript.text.delta", "delta": delta}
                if detail:
                    event["segment"] = segment
                if words:
                    event["words"] = list(segment.words)
                yield event
                segments.append(segment)
            text = " ".join(s.text for s in segments)
            done: dict[str, Any] = {"type": "transcript.text.done", "text": text}
            every = [w for s in segments for w in s.words]
            if detail:
                done["transcript"] = Transcript("upload", text, seconds, words=every, segments=segments)
            if words:
                done["words"] = every
            yield done
            return
        decoding = self.processor.stream(**self._decode_kwargs(hotwords))  # all beams, not just the best
        sent = ""
        config = config.with_(chunk_length_s=chunk_length_s)
        for piece in self.pipe.engine.stream_log_probs(audio, config):
            if cancelled.is_set():
                return
            decoding.feed(piece)
            settled = settled_prefix([b.text for b in decoding.finalize()])
            if len(settled) > len(sent) and settled.startswith(sent):
                yield {"type": "transcript.text.delta", "delta": settled[len(sent) :]}
                sent = settled
        finals = decoding.finalize()
        text = finals[0].text if finals else ""
        if len(text) > len(sent) and text.startswith(sent):
            yield {"type": "transcript.text.delta", "delta": text[len(sent) :]}
        elif not text.startswith(sent):
            logger.warning("streamed words were revised at the end: sent %r, final %r", sent, text)
        yield {"type": "transcript.text.done", "text": text}


def settled_prefix(texts: list[str]) -> str:
    """The words (with their trailing space) that all ``texts`` begin with."""
    if not texts:
        return ""
    common = min(texts, key=len)
    for t in texts:
        n = 0
        for a, b in zip(common, t):
            if a != b:
                break
            n += 1
        common = common[:n]
    # the last word of a hypothesis may still grow: only words followed by a space are settled
    return common[: common.rfind(" ") + 1]


class ServerState:
    """The transcriber, its worker threads and the server's counts (``app.state.w2vlm``)."""

    def __init__(self, transcriber: Transcriber, settings: ServerSettings) -> None:
        self.transcriber = transcriber
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="w2vlm-decode")
        self.admitted = 0  # requests inside the server (changed on the event loop only)
        self.decoding = 0  # requests on a worker thread (changed under the lock)
        self.lock = threading.Lock()
        self.served = 0
        self.failed = 0
        self.rejected = 0
        self.started = time.time()

    @contextlib.contextmanager
    def decoding_slot(self) -> Iterator[None]:
        with self.lock:
            self.decoding += 1
        try:
            yield
        finally:
            with self.lock:
                self.decoding -= 1

    @property
    def capacity(self) -> int:
        return self.settings.capacity

    def token_ids(self, text: str) -> list[int]:
        tokenizer = getattr(self.transcriber.processor, "tokenizer", None)
        if tokenizer is None:
            return []
        try:
            return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        except Exception:  # a tokenizer that cannot encode text: the field stays empty
            logger.debug("tokenizer could not encode %r", text, exc_info=True)
            return []

    def open_upload(self, req: TranscriptionRequest) -> Upload:
        """A request's upload, ready for the engine (on a worker thread); a 400 for one that cannot be read."""
        try:
            return self.transcriber.open(req.data, req.filename)
        except W2vlmError as exc:
            raise audio_error(exc, req.filename) from exc

    def transcribe(self, req: TranscriptionRequest) -> Transcript:
        """Decode a request's upload (on a worker thread)."""
        with self.decoding_slot(), self.open_upload(req) as upload:
            try:
                # only verbose_json shows confidences (words) or uses them (segments' avg_logprob)
                wants_confidences = req.response_format == "verbose_json" or req.logprobs
                return self.transcriber.transcribe(upload, req.hotwords, wants_confidences, req.vad)
            except W2vlmError as exc:
                raise audio_error(exc, req.filename, upload.path) from exc

    def stream_events(
        self, req: TranscriptionRequest, upload: Upload, cancelled: threading.Event
    ) -> Iterator[tuple[str, Any]]:
        """A streaming request's events as ``("event", body)`` pairs, or a last ``("error", body)`` (on a
        worker thread); nothing once ``cancelled`` is set. ``upload`` is closed at the end."""
        try:
            if cancelled.is_set():
                return
            with self.decoding_slot():
                chunk_s = self.settings.stream_chunk_s
                detail = req.response_format == "verbose_json"
                index = 0
                words_sent = 0
                for event in self.transcriber.stream(
                    upload, req.hotwords, chunk_s, cancelled, detail, req.logprobs, req.vad
                ):
                    if "words" in event:  # include[]=logprobs: a delta's words, or all of them in the done event
                        words = event.pop("words")
                        done = event["type"] == "transcript.text.done"
                        event["logprobs"] = logprobs_body(words, first=done or words_sent == 0)
                        words_sent += 0 if done else len(words)
                    if "segment" in event:
                        event["segment"] = segment_body(event["segment"], index, req.granularities, self.token_ids)
                        index += 1
                    if "transcript" in event:
                        body = verbose_json(event.pop("transcript"), req.language, req.granularities, self.token_ids)
                        # OpenAI's done event has usage in tokens only (the SDK's type): the duration stays out
                        body.pop("usage", None)
                        event.update(body)
                    yield "event", event
        except W2vlmError as exc:
            yield "error", audio_error(exc, req.filename, upload.path).body()
        except Exception as exc:
            logger.exception("streaming transcription failed")
            yield "error", internal_error(exc).body()
        finally:
            upload.close()


class StreamSlot:
    """A streaming request's place in the server: released once, when its response ends (or never starts)."""

    def __init__(self, state: ServerState, upload: Upload) -> None:
        self.state = state
        self.upload = upload
        self.cancelled = threading.Event()
        self.ok = True
        self.closed = False

    def close(self) -> None:
        self.cancelled.set()  # a producer still running stops at its next window
        if self.closed:
            return
        self.closed = True
        self.state.admitted -= 1
        if self.ok:
            self.state.served += 1
        else:
            self.state.failed += 1
