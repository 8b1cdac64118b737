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

Modules: :mod:`~w2vlm.train.config` (settings, presets, results), :mod:`~w2vlm.train.data` (manifests, audio,
tokenizer, batches), :mod:`~w2vlm.train.loop` (the loop), :mod:`~w2vlm.train.memory` (``--max-memory``),
:mod:`~w2vlm.train.export` (configs from scratch, the hub layout written).
"""

from w2vlm.train.config import (
    DEFAULT_VOCAB,
    MODEL_PRESETS,
    EvalResult,
    TrainConfig,
    TrainResult,
    parse_config_overrides,
)
from w2vlm.train.data import AudioStore, Tokenizer, read_audio_int16, read_manifest
from w2vlm.train.export import build_config, lm_file_to_bundle, save_hub_layout
from w2vlm.train.loop import cpu_has_native_bf16, train

__all__ = [
    "DEFAULT_VOCAB",
    "MODEL_PRESETS",
    "AudioStore",
    "EvalResult",
    "Tokenizer",
    "TrainConfig",
    "TrainResult",
    "build_config",
    "cpu_has_native_bf16",
    "lm_file_to_bundle",
    "parse_config_overrides",
    "read_audio_int16",
    "read_manifest",
    "save_hub_layout",
    "train",
]
