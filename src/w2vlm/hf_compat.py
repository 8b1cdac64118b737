"""``w2vlm.install()``: w2vlm's processor and LM decoding behind transformers' own entry points.

After ``w2vlm.install()``, code written for transformers runs unchanged on w2vlm's decoder:

- ``transformers.AutoProcessor.from_pretrained(folder_or_hub_id)`` on a model whose ``preprocessor_config.json``
  names ``Wav2Vec2ProcessorWithLM`` builds :class:`w2vlm.processor.Wav2Vec2ProcessorWithLM` (transformers
  resolves that class name through ``transformers.Wav2Vec2ProcessorWithLM``, which now is w2vlm's class, as are
  ``transformers.models.wav2vec2_with_lm.Wav2Vec2ProcessorWithLM`` and its output class);
- ``transformers.pipeline("automatic-speech-recognition", model=folder_or_hub_id)`` on a model with an LM
  (``alphabet.json`` + ``language_model/``) gives transformers' pipeline with w2vlm's decoder as its
  ``decoder`` (``type == "ctc_with_lm"``), whether or not pyctcdecode and kenlm are installed; without
  ``task``, such a model is taken as ``automatic-speech-recognition`` (no hub query, so it works offline).

Models without an LM, other tasks and explicitly given ``decoder=`` objects are left to transformers.
``install()`` is idempotent; :func:`uninstall` puts transformers' own objects back. Call it before
``from transformers import pipeline`` (a name imported earlier keeps the original function).
"""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any

logger = logging.getLogger("w2vlm.hf_compat")

ASR_TASK = "automatic-speech-recognition"
#: files of a hub repository that make up its decoder (what is fetched for a hub id)
DECODER_ALLOW_PATTERNS = ["alphabet.json", "language_model/*"]
#: modules of transformers whose ``Wav2Vec2ProcessorWithLM`` / ``Wav2Vec2DecoderWithLMOutput`` are replaced
PROCESSOR_MODULES = (
    "transformers",
    "transformers.models.wav2vec2_with_lm",
    "transformers.models.wav2vec2_with_lm.processing_wav2vec2_with_lm",
)
PIPELINE_MODULES = ("transformers", "transformers.pipelines")
_HUB_KEYWORDS = ("revision", "token", "cache_dir", "local_files_only")

_MISSING = object()
#: (module object, attribute, transformers' original value), while installed
_originals: list[tuple[Any, str, Any]] = []


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return bool(_originals)


def install() -> None:
    """Make transformers' ``AutoProcessor`` / ``Wav2Vec2ProcessorWithLM`` / ``pipeline`` use w2vlm's processor
    and LM decoding (see the module docstring). Idempotent."""
    if _originals:
        return
    from w2vlm.processor import Wav2Vec2ProcessorWithLM
    from w2vlm.processor_output import Wav2Vec2DecoderWithLMOutput

    before = {name: sys.modules.get(name) for name in {*PROCESSOR_MODULES, *PIPELINE_MODULES}}
    replacements: dict[tuple[str, str], Any] = {}
    for name in PROCESSOR_MODULES:
        replacements[(name, "Wav2Vec2ProcessorWithLM")] = Wav2Vec2ProcessorWithLM
        if name != "transformers":
            replacements[(name, "Wav2Vec2DecoderWithLMOutput")] = Wav2Vec2DecoderWithLMOutput
    for name in PIPELINE_MODULES:
        module = _import(name)
        original = getattr(module, "pipeline", None) if module is not None else None
        if callable(original):
            replacements[(name, "pipeline")] = _lm_pipeline(original)
    for name in PROCESSOR_MODULES:
        _import(name)
    # transformers re-executes its __init__ when some submodules are imported (a new `transformers` module
    # object in sys.modules): patch every live one, those that code imported earlier (and holds) included.
    live = [m for m in gc.get_objects() if issubclass(type(m), types.ModuleType) and m.__name__ == "transformers"]
    for (name, attr), value in replacements.items():
        extra = live if name == "transformers" else []
        for module in _distinct(before.get(name), sys.modules.get(name), *extra):
            try:
                original = module.__dict__[attr] if attr in module.__dict__ else getattr(module, attr)
            except Exception:  # a lazy attribute whose import fails (e.g. removed upstream)
                original = _MISSING
            _originals.append((module, attr, original))
            setattr(module, attr, value)
    logger.debug("installed w2vlm into transformers: %d attributes", len(_originals))


