"""The server's settings (what ``w2vlm serve`` configures) and its fixed limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from w2vlm import limits
from w2vlm.model import check_language

MAX_PROMPT_CHARS = limits.SERVER_MAX_PROMPT_CHARS
MAX_HOTWORDS = limits.SERVER_MAX_HOTWORDS
#: Slack over the upload limit for the multipart framing and the other form fields.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class ServerSettings:
    """What ``w2vlm serve`` configures. ``model_id`` is the name ``GET /v1/models`` lists."""

    model_id: str = "w2vlm"
    #: other names requests may give (OpenAI's transcription models, so that code written for them runs as it is)
    aliases: tuple[str, ...] = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
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

    @property
    def capacity(self) -> int:
        """How many requests the server holds at once (reading their upload, waiting or decoding)."""
        return self.workers + self.max_queue

    def model_ids(self) -> list[str]:
        """The served model's id, then its aliases."""
        return [self.model_id, *[a for a in self.aliases if a != self.model_id]]

    def serves(self, name: str) -> bool:
        """Whether a request for model ``name`` is for this server (its id or an alias, in any case)."""
        return name.lower() in {m.lower() for m in self.model_ids()}
