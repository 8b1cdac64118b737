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
    "Wav2Vec2ProcessorWithLM",
    "__version__",
    "default_model_dir",
    "install",
    "load_audio",
    "load_model",
    "pipeline",
    "uninstall",
]

# The transformers-style API imports torch/transformers: load it on first use so `import w2vlm` stays light.
_LAZY = {
    "pipeline": "w2vlm.pipeline",
    "Wav2Vec2ProcessorWithLM": "w2vlm.processor",
    "load_model": "w2vlm.model",
    "default_model_dir": "w2vlm.model",  # the embedded model's folder
    "load_audio": "w2vlm.audio",
    # w2vlm.install(): transformers' AutoProcessor / pipeline use w2vlm's processor and LM decoding
    "install": "w2vlm.hf_compat",
    "uninstall": "w2vlm.hf_compat",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'w2vlm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
