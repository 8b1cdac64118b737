"""w2vlm: CTC beam search with n-gram LM fusion for wav2vec2-family speech models."""

from __future__ import annotations

from w2vlm.errors import (
    AlphabetError,
    AudioError,
    DecoderInputError,
    LanguageModelError,
    ModelError,
    VocabularyMismatchError,
    W2vlmError,
)

__version__ = "0.1.0"

__all__ = [
    "AlphabetError",
    "AudioError",
    "DecoderInputError",
    "LanguageModelError",
    "ModelError",
    "VocabularyMismatchError",
    "W2vlmError",
    "__version__",
]
