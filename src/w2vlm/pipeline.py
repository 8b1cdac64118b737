"""``w2vlm.pipeline("automatic-speech-recognition", model=...)``: audio in, text (and timestamps) out.

The pipeline is transformers' interface on the engine (:mod:`w2vlm.engine`): audio is loaded and resampled
by reading workers, cut into overlapping windows when long (``chunk_length_s`` with ``stride_length_s`` of
context on each side; inputs over a minute are windowed by default), run through the CTC model in batches of
similar length, and the windows' centres are stitched into one matrix per input, frame-exact. Each input is
then decoded as a whole by the LM beam search, so the LM state runs across window boundaries. Files are read
block by block when windowed, so memory holds a few windows of audio plus the log-probabilities (about 23 MB
per hour for a 32-token vocabulary).

Inputs longer than 10 s are cut into speech segments by voice activity detection (``vad``, with the
``vad_parameters`` of :class:`~w2vlm.engine.config.EngineConfig` without their ``vad_`` prefix), each
recognised on its own; ``return_timestamps="segment"`` gives them as ``chunks``.

Word timestamps come from the decoder's word frames; character timestamps from the decoder's token spans.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.engine import DecodeConfig, Engine, EngineConfig
from w2vlm.engine.alignment import char_spans_from_beam, ctc_align
from w2vlm.engine.config import ConfigError
from w2vlm.engine.model_runner import MIN_WINDOW_SAMPLES, inputs_to_logits_ratio
from w2vlm.errors import ModelError, UnexpectedArgumentError
from w2vlm.results import Transcript

logger = logging.getLogger("w2vlm.pipeline")

SUPPORTED_TASKS = ("automatic-speech-recognition", "asr")

_DECODER_KWARGS = {
    "beam_width",
    "beam_prune_logp",
    "token_min_logp",
    "hotwords",
    "hotword_weight",
    "alpha",
    "beta",
    "unk_score_offset",
    "lm_score_boundary",
    "num_threads",
    "no_speech_threshold",
}
#: ``vad_parameters`` keys and the engine settings they set
_VAD_PARAMETERS = {
    "threshold": "vad_threshold",
    "min_speech_s": "vad_min_speech_s",
    "min_silence_s": "vad_min_silence_s",
    "pad_s": "vad_pad_s",
    "max_segment_s": "max_segment_s",
    "above_s": "vad_above_s",
}
TIMESTAMPS = (None, False, "word", "char", "segment")


def pipeline(
    task: str = "automatic-speech-recognition",
    model: Any = None,
    *,
    processor: Any = None,
    device: Any = "auto",
    dtype: Any = None,
    quantize: str | None = None,
    chunk_length_s: float | None = None,
    stride_length_s: float | Sequence[float] | None = None,
    batch_size: int | None = None,
    decoder_kwargs: dict[str, Any] | None = None,
    return_timestamps: str | bool | None = None,
    model_kwargs: dict[str, Any] | None = None,
    vad: bool | None = None,
    vad_parameters: dict[str, float] | None = None,
    **kwargs: Any,
) -> AutomaticSpeechRecognitionPipeline:
    """Build an ASR pipeline like transformers' ``pipeline("automatic-speech-recognition", ...)``.

    ``model``: a local folder in the hub layout, a hub id, an already loaded CTC model (then ``processor`` or
    a model whose ``config._name_or_path`` is a folder is needed), or None for the embedded default model.
    ``processor``: a :class:`~w2vlm.processor.Wav2Vec2ProcessorWithLM` or a folder/hub id to load it from
    (default: the model's folder); or its parts as transformers takes them, ``feature_extractor=``, ``tokenizer=``,
    ``decoder=`` (objects or folders; parts not given come from the model's folder).
    ``device``, ``dtype``, ``quantize``: as :func:`w2vlm.load_model` (``torch_dtype`` and a one-device
    ``device_map`` are taken too; ``trust_remote_code`` and ``framework="pt"`` change nothing).
    ``chunk_length_s``/``stride_length_s``/``batch_size``/``decoder_kwargs``/``return_timestamps``: defaults
    for every call (each call may override them). ``batch_size``: at most this many windows per forward pass
    (default: as many as fit a budget of padded audio; windows of similar length are batched together).
    ``vad``: voice activity detection on (True), off (False) or for inputs longer than 10 s (None);
    ``vad_parameters``: ``threshold``, ``min_speech_s``, ``min_silence_s``, ``pad_s``, ``max_segment_s``,
    ``above_s`` (see :class:`~w2vlm.engine.config.EngineConfig`).
    """
    if task not in SUPPORTED_TASKS:
        raise ConfigError(f"task: {task!r} is not supported; w2vlm provides 'automatic-speech-recognition'")
    from w2vlm.model import load_model, resolve_model_path
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only", "token") if k in kwargs}
    # the processor's parts, as model cards pass them (tokenizer=, feature_extractor=, decoder=)
    parts = {k: kwargs.pop(k) for k in ("feature_extractor", "tokenizer", "decoder") if kwargs.get(k) is not None}
    for key in ("feature_extractor", "tokenizer", "decoder"):
        kwargs.pop(key, None)
    if "torch_dtype" in kwargs:
        dtype = kwargs.pop("torch_dtype")
    placed = _transformers_only(kwargs)
    if placed is not None and device == "auto":
        device = placed
    if kwargs:
        raise UnexpectedArgumentError(f"pipeline() got unexpected keyword arguments {sorted(kwargs)}")
    model_kwargs = dict(model_kwargs or {})

    if model is None or isinstance(model, (str, os.PathLike)):
        folder = resolve_model_path(model, **hub)
        loaded = load_model(folder, device=device, dtype=dtype, quantize=quantize, **model_kwargs)
    else:
        loaded = model
        folder = None
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
        if name and Path(name).is_dir():
            folder = Path(name)
    if isinstance(processor, (str, os.PathLike)):
        processor = Wav2Vec2ProcessorWithLM.from_pretrained(processor, **hub)
    elif processor is None and len(parts) == 3 and not any(isinstance(v, (str, os.PathLike)) for v in parts.values()):
        processor = Wav2Vec2ProcessorWithLM(parts["feature_extractor"], parts["tokenizer"], parts["decoder"])
        parts = {}
    if processor is None:
        if folder is None:
            raise ModelError(
                "processor: a loaded model was given without processor= (or feature_extractor=, tokenizer= and "
                "decoder=) and its config does not name a local folder to load the processor from; pass "
                "processor=Wav2Vec2ProcessorWithLM.from_pretrained(...)"
            )
        processor = Wav2Vec2ProcessorWithLM.from_pretrained(folder, **hub)
    if parts:  # some parts given: they replace the processor's own
        given = {k: _part(k, v, hub) for k, v in parts.items()}
        merged = {k: given.get(k, getattr(processor, k)) for k in ("feature_extractor", "tokenizer", "decoder")}
        processor = Wav2Vec2ProcessorWithLM(merged["feature_extractor"], merged["tokenizer"], merged["decoder"])
    return AutomaticSpeechRecognitionPipeline(
        model=loaded,
        processor=processor,
        chunk_length_s=chunk_length_s,
        stride_length_s=stride_length_s,
        batch_size=batch_size,
        decoder_kwargs=decoder_kwargs,
        return_timestamps=return_timestamps,
        vad=vad,
        vad_parameters=vad_parameters,
    )


def _transformers_only(kwargs: dict[str, Any]) -> Any:
    """Take transformers' ``pipeline`` arguments out of ``kwargs``, refusing the values w2vlm cannot honour:
    ``trust_remote_code`` (w2vlm never runs a model's own code), ``framework`` ("pt" only), ``device_map``
    ("auto" or one device: one model on one device). Returns the device ``device_map`` names, if any."""
    kwargs.pop("trust_remote_code", None)
    framework = kwargs.pop("framework", None)
    if framework not in (None, "pt"):
        raise ConfigError(f"framework: w2vlm runs PyTorch models ('pt'); got {framework!r}")
    device_map = kwargs.pop("device_map", None)
    if device_map is not None and not isinstance(device_map, (str, int)):
        raise ConfigError(
            f"device_map: w2vlm runs the model on one device ('auto', 'cpu', 'cuda', 'cuda:1', ...); got {device_map!r}"
        )
    return None if device_map == "auto" else device_map


def _part(name: str, value: Any, hub: dict[str, Any]) -> Any:
    """One part of a processor given to :func:`pipeline`: the object, or the folder/hub id it is loaded from."""
    if not isinstance(value, (str, os.PathLike)):
        return value
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    return getattr(Wav2Vec2ProcessorWithLM.from_pretrained(value, **hub), name)


class CTCLogitsRunner:
    """The acoustic half of the engine on its own: per input, the model's (frames, vocab) log-probabilities
    (stitched from windows when chunking). Used by ``w2vlm eval`` (which caches them) and benchmarks."""

    def __init__(
        self, model: Any, feature_extractor: Any, config: EngineConfig | None = None, decoder: Any = None
    ) -> None:
        self.engine = Engine(model, feature_extractor, decoder, config)
        self.model = model
        self.feature_extractor = feature_extractor
        self.sampling_rate = self.engine.sampling_rate
        self.ratio = self.engine.runner.ratio

    @property
    def device(self) -> Any:
        return self.engine.runner.device

    def compute_logits(
        self,
        items: Sequence[Any],
        chunk_length_s: float | None = None,
        stride_length_s: float | Sequence[float] | None = None,
        batch_size: int | None = None,
        *,
        allow_urls: bool = False,
    ) -> list[np.ndarray]:
        """Per input, float32 (frames, vocab) log-probabilities; raises the first input's error."""
        config = _call_config(self.engine.config, chunk_length_s, stride_length_s, batch_size)
        out = []
        for lp, _, error in self.engine.log_probs(items, config=config, allow_urls=allow_urls):
            if error is not None:
                raise error
            out.append(lp)
        return out


#: inputs of an iterator transcribed per call of the engine (they batch together; memory stays bounded)
STREAM_GROUP = 32


class AutomaticSpeechRecognitionPipeline(CTCLogitsRunner):
    """CTC model + LM decoder over audio inputs, on the engine (:mod:`w2vlm.engine`); see :func:`pipeline`."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        chunk_length_s: float | None = None,
        stride_length_s: float | Sequence[float] | None = None,
        batch_size: int | None = None,
        decoder_kwargs: dict[str, Any] | None = None,
        return_timestamps: str | bool | None = None,
        vad: bool | None = None,
        vad_parameters: dict[str, float] | None = None,
    ) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.decoder = processor.decoder
        self.chunk_length_s = chunk_length_s
        self.stride_length_s = stride_length_s
        self.batch_size = batch_size
        self.decoder_kwargs = _check_decoder_kwargs(decoder_kwargs)
        self.return_timestamps = return_timestamps
        vocab = int(getattr(model.config, "vocab_size", 0))
        labels = len(_labels(self.decoder))
        if vocab and vocab != labels:
            raise ModelError(
                f"model/processor mismatch: the model outputs {vocab} tokens but the decoder's alphabet has "
                f"{labels} labels"
            )
        super().__init__(
            model, processor.feature_extractor, vad_config(EngineConfig(), vad, vad_parameters), processor.decoder
        )
        self.last_timings: dict[str, float] = {}

    @property
    def type(self) -> str:
        """As transformers' pipeline: "ctc_with_lm" when the decoder has a language model, else "ctc"."""
        return "ctc_with_lm" if getattr(self.decoder, "language_model", None) is not None else "ctc"

    # ------------------------------------------------------------------------------------------------ call

    def __call__(
        self,
        inputs: Any,
        *,
        return_timestamps: str | bool | None = None,
        chunk_length_s: float | None = None,
        stride_length_s: float | Sequence[float] | None = None,
        batch_size: int | None = None,
        decoder_kwargs: dict[str, Any] | None = None,
        allow_urls: bool = False,
        vad: bool | None = None,
        vad_parameters: dict[str, float] | None = None,
    ) -> dict[str, Any] | list[dict[str, Any]] | Iterator[dict[str, Any]]:
        """Transcribe one input (path, bytes, array, ``{"array"|"raw", "sampling_rate"}`` dict, file object)
        or a list of them. Returns ``{"text"}`` (a list of such dicts for a list), plus ``"chunks"`` =
        ``[{"text", "timestamp": (start_s, end_s)}]`` with ``return_timestamps="word"`` or ``"char"``, or the
        speech segments with ``"segment"`` (each also with ``speech_prob`` and ``no_speech_prob``). ``vad``,
        ``vad_parameters``: this call's voice activity detection (default: the pipeline's).
        An input that cannot be read or decoded raises its error (a :class:`~w2vlm.errors.W2vlmError`).
        A generator (or another iterator) of inputs gives an iterator of results, as transformers' pipeline
        does: the inputs are taken :data:`STREAM_GROUP` at a time, so memory stays bounded however many."""
        if isinstance(inputs, Iterator) and not hasattr(inputs, "read"):  # a file object is one input
            options = {
                "return_timestamps": return_timestamps,
                "chunk_length_s": chunk_length_s,
                "stride_length_s": stride_length_s,
                "batch_size": batch_size,
                "decoder_kwargs": decoder_kwargs,
                "allow_urls": allow_urls,
                "vad": vad,
                "vad_parameters": vad_parameters,
            }
            return self._each(inputs, options)
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        timestamps = self.return_timestamps if return_timestamps is None else return_timestamps
        if timestamps is True:
            timestamps = "word"
        if timestamps not in TIMESTAMPS:
            raise ConfigError(f"return_timestamps: expected 'word', 'char', 'segment' or None; got {timestamps!r}")
        dec_kwargs = dict(self.decoder_kwargs)
        dec_kwargs.update(_check_decoder_kwargs(decoder_kwargs))
        bs = self.batch_size if batch_size is None else batch_size
        if bs is not None and bs < 1:
            raise ConfigError(f"batch_size: must be >= 1; got {bs}")
        config = _call_config(
            vad_config(self.engine.config, vad, vad_parameters),
            self.chunk_length_s if chunk_length_s is None else chunk_length_s,
            self.stride_length_s if stride_length_s is None else stride_length_s,
            bs,
        )
        decode = decode_config_from_kwargs(dec_kwargs, timestamps if timestamps in ("word", "char") else None)
        before = dict(self.engine.timings)
        outputs = []
        for transcript in self.engine.transcribe(items, decode, config=config, allow_urls=allow_urls):
            if transcript.exception is not None:
                raise transcript.exception
            outputs.append(_as_dict(transcript, timestamps or None))
        self.last_timings = {k: v - before.get(k, 0.0) for k, v in self.engine.timings.items()}
        return outputs[0] if single else outputs

    def _each(self, inputs: Iterator[Any], options: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while group := list(itertools.islice(inputs, STREAM_GROUP)):
            yield from self(group, **options)


def decode_config_from_kwargs(kwargs: dict[str, Any], timestamps: str | None = None) -> DecodeConfig:
    """transformers' ``decoder_kwargs`` (pyctcdecode's argument names) as a :class:`DecodeConfig`."""
    mapping = {"lm_score_boundary": "score_boundary"}
    fields = {mapping.get(k, k): v for k, v in kwargs.items() if k != "num_threads"}
    hotwords = fields.pop("hotwords", None)
    if isinstance(hotwords, str):
        hotwords = [hotwords]
    return DecodeConfig(hotwords=tuple(hotwords or ()), timestamps=timestamps, **fields)


def vad_config(base: EngineConfig, vad: bool | None, parameters: dict[str, float] | None) -> EngineConfig:
    """``base`` with the pipeline's ``vad`` (None: unchanged) and ``vad_parameters``."""
    changes: dict[str, Any] = {} if vad is None else {"vad": vad}
    for key, value in (parameters or {}).items():
        if key not in _VAD_PARAMETERS:
            raise ConfigError(f"vad_parameters: unknown key {key!r}; expected some of {sorted(_VAD_PARAMETERS)}")
        changes[_VAD_PARAMETERS[key]] = value
    return base.with_(**changes) if changes else base


def _call_config(
    base: EngineConfig,
    chunk_length_s: float | None,
    stride_length_s: float | Sequence[float] | None,
    batch_size: int | None,
) -> EngineConfig:
    if chunk_length_s is not None and not chunk_length_s > 0:
        raise ConfigError(f"chunk_length_s: must be positive; got {chunk_length_s}")
    stride = tuple(stride_length_s) if isinstance(stride_length_s, (list, tuple)) else stride_length_s
    if chunk_length_s:
        from w2vlm.engine.windows import chunk_sizes

        chunk_sizes(float(chunk_length_s), stride, 16000, 320)  # bad strides: raise now
    return base.with_(chunk_length_s=chunk_length_s or None, stride_length_s=stride, batch_size=batch_size)


def _char_chunks(transcript: Transcript) -> list[dict[str, Any]]:
    """Character chunks as transformers gives them for CTC models: the word delimiter included, as " " (here
    spanning the pause between the words), so that the chunks' texts join to the text."""
    chunks = [{"text": c.word, "timestamp": (round(c.start, 3), round(c.end, 3))} for c in transcript.chars]
    lengths = [len(w.word) for w in transcript.words]
    if sum(lengths) != len(chunks):  # characters that do not spell the words one for one: left as they are
        return chunks
    out: list[dict[str, Any]] = []
    at = 0
    for i, n in enumerate(lengths):
        if i and n:
            out.append({"text": " ", "timestamp": (out[-1]["timestamp"][1], chunks[at]["timestamp"][0])})
        out.extend(chunks[at : at + n])
        at += n
    return out


def _as_dict(transcript: Transcript, timestamps: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"text": transcript.text}
    if timestamps == "word":
        out["chunks"] = [{"text": w.word, "timestamp": (round(w.start, 3), round(w.end, 3))} for w in transcript.words]
    elif timestamps == "char":
        out["chunks"] = _char_chunks(transcript)
    elif timestamps == "segment":
        out["chunks"] = [
            {
                "text": s.text,
                "timestamp": (round(s.start, 3), round(s.end, 3)),
                "speech_prob": s.speech_prob,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in transcript.segments
        ]
    return out


# ------------------------------------------------------------------------------------------------ helpers


def _labels(decoder: Any) -> list[str]:
    from w2vlm.processor import decoder_labels

    return decoder_labels(decoder)


def _check_decoder_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(kwargs or {})
    unknown = set(kwargs) - _DECODER_KWARGS
    if unknown:  # a TypeError, as transformers' pipeline gives (decode_beams() got an unexpected keyword)
        raise UnexpectedArgumentError(
            f"decoder_kwargs: unknown keys {sorted(unknown)}; expected some of {sorted(_DECODER_KWARGS)}"
        )
    return kwargs


class _CallableModule(types.ModuleType):
    """``w2vlm.pipeline`` is both this module and the :func:`pipeline` function: once the submodule has
    been imported, Python binds the package attribute to the module, so the module forwards calls."""

    def __call__(self, *args: Any, **kwargs: Any) -> AutomaticSpeechRecognitionPipeline:
        return pipeline(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


__all__ = [
    "MIN_WINDOW_SAMPLES",
    "STREAM_GROUP",
    "SUPPORTED_TASKS",
    "AutomaticSpeechRecognitionPipeline",
    "CTCLogitsRunner",
    "char_spans_from_beam",
    "ctc_align",
    "decode_config_from_kwargs",
    "inputs_to_logits_ratio",
    "pipeline",
]
