"""The output of :meth:`w2vlm.processor.Wav2Vec2ProcessorWithLM.batch_decode` / ``decode``.

It behaves as transformers' ``ModelOutput`` does: a ``dict`` (``isinstance(out, dict)`` is True) whose keys are
the fields that are set (not None), in field order, that is also readable by attribute (``out.text``) and by
position (``out[0]``, ``out.to_tuple()``). It does not import transformers.
"""

from __future__ import annotations

from typing import Any

_FIELDS = ("text", "logit_score", "lm_score", "word_offsets")


class Wav2Vec2DecoderWithLMOutput(dict):
    """Fields as in transformers: ``text`` (the transcription(s)), ``logit_score`` (acoustic log-score of the
    beam), ``lm_score`` (logit score plus the weighted LM and word-insertion scores) and, with
    ``output_word_offsets=True``, ``word_offsets`` = ``[{"word", "start_offset", "end_offset"}]`` in logit frames.
    Lists per batch item for ``batch_decode``; with ``n_best > 1`` each entry is itself a list over the n best
    beams. Only the fields that are set are keys of the dict."""

    __slots__ = ()

    def __init__(
        self,
        text: Any = None,
        logit_score: Any = None,
        lm_score: Any = None,
        word_offsets: Any = None,
    ) -> None:
        super().__init__()
        for name, value in zip(_FIELDS, (text, logit_score, lm_score, word_offsets)):
            if value is not None:
                super().__setitem__(name, value)

    # attribute access: every field is an attribute (None when unset)
    def __getattr__(self, name: str) -> Any:
        if name in _FIELDS:
            return self.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _FIELDS:
            raise AttributeError(f"{type(self).__name__!r} has no field {name!r}; fields: {', '.join(_FIELDS)}")
        self[name] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in _FIELDS:
            raise KeyError(f"{key!r} is not a field of {type(self).__name__}; fields: {', '.join(_FIELDS)}")
        if value is None:
            self.pop(key, None)
            return
        # keep the keys in field order, as a dataclass-backed ModelOutput does
        items = {name: (value if name == key else self[name]) for name in _FIELDS if name == key or name in self}
        super().clear()
        super().update(items)

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[Any, ...]:
        """The set fields' values, in field order."""
        return tuple(self.values())

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(getattr(self, name) for name in _FIELDS))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"{type(self).__name__}({inner})"
