"""``w2vlm add-lm``: give a CTC model an n-gram LM in one step.

The common recipe for boosting a wav2vec2 model with an n-gram LM takes several manual steps (build the LM
with KenLM, write ``alphabet.json`` from the tokenizer, lay out ``language_model/`` beside the model, mark
the processor as ``Wav2Vec2ProcessorWithLM``, pick alpha and beta). :func:`add_lm` does all of them: it copies
the model folder, estimates a modified Kneser-Ney LM from text restricted to the model's characters
(:func:`w2vlm.lm.build_lm`), writes the decoder files in the hub layout that transformers, pyctcdecode and
w2vlm load, records the language in the model card, and, given a dev manifest, tunes alpha and beta on it
(:func:`w2vlm.tune.tune`). The result is written under a temporary name and renamed into place, so a failed
run leaves no half-made model.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2vlm.defaults import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_UNK_SCORE_OFFSET
from w2vlm.errors import LanguageModelError, ModelError
from w2vlm.fileio import check_output

logger = logging.getLogger("w2vlm.add_lm")

#: files of the source model that the new LM replaces
_REPLACED = ("language_model", "alphabet.json")
LM_FILENAME = "lm.arpa"


@dataclass
class AddLmResult:
    """What :func:`add_lm` wrote: the model folder, the LM's statistics, its settings and (when tuned) the
    tuning report."""

    output: Path
    lm_stats: Any
    alpha: float
    beta: float
    language: str | None
    tune_report: Any = None


def add_lm(
    model: str | os.PathLike[str] | None,
    texts: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    order: int = 3,
    prune: Sequence[int] | None = None,
    vocab_limit: int | None = None,
    normalize: bool = True,
    language: str | None = None,
    dev_manifest: str | os.PathLike[str] | None = None,
    alphas: str | Sequence[float] | None = None,
    betas: str | Sequence[float] | None = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    memory: str | int | None = None,
    threads: int | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
    tune_options: dict[str, Any] | None = None,
) -> AddLmResult:
    """Copy ``model`` (a folder, a hub id, or None for the embedded model) to ``output`` with an n-gram LM
    estimated from ``texts``; see the module docstring. ``alphas``/``betas`` are the grid searched on
    ``dev_manifest`` (default: :mod:`w2vlm.tune`'s). ``memory``, ``threads`` and ``temp_dir`` are
    :func:`w2vlm.lm.build_lm`'s counting budget, threads and spill folder (None: its defaults); ``threads`` also
    decodes while tuning. ``tune_options`` go to :func:`w2vlm.tune.tune` as they are (``acoustic``,
    ``cache_dir``, ``num_threads``, ...)."""
    from w2vlm.lm import DEFAULT_MEMORY, build_lm
    from w2vlm.model import resolve_language, resolve_model_path

    source = resolve_model_path(model)
    out = Path(output).expanduser()
    if out.resolve() == source.resolve():
        raise ModelError(f"-o {out}: the output must be a new folder, not the model itself")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ModelError(f"-o {out}: exists and is not empty (pass --overwrite to replace it)")
    check_output(out, folder=True)  # before the build, not after it
    if not texts:
        raise LanguageModelError("add-lm: give at least one text file to build the LM from")
    language = resolve_language(language, source)
    vocab = source / "vocab.json"
    if not vocab.is_file():
        raise ModelError(f"{source}: no vocab.json; add-lm needs a character CTC model's vocabulary")

    tmp = out.with_name(f".{out.name}.add-lm-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(*_REPLACED, ".*"))
        lm_dir = tmp / "language_model"
        lm_dir.mkdir()
        stats = build_lm(
            texts,
            lm_dir / LM_FILENAME,
            order=order,
            prune=prune,
            vocab_limit=vocab_limit,
            normalize=normalize,
            allowed_chars=vocab,
            progress=progress,
            memory=DEFAULT_MEMORY if memory is None else memory,
            threads=threads,
            temp_dir=temp_dir,
        )
        _write_decoder_files(tmp)
        _record_language(tmp, language, source)
        alpha, beta, report = DEFAULT_ALPHA, DEFAULT_BETA, None
        if dev_manifest is not None:
            options = {"num_threads": threads, **(tune_options or {})}
            alpha, beta, report = _tune(tmp, dev_manifest, alphas, betas, progress, options)
        else:  # tuning has loaded the model and the written LM already
            _check_loads(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s (%d-gram LM, alpha %g, beta %g)", out, order, alpha, beta)
    return AddLmResult(out, stats, alpha, beta, language, report)


def _write_decoder_files(folder: Path) -> None:
    """``alphabet.json`` from the tokenizer, ``language_model/attrs.json`` with the default weights, and the
    processor class that makes transformers and w2vlm load the LM with the model."""
    from w2vlm.fileio import atomic_write_json, read_json_object
    from w2vlm.processor_parts import load_tokenizer, tokenizer_labels

    labels = tokenizer_labels(load_tokenizer(folder))
    atomic_write_json(folder / "alphabet.json", {"labels": labels, "is_bpe": False}, indent=None)
    attrs = {
        "alpha": DEFAULT_ALPHA,
        "beta": DEFAULT_BETA,
        "unk_score_offset": DEFAULT_UNK_SCORE_OFFSET,
        "score_boundary": True,
    }
    atomic_write_json(folder / "language_model" / "attrs.json", attrs)
    config = folder / "preprocessor_config.json"
    if not config.is_file():
        raise ModelError(f"{config}: missing; the model folder has no feature extractor configuration")
    data = read_json_object(config, ModelError)
    data["processor_class"] = "Wav2Vec2ProcessorWithLM"
    atomic_write_json(config, data)


def _record_language(folder: Path, language: str | None, source: Path) -> None:
    """Keep the source's model card (its text and metadata) and set its language; write a card if there is
    none."""
    from w2vlm.model import MODEL_CARD, write_model_card

    card = folder / MODEL_CARD
    if card.is_file():
        if language is None:
            return
        from huggingface_hub import metadata_load, metadata_save

        meta = metadata_load(card) or {}
        meta["language"] = language
        metadata_save(card, meta)
        return
    write_model_card(
        folder,
        language=language,
        title=folder.name.removeprefix(".").removesuffix(".add-lm-tmp"),
        body=f"`{source.name}` with an n-gram LM in `language_model/`, made with `w2vlm add-lm`.",
    )


def _tune(
    folder: Path,
    manifest: str | os.PathLike[str],
    alphas: str | Sequence[float] | None,
    betas: str | Sequence[float] | None,
    progress: Callable[[str, int, int], None] | None,
    options: dict[str, Any],
) -> tuple[float, float, Any]:
    from w2vlm.tune import tune, write_attrs

    grid: dict[str, Any] = {}
    if alphas is not None:
        grid["alphas"] = alphas
    if betas is not None:
        grid["betas"] = betas
    report = tune(manifest, folder, progress=progress, **grid, **options)
    write_attrs(folder, report.best.setting, include_unk=False)
    return report.best.setting.alpha, report.best.setting.beta, report


def _check_loads(folder: Path) -> None:
    """The folder loads as a processor with an LM (what every later command will do first)."""
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    processor = Wav2Vec2ProcessorWithLM.from_pretrained(folder)
    if getattr(processor.decoder, "language_model", None) is None:  # pragma: no cover - a bug if it happens
        raise ModelError(f"{folder}: the written LM did not load")


__all__ = ["LM_FILENAME", "AddLmResult", "add_lm"]