def uninstall() -> None:
    """Put back what :func:`install` replaced."""
    for module, attr, original in reversed(_originals):
        if original is _MISSING:
            module.__dict__.pop(attr, None)
        else:
            setattr(module, attr, original)
    _originals.clear()


def _distinct(*modules: Any) -> list[Any]:
    out: list[Any] = []
    for module in modules:
        if module is not None and all(module is not m for m in out):
            out.append(module)
    return out


def lm_decoder_for(model: str | os.PathLike, **hub_kwargs: Any) -> Any:
    """w2vlm's decoder for a local model folder or hub id that has ``alphabet.json`` and ``language_model/``;
    None when it has no LM or cannot be found (transformers then reports what it would)."""
    from w2vlm.decoder import BeamSearchDecoderCTC

    folder = Path(os.fspath(model)).expanduser()
    if not folder.is_dir():
        folder = _hub_decoder_folder(os.fspath(model), hub_kwargs)
        if folder is None:
            return None
    if not (folder / "alphabet.json").is_file() or not (folder / "language_model").is_dir():
        return None
    return BeamSearchDecoderCTC.load_from_dir(folder)


def _hub_decoder_folder(repo_id: str, hub_kwargs: dict[str, Any]) -> Path | None:
    from w2vlm.errors import ModelError
    from w2vlm.model import snapshot_folder

    kwargs = {k: hub_kwargs[k] for k in _HUB_KEYWORDS if hub_kwargs.get(k) is not None}
    try:
        return snapshot_folder(repo_id, allow_patterns=DECODER_ALLOW_PATTERNS, **kwargs)
    except (ModelError, OSError, ValueError) as exc:
        logger.debug("%s: no decoder files (%s)", repo_id, exc)
        return None


def _not_the_greedy_fallback_warning(record: logging.LogRecord) -> bool:
    """A logging filter: False for transformers' warning that a model's LM falls back to greedy decoding."""
    return "falls back to greedy CTC" not in record.getMessage()


def _lm_pipeline(original: Any) -> Any:
    """transformers' ``pipeline`` that gives ASR pipelines of models with an LM w2vlm's decoder."""
    if getattr(original, "__w2vlm_original__", None) is not None:
        return original

    @functools.wraps(original)
    def pipeline(task: str | None = None, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        decoder = None
        if task in (None, ASR_TASK) and isinstance(model, (str, os.PathLike)) and kwargs.get("decoder") is None:
            model_kwargs = kwargs.get("model_kwargs") or {}
            hub = {k: kwargs.get(k, model_kwargs.get(k)) for k in _HUB_KEYWORDS}
            decoder = lm_decoder_for(model, **hub)
            if decoder is not None:
                kwargs["decoder"] = decoder
                # a model with an n-gram LM is a speech recognizer: no hub query to infer the task (which
                # transformers cannot do offline)
                task = ASR_TASK
        if decoder is None:
            pipe = original(task, model, *args, **kwargs)
        else:
            # transformers still tries to load pyctcdecode + kenlm for the LM and, without them, warns that
            # decoding "falls back to greedy CTC": not so here, the decoder given is used
            pipelines_logger = logging.getLogger("transformers.pipelines")
            pipelines_logger.addFilter(_not_the_greedy_fallback_warning)
            try:
                pipe = original(task, model, *args, **kwargs)
            finally:
                pipelines_logger.removeFilter(_not_the_greedy_fallback_warning)
        if decoder is not None and getattr(pipe, "type", None) in ("ctc", "ctc_with_lm"):
            # transformers 5 replaces a given decoder by pyctcdecode's when that is installed: keep w2vlm's
            pipe.decoder = decoder
            pipe.type = "ctc_with_lm"
        return pipe

    pipeline.__w2vlm_original__ = original  # type: ignore[attr-defined]
    return pipeline


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
