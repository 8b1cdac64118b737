"""CTC training and fine-tuning of wav2vec2 models (``w2vlm train``).

Trains a transformers CTC model (:class:`~transformers.Wav2Vec2ForCTC` or ``Wav2Vec2BertForCTC``), from
scratch with a small configuration (:data:`MODEL_PRESETS`) or starting from a checkpoint in the hub layout,
on a JSONL manifest with one utterance a line::

    {"audio": "wav/000001.wav", "text": "it is a truth universally acknowledged"}

(``audio`` may also be called ``audio_filepath`` or ``path``; ``text`` may be ``sentence`` or
``transcript``; relative paths are relative to the manifest's folder.)

What it does:

* loads all audio once into one int16 buffer (on the GPU when training there), so batches are cut out
  without any data-loader workers; with ``audio_cache`` the buffer is a file there (:class:`AudioCache`),
  memory-mapped, made on the first run and reused by later ones;
* batches by length (buckets of similar duration, at most ``batch_seconds`` of padded audio a batch,
  batch order shuffled every epoch);
* per-utterance zero-mean/unit-variance normalization and attention masks, as the feature extractor does;
* SpecAugment through the model's own ``mask_time_prob`` / ``mask_feature_prob``;
* AdamW with warm-up and cosine decay; the decay follows whichever is further along, the steps or the
  wall-clock budget (``time_limit_s``), so a time-limited run still ends with an annealed model;
* gradients clipped to ``max_grad_norm``; a step whose gradient is not finite is skipped and logged, so
  one bad batch cannot turn the weights into NaN;
* bf16 autocast (no loss scaling needed) on CUDA and on CPUs with native bf16 arithmetic (AMX or
  AVX512-BF16: about 1.5x faster steps there), float32 elsewhere;
* a checkpoint (model, optimizer, random states, progress) every ``save_every`` steps and at the end of
  each epoch; ``resume=True`` continues from it where it stopped, in the middle of an epoch too, with the
  same batch order an uninterrupted run would have had;
* with ``snapshot_every``, a copy of the weights every so many steps as a model folder of its own
  (``OUTPUT.snapshots/step-NNNNNNN``, hub layout), to pick from or average; the checkpoint keeps only the
  latest;
* Ctrl-C (SIGINT) or SIGTERM stops after the current step and saves a checkpoint and the model; a
  second Ctrl-C aborts at once;
* greedy WER/CER on a dev manifest after every epoch;
* the result saved in the hub layout: ``config.json``, ``model.safetensors``, ``preprocessor_config.json``,
  ``tokenizer_config.json``, ``vocab.json``, ``special_tokens_map.json``, plus ``alphabet.json`` and
  ``language_model/`` when a language model folder is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.defaults import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_UNK_SCORE_OFFSET
from w2vlm.errors import AudioError, ManifestError, ModelError, W2vlmError
from w2vlm.features import FbankInputs, WaveformInputs, model_inputs_for
from w2vlm.model import check_language, model_language, quiet_transformers_progress, write_model_card

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

_COMMON_CONFIG: dict[str, Any] = {
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
_COMMON_CONFIG_BERT: dict[str, Any] = {
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
        for name, option, value in (
            ("pad_extra_prob", "", self.pad_extra_prob),
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


# ----------------------------------------------------------------------------------------------------------
# scoring


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance between two sequences (substitutions, insertions, deletions cost 1)."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def error_rates(refs: Sequence[str], hyps: Sequence[str]) -> tuple[float, float]:
    """Corpus-level (WER, CER): total edits over total reference words / characters."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    word_err = word_tot = char_err = char_tot = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        rw, hw = ref.split(), hyp.split()
        word_err += edit_distance(rw, hw)
        word_tot += len(rw)
        rc, hc = " ".join(rw), " ".join(hw)
        char_err += edit_distance(rc, hc)
        char_tot += len(rc)
    return word_err / max(word_tot, 1), char_err / max(char_tot, 1)


# ----------------------------------------------------------------------------------------------------------
# data


@dataclass
class Utterance:
    audio: Path
    text: str


def read_manifest(path: Path) -> list[Utterance]:
    """Read a manifest as ``w2vlm eval`` does (JSONL, CSV/TSV, or a folder of audio + ``.txt``); relative
    audio paths are resolved against the manifest's folder. Every utterance needs its text."""
    from w2vlm.eval import read_manifest as read_any

    items = read_any(path)
    missing = [item for item in items if item.error]
    if missing:
        raise ManifestError(
            f"{path}: {len(missing)} of {len(items)} utterances have no usable text (first: {missing[0].error})"
        )
    return [Utterance(Path(item.audio), item.reference) for item in items]


def read_audio_int16(path: Path) -> np.ndarray:
    """16 kHz mono int16 samples of a file (16-bit PCM wav read directly, anything else via w2vlm.audio)."""
    if path.suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as w:
                if w.getsampwidth() == 2 and w.getframerate() == SAMPLE_RATE and w.getcomptype() == "NONE":
                    data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
                    channels = w.getnchannels()
                    if channels > 1:
                        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
                    return data
        except (wave.Error, EOFError):
            pass  # not a plain PCM wav: let the general loader try (and raise a proper AudioError)
    from w2vlm.audio import load_audio

    audio = load_audio(str(path), sampling_rate=SAMPLE_RATE)
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


