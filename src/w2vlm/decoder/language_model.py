"""Language models for shallow fusion, with pyctcdecode's attributes: one n-gram LM (:class:`LanguageModel`) or
several fused at once (:class:`MultiLanguageModel`), their parameters and the hub's ``language_model/`` layout."""

from __future__ import annotations

import abc
import json
import logging
import math
import os
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from w2vlm import _core
from w2vlm.decoder.ngram_files import (
    ATTRS_FILENAME,
    LM_SUFFIXES,
    UNIGRAMS_FILENAME,
    kenlm_backend,
    lm_file_kind,
    load_kenlm_binary,
    load_ngram,
    load_unigrams,
)
from w2vlm.defaults import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_SCORE_BOUNDARY, DEFAULT_UNK_SCORE_OFFSET
from w2vlm.errors import LanguageModelError

__all__ = [
    "ATTRS_FILENAME",
    "AVG_TOKEN_LEN",
    "LM_SUFFIXES",
    "LOG_BASE_CHANGE_FACTOR",
    "UNIGRAMS_FILENAME",
    "AbstractLanguageModel",
    "LanguageModel",
    "MultiLanguageModel",
    "NGramModelFile",
    "kenlm_backend",
    "load_kenlm_binary",
    "load_ngram",
    "load_unigram_set_from_arpa",
    "load_unigrams",
    "model_from_recipe",
    "model_recipe",
    "unigram_words",
]

logger = logging.getLogger("w2vlm.decoder")

#: the fusion parameters, in the order of ``attrs.json`` and of :meth:`LanguageModel.fusion_params`
PARAM_NAMES = ("alpha", "beta", "unk_score_offset", "score_boundary")
#: partial words longer than this many characters get a proportionally larger unknown-word offset
AVG_TOKEN_LEN = 6
#: log10 to natural log (n-gram files hold log10 probabilities)
LOG_BASE_CHANGE_FACTOR = 1.0 / math.log10(math.e)

FusionParams = tuple[float, float, float, bool]


def _number(name: str, value: Any) -> float:
    """A fusion weight as given: any real number, infinities and NaN included (pyctcdecode accepts them)."""
    if isinstance(value, bool) or (not isinstance(value, (int, float)) and not hasattr(value, "__float__")):
        raise LanguageModelError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LanguageModelError(f"{name} must be a number, got {type(value).__name__} ({value!r})") from None


def _flag(name: str, value: Any) -> Any:
    """A switch as given; its truth value is used (a string is refused: "false" would be true)."""
    if isinstance(value, (str, bytes)):
        raise LanguageModelError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


class NGramModelFile:
    """What ``LanguageModel._kenlm_model`` is when w2vlm read the file itself: the n-gram model with the parts of
    ``kenlm.Model`` that code reaches for (``path`` as bytes, ``order``, ``in``, ``score``)."""

    def __init__(self, ngram: _core.LMBackend, path: Path | None) -> None:
        self._ngram = ngram
        self._path = path

    @property
    def path(self) -> bytes | None:
        return None if self._path is None else os.fsencode(self._path)

    @property
    def order(self) -> int:
        return int(self._ngram.order)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word in self._ngram

    def score(self, sentence: str, bos: bool = True, eos: bool = True) -> float:
        """Total log10 probability of a whitespace-separated sentence (``kenlm.Model.score``)."""
        if not hasattr(self._ngram, "score"):
            raise LanguageModelError("score() is available for models read natively (ARPA or KenLM binary)")
        return float(self._ngram.score(sentence, bos, eos))

    def __repr__(self) -> str:
        return f"NGramModelFile(path={self._path!s}, order={self.order})"


class AbstractLanguageModel(abc.ABC):
    """pyctcdecode's interface of a language model: what :class:`LanguageModel` and :class:`MultiLanguageModel`
    offer. The decoder fuses only these two (their scoring runs natively); a class of one's own derived from
    this one is refused there with a named error."""

    @property
    @abc.abstractmethod
    def order(self) -> int:
        """The n-gram order."""

    @abc.abstractmethod
    def get_start_state(self) -> Any:
        """The state before the first word."""

    @abc.abstractmethod
    def score_partial_token(self, partial_token: str) -> float:
        """The term for an unfinished word."""

    @abc.abstractmethod
    def score(self, prev_state: Any, word: str, is_last_word: bool = False) -> tuple[float, Any]:
        """The term for a finished word and the state after it."""


