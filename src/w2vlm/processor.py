"""``Wav2Vec2ProcessorWithLM``: feature extractor + CTC tokenizer + w2vlm's LM beam-search decoder.

A drop-in for transformers' class of the same name (deprecated there): the same hub layout on disk
(``preprocessor_config.json``, tokenizer files, ``alphabet.json``, ``language_model/``), the same
``from_pretrained`` / ``save_pretrained`` / ``__call__`` / ``decode`` / ``batch_decode`` calls with the same
keyword arguments and output fields, decoding on w2vlm's native decoder.

Differences on purpose: per-call ``alpha``/``beta``/``unk_score_offset``/``lm_score_boundary`` apply to that
call only (transformers keeps them for later calls), and ``pool``/``num_processes`` are accepted but decoding
runs on the decoder's native threads (``num_processes`` sets their number).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.defaults import DEFAULT_BEAM_WIDTH, DEFAULT_HOTWORD_WEIGHT, DEFAULT_MIN_TOKEN_LOGP, DEFAULT_PRUNE_LOGP
from w2vlm.errors import (
    DecoderInputError,
    ModelError,
    ProcessorComponentError,
    UnexpectedArgumentError,
    VocabularyMismatchError,
)
from w2vlm.model import gc_paused
from w2vlm.processor_output import Wav2Vec2DecoderWithLMOutput
from w2vlm.processor_parts import load_decoder, load_feature_extractor, load_tokenizer, tokenizer_labels

logger = logging.getLogger("w2vlm.processor")

#: the class name written as ``processor_class`` (what transformers' AutoProcessor resolves)
PROCESSOR_CLASS_NAME = "Wav2Vec2ProcessorWithLM"

_LM_PARAM_NAMES = ("alpha", "beta", "unk_score_offset", "lm_score_boundary")

#: ``from_pretrained`` keywords that set the language model's parameters (transformers' names)
LM_OVERRIDE_KEYWORDS = ("alpha", "beta", "unk_score_offset", "score_boundary")
#: ``from_pretrained`` keywords of transformers' loaders (AutoProcessor, pipelines) that w2vlm accepts and ignores
IGNORED_LOADER_KEYWORDS = frozenset(
    {"trust_remote_code", "_from_auto", "_from_pipeline", "force_download", "proxies", "use_fast", "resume_download"}
)
#: feature extractor classes transformers' processor accepts (by name; transformers is imported lazily)
FEATURE_EXTRACTOR_CLASSES = ("Wav2Vec2FeatureExtractor", "SeamlessM4TFeatureExtractor")

#: Files of the hub layout a processor needs (fetched for hub ids).
PROCESSOR_ALLOW_PATTERNS = [
    "*.json",
    "*.txt",
    "language_model/*",
]


def missing_alphabet_tokens(decoder: Any, tokenizer: Any) -> set[str]:
    """Tokens of the tokenizer (mapped as decoders label them) that the decoder's alphabet lacks."""
    labels = set(decoder_labels(decoder))
    return {tok for tok in tokenizer_labels(tokenizer) if tok not in labels}


def _decoder_alphabet(decoder: Any) -> Any:
    return getattr(decoder, "alphabet", None) or getattr(decoder, "_alphabet", None)


def decoder_labels(decoder: Any) -> list[str]:
    """The labels of a decoder's alphabet (pyctcdecode layout: ``decoder._alphabet.labels``)."""
    labels = getattr(_decoder_alphabet(decoder), "labels", None)
    if labels is None:
        raise DecoderInputError("decoder: has no alphabet with labels; expected a w2vlm BeamSearchDecoderCTC")
    return list(labels)


def decoder_is_bpe(decoder: Any) -> bool:
    """Whether a decoder's alphabet holds BPE pieces (``▁`` marks a word start) rather than characters."""
    return bool(getattr(_decoder_alphabet(decoder), "is_bpe", False))


def _to_numpy(logits: Any) -> Any:
    if type(logits).__module__.startswith("torch"):
        return logits.detach().float().cpu().numpy()
    return logits


def _trim_padding(array: np.ndarray) -> np.ndarray:
    """Drop rows that are entirely -100.0 (how transformers pads logits of shorter batch items)."""
    if array.ndim != 2:
        raise DecoderInputError(f"logits: expected a (frames, vocab) matrix per item; got shape {array.shape}")
    keep = ~np.all(array == -100.0, axis=-1)
    return array if keep.all() else array[keep]