class Tokenizer:
    """Character encoder/decoder over a CTC vocabulary (``<pad>`` blank, ``|`` word delimiter)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self.id_to_token = {i: t for t, i in vocab.items()}
        for needed in ("<pad>", "|"):
            if needed not in vocab:
                raise ModelError(f"vocab.json: token {needed!r} is missing (needed as CTC blank / delimiter)")
        self.blank = vocab["<pad>"]
        self.delimiter = vocab["|"]
        self.unk = vocab.get("<unk>")
        self.lowercase = not any(len(t) == 1 and t.isupper() for t in vocab)

    def normalize(self, text: str) -> str:
        text = text.lower() if self.lowercase else text
        return " ".join(text.split())

    def encode(self, text: str) -> list[int] | None:
        """Token ids of a text; None if it holds a character the vocabulary lacks and there is no <unk>."""
        ids: list[int] = []
        for ch in self.normalize(text):
            if ch == " ":
                ids.append(self.delimiter)
            elif ch in self.vocab:
                ids.append(self.vocab[ch])
            elif self.unk is not None:
                ids.append(self.unk)
            else:
                return None
        return ids

    def greedy_decode(self, ids: Sequence[int]) -> str:
        out: list[str] = []
        prev = -1
        for i in ids:
            if i != prev and i != self.blank:
                tok = self.id_to_token.get(int(i), "")
                out.append(" " if int(i) == self.delimiter else ("" if tok.startswith("<") else tok))
            prev = i
        return " ".join("".join(out).split())


def _initial_samples(items: Sequence[Utterance]) -> int:
    """How many int16 samples to reserve for a manifest's audio: what its files hold as 16-bit mono 16 kHz wav
    (bytes on disk / 2), at most the machine's memory (pages never written cost nothing; the buffer grows when
    more is needed, and growing copies it, so a close estimate matters)."""
    total = 0
    for item in items:
        with contextlib.suppress(OSError):  # unreadable files are reported when read
            total += os.stat(item.audio).st_size
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform
        memory = total
    return max(1, min(total, memory) // 2)


def read_clips(items: Sequence[Utterance], workers: int) -> Iterator[tuple[Utterance, np.ndarray | Exception]]:
    """Each utterance with its int16 samples, in manifest order, decoded by a thread pool; a clip that cannot
    be read (missing, unreadable, undecodable) comes as the exception saying why."""

    def read(item: Utterance) -> np.ndarray | Exception:
        try:
            return read_audio_int16(item.audio)
        except (OSError, W2vlmError) as exc:
            return exc

    chunk = 256  # clips read ahead at most: bounds memory when reading outpaces copying
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for begin in range(0, len(items), chunk):
            part = items[begin : begin + chunk]
            yield from zip(part, pool.map(read, part), strict=True)


class AudioCache:
    """A manifest's decoded audio kept on disk: every clip's 16 kHz int16 samples one after another in
    ``<name>.int16``, and ``<name>.json`` with each clip's length (or why it could not be read).

    ``<name>`` is the manifest's file name, a hash of its absolute path, and a key hashing every audio file's
    path, size and modification time: a changed, added or removed file makes a new cache, and the superseded
    one of the same manifest is deleted. The samples are written under a temporary name and renamed, the index
    last, so a cache interrupted while being made is never used. Opening memory-maps the samples (copy on
    write): they live in the page cache, which the system can reclaim under memory pressure and read again,
    rather than in the training process's own memory, and a second run starts without decoding anything.
    """

    VERSION = 1

    def __init__(self, folder: Path, manifest: Path, items: Sequence[Utterance]) -> None:
        self.folder = Path(folder)
        self.manifest = Path(manifest)
        self.items = items
        self.prefix = f"{self.manifest.name}-{hashlib.sha256(os.path.abspath(manifest).encode()).hexdigest()[:8]}-"
        key = hashlib.sha256(f"w2vlm audio cache {self.VERSION} {SAMPLE_RATE}\n".encode())
        for item in items:
            try:
                st = os.stat(item.audio)
                stamp = f"{st.st_size} {st.st_mtime_ns}"
            except OSError:
                stamp = "unreadable"
            key.update(f"{os.path.abspath(item.audio)}\t{stamp}\n".encode())
        self.key = key.hexdigest()[:16]
        self.data_path = self.folder / f"{self.prefix}{self.key}.int16"
        self.index_path = self.folder / f"{self.prefix}{self.key}.json"

    def open_or_build(self, workers: int = 8) -> tuple[np.ndarray, list[tuple[int, int] | str]]:
        """The samples (memory-mapped) and, per utterance in manifest order, its ``(offset, length)`` in them
        or the reason it could not be read. Builds the cache first when there is no usable one."""
        opened = self._open()
        if opened is None:
            self._build(workers)
            opened = self._open()
            if opened is None:  # just written: only a concurrent writer or a vanishing disk gets here
                raise ManifestError(f"{self.index_path}: audio cache unreadable right after it was written")
        return opened

    def _open(self) -> tuple[np.ndarray, list[tuple[int, int] | str]] | None:
        try:
            index = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("%s: damaged audio cache index (%s); making it again", self.index_path, exc)
            return None
        entries: list[tuple[int, int] | str] = []
        total = 0
        try:
            if index["version"] != self.VERSION or index["key"] != self.key:
                raise ValueError(f"version {index['version']}, key {index['key']}: not this manifest's")
            errors = index["errors"]
            for i, n in enumerate(index["lengths"]):
                if n < 0:
                    entries.append(str(errors[str(i)]))
                else:
                    entries.append((total, int(n)))
                    total += int(n)
            if len(entries) != len(self.items):
                raise ValueError(f"{len(entries)} clips; the manifest has {len(self.items)}")
            size = self.data_path.stat().st_size
            if size != 2 * total:
                raise ValueError(f"{self.data_path.name} holds {size} bytes; the index expects {2 * total}")
        except (KeyError, TypeError, ValueError, OSError) as exc:
            logger.warning("%s: unusable audio cache (%s); making it again", self.index_path, exc)
            return None
        if total == 0:
            return np.zeros(0, dtype=np.int16), entries
        return np.memmap(self.data_path, dtype="<i2", mode="c", shape=(total,)), entries

    def _build(self, workers: int) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ManifestError(f"audio cache folder {self.folder}: cannot create it ({exc})") from exc
        for stale in self.folder.glob(f"{self.prefix}*"):  # this manifest's older cache, or a broken one
            with contextlib.suppress(OSError):
                stale.unlink()
                logger.info("removed superseded audio cache file %s", stale)
        tmp = self.data_path.with_name(f"{self.data_path.name}.{os.getpid()}.tmp")
        lengths: list[int] = []
        errors: dict[str, str] = {}
        t0 = time.time()
        try:
            with open(tmp, "wb") as f:
                for i, (_item, samples) in enumerate(read_clips(self.items, workers)):
                    if isinstance(samples, Exception):
                        lengths.append(-1)
                        errors[str(i)] = str(samples)
                    else:
                        f.write(np.ascontiguousarray(samples, dtype="<i2").tobytes())
                        lengths.append(len(samples))
            index = {"version": self.VERSION, "key": self.key, "manifest": os.path.abspath(self.manifest),
                     "lengths": lengths, "errors": errors}  # fmt: skip
            os.replace(tmp, self.data_path)
            tmp_index = self.index_path.with_name(f"{self.index_path.name}.{os.getpid()}.tmp")
            tmp_index.write_text(json.dumps(index))
            os.replace(tmp_index, self.index_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ManifestError(f"audio cache {self.data_path}: cannot write it ({exc})") from exc
        hours = sum(n for n in lengths if n > 0) / SAMPLE_RATE / 3600
        logger.info("%s: audio cache of %d clips (%.2f h) written to %s in %.0f s", self.manifest, len(lengths),
                    hours, self.data_path, time.time() - t0)  # fmt: skip


class AudioStore:
    """All utterances of a manifest as one int16 buffer with offsets, plus their label ids."""

    def __init__(self, audio: Any, offsets: np.ndarray, lengths: np.ndarray, labels: list[list[int]],
                 texts: list[str]) -> None:  # fmt: skip
        self.audio = audio  # torch int16 tensor (CPU or device)
        self.offsets = offsets
        self.lengths = lengths
        self.labels = labels
        self.texts = texts

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def hours(self) -> float:
        return float(self.lengths.sum()) / SAMPLE_RATE / 3600

    @classmethod
    def load(
        cls,
        manifest: Path,
        tokenizer: Tokenizer,
        frames_for: Callable[[int], int],
        max_duration_s: float,
        device: Any,
        workers: int = 8,
        cache_dir: Path | None = None,
    ) -> AudioStore:
        """Read a manifest's audio and labels. With ``cache_dir`` the decoded audio comes from (or first goes
        into) an :class:`AudioCache` file there and is memory-mapped instead of copied into process memory."""
        import torch

        items = read_manifest(manifest)
        kept_lengths: list[int] = []
        kept_offsets: list[int] = []
        labels: list[list[int]] = []
        texts: list[str] = []
        skipped = {
            "unreadable audio": 0,
            "too long": 0,
            "unknown characters": 0,
            "too short for its text": 0,
            "empty": 0,
        }
        first_unreadable = ""

        def keep(item: Utterance, samples: np.ndarray | Exception) -> bool:
            """Whether a clip is trained on; counts why not (and names the first unreadable file)."""
            nonlocal first_unreadable
            ids = tokenizer.encode(item.text)
            if isinstance(samples, Exception):
                skipped["unreadable audio"] += 1
                first_unreadable = first_unreadable or f"{item.audio}: {samples}"
            elif ids is None:
                skipped["unknown characters"] += 1
            elif len(samples) > max_duration_s * SAMPLE_RATE:
                skipped["too long"] += 1
            elif len(samples) < 400 or not ids:
                skipped["empty"] += 1
            elif frames_for(len(samples)) < len(ids) + sum(a == b for a, b in itertools.pairwise(ids)):
                skipped["too short for its text"] += 1
            else:
                kept_lengths.append(len(samples))
                labels.append(ids)
                texts.append(tokenizer.normalize(item.text))
                return True
            return False

        if cache_dir is not None:
            # Clips stay where the cache file has them (skipped ones included): nothing is copied.
            flat_np, entries = AudioCache(cache_dir, manifest, items).open_or_build(workers)
            for item, entry in zip(items, entries, strict=True):
                if isinstance(entry, str):
                    keep(item, AudioError(entry))
                elif keep(item, flat_np[entry[0] : entry[0] + entry[1]]):
                    kept_offsets.append(entry[0])
        else:
            # Each kept clip is copied into one flat buffer as soon as it is read, and freed: peak memory is
            # the audio once plus the clips in flight, even under an allocator that keeps freed pages (jemalloc
            # with decay off). The buffer's first size: _initial_samples.
            flat_np = np.empty(_initial_samples(items), dtype=np.int16)
            used = 0
            for item, samples in read_clips(items, workers):
                if keep(item, samples):
                    assert not isinstance(samples, Exception)
                    if used + len(samples) > len(flat_np):  # grow (rare: non-wav or resampled files)
                        grown = np.empty(max(len(flat_np) * 3 // 2, used + len(samples)), dtype=np.int16)
                        grown[:used] = flat_np[:used]
                        flat_np = grown
                    flat_np[used : used + len(samples)] = samples
                    kept_offsets.append(used)
                    used += len(samples)
            flat_np = flat_np[:used]  # a view: the unwritten tail was never paged in
        for why, n in skipped.items():
            if n:
                logger.warning("%s: skipped %d of %d utterances (%s)", manifest, n, len(items), why)
        if first_unreadable:
            logger.warning("%s: the first unreadable one: %s", manifest, first_unreadable)
        if not kept_lengths:
            first = f"; first unreadable: {first_unreadable}" if first_unreadable else ""
            raise ManifestError(f"{manifest}: no usable utterance (skipped: {skipped}){first}")
        lengths = np.array(kept_lengths, dtype=np.int64)
        offsets = np.array(kept_offsets, dtype=np.int64)
        flat = torch.from_numpy(flat_np)
        try:
            flat = flat.to(device)
        except RuntimeError as exc:  # not enough device memory: keep it in host memory
            logger.warning("audio stays in host memory (%s)", exc)
        store = cls(flat, offsets, lengths, labels, texts)
        logger.info("%s: %d utterances, %.2f h of audio", manifest, len(store), store.hours)
        return store

    def batches(self, batch_seconds: float, max_batch_size: int, rng: random.Random | None,
                multiple: int = 1) -> list[list[int]]:  # fmt: skip
        """Index batches of similar length; at most batch_seconds of padded audio each. Shuffled if rng.

        With ``multiple`` > 1 every clip's length is rounded up to a multiple of that many samples and a batch
        holds clips of one rounded length only, as many as the budget allows: batches then come in a few
        repeating shapes (``collate`` pads to the same multiple), so a CPU reuses the kernels it made for a
        shape (oneDNN builds one per shape) instead of building new ones at nearly every step."""
        budget = batch_seconds * SAMPLE_RATE
        out: list[list[int]] = []
        if multiple > 1:
            padded = -(-self.lengths // multiple) * multiple
            for width in np.unique(padded):
                members = np.flatnonzero(padded == width).tolist()
                if rng is not None:
                    rng.shuffle(members)
                size = max(1, min(max_batch_size, int(budget // int(width))))
                out.extend(members[i : i + size] for i in range(0, len(members), size))
            if rng is not None:
                rng.shuffle(out)
            return out
        order = np.argsort(self.lengths, kind="stable")
        if rng is not None:  # jitter the sort so that batches differ from epoch to epoch
            noise = np.array([rng.random() for _ in range(len(order))]) * 0.1 * SAMPLE_RATE
            order = np.argsort(self.lengths + noise, kind="stable")
        cur: list[int] = []
        cur_max = 0
        for idx in order:
            n = int(self.lengths[idx])
            if cur and (max(cur_max, n) * (len(cur) + 1) > budget or len(cur) >= max_batch_size):
                out.append(cur)
                cur, cur_max = [], 0
            cur.append(int(idx))
            cur_max = max(cur_max, n)
        if cur:
            out.append(cur)
        if rng is not None:
            rng.shuffle(out)
        return out

    def collate(self, idx: Sequence[int], device: Any, inputs: WaveformInputs | FbankInputs,
                extra: int = 0, multiple: int = 1) -> tuple[Any, Any, Any]:  # fmt: skip
        """(model input, attention mask, padded labels with -100) on ``device``.

        ``extra`` samples of padding are added past the longest row (to train the padded frames); the width
        is then rounded up to a multiple of ``multiple`` samples.
        """
        import torch

        lens = torch.as_tensor(self.lengths[list(idx)], device=self.audio.device)
        starts = torch.as_tensor(self.offsets[list(idx)], device=self.audio.device)
        step = max(int(multiple), 1)
        width = -(-(int(lens.max()) + max(int(extra), 0)) // step) * step
        pos = torch.arange(width, device=self.audio.device)
        mask = pos[None, :] < lens[:, None]
        gather = (starts[:, None] + pos[None, :]).clamp_(max=self.audio.numel() - 1)
        x = self.audio[gather].float().mul_(1.0 / 32768.0) * mask
        x, mask = inputs(x.to(device, non_blocking=True), lens.to(device))
        max_lab = max(len(self.labels[i]) for i in idx)
        labels = torch.full((len(idx), max_lab), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            labels[row, : len(self.labels[i])] = torch.as_tensor(self.labels[i])
        return x, mask, labels.to(device, non_blocking=True)


# ----------------------------------------------------------------------------------------------------------
# model / output folder


def build_config(vocab: dict[str, int], preset: str, overrides: dict[str, Any] | None = None) -> Any:
    """The config (``Wav2Vec2Config`` or ``Wav2Vec2BertConfig``) of a from-scratch model of a preset."""
    from transformers import Wav2Vec2BertConfig, Wav2Vec2Config

    if preset not in MODEL_PRESETS:
        raise ModelError(f"preset: {preset!r} is unknown; expected one of {sorted(MODEL_PRESETS)}")
    size = dict(MODEL_PRESETS[preset])
    family = size.pop("family")
    config_cls, common = (
        (Wav2Vec2BertConfig, _COMMON_CONFIG_BERT) if family == "wav2vec2-bert" else (Wav2Vec2Config, _COMMON_CONFIG)
    )
    if overrides:
        _check_overrides(config_cls().to_dict(), overrides, config_cls.__name__)
    kwargs = {**common, **size, **(overrides or {})}
    return config_cls(
        vocab_size=len(vocab),
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab.get("<s>", 1),
        eos_token_id=vocab.get("</s>", 2),
        **kwargs,
    )


def _make_processor(vocab: dict[str, int], work_dir: Path, family: str = "wav2vec2") -> tuple[Any, Any]:
    """Feature extractor + CTC tokenizer for a from-scratch model of a family (see :data:`MODEL_PRESETS`)."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

    work_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = work_dir / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file),
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        word_delimiter_token="|",
        do_lower_case=False,
    )
    if family == "wav2vec2-bert":
        return SeamlessM4TFeatureExtractor(sampling_rate=SAMPLE_RATE), tokenizer
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    return extractor, tokenizer


