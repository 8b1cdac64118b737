"""``w2vlm visualize``: what the model saw and what the decoders made of it, for one audio file.

:func:`analyze` runs the acoustic model on one input twice, alone and right-padded as it would be in a batch
with a longer input, and collects:

* the waveform;
* the attention/padding mask at sample level (what the feature extractor returns) and at frame level (what
  the transformer layers attend to, from the model's own ``_get_feature_vector_attention_mask``), for the
  input alone and padded; for models that take no attention mask (wav2vec2-base style, group-norm front
  end) the padded frames are *not* masked, and the report says how much that changes the posteriors;
* the CTC posteriorgram (softmax of the logits, frames × tokens);
* the greedy (best-path) words and the beam search + LM words on a time axis, each with a confidence:
  for greedy words the posterior of their weakest character, for LM words the decoder's word confidence.

:mod:`w2vlm.visualize_render` draws it: ``render_png`` with matplotlib (``pip install 'w2vlm[eval]'``),
``render_terminal`` as a compact rich rendering that fits the terminal's width.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.errors import AudioError

logger = logging.getLogger("w2vlm.visualize")

#: Longer inputs are cut to this many seconds unless a duration is given (the figure would be unreadable).
DEFAULT_MAX_SECONDS = 60.0
#: Words below this confidence are marked as doubtful.
DEFAULT_LOW_CONFIDENCE = 0.5


@dataclass
class TimedWord:
    """A decoded word with its span in seconds and a confidence in [0, 1]."""

    word: str
    start: float
    end: float
    confidence: float


@dataclass
class MaskView:
    """The padding mask of one way of feeding the input to the model."""

    name: str
    samples: np.ndarray  # int8 per input sample: 1 real audio, 0 padding
    frames: np.ndarray  # int8 per logit frame: 1 attended; all ones when the model gets no mask
    passed_to_model: bool  # whether the model received an attention mask at all

    @property
    def attended_frames(self) -> int:
        return int(self.frames.sum())


@dataclass
class Visualization:
    """Everything :func:`render_png` and :func:`render_terminal` draw; see the module docstring."""

    source: str
    model_name: str
    audio: np.ndarray
    sampling_rate: int
    offset_s: float  # where ``audio`` starts in the file
    file_duration_s: float | None
    frame_seconds: float
    labels: list[str]  # display names of the logit columns ("<blank>" for the CTC blank, "|" for space)
    blank: int
    probs: np.ndarray  # (frames, vocab) softmax of the logits of the input alone
    masks: list[MaskView]
    padded_seconds: float
    padding_max_diff: float  # largest change of any posterior in the real frames when the input is padded
    padded_greedy_text: str
    greedy: list[TimedWord]
    lm: list[TimedWord] | None  # None when the model has no language model
    lm_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sampling_rate

    @property
    def num_frames(self) -> int:
        return int(self.probs.shape[0])

    @property
    def greedy_text(self) -> str:
        return " ".join(w.word for w in self.greedy)

    @property
    def lm_text(self) -> str | None:
        return None if self.lm is None else " ".join(w.word for w in self.lm)

    @property
    def padding_changes_output(self) -> bool:
        return self.padded_greedy_text != self.greedy_text or self.padding_max_diff > 1e-3

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (no arrays but the masks' counts)."""
        return {
            "source": self.source,
            "model": self.model_name,
            "offset_s": self.offset_s,
            "duration_s": round(self.duration_s, 3),
            "frames": self.num_frames,
            "frame_seconds": self.frame_seconds,
            "masks": [
                {
                    "name": m.name,
                    "samples": int(m.samples.size),
                    "real_samples": int(m.samples.sum()),
                    "frames": int(m.frames.size),
                    "attended_frames": m.attended_frames,
                    "passed_to_model": m.passed_to_model,
                }
                for m in self.masks
            ],
            "padding_max_diff": self.padding_max_diff,
            "padded_greedy_text": self.padded_greedy_text,
            "greedy": [vars(w) for w in self.greedy],
            "lm": None if self.lm is None else [vars(w) for w in self.lm],
            "lm_settings": self.lm_settings,
        }


# ------------------------------------------------------------------------------------------------ analysis


