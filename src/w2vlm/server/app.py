"""OpenAI-compatible transcription server (FastAPI) with a web page at ``/``.

Endpoints:

- ``POST /v1/audio/transcriptions``: OpenAI's speech-to-text request (multipart ``file``, ``model``,
  ``language``, ``prompt`` — used as hotwords —, ``response_format`` json|text|srt|vtt|verbose_json,
  ``timestamp_granularities[]`` word|segment, ``stream`` for server-sent events, ``temperature`` accepted and
  ignored since CTC decoding is deterministic). ``verbose_json`` words carry an extra ``confidence`` in [0, 1].
- ``GET /v1/models``: the served model (and its aliases, ``whisper-1`` by default, so that code written for
  OpenAI runs unchanged).
- ``GET /health``: liveness plus the queue's state and the page's settings.
- ``GET /``: the web page (upload or record audio, transcript with word timings and confidences).

Decoding runs on a thread pool of ``workers`` threads (the model forward and the native beam search release
the GIL), never on the event loop. Admission is bounded: at most ``workers + max_queue`` requests are in the
server at once (reading their upload, waiting or decoding); one more gets 503 with ``Retry-After``. Uploads
above ``max_upload_bytes`` get 413 before they are read in full. Errors are OpenAI-style JSON
``{"error": {"message", "type", "param", "code"}}`` with 4xx status codes for bad requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import re
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse

from w2vlm import limits
from w2vlm.errors import W2vlmError
from w2vlm.model import check_language, resolve_language, same_language
from w2vlm.pipeline import decode_config_from_kwargs
from w2vlm.results import Transcript
from w2vlm.writers import render as render_format

logger = logging.getLogger("w2vlm.server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
WEB_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
MAX_PROMPT_CHARS = limits.SERVER_MAX_PROMPT_CHARS
MAX_HOTWORDS = limits.SERVER_MAX_HOTWORDS
#: Slack over the upload limit for the multipart framing and the other form fields.
FORM_OVERHEAD_BYTES = 64 * 1024


#: OpenAPI description of the multipart form (the route reads the form itself, to enforce the upload limit
#: while reading and to answer OpenAI-style errors).
TRANSCRIPTION_REQUEST_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "model"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The audio file."},
                        "model": {"type": "string", "description": "A model id from GET /v1/models."},
                        "language": {"type": "string", "description": "ISO-639-1 code, e.g. 'en'."},
                        "prompt": {
                            "type": "string",
                            "description": "Hotwords: comma-separated phrases, or words separated by spaces.",
                        },
                        "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "json"},
                        "timestamp_granularities[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": list(GRANULARITIES)},
                            "description": "With response_format verbose_json; default segment.",
                        },
                        "stream": {"type": "boolean", "default": False, "description": "Server-sent events."},
                        "temperature": {"type": "number", "description": "Accepted and ignored (CTC)."},
                    },
                }
            }
        },
    }
}


@dataclass
class ServerSettings:
    """What ``w2vlm serve`` configures. ``model_id`` is the name ``GET /v1/models`` lists."""

    model_id: str = "w2vlm"
    aliases: tuple[str, ...] = ("whisper-1",)
    api_key: str | None = None
    max_upload_bytes: int = 25 * 1024 * 1024
    upload_timeout_s: float = 120.0
    workers: int = 2
    max_queue: int = 64
    language: str | None = None
    low_confidence: float = 0.5
    stream_chunk_s: float = 10.0
    #: longest upload decoded, in seconds (stricter than load_audio's own limit)
    max_audio_s: float = limits.SERVER_MAX_AUDIO_DURATION_S
    decoder_kwargs: dict[str, Any] = field(default_factory=dict)
    #: voice activity detection (True, False, None: for uploads longer than 10 s) and its settings, as
    #: :func:`w2vlm.pipeline`'s ``vad`` and ``vad_parameters``; used when the server builds its pipeline
    vad: bool | None = None
    vad_parameters: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.language is not None:
            self.language = check_language(self.language, "language")
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1; got {self.workers}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue: must be >= 0; got {self.max_queue}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes: must be >= 1; got {self.max_upload_bytes}")
        if not 0.0 <= self.low_confidence <= 1.0:
            raise ValueError(f"low_confidence: must be in [0, 1]; got {self.low_confidence}")
        if self.upload_timeout_s <= 0:
            raise ValueError(f"upload_timeout_s: must be positive; got {self.upload_timeout_s}")
        if self.stream_chunk_s <= 0:
            raise ValueError(f"stream_chunk_s: must be positive; got {self.stream_chunk_s}")
        if not self.max_audio_s > 0:
            raise ValueError(f"max_audio_s: must be positive; got {self.max_audio_s}")


class ApiError(Exception):
    """An error answered as OpenAI's JSON error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------------ transcription


