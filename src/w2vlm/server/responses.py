"""The server's response bodies: json, text, srt, vtt and verbose_json transcripts, server-sent events, and
OpenAI-style errors ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import asyncio
import json
import math
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.responses import StreamingResponse

from w2vlm.results import Segment, Transcript, Word
from w2vlm.writers import render as render_format

if TYPE_CHECKING:
    from w2vlm.server.forms import TranscriptionRequest
    from w2vlm.server.transcriber import StreamSlot


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


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def audio_error(exc: Exception, filename: str, path: str | None = None) -> ApiError:
    """400 for an upload the loader refused, its message naming the uploaded file instead of its bytes (or
    ``path``, the temporary file it was written to)."""
    text = str(exc) if path is None else str(exc).replace(path, "<bytes input>")
    message = text.replace("<bytes input>", filename) if "<bytes input>" in text else f"{filename}: {text}"
    return ApiError(400, message, param="file", code="invalid_audio")


def internal_error(exc: Exception) -> ApiError:
    return ApiError(500, f"internal server error ({type(exc).__name__})", type="server_error")


# ------------------------------------------------------------------------------------------------ formats


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def language_name(code: str) -> str:
    """The language as OpenAI's ``verbose_json`` names it: whisper's lowercase English name ("en" -> "english"),
    the code itself where whisper has no name for it."""
    try:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES
    except ImportError:  # pragma: no cover - transformers without whisper
        return code
    return LANGUAGES.get(code.split("-")[0].lower(), code)


def verbose_json(
    transcript: Transcript, language: str, granularities: set[str], token_ids: Callable[[str], list[int]]
) -> dict[str, Any]:
    """OpenAI's ``verbose_json`` body with the transcript's segments. Segment fields whisper has and CTC lacks
    are filled with what they mean here: ``avg_logprob`` is the mean log word confidence, ``no_speech_prob``
    the model's evidence against speech (:mod:`w2vlm.engine.segments`), ``temperature`` 0 (no sampling),
    ``seek`` the start in 10 ms frames."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language_name(language),
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "usage": {"type": "duration", "seconds": math.ceil(transcript.duration)},
    }
    if "segment" in granularities:
        body["segments"] = [segment_body(seg, i, set(), token_ids) for i, seg in enumerate(transcript.segments)]
    if "word" in granularities:
        body["words"] = [word_body(w) for w in transcript.words]
    return body


def word_body(word: Word) -> dict[str, Any]:
    """A word of ``verbose_json``: text, start and end (seconds), confidence."""
    return {"word": word.word, "start": round(word.start, 3), "end": round(word.end, 3), "confidence": word.confidence}


#: The smallest confidence a log is taken of (a word's confidence may be 0; whisper's fields want finite logs).
_MIN_CONFIDENCE = 1e-6


def log_confidence(confidence: float) -> float:
    """The log of a word's confidence, as ``verbose_json``'s ``avg_logprob`` and ``logprobs`` give it."""
    return math.log(max(confidence, _MIN_CONFIDENCE))


def logprobs_body(words: list[Word], first: bool = True) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs`` (``include[]=logprobs``): one entry a word, its text as a token (after a space but for
    the transcript's ``first`` word), the log of its confidence, and its UTF-8 bytes. CTC has no token
    probabilities of its own: a word's confidence (:mod:`w2vlm.decoder`) is what stands for them."""
    out = []
    for i, w in enumerate(words):
        token = w.word if first and i == 0 else f" {w.word}"
        logprob = log_confidence(w.confidence) if w.confidence is not None else 0.0
        out.append({"token": token, "logprob": round(logprob, 6), "bytes": list(token.encode("utf-8"))})
    return out


def segment_body(
    seg: Segment, index: int, granularities: set[str], token_ids: Callable[[str], list[int]]
) -> dict[str, Any]:
    """A segment of ``verbose_json`` (whisper's fields, see :func:`verbose_json`); with ``"word"`` in
    ``granularities`` also its words (as a streaming event carries them)."""
    known = [w.confidence for w in seg.words if w.confidence is not None]
    body: dict[str, Any] = {
        "id": index,
        "seek": round(seg.start * 100),
        "start": round(seg.start, 3),
        "end": round(seg.end, 3),
        "text": f" {seg.text}" if seg.text else "",  # as OpenAI's: each segment's text after a space, so that
        "tokens": token_ids(seg.text),  # the segments' texts joined as they are give the transcript (then stripped)
        "temperature": 0.0,
        "avg_logprob": float(np.mean([log_confidence(c) for c in known])) if known else 0.0,
        "compression_ratio": compression_ratio(seg.text),
        "no_speech_prob": round(seg.no_speech_prob, 4) if seg.no_speech_prob is not None else 0.0,
    }
    if "word" in granularities:
        body["words"] = [word_body(w) for w in seg.words]
    return body


def render(req: TranscriptionRequest, transcript: Transcript, token_ids: Callable[[str], list[int]]) -> Response:
    """The transcript in the request's ``response_format``."""
    fmt = req.response_format
    if fmt == "json":
        body: dict[str, Any] = {"text": transcript.text}
        if req.logprobs:
            body["logprobs"] = logprobs_body(transcript.words)
        body["usage"] = {"type": "duration", "seconds": math.ceil(transcript.duration)}
        return JSONResponse(body)
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(render_format(transcript, "srt"))
    if fmt == "vtt":
        return PlainTextResponse(render_format(transcript, "vtt"), media_type="text/vtt")
    return JSONResponse(verbose_json(transcript, req.language, req.granularities, token_ids))


# ---------------------------------------------------------------------------------------------- streaming


class SlotStreamingResponse(StreamingResponse):
    """A streaming response that releases its request's slot when it ends, even if it never started."""

    def __init__(self, content: Any, slot: StreamSlot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.close()


def sse_response(
    events: Callable[[], Iterator[tuple[str, Any]]], executor: Executor, slot: StreamSlot
) -> SlotStreamingResponse:
    """Server-sent events: ``events()`` runs on ``executor`` and gives ``("event", body)`` or ``("error",
    body)`` pairs, each sent as a ``data:`` line as soon as it comes; an error marks the slot failed."""
    return SlotStreamingResponse(
        _sse_body(events, executor, slot),
        slot,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse_body(
    events: Callable[[], Iterator[tuple[str, Any]]], executor: Executor, slot: StreamSlot
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def produce() -> None:
        try:
            for item in events():
                loop.call_soon_threadsafe(queue.put_nowait, item)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

    loop.run_in_executor(executor, produce)
    try:
        while True:
            kind, payload = await queue.get()
            if kind == "end":
                break
            if kind == "error":
                slot.ok = False
            yield f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
    finally:
        slot.cancelled.set()