def analyze(
    audio: str | os.PathLike | np.ndarray,
    model: Any = None,
    *,
    sampling_rate: int | None = None,
    start_s: float = 0.0,
    duration_s: float | None = None,
    pad_to_s: float | None = None,
    use_lm: bool = True,
    beam_width: int = 100,
    device: str = "auto",
    pipe: Any = None,
) -> Visualization:
    """Run the model (and decoders) on one input and collect what :class:`Visualization` holds.

    ``audio``: a file path or a mono float array (then ``sampling_rate`` is required). ``model``: a model
    folder or hub id (None: the embedded default); or pass a ready ``pipe`` (a w2vlm ASR pipeline).
    ``start_s``/``duration_s``: the part of the input to show (default: all of it, at most
    :data:`DEFAULT_MAX_SECONDS`). ``pad_to_s``: the padded length of the batch view (default: 1.5 × the
    input, at least one second more).
    """
    from w2vlm.audio import load_audio

    if beam_width < 1:
        raise ValueError(f"beam_width: must be at least 1; got {beam_width}")
    if start_s < 0:
        raise ValueError(f"start: must not be negative; got {start_s}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration: must be a positive number of seconds; got {duration_s}")
    if pipe is None:
        from w2vlm.pipeline import pipeline

        pipe = pipeline("automatic-speech-recognition", model=model, device=device)
    sr = pipe.sampling_rate
    if isinstance(audio, np.ndarray):
        if sampling_rate is None:
            raise ValueError("sampling_rate: required when audio is an array")
        wave = load_audio({"array": audio, "sampling_rate": sampling_rate}, sr)
        source = "<array>"
    else:
        source = os.fspath(audio)
        wave = load_audio(source, sr)
    file_duration = wave.size / sr
    first = round(start_s * sr)
    if first >= wave.size:
        raise AudioError(f"{source}: --start {start_s:g} s is past the end of the audio ({file_duration:.2f} s)")
    if duration_s is None and file_duration - start_s > DEFAULT_MAX_SECONDS:
        logger.warning(
            "%s is %.1f s long: showing %.0f s from %.1f s (use --start/--duration to choose)",
            source,
            file_duration,
            DEFAULT_MAX_SECONDS,
            start_s,
        )
        duration_s = DEFAULT_MAX_SECONDS
    last = wave.size if duration_s is None else min(wave.size, first + round(duration_s * sr))
    wave = np.ascontiguousarray(wave[first:last])
    from w2vlm.engine.model_runner import MIN_WINDOW_SAMPLES

    if wave.size < MIN_WINDOW_SAMPLES:
        raise AudioError(
            f"{source}: too short to visualize ({wave.size} samples at {sr} Hz; the model needs {MIN_WINDOW_SAMPLES})"
        )

    padded_len = _padded_length(wave.size, sr, pad_to_s, pipe.ratio)
    uses_mask = pipe.engine.runner.uses_mask
    alone_logits, alone_mask = _forward(pipe, wave, wave.size, uses_mask)
    padded_logits, padded_mask = _forward(pipe, wave, padded_len, uses_mask)
    if uses_mask:  # the clip's own frames, as the pipeline keeps them (a log-mel extractor may mask the last)
        own = int(alone_mask.sum())
        alone_logits, alone_mask = alone_logits[:own], alone_mask[:own]
    frames = alone_logits.shape[0]
    probs = _softmax(alone_logits)
    padded_probs = _softmax(padded_logits[:frames])
    diff = float(np.abs(padded_probs - probs).max()) if frames else 0.0

    from w2vlm.processor import decoder_is_bpe, decoder_labels

    raw_labels = decoder_labels(pipe.decoder)
    labels = [{"": "<blank>", " ": "|"}.get(label, label) for label in raw_labels]
    blank = raw_labels.index("") if "" in raw_labels else 0
    frame_s = pipe.ratio / sr
    is_bpe = decoder_is_bpe(pipe.decoder)
    greedy = _greedy(probs, raw_labels, is_bpe, frame_s)
    padded_greedy = " ".join(w.word for w in _greedy(padded_probs, raw_labels, is_bpe, frame_s))

    lm_words: list[TimedWord] | None = None
    settings: dict[str, Any] = {}
    decoder = pipe.decoder
    language_model = getattr(decoder, "language_model", None)
    if use_lm and language_model is not None:
        beams = decoder.decode_beams(alone_logits, beam_width=beam_width)
        lm_words = []
        if beams:
            lm_words = [
                TimedWord(w["word"], w["start"] * frame_s, w["end"] * frame_s, float(w["confidence"] or 0.0))
                for w in beams[0].words
            ]
        settings = {
            "alpha": getattr(language_model, "alpha", None),
            "beta": getattr(language_model, "beta", None),
            "beam_width": beam_width,
        }

    masks = [
        MaskView("alone", np.ones(wave.size, np.int8), alone_mask, uses_mask),
        MaskView(
            f"padded to {padded_len / sr:.2f} s",
            (np.arange(padded_len) < wave.size).astype(np.int8),
            padded_mask,
            uses_mask,
        ),
    ]
    return Visualization(
        source=source,
        model_name=_model_name(pipe),
        audio=wave,
        sampling_rate=sr,
        offset_s=first / sr,
        file_duration_s=file_duration,
        frame_seconds=frame_s,
        labels=labels,
        blank=blank,
        probs=probs,
        masks=masks,
        padded_seconds=padded_len / sr,
        padding_max_diff=diff,
        padded_greedy_text=padded_greedy,
        greedy=greedy,
        lm=lm_words,
        lm_settings=settings,
    )


