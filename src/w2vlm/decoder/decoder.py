"""The beam search decoder: pyctcdecode's API on w2vlm's native core."""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from w2vlm import _core, limits
from w2vlm.decoder.alphabet import Alphabet, verify_alphabet_coverage
from w2vlm.decoder.confidence import word_confidences
from w2vlm.decoder.language_model import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_SCORE_BOUNDARY,
    DEFAULT_UNK_SCORE_OFFSET,
    LanguageModel,
)
from w2vlm.defaults import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_HOTWORD_WEIGHT,
    DEFAULT_MIN_TOKEN_LOGP,
    DEFAULT_PRUNE_LOGP,
    available_cpus,
)
from w2vlm.errors import AlphabetError, DecoderInputError, LanguageModelError

logger = logging.getLogger("w2vlm.decoder")

MIN_TOKEN_CLIP_P = 1e-15
_LOG_MIN_P = float(np.log(MIN_TOKEN_CLIP_P))

ALPHABET_FILENAME = "alphabet.json"
LANGUAGE_MODEL_DIRNAME = "language_model"

Hotwords = Union[Iterable[str], Iterable[tuple[str, float]], dict[str, float], str, None]  # noqa: UP007
Frames = tuple[int, int]


class _ConfidenceContext:
    """Computes the word confidences of all beams of one decoding, once, on first use."""

    def __init__(
        self, beams: list[Any], log_probs: np.ndarray, labels: list[str], lm: Any = None, normalized: bool = True
    ) -> None:
        self.beams = beams
        self.log_probs = log_probs  # logits when not ``normalized``: log-softmaxed on first use
        self.normalized = normalized
        self.labels = labels
        self.lm = lm
        self._values: list[list[float]] | None = None

    def get(self, index: int) -> list[float]:
        if self._values is None:
            lp = self.log_probs if self.normalized else to_log_probs(self.log_probs, len(self.labels))
            self._values = word_confidences(self.beams, lp, self.labels, self.lm)
            self.log_probs = None  # type: ignore[assignment]
        return self._values[index]


class _BeamExtras:
    """Attributes shared by both result tuples."""

    _confidence: tuple[_ConfidenceContext, int] | None = None
    _char_source: tuple[Any, list[str]] | None = None  # (native hypothesis, labels), converted on first use
    _char_frames: list[tuple[str, Frames]] | None = None

    @property
    def char_frames(self) -> list[tuple[str, Frames]]:
        """Each emitted token (character, delimiter or BPE piece) with its frame span, in order."""
        if self._char_frames is None:
            if self._char_source is None:
                self._char_frames = []
            else:
                hyp, labels = self._char_source
                self._char_frames = [(labels[t], (s, e)) for t, s, e in hyp.tokens]
                self._char_source = None
        return self._char_frames

    @char_frames.setter
    def char_frames(self, value: list[tuple[str, Frames]]) -> None:
        self._char_frames = list(value)
        self._char_source = None

    @property
    def word_confidences(self) -> list[float]:
        """Confidence in [0, 1] of each word (see :func:`w2vlm.decoder.confidence.word_confidences`)."""
        if self._confidence is None:
            return []
        ctx, i = self._confidence
        return ctx.get(i)

    @property
    def words(self) -> list[dict[str, Any]]:
        """Words with frame spans and confidences: [{"word", "start", "end", "confidence"}, ...]."""
        conf = self.word_confidences
        return [
            {"word": w, "start": s, "end": e, "confidence": conf[i] if i < len(conf) else None}
            for i, (w, (s, e)) in enumerate(self.text_frames)  # type: ignore[attr-defined]
        ]

    def __getstate__(self) -> dict[str, Any]:
        self.char_frames  # noqa: B018 - materialise before pickling
        state = dict(self.__dict__)
        state.pop("_char_source", None)
        if state.pop("_confidence", None) is not None:
            state["_fixed_confidences"] = self.word_confidences
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        fixed = state.pop("_fixed_confidences", None)
        self.__dict__.update(state)
        if fixed is not None:
            ctx = _ConfidenceContext([], np.zeros((0, 0)), [])
            ctx._values = [fixed]
            self._confidence = (ctx, 0)