class Transcriber:
    """Audio bytes → transcript with word timings and confidences, on a loaded w2vlm pipeline.

    Thread-safe: the server calls it from several worker threads at once.
    """

    def __init__(
        self, pipe: Any, decoder_kwargs: dict[str, Any] | None = None, max_audio_s: float | None = None
    ) -> None:
        self.pipe = pipe
        self.max_audio_s = limits.SERVER_MAX_AUDIO_DURATION_S if max_audio_s is None else float(max_audio_s)
        self.processor = pipe.processor
        self.sampling_rate = int(pipe.sampling_rate)
        self.seconds_per_frame = pipe.ratio / pipe.sampling_rate
        self.decoder_kwargs = dict(decoder_kwargs or {})
        kwargs = {k: v for k, v in self.decoder_kwargs.items() if k != "num_threads"}
        self.decode = decode_config_from_kwargs(kwargs).with_(timestamps="word")
        labels = [str(x) for x in _decoder_labels(self.processor.decoder)]
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

    def load(self, data: bytes) -> np.ndarray:
        from w2vlm.audio import load_audio

        return load_audio(data, self.sampling_rate, max_duration_s=self.max_audio_s)

    def _decode_kwargs(self, hotwords: list[str]) -> dict[str, Any]:
        kwargs = dict(self.decoder_kwargs)
        if hotwords:
            kwargs["hotwords"] = hotwords
        return kwargs

    def transcribe(self, data: bytes, hotwords: list[str], confidences: bool = True) -> Transcript:
        """Decode an upload on the engine; ``confidences=False`` skips the word confidences (they cost about
        as much as the beam search itself), leaving them None."""
        audio = self.load(data)
        decode = self.decode.with_(hotwords=tuple(hotwords), word_confidences=confidences)
        (transcript,) = self.pipe.engine.transcribe([audio], decode, names=["upload"])
        if transcript.exception is not None:
            raise transcript.exception
        return transcript

    def stream(
        self, data: bytes, hotwords: list[str], chunk_length_s: float, cancelled: threading.Event
    ) -> Iterator[dict[str, Any]]:
        """OpenAI's streaming events: ``transcript.text.delta`` as text is recognised, then
        ``transcript.text.done`` with the final text.

        An upload cut into speech segments (voice activity detection) sends each segment's text as soon as the
        segment is recognised. Otherwise windows of ``chunk_length_s`` are decoded in turn and, after each, a
        word is settled when every hypothesis the beam search still holds begins with it (the common prefix of
        all beams, cut at a word boundary); a delta is sent only when the settled text extends what was sent.
        The ``done`` event's text is the authoritative transcript."""
        audio = self.load(data)
        engine = self.pipe.engine
        if engine.inputs.uses_vad(audio.size / self.sampling_rate, engine.config):
            decode = self.decode.with_(hotwords=tuple(hotwords), word_confidences=False)
            texts = []
            for segment in engine.stream_segments(audio, decode):
                if cancelled.is_set():
                    return
                yield {"type": "transcript.text.delta", "delta": (" " if texts else "") + segment.text}
                texts.append(segment.text)
            yield {"type": "transcript.text.done", "text": " ".join(texts)}
            return
        decoding = self.processor.stream(**self._decode_kwargs(hotwords))  # all beams, not just the best
        sent = ""
        config = self.pipe.engine.config.with_(chunk_length_s=chunk_length_s)
        for piece in self.pipe.engine.stream_log_probs(audio, config):
            if cancelled.is_set():
                return
            decoding.feed(piece)
            settled = _settled_prefix([b.text for b in decoding.finalize()])
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


def _settled_prefix(texts: list[str]) -> str:
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


def _decoder_labels(decoder: Any) -> list[str]:
    from w2vlm.processor import decoder_labels

    return decoder_labels(decoder)


