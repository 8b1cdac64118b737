"""The transcription engine every surface uses: :class:`Engine` (audio → transcripts, stages in parallel),
:class:`DecodeConfig` (how to decode, per call) and :class:`EngineConfig` (how to feed the model)."""

from w2vlm.engine.config import ConfigError, DecodeConfig, EngineConfig
from w2vlm.engine.engine import Engine

__all__ = ["ConfigError", "DecodeConfig", "Engine", "EngineConfig"]
