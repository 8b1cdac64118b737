"""The FastAPI app: its routes, error handlers and authentication, and :func:`serve` (uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from w2vlm.model import resolve_language
from w2vlm.server.forms import TRANSCRIPTION_REQUEST_SCHEMA, read_request
from w2vlm.server.responses import ApiError, error_response, internal_error, render, sse_response
from w2vlm.server.settings import ServerSettings
from w2vlm.server.transcriber import ServerState, StreamSlot, Transcriber

logger = logging.getLogger("w2vlm.server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
WEB_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}


def create_app(
    model: Any = None,
    settings: ServerSettings | None = None,
    *,
    device: str = "auto",
    dtype: str | None = None,
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
            dtype=dtype,
            quantize=quantize,
            vad=settings.vad,
            vad_parameters=settings.vad_parameters,
        )
    folder = getattr(pipe.model, "name_or_path", None)
    if folder and Path(folder).is_dir():  # the model card's language, or the setting checked against it
        settings.language = resolve_language(settings.language, folder)
    state = ServerState(Transcriber(pipe, settings.decoder_kwargs, settings.max_audio_s), settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="w2vlm", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.w2vlm = state
    app.add_middleware(RequestIds)
    _add_error_handlers(app)

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

    @app.get("/health")
    @app.head("/health", include_in_schema=False)  # uptime checkers, load balancers (one operation in the schema)
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
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "w2vlm"} for m in settings.model_ids()
            ],
        }

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        check_auth(request)
        if not settings.serves(model_id):
            raise ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return {"id": model_id, "object": "model", "created": int(state.started), "owned_by": "w2vlm"}

    _add_web_routes(app)

    @app.post("/v1/audio/translations", include_in_schema=False)
    async def translations(request: Request) -> Response:
        check_auth(request)
        raise ApiError(
            404,
            "translation is not supported: this server transcribes speech in its model's language "
            f"({settings.language or 'unknown'}); use POST /v1/audio/transcriptions",
            code="unsupported_endpoint",
        )

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
            req = await read_request(request, settings, state.transcriber.hotwords_from_prompt)
            loop = asyncio.get_running_loop()
            if req.stream:
                # opened first: an upload that cannot be read is a 400, not an error event after a 200
                upload = await loop.run_in_executor(state.executor, state.open_upload, req)
                slot = StreamSlot(state, upload)
                release = False  # the stream's slot is released when its response ends
                return sse_response(lambda: state.stream_events(req, upload, slot.cancelled), state.executor, slot)
            transcript = await loop.run_in_executor(state.executor, state.transcribe, req)
            state.served += 1
            return render(req, transcript, state.token_ids)
        except Exception:
            state.failed += 1
            raise
        finally:
            if release:
                state.admitted -= 1

    return app


class RequestIds:
    """Every response gets OpenAI's ``x-request-id`` (a fresh ``req_`` id, which the openai SDK reports as
    ``request_id``) and ``openai-processing-ms`` (time to the response's start) headers. Plain ASGI, so that
    streamed responses pass through untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = f"req_{uuid.uuid4().hex}"

        async def with_ids(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                elapsed = str(round(1000 * (time.perf_counter() - started)))
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    (b"openai-processing-ms", elapsed.encode()),
                ]
            await send(message)

        await self.app(scope, receive, with_ids)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answered as OpenAI's JSON error body."""

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
        return error_response(internal_error(exc))


def _add_web_routes(app: FastAPI) -> None:
    """The web page and its files (not in the OpenAPI schema)."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.api_route("/web/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def web_file(name: str) -> FileResponse:
        if name not in WEB_FILES:
            raise ApiError(404, f"no such file: /web/{name}", code="not_found")
        return FileResponse(WEB_DIR / name, media_type=WEB_FILES[name])

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon() -> FileResponse:
        # the page links /web/favicon.svg; this is for browsers and tools that ask for /favicon.ico anyway
        return FileResponse(WEB_DIR / "favicon.svg", media_type=WEB_FILES["favicon.svg"])


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
    dtype: str | None = None,
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
    app = create_app(model, settings, device=device, dtype=dtype, quantize=quantize, processor=processor)
    logger.info("serving %s on http://%s:%d", settings.model_id, host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
