"""Hotwords as the decoder takes them: phrases (or ``(phrase, weight)`` pairs, or a dict) checked and made into
the native search's automaton, with the automata of the last few lists kept for calls that repeat them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Union

import numpy as np

from w2vlm import _core, limits
from w2vlm.errors import DecoderInputError

Hotwords = Union[Iterable[str], Iterable[tuple[str, float]], dict[str, float], str, None]  # noqa: UP007

#: automata kept (a server's requests usually repeat a few lists)
_KEPT = 8


def normalize_hotwords(hotwords: Hotwords, weight: float) -> tuple[tuple[str, float], ...]:
    """``(phrase, weight)`` pairs of ``hotwords`` (``weight`` for plain phrases), whitespace collapsed and empty
    phrases dropped; :class:`~w2vlm.errors.DecoderInputError` for a bad item or weight, or past the limits
    (:data:`w2vlm.limits.MAX_HOTWORDS`, :data:`w2vlm.limits.MAX_HOTWORD_CHARS`)."""
    if hotwords is None:
        return ()
    if isinstance(hotwords, str):
        hotwords = [hotwords]
    items: Iterable[Any] = hotwords.items() if isinstance(hotwords, dict) else hotwords
    out: list[tuple[str, float]] = []
    chars = 0
    for item in items:
        if isinstance(item, str):
            phrase, w = item, weight
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
            phrase, w = item[0], item[1]
        else:
            raise DecoderInputError(f"hotwords must be strings or (phrase, weight) pairs, got {item!r}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w):
            raise DecoderInputError(f"hotword weight of {phrase[:80]!r} must be a finite number, got {w!r}")
        if abs(w) > limits.MAX_ABS_WEIGHT:
            raise DecoderInputError(
                f"hotword weight of {phrase[:80]!r} is {w!r}; at most {limits.MAX_ABS_WEIGHT:g} in magnitude "
                "(w2vlm.limits.MAX_ABS_WEIGHT)"
            )
        phrase = " ".join(phrase.split())
        if phrase:
            out.append((phrase, float(w)))
            chars += len(phrase)
            if len(out) > limits.MAX_HOTWORDS:
                raise DecoderInputError(
                    f"more than {limits.MAX_HOTWORDS:,} hotwords (w2vlm.limits.MAX_HOTWORDS); pass fewer phrases"
                )
            if chars > limits.MAX_HOTWORD_CHARS:
                raise DecoderInputError(
                    f"the hotwords have more than {limits.MAX_HOTWORD_CHARS:,} characters in all "
                    "(w2vlm.limits.MAX_HOTWORD_CHARS); pass fewer or shorter phrases"
                )
    return tuple(out)


class HotwordAutomata:
    """The native automata of the last few hotword lists, by list (not shared between threads' writes: the
    decoder builds its options under the GIL)."""

    def __init__(self) -> None:
        self._kept: OrderedDict[Any, _core.HotwordAutomaton] = OrderedDict()

    def get(self, hotwords: Hotwords, weight: float) -> _core.HotwordAutomaton | None:
        """The automaton of ``hotwords`` (None for none)."""
        if hotwords is None:
            return None
        # fast path: a list of plain strings is looked up as given, before any normalisation
        raw_key: Any = None
        if isinstance(hotwords, (list, tuple)) and all(type(h) is str for h in hotwords):
            raw_key = ("raw", tuple(hotwords), weight)
            hit = self._kept.get(raw_key)
            if hit is not None:
                self._kept.move_to_end(raw_key)
                return hit
        key = normalize_hotwords(hotwords, weight)
        if not key:
            return None
        hit = self._kept.get(key)
        if hit is None:
            hit = _core.HotwordAutomaton(list(key))
        self._kept[key] = hit
        if raw_key is not None:
            self._kept[raw_key] = hit
        if len(self._kept) > _KEPT:
            self._kept.popitem(last=False)
        return hit


__all__ = ["HotwordAutomata", "Hotwords", "normalize_hotwords"]
