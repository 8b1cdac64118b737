"""``w2vlm.pipeline("automatic-speech-recognition", model=...)``: audio in, text (and timestamps) out.

Audio is loaded and resampled (:mod:`w2vlm.audio`), cut into overlapping windows when long (``chunk_length_s``
with ``stride_length_s`` of context on each side), run through the CTC model in batches, and the logits of
the windows' centres are stitched into one matrix per input, frame-exact: frame ``i`` of the result is the
model's frame for samples ``[i·r, i·r + receptive field)`` (``r`` = samples per logit frame, 320 for
wav2vec2). Each input's stitched logits are then decoded as a whole by the LM beam search, so the LM state
runs across window boundaries and the transcript equals decoding the same logits in one piece. Files are
read block by block when chunking, so memory holds a couple of windows of audio plus the logits
(about 23 MB per hour for a 32-token vocabulary).

Word timestamps come from the decoder's word frames; character timestamps from a CTC forced alignment of
each decoded word's characters within that word's frames.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import types
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.audio import audio_duration, is_url, iter_audio_blocks, load_audio
from w2vlm.engine.alignment import char_spans_from_beam
from w2vlm.errors import AudioError, DecoderInputError, ModelError
from w2vlm.processor import beam_fields

logger = logging.getLogger("w2vlm.pipeline")

SUPPORTED_TASKS = ("automatic-speech-recognition", "asr")

#: Inputs longer than this are chunked even when ``chunk_length_s`` is not given (0 disables chunking).
AUTO_CHUNK_THRESHOLD_S = 60.0
AUTO_CHUNK_LENGTH_S = 30.0

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
}


@dataclass
class _Window:
    item: int  # index of the input this window belongs to
    start: int  # first sample (a multiple of the frame ratio)
    audio: np.ndarray
    right: int  # samples of right context whose frames belong to the next window (0 for the last one)
    is_last: bool
    chunked: bool = True


#: wav2vec2's receptive field: the fewest samples that give one logit frame.
MIN_WINDOW_SAMPLES = 400


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
    batch_size: int = 1,
    decoder_kwargs: dict[str, Any] | None = None,
    return_timestamps: str | bool | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> AutomaticSpeechRecognitionPipeline:
    """Build an ASR pipeline like transformers' ``pipeline("automatic-speech-recognition", ...)``.

    ``model``: a local folder in the hub layout, a hub id, an already loaded CTC model (then ``processor`` or
    a model whose ``config._name_or_path`` is a folder is needed), or None for the embedded default model.
    ``processor``: a :class:`~w2vlm.processor.Wav2Vec2ProcessorWithLM` or a folder/hub id to load it from
    (default: the model's folder). ``device``, ``dtype``, ``quantize``: as :func:`w2vlm.load_model`.
    ``chunk_length_s``/``stride_length_s``/``batch_size``/``decoder_kwargs``/``return_timestamps``: defaults
    for every call (each call may override them).
    """
    if task not in SUPPORTED_TASKS:
        raise ValueError(f"task: {task!r} is not supported; w2vlm provides 'automatic-speech-recognition'")
    from w2vlm.model import load_model, resolve_model_path
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "local_files_only", "token") if k in kwargs}
    for legacy in ("feature_extractor", "tokenizer", "decoder"):
        if kwargs.get(legacy) is not None and processor is None:
            raise ValueError(f"{legacy}=: pass a w2vlm Wav2Vec2ProcessorWithLM as processor= (or a folder) instead")
        kwargs.pop(legacy, None)
    if "torch_dtype" in kwargs:
        dtype = kwargs.pop("torch_dtype")
    if kwargs:
        raise TypeError(f"pipeline() got unexpected keyword arguments {sorted(kwargs)}")
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
    if processor is None:
        if folder is None:
            raise ModelError(
                "processor: a loaded model was given without processor= and its config does not name a "
                "local folder to load the processor from; pass "
                "processor=Wav2Vec2ProcessorWithLM.from_pretrained(...)"
            )
        processor = Wav2Vec2ProcessorWithLM.from_pretrained(folder, **hub)
    elif isinstance(processor, (str, os.PathLike)):
        processor = Wav2Vec2ProcessorWithLM.from_pretrained(processor, **hub)
    return AutomaticSpeechRecognitionPipeline(
        model=loaded,
        processor=processor,
        chunk_length_s=chunk_length_s,
        stride_length_s=stride_length_s,
        batch_size=batch_size,
        decoder_kwargs=decoder_kwargs,
        return_timestamps=return_timestamps,
    )


class CTCLogitsRunner:
    """Runs a CTC model over audio inputs: loading, windowing with strides, batching, frame-exact stitching.

    Used by the pipeline; usable on its own to get logits (frames, vocab) per input.
    """

    def __init__(self, model: Any, feature_extractor: Any) -> None:
        self.model = model
        self.feature_extractor = feature_extractor
        self.sampling_rate = int(getattr(feature_extractor, "sampling_rate", 16000))
        self.ratio = inputs_to_logits_ratio(model)
        params = list(model.parameters())
        self.device = params[0].device if params else "cpu"
        from w2vlm.features import fast_log_mel

        self._log_mel = fast_log_mel(feature_extractor)  # Wav2Vec2-BERT: filter banks in torch, ~3-4x faster

    def compute_logits(
        self,
        items: Sequence[Any],
        chunk_length_s: float | None = None,
        stride_length_s: float | Sequence[float] | None = None,
        batch_size: int = 1,
        *,
        allow_urls: bool = False,
        timings: dict[str, float] | None = None,
    ) -> list[np.ndarray]:
        """Per input, the model's float32 (frames, vocab) logits (stitched from windows when chunking)."""
        per_item: list[list[np.ndarray]] = [[] for _ in items]
        for item, piece, _ in self.iter_logits(
            items, chunk_length_s, stride_length_s, batch_size, allow_urls=allow_urls, timings=timings
        ):
            per_item[item].append(piece)
        vocab = int(self.model.config.vocab_size)
        out = []
        for idx, parts in enumerate(per_item):
            out.append(np.concatenate(parts, axis=0) if parts else np.zeros((0, vocab), np.float32))
            logger.debug("input %d: %d logit frames", idx, out[-1].shape[0])
        return out

    def iter_logits(
        self,
        items: Sequence[Any],
        chunk_length_s: float | None = None,
        stride_length_s: float | Sequence[float] | None = None,
        batch_size: int = 1,
        *,
        allow_urls: bool = False,
        timings: dict[str, float] | None = None,
    ) -> Iterator[tuple[int, np.ndarray, bool]]:
        """Yield ``(input index, consecutive logit frames, chunked)`` as windows are computed.

        Each input's pieces come in order and concatenate to its stitched logits; ``chunked`` tells whether
        the input is being processed in windows (so a consumer may decode it incrementally).
        """
        timings = timings if timings is not None else {}
        emitted = [0] * len(items)
        batch: list[_Window] = []

        def flush() -> list[tuple[int, np.ndarray, bool]]:
            t0 = time.perf_counter()
            out = []
            for window, logits in zip(batch, self._forward([w.audio for w in batch]), strict=True):
                piece = self._keep_centre(window, logits, emitted)
                if piece is not None:
                    out.append((window.item, piece, window.chunked))
            timings["model"] = timings.get("model", 0.0) + time.perf_counter() - t0
            batch.clear()
            return out

        for window in self._windows(items, chunk_length_s, stride_length_s, allow_urls, timings):
            # windows of different lengths share a forward pass only when the model takes an attention mask
            # (zero padding would change the output of models without one)
            if batch and window.audio.size != batch[0].audio.size and not self._uses_mask():
                yield from flush()
            batch.append(window)
            if len(batch) >= batch_size:
                yield from flush()
        if batch:
            yield from flush()

    def _windows(
        self,
        items: Sequence[Any],
        chunk_length_s: float | None,
        stride_length_s: float | Sequence[float] | None,
        allow_urls: bool,
        timings: dict[str, float],
    ) -> Iterator[_Window]:
        sr = self.sampling_rate
        for idx, item in enumerate(items):
            t0 = time.perf_counter()
            chunk_s = chunk_length_s
            streamed = _is_local_file(item)
            duration = audio_duration(item) if streamed else None
            blocks: Iterable[np.ndarray]
            if streamed and (chunk_s or (chunk_s is None and (duration or 0) > AUTO_CHUNK_THRESHOLD_S)):
                blocks = iter_audio_blocks(item, sr, block_s=max(float(chunk_s or AUTO_CHUNK_LENGTH_S), 1.0))
            else:
                audio = load_audio(item, sr, allow_urls=allow_urls)
                duration = audio.size / sr
                blocks = [audio]
            timings["audio"] = timings.get("audio", 0.0) + time.perf_counter() - t0
            if chunk_s is None and duration is not None and duration > AUTO_CHUNK_THRESHOLD_S:
                logger.info(
                    "input %d is %.0f s long: chunking it into %.0f s windows",
                    idx,
                    duration,
                    AUTO_CHUNK_LENGTH_S,
                )
                chunk_s = AUTO_CHUNK_LENGTH_S
            if not chunk_s:
                (audio,) = blocks
                yield _Window(idx, 0, audio, 0, True, chunked=False)
                continue
            chunk, left, right = self._chunk_sizes(float(chunk_s), stride_length_s)
            yield from self._iter_windows(idx, blocks, chunk, left, right, timings)

    def _chunk_sizes(self, chunk_length_s: float, stride_length_s: float | Sequence[float] | None) -> tuple:
        sr, ratio = self.sampling_rate, self.ratio
        if chunk_length_s <= 0:
            raise ValueError(f"chunk_length_s: must be positive; got {chunk_length_s}")
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        if isinstance(stride_length_s, (int, float)):
            stride_length_s = (stride_length_s, stride_length_s)
        left_s, right_s = (float(x) for x in stride_length_s)
        chunk = round(chunk_length_s * sr / ratio) * ratio
        left = round(left_s * sr / ratio) * ratio
        right = round(right_s * sr / ratio) * ratio
        if left < 0 or right < 0 or chunk - left - right <= 0:
            raise ValueError(
                f"stride_length_s: strides ({left_s}, {right_s}) s leave no centre in {chunk_length_s} s "
                "windows; the strides together must be shorter than chunk_length_s"
            )
        return chunk, left, right

    def _iter_windows(
        self,
        item: int,
        blocks: Iterable[np.ndarray],
        chunk: int,
        left: int,
        right: int,
        timings: dict[str, float],
    ) -> Iterator[_Window]:
        """Windows of ``chunk`` samples every ``chunk - left - right`` samples; the last window is moved back
        so that it is a full window (or the whole input) ending at the input's end."""
        step = chunk - left - right
        buf = np.zeros(0, np.float32)
        buf_start = 0  # absolute sample index of buf[0]
        start = 0  # start of the next window
        prev_start: int | None = None
        iterator = iter(blocks)
        exhausted = False
        while True:
            # read until one sample past the next window is known, or the input ends
            while not exhausted and buf_start + buf.size <= start + chunk:
                t0 = time.perf_counter()
                block = next(iterator, None)
                timings["audio"] = timings.get("audio", 0.0) + time.perf_counter() - t0
                if block is None:
                    exhausted = True
                elif block.size:
                    buf = np.concatenate([buf, block])
            total = buf_start + buf.size
            if total > start + chunk:
                yield _Window(item, start, buf[start - buf_start : start - buf_start + chunk], right, False)
                prev_start = start
                start += step
                # keep audio from the window just yielded on: the final window may reach back into it
                buf, buf_start = buf[prev_start - buf_start :], prev_start
                continue
            # the input ends within the next window: a last, full-length window ending at the end
            last_start = max(0, (total - chunk) // self.ratio * self.ratio)
            if prev_start is not None:
                last_start = max(last_start, prev_start)
            window = buf[last_start - buf_start :]
            if window.size < MIN_WINDOW_SAMPLES:
                raise AudioError(
                    f"input {item}: audio is too short ({window.size} samples at {self.sampling_rate} Hz); "
                    f"the model needs at least {MIN_WINDOW_SAMPLES} samples"
                )
            yield _Window(item, last_start, window, 0, True)
            return

    def _keep_centre(self, window: _Window, logits: np.ndarray, emitted: list[int]) -> np.ndarray | None:
        """The frames of this window that are not emitted yet and not in its right stride."""
        first_frame = window.start // self.ratio
        right_frames = window.right // self.ratio
        lo = emitted[window.item] - first_frame
        hi = logits.shape[0] - right_frames
        if lo < 0:
            logger.debug("window at sample %d leaves a gap of %d frames", window.start, -lo)
            lo = 0
        if hi <= lo:
            return None
        emitted[window.item] = first_frame + hi
        return logits[lo:hi]

    def _uses_mask(self) -> bool:
        return bool(getattr(self.feature_extractor, "return_attention_mask", False))

    def features(self, audios: list[np.ndarray], with_mask: bool) -> Any:
        """Model input of a batch of clips padded to the longest (torch tensors): the feature extractor's, or
        for Wav2Vec2-BERT its faster torch twin (``w2vlm.features``, the same values)."""
        if self._log_mel is not None:
            from w2vlm.features import batch_log_mel

            return batch_log_mel(self._log_mel, audios, with_mask=with_mask)
        return self.feature_extractor(
            audios,
            sampling_rate=self.sampling_rate,
            padding=True,
            return_tensors="pt",
            return_attention_mask=with_mask,
        )

    def _forward(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Feature extraction + model forward for a batch; returns each item's unpadded logits."""
        import torch

        lengths = [a.size for a in audios]
        same = len(set(lengths)) == 1
        # log-mel extractors (Wav2Vec2-BERT) mask frames even in a lone clip (the half-empty last 20 ms frame
        # of an odd number of 10 ms frames), as the model was trained: their mask always goes in
        frame_level = self.feature_extractor.model_input_names[0] == "input_features"
        features = self.features(audios, with_mask=self._uses_mask() and (frame_level or not same))
        name = self.feature_extractor.model_input_names[0]
        values = features[name]
        dtype = _model_dtype(self.model)
        inputs = {name: values.to(self.device, dtype=dtype if values.is_floating_point() else None)}
        if "attention_mask" in features:
            inputs["attention_mask"] = features["attention_mask"].to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits
        logits = logits.float().cpu().numpy()
        mask = features.get("attention_mask")
        if same and mask is None:
            return list(logits)
        if mask is not None and mask.shape[-1] == logits.shape[1]:
            # frame-level mask (log-mel input models such as Wav2Vec2-BERT): one logit frame per input frame
            frames = mask.sum(-1).tolist()
        else:
            frames = self.model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
        return [logits[i, : int(n)] for i, n in enumerate(frames)]


class AutomaticSpeechRecognitionPipeline(CTCLogitsRunner):
    """CTC model + LM decoder over audio inputs; see :func:`pipeline`."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        chunk_length_s: float | None = None,
        stride_length_s: float | Sequence[float] | None = None,
        batch_size: int = 1,
        decoder_kwargs: dict[str, Any] | None = None,
        return_timestamps: str | bool | None = None,
    ) -> None:
        super().__init__(model, processor.feature_extractor)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.decoder = processor.decoder
        self.chunk_length_s = chunk_length_s
        self.stride_length_s = stride_length_s
        self.batch_size = batch_size
        self.decoder_kwargs = _check_decoder_kwargs(decoder_kwargs)
        self.return_timestamps = return_timestamps
        self.last_timings: dict[str, float] = {}
        vocab = int(getattr(model.config, "vocab_size", 0))
        labels = len(_labels(self.decoder))
        if vocab and vocab != labels:
            raise ModelError(
                f"model/processor mismatch: the model outputs {vocab} tokens but the decoder's alphabet has "
                f"{labels} labels"
            )

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
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Transcribe one input (path, bytes, array, ``{"array"|"raw", "sampling_rate"}`` dict, file object)
        or a list of them. Returns ``{"text"}`` (a list of such dicts for a list), plus ``"chunks"`` =
        ``[{"text", "timestamp": (start_s, end_s)}]`` with ``return_timestamps="word"`` or ``"char"``."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        timestamps = self.return_timestamps if return_timestamps is None else return_timestamps
        if timestamps is True:
            timestamps = "word"
        if timestamps not in (None, False, "word", "char"):
            raise ValueError(f"return_timestamps: expected 'word', 'char' or None; got {timestamps!r}")
        dec_kwargs = dict(self.decoder_kwargs)
        dec_kwargs.update(_check_decoder_kwargs(decoder_kwargs))
        chunk_s = self.chunk_length_s if chunk_length_s is None else chunk_length_s
        stride_s = self.stride_length_s if stride_length_s is None else stride_length_s
        bs = self.batch_size if batch_size is None else batch_size
        if bs < 1:
            raise ValueError(f"batch_size: must be >= 1; got {bs}")

        timings = {"audio": 0.0, "model": 0.0, "decode": 0.0, "timestamps": 0.0}
        # chunked inputs are decoded while their windows are computed (LM state carried across windows,
        # no logits kept); whole inputs are decoded together at the end on the decoder's threads
        streams: dict[int, Any] = {}
        pieces: dict[int, list[np.ndarray]] = {}
        frames = [0] * len(items)
        for item, piece, chunked in self.iter_logits(
            items, chunk_s, stride_s, bs, allow_urls=allow_urls, timings=timings
        ):
            frames[item] += piece.shape[0]
            if chunked:
                t0 = time.perf_counter()
                if item not in streams:
                    streams[item] = self.processor.stream(**dec_kwargs, n_best=1)
                streams[item].feed(piece)
                timings["decode"] += time.perf_counter() - t0
            else:
                pieces.setdefault(item, []).append(piece)
        t0 = time.perf_counter()
        whole = sorted(pieces)
        vocab = int(self.model.config.vocab_size)
        logits_of = {i: np.concatenate(pieces[i]) if pieces[i] else np.zeros((0, vocab), np.float32) for i in whole}
        best: dict[int, Any] = {}
        if whole:
            beams = self.processor.decode_beams_batch([logits_of[i] for i in whole], **dec_kwargs)
            best.update({i: (b[0] if b else None) for i, b in zip(whole, beams, strict=True)})
        for i, stream in streams.items():
            finals = stream.finalize()
            best[i] = finals[0] if finals else None
        timings["decode"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        outputs = [self._format(logits_of.get(i), best.get(i), timestamps) for i in range(len(items))]
        timings["timestamps"] = time.perf_counter() - t0
        self.last_timings = timings
        logger.debug("transcribed %d inputs (%s frames): %s", len(items), frames, timings)
        return outputs[0] if single else outputs

    # ------------------------------------------------------------------------------------------ outputs

    def _format(self, logits: np.ndarray | None, beam: Any, timestamps: str | bool | None) -> dict[str, Any]:
        if beam is None:
            return {"text": ""} if not timestamps else {"text": "", "chunks": []}
        text, word_frames, _, _ = beam_fields(beam)
        out: dict[str, Any] = {"text": text}
        if not timestamps:
            return out
        seconds = self.ratio / self.sampling_rate
        if timestamps == "word":
            out["chunks"] = [
                {"text": word, "timestamp": (round(s * seconds, 3), round(e * seconds, 3))}
                for word, (s, e) in word_frames
            ]
        else:
            spans = char_spans_from_beam(beam, logits, _labels(self.decoder))
            out["chunks"] = [
                {"text": ch, "timestamp": (round(s * seconds, 3), round(e * seconds, 3))} for ch, (s, e) in spans
            ]
        return out


# ------------------------------------------------------------------------------------------------ helpers


def inputs_to_logits_ratio(model: Any) -> int:
    """Samples per logit frame: the product of the conv feature encoder's strides (320 for wav2vec2)."""
    config = getattr(model, "config", None)
    strides = getattr(config, "conv_stride", None)
    if strides:
        return int(np.prod(strides))
    ratio = getattr(config, "inputs_to_logits_ratio", None)
    if ratio:
        return int(ratio)
    # Wav2Vec2-BERT style: stacked 10 ms filterbank frames
    stride = getattr(config, "feature_projection_input_dim", None)
    if stride:
        return 320
    raise ModelError("model config: cannot tell how many samples one logit frame covers (no conv_stride)")


def _model_dtype(model: Any) -> Any:
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _labels(decoder: Any) -> list[str]:
    from w2vlm.processor import decoder_labels

    return decoder_labels(decoder)


def _is_local_file(item: Any) -> bool:
    if not isinstance(item, (str, os.PathLike)) or is_url(os.fspath(item)):
        return False
    try:
        return Path(item).expanduser().is_file()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        return False


def _check_decoder_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(kwargs or {})
    unknown = set(kwargs) - _DECODER_KWARGS
    if unknown:
        raise DecoderInputError(
            f"decoder_kwargs: unknown keys {sorted(unknown)}; expected some of {sorted(_DECODER_KWARGS)}"
        )
    return kwargs


class _CallableModule(types.ModuleType):
    """``w2vlm.pipeline`` is both this module and the :func:`pipeline` function: once the submodule has
    been imported, Python binds the package attribute to the module, so the module forwards calls."""

    def __call__(self, *args: Any, **kwargs: Any) -> AutomaticSpeechRecognitionPipeline:
        return pipeline(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
