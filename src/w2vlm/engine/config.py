"""The engine's two configurations, with every default in one place.

:class:`DecodeConfig` says how model outputs become text (greedy or beam search, LM weights, hotwords, n-best,
timestamps); it is frozen and passed per call, so two calls with different settings can share one model and
one LM at the same time. :class:`EngineConfig` says how audio is fed to the model (device, dtype, windows,
batch budget, workers, queue depths). The command line, the pipeline, the server and Ray build these objects
and nothing else; the decoding defaults are ``w2vlm.defaults``, which the decoder uses too.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from typing import Any

from w2vlm.defaults import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_HOTWORD_WEIGHT,
    DEFAULT_MIN_TOKEN_LOGP,
    DEFAULT_PRUNE_LOGP,
    available_cpus,
)
from w2vlm.errors import W2vlmError

#: Inputs longer than this (seconds) are cut into windows; shorter ones go to the model whole.
DEFAULT_MAX_WHOLE_S = 60.0
#: Window length for long inputs, and the context each window shares with its neighbours on each side.
DEFAULT_WINDOW_S = 30.0
#: Shortest ``chunk_length_s``: shorter windows (their strides a sixth each) give a CTC model too little audio
#: around each frame; the embedded model gave empty text at 0.1-0.3 s and garbage at 0.5 s.
MIN_CHUNK_LENGTH_S = 1.0
#: Padded audio per forward pass (seconds of 16 kHz samples, padding included) on a CPU and on a GPU.
DEFAULT_BATCH_SECONDS_CPU = 60.0
DEFAULT_BATCH_SECONDS_CUDA = 480.0
#: How long the model stage waits for more windows (seconds from the first one it holds) before it runs a batch
#: that is not full: when reading is slower than the model, batches would otherwise hold one or two speech
#: segments each, and every forward pass costs its fixed overhead again. Inputs that are all read (the last
#: batch of a call) do not wait.
DEFAULT_BATCH_WAIT_S = 0.1
#: Inputs read ahead of the oldest unfinished one (bounds memory together with the window queue).
DEFAULT_PREFETCH = 32
#: With ``read_processes=None``, a call to a model on a GPU reads its inputs in processes when it has at least this
#: many, on a machine with at least this many CPUs: the processes' start-up (~3 s of CPU, once per engine) pays for
#: itself only over many inputs, and with fewer CPUs they only take CPU time from the rest.
READ_PROCESSES_MIN_INPUTS = 8
READ_PROCESSES_MIN_CPUS = 4
#: Beams kept to compute word confidences when only the best transcript is wanted.
CONFIDENCE_BEAMS = 16
#: Voice activity detection is on (``vad=None``) for inputs longer than this (seconds).
DEFAULT_VAD_ABOVE_S = 10.0
#: Speech probability threshold, shortest speech and silence, and padding around each segment (seconds).
DEFAULT_VAD_THRESHOLD = 0.25
DEFAULT_VAD_MIN_SPEECH_S = 0.25
DEFAULT_VAD_MIN_SILENCE_S = 0.5
DEFAULT_VAD_PAD_S = 0.2
#: Longest speech segment for a model that does not say what it was trained on (its config's
#: ``max_segment_s``); longer speech is cut at its quietest point (the sides sharing vad.CUT_OVERLAP_S of audio).
DEFAULT_MAX_SEGMENT_S = 20.0
#: A segment whose ``no_speech_prob`` (see :mod:`w2vlm.engine.segments`) is above this gives no words.
DEFAULT_NO_SPEECH_THRESHOLD = 0.5

TIMESTAMPS = (None, "word", "char")
DTYPES = ("auto", "float32", "float16", "bfloat16")


class ConfigError(W2vlmError, ValueError):
    """A decoding or engine setting with a bad value, or settings that cannot work together."""


def _finite(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
        raise ConfigError(f"{name}: must be a finite number; got {value!r}")


@dataclass(frozen=True)
class DecodeConfig:
    """How model outputs become text.

    ``use_lm``: fuse the model's n-gram LM into the beam search (when the model has one). ``greedy``: best-path
    decoding (per frame the most probable token), no beam search; with ``greedy=None`` it is chosen when
    ``use_lm`` is off and nothing else needs a beam search (hotwords, several best hypotheses, a beam width).
    ``alpha``/``beta``/``unk_score_offset``/``score_boundary``: None means the LM's own values (its
    ``attrs.json``). ``prune_history``: also drop beams that share the LM-relevant history (pyctcdecode's
    ``decode()``; off, as in its ``decode_beams()`` and transformers' processor). ``timestamps``: None,
    "word" or "char" (word times are always computed; "char" adds character spans). ``word_confidences``:
    compute a confidence per word (costs about one more search).
    """

    use_lm: bool = True
    greedy: bool | None = None
    beam_width: int | None = None
    beam_prune_logp: float = DEFAULT_PRUNE_LOGP
    token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP
    prune_history: bool = False
    alpha: float | None = None
    beta: float | None = None
    unk_score_offset: float | None = None
    score_boundary: bool | None = None
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = DEFAULT_HOTWORD_WEIGHT
    n_best: int = 1
    timestamps: str | None = None
    word_confidences: bool = False
    no_speech_threshold: float | None = DEFAULT_NO_SPEECH_THRESHOLD

    def __post_init__(self) -> None:
        if self.no_speech_threshold is not None and not 0.0 <= float(self.no_speech_threshold) <= 1.0:
            raise ConfigError(f"no_speech_threshold: must be in [0, 1]; got {self.no_speech_threshold}")
        if self.beam_width is not None and (isinstance(self.beam_width, bool) or int(self.beam_width) < 1):
            raise ConfigError(f"beam_width: must be at least 1; got {self.beam_width}")
        if isinstance(self.n_best, bool) or int(self.n_best) < 1:
            raise ConfigError(f"n_best: must be at least 1; got {self.n_best}")
        for name in ("beam_prune_logp", "token_min_logp", "alpha", "beta", "unk_score_offset", "hotword_weight"):
            _finite(name, getattr(self, name))
        if self.timestamps not in TIMESTAMPS:
            raise ConfigError(f"timestamps: expected 'word', 'char' or None; got {self.timestamps!r}")
        if not isinstance(self.hotwords, tuple):
            object.__setattr__(self, "hotwords", tuple(self.hotwords))
        if self.greedy and (self.hotwords or self.n_best > 1 or self.beam_width is not None):
            raise ConfigError("greedy decoding has no beams: hotwords, n_best > 1 and beam_width need a beam search")
        if not self.use_lm and (self.alpha is not None or self.beta is not None):
            raise ConfigError("alpha/beta weight the language model; they cannot go without it (use_lm=False)")

    def with_(self, **changes: Any) -> DecodeConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)

    @property
    def is_greedy(self) -> bool:
        """Whether decoding is best-path: asked for, or implied by ``use_lm=False`` with nothing that needs a
        beam search (a model without an LM is still decoded with a beam search unless asked otherwise)."""
        if self.greedy is not None:
            return self.greedy
        return not self.use_lm and not self.hotwords and self.n_best == 1 and self.beam_width is None

    def search_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`w2vlm.decoder.BeamSearchDecoderCTC.options` for this configuration."""
        beams = self.beam_width if self.beam_width is not None else DEFAULT_BEAM_WIDTH
        return {
            "beam_width": int(beams),
            "beam_prune_logp": float(self.beam_prune_logp),
            "token_min_logp": float(self.token_min_logp),
            "prune_history": bool(self.prune_history),
            "hotwords": list(self.hotwords) or None,
            "hotword_weight": float(self.hotword_weight),
            "alpha": self.alpha,
            "beta": self.beta,
            "unk_score_offset": self.unk_score_offset,
            "score_boundary": self.score_boundary,
            "n_best": max(self.n_best, CONFIDENCE_BEAMS if self.word_confidences else 1),
        }


@dataclass(frozen=True)
class EngineConfig:
    """How audio reaches the model.

    ``device``: "auto" (CUDA when available), "cpu", "cuda", "cuda:N". ``dtype``: "auto" (bfloat16 on CUDA
    where supported, else float16 there; float32 on a CPU), "float32", "float16", "bfloat16".
    ``window_s``/``stride_s``: windows for inputs longer than ``max_whole_s`` (None: ``window_s / 6`` of
    context on each side); ``chunk_length_s`` forces windows for every input. ``batch_seconds``: padded
    audio per forward pass (None: a default for the device). ``batch_size``: at most this many windows per
    forward pass (None: no limit but the budget). ``batch_wait_s``: how long a batch that is not full waits for
    more windows while inputs are still being read (:data:`DEFAULT_BATCH_WAIT_S`). ``workers``: audio reading
    threads (None: the CPUs, at most 8). ``decode_threads``: native decoding threads (None: half the CPUs on a CPU
    device, all of them on a GPU). ``torch_threads``: torch's threads for the forward pass on a CPU device, set in
    the model stage's own thread, while the reading workers' small operators (VAD, features) then run on one
    thread each, so that they do not oversubscribe the CPUs (None: torch's own setting everywhere).
    ``read_processes``: the reading workers each read in a process of their own (:mod:`w2vlm.engine.reader_pool`),
    free of the model stage's interpreter lock; None: for calls of at least :data:`READ_PROCESSES_MIN_INPUTS`
    inputs to a model on a GPU, on a machine with at least :data:`READ_PROCESSES_MIN_CPUS` CPUs.

    Voice activity detection (:mod:`w2vlm.engine.vad`): ``vad`` True or False, or None for inputs longer than
    ``vad_above_s`` (when the ``vad`` extra is installed and no ``chunk_length_s`` is asked for). Each speech
    segment is recognised on its own: speech starts at ``vad_threshold``, ends after ``vad_min_silence_s`` of
    silence, lasts at least ``vad_min_speech_s``, is padded by ``vad_pad_s`` and cut at its quietest point when
    it reaches ``max_segment_s`` (None: the model's ``max_segment_s`` in its config, else
    :data:`DEFAULT_MAX_SEGMENT_S`).
    """

    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    chunk_length_s: float | None = None
    stride_length_s: float | tuple[float, float] | None = None
    max_whole_s: float = DEFAULT_MAX_WHOLE_S
    window_s: float = DEFAULT_WINDOW_S
    batch_seconds: float | None = None
    batch_size: int | None = None
    batch_wait_s: float = DEFAULT_BATCH_WAIT_S
    workers: int | None = None
    decode_threads: int | None = None
    torch_threads: int | None = None
    prefetch: int = DEFAULT_PREFETCH
    read_processes: bool | None = None
    vad: bool | None = None
    vad_above_s: float = DEFAULT_VAD_ABOVE_S
    vad_threshold: float = DEFAULT_VAD_THRESHOLD
    vad_min_speech_s: float = DEFAULT_VAD_MIN_SPEECH_S
    vad_min_silence_s: float = DEFAULT_VAD_MIN_SILENCE_S
    vad_pad_s: float = DEFAULT_VAD_PAD_S
    max_segment_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("vad", "read_processes"):
            if getattr(self, name) not in (None, True, False):
                raise ConfigError(f"{name}: expected True, False or None (auto); got {getattr(self, name)!r}")
        if not 0.0 < float(self.vad_threshold) < 1.0:
            raise ConfigError(f"vad_threshold: must be between 0 and 1; got {self.vad_threshold}")
        for name in ("vad_above_s", "vad_min_speech_s", "vad_min_silence_s", "vad_pad_s", "batch_wait_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name}: must be a number of seconds >= 0; got {value}")
        if self.max_segment_s is not None and (not math.isfinite(self.max_segment_s) or self.max_segment_s < 1.0):
            raise ConfigError(f"max_segment_s: must be at least 1 second; got {self.max_segment_s}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.quantize not in (None, "int8"):
            raise ConfigError(f"quantize: expected int8; got {self.quantize!r}")
        for name in ("chunk_length_s", "batch_seconds", "window_s", "max_whole_s"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise ConfigError(f"{name}: must be a positive number of seconds; got {value}")
        if self.chunk_length_s is not None and self.chunk_length_s < MIN_CHUNK_LENGTH_S:
            raise ConfigError(
                f"chunk_length_s: at least {MIN_CHUNK_LENGTH_S:g} s (shorter windows give the model too little audio "
                f"to recognise anything); got {self.chunk_length_s}"
            )
        for name in ("batch_size", "workers", "decode_threads", "torch_threads", "prefetch"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) < 1):
                raise ConfigError(f"{name}: must be at least 1; got {value}")

    def with_(self, **changes: Any) -> EngineConfig:
        return replace(self, **changes)


def reads_in_processes(setting: bool | None, inputs: int, on_cuda: bool) -> bool:
    """Whether a call of ``inputs`` inputs reads them in reading processes (:mod:`w2vlm.engine.reader_pool`): as
    ``setting`` (``EngineConfig.read_processes``) says, or when it is None, for at least
    :data:`READ_PROCESSES_MIN_INPUTS` inputs to a model on a GPU, on a Linux machine with at least
    :data:`READ_PROCESSES_MIN_CPUS` CPUs. There the CPU side has to keep up with the device, and reading threads
    are held back by the interpreter's lock; a model on the CPU is the slow stage itself, and reading processes
    only take CPU time from it (the embedded model on 2 CPUs, 10 minutes of ~15 s files: 146 audio-s/s against
    154-159 with threads)."""
    if setting is not None:
        return setting
    return (
        on_cuda
        and inputs >= READ_PROCESSES_MIN_INPUTS
        and available_cpus() >= READ_PROCESSES_MIN_CPUS
        and sys.platform == "linux"  # where they are tested (fork, descriptor passing, /proc)
    )


def run_dtype_name(dtype: str | None, quantize: str | None, device_type: str) -> str | None:
    """The dtype a model loaded with ``dtype`` and ``quantize`` runs in, by name (None: float32, the weights'
    own): "auto" as :func:`resolve_dtype_name`, except with ``quantize`` (int8 works on float32 weights)."""
    if isinstance(dtype, str) and dtype.lower() == "auto":
        return None if quantize is not None else resolve_dtype_name("auto", device_type)
    return dtype


def resolve_dtype_name(dtype: str, device_type: str) -> str:
    """The dtype the model runs in: "auto" is bfloat16 (or float16 without bf16 support) on CUDA, float32
    elsewhere."""
    if dtype != "auto":
        return dtype
    if device_type != "cuda":
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


__all__ = [
    "CONFIDENCE_BEAMS",
    "DEFAULT_BATCH_SECONDS_CPU",
    "DEFAULT_BATCH_SECONDS_CUDA",
    "DEFAULT_BATCH_WAIT_S",
    "DEFAULT_MAX_SEGMENT_S",
    "DEFAULT_MAX_WHOLE_S",
    "DEFAULT_NO_SPEECH_THRESHOLD",
    "DEFAULT_PREFETCH",
    "DEFAULT_VAD_ABOVE_S",
    "DEFAULT_VAD_MIN_SILENCE_S",
    "DEFAULT_VAD_MIN_SPEECH_S",
    "DEFAULT_VAD_PAD_S",
    "DEFAULT_VAD_THRESHOLD",
    "DEFAULT_WINDOW_S",
    "DTYPES",
    "MIN_CHUNK_LENGTH_S",
    "READ_PROCESSES_MIN_CPUS",
    "READ_PROCESSES_MIN_INPUTS",
    "ConfigError",
    "DecodeConfig",
    "EngineConfig",
    "available_cpus",
    "reads_in_processes",
    "resolve_dtype_name",
    "run_dtype_name",
]