class OutputBeam(_BeamExtras, tuple):
    """One hypothesis. A tuple ``(text, last_lm_state, text_frames, logit_score, lm_score)`` as in pyctcdecode,
    with named attributes and more: ``char_frames`` (each emitted token with its frame span).

    Frame spans are ``(start, end)`` with ``end`` exclusive, in logit frames.
    """

    def __new__(
        cls,
        text: str,
        last_lm_state: Any,
        text_frames: list[tuple[str, Frames]],
        logit_score: float,
        lm_score: float,
        char_frames: list[tuple[str, Frames]] | None = None,
    ) -> OutputBeam:
        self = super().__new__(cls, (text, last_lm_state, text_frames, logit_score, lm_score))
        if char_frames is not None:
            self.char_frames = char_frames
        return self

    text = property(lambda self: self[0], doc="The transcript.")
    last_lm_state = property(lambda self: self[1], doc="LM state after the last word (to continue decoding).")
    text_frames = property(lambda self: self[2], doc="[(word, (start_frame, end_frame)), ...]")
    word_frames = text_frames
    logit_score = property(lambda self: self[3], doc="Acoustic log-probability of the hypothesis.")
    lm_score = property(lambda self: self[4], doc="Ranking score: acoustic + LM + hotword terms.")

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling
        return (*tuple(self), self.char_frames)

    def __repr__(self) -> str:
        return (
            f"OutputBeam(text={self.text!r}, logit_score={self.logit_score:.3f}, lm_score={self.lm_score:.3f}, "
            f"text_frames={self.text_frames!r})"
        )


class OutputBeamMPSafe(_BeamExtras, tuple):
    """pyctcdecode's batch result: a tuple ``(text, text_frames, logit_score, lm_score)`` (no LM state)."""

    def __new__(
        cls,
        text: str,
        text_frames: list[tuple[str, Frames]],
        logit_score: float,
        lm_score: float,
        char_frames: list[tuple[str, Frames]] | None = None,
    ) -> OutputBeamMPSafe:
        self = super().__new__(cls, (text, text_frames, logit_score, lm_score))
        if char_frames is not None:
            self.char_frames = char_frames
        return self

    text = property(lambda self: self[0])
    text_frames = property(lambda self: self[1])
    word_frames = text_frames
    logit_score = property(lambda self: self[2])
    lm_score = property(lambda self: self[3])

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (*tuple(self), self.char_frames)


def _normalize_hotwords(hotwords: Hotwords, weight: float) -> tuple[tuple[str, float], ...]:
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


def check_logits(logits: Any, vocab_size: int) -> np.ndarray:
    """Validate a (frames, vocab) matrix of logits or probabilities: a float array (no copy when possible)."""
    try:
        a = np.asarray(logits)
    except Exception as e:  # e.g. a CUDA tensor
        raise DecoderInputError(
            f"logits must be array-like (numpy, CPU tensor), got {type(logits).__name__}: {e}"
        ) from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise DecoderInputError(f"logits must be a numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise DecoderInputError(
            f"Input logits have {a.ndim} dimensions (shape {a.shape}), but need 2: (time, vocabulary)"
        )
    if a.shape[1] != vocab_size:
        raise DecoderInputError(
            f"Input logits shape is {a.shape}, but vocabulary is size {vocab_size}. "
            "Need logits of shape: (time, vocabulary)"
        )
    if a.shape[0] == 0:
        return np.zeros((0, vocab_size), dtype=np.float32)
    a = a.astype(np.float64 if a.dtype == np.float64 else np.float32, copy=False)
    bad = np.isnan(a) | np.isposinf(a)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DecoderInputError(
            f"logits contain {'NaN' if np.isnan(a[row, col]) else '+inf'} at frame {row}, column {col} "
            f"({int(bad.any(axis=1).sum())} bad frames in all)"
        )
    finite_rows = np.isfinite(a).any(axis=1)
    if not finite_rows.all():
        row = int(np.argmin(finite_rows))
        raise DecoderInputError(f"logits frame {row} is -inf in every column")
    return a