def _resolve_folder(path_or_hub_id: str | os.PathLike, **hub_kwargs: Any) -> Path:
    from w2vlm.model import looks_like_path, snapshot_folder

    text = os.fspath(path_or_hub_id)
    local = Path(text).expanduser()
    if local.exists() or isinstance(path_or_hub_id, os.PathLike) or looks_like_path(text):
        if not local.is_dir():
            raise ModelError(f"{local}: no such processor folder")
        return local
    return snapshot_folder(text, allow_patterns=PROCESSOR_ALLOW_PATTERNS, **hub_kwargs)


class Wav2Vec2ProcessorWithLM:
    """Feature extractor + CTC tokenizer + LM beam-search decoder (transformers' API, w2vlm's decoder)."""

    feature_extractor_class = "AutoFeatureExtractor"
    tokenizer_class = "Wav2Vec2CTCTokenizer"

    def __init__(self, feature_extractor: Any, tokenizer: Any, decoder: Any) -> None:
        check_feature_extractor(feature_extractor)
        missing = missing_alphabet_tokens(decoder, tokenizer)
        if missing:
            raise VocabularyMismatchError(
                f"The tokens {sorted(missing)} are defined in the tokenizer's vocabulary, but not in the "
                f"decoder's alphabet. Make sure to include {sorted(missing)} in the decoder's alphabet "
                "(alphabet.json 'labels')."
            )
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.current_processor = feature_extractor
        self._base_lm_params = self._read_lm_params()

    @property
    def language_model(self) -> Any:
        """The decoder's language model (None without one): ``alpha``, ``beta``, ``unk_score_offset``,
        ``score_boundary`` as in transformers' ``processor.language_model``."""
        return getattr(self.decoder, "language_model", None)

    @staticmethod
    def get_missing_alphabet_tokens(decoder: Any, tokenizer: Any) -> set[str]:
        """Tokens of the tokenizer (as decoder labels) missing from the decoder's alphabet (transformers'
        name for :func:`missing_alphabet_tokens`)."""
        return missing_alphabet_tokens(decoder, tokenizer)

    # ------------------------------------------------------------------------------------------------ I/O

    @classmethod
    @gc_paused()
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        **decoder_overrides: Any,
    ) -> Wav2Vec2ProcessorWithLM:
        """Load from a folder in the hub layout or a hub id (cache/offline honoured).

        ``decoder_overrides``: ``alpha``, ``beta``, ``unk_score_offset``, ``score_boundary`` (or
        ``lm_score_boundary``) replace the values of ``language_model/attrs.json``; they are kept as given, as
        transformers does (``score_boundary=-7.0`` stays -7.0, and counts as true when decoding). A folder
        without ``alphabet.json`` gets a decoder without LM over the tokenizer's vocabulary (with a warning).
        The keywords transformers' loaders pass (``trust_remote_code``, ``_from_auto``, ...) are accepted and
        ignored; any other keyword raises ``TypeError``.
        """
        unknown = set(decoder_overrides) - {*LM_OVERRIDE_KEYWORDS, "lm_score_boundary", *IGNORED_LOADER_KEYWORDS}
        if unknown:
            raise UnexpectedArgumentError(f"from_pretrained() got unexpected keyword arguments {sorted(unknown)}")
        folder = _resolve_folder(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
        feature_extractor = load_feature_extractor(folder)
        tokenizer = load_tokenizer(folder)
        decoder = load_decoder(folder, tokenizer)
        overrides = _lm_overrides(decoder_overrides)
        language_model = getattr(decoder, "language_model", None)
        if overrides and language_model is None:
            logger.warning("%s has no language model: %s ignored", folder, ", ".join(sorted(overrides)))
        elif overrides:
            # set as given (no conversion), as transformers sets them on pyctcdecode's LanguageModel
            for name, value in overrides.items():
                setattr(language_model, name, value)
        return cls(feature_extractor=feature_extractor, tokenizer=tokenizer, decoder=decoder)

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Write the hub layout: feature extractor + tokenizer files, ``alphabet.json``, ``language_model/``.

        transformers (with pyctcdecode) loads the result with its own ``Wav2Vec2ProcessorWithLM``.
        """
        out = Path(save_directory)
        if out.is_file():
            raise ModelError(f"{out}: save_pretrained needs a directory, and this is a file")
        out.mkdir(parents=True, exist_ok=True)
        # As transformers' processors do: the components record the processor's class in memory (transformers
        # 4.x keeps it there) and so in the files they write, so a reload equals the original.
        for component in (self.feature_extractor, self.tokenizer):
            setter = getattr(component, "_set_processor_class", None)
            if callable(setter):
                setter(PROCESSOR_CLASS_NAME)
        written = list(self.feature_extractor.save_pretrained(str(out)))
        written += list(self.tokenizer.save_pretrained(str(out)))
        # transformers 5 feature extractors keep no processor class; the file still names it, for AutoProcessor
        # and the pipeline (which read it there to find the language model)
        _record_processor_class(out / "preprocessor_config.json")
        self.decoder.save_to_dir(str(out))
        written += [str(out / "alphabet.json"), str(out / "language_model")]
        return written

    # ----------------------------------------------------------------------------------- feature extraction

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Audio → ``feature_extractor(audio, ...)``; ``text=`` → tokenized ``labels`` (as transformers)."""
        audio = kwargs.pop("audio", None)
        text = kwargs.pop("text", None)
        if args:
            audio, args = args[0], args[1:]
        if audio is None and text is None:
            raise ValueError("You need to specify either an `audio` or `text` input to process.")
        inputs = self.feature_extractor(audio, *args, **kwargs) if audio is not None else None
        if text is None:
            return inputs
        encodings = self.tokenizer(text, **{k: v for k, v in kwargs.items() if k != "sampling_rate"})
        if inputs is None:
            return encodings
        inputs["labels"] = encodings["input_ids"]
        return inputs

    def pad(self, *args: Any, **kwargs: Any) -> Any:
        input_features = kwargs.pop("input_features", None)
        labels = kwargs.pop("labels", None)
        if args:
            input_features, args = args[0], args[1:]
        if input_features is not None:
            input_features = self.feature_extractor.pad(input_features, *args, **kwargs)
        if labels is not None:
            labels = self.tokenizer.pad(labels, **kwargs)
        if labels is None:
            return input_features
        if input_features is None:
            return labels
        input_features["labels"] = labels["input_ids"]
        return input_features

    @property
    def sampling_rate(self) -> int:
        return int(getattr(self.feature_extractor, "sampling_rate", 16000))

    @property
    def model_input_names(self) -> list[str]:
        return list(getattr(self.feature_extractor, "model_input_names", ["input_values"]))

    # --------------------------------------------------------------------------------------------- decoding

    def _read_lm_params(self) -> dict[str, Any]:
        """Current alpha/beta/unk_score_offset/score_boundary of the decoder's LM ({} without an LM)."""
        getter = getattr(self.decoder, "lm_params", None)
        if callable(getter):
            params = dict(getter() or {})
            return {k: params[k] for k in _LM_PARAM_NAMES if k in params}
        lm = getattr(self.decoder, "_language_model", None) or getattr(self.decoder, "language_model", None)
        if lm is None:
            return {}
        params = {}
        for name, attr in (
            ("alpha", "alpha"),
            ("beta", "beta"),
            ("unk_score_offset", "unk_score_offset"),
            ("lm_score_boundary", "score_boundary"),
        ):
            value = getattr(lm, attr, getattr(lm, "_" + attr, None))
            if value is not None:
                params[name] = value
        return params

    def batch_decode(
        self,
        logits: Any,
        pool: Any = None,
        num_processes: int | None = None,
        beam_width: int | None = None,
        beam_prune_logp: float | None = None,
        token_min_logp: float | None = None,
        hotwords: Sequence[str] | None = None,
        hotword_weight: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        lm_score_boundary: bool | None = None,
        output_word_offsets: bool = False,
        n_best: int = 1,
    ) -> Wav2Vec2DecoderWithLMOutput:
        """Decode a batch of logits ((batch, frames, vocab) array or a list of (frames, vocab) arrays).

        Rows entirely equal to -100.0 (padding) are dropped first. Returns text, logit_score, lm_score and,
        with ``output_word_offsets``, word_offsets — lists over the batch (lists of n-best lists when
        ``n_best > 1``).
        """
        if pool is not None:
            logger.debug("batch_decode: 'pool' is accepted for compatibility; decoding uses native threads")
        logits = _to_numpy(logits)
        if isinstance(logits, np.ndarray):
            if logits.ndim != 3:
                raise DecoderInputError(
                    f"logits: batch_decode expects (batch, frames, vocab); got shape {logits.shape} "
                    "(use decode() for one utterance)"
                )
            items = [_trim_padding(item) for item in logits]
        else:
            items = [_trim_padding(np.asarray(_to_numpy(item))) for item in logits]
        if n_best < 1:
            raise DecoderInputError(f"n_best: must be >= 1; got {n_best}")
        if num_processes is not None and (
            isinstance(num_processes, bool) or not isinstance(num_processes, (int, np.integer)) or num_processes < 1
        ):
            raise DecoderInputError(
                f"num_processes: must be a positive integer (decoding threads); got {num_processes!r}"
            )
        beams_list = self.decode_beams_batch(
            items,
            num_threads=num_processes,
            beam_width=beam_width,
            beam_prune_logp=beam_prune_logp,
            token_min_logp=token_min_logp,
            hotwords=hotwords,
            hotword_weight=hotword_weight,
            alpha=alpha,
            beta=beta,
            unk_score_offset=unk_score_offset,
            lm_score_boundary=lm_score_boundary,
        )
        texts, logit_scores, lm_scores, offsets = [], [], [], []
        for beams in beams_list:
            top = list(beams[:n_best])
            unpacked = [beam_fields(b) for b in top]
            t = [u[0] for u in unpacked]
            ls = [u[2] for u in unpacked]
            ms = [u[3] for u in unpacked]
            wo = [_word_offsets(u[1]) for u in unpacked]
            if n_best == 1:
                t, ls, ms, wo = t[0], ls[0], ms[0], wo[0]
            texts.append(t)
            logit_scores.append(ls)
            lm_scores.append(ms)
            offsets.append(wo)
        return Wav2Vec2DecoderWithLMOutput(
            text=texts,
            logit_score=logit_scores,
            lm_score=lm_scores,
            word_offsets=offsets if output_word_offsets else None,
        )

    def decode(
        self,
        logits: Any,
        beam_width: int | None = None,
        beam_prune_logp: float | None = None,
        token_min_logp: float | None = None,
        hotwords: Sequence[str] | None = None,
        hotword_weight: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        lm_score_boundary: bool | None = None,
        output_word_offsets: bool = False,
        n_best: int = 1,
    ) -> Wav2Vec2DecoderWithLMOutput:
        """Decode one utterance's (frames, vocab) logits; fields as :meth:`batch_decode` without the batch."""
        array = np.asarray(_to_numpy(logits))
        if array.ndim != 2:
            raise DecoderInputError(f"logits: decode expects (frames, vocab); got shape {array.shape}")
        out = self.batch_decode(
            array[None],
            beam_width=beam_width,
            beam_prune_logp=beam_prune_logp,
            token_min_logp=token_min_logp,
            hotwords=hotwords,
            hotword_weight=hotword_weight,
            alpha=alpha,
            beta=beta,
            unk_score_offset=unk_score_offset,
            lm_score_boundary=lm_score_boundary,
            output_word_offsets=output_word_offsets,
            n_best=n_best,
        )
        return Wav2Vec2DecoderWithLMOutput(
            text=out.text[0],
            logit_score=out.logit_score[0],
            lm_score=out.lm_score[0],
            word_offsets=out.word_offsets[0] if output_word_offsets else None,
        )

    def decode_beams_batch(
        self,
        logits_list: Sequence[np.ndarray],
        *,
        num_threads: int | None = None,
        beam_width: int | None = None,
        beam_prune_logp: float | None = None,
        token_min_logp: float | None = None,
        hotwords: Sequence[str] | None = None,
        hotword_weight: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        lm_score_boundary: bool | None = None,
    ) -> list[list[Any]]:
        """The decoder's beams (best first) for each (frames, vocab) matrix; per-call LM parameters (they
        apply to this call only: the shared LM is not changed, so calls from several threads never wait)."""
        items = [np.asarray(item) for item in logits_list]
        options = self._call_options(
            beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight,
            alpha, beta, unk_score_offset, lm_score_boundary, None,
        )  # fmt: skip
        return [list(b) for b in self.decoder.decode_beams_with(options, items, num_threads)]

    def stream(
        self,
        *,
        beam_width: int | None = None,
        beam_prune_logp: float | None = None,
        token_min_logp: float | None = None,
        hotwords: Sequence[str] | None = None,
        hotword_weight: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        lm_score_boundary: bool | None = None,
        num_threads: int | None = None,
        n_best: int | None = None,
    ) -> Any:
        """An incremental decoder (``feed(logits)`` chunk by chunk, then ``finalize()`` → beams) whose
        ``finalize()`` equals decoding the concatenated logits with :meth:`decode_beams_batch`.

        Per-call LM parameters apply to this stream only. ``num_threads`` is accepted for symmetry with the
        batch calls and unused (one stream is one thread). ``n_best`` limits the beams ``finalize()`` returns
        (their text and frames are built in Python, which for an hour of audio and 100 beams takes hundreds
        of MB; the pipeline asks for 1).
        """
        del num_threads
        options = self._call_options(
            beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight,
            alpha, beta, unk_score_offset, lm_score_boundary, n_best,
        )  # fmt: skip
        return self.decoder.stream_with(options)

    def _call_options(
        self,
        beam_width: int | None,
        beam_prune_logp: float | None,
        token_min_logp: float | None,
        hotwords: Sequence[str] | None,
        hotword_weight: float | None,
        alpha: float | None,
        beta: float | None,
        unk_score_offset: float | None,
        lm_score_boundary: bool | None,
        n_best: int | None,
    ) -> Any:
        """The decoder's native options for one call (decoding defaults where a value is None)."""
        lm_params = {"alpha": alpha, "beta": beta, "unk_score_offset": unk_score_offset}
        lm_params["score_boundary"] = lm_score_boundary
        if any(v is not None for v in lm_params.values()) and getattr(self.decoder, "language_model", None) is None:
            logger.warning("alpha/beta/unk_score_offset/lm_score_boundary ignored: the decoder has no LM")
        return self.decoder.options(
            beam_width=DEFAULT_BEAM_WIDTH if beam_width is None else beam_width,
            beam_prune_logp=DEFAULT_PRUNE_LOGP if beam_prune_logp is None else beam_prune_logp,
            token_min_logp=DEFAULT_MIN_TOKEN_LOGP if token_min_logp is None else token_min_logp,
            prune_history=False,
            hotwords=list(hotwords) if hotwords else None,
            hotword_weight=DEFAULT_HOTWORD_WEIGHT if hotword_weight is None else hotword_weight,
            n_best=n_best,
            **lm_params,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(feature_extractor={type(self.feature_extractor).__name__}, "
            f"tokenizer={type(self.tokenizer).__name__}, decoder={type(self.decoder).__name__}, "
            f"lm_params={self._base_lm_params})"
        )


def beam_fields(beam: Any) -> tuple[str, list, float, float]:
    """(text, word_frames, logit_score, lm_score) of a decoder beam: ``decode_beams`` gives 5-tuples
    (text, lm_state, frames, logit_score, lm_score), the batch calls 4-tuples without the LM state."""
    if len(beam) == 4:
        text, frames, logit_score, lm_score = beam
    else:
        text, _, frames, logit_score, lm_score = beam[:5]
    return text, list(frames), float(logit_score), float(lm_score)


def _word_offsets(frames: list) -> list[dict[str, Any]]:
    return [{"word": word, "start_offset": int(span[0]), "end_offset": int(span[1])} for word, span in frames]


def _lm_overrides(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The language model attributes ``from_pretrained``'s keywords set, values as given."""
    out = {name: kwargs[name] for name in LM_OVERRIDE_KEYWORDS if kwargs.get(name) is not None}
    if kwargs.get("lm_score_boundary") is not None:
        out.setdefault("score_boundary", kwargs["lm_score_boundary"])
    return out


def check_feature_extractor(feature_extractor: Any) -> None:
    """Raise :class:`ProcessorComponentError` (a ``ValueError``, as transformers raises) unless the feature
    extractor is a ``Wav2Vec2FeatureExtractor`` or a ``SeamlessM4TFeatureExtractor`` (or a subclass)."""
    import transformers

    accepted = tuple(getattr(transformers, name) for name in FEATURE_EXTRACTOR_CLASSES if hasattr(transformers, name))
    if not isinstance(feature_extractor, accepted):
        raise ProcessorComponentError(
            f"feature_extractor: expected one of {', '.join(FEATURE_EXTRACTOR_CLASSES)}; "
            f"got {type(feature_extractor).__name__}"
        )


def _record_processor_class(config: Path) -> None:
    if not config.is_file():
        return
    from w2vlm.fileio import atomic_write_json, read_json_object

    data = read_json_object(config, ModelError)
    if data.get("processor_class") == PROCESSOR_CLASS_NAME:
        return
    data["processor_class"] = PROCESSOR_CLASS_NAME
    atomic_write_json(config, dict(sorted(data.items())))
