"""``POST /v1/audio/transcriptions``'s multipart form: read with the upload limit enforced while reading, and
validated into a :class:`TranscriptionRequest`; what is wrong with it raises :class:`ApiError` (answered
OpenAI-style)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from w2vlm.errors import W2vlmError
from w2vlm.model import check_language, same_language
from w2vlm.server.responses import ApiError
from w2vlm.server.settings import FORM_OVERHEAD_BYTES, MAX_PROMPT_CHARS, ServerSettings

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
INCLUDES = ("logprobs",)

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
                        "include[]": {
                            "type": "array",
                            "items": {"type": "string", "enum": list(INCLUDES)},
                            "description": "logprobs (response_format json): each word's log confidence.",
                        },
                        "chunking_strategy": {
                            "type": "string",
                            "description": "auto, or a server_vad object (JSON, or chunking_strategy[field] "
                            "fields): threshold, prefix_padding_ms, silence_duration_ms. Speech segments always.",
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
class TranscriptionRequest:
    """A validated transcription request."""

    data: bytes
    filename: str
    response_format: str
    granularities: set[str]
    hotwords: list[str]
    language: str
    stream: bool
    logprobs: bool = False
    #: the engine's VAD settings for this request (OpenAI's ``chunking_strategy``), None for the server's own
    vad: dict[str, Any] | None = None


async def read_request(
    request: Request, settings: ServerSettings, hotwords_from_prompt: Callable[[str | None], list[str]]
) -> TranscriptionRequest:
    """Read and validate the multipart form, enforcing the upload limit while reading; ``hotwords_from_prompt``
    turns the ``prompt`` field into hotwords."""
    limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(int(length), settings)
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
                raise too_large(len(body), settings)

    try:
        # a client that stops sending would otherwise hold its place in the server forever
        await asyncio.wait_for(read_body(), timeout=settings.upload_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(
            408,
            f"the upload did not arrive within {settings.upload_timeout_s:g} s ({len(body):,} bytes received)",
            code="upload_timeout",
        ) from None
    form_request = Request(request.scope, receive=_replay_receive(bytes(body)))
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
            raise too_large(len(data), settings)
        if not data:
            raise ApiError(
                400, f"{upload.filename or 'file'}: the uploaded file is empty", param="file", code="invalid_audio"
            )
        stream = parse_bool(text_field(form, "stream"), "stream")
        fields = validate_fields(form, settings, hotwords_from_prompt)
        if stream and fields["response_format"] in ("srt", "vtt"):
            raise ApiError(
                400,
                f"'stream': responses in {fields['response_format']} are not streamed; stream text, json or "
                "verbose_json (or leave stream out)",
                param="stream",
            )
        return TranscriptionRequest(data=data, filename=upload.filename or "file", stream=stream, **fields)
    finally:
        await form.close()


def too_large(size: int, settings: ServerSettings) -> ApiError:
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


def validate_fields(
    form: Any, settings: ServerSettings, hotwords_from_prompt: Callable[[str | None], list[str]]
) -> dict[str, Any]:
    """The form's fields other than ``file`` and ``stream``, checked: ``response_format``, ``granularities``,
    ``hotwords`` and ``language`` (the request's, else the server's, else "unknown")."""
    model_name = text_field(form, "model")
    if not model_name:
        raise ApiError(400, "you must provide a model parameter", param="model")
    if not settings.serves(model_name):
        raise ApiError(
            404,
            f"The model '{model_name}' does not exist; this server serves {settings.model_ids()}",
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
    grans = _granularities(form)
    if grans and fmt != "verbose_json":
        raise ApiError(
            400,
            "'timestamp_granularities[]' needs response_format 'verbose_json'",
            param="timestamp_granularities",
        )
    logprobs = _includes(form) == {"logprobs"}
    if logprobs and fmt != "json":
        raise ApiError(400, f"'include[]': logprobs needs response_format 'json'; got {fmt!r}", param="include")
    language = _language(form, settings)
    _check_temperature(text_field(form, "temperature"))
    prompt = text_field(form, "prompt")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(400, f"'prompt': at most {MAX_PROMPT_CHARS} characters; got {len(prompt)}", param="prompt")
    return {
        "response_format": fmt,
        "granularities": set(grans) or {"segment"},
        "hotwords": hotwords_from_prompt(prompt),
        "language": language or settings.language or "unknown",
        "logprobs": logprobs,
        "vad": _chunking_strategy(form),
    }


#: OpenAI's server_vad fields: the engine setting each sets, and the factor from its unit to seconds
_SERVER_VAD = {
    "threshold": ("vad_threshold", 1.0),
    "prefix_padding_ms": ("vad_pad_s", 1e-3),
    "silence_duration_ms": ("vad_min_silence_s", 1e-3),
}


def _chunking_strategy(form: Any) -> dict[str, Any] | None:
    """OpenAI's ``chunking_strategy`` as engine VAD settings: ``auto`` (voice activity detection whatever the
    upload's length), or ``{"type": "server_vad", ...}`` (JSON in the field, or ``chunking_strategy[field]``
    fields as SDKs send a nested object in a form) with its fields in place of the server's; None when absent."""
    raw = text_field(form, "chunking_strategy")
    fields = {k[len("chunking_strategy[") : -1]: form.get(k) for k in form if k.startswith("chunking_strategy[")}
    if raw is None and not fields:
        return None
    if raw is not None and raw.strip() == "auto" and not fields:
        return {"vad": True}
    if raw is not None:
        try:
            fields = json.loads(raw)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ApiError(
                400,
                f"'chunking_strategy': expected 'auto' or a server_vad object; got {raw[:80]!r}",
                param="chunking_strategy",
            )
    if fields.get("type") != "server_vad":
        raise ApiError(
            400,
            f"'chunking_strategy': type must be 'server_vad'; got {fields.get('type')!r}",
            param="chunking_strategy",
        )
    out: dict[str, Any] = {"vad": True}
    for key, value in fields.items():
        if key == "type":
            continue
        if key not in _SERVER_VAD:
            raise ApiError(
                400,
                f"'chunking_strategy': unknown field {key!r}; expected {sorted(_SERVER_VAD)}",
                param="chunking_strategy",
            )
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        name, unit = _SERVER_VAD[key]
        valid = 0.0 < number < 1.0 if key == "threshold" else 0.0 <= number <= 10_000.0
        if not valid:
            allowed = "between 0 and 1" if key == "threshold" else "0 to 10000 ms"
            raise ApiError(
                400, f"'chunking_strategy': {key} must be {allowed}; got {value!r}", param="chunking_strategy"
            )
        out[name] = number * unit
    return out