# ------------------------------------------------------------------------------------------------ formats


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def verbose_json(
    transcript: Transcript, language: str, granularities: set[str], token_ids: Callable[[str], list[int]]
) -> dict[str, Any]:
    """OpenAI's ``verbose_json`` body with the transcript's segments. Segment fields whisper has and CTC lacks
    are filled with what they mean here: ``avg_logprob`` is the mean log word confidence, ``no_speech_prob``
    the model's evidence against speech (:mod:`w2vlm.engine.segments`), ``temperature`` 0 (no sampling),
    ``seek`` the start in 10 ms frames."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "usage": {"type": "duration", "seconds": math.ceil(transcript.duration)},
    }
    if "segment" in granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": round(seg.start * 100),
                "start": seg.start,
                "end": seg.end,
                "text": seg.text,
                "tokens": token_ids(seg.text),
                "temperature": 0.0,
                "avg_logprob": float(
                    np.mean([math.log(max(w.confidence, 1e-6)) for w in seg.words if w.confidence is not None])
                )
                if any(w.confidence is not None for w in seg.words)
                else 0.0,
                "compression_ratio": _compression_ratio(seg.text),
                "no_speech_prob": round(seg.no_speech_prob, 4) if seg.no_speech_prob is not None else 0.0,
            }
            for i, seg in enumerate(transcript.segments)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "confidence": w.confidence}
            for w in transcript.words
        ]
    return body


# --------------------------------------------------------------------------------------------------- app


@dataclass
class _Request:
    data: bytes
    filename: str
    response_format: str
    granularities: set[str]
    hotwords: list[str]
    language: str
    stream: bool


class _ServerState:
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
        return self.settings.workers + self.settings.max_queue

    def token_ids(self, text: str) -> list[int]:
        tokenizer = getattr(self.transcriber.processor, "tokenizer", None)
        if tokenizer is None:
            return []
        try:
            return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
        except Exception:  # a tokenizer that cannot encode text: the field stays empty
            logger.debug("tokenizer could not encode %r", text, exc_info=True)
            return []


def create_app(
    model: Any = None,
    settings: ServerSettings | None = None,
    *,
    device: str = "auto",
    quantize: str | None = None,
    processor: Any = None,
) -> Any:
    """The FastAPI app. ``model``: a model folder / hub id / None (embedded default), or an already built
    :func:`w2vlm.pipeline` object; ``processor``: the processor to build the pipeline with (default: the
    model's)."""
    from w2vlm.pipeline import AutomaticSpeechRecognitionPipeline, pipeline

    settings = settings or ServerSettings()
    if isinstance(model, AutomaticSpeechRecognitionPipeline):
        pipe = model
    else:
        pipe = pipeline(
            "automatic-speech-recognition",
            model=model,
            processor=processor,
            device=device,
            quantize=quantize,
            vad=settings.vad,
            vad_parameters=settings.vad_parameters,
        )
    folder = getattr(pipe.model, "name_or_path", None)
    if folder and Path(folder).is_dir():  # the model card's language, or the setting checked against it
        settings.language = resolve_language(settings.language, folder)
    state = _ServerState(Transcriber(pipe, settings.decoder_kwargs, settings.max_audio_s), settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="w2vlm", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.w2vlm = state

    def error_response(err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(ApiError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(400, f"invalid request: {exc.errors()}"))

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error")
        return error_response(ApiError(500, f"internal server error ({type(exc).__name__})", type="server_error"))

    def check_auth(request: Request) -> None:
        if not settings.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "missing API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "incorrect API key provided", code="invalid_api_key")

    def model_ids() -> list[str]:
        return [settings.model_id, *[a for a in settings.aliases if a != settings.model_id]]

    # ---------------------------------------------------------------------------------------- routes

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": settings.model_id,
            "in_flight": state.admitted,
            "decoding": state.decoding,
            "capacity": state.capacity,
            "workers": settings.workers,
            "served": state.served,
            "failed": state.failed,
            "rejected": state.rejected,
            "auth": bool(settings.api_key),
            "max_upload_bytes": settings.max_upload_bytes,
            "low_confidence": settings.low_confidence,
            "uptime_s": round(time.time() - state.started, 1),
        }

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        check_auth(request)
        created = int(state.started)
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": created, "owned_by": "w2vlm"} for m in model_ids()],
        }

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        check_auth(request)
        if model_id not in model_ids():
            raise ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return {"id": model_id, "object": "model", "created": int(state.started), "owned_by": "w2vlm"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/web/{name}", include_in_schema=False)
    async def web_file(name: str) -> FileResponse:
        if name not in WEB_FILES:
            raise ApiError(404, f"no such file: /web/{name}", code="not_found")
        return FileResponse(WEB_DIR / name, media_type=WEB_FILES[name])

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # the page links /web/favicon.svg; this is for browsers and tools that ask for /favicon.ico anyway
        return FileResponse(WEB_DIR / "favicon.svg", media_type=WEB_FILES["favicon.svg"])

    @app.post("/v1/audio/transcriptions", openapi_extra=TRANSCRIPTION_REQUEST_SCHEMA)
    async def transcriptions(request: Request) -> Response:
        check_auth(request)
        if state.admitted >= state.capacity:
            state.rejected += 1
            raise ApiError(
                503,
                f"the server is busy ({state.admitted} requests in progress, capacity {state.capacity}); retry later",
                type="server_error",
                code="server_busy",
                headers={"Retry-After": "1"},
            )
        state.admitted += 1
        release = True
        try:
            req = await read_request(request)
            loop = asyncio.get_running_loop()
            if req.stream:
                slot = _StreamSlot(state)
                release = False  # the stream's slot is released when its response ends
                return _SlotStreamingResponse(
                    sse_events(req, loop, slot),
                    slot,
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            transcript = await loop.run_in_executor(state.executor, run_transcribe, req)
            state.served += 1
            return render(req, transcript)
        except Exception:
            state.failed += 1
            raise
        finally:
            if release:
                state.admitted -= 1

    def run_transcribe(req: _Request) -> Transcript:
        with state.decoding_slot():
            try:
                # only verbose_json shows confidences (words) or uses them (segments' avg_logprob)
                wants_confidences = req.response_format == "verbose_json"
                return state.transcriber.transcribe(req.data, req.hotwords, wants_confidences)
            except W2vlmError as exc:
                raise ApiError(400, _audio_message(exc, req.filename), param="file", code="invalid_audio") from exc

    async def sse_events(req: _Request, loop: asyncio.AbstractEventLoop, slot: _StreamSlot) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = slot.cancelled

        def produce() -> None:
            try:
                if cancelled.is_set():
                    return
                with state.decoding_slot():
                    for event in state.transcriber.stream(req.data, req.hotwords, settings.stream_chunk_s, cancelled):
                        loop.call_soon_threadsafe(queue.put_nowait, ("event", event))
            except W2vlmError as exc:
                err = ApiError(400, _audio_message(exc, req.filename), param="file", code="invalid_audio")
                loop.call_soon_threadsafe(queue.put_nowait, ("error", err.body()))
            except Exception as exc:
                logger.exception("streaming transcription failed")
                err = ApiError(500, f"internal server error ({type(exc).__name__})", type="server_error")
                loop.call_soon_threadsafe(queue.put_nowait, ("error", err.body()))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

        loop.run_in_executor(state.executor, produce)
        try:
            while True:
                kind, payload = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    slot.ok = False
                yield f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
        finally:
            cancelled.set()

    async def read_request(request: Request) -> _Request:
        """Read and validate the multipart form, enforcing the upload limit while reading."""
        limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large(int(length))
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(
                400,
                f"expected a multipart/form-data body with a 'file' field; got Content-Type {content_type!r}",
            )
        body = bytearray()

        async def read_body() -> None:
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limit:
                    raise too_large(len(body))

        try:
            # a client that stops sending would otherwise hold its place in the server forever
            await asyncio.wait_for(read_body(), timeout=settings.upload_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                408,
                f"the upload did not arrive within {settings.upload_timeout_s:g} s ({len(body):,} bytes received)",
                code="upload_timeout",
            ) from None
        replay = _replay_receive(bytes(body))
        form_request = Request(request.scope, receive=replay)
        try:
            form = await form_request.form(max_files=1, max_fields=64)
        except Exception as exc:
            raise ApiError(400, f"could not parse the multipart form: {exc}") from exc
        try:
            upload = form.get("file")
            if upload is None:
                raise ApiError(400, "you must provide a 'file' field with the audio", param="file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "'file' must be an uploaded file, not a text field", param="file")
            data = await upload.read()
            if len(data) > settings.max_upload_bytes:
                raise too_large(len(data))
            if not data:
                raise ApiError(400, f"{upload.filename or 'file'}: the uploaded file is empty", param="file")
            return _Request(
                data=data,
                filename=upload.filename or "file",
                stream=parse_bool(text_field(form, "stream"), "stream"),
                **validate_fields(form),
            )
        finally:
            await form.close()

    def too_large(size: int) -> ApiError:
        return ApiError(
            413,
            f"the upload is too large ({size:,} bytes); the limit is {settings.max_upload_bytes:,} bytes",
            param="file",
            code="file_too_large",
        )

    def text_field(form: Any, name: str) -> str | None:
        value = form.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ApiError(400, f"'{name}' must be a text field", param=name)
        return value

    def parse_bool(value: str | None, name: str) -> bool:
        if value is None or value.strip().lower() in ("", "false", "0", "no"):
            return False
        if value.strip().lower() in ("true", "1", "yes"):
            return True
        raise ApiError(400, f"'{name}' must be true or false; got {value!r}", param=name)

    def validate_fields(form: Any) -> dict[str, Any]:
        model_name = text_field(form, "model")
        if not model_name:
            raise ApiError(400, "you must provide a model parameter", param="model")
        if model_name not in model_ids():
            raise ApiError(
                404,
                f"The model '{model_name}' does not exist; this server serves {model_ids()}",
                param="model",
                code="model_not_found",
            )
        fmt = text_field(form, "response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(
                400,
                f"'response_format': expected one of {list(RESPONSE_FORMATS)}; got {fmt!r}",
                param="response_format",
            )
        grans: list[str] = []
        for key in ("timestamp_granularities[]", "timestamp_granularities"):
            for value in form.getlist(key):
                if not isinstance(value, str):
                    raise ApiError(400, f"'{key}' must be a text field", param="timestamp_granularities")
                grans.extend(v.strip() for v in value.split(",") if v.strip())
        bad = [g for g in grans if g not in GRANULARITIES]
        if bad:
            raise ApiError(
                400,
                f"'timestamp_granularities[]': expected 'word' and/or 'segment'; got {bad}",
                param="timestamp_granularities",
            )
        if grans and fmt != "verbose_json":
            raise ApiError(
                400,
                "'timestamp_granularities[]' needs response_format 'verbose_json'",
                param="timestamp_granularities",
            )
        language = text_field(form, "language")
        if language is not None:
            try:
                language = check_language(language, "'language'")
            except W2vlmError as exc:
                raise ApiError(400, str(exc), param="language") from None
            if settings.language and not same_language(language, settings.language):
                raise ApiError(
                    400,
                    f"'language': this server's model transcribes {settings.language!r}; got {language!r}",
                    param="language",
                    code="unsupported_language",
                )
        temperature = text_field(form, "temperature")
        if temperature is not None and temperature.strip():
            try:
                t = float(temperature)
            except ValueError:
                t = math.nan
            if not 0.0 <= t <= 1.0:
                raise ApiError(
                    400, f"'temperature': expected a number in [0, 1]; got {temperature!r}", param="temperature"
                )
        prompt = text_field(form, "prompt")
        if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
            raise ApiError(400, f"'prompt': at most {MAX_PROMPT_CHARS} characters; got {len(prompt)}", param="prompt")
        return {
            "response_format": fmt,
            "granularities": set(grans) or {"segment"},
            "hotwords": state.transcriber.hotwords_from_prompt(prompt),
            "language": language or settings.language or "unknown",
        }

    def render(req: _Request, transcript: Transcript) -> Response:
        fmt = req.response_format
        if fmt == "json":
            return JSONResponse(
                {"text": transcript.text, "usage": {"type": "duration", "seconds": math.ceil(transcript.duration)}}
            )
        if fmt == "text":
            return PlainTextResponse(transcript.text + "\n")
        if fmt == "srt":
            return PlainTextResponse(render_format(transcript, "srt"))
        if fmt == "vtt":
            return PlainTextResponse(render_format(transcript, "vtt"), media_type="text/vtt")
        return JSONResponse(verbose_json(transcript, req.language, req.granularities, state.token_ids))

    return app


class _StreamSlot:
    """A streaming request's place in the server: released once, when its response ends (or never starts)."""

    def __init__(self, state: _ServerState) -> None:
        self.state = state
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


class _SlotStreamingResponse(StreamingResponse):
    """A streaming response that releases its request's slot when it ends, even if it never started."""

    def __init__(self, content: Any, slot: _StreamSlot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.close()


def _audio_message(exc: Exception, filename: str) -> str:
    """The loader's message about an upload, naming the uploaded file instead of its bytes."""
    text = str(exc)
    return text.replace("<bytes input>", filename) if "<bytes input>" in text else f"{filename}: {text}"


def _replay_receive(body: bytes) -> Callable[[], Any]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("w2vlm")
    except Exception:
        return "0"


def serve(
    model: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServerSettings | None = None,
    device: str = "auto",
    quantize: str | None = None,
    log_level: str = "info",
    processor: Any = None,
) -> None:
    """Load the model and run the server with uvicorn until interrupted (``processor``: one with another LM
    or other LM weights; default: the model's own)."""
    import uvicorn

    if settings is None:
        settings = ServerSettings()
    if model is not None and settings.model_id == "w2vlm":
        text = os.fspath(model)
        settings.model_id = (Path(text).resolve().name if Path(text).exists() else text) or "w2vlm"
    app = create_app(model, settings, device=device, quantize=quantize, processor=processor)
    logger.info("serving %s on http://%s:%d", settings.model_id, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
