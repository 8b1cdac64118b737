"""The three parts of a processor folder (feature extractor, CTC tokenizer, decoder), loaded one by one, and the
tokenizer's vocabulary as decoder labels."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from w2vlm.errors import ModelError

logger = logging.getLogger("w2vlm.processor")


def vocab_labels(vocab: dict[str, int], delimiter: str | None = "|") -> list[str]:
    """A CTC vocabulary (token → id) as decoder labels in id order: the pad token becomes the blank "", the word
    ``delimiter`` " ", the unknown token "⁇"."""
    from w2vlm.decoder.alphabet import BLANK_TOKEN_RE, UNK_TOKEN, UNK_TOKEN_RE  # the native decoder: imported on use

    labels = []
    for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        if BLANK_TOKEN_RE.match(token):
            labels.append("")
        elif delimiter is not None and token == delimiter:
            labels.append(" ")
        elif UNK_TOKEN_RE.match(token):
            labels.append(UNK_TOKEN)
        else:
            labels.append(token)
    return labels


def tokenizer_labels(tokenizer: Any) -> list[str]:
    """The tokenizer's vocabulary in id order, mapped to decoder labels (blank "", delimiter " ", unk ⁇)."""
    return vocab_labels(tokenizer.get_vocab(), getattr(tokenizer, "word_delimiter_token", None))


def load_feature_extractor(folder: Path) -> Any:
    """The folder's feature extractor (``preprocessor_config.json``) via transformers."""
    from transformers import AutoFeatureExtractor

    config = folder / "preprocessor_config.json"
    if not config.is_file():
        # transformers 5 saves processors as processor_config.json with a "feature_extractor" section
        config = folder / "processor_config.json"
    if not config.is_file():
        raise ModelError(
            f"{folder}: preprocessor_config.json is missing (the feature extractor's settings; "
            "or a processor_config.json with a 'feature_extractor' section)"
        )
    try:
        return AutoFeatureExtractor.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config}: could not load the feature extractor ({exc})") from exc


def load_tokenizer(folder: Path) -> Any:
    """The folder's CTC tokenizer (``vocab.json`` + tokenizer configs) via transformers."""
    from transformers import Wav2Vec2CTCTokenizer

    vocab = folder / "vocab.json"
    if not vocab.is_file():
        raise ModelError(f"{folder}: vocab.json is missing (the CTC tokenizer's vocabulary)")
    try:
        return Wav2Vec2CTCTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelError(f"{vocab}: could not load the tokenizer ({exc})") from exc


def load_decoder(folder: Path, tokenizer: Any) -> Any:
    """``alphabet.json`` + ``language_model/`` of the folder as a decoder; without them an LM-less decoder."""
    from w2vlm.decoder import BeamSearchDecoderCTC, build_ctcdecoder

    if (folder / "alphabet.json").is_file():
        return BeamSearchDecoderCTC.load_from_dir(str(folder))
    logger.warning(
        "%s has no alphabet.json/language_model: decoding with beam search over the tokenizer's vocabulary "
        "without a language model",
        folder,
    )
    return build_ctcdecoder(tokenizer_labels(tokenizer))