def alphabet_labels(vocab: dict[str, int]) -> list[str]:
    """pyctcdecode alphabet labels in vocabulary order: blank "", delimiter " ", unknown "⁇"."""
    labels = [""] * len(vocab)
    for tok, i in vocab.items():
        low = tok.lower()
        if low in ("<pad>", "[pad]"):
            labels[i] = ""
        elif tok == "|":
            labels[i] = " "
        elif low in ("<unk>", "[unk]"):
            labels[i] = "⁇"
        else:
            labels[i] = tok
    return labels


def check_lm_dir(lm_dir: Path) -> Path:
    """Check that a folder holds exactly one language model file (pyctcdecode's layout)."""
    lm_dir = Path(lm_dir)
    if not lm_dir.is_dir():
        raise ModelError(f"lm_dir: {lm_dir} is not a folder")
    models = [p for p in lm_dir.iterdir() if p.name.endswith((".arpa", ".arpa.gz", ".bin", ".binary"))]
    if len(models) != 1:
        raise ModelError(f"{lm_dir}: expected exactly one *.arpa|*.bin|*.binary file, found {len(models)}")
    return lm_dir


def save_hub_layout(
    model: Any,
    extractor: Any,
    tokenizer: Any,
    out_dir: Path,
    lm_dir: Path | None = None,
    save_dtype: str = "float32",
    extra: dict[str, Any] | None = None,
    language: str | None = None,
) -> Path:
    """Write model + processor files (and alphabet.json + language_model/ when lm_dir is given), and a model
    card (README.md) whose metadata records ``language``.

    The folder is written under a temporary name and renamed into place.
    """
    import torch

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp-save")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(save_dtype)
    if dtype is None:
        raise ModelError(f"save_dtype: {save_dtype!r}; expected float32, float16 or bfloat16")
    to_save = model
    if dtype != torch.float32:
        import copy

        to_save = copy.deepcopy(model).to(dtype)
    with quiet_transformers_progress():  # transformers' "Writing model shards" bar; the run logs its own
        to_save.save_pretrained(str(tmp), safe_serialization=True)
    extractor.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    special = tmp / "special_tokens_map.json"
    if not special.exists():  # transformers 5 no longer writes it; older readers and pyctcdecode users do
        names = ("bos_token", "eos_token", "unk_token", "pad_token")
        tokens = {n: str(getattr(tokenizer, n)) for n in names if getattr(tokenizer, n, None) is not None}
        special.write_text(json.dumps(tokens, indent=2) + "\n")
    pp_path = tmp / "preprocessor_config.json"
    pp = json.loads(pp_path.read_text())
    pp["processor_class"] = "Wav2Vec2ProcessorWithLM" if lm_dir else "Wav2Vec2Processor"
    pp_path.write_text(json.dumps(pp, indent=2, sort_keys=True) + "\n")
    if lm_dir is not None:
        lm_dir = check_lm_dir(lm_dir)
        shutil.copytree(lm_dir, tmp / "language_model")
        attrs = tmp / "language_model" / "attrs.json"
        if not attrs.exists():
            defaults = {"alpha": DEFAULT_ALPHA, "beta": DEFAULT_BETA, "unk_score_offset": DEFAULT_UNK_SCORE_OFFSET}
            attrs.write_text(json.dumps(defaults | {"score_boundary": True}) + "\n")
        vocab = tokenizer.get_vocab()
        (tmp / "alphabet.json").write_text(
            json.dumps({"labels": alphabet_labels(vocab), "is_bpe": False}, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    if extra:
        (tmp / "training_info.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
    write_model_card(
        tmp,
        language=language,
        title=out_dir.name,
        body="A CTC speech recognition model trained with `w2vlm train`"
        + (" (with an n-gram LM in `language_model/`)" if lm_dir is not None else "")
        + ". Transcribe with `w2vlm transcribe --model <this folder> audio.wav`.",
    )
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old-save")
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(out_dir)
    return out_dir


# ----------------------------------------------------------------------------------------------------------
# training


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), so that bf16 autocast speeds training
    up; elsewhere oneDNN emulates bf16 and float32 is as fast or faster. Reads /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"device: {name!r} is not a torch device ({exc})") from None


#: Up to this much extra padding (seconds) in the batches that get some (``TrainConfig.pad_extra_prob``)
_PAD_EXTRA_MAX_S = 2.0


def padding_blank_loss(model: Any, logits: Any, attention_mask: Any) -> Any:
    """Mean negative log-probability of the CTC blank over the padded frames of a batch (0 if none).

    CTC's loss ignores the frames past each row's length, so on its own it leaves them untrained, and a
    padded batch decoded without trimming would read characters out of its padding. This term teaches
    them to say blank, so ``processor.batch_decode(model(**inputs).logits)`` works on padded batches.
    """
    import torch

    frames = model._get_feature_vector_attention_mask(logits.shape[1], attention_mask).bool()
    padded = ~frames
    if not bool(padded.any()):
        return logits.new_zeros((), dtype=torch.float32)
    log_blank = torch.log_softmax(logits.float(), dim=-1)[..., model.config.pad_token_id]
    return -log_blank[padded].mean()


def train_step(model: Any, optimizer: Any, x: Any, mask: Any, labels: Any, cfg: TrainConfig, amp: bool) -> Any:
    """One optimizer step on a collated batch (CTC loss plus the padding-blank term, clipped gradients);
    returns the loss tensor. A step whose gradient is not finite is skipped (logged), so one bad batch cannot
    poison the weights. ``amp``: bf16 autocast on the inputs' device."""
    import torch

    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(x, attention_mask=mask, labels=labels)
    loss = out.loss
    if cfg.pad_blank_weight > 0:
        loss = loss + cfg.pad_blank_weight * padding_blank_loss(model, out.logits, mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    if not bool(torch.isfinite(norm)):
        # an inf/NaN gradient (a bf16 overflow, a degenerate batch) would turn every weight into NaN: skip it
        optimizer.zero_grad(set_to_none=True)
        logger.warning("non-finite gradient (norm %s, loss %s): step skipped, weights unchanged",
                       float(norm), float(loss.detach()))  # fmt: skip
        return loss
    optimizer.step()
    return loss


def _lr_at(cfg: TrainConfig, step: int, total_steps: int, elapsed: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    if cfg.time_limit_s:
        frac = max(frac, elapsed / cfg.time_limit_s)
    frac = min(1.0, frac)
    return cfg.learning_rate * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def evaluate(model: Any, store: AudioStore, tokenizer: Tokenizer, device: Any, batch_seconds: float,
             amp: bool, inputs: WaveformInputs | FbankInputs, n_examples: int = 3) -> EvalResult:  # fmt: skip
    """Greedy WER/CER of ``model`` on ``store``."""
    import torch

    model.eval()
    hyps: dict[int, str] = {}
    with torch.no_grad():
        for idx in store.batches(batch_seconds, 512, None):
            x, mask, _ = store.collate(idx, device, inputs)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x, attention_mask=mask).logits
            frames = [inputs.frames(int(store.lengths[i])) for i in idx]
            best = logits.argmax(-1).cpu().numpy()
            for row, i in enumerate(idx):
                hyps[i] = tokenizer.greedy_decode(best[row, : int(frames[row])].tolist())
    model.train()
    order = range(len(store))
    refs = [store.texts[i] for i in order]
    hyp_list = [hyps[i] for i in order]
    wer, cer = error_rates(refs, hyp_list)
    examples = [(refs[i], hyp_list[i]) for i in range(min(n_examples, len(refs)))]
    return EvalResult(wer=wer, cer=cer, utterances=len(refs), examples=examples)


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


def _check_overrides(defaults: dict[str, Any], overrides: dict[str, Any], config_name: str) -> None:
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


def _load_start(cfg: TrainConfig, work: Path) -> tuple[Any, Any, Any, dict[str, int]]:
    """(model, feature extractor, HF tokenizer, vocab) from init_from or from scratch."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForCTC, Wav2Vec2CTCTokenizer

    if cfg.init_from is not None:
        src = Path(cfg.init_from)
        if not (src / "config.json").is_file():
            raise ModelError(f"init_from: {src}/config.json not found (expected a model folder, hub layout)")
        vocab_file = src / "vocab.json"
        if not vocab_file.is_file():
            raise ModelError(f"init_from: {vocab_file} not found (a CTC character vocabulary is needed)")
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(src))
        extractor = AutoFeatureExtractor.from_pretrained(str(src))
        overrides: dict[str, Any] = {"ctc_zero_infinity": True}
        if cfg.mask_time_prob is not None:
            overrides["mask_time_prob"] = cfg.mask_time_prob
        if cfg.config_overrides:
            try:
                config = AutoConfig.from_pretrained(str(src))
            except (ValueError, KeyError, OSError) as exc:
                raise ModelError(f"init_from: {src}/config.json: not a config transformers can read ({exc})") from None
            _check_overrides(config.to_dict(), cfg.config_overrides, type(config).__name__)
            overrides.update(cfg.config_overrides)
        try:
            model = AutoModelForCTC.from_pretrained(str(src), dtype="float32", **overrides)
        except (ValueError, KeyError, RuntimeError) as exc:
            hint = " (a --set that changes layer sizes cannot start from its weights)" if cfg.config_overrides else ""
            raise ModelError(f"init_from: {src}: not a CTC model transformers can load ({exc}){hint}") from None
        if model.config.vocab_size != len(vocab):
            raise ModelError(
                f"init_from: {src}: config vocab_size {model.config.vocab_size} != {len(vocab)} in vocab.json"
            )
        return model, extractor, tokenizer, vocab
    vocab = {tok: i for i, tok in enumerate(DEFAULT_VOCAB)}
    overrides = dict(cfg.config_overrides)
    if cfg.mask_time_prob is not None:
        overrides["mask_time_prob"] = cfg.mask_time_prob
    model = AutoModelForCTC.from_config(build_config(vocab, cfg.preset, overrides))
    extractor, tokenizer = _make_processor(vocab, work, MODEL_PRESETS[cfg.preset]["family"])
    return model, extractor, tokenizer, vocab


def _progress_bar(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def train(cfg: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Run CTC training as configured; returns a summary. The model is saved to ``cfg.output_dir``."""
    import torch

    cfg.check()
    language = cfg.language
    if language is None and cfg.init_from is not None:
        language = model_language(cfg.init_from)
    t_start = time.time()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = _resolve_device(cfg.device)
    amp = cfg.amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    if cfg.lm_dir is not None:
        check_lm_dir(cfg.lm_dir)
    out_dir = Path(cfg.output_dir)
    ckpt_dir = out_dir.with_name(out_dir.name + ".checkpoint")
    work = ckpt_dir / "processor"
    model, extractor, hf_tokenizer, vocab = _load_start(cfg, work)
    tokenizer = Tokenizer(vocab)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %.2f M parameters, vocabulary of %d", n_params / 1e6, len(vocab))

    inputs = model_inputs_for(model, extractor)
    cache = cfg.audio_cache
    train_store = AudioStore.load(cfg.manifest, tokenizer, inputs.frames, cfg.max_duration_s, device, cache_dir=cache)
    dev_store = None
    if cfg.dev_manifest:
        dev_store = AudioStore.load(cfg.dev_manifest, tokenizer, inputs.frames, 1e9, device, cache_dir=cache)
    _release_after_loading()

    model.to(device)
    model.train()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name or name.endswith(".bias") else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-8,
        fused=device.type == "cuda",
    )

    step = 0
    epoch = 0
    elapsed_before = 0.0
    history: list[dict[str, Any]] = []
    rng = random.Random(cfg.seed)
    epoch_rng: Any = None  # the state of rng this epoch's batch order was drawn from (None: not drawn yet)
    batch_in_epoch = 0  # batches of this epoch done
    if cfg.resume and (ckpt_dir / "state.json").is_file():
        state_file = ckpt_dir / "state.json"
        try:
            state = json.loads(state_file.read_text())
            step, epoch = int(state["step"]), int(state["epoch"])
            elapsed_before = float(state.get("train_seconds", 0.0))
            history = state.get("history", [])
            rng.setstate(_tuple_state(state["rng"]))
            if state.get("epoch_rng") is not None:  # stopped within an epoch: go on with its batch order
                epoch_rng = _tuple_state(state["epoch_rng"])
                batch_in_epoch = int(state.get("batch_in_epoch", 0))
            _set_global_rng_states(state.get("global_rng"), device)
        except (ValueError, KeyError, TypeError) as exc:  # JSON errors are ValueErrors
            raise ModelError(
                f"{state_file}: not a readable w2vlm training checkpoint ({type(exc).__name__}: {exc}); "
                f"remove {ckpt_dir}, or train without --resume, to start afresh"
            ) from None
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ckpt_dir / "model.safetensors"), device=str(device)), strict=True)
        optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", map_location=device))
        logger.info("resumed from %s at step %d, epoch %d", ckpt_dir, step, epoch)

    multiple = max(1, round(cfg.pad_multiple_s * SAMPLE_RATE))
    batches_per_epoch = len(train_store.batches(cfg.batch_seconds, cfg.max_batch_size, None, multiple))
    total_steps = cfg.max_steps or batches_per_epoch * cfg.epochs
    logger.info(
        "training: %d batches/epoch, %d epochs, %d steps planned%s, device %s%s",
        batches_per_epoch,
        cfg.epochs,
        total_steps,
        f", time limit {cfg.time_limit_s:.0f}s" if cfg.time_limit_s else "",
        device,
        " (bf16 autocast)" if amp else "",
    )

    def save_checkpoint() -> None:
        from safetensors.torch import save_file

        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(ckpt_dir / "model.safetensors.tmp"))
        os.replace(ckpt_dir / "model.safetensors.tmp", ckpt_dir / "model.safetensors")
        torch.save(optimizer.state_dict(), ckpt_dir / "optimizer.pt.tmp")
        os.replace(ckpt_dir / "optimizer.pt.tmp", ckpt_dir / "optimizer.pt")
        state = {
            "step": step,
            "epoch": epoch,
            "train_seconds": elapsed_before + time.time() - t_train,
            "history": history,
            "rng": rng.getstate(),
            "epoch_rng": epoch_rng,
            "batch_in_epoch": batch_in_epoch,
            "global_rng": _global_rng_states(device),
            "config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()},
        }
        (ckpt_dir / "state.json.tmp").write_text(json.dumps(state) + "\n")
        os.replace(ckpt_dir / "state.json.tmp", ckpt_dir / "state.json")

    snap_root = out_dir.with_name(out_dir.name + ".snapshots")

    def save_snapshot() -> None:
        info = {"steps": step, "epoch": epoch, "train_seconds": round(elapsed_before + time.time() - t_train, 1),
                "snapshot_of": str(out_dir)}  # fmt: skip
        save_hub_layout(
            model, extractor, hf_tokenizer, snap_root / f"step-{step:07d}", None, cfg.save_dtype, info, language
        )

    t_train = time.time()
    last_loss = float("nan")
    loss_window: list[float] = []
    dev_result: EvalResult | None = None
    stop = False
    stopped_for: str | None = None  # set when the run stops before its schedule ends (it is then paused)
    memory_check_every = 10  # steps
    memory_limit = cfg.max_memory_gb
    if memory_limit and not _within_memory(memory_limit, stop_message=False):
        logger.warning("resident memory is over --max-memory %.1f GB before the first step: a restart would not "
                       "help, so the limit is not enforced in this run", memory_limit)  # fmt: skip
        memory_limit = None
    first_step = step
    with _progress_bar(cfg.progress) as progress, _StopOnSignal() as signalled:
        task = progress.add_task("train", total=total_steps, completed=step, info="")
        while epoch < cfg.epochs and not stop:
            if epoch_rng is None:
                epoch_rng, batch_in_epoch = rng.getstate(), 0
                batches = train_store.batches(cfg.batch_seconds, cfg.max_batch_size, rng, multiple)
            else:  # resumed within an epoch: draw its batch order again, leave rng where it was saved
                now = rng.getstate()
                rng.setstate(epoch_rng)
                batches = train_store.batches(cfg.batch_seconds, cfg.max_batch_size, rng, multiple)
                rng.setstate(now)
            if epoch == 0 and cfg.sortagrad:  # first epoch shortest-first: CTC finds alignments sooner
                batches.sort(key=lambda b: int(train_store.lengths[b].max()))
            ep_loss, ep_n, ep_first_step = 0.0, 0, step
            for idx in batches[batch_in_epoch:]:
                elapsed = elapsed_before + time.time() - t_train
                if step >= total_steps or (cfg.time_limit_s and elapsed >= cfg.time_limit_s):
                    stop = True
                    break
                if signalled.is_set():
                    stopped_for = "signal"
                elif cfg.stop_after_s and elapsed - elapsed_before >= cfg.stop_after_s:
                    stopped_for = "stop-after"
                elif memory_limit and step > first_step and step % memory_check_every == 0:
                    stopped_for = None if _within_memory(memory_limit) else "memory"
                if stopped_for is not None:
                    stop = True
                    break
                lr = _lr_at(cfg, step, total_steps, elapsed)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                extra = 0
                if cfg.pad_blank_weight > 0 and rng.random() < cfg.pad_extra_prob:
                    extra = int(rng.random() * _PAD_EXTRA_MAX_S * SAMPLE_RATE)
                x, mask, labels = train_store.collate(idx, device, inputs, extra, multiple)
                loss = train_step(model, optimizer, x, mask, labels, cfg, amp)
                step += 1
                batch_in_epoch += 1
                if step % 10 == 0 or step == 1:
                    last_loss = float(loss.detach())
                    loss_window.append(last_loss)
                    ep_loss += last_loss
                    ep_n += 1
                if step % cfg.log_every == 0:
                    avg = sum(loss_window) / max(len(loss_window), 1)
                    loss_window.clear()
                    held = resident_memory_gb()
                    memory = f" mem {held:.1f} GB" if held is not None else ""
                    logger.info("step %d epoch %d loss %.4f lr %.2e %.0fs%s", step, epoch, avg, lr, elapsed, memory)
                progress.update(task, completed=step, info=f"ep {epoch} loss {last_loss:.3f} lr {lr:.1e}")
                if cfg.save_every and step % cfg.save_every == 0:
                    save_checkpoint()
                if cfg.snapshot_every and step % cfg.snapshot_every == 0:
                    save_snapshot()
            else:
                epoch += 1
                epoch_rng = None
            if step == ep_first_step and stop and history:  # stopped at an epoch's start: nothing new to record
                break
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "loss": ep_loss / max(ep_n, 1),
                "seconds": round(elapsed_before + time.time() - t_train, 1),
            }
            if dev_store is not None and stopped_for is None:  # stopped early: save, no dev pass
                dev_result = evaluate(model, dev_store, tokenizer, device, cfg.batch_seconds, amp, inputs)
                record.update(dev_wer=dev_result.wer, dev_cer=dev_result.cer)
                logger.info(
                    "epoch %d: loss %.4f, dev greedy WER %.2f%% CER %.2f%%; e.g. %r -> %r",
                    epoch,
                    record["loss"],
                    100 * dev_result.wer,
                    100 * dev_result.cer,
                    *(dev_result.examples[0] if dev_result.examples else ("", "")),
                )
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            save_checkpoint()

    train_seconds = elapsed_before + time.time() - t_train
    paused = stopped_for is not None
    if paused:
        logger.info("stopped after %.0fs in this run (step %d); --resume continues the same schedule",
                    time.time() - t_train, step)  # fmt: skip
    model.eval()
    info = {
        "steps": step,
        "epochs_completed": epoch,
        "train_seconds": round(train_seconds, 1),
        "paused": paused,
        "train_audio_hours": round(train_store.hours, 3),
        "parameters": n_params,
        "autocast": "bfloat16" if amp else None,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "history": history,
        "dev": dataclasses.asdict(dev_result) if dev_result else None,
    }
    model.cpu()
    save_hub_layout(model, extractor, hf_tokenizer, out_dir, cfg.lm_dir, cfg.save_dtype, extra=info, language=language)
    logger.info("saved %s (%.0fs in all)", out_dir, time.time() - t_start)
    return TrainResult(
        output_dir=out_dir,
        steps=step,
        epochs_completed=epoch,
        train_seconds=train_seconds,
        audio_hours=train_store.hours,
        final_loss=last_loss,
        dev=dev_result,
        history=history,
        stopped_for=stopped_for,
    )


