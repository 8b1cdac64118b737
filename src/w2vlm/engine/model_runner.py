"""The acoustic half of the engine: model input for one window, and a batched forward pass to log-probabilities.

:meth:`ModelRunner.prepare` turns one window of 16 kHz audio into what the model reads (log-mel filter banks
for Wav2Vec2-BERT models, the normalised waveform for wav2vec2-style models) — on a CPU device this runs in
the engine's reading workers, in parallel; on a GPU the raw audio is kept and the features are computed there,
batched. :meth:`ModelRunner.forward` pads a batch, runs the model and returns each window's float32
log-probabilities (log-softmax on the device), unpadded. On CUDA the host batch is pinned, copies are
non-blocking, and the result is a :class:`PendingOutput` whose copy back overlaps the next batch.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from w2vlm.engine.attention import padding_mask_attention
from w2vlm.errors import ModelError
from w2vlm.features import WaveformInputs

#: wav2vec2's receptive field: the fewest samples that give one logit frame.
MIN_WINDOW_SAMPLES = 400


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
    if getattr(config, "feature_projection_input_dim", None):
        return 320
    raise ModelError("model config: cannot tell how many samples one logit frame covers (no conv_stride)")


def model_dtype(model: Any) -> Any:
    """The dtype of the model's floating-point weights (float32 when it has none)."""
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


@dataclass
class Prepared:
    """One window's model input: ``values`` (a CPU tensor: (frames, dims) features or (samples,) audio),
    ``samples`` its audio length, whether ``values`` are features already (else raw audio), and how many of
    their frames the attention mask keeps (None: all)."""

    values: Any
    samples: int
    is_features: bool
    valid: int | None = None


class PendingOutput:
    """Log-probabilities of a batch whose copy to the host may still be running; :meth:`result` waits."""

    def __init__(self, host: Any, frames: list[int], event: Any = None) -> None:
        self._host = host
        self._frames = frames
        self._event = event

    def result(self) -> list[np.ndarray]:
        if self._event is not None:
            self._event.synchronize()
        array = self._host.numpy()
        return [array[i, :n] for i, n in enumerate(self._frames)]


class Preparer:
    """One window's model input, made on the host: log-mel filter banks (Wav2Vec2-BERT) or the normalised
    waveform (wav2vec2-style), or the feature extractor's own output for other extractors. With ``raw_audio``
    (a GPU device) the audio itself is kept for the two fast paths, whose features are then computed on the
    device, batched. It pickles as its feature extractor and ``raw_audio``."""

    def __init__(self, feature_extractor: Any, raw_audio: bool = False) -> None:
        import torch
        from transformers import Wav2Vec2FeatureExtractor

        from w2vlm.features import fast_log_mel

        self.feature_extractor = feature_extractor
        self.sampling_rate = int(getattr(feature_extractor, "sampling_rate", 16000))
        self.input_name = feature_extractor.model_input_names[0]
        # Wav2Vec2-BERT: filter banks in torch, in float32 as in training
        self.log_mel = fast_log_mel(feature_extractor, dtype=torch.float32)
        self.waveform = type(feature_extractor) is Wav2Vec2FeatureExtractor
        self.do_normalize = bool(getattr(feature_extractor, "do_normalize", True))
        self.raw_audio = raw_audio and (self.log_mel is not None or self.waveform)

    def __getstate__(self) -> dict[str, Any]:
        return {"feature_extractor": self.feature_extractor, "raw_audio": self.raw_audio}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["feature_extractor"], state["raw_audio"])

    def __call__(self, audio: np.ndarray) -> Prepared:
        import torch

        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if self.raw_audio:
            return Prepared(torch.from_numpy(audio), audio.size, False)
        if self.log_mel is not None:
            feats, valid = self.log_mel.single(torch.from_numpy(audio))
            return Prepared(feats, audio.size, True, valid)
        if self.waveform:
            x = audio
            if self.do_normalize:
                x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
            return Prepared(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), audio.size, True)
        out = self.feature_extractor(
            [audio], sampling_rate=self.sampling_rate, return_tensors="pt", return_attention_mask=True
        )
        mask = out.get("attention_mask")
        return Prepared(out[self.input_name][0], audio.size, True, None if mask is None else int(mask[0].sum()))