def _includes(form: Any) -> set[str]:
    """OpenAI's ``include[]``: what to add to the response (``logprobs``)."""
    return set(_list_field(form, "include", INCLUDES, f"expected {list(INCLUDES)}"))


def _granularities(form: Any) -> list[str]:
    return _list_field(form, "timestamp_granularities", GRANULARITIES, "expected 'word' and/or 'segment'")


def _list_field(form: Any, name: str, allowed: tuple[str, ...], expected: str) -> list[str]:
    """The values of an array field (``name[]`` or ``name``, repeated or comma-separated), each one of
    ``allowed``; otherwise a 400 that says what was ``expected``."""
    values: list[str] = []
    for key in (f"{name}[]", name):
        for value in form.getlist(key):
            if not isinstance(value, str):
                raise ApiError(400, f"'{key}' must be a text field", param=name)
            values.extend(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ApiError(400, f"'{name}[]': {expected}; got {bad}", param=name)
    return values


def _language(form: Any, settings: ServerSettings) -> str | None:
    language = text_field(form, "language")
    if language is None:
        return None
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
    return language


def _check_temperature(temperature: str | None) -> None:
    """``temperature`` is accepted and ignored (CTC decoding is deterministic), but must be in [0, 1]."""
    if temperature is None or not temperature.strip():
        return
    try:
        t = float(temperature)
    except ValueError:
        t = math.nan
    if not 0.0 <= t <= 1.0:
        raise ApiError(400, f"'temperature': expected a number in [0, 1]; got {temperature!r}", param="temperature")


def _replay_receive(body: bytes) -> Callable[[], Any]:
    """An ASGI ``receive`` that gives ``body`` once (the form parser reads the body already read)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