def resident_memory_gb() -> float | None:
    """This process's resident anonymous memory in GB (heap and the like; not memory-mapped files, which the
    system can reclaim), from ``/proc/self/status``; None where that is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return None


def release_free_memory() -> str | None:
    """Hand the allocator's free pages back to the system: all of jemalloc's arenas when the process runs under
    jemalloc (``LD_PRELOAD``; needed when its page decay is off), else glibc's ``malloc_trim``. Returns which
    allocator did it, or None when neither is there."""
    import ctypes

    try:
        process = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: no handle for the process itself (Windows)
        return None
    mallctl = getattr(process, "mallctl", None)
    if mallctl is not None:
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        all_arenas = 4096  # MALLCTL_ARENAS_ALL
        if mallctl(f"arena.{all_arenas}.purge".encode(), None, None, None, 0) == 0:
            return "jemalloc"
    malloc_trim = getattr(process, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim(0)
        return "glibc"
    return None


def _release_after_loading() -> None:
    """Decoding the audio (and writing an audio cache) frees several GB of arrays before the first step; an
    allocator that keeps free pages (jemalloc with decay off) would hold them for the whole run, crowding out
    the page cache that the memory-mapped audio lives in. Hand them back once and say how much that was."""
    held = resident_memory_gb()
    allocator = release_free_memory()
    after = resident_memory_gb()
    if held is not None and after is not None and held - after >= 0.05:
        logger.info("after loading the data: %s gave %.1f GB of free memory back (%.1f GB resident)",
                    allocator or "no known allocator", held - after, after)  # fmt: skip


def _within_memory(limit_gb: float, stop_message: bool = True) -> bool:
    """False when resident memory stays over ``limit_gb`` even after the allocator gave its free pages back."""
    held = resident_memory_gb()
    if held is None or held <= limit_gb:
        return True
    allocator = release_free_memory()
    after = resident_memory_gb() or 0.0
    logger.info("resident memory %.1f GB over --max-memory %.1f GB: %s gave %.1f GB back",
                held, limit_gb, allocator or "no known allocator", held - after)  # fmt: skip
    if after <= limit_gb:
        return True
    if stop_message:
        logger.warning("resident memory still %.1f GB (--max-memory %.1f GB): stopping after saving a checkpoint; "
                       "run the same command with --resume to go on", after, limit_gb)  # fmt: skip
    return False


class _StopOnSignal(contextlib.AbstractContextManager):
    """While training: the first SIGINT/SIGTERM asks the loop to stop after its current step (it then saves
    a checkpoint and the model), a second SIGINT aborts at once. Only in the main thread, where Python
    delivers signals; elsewhere the event is simply never set."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        logger.warning("%s: stopping after this step and saving a checkpoint (Ctrl-C again aborts at once)",
                       signal.Signals(signum).name)  # fmt: skip

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self.event

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._previous.clear()


def _global_rng_states(device: Any) -> dict[str, Any]:
    """numpy's and torch's global random states (SpecAugment and dropout draw from them), JSON-ready."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state().tolist(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return states


def _set_global_rng_states(states: dict[str, Any] | None, device: Any) -> None:
    import torch

    if not states:  # a checkpoint from before they were saved
        return
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(torch.tensor(states["cuda"], dtype=torch.uint8), device)


def _tuple_state(obj: Any) -> Any:
    """JSON turns random.getstate()'s tuples into lists; turn them back."""
    if isinstance(obj, list):
        return tuple(_tuple_state(x) for x in obj)
    return obj


def iter_manifest_texts(path: Path) -> Iterator[str]:
    """The texts of a manifest (for building an LM or a vocabulary)."""
    for utt in read_manifest(path):
        yield utt.text
