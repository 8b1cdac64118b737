"""Model input computed in torch: twins of the transformers feature extractors for batches of waveforms.

``Wav2Vec2FeatureExtractor`` and ``SeamlessM4TFeatureExtractor`` work on numpy arrays one utterance at a
time. Training (``w2vlm train``) cuts its batches out of one audio tensor on the training device, and the
pipeline feeds batches of clips; both get the same values from these classes, batched, on any torch device
(tests check them against the extractors). :class:`FbankInputs` is also ~3-4x faster than the numpy
extractor on a CPU, which matters for log-mel models whose forward pass is cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from w2vlm.errors import ModelError


class WaveformInputs:
    """Model input of waveform models (wav2vec2, HuBERT, ...), in torch: what ``Wav2Vec2FeatureExtractor``
    does (zero-mean/unit-variance per utterance when ``do_normalize``), plus a sample-level attention mask."""

    def __init__(self, model: Any, do_normalize: bool = True) -> None:
        self.model = model
        self.do_normalize = do_normalize

    def frames(self, samples: int) -> int:
        """Logit frames of an utterance of ``samples`` samples."""
        import torch

        return int(self.model._get_feat_extract_output_lengths(torch.tensor(samples)))

    def __call__(self, x: Any, lens: Any) -> tuple[Any, Any]:
        """(input values, attention mask) of a padded batch ``x`` (floats in [-1, 1]; zeros past ``lens``)."""
        import torch

        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None]
        if self.do_normalize:
            n = lens.float()[:, None]
            mean = x.sum(1, keepdim=True) / n
            var = ((x - mean) ** 2 * mask).sum(1, keepdim=True) / n
            x = ((x - mean) / torch.sqrt(var + 1e-7)) * mask
        return x, mask.long()


class FbankInputs:
    """Model input of log-mel models (Wav2Vec2-BERT), in torch: what ``SeamlessM4TFeatureExtractor`` computes
    (Kaldi-style 25 ms / 10 ms frames with DC removal, pre-emphasis 0.97 and the Povey window, 80-bin log-mel
    power, per-bin zero-mean/unit-variance over each utterance, frames stacked by ``stride``), batched on the
    training device. The extractor's own mel filters and window are used; ``tests/test_features.py`` checks the
    result against the extractor."""

    FRAME, HOP, FFT = 400, 160, 512

    def __init__(self, extractor: Any, dtype: Any = None) -> None:
        import torch

        # float64 (the pipeline) follows the numpy extractor to ~1e-6 even on near-silent mel bins, whose logs
        # float32 rounding moves by up to ~0.02; training uses float32 (speed on the device)
        self.dtype = dtype or torch.float32
        self.mel = torch.as_tensor(np.asarray(extractor.mel_filters), dtype=self.dtype)  # (257, bins)
        self.window = torch.as_tensor(np.asarray(extractor.window), dtype=self.dtype)
        self.stride = int(extractor.stride)

    def _fbank_frames(self, samples: Any) -> Any:
        return (samples - self.FRAME).div(self.HOP, rounding_mode="floor").add(1).clamp(min=0)

    def fbank_frames(self, samples: int) -> int:
        """10 ms filter-bank frames of ``samples`` samples (Kaldi's snip-edges count)."""
        return max(0, (samples - self.FRAME) // self.HOP + 1)

    def frames(self, samples: int) -> int:
        """Logit frames (stacked filter-bank frames the attention mask keeps) of ``samples`` samples."""
        return self.fbank_frames(samples) // self.stride

    def __call__(self, x: Any, lens: Any) -> tuple[Any, Any]:
        import torch

        if x.shape[1] < self.FRAME:
            x = torch.nn.functional.pad(x, (0, self.FRAME - x.shape[1]))
        frames = (x.to(self.dtype) * 32768.0).unfold(1, self.FRAME, self.HOP)  # (B, F, 400), Kaldi's 16-bit scale
        frames = frames - frames.mean(-1, keepdim=True)
        frames = torch.cat([frames[..., :1] * (1 - 0.97), frames[..., 1:] - 0.97 * frames[..., :-1]], dim=-1)
        spec = torch.fft.rfft(frames * self.window.to(x.device), n=self.FFT)
        power = spec.real.square() + spec.imag.square()
        feats = torch.log(torch.clamp(power @ self.mel.to(x.device), min=1.192092955078125e-07))
        n = self._fbank_frames(lens)  # valid frames per row
        valid = (torch.arange(feats.shape[1], device=x.device)[None, :] < n[:, None]).unsqueeze(-1)
        count = n.clamp(min=2).float()[:, None, None]
        mean = (feats * valid).sum(1, keepdim=True) / count
        var = ((feats - mean).square() * valid).sum(1, keepdim=True) / (count - 1)  # ddof=1, as the extractor
        feats = (feats - mean) / torch.sqrt(var + 1e-7) * valid
        t = -(-feats.shape[1] // self.stride)  # the extractor pads to a multiple of the stride (masked)
        feats = torch.nn.functional.pad(feats, (0, 0, 0, t * self.stride - feats.shape[1]))
        feats = feats.reshape(x.shape[0], t, -1).float()
        mask = torch.arange(t, device=x.device)[None, :] < (n // self.stride)[:, None]
        return feats, mask.long()

    def single(self, audio: Any) -> tuple[Any, int]:
        """(features, frames the attention mask keeps) of one utterance (a 1-D CPU tensor): the same values
        as a batch of one to float rounding, in fewer and cheaper steps (no padding, no masks; ~2x faster)."""
        import torch

        n = self.fbank_frames(audio.numel())
        if n < 2:
            feats, mask = self(audio[None], torch.tensor([audio.numel()]))
            return feats[0], int(mask[0].sum())
        frame, hop = self.FRAME, self.HOP
        x = audio.to(self.dtype)[: (n - 1) * hop + frame] * 32768.0
        # each frame's mean (DC) from sums of 80-sample blocks: a frame is five of them (400 = 5 x 80, 160 = 2 x 80)
        blocks = x.reshape(-1, hop // 2).sum(1)
        mean = sum(blocks[k : k + 2 * n - 1 : 2] for k in range(5)) / frame
        # pre-emphasis once over the signal rather than per overlapping frame: of a DC-free frame it is the
        # signal's pre-emphasis less (1 - 0.97) x the frame's mean, and (1 - 0.97) x its first sample at the start
        emphasised = torch.empty_like(x)
        torch.sub(x[1:], x[:-1], alpha=0.97, out=emphasised[1:])
        emphasised[0] = 0.0
        pre = emphasised.unfold(0, frame, hop).sub(mean[:, None], alpha=1 - 0.97)
        pre[:, 0] = (x[::hop][:n] - mean) * (1 - 0.97)
        parts = torch.view_as_real(torch.fft.rfft(pre.mul_(self.window), n=self.FFT)).square_()
        power = parts[..., 0] + parts[..., 1]
        feats = torch.log(torch.clamp(power @ self.mel, min=1.192092955078125e-07))
        feats -= feats.sum(0, keepdim=True) / n  # per-bin mean and variance (ddof=1, as the extractor)
        feats.mul_(torch.rsqrt(feats.square().sum(0, keepdim=True) / (n - 1) + 1e-7))
        t = -(-n // self.stride)  # padded to a multiple of the stride, the last stacked frame masked when odd
        feats = torch.nn.functional.pad(feats, (0, 0, 0, t * self.stride - n))
        return feats.reshape(t, -1).float(), n // self.stride


def model_inputs_for(model: Any, extractor: Any) -> WaveformInputs | FbankInputs:
    """The torch twin of ``extractor`` (for ``model``) that turns padded batches of waveforms into model input."""
    if getattr(extractor, "model_input_names", ["input_values"])[0] == "input_features":
        if not hasattr(extractor, "mel_filters"):
            raise ModelError(f"feature extractor {type(extractor).__name__}: log-mel input without mel filters")
        return FbankInputs(extractor)
    return WaveformInputs(model, bool(getattr(extractor, "do_normalize", True)))


def fast_log_mel(extractor: Any, dtype: Any = None) -> FbankInputs | None:
    """The torch twin of ``extractor`` when it is a ``SeamlessM4TFeatureExtractor`` (Wav2Vec2-BERT models),
    else None: the engine then calls the extractor itself. ``dtype``: float64 by default (closest to the
    numpy extractor); the engine uses float32, as training does."""
    try:
        from transformers import SeamlessM4TFeatureExtractor
    except ImportError:  # pragma: no cover - transformers without the class
        return None
    if type(extractor) is not SeamlessM4TFeatureExtractor or int(getattr(extractor, "sampling_rate", 0)) != 16000:
        return None
    import torch

    return FbankInputs(extractor, dtype=dtype or torch.float64)


def batch_log_mel(fbank: FbankInputs, audios: list[np.ndarray], with_mask: bool) -> dict[str, Any]:
    """``{"input_features", ["attention_mask"]}`` of float waveforms (in [-1, 1]) padded into one batch, as
    ``SeamlessM4TFeatureExtractor(audios, padding=True, return_tensors="pt")`` gives them."""
    import torch

    lengths = torch.tensor([a.size for a in audios])
    x = torch.zeros(len(audios), int(lengths.max()))
    for row, audio in enumerate(audios):
        x[row, : audio.size] = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    feats, mask = fbank(x, lengths)
    # the extractor pads to the longest clip's filter-bank frames, rounded up to a multiple of the stride
    width = -(-max(fbank.fbank_frames(a.size) for a in audios) // fbank.stride)
    out = {"input_features": feats[:, :width]}
    if with_mask:
        out["attention_mask"] = mask[:, :width]
    return out