def to_log_probs(logits: Any, vocab_size: int) -> np.ndarray:
    """Validate a (frames, vocab) matrix and return float32 log-probabilities, C-contiguous.

    Rows that are probabilities (all values in [0, 1], rows summing to 1) are logged; anything else is taken
    as logits and log-softmaxed. Values are clipped at log(1e-15) like pyctcdecode.
    """
    a = check_logits(logits, vocab_size)
    if a.shape[0] == 0:
        return a
    sums = a.sum(axis=1, dtype=np.float64)
    if a.min() >= 0.0 and a.max() <= 1.0 and np.allclose(sums, 1.0, atol=1e-3):
        with np.errstate(divide="ignore"):
            out = np.log(np.clip(a, MIN_TOKEN_CLIP_P, 1.0))
    else:
        m = a.max(axis=1, keepdims=True)
        shifted = a - m
        with np.errstate(divide="ignore", under="ignore"):
            out = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        np.clip(out, _LOG_MIN_P, 0.0, out=out)
    return np.ascontiguousarray(out, dtype=np.float32)


class BeamSearchDecoderCTC:
    """CTC beam search decoder with optional n-gram LM fusion and hotwords (pyctcdecode-compatible).

    All decoding runs in native code with the GIL released; one decoder (and its LM) can be used from many
    threads at once, and :meth:`decode_batch` spreads a batch over a native thread pool.
    """

    def __init__(
        self, alphabet: Alphabet, language_model: LanguageModel | None = None, *, pyctcdecode_eos: bool = True
    ) -> None:
        if not isinstance(alphabet, Alphabet):
            raise AlphabetError(f"alphabet must be a w2vlm Alphabet, got {type(alphabet).__name__}")
        if language_model is not None and not isinstance(language_model, LanguageModel):
            raise LanguageModelError(
                f"language_model must be a w2vlm LanguageModel or None, got {type(language_model).__name__}"
            )
        self._alphabet = alphabet
        self._native_alphabet = _core.Alphabet(alphabet.labels, alphabet.is_bpe)
        self._language_model = language_model
        #: score a hypothesis ending in a word delimiter as pyctcdecode does (same transcripts); False: only </s>
        self.pyctcdecode_eos = bool(pyctcdecode_eos)
        self._idx2vocab = dict(enumerate(alphabet.labels))
        self._labels = alphabet.labels
        self._hotword_cache: OrderedDict[Any, _core.HotwordAutomaton] = OrderedDict()

    # -- properties -------------------------------------------------------------------------------
    @property
    def alphabet(self) -> Alphabet:
        return self._alphabet

    @property
    def language_model(self) -> LanguageModel | None:
        return self._language_model

    @property
    def model(self) -> LanguageModel | None:  # transformers reads decoder.model_container[...]; keep a handle
        return self._language_model

    def reset_params(
        self,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        lm_score_boundary: bool | None = None,
    ) -> None:
        """Change LM fusion parameters in place (no effect without a language model)."""
        if self._language_model is None:
            return
        self._language_model.reset_params(
            alpha=alpha, beta=beta, unk_score_offset=unk_score_offset, score_boundary=lm_score_boundary
        )

    # -- options ----------------------------------------------------------------------------------
    def _hotword_automaton(self, hotwords: Hotwords, weight: float) -> _core.HotwordAutomaton | None:
        if hotwords is None:
            return None
        # fast path: a list of plain strings is looked up as given, before any normalisation
        raw_key: Any = None
        if isinstance(hotwords, (list, tuple)) and all(type(h) is str for h in hotwords):
            raw_key = ("raw", tuple(hotwords), weight)
            hit = self._hotword_cache.get(raw_key)
            if hit is not None:
                self._hotword_cache.move_to_end(raw_key)
                return hit
        key = _normalize_hotwords(hotwords, weight)
        if not key:
            return None
        hit = self._hotword_cache.get(key)
        if hit is None:
            hit = _core.HotwordAutomaton(list(key))
        self._hotword_cache[key] = hit
        if raw_key is not None:
            self._hotword_cache[raw_key] = hit
        automaton = hit
        if len(self._hotword_cache) > 8:
            self._hotword_cache.popitem(last=False)
        return automaton

    def _options(
        self,
        beam_width: int,
        beam_prune_logp: float,
        token_min_logp: float,
        prune_history: bool,
        hotwords: Hotwords,
        hotword_weight: float,
        lm_start_state: Any = None,
        n_best: int | None = None,
    ) -> _core.DecodeOptions:
        if isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer)) or beam_width < 1:
            raise DecoderInputError(f"beam_width must be a positive integer, got {beam_width!r}")
        if beam_width > limits.MAX_BEAM_WIDTH:
            raise DecoderInputError(
                f"beam_width is {beam_width}; at most {limits.MAX_BEAM_WIDTH} (w2vlm.limits.MAX_BEAM_WIDTH)"
            )
        for name, v in (("beam_prune_logp", beam_prune_logp), ("token_min_logp", token_min_logp)):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not np.isfinite(v):
                raise DecoderInputError(f"{name} must be a finite number, got {v!r}")
        if beam_prune_logp > 0:
            raise DecoderInputError(f"beam_prune_logp must be <= 0 (a log-probability margin), got {beam_prune_logp!r}")
        if isinstance(hotword_weight, bool) or not isinstance(hotword_weight, (int, float, np.floating)):
            raise DecoderInputError(f"hotword_weight must be a number, got {hotword_weight!r}")
        if not np.isfinite(hotword_weight) or abs(hotword_weight) > limits.MAX_ABS_WEIGHT:
            raise DecoderInputError(
                f"hotword_weight must be finite and at most {limits.MAX_ABS_WEIGHT:g} in magnitude "
                f"(w2vlm.limits.MAX_ABS_WEIGHT), got {hotword_weight!r}"
            )
        o = _core.DecodeOptions()
        o.beam_width = int(beam_width)
        o.beam_prune_logp = float(beam_prune_logp)
        o.token_min_logp = float(token_min_logp)
        o.prune_history = bool(prune_history)
        o.pyctcdecode_eos = self.pyctcdecode_eos
        lm = self._language_model
        if lm is not None:
            o.alpha = lm.alpha
            o.beta = lm.beta
            o.unk_score_offset = lm.unk_score_offset
            o.score_boundary = lm.score_boundary
        o.hotwords = self._hotword_automaton(hotwords, float(hotword_weight))
        if lm_start_state is not None:
            if not isinstance(lm_start_state, _core.LMState):
                raise DecoderInputError(
                    f"lm_start_state must be the last_lm_state of a w2vlm result, got {type(lm_start_state).__name__}"
                )
            o.set_start_state(lm_start_state)
        if n_best is not None:
            o.n_best = int(n_best)
        return o

    def options(
        self,
        *,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        prune_history: bool = True,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        score_boundary: bool | None = None,
        n_best: int | None = None,
    ) -> _core.DecodeOptions:
        """Native options for one call, for :meth:`decode_beams_with`. The LM fusion parameters default to
        the language model's own; values given here apply to this call only (the shared LM is not changed)."""
        o = self._options(
            beam_width, beam_prune_logp, token_min_logp, prune_history, hotwords, hotword_weight, n_best=n_best
        )
        if self._language_model is not None:
            for name, value in (("alpha", alpha), ("beta", beta), ("unk_score_offset", unk_score_offset)):
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                    raise DecoderInputError(f"{name} must be a finite number, got {value!r}")
                if not np.isfinite(value) or abs(float(value)) > limits.MAX_ABS_WEIGHT:
                    raise DecoderInputError(
                        f"{name} must be finite and at most {limits.MAX_ABS_WEIGHT:g} in magnitude "
                        f"(w2vlm.limits.MAX_ABS_WEIGHT), got {value!r}"
                    )
                setattr(o, name, float(value))
            if score_boundary is not None:
                o.score_boundary = bool(score_boundary)
        return o

    def decode_beams_with(
        self, options: _core.DecodeOptions, log_probs_list: Sequence[Any], num_threads: int | None = None
    ) -> list[list[OutputBeam]]:
        """Beams (best first) of several (frames, vocab) matrices with options from :meth:`options`, decoded in
        parallel on ``num_threads`` native threads (logits are normalised there too)."""
        arrays, results = self._batch_arrays(log_probs_list, options, num_threads, raw=True)
        out = []
        for hyps, raw in zip(results, arrays):
            beams = [self._to_output(h) for h in hyps]
            out.append(self._with_confidence(beams, raw, normalized=False))
        return out

    def _native_lm(self) -> _core.LanguageModel | None:
        return None if self._language_model is None else self._language_model.native

    def _to_output(self, h: _core.Hypothesis) -> OutputBeam:
        out = OutputBeam(h.text, h.lm_state, [(w, (s, e)) for w, s, e in h.words], h.logit_score, h.score)
        out._char_source = (h, self._labels)
        return out

    @staticmethod
    def _mp_safe(b: OutputBeam) -> OutputBeamMPSafe:
        out = OutputBeamMPSafe(b.text, b.text_frames, b.logit_score, b.lm_score)
        out._char_source, out._char_frames = b._char_source, b._char_frames
        out._confidence = b._confidence
        return out

    def _with_confidence(
        self, beams: list[OutputBeam], log_probs: np.ndarray, normalized: bool = True
    ) -> list[OutputBeam]:
        ctx = _ConfidenceContext(beams, log_probs, self._alphabet.labels, self._language_model, normalized)
        for i, b in enumerate(beams):
            b._confidence = (ctx, i)
        return beams

    # -- decoding ---------------------------------------------------------------------------------
    def decode_beams(
        self,
        logits: Any,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        prune_history: bool = False,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        lm_start_state: Any = None,
    ) -> list[OutputBeam]:
        """Decode one (frames, vocab) matrix; all final beams, best first."""
        lp = to_log_probs(logits, len(self._alphabet))
        o = self._options(
            beam_width,
            beam_prune_logp,
            token_min_logp,
            prune_history,
            hotwords,
            hotword_weight,
            lm_start_state,
        )
        hyps = _core.decode(self._native_alphabet, self._native_lm(), o, lp)
        return self._with_confidence([self._to_output(h) for h in hyps], lp)

    def decode(
        self,
        logits: Any,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        lm_start_state: Any = None,
    ) -> str:
        """Decode one (frames, vocab) matrix to its best transcript."""
        lp = to_log_probs(logits, len(self._alphabet))
        o = self._options(
            beam_width,
            beam_prune_logp,
            token_min_logp,
            True,
            hotwords,
            hotword_weight,
            lm_start_state,
            n_best=1,
        )
        hyps = _core.decode(self._native_alphabet, self._native_lm(), o, lp)
        return hyps[0].text if hyps else ""

    def _batch(
        self,
        logits_list: Any,
        options: _core.DecodeOptions,
        num_threads: int | None,
    ) -> list[list[_core.Hypothesis]]:
        return self._batch_arrays(logits_list, options, num_threads)[1]

    def _batch_arrays(
        self,
        logits_list: Any,
        options: _core.DecodeOptions,
        num_threads: int | None,
        raw: bool = False,
    ) -> tuple[list[np.ndarray], list[list[_core.Hypothesis]]]:
        if isinstance(logits_list, np.ndarray) and logits_list.ndim != 3:
            raise DecoderInputError(
                f"logits_list must be a list of (time, vocabulary) matrices or a (batch, time, vocabulary) array, "
                f"got an array of shape {logits_list.shape}"
            )
        arrays = []
        for i, x in enumerate(logits_list):
            try:
                if raw:  # validated here (as the float32 the workers read), normalised by them in parallel
                    a = check_logits(x, len(self._alphabet))
                    a32 = np.ascontiguousarray(a, dtype=np.float32)
                    arrays.append(a32 if a32 is a else check_logits(a32, len(self._alphabet)))
                else:
                    arrays.append(to_log_probs(x, len(self._alphabet)))
            except DecoderInputError as e:
                raise DecoderInputError(f"logits_list[{i}]: {e}") from None
        if num_threads is None:
            num_threads = available_cpus()
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise DecoderInputError(f"num_threads must be a positive integer, got {num_threads!r}")
        if num_threads > limits.MAX_THREADS:
            raise DecoderInputError(
                f"num_threads is {num_threads}; at most {limits.MAX_THREADS} (w2vlm.limits.MAX_THREADS)"
            )
        num_threads = int(num_threads)
        return arrays, _core.decode_batch(
            self._native_alphabet, self._native_lm(), options, arrays, num_threads, normalize=raw
        )

    def decode_batch(
        self,
        pool: Any,
        logits_list: Sequence[Any],
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        num_threads: int | None = None,
    ) -> list[str]:
        """Decode several matrices in parallel on native threads.

        ``pool`` is accepted for pyctcdecode compatibility and not needed: decoding runs on ``num_threads``
        native threads (default: the CPUs available to this process), with no multiprocessing.
        """
        if pool is not None:
            logger.debug("decode_batch: the pool argument is not used; decoding on native threads")
        o = self._options(beam_width, beam_prune_logp, token_min_logp, True, hotwords, hotword_weight, n_best=1)
        return [h[0].text if h else "" for h in self._batch_arrays(logits_list, o, num_threads, raw=True)[1]]

    def decode_beams_batch(
        self,
        pool: Any,
        logits_list: Sequence[Any],
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        prune_history: bool = False,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        num_threads: int | None = None,
    ) -> list[list[OutputBeamMPSafe]]:
        """Beams of several matrices, decoded in parallel; results are pyctcdecode's 4-tuples."""
        if pool is not None:
            logger.debug("decode_beams_batch: the pool argument is not used; decoding on native threads")
        o = self._options(beam_width, beam_prune_logp, token_min_logp, prune_history, hotwords, hotword_weight)
        arrays, results = self._batch_arrays(logits_list, o, num_threads)
        return [
            [self._mp_safe(b) for b in self._with_confidence([self._to_output(h) for h in hyps], lp)]
            for hyps, lp in zip(results, arrays)
        ]

    def attach_confidences(self, beams: list[OutputBeam], logits: np.ndarray) -> list[OutputBeam]:
        """Give beams from :meth:`stream_with` their ``word_confidences`` (computed on first use from the
        logits or log-probabilities they were decoded from)."""
        return self._with_confidence(beams, logits, normalized=False)

    def stream_with(self, options: _core.DecodeOptions) -> DecoderStream:
        """An incremental decoding with options from :meth:`options`."""
        return DecoderStream(self, options)

    def stream(
        self,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        prune_history: bool = False,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        lm_start_state: Any = None,
    ) -> DecoderStream:
        """Start an incremental decoding: feed chunks of frames, read partial results, finalize."""
        o = self._options(
            beam_width,
            beam_prune_logp,
            token_min_logp,
            prune_history,
            hotwords,
            hotword_weight,
            lm_start_state,
        )
        return DecoderStream(self, o)

    # -- hub layout -------------------------------------------------------------------------------
    def save_to_dir(self, filepath: str | os.PathLike[str]) -> None:
        """Write ``alphabet.json`` and ``language_model/`` into ``filepath``."""
        d = Path(filepath)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (ALPHABET_FILENAME + ".tmp")
        tmp.write_text(self._alphabet.dumps(), encoding="utf-8")
        os.replace(tmp, d / ALPHABET_FILENAME)
        if self._language_model is not None:
            self._language_model.save_to_dir(d / LANGUAGE_MODEL_DIRNAME)

    @staticmethod
    def parse_directory_contents(filepath: str | os.PathLike[str]) -> dict[str, str | None]:
        """Find ``alphabet.json`` and the ``language_model/`` directory (if any) in ``filepath``."""
        d = Path(filepath)
        if not d.is_dir():
            raise LanguageModelError(f"{d}: decoder directory not found")
        alphabet = d / ALPHABET_FILENAME
        if not alphabet.is_file():
            found = sorted(c.name for c in d.iterdir() if not c.name.startswith("."))
            raise AlphabetError(f"{d}: no {ALPHABET_FILENAME} (found {found})")
        lm_dir = d / LANGUAGE_MODEL_DIRNAME
        return {"alphabet": str(alphabet), "language_model": str(lm_dir) if lm_dir.is_dir() else None}

    @classmethod
    def load_from_dir(
        cls, filepath: str | os.PathLike[str], unigram_encoding: str | None = None
    ) -> BeamSearchDecoderCTC:
        """Load a decoder saved with :meth:`save_to_dir` (or a hub model folder with ``alphabet.json``)."""
        files = cls.parse_directory_contents(filepath)
        alphabet_path = Path(files["alphabet"])  # type: ignore[arg-type]
        try:
            alphabet = Alphabet.loads(alphabet_path.read_text(encoding="utf-8"))
        except AlphabetError as e:
            raise AlphabetError(f"{alphabet_path}: {e}") from None
        lm = None
        if files["language_model"] is not None:
            lm = LanguageModel.load_from_dir(files["language_model"], unigram_encoding=unigram_encoding)
        return cls(alphabet, lm)

    @classmethod
    def load_from_hf_hub(cls, model_id: str, cache_dir: str | None = None, **kwargs: Any) -> BeamSearchDecoderCTC:
        """Download (or find in the local cache) a hub repo with ``alphabet.json`` + ``language_model/``."""
        try:
            from huggingface_hub import snapshot_download
        except ImportError:  # pragma: no cover - depends on the environment
            raise LanguageModelError("load_from_hf_hub needs huggingface_hub: pip install huggingface_hub") from None
        path = snapshot_download(model_id, cache_dir=cache_dir, **kwargs)
        return cls.load_from_dir(path)


