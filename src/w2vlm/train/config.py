"""Training settings (:class:`TrainConfig`), model presets, results, and ``--set`` overrides."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2vlm.errors import ModelError
from w2vlm.model import check_language

logger = logging.getLogger("w2vlm.train")


SAMPLE_RATE = 16000

#: Character vocabulary of models trained from scratch: CTC blank ``<pad>`` first, word delimiter ``|``.
DEFAULT_VOCAB: tuple[str, ...] = (
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "|",
    "'",
    *"abcdefghijklmnopqrstuvwxyz",
)

#: Model sizes for training from scratch: keyword arguments of the config of their family (``family``:
#: ``wav2vec2`` → ``Wav2Vec2Config``/``Wav2Vec2ForCTC`` on the raw waveform, ``wav2vec2-bert`` →
#: ``Wav2Vec2BertConfig``/``Wav2Vec2BertForCTC``, a conformer on 80-bin log-mel filter banks). All give one
#: output frame per 20 ms (320 samples), like wav2vec2-base, so timestamps work the same way.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # ~5.2 M parameters, 21 MB in float32: the embedded default model. Log-mel input (the feature extractor
    # computes it, as for Wav2Vec2-BERT: 10 ms frames stacked in pairs), 6 conformer layers of width 192 with
    # rotary position embeddings and a depthwise convolution of 15 frames. On a CPU it reached the accuracy
    # of the waveform model in about a quarter of the training time (recipes/embedded/README.md, run 5).
    "conformer": {
        "family": "wav2vec2-bert",
        "hidden_size": 192,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "intermediate_size": 768,
        "conv_depthwise_kernel_size": 15,
        "position_embeddings_type": "rotary",
    },
    # ~2.0 M parameters, 8 MB in float32. A light 3-layer convolutional front end (a learned 5 ms filter bank
    # at 400 frames/s, then two strided layers) keeps training on the raw waveform cheap enough for a CPU.
    "small": {
        "family": "wav2vec2",
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 768,
        "conv_dim": (96, 192, 192),
        "conv_kernel": (80, 4, 4),
        "conv_stride": (40, 4, 2),
        "num_conv_pos_embeddings": 32,
        "num_conv_pos_embedding_groups": 16,
    },
    # ~6.1 M parameters, 24.5 MB in float32: wav2vec2-style 7-layer front end; worth it on a GPU
    "medium": {
        "family": "wav2vec2",
        "hidden_size": 256,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "conv_dim": (256,) * 7,
        "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
        "conv_stride": (5, 2, 2, 2, 2, 2, 2),
        "num_conv_pos_embeddings": 64,
        "num_conv_pos_embedding_groups": 16,
    },
    # a few ten thousand parameters: unit tests
    "tiny": {
        "family": "wav2vec2",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (32, 32, 32),
        "conv_kernel": (80, 4, 4),
        "conv_stride": (40, 4, 2),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    },
    "tiny-conformer": {
        "family": "wav2vec2-bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_depthwise_kernel_size": 5,
        "position_embeddings_type": "rotary",
    },
}

COMMON_CONFIG: dict[str, Any] = {
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "hidden_dropout": 0.05,
    # no dropout on the attention weights: with it torch falls back from its fused attention kernel to the
    # plain one, and a training step of the small preset on CPU takes ~1.3x as long
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.05,
    "final_dropout": 0.0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.05,
    "mask_time_length": 5,
    "mask_feature_prob": 0.01,
    "mask_feature_length": 16,
    "ctc_loss_reduction": "mean",
    "ctc_zero_infinity": True,
}

#: Settings of from-scratch Wav2Vec2-BERT (conformer) models besides their size
COMMON_CONFIG_BERT: dict[str, Any] = {
    "hidden_act": "swish",
    "hidden_dropout": 0.05,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.05,
    "conformer_conv_dropout": 0.05,
    "final_dropout": 0.0,
    "layerdrop": 0.0,
    "add_adapter": False,
    "mask_time_prob": 0.05,
    "mask_time_length": 5,
    "mask_feature_prob": 0.0,
    "ctc_loss_reduction": "mean",
    "ctc_zero_infinity": True,
}


#: the dtypes a trained model can be saved in (``--save-dtype``)
SAVE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class TrainConfig:
    """Settings of one training run (see ``w2vlm train --help`` for their meaning)."""

    manifest: Path
    output_dir: Path
    dev_manifest: Path | None = None
    init_from: Path | None = None
    preset: str = "small"
    epochs: int = 10
    max_steps: int | None = None
    time_limit_s: float | None = None
    stop_after_s: float | None = None
    batch_seconds: float = 320.0
    max_batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    mask_time_prob: float | None = None
    max_duration_s: float = 20.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    save_every: int = 1000
    snapshot_every: int = 0
    resume: bool = False
    lm_dir: Path | None = None
    #: the model's language (ISO 639), written to its model card; None: --init-from's, else not recorded
    language: str | None = None
    save_dtype: str = "float32"
    log_every: int = 50
    sortagrad: bool = True
    pad_blank_weight: float = 0.2
    pad_extra_prob: float = 0.25
    pad_multiple_s: float = 0.5
    #: probability that a clip gets another background at its edges (see ``w2vlm.train.data.draw_edges``)
    edge_prob: float = 0.0
    progress: bool = True
    config_overrides: dict[str, Any] = field(default_factory=dict)
    audio_cache: Path | None = None
    max_memory_gb: float | None = None

    def check(self) -> None:
        """Raise :class:`ModelError` naming the first setting out of its range (and its ``w2vlm train`` option)."""
        if self.language is not None:
            self.language = check_language(self.language, "--language")
        # (field, command-line option or "", value, whether it must be > 0 rather than >= 0)
        bounds: list[tuple[str, str, float | None, bool]] = [
            ("epochs", "--epochs", self.epochs, True),
            ("max_steps", "--max-steps", self.max_steps, True),
            ("time_limit_s", "--time-limit", self.time_limit_s, True),
            ("stop_after_s", "--stop-after", self.stop_after_s, True),
            ("max_memory_gb", "--max-memory", self.max_memory_gb, True),
            ("batch_seconds", "--batch-seconds", self.batch_seconds, True),
            ("max_batch_size", "", self.max_batch_size, True),
            ("learning_rate", "--lr", self.learning_rate, True),
            ("warmup_steps", "--warmup", self.warmup_steps, False),
            ("weight_decay", "", self.weight_decay, False),
            ("max_grad_norm", "", self.max_grad_norm, True),
            ("max_duration_s", "--max-duration", self.max_duration_s, True),
            ("save_every", "--save-every", self.save_every, False),
            ("snapshot_every", "--snapshot-every", self.snapshot_every, False),
            ("log_every", "", self.log_every, True),
            ("pad_blank_weight", "--pad-blank-weight", self.pad_blank_weight, False),
            ("pad_multiple_s", "--pad-multiple", self.pad_multiple_s, False),
        ]
        for name, option, value, positive in bounds:
            if value is not None and (value <= 0 if positive else value < 0):
                where = f"{option} ({name})" if option else name
                raise ModelError(f"{where}: {value}; expected a number {'>' if positive else '>='} 0")
        if self.save_dtype not in SAVE_DTYPES:
            raise ModelError(f"--save-dtype (save_dtype): {self.save_dtype!r}; expected {', '.join(SAVE_DTYPES)}")
        for name, option, value in (
            ("pad_extra_prob", "", self.pad_extra_prob),
            ("edge_prob", "--edge-prob", self.edge_prob),
            ("mask_time_prob", "--mask-time-prob", self.mask_time_prob),
        ):
            if value is not None and not 0 <= value <= 1:
                where = f"{option} ({name})" if option else name
                raise ModelError(f"{where}: {value}; expected a probability between 0 and 1")


@dataclass
class EvalResult:
    """Greedy decoding scores on a dev manifest."""

    wer: float
    cer: float
    utterances: int
    examples: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class TrainResult:
    """What :func:`train` did."""

    output_dir: Path
    steps: int
    epochs_completed: int
    train_seconds: float
    audio_hours: float
    final_loss: float
    dev: EvalResult | None
    history: list[dict[str, Any]]
    #: why the run ended before its schedule did: "signal", "stop-after" or "memory" (None: it finished)
    stopped_for: str | None = None


def parse_config_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["hidden_dropout=0", "layerdrop=0.1"]`` -> ``{"hidden_dropout": 0, "layerdrop": 0.1}`` (``--set``).

    Values are read as JSON (numbers, ``true``/``false``, ``null``, lists), anything else as a string.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.isidentifier():
            raise ModelError(f"--set {item!r}: expected KEY=VALUE with a model config setting as KEY")
        raw = raw.strip()
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def check_overrides(defaults: dict[str, Any], overrides: dict[str, Any], config_name: str) -> None:
    """Raise :class:`ModelError` for a ``--set`` key the model config lacks, or a value of the wrong kind."""
    import difflib

    for key, value in overrides.items():
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelError(f"--set {key}: {config_name} has no such setting{hint}")
        default = defaults[key]
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ModelError(f"--set {key}={value!r}: expected a number (the {config_name} default is {default!r})")
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ModelError(f"--set {key}={value!r}: expected true or false")