class LanguageModel(AbstractLanguageModel):
    """An n-gram LM with the fusion parameters of pyctcdecode's ``LanguageModel``.

    ``kenlm_model`` may be a path to an ARPA file (plain or .gz) or a KenLM binary, a loaded
    :class:`w2vlm._core.NGramLM`, or a ``kenlm.Model`` (its file is read natively). ``unigrams`` are the known
    words: partial words that are not a prefix of one of them get ``unk_score_offset``. When no unigrams are
    given, the LM's own vocabulary is used (pyctcdecode would penalise every partial word instead).

    ``alpha``, ``beta``, ``unk_score_offset`` and ``score_boundary`` are plain attributes, kept as given (set them
    directly, as transformers does, or with :meth:`reset_params`); they are read at each decoding.
    """

    def __init__(
        self,
        kenlm_model: Any,
        unigrams: Collection[str] | str | os.PathLike[str] | None = None,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        unk_score_offset: float = DEFAULT_UNK_SCORE_OFFSET,
        score_boundary: bool = DEFAULT_SCORE_BOUNDARY,
    ) -> None:
        self._path: Path | None = None
        self._kenlm_model: Any = None
        if isinstance(kenlm_model, _core.LMBackend):
            ngram = kenlm_model
            raw = getattr(kenlm_model, "path", None)
            self._path = Path(raw) if isinstance(raw, str) and raw else None
        elif isinstance(kenlm_model, (str, os.PathLike)):
            self._path = Path(kenlm_model)
            ngram = load_ngram(self._path)
        elif hasattr(kenlm_model, "path") and hasattr(kenlm_model, "BaseScore"):
            # a kenlm.Model: read its file natively (faster, no GIL); KenLM serves it only if that fails
            raw = kenlm_model.path
            self._path = Path(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            self._kenlm_model = kenlm_model
            native: _core.LMBackend | None = None
            if self._path.exists():
                try:
                    native = (
                        load_kenlm_binary(self._path, fallback=False)
                        if lm_file_kind(self._path) == "binary"
                        else load_ngram(self._path)
                    )
                except LanguageModelError as e:
                    logger.warning("%s; serving it through the kenlm module", e)
            ngram = native if native is not None else kenlm_backend(kenlm_model)
        else:
            raise LanguageModelError(
                f"kenlm_model must be a path, a w2vlm NGramLM or a kenlm.Model, got {type(kenlm_model).__name__}"
            )
        self._ngram = ngram
        if self._kenlm_model is None:
            self._kenlm_model = NGramModelFile(ngram, self._path)
        words = unigram_words(unigrams)
        self._unigrams: list[str] | None = None if words is None else [str(u) for u in words]
        if self._unigrams is not None:
            if len(self._unigrams) < 1000:
                logger.info("Only %d unigrams given. Is this small or artificial data?", len(self._unigrams))
            self._native = _core.LanguageModel(ngram, self._unigrams, False)
            known = self._native.num_unigrams
            if self._unigrams and known / len(set(self._unigrams)) < 0.1:
                logger.warning(
                    "Only %.1f%% of the unigrams are in the language model: do the vocabulary and the LM match?",
                    100.0 * known / len(set(self._unigrams)),
                )
        else:
            self._native = _core.LanguageModel(ngram, [], True)
        self._known: set[str] | None = None
        self.alpha = alpha
        self.beta = beta
        self.unk_score_offset = unk_score_offset
        self.score_boundary = score_boundary
        self.fusion_params()  # refuses values that are not numbers now rather than at the first decoding

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as what loads it again: its file, unigrams and parameters (the file is read on unpickling)."""
        return model_from_recipe, (model_recipe(self),)

    # -- properties -------------------------------------------------------------------------------
    @property
    def order(self) -> int:
        return int(self._ngram.order)

    @property
    def ngram(self) -> _core.LMBackend:
        """The n-gram model the decoder uses (shared, read-only): native, or KenLM's module for binaries."""
        return self._ngram

    @property
    def backend(self) -> str:
        """ "native" (w2vlm's ARPA reader), "native-binary" (w2vlm's KenLM binary reader) or "kenlm" (KenLM's
        Python module)."""
        if isinstance(self._ngram, _core.NGramLM):
            return "native"
        return "native-binary" if isinstance(self._ngram, _core.KenlmBinaryLM) else "kenlm"

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def unigrams(self) -> list[str]:
        """The known words used for partial-word checks, sorted."""
        return sorted(self._unigram_set)

    @property
    def _unigram_set(self) -> set[str]:
        """pyctcdecode's name: the known words (the given unigrams that the LM has; without unigrams, the LM's
        vocabulary, which is what w2vlm then checks partial words against)."""
        if self._known is None:
            if self._unigrams is not None:
                self._known = {u for u in self._unigrams if u in self._ngram}
            elif isinstance(self._ngram, (_core.NGramLM, _core.KenlmBinaryLM)):
                self._known = {w for w in self._ngram.vocab() if w not in ("<unk>", "<s>", "</s>")}
            else:
                self._known = set()
        return set(self._known)

    @property
    def native(self) -> _core.LanguageModel:
        return self._native

    def fusion_params(self) -> FusionParams:
        """(alpha, beta, unk_score_offset, score_boundary) as the search uses them now."""
        return (
            _number("alpha", self.alpha),
            _number("beta", self.beta),
            _number("unk_score_offset", self.unk_score_offset),
            bool(_flag("score_boundary", self.score_boundary)),
        )

    def native_models(self) -> list[_core.LanguageModel]:
        """The native models the search fuses: this one."""
        return [self._native]

    def get_start_state(self) -> _core.LMState:
        """LM state at the start of an utterance (after ``<s>`` when score_boundary is on)."""
        return self._ngram.begin_sentence_state() if self.score_boundary else self._ngram.null_state()

    def score(self, *args: Any, **kwargs: Any) -> Any:
        """Two signatures, told apart by the first argument:

        - pyctcdecode's ``score(prev_state, word, is_last_word=False)`` when it is an LM state (from
          :meth:`get_start_state` or an earlier call): ``(alpha * ln p(word | state) + beta, end state)``, with
          ``unk_score_offset`` added for a word that is not known and, when ``is_last_word``, the end of sentence
          (``</s>``, with ``score_boundary``) scored too; what the search adds for a finished word;
        - KenLM's ``score(text, bos=True, eos=True)`` otherwise: the total log10 probability of a
          whitespace-separated text."""
        if not isinstance(self._ngram, (_core.NGramLM, _core.KenlmBinaryLM)):
            raise LanguageModelError("score() is available for models read natively (ARPA or KenLM binary)")
        if (args and isinstance(args[0], _core.LMState)) or isinstance(kwargs.get("prev_state"), _core.LMState):
            return self._score_word(*args, **kwargs)
        return self._score_text(*args, **kwargs)

    def _score_text(self, text: str, bos: bool = True, eos: bool = True) -> float:
        if not isinstance(text, str):
            raise LanguageModelError(
                f"score(): expected a text (KenLM's score) or an LM state first; got {type(text).__name__}"
            )
        return float(self._ngram.score(text, bos, eos))

    def _score_word(self, prev_state: _core.LMState, word: str, is_last_word: bool = False) -> tuple[float, Any]:
        if not isinstance(word, str):
            raise LanguageModelError(f"score(): word must be a str, got {type(word).__name__}")
        log10, end_state = self._ngram.base_score(prev_state, word)
        if word not in self._unigram_set:
            log10 += _number("unk_score_offset", self.unk_score_offset)
        if is_last_word and _flag("score_boundary", self.score_boundary):
            log10 += self._ngram.base_score(end_state, "</s>")[0]
        alpha, beta = _number("alpha", self.alpha), _number("beta", self.beta)
        return alpha * log10 * LOG_BASE_CHANGE_FACTOR + beta, end_state

    def score_partial_token(self, partial_token: str) -> float:
        """The search's term for an unfinished word: 0 if a known word starts with it, else ``unk_score_offset``
        (times len / 6 past 6 characters)."""
        if not isinstance(partial_token, str):
            raise LanguageModelError(f"partial_token must be a str, got {type(partial_token).__name__}")
        unk = 0.0 if self._native.is_prefix(partial_token) else _number("unk_score_offset", self.unk_score_offset)
        if len(partial_token) > AVG_TOKEN_LEN:
            unk = unk * len(partial_token) / AVG_TOKEN_LEN
        return unk

    def reset_params(self, **params: Any) -> None:
        """Change alpha, beta, unk_score_offset or score_boundary (values kept as given; None leaves one as is)."""
        unknown = set(params) - set(PARAM_NAMES)
        if unknown:
            raise LanguageModelError(
                f"unknown language model parameters {sorted(unknown)}; allowed: {list(PARAM_NAMES)}"
            )
        for name in ("alpha", "beta", "unk_score_offset"):
            if params.get(name) is not None:
                _number(name, params[name])
                setattr(self, name, params[name])
        sb = params.get("score_boundary")
        if sb is not None:
            if not isinstance(sb, bool):
                raise LanguageModelError(f"score_boundary must be a bool, got {type(sb).__name__}")
            self.score_boundary = sb

    @property
    def serializable_attrs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PARAM_NAMES}

    # -- hub layout -------------------------------------------------------------------------------
    def save_to_dir(self, filepath: str | os.PathLike[str]) -> None:
        """Write ``attrs.json``, ``unigrams.txt`` and the LM file into ``filepath`` (the hub layout)."""
        d = Path(filepath)
        d.mkdir(parents=True, exist_ok=True)
        if self._path is None:
            raise LanguageModelError("this language model was not loaded from a file, so it cannot be saved")
        _atomic_write(d / ATTRS_FILENAME, json.dumps(self.serializable_attrs))
        _atomic_write(d / UNIGRAMS_FILENAME, "".join(u + "\n" for u in self.unigrams))
        target = d / self._path.name
        if target.resolve() != self._path.resolve():
            tmp = target.with_name(target.name + ".tmp")
            shutil.copy2(self._path, tmp)
            os.replace(tmp, target)

    @staticmethod
    def parse_directory_contents(filepath: str | os.PathLike[str]) -> dict[str, str]:
        """Check a ``language_model/`` directory: exactly ``attrs.json``, ``unigrams.txt`` and one LM file
        (hidden entries and ``__*`` ignored), as pyctcdecode requires."""
        d = Path(filepath)
        if not d.is_dir():
            raise LanguageModelError(f"{d}: language model directory not found")
        contents = sorted(c.name for c in d.iterdir() if not c.name.startswith((".", "__")))
        lm_files = [c for c in contents if c.lower().endswith(LM_SUFFIXES)]
        others = set(contents) - set(lm_files) - {ATTRS_FILENAME, UNIGRAMS_FILENAME}
        missing = [n for n in (ATTRS_FILENAME, UNIGRAMS_FILENAME) if n not in contents]
        if len(lm_files) != 1 or missing or others:
            raise LanguageModelError(
                f"{d}: expected {ATTRS_FILENAME}, {UNIGRAMS_FILENAME} and one language model file "
                f"({', '.join(LM_SUFFIXES)}); found {contents}"
            )
        return {
            "json_attrs": str(d / ATTRS_FILENAME),
            "unigrams": str(d / UNIGRAMS_FILENAME),
            "kenlm": str(d / lm_files[0]),
        }

    @classmethod
    def load_from_dir(cls, filepath: str | os.PathLike[str], unigram_encoding: str | None = None) -> LanguageModel:
        """Load a ``language_model/`` directory of the hub layout."""
        files = cls.parse_directory_contents(filepath)
        try:
            attrs = json.loads(Path(files["json_attrs"]).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise LanguageModelError(f"{files['json_attrs']}: not valid JSON ({e})") from None
        if not isinstance(attrs, dict):
            raise LanguageModelError(f"{files['json_attrs']}: expected a JSON object")
        unknown = set(attrs) - set(PARAM_NAMES)
        if unknown:
            raise LanguageModelError(
                f"{files['json_attrs']}: unknown keys {sorted(unknown)}; expected {', '.join(PARAM_NAMES)}"
            )
        p = Path(files["unigrams"])
        unigrams: list[str] | None = (
            load_unigrams(p)
            if unigram_encoding is None
            else [w.strip() for w in p.read_text(encoding=unigram_encoding).splitlines() if w.strip()]
        )
        return cls(files["kenlm"], unigrams or None, **attrs)


class MultiLanguageModel(AbstractLanguageModel):
    """Several n-gram LMs fused at once, as pyctcdecode's ``MultiLanguageModel``: every LM scores each word and
    each unfinished word with its own parameters (alpha, beta, unknown-word offset, sentence boundaries, known
    words) and a hypothesis gets the mean of their terms. The search fuses them natively."""

    def __init__(self, language_models: Sequence[LanguageModel]) -> None:
        models = list(language_models)
        if len(models) < 2:
            raise LanguageModelError("MultiLanguageModel needs at least 2 language models")
        bad = [type(m).__name__ for m in models if not isinstance(m, LanguageModel)]
        if bad:
            raise LanguageModelError(f"MultiLanguageModel takes w2vlm LanguageModel objects, got {bad[0]}")
        self._language_models = models

    @property
    def language_models(self) -> list[LanguageModel]:
        return list(self._language_models)

    @property
    def order(self) -> int:
        """The highest order of the fused LMs."""
        return max(lm.order for lm in self._language_models)

    def native_models(self) -> list[_core.LanguageModel]:
        return [lm.native for lm in self._language_models]

    def fusion_params_list(self) -> list[FusionParams]:
        return [lm.fusion_params() for lm in self._language_models]

    def get_start_state(self) -> list[_core.LMState]:
        """One start state per LM."""
        return [lm.get_start_state() for lm in self._language_models]

    def score(self, prev_state: Sequence[_core.LMState], word: str, is_last_word: bool = False) -> tuple[float, Any]:
        """pyctcdecode's ``score``: the mean of the LMs' terms for ``word`` (each from its own state in
        ``prev_state``, see :meth:`LanguageModel.score`) and their end states."""
        if len(prev_state) != len(self._language_models):
            raise LanguageModelError(
                f"score(): prev_state holds {len(prev_state)} states; this model fuses {len(self._language_models)}"
            )
        scored = [lm.score(st, word, is_last_word) for lm, st in zip(self._language_models, prev_state)]
        return _mean([v for v, _ in scored]), [st for _, st in scored]

    def score_partial_token(self, partial_token: str) -> float:
        """Mean of the LMs' terms for an unfinished word."""
        values = [lm.score_partial_token(partial_token) for lm in self._language_models]
        return _mean(values)

    def reset_params(self, **params: Any) -> None:
        """pyctcdecode's MultiLanguageModel ignores parameter changes; so does this one (set them on the LMs)."""

    def save_to_dir(self, filepath: str | os.PathLike[str]) -> None:
        raise NotImplementedError("a MultiLanguageModel cannot be saved (pyctcdecode cannot either)")


def unigram_words(unigrams: Collection[str] | str | os.PathLike[str] | None) -> list[str] | None:
    """Known words as given: a collection of words, or the path of a ``unigrams.txt`` (a string is a path here,
    not a collection of characters)."""
    if unigrams is None:
        return None
    if isinstance(unigrams, (str, os.PathLike)):
        return load_unigrams(unigrams)
    return list(unigrams)


def model_recipe(model: LanguageModel | MultiLanguageModel | None) -> tuple[Any, ...]:
    """What :func:`model_from_recipe` needs to load ``model`` again in another process: for a LanguageModel its
    file, unigrams and parameters. :class:`~w2vlm.errors.LanguageModelError` for one that was not loaded from a
    file that still exists (nothing to load it from)."""
    if model is None:
        return ("none",)
    if isinstance(model, MultiLanguageModel):
        return ("multi", [model_recipe(m) for m in model.language_models])
    if model.path is None or not model.path.is_file():
        raise LanguageModelError(
            "this language model cannot be pickled: it was not loaded from a file that still exists "
            f"({model.path or 'no file'}); load it from a file, or use it in the process that built it"
        )
    params = tuple(getattr(model, name) for name in PARAM_NAMES)
    unigrams = None if model._unigrams is None else list(model._unigrams)
    return ("file", str(model.path), unigrams, *params)


def model_from_recipe(recipe: tuple[Any, ...]) -> LanguageModel | MultiLanguageModel | None:
    """The language model ``recipe`` (from :func:`model_recipe`) describes, loaded."""
    kind = recipe[0]
    if kind == "none":
        return None
    if kind == "multi":
        return MultiLanguageModel([m for m in (model_from_recipe(r) for r in recipe[1]) if m is not None])
    _, path, unigrams, alpha, beta, unk_score_offset, score_boundary = recipe
    return LanguageModel(path, unigrams, alpha, beta, unk_score_offset, score_boundary)


def load_unigram_set_from_arpa(arpa_path: str | os.PathLike[str]) -> set[str]:
    """The words of an ARPA file's ``\\1-grams:`` section (plain or ``.gz``), without ``<s>``, ``</s>`` and
    ``<unk>`` (pyctcdecode's function; it kept only lines that carry a backoff weight, which drops words an ARPA
    writer may legally write without one)."""
    from w2vlm.lm.arpa import unigrams_from_arpa

    return set(unigrams_from_arpa(arpa_path))


def _mean(values: Sequence[float]) -> float:
    """The mean as the search takes it: a sum from the first value on, divided by the count."""
    total = values[0]
    for v in values[1:]:
        total += v
    return total / len(values)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
