"""OpenAI-compatible transcription server (FastAPI) with a web page at ``/``.

Endpoints:

- ``POST /v1/audio/transcriptions``: OpenAI's speech-to-text request (multipart ``file``, ``model``,
  ``language``, ``prompt`` — used as hotwords —, ``response_format`` json|text|srt|vtt|verbose_json,
  ``timestamp_granularities[]`` word|segment, ``stream`` for server-sent events, ``temperature`` accepted and
  ignored since CTC decoding is deterministic, ``include[]=logprobs`` with json: one entry a word, the log of
  its confidence, ``chunking_strategy`` auto or server_vad: the request's voice activity detection).
  ``verbose_json`` words carry an extra ``confidence`` in [0, 1].
- ``GET /v1/models``: the served model (and its aliases, ``whisper-1`` by default, so that code written for
  OpenAI runs unchanged).
- ``GET /health``: liveness plus the queue's state and the page's settings.
- ``GET /``: the web page (upload or record audio, transcript with word timings and confidences).

Decoding runs on a thread pool of ``workers`` threads (the model forward and the native beam search release
the GIL), never on the event loop. Admission is bounded: at most ``workers + max_queue`` requests are in the
server at once (reading their upload, waiting or decoding); one more gets 503 with ``Retry-After``. Uploads
above ``max_upload_bytes`` get 413 before they are read in full. Errors are OpenAI-style JSON
``{"error": {"message", "type", "param", "code"}}`` with 4xx status codes for bad requests.

Modules: :mod:`~w2vlm.server.settings` (settings and limits), :mod:`~w2vlm.server.forms` (the multipart form
→ a validated request), :mod:`~w2vlm.server.transcriber` (decoding on worker threads),
:mod:`~w2vlm.server.responses` (response bodies, server-sent events, errors), :mod:`~w2vlm.server.app` (the
routes, :func:`create_app`, :func:`serve`).
"""

from w2vlm.server.app import create_app, serve
from w2vlm.server.forms import GRANULARITIES, RESPONSE_FORMATS, TranscriptionRequest
from w2vlm.server.responses import ApiError, verbose_json
from w2vlm.server.settings import ServerSettings
from w2vlm.server.transcriber import Transcriber, settled_prefix

__all__ = [
    "GRANULARITIES",
    "RESPONSE_FORMATS",
    "ApiError",
    "ServerSettings",
    "Transcriber",
    "TranscriptionRequest",
    "create_app",
    "serve",
    "settled_prefix",
    "verbose_json",
]
