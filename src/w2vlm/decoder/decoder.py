"""The beam search decoder: pyctcdecode's API on w2vlm's native core."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np

from w2vlm import _core, limits
from w2vlm.decoder.alphabet import Alphabet, verify_alphabet_coverage
from w2vlm.decoder.beams import (  # noqa: F401  (Frames, WordFrames: pyctcdecode's names, imported from here too)
    Frames,
    OutputBeam,
    OutputBeamMPSafe,
    WordFrames,
    mp_safe,
    output_beam,
    with_confidence,
)
from w2vlm.decoder.hotwords import HotwordAutomata, Hotwords
from w2vlm.decoder.language_model import (
    LanguageModel,
    MultiLanguageModel,
    model_from_recipe,
    model_recipe,
    unigram_words,
)
from w2vlm.decoder.logits import as_logits, to_log_probs  # noqa: F401  (to_log_probs: imported from here too)
from w2vlm.defaults import (
    DEFAULT_ALPHA,
    DEFAULT_BEAM_WIDTH,
    DEFAULT_BETA,
    DEFAULT_HOTWORD_WEIGHT,
    DEFAULT_MIN_TOKEN_LOGP,
    DEFAULT_PRUNE_BEAMS,
    DEFAULT_PRUNE_LOGP,
    DEFAULT_SCORE_BOUNDARY,
    DEFAULT_UNK_SCORE_OFFSET,
    available_cpus,
)
from w2vlm.errors import AlphabetError, DecoderInputError, DecoderReleasedError, LanguageModelError

#: an LM's state between words (pyctcdecode's name; a list of states for a MultiLanguageModel)
LMState = _core.LMState

logger = logging.getLogger("w2vlm.decoder")

ALPHABET_FILENAME = "alphabet.json"
LANGUAGE_MODEL_DIRNAME = "language_model"

AnyLanguageModel = Union[LanguageModel, MultiLanguageModel]  # noqa: UP007


class BeamSearchDecoderCTC:
    """CTC beam search decoder with optional n-gram LM fusion and hotwords (pyctcdecode-compatible).

    All decoding runs in native code with the GIL released; one decoder (and its LM) can be used from many
    threads at once, and :meth:`decode_batch` spreads a batch over a native thread pool.

    As in pyctcdecode, the language model lives in the class-level ``model_container`` under the decoder's
    ``_model_key`` (code written for pyctcdecode, transformers' included, reaches it there); :meth:`cleanup` and
    :meth:`clear_class_models` release it. ``best_path_frames=True`` gives word and token spans from the more
    probable of two merging paths instead of pyctcdecode's (the path merged last).
    """

    #: language models of all decoders, by ``_model_key`` (pyctcdecode's registry)
    model_container: ClassVar[dict[bytes, AnyLanguageModel | None]] = {}
    _ALPHABET_SERIALIZED_FILENAME = ALPHABET_FILENAME
    _LANGUAGE_MODEL_SERIALIZED_DIRECTORY = LANGUAGE_MODEL_DIRNAME

    def __init__(
        self,
        alphabet: Alphabet,
        language_model: AnyLanguageModel | None = None,
        *,
        pyctcdecode_eos: bool = True,
        best_path_frames: bool = False,
    ) -> None:
        if not isinstance(alphabet, Alphabet):
            raise AlphabetError(f"alphabet must be a w2vlm Alphabet, got {type(alphabet).__name__}")
        if language_model is not None and not isinstance(language_model, (LanguageModel, MultiLanguageModel)):
            raise LanguageModelError(
                "language_model must be a w2vlm LanguageModel, MultiLanguageModel or None, got "
                f"{type(language_model).__name__}"
            )
        self._alphabet = alphabet
        self._native_alphabet = _core.Alphabet(alphabet.labels, alphabet.is_bpe)
        self._model_key = os.urandom(16)
        BeamSearchDecoderCTC.model_container[self._model_key] = language_model
        #: score a hypothesis ending in a word delimiter as pyctcdecode does (same transcripts); False: only </s>
        self.pyctcdecode_eos = bool(pyctcdecode_eos)
        #: spans of the more probable path when beams merge (False: pyctcdecode's, the path merged last)
        self.best_path_frames = bool(best_path_frames)
        self._idx2vocab = dict(enumerate(alphabet.labels))
        self._is_bpe = alphabet.is_bpe
        self._labels = alphabet.labels
        self._hotwords = HotwordAutomata()

    # -- pickling ---------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """As in pyctcdecode, a pickled decoder keeps its ``_model_key``, and its language model stays in
        ``model_container`` (a fork-based pool finds it there). The state also says how to load the LM again
        (:func:`~w2vlm.decoder.language_model.model_recipe`), for a process that does not hold it (spawn)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_native_alphabet", "_hotwords")}
        state["_lm_recipe"] = model_recipe(self.language_model)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        recipe = state.pop("_lm_recipe")
        self.__dict__.update(state)
        self._native_alphabet = _core.Alphabet(self._alphabet.labels, self._alphabet.is_bpe)
        self._hotwords = HotwordAutomata()
        if self._model_key not in BeamSearchDecoderCTC.model_container:
            BeamSearchDecoderCTC.model_container[self._model_key] = model_from_recipe(recipe)

    # -- properties -------------------------------------------------------------------------------
    @property
    def alphabet(self) -> Alphabet:
        return self._alphabet

    @property
    def language_model(self) -> AnyLanguageModel | None:
        """The decoder's language model (from ``model_container``)."""
        try:
            return BeamSearchDecoderCTC.model_container[self._model_key]
        except KeyError:
            raise DecoderReleasedError(
                "this decoder's language model was released (cleanup() or clear_class_models()); "
                "build or load the decoder again"
            ) from None

    _language_model = language_model  # pyctcdecode's name
    model = language_model

    @classmethod
    def clear_class_models(cls) -> None:
        """Release the language models of all decoders (pyctcdecode's class-level registry)."""
        BeamSearchDecoderCTC.model_container = {}

    def cleanup(self) -> None:
        """Release this decoder's language model from the class-level registry."""
        BeamSearchDecoderCTC.model_container.pop(self._model_key, None)

    def reset_params(
        self,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        lm_score_boundary: bool | None = None,
    ) -> None:
        """Change LM fusion parameters in place, values kept as given (no effect without a language model, nor,
        as in pyctcdecode, on a MultiLanguageModel)."""
        lm = self.language_model
        if lm is None:
            return
        lm.reset_params(alpha=alpha, beta=beta, unk_score_offset=unk_score_offset, score_boundary=lm_score_boundary)

    # -- options ----------------------------------------------------------------------------------
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
        overrides: dict[str, Any] | None = None,
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
        o.best_path_frames = self.best_path_frames
        lm = self.language_model
        if lm is not None:
            params = lm.fusion_params_list() if isinstance(lm, MultiLanguageModel) else [lm.fusion_params()]
            if overrides:  # per call, for every fused LM
                names = ("alpha", "beta", "unk_score_offset", "score_boundary")
                params = [tuple(overrides.get(n, v) for n, v in zip(names, p)) for p in params]
            o.set_lm_params(params)
        o.hotwords = self._hotwords.get(hotwords, float(hotword_weight))
        if lm_start_state is not None:
            n = len(lm.native_models()) if lm is not None else 0
            states = lm_start_state if isinstance(lm_start_state, (list, tuple)) else [lm_start_state]
            if not all(isinstance(x, _core.LMState) for x in states) or len(states) != n:
                raise DecoderInputError(
                    "lm_start_state must be the last_lm_state of a w2vlm result of this decoder (a list of "
                    f"{n} states with a MultiLanguageModel), got {type(lm_start_state).__name__}"
                )
            o.set_start_state(list(states))
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
        overrides: dict[str, Any] = {}
        for name, value in (("alpha", alpha), ("beta", beta), ("unk_score_offset", unk_score_offset)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise DecoderInputError(f"{name} must be a number, got {value!r}")
            overrides[name] = float(value)
        if score_boundary is not None:
            overrides["score_boundary"] = bool(score_boundary)
        return self._options(
            beam_width,
            beam_prune_logp,
            token_min_logp,
            prune_history,
            hotwords,
            hotword_weight,
            n_best=n_best,
            overrides=overrides,
        )

    def decode_beams_with(
        self, options: _core.DecodeOptions, log_probs_list: Sequence[Any], num_threads: int | None = None
    ) -> list[list[OutputBeam]]:
        """Beams (best first) of several (frames, vocab) matrices with options from :meth:`options`, decoded in
        parallel on ``num_threads`` native threads (logits are normalised there too)."""
        return [
            self._beams(hyps, m, norm) for hyps, (m, norm) in zip(*self._search(log_probs_list, options, num_threads))
        ]

    def native_lm(self) -> list[_core.LanguageModel] | None:
        """The native models the search fuses (None without a language model)."""
        lm = self.language_model
        return None if lm is None else lm.native_models()

    def _to_output(self, h: _core.Hypothesis) -> OutputBeam:
        return output_beam(h, self._labels)

    def _beams(self, hyps: list[_core.Hypothesis], matrix: np.ndarray, normalized: bool) -> list[OutputBeam]:
        lm = self.language_model
        beams = [output_beam(h, self._labels) for h in hyps]
        return with_confidence(beams, matrix, self._labels, lm if isinstance(lm, LanguageModel) else None, normalized)

    # -- decoding ---------------------------------------------------------------------------------
    def _prepare(self, logits: Any) -> tuple[np.ndarray, bool]:
        """(matrix for the search, False: not yet log-probabilities). The search checks and normalises it on its
        worker threads, float64 in double with pyctcdecode's formulas, float32 in float32; single and batch
        decodings take the same path, so they give the same bits."""
        return as_logits(logits, len(self._alphabet)), False

    def _search(
        self, logits_list: Any, options: _core.DecodeOptions, num_threads: int | None, single: bool = False
    ) -> tuple[list[list[_core.Hypothesis]], list[tuple[np.ndarray, bool]]]:
        """The search over each matrix of ``logits_list`` (``single``: a one-matrix list made of one call's
        ``logits``, named so in errors)."""
        if isinstance(logits_list, np.ndarray) and logits_list.ndim != 3:
            raise DecoderInputError(
                f"logits_list must be a list of (time, vocabulary) matrices or a (batch, time, vocabulary) array, "
                f"got an array of shape {logits_list.shape}"
            )
        prepared = []
        for i, x in enumerate(logits_list):
            try:
                prepared.append(self._prepare(x))
            except DecoderInputError as e:
                raise DecoderInputError(f"{'logits' if single else f'logits_list[{i}]'}: {e}") from None
        if num_threads is None:
            num_threads = available_cpus()
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise DecoderInputError(f"num_threads must be a positive integer, got {num_threads!r}")
        if num_threads > limits.MAX_THREADS:
            raise DecoderInputError(
                f"num_threads is {num_threads}; at most {limits.MAX_THREADS} (w2vlm.limits.MAX_THREADS)"
            )
        try:
            results = _core.decode_logits_batch(
                self._native_alphabet, self.native_lm(), options, [m for m, _ in prepared], int(num_threads)
            )
        except DecoderInputError as e:  # the native checks name the matrix by its place in the list
            if single and str(e).startswith("logits_list[0]: "):
                raise DecoderInputError("logits: " + str(e)[len("logits_list[0]: ") :]) from None
            raise
        return results, prepared

    def decode_beams(
        self,
        logits: Any,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        prune_history: bool = DEFAULT_PRUNE_BEAMS,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        lm_start_state: Any = None,
    ) -> list[OutputBeam]:
        """Decode one (frames, vocab) matrix; all final beams, best first."""
        o = self._options(
            beam_width,
            beam_prune_logp,
            token_min_logp,
            prune_history,
            hotwords,
            hotword_weight,
            lm_start_state,
        )
        results, prepared = self._search([logits], o, 1, single=True)
        return self._beams(results[0], *prepared[0])

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
        hyps = self._search([logits], o, 1, single=True)[0][0]
        return hyps[0].text if hyps else ""

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
        return [h[0].text if h else "" for h in self._search(logits_list, o, num_threads)[0]]

    def decode_beams_batch(
        self,
        pool: Any,
        logits_list: Sequence[Any],
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        prune_history: bool = DEFAULT_PRUNE_BEAMS,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        num_threads: int | None = None,
    ) -> list[list[OutputBeamMPSafe]]:
        """Beams of several matrices, decoded in parallel; results are pyctcdecode's 4-tuples."""
        if pool is not None:
            logger.debug("decode_beams_batch: the pool argument is not used; decoding on native threads")
        o = self._options(beam_width, beam_prune_logp, token_min_logp, prune_history, hotwords, hotword_weight)
        results, prepared = self._search(logits_list, o, num_threads)
        return [[mp_safe(b) for b in self._beams(hyps, *prep)] for hyps, prep in zip(results, prepared)]

    def attach_confidences(self, beams: list[OutputBeam], logits: np.ndarray) -> list[OutputBeam]:
        """Give beams from :meth:`stream_with` their ``word_confidences`` (computed on first use from the
        logits or log-probabilities they were decoded from)."""
        lm = self.language_model
        return with_confidence(
            beams, logits, self._labels, lm if isinstance(lm, LanguageModel) else None, normalized=False
        )

    def stream_with(self, options: _core.DecodeOptions) -> DecoderStream:
        """An incremental decoding with options from :meth:`options`."""
        return DecoderStream(self, options)

    def stream(
        self,
        beam_width: int = DEFAULT_BEAM_WIDTH,
        beam_prune_logp: float = DEFAULT_PRUNE_LOGP,
        token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP,
        prune_history: bool = True,
        hotwords: Hotwords = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
        lm_start_state: Any = None,
    ) -> DecoderStream:
        """Start an incremental decoding: feed chunks of frames, read partial results, finalize. With the
        defaults the best beam's text is :meth:`decode`'s (the same pruning of LM history);
        ``prune_history=False`` gives :meth:`decode_beams`' beams."""
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
        lm = self.language_model
        if lm is not None:
            lm.save_to_dir(d / LANGUAGE_MODEL_DIRNAME)

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
        self._search = _core.BeamSearch(decoder._native_alphabet, decoder.native_lm(), options)

    @property
    def frames_seen(self) -> int:
        return int(self._search.frames_seen)

    def feed(self, logits: Any) -> None:
        """Add a chunk of (frames, vocab) logits or probabilities."""
        matrix, _ = self._decoder._prepare(logits)
        self._search.advance_logits(self._decoder._native_alphabet, matrix)

    def partial(self) -> OutputBeam:
        """The best hypothesis so far (the last word may still change)."""
        return self._decoder._to_output(self._search.best_partial())

    def finalize(self) -> list[OutputBeam]:
        """End-of-utterance results of the frames fed so far, best first. It does not end the stream: frames fed
        afterwards continue the same utterance (a word cut at the end of this call goes on in the next); a new
        utterance needs a new stream."""
        return [self._decoder._to_output(h) for h in self._search.finalize()]


def build_ctcdecoder(
    labels: Sequence[str],
    kenlm_model_path: str | os.PathLike[str] | None = None,
    unigrams: Iterable[str] | str | os.PathLike[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    unk_score_offset: float = DEFAULT_UNK_SCORE_OFFSET,
    lm_score_boundary: bool = DEFAULT_SCORE_BOUNDARY,
    *,
    pyctcdecode_eos: bool = True,
    best_path_frames: bool = False,
) -> BeamSearchDecoderCTC:
    """Build a decoder from labels and (optionally) an ARPA LM, as pyctcdecode's function of the same name.

    ``best_path_frames=True``: word and token spans of the more probable of two merging paths (see
    :class:`BeamSearchDecoderCTC`).

    ``unigrams``: the known words, or the path of a ``unigrams.txt`` (one word a line; pyctcdecode would take a
    string for its characters).

    ``pyctcdecode_eos=False`` scores the end of a hypothesis that ends in a word delimiter with ``</s>`` only,
    instead of pyctcdecode's unknown-empty-word penalty (more accurate; transcripts then differ from
    pyctcdecode's on such utterances).
    """
    alphabet = Alphabet.build_alphabet(labels)
    unigram_list = unigram_words(unigrams)
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
        if unigram_list is None:  # the LM's own words, as pyctcdecode checks the unigrams it reads from the ARPA
            verify_alphabet_coverage(alphabet, lm.unigrams)
    return BeamSearchDecoderCTC(alphabet, lm, pyctcdecode_eos=pyctcdecode_eos, best_path_frames=best_path_frames)


def load_alphabet_json(path: str | os.PathLike[str]) -> Alphabet:
    """Read an ``alphabet.json`` file."""
    p = Path(path)
    try:
        return Alphabet.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AlphabetError(f"{p}: not found") from None
    except (AlphabetError, json.JSONDecodeError) as e:
        raise AlphabetError(f"{p}: {e}") from None