class ModelRunner:
    """A CTC model with its feature extractor: prepare windows, run batches, return log-probabilities."""

    def __init__(self, model: Any, feature_extractor: Any) -> None:
        import torch

        self.model = model
        self.feature_extractor = feature_extractor
        self.ratio = inputs_to_logits_ratio(model)
        params = list(model.parameters())
        self.device = params[0].device if params else torch.device("cpu")
        self.on_cuda = self.device.type == "cuda"
        self.dtype = model_dtype(model)
        # on a CPU, attention with a padding-only mask (engine.attention): transformers' (batch, 1, frames, frames)
        # mask costs CPU time there (on a GPU, none worth saving)
        self.padding_mask = self.device.type == "cpu"
        self.input_name = feature_extractor.model_input_names[0]
        self.frame_level = self.input_name == "input_features"
        self.uses_mask = bool(getattr(feature_extractor, "return_attention_mask", False))
        #: each window's model input on the host (picklable: the engine's reading processes get a copy)
        self.preparer = Preparer(feature_extractor, raw_audio=self.on_cuda)
        self.sampling_rate = self.preparer.sampling_rate
        self.log_mel = self.preparer.log_mel
        self.do_normalize = self.preparer.do_normalize
        self.padding_value = float(getattr(feature_extractor, "padding_value", 0.0))
        # one forward pass at a time: calls of the engine that run at once (the server's requests) share the
        # model, and transformers' modules keep caches that are not safe across threads (Wav2Vec2-BERT's rotary
        # embedding is rebuilt for each new length: a pass of another length in between gave a shape error)
        self._forward_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------- windows

    def can_batch(self, a: int, b: int) -> bool:
        """Whether windows of ``a`` and ``b`` samples may share a forward pass: only models that take an
        attention mask can be given zero padding (it would change the output of the others)."""
        return a == b or self.uses_mask

    def prepare(self, audio: np.ndarray) -> Prepared:
        """The model input of one window (features on a CPU device; the audio itself for a GPU)."""
        return self.preparer(audio)

    # ----------------------------------------------------------------------------------------- forward

    def forward(self, batch: list[Prepared]) -> PendingOutput:
        """Run the model over prepared windows; each window's log-probabilities, unpadded."""
        import torch

        lengths = [p.samples for p in batch]
        same = len(set(lengths)) == 1
        # log-mel extractors (Wav2Vec2-BERT) mask frames even in a lone clip (the half-empty last 20 ms frame of
        # an odd number of 10 ms frames), as the model was trained: their mask always goes in
        with_mask = self.uses_mask and (self.frame_level or not same)
        with torch.inference_mode():
            values, mask = self.batch_inputs(batch, with_mask)
            inputs = {self.input_name: values.to(self.dtype) if values.is_floating_point() else values}
            if mask is not None:
                inputs["attention_mask"] = mask
            attention = padding_mask_attention(self.model) if self.padding_mask else contextlib.nullcontext()
            with self._forward_lock, attention:
                logits = self.model(**inputs).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            if mask is not None and mask.shape[-1] == logits.shape[1]:
                frames = mask.sum(-1).tolist()  # frame-level mask: one logit frame per input frame
            elif same and mask is None:
                frames = [logits.shape[1]] * len(batch)
            else:
                frames = self.model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
            frames = [min(int(n), logits.shape[1]) for n in frames]
            if self.on_cuda:
                host = log_probs.to("cpu", non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                return PendingOutput(host, frames, event)
            return PendingOutput(log_probs, frames)

    def batch_inputs(self, batch: list[Prepared], with_mask: bool) -> tuple[Any, Any]:
        """(model input, attention mask or None) of a padded batch, on the device (features computed there
        when the windows carry raw audio)."""
        import torch

        if not batch[0].is_features:
            lengths = torch.tensor([p.samples for p in batch])
            x = torch.zeros(len(batch), int(lengths.max()), pin_memory=self.on_cuda)
            for row, p in enumerate(batch):
                x[row, : p.samples] = p.values
            x = x.to(self.device, non_blocking=True)
            lengths = lengths.to(self.device)
            if self.log_mel is not None:
                feats, mask = self.log_mel(x, lengths)
                width = -(-max(self.log_mel.fbank_frames(p.samples) for p in batch) // self.log_mel.stride)
                return feats[:, :width], (mask[:, :width] if with_mask else None)
            x, mask = WaveformInputs(self.model, self.do_normalize)(x, lengths)
            return x, (mask if with_mask else None)
        longest = max(p.values.shape[0] for p in batch)
        shape = (len(batch), longest, *batch[0].values.shape[1:])
        values = torch.full(shape, self.padding_value, dtype=batch[0].values.dtype, pin_memory=self.on_cuda)
        mask = torch.zeros(len(batch), longest, dtype=torch.long)
        for row, p in enumerate(batch):
            values[row, : p.values.shape[0]] = p.values
            mask[row, : p.values.shape[0] if p.valid is None else p.valid] = 1
        values = values.to(self.device, non_blocking=True)
        return values, (mask.to(self.device) if with_mask else None)


__all__ = [
    "MIN_WINDOW_SAMPLES",
    "ModelRunner",
    "PendingOutput",
    "Prepared",
    "Preparer",
    "inputs_to_logits_ratio",
    "model_dtype",
]
