"""OpenAI-compatible transcription server (FastAPI) with a web page at ``/``: see :mod:`w2vlm.server.app`."""

from w2vlm.server.app import ServerSettings, Transcriber, _settled_prefix, create_app, serve

__all__ = ["ServerSettings", "Transcriber", "_settled_prefix", "create_app", "serve"]
