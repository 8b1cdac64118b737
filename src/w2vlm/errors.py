"""Exceptions raised by w2vlm.

Every error w2vlm raises on bad input is a :class:`W2vlmError`. Errors about values handed to the decoder
also subclass :class:`ValueError`, so code written for pyctcdecode (which raises ``ValueError``) keeps working.
"""

from __future__ import annotations


class W2vlmError(Exception):
    """Base class of all w2vlm errors."""


class DecoderInputError(W2vlmError, ValueError):
    """Logits or decoding parameters that the decoder cannot use (shape, values, vocabulary size)."""


class DecoderReleasedError(W2vlmError, KeyError):
    """A decoder whose language model was released with ``cleanup()`` / ``clear_class_models()`` (pyctcdecode
    raises ``KeyError`` then)."""


class AlphabetError(W2vlmError, ValueError):
    """Labels that do not form a valid CTC alphabet (duplicates, several blanks, ...)."""


class LanguageModelError(W2vlmError, ValueError):
    """A language model file that is missing, empty or malformed."""


class VocabularyMismatchError(W2vlmError, ValueError):
    """The tokenizer's vocabulary and the decoder's alphabet disagree."""


class AudioError(W2vlmError, ValueError):
    """Audio that cannot be read or used (corrupt, empty, unsupported, too short)."""


class ModelError(W2vlmError):
    """An acoustic model that cannot be found or loaded."""


class ProcessorComponentError(W2vlmError, ValueError):
    """A processor given a component of the wrong kind (e.g. a feature extractor that is not a wav2vec2 one);
    a ``ValueError`` as transformers raises."""


class UnexpectedArgumentError(W2vlmError, TypeError):
    """An unknown keyword argument (e.g. in ``decoder_kwargs``); a ``TypeError`` as Python and transformers
    raise for one."""


class ManifestError(W2vlmError, ValueError):
    """A training or evaluation manifest (JSONL of audio path + text) that is missing or malformed."""


class OutputError(W2vlmError, OSError):
    """An output path that cannot be written (a parent that is a file, a folder where a file goes, no
    permission); an ``OSError`` as the failed call raised."""