def _padded_length(samples: int, sr: int, pad_to_s: float | None, ratio: int) -> int:
    if pad_to_s is None:
        target = max(int(samples * 1.5), samples + sr)
    else:
        target = round(pad_to_s * sr)
        if target <= samples:
            raise ValueError(
                f"pad_to: the padded length ({pad_to_s:g} s) must be longer than the input ({samples / sr:.2f} s)"
            )
    return -(-target // ratio) * ratio


def _forward(pipe: Any, wave: np.ndarray, length: int, uses_mask: bool) -> tuple:
    """Logits (frames of the whole padded input) and the frame-level attention mask for ``wave`` padded to
    ``length`` samples, fed the way the pipeline feeds a batch."""
    import torch

    runner = pipe.engine.runner
    model = runner.model
    # padded as in a batch with a clip of ``length`` samples: that works for every feature extractor, those
    # that pad the waveform (wav2vec2) and those that pad their log-mel frames (Wav2Vec2-BERT)
    batch = [wave] if length <= wave.size else [wave, np.zeros(length, dtype=wave.dtype)]
    with torch.inference_mode():
        values, mask = runner.batch_inputs([runner.prepare(a) for a in batch], with_mask=uses_mask)
        inputs = {runner.input_name: values[:1].to(runner.dtype)}
        if uses_mask:
            inputs["attention_mask"] = mask[:1]
        logits = model(**inputs).logits[0].float().cpu().numpy()
    total = logits.shape[0]
    if uses_mask:
        frame_mask = model._get_feature_vector_attention_mask(total, inputs["attention_mask"])[0]
        frame_mask = frame_mask.cpu().numpy().astype(np.int8)
    else:
        frame_mask = np.ones(total, np.int8)  # nothing is masked: the model attends to the padding too
    return logits, frame_mask


def _softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _model_name(pipe: Any) -> str:
    from w2vlm.model import default_model_dir

    name = str(getattr(pipe.model.config, "_name_or_path", "") or "")
    try:
        if name and Path(name).resolve() == default_model_dir().resolve():
            return "embedded default"
    except OSError:
        pass
    return Path(name).name if name else type(pipe.model).__name__


def _greedy(probs: np.ndarray, labels: list[str], is_bpe: bool, frame_seconds: float) -> list[TimedWord]:
    """Best-path words in seconds; confidence as in ``w2vlm transcribe --no-lm``: the weakest character's
    mean posterior. ``labels``: the decoder's labels."""
    from w2vlm.transcribe import greedy_words

    with np.errstate(divide="ignore"):
        log_probs = np.log(probs)
    _, words = greedy_words(log_probs, labels, is_bpe)
    return [TimedWord(w, s * frame_seconds, e * frame_seconds, float(c)) for w, s, e, c in words]
