"""Model configs for training from scratch, and the trained model written in the hub layout."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from w2vlm.decoder.ngram_files import ATTRS_FILENAME, UNIGRAMS_FILENAME, find_lm_file
from w2vlm.defaults import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_UNK_SCORE_OFFSET
from w2vlm.errors import LanguageModelError, ModelError
from w2vlm.fileio import read_json_object
from w2vlm.model import quiet_transformers_progress, write_model_card
from w2vlm.processor_parts import vocab_labels
from w2vlm.train.config import (
    COMMON_CONFIG,
    COMMON_CONFIG_BERT,
    MODEL_PRESETS,
    SAMPLE_RATE,
    SAVE_DTYPES,
    check_overrides,
)

logger = logging.getLogger("w2vlm.train")


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
        (Wav2Vec2BertConfig, COMMON_CONFIG_BERT) if family == "wav2vec2-bert" else (Wav2Vec2Config, COMMON_CONFIG)
    )
    if overrides:
        check_overrides(config_cls().to_dict(), overrides, config_cls.__name__)
    kwargs = {**common, **size, **(overrides or {})}
    return config_cls(
        vocab_size=len(vocab),
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab.get("<s>", 1),
        eos_token_id=vocab.get("</s>", 2),
        **kwargs,
    )


def make_processor(vocab: dict[str, int], work_dir: Path, family: str = "wav2vec2") -> tuple[Any, Any]:
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


def lm_file_to_bundle(lm_dir: Path) -> Path:
    """The one language model file of ``lm_dir`` that a trained model's ``language_model/`` gets
    (:func:`~w2vlm.decoder.ngram_files.find_lm_file`: with an ARPA and the ``.w2vlm`` convert-lm made from it, the
    ``.w2vlm``; KenLM and pyctcdecode read only the other, so leave the ``.w2vlm`` out of the folder to bundle that
    instead). The folder must also hold ``unigrams.txt``, as ``build-lm`` writes it."""
    lm_dir = Path(lm_dir)
    if not lm_dir.is_dir():
        raise ModelError(f"lm_dir: {lm_dir} is not a folder")
    try:
        found = find_lm_file(lm_dir)
    except LanguageModelError as exc:
        raise ModelError(str(exc)) from None
    if not (lm_dir / UNIGRAMS_FILENAME).is_file():
        raise ModelError(f"{lm_dir}: no {UNIGRAMS_FILENAME} (build-lm writes it beside the ARPA file)")
    return found


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
    if save_dtype not in SAVE_DTYPES:
        raise ModelError(f"save_dtype: {save_dtype!r}; expected {', '.join(SAVE_DTYPES)}")
    dtype = getattr(torch, save_dtype)
    lm_file = None if lm_dir is None else lm_file_to_bundle(lm_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp-save")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
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
    pp = read_json_object(pp_path, ModelError)
    pp["processor_class"] = "Wav2Vec2ProcessorWithLM" if lm_file else "Wav2Vec2Processor"
    pp_path.write_text(json.dumps(pp, indent=2, sort_keys=True) + "\n")
    if lm_file is not None:
        bundled = tmp / "language_model"
        bundled.mkdir()
        for name in (ATTRS_FILENAME, UNIGRAMS_FILENAME, lm_file.name):
            if (lm_file.parent / name).is_file():
                shutil.copy2(lm_file.parent / name, bundled / name)
        logger.info("language model bundled: %s", lm_file)
        attrs = bundled / ATTRS_FILENAME
        if not attrs.exists():
            defaults = {"alpha": DEFAULT_ALPHA, "beta": DEFAULT_BETA, "unk_score_offset": DEFAULT_UNK_SCORE_OFFSET}
            attrs.write_text(json.dumps(defaults | {"score_boundary": True}) + "\n")
        vocab = tokenizer.get_vocab()
        (tmp / "alphabet.json").write_text(
            json.dumps({"labels": vocab_labels(vocab), "is_bpe": False}, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
    if extra:
        (tmp / "training_info.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
    write_model_card(
        tmp,
        language=language,
        title=out_dir.name,
        body="A CTC speech recognition model trained with `w2vlm train`"
        + (" (with an n-gram LM in `language_model/`)" if lm_file is not None else "")
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