class DecoderStream:
    """Incremental decoding: beams and LM state are carried from chunk to chunk.

    ``finalize()`` gives the same beams as decoding the concatenated frames at once.
    """

    def __init__(self, decoder: BeamSearchDecoderCTC, options: _core.DecodeOptions) -> None:
        self._decoder = decoder
        self._search = _core.BeamSearch(decoder._native_alphabet, decoder._native_lm(), options)

    @property
    def frames_seen(self) -> int:
        return int(self._search.frames_seen)

    def feed(self, logits: Any) -> None:
        """Add a chunk of (frames, vocab) logits or probabilities."""
        lp = to_log_probs(logits, len(self._decoder.alphabet))
        self._search.advance(self._decoder._native_alphabet, lp)

    def partial(self) -> OutputBeam:
        """The best hypothesis so far (the last word may still change)."""
        return self._decoder._to_output(self._search.best_partial())

    def finalize(self) -> list[OutputBeam]:
        """End-of-utterance results, best first. The stream may still be fed afterwards."""
        return [self._decoder._to_output(h) for h in self._search.finalize()]


def build_ctcdecoder(
    labels: Sequence[str],
    kenlm_model_path: str | os.PathLike[str] | None = None,
    unigrams: Iterable[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    unk_score_offset: float = DEFAULT_UNK_SCORE_OFFSET,
    lm_score_boundary: bool = DEFAULT_SCORE_BOUNDARY,
    *,
    pyctcdecode_eos: bool = True,
) -> BeamSearchDecoderCTC:
    """Build a decoder from labels and (optionally) an ARPA LM, as pyctcdecode's function of the same name.

    ``pyctcdecode_eos=False`` scores the end of a hypothesis that ends in a word delimiter with ``</s>`` only,
    instead of pyctcdecode's unknown-empty-word penalty (more accurate; transcripts then differ from
    pyctcdecode's on such utterances).
    """
    alphabet = Alphabet.build_alphabet(labels)
    unigram_list = None if unigrams is None else list(unigrams)
    if unigram_list is not None:
        verify_alphabet_coverage(alphabet, unigram_list)
    lm = None
    if kenlm_model_path is not None:
        lm = LanguageModel(
            kenlm_model_path,
            unigram_list,
            alpha=alpha,
            beta=beta,
            unk_score_offset=unk_score_offset,
            score_boundary=lm_score_boundary,
        )
    return BeamSearchDecoderCTC(alphabet, lm, pyctcdecode_eos=pyctcdecode_eos)


def load_alphabet_json(path: str | os.PathLike[str]) -> Alphabet:
    """Read an ``alphabet.json`` file."""
    p = Path(path)
    try:
        return Alphabet.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AlphabetError(f"{p}: not found") from None
    except (AlphabetError, json.JSONDecodeError) as e:
        raise AlphabetError(f"{p}: {e}") from None
