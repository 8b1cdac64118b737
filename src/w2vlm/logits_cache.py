"""The acoustic half of ``eval`` and ``tune``: logits per utterance, computed once by the model and cached on
disk (keyed by the model's files, the settings that change logits and the audio's content), so that
every decoding setting after the first reuses them without loading the model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.errors import ModelError
from w2vlm.fileio import atomic_open
from w2vlm.manifest import ManifestItem

logger = logging.getLogger("w2vlm.logits_cache")

#: Bump when the cache's file format or the way logits are computed changes.
CACHE_FORMAT = "w2vlm-logits-v1"

ProgressFn = Callable[[str, int, int], None]

# ------------------------------------------------------------------------------------------- logits cache


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_cache_key(
    model_dir: Path,
    *,
    dtype: str | None = None,
    quantize: str | None = None,
    chunk_length_s: float | None = None,
    stride_length_s: float | Sequence[float] | None = None,
) -> str:
    """A key for the logits a model folder produces with these settings: the content of its config,
    weights and feature-extractor files plus the settings."""
    from w2vlm.model import WEIGHT_FILES

    h = hashlib.sha256(CACHE_FORMAT.encode())
    names = ["config.json", "preprocessor_config.json", "processor_config.json", *WEIGHT_FILES]
    found = False
    for name in names:
        f = model_dir / name
        if f.is_file():
            h.update(name.encode() + b"\0" + file_sha256(f).encode() + b"\0")
            found = found or name in WEIGHT_FILES
        if name.endswith(".index.json") and f.is_file():  # sharded weights: hash the shards too
            try:
                shards = sorted(set(json.loads(f.read_text(encoding="utf-8")).get("weight_map", {}).values()))
            except (json.JSONDecodeError, AttributeError):
                shards = []
            for shard in shards:
                if (model_dir / shard).is_file():
                    h.update(shard.encode() + b"\0" + file_sha256(model_dir / shard).encode() + b"\0")
    if not found:
        raise ModelError(f"{model_dir}: no model weights found to key the logits cache on")
    stride = list(stride_length_s) if isinstance(stride_length_s, (list, tuple)) else stride_length_s
    settings = {"dtype": dtype, "quantize": quantize, "chunk_length_s": chunk_length_s, "stride_length_s": stride}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$W2VLM_CACHE_DIR/logits``, else ``$XDG_CACHE_HOME/w2vlm/logits``, else ``~/.cache/w2vlm/logits``."""
    env = os.environ.get("W2VLM_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "logits"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "w2vlm" / "logits"


class LogitsCache:
    """Per-utterance logits on disk: ``ROOT/<model key[:24]>/<audio sha256[:2]>/<audio sha256>.npz``."""

    def __init__(self, root: str | os.PathLike[str], model_key: str) -> None:
        self.root = Path(root).expanduser()
        self.folder = self.root / model_key[:24]
        self.model_key = model_key

    def _path(self, audio_key: str) -> Path:
        return self.folder / audio_key[:2] / f"{audio_key}.npz"

    def get(self, audio_key: str) -> tuple[np.ndarray, float] | None:
        """(logits, duration in seconds) stored for this audio content, or None."""
        path = self._path(audio_key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["model_key"]) != self.model_key:
                    return None
                return np.asarray(data["logits"], dtype=np.float32), float(data["duration_s"])
        except (OSError, ValueError, KeyError, EOFError) as exc:
            logger.warning("%s: unreadable cache entry, computing again (%s)", path, exc)
            return None

    def put(self, audio_key: str, logits: np.ndarray, duration_s: float) -> None:
        path = self._path(audio_key)
        with atomic_open(path, "wb") as f:
            np.savez(
                f,
                logits=np.asarray(logits, dtype=np.float32),
                duration_s=np.float64(duration_s),
                model_key=np.str_(self.model_key),
            )


# ------------------------------------------------------------------------------------------ acoustic model


@dataclass
class UtteranceLogits:
    """An utterance's logits (None when it failed), its audio duration, where they came from."""

    item: ManifestItem
    logits: np.ndarray | None
    duration_s: float = 0.0
    cached: bool = False
    seconds: float = 0.0  # acoustic model time (audio loading included) when computed in this run
    error: str | None = None


@dataclass
class AcousticSettings:
    """How logits are computed (all but ``device`` and ``batch_size`` are part of the cache key)."""

    device: str = "auto"
    dtype: str | None = None
    quantize: str | None = None
    chunk_length_s: float | None = None
    stride_length_s: float | Sequence[float] | None = None
    batch_size: int = 1


def logits_dtype(settings: AcousticSettings) -> str | None:
    """The dtype ``settings`` compute logits in, as the cache keys it: ``"auto"`` resolved for the device as
    :func:`~w2vlm.model.load_model` does, and float32 (the default) as None, so that one entry serves both."""
    from w2vlm.engine.config import run_dtype_name

    dtype, device = settings.dtype, settings.device
    device_type = "cpu"  # torch is imported only where the device must be looked up
    on_cpu = isinstance(device, str) and device.startswith("cpu")
    if isinstance(dtype, str) and dtype.lower() == "auto" and not on_cpu:
        try:
            from w2vlm.model import resolve_device

            device_type = resolve_device(device).type
        except ImportError:  # no torch: only logits already cached can be used, and those were computed on a CPU
            pass
    dtype = run_dtype_name(dtype, settings.quantize, device_type)
    return None if dtype in (None, "float32") else dtype


def collect_logits(
    items: Sequence[ManifestItem],
    model_dir: Path,
    settings: AcousticSettings | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    timings: dict[str, float] | None = None,
) -> list[UtteranceLogits]:
    """Logits of every item, from the cache when present, else from the model (loaded only if needed).

    A failing item (missing/corrupt audio, ...) gets ``error`` set and ``logits`` None; the others go on.
    """
    settings = settings or AcousticSettings()
    timings = timings if timings is not None else {}
    cache = None
    if use_cache:
        key = model_cache_key(
            model_dir,
            dtype=logits_dtype(settings),
            quantize=settings.quantize,
            chunk_length_s=settings.chunk_length_s,
            stride_length_s=settings.stride_length_s,
        )
        cache = LogitsCache(cache_dir if cache_dir is not None else default_cache_dir(), key)
    runner = _LazyRunner(model_dir, settings, timings)
    out: list[UtteranceLogits] = []
    for n, item in enumerate(items):
        if progress:
            progress("logits", n, len(items))
        out.append(_logits_of(item, cache, runner))
    if progress:
        progress("logits", len(items), len(items))
    return out


class _LazyRunner:
    """Loads the model on first use: a run whose logits are all cached never touches it."""

    def __init__(self, model_dir: Path, settings: AcousticSettings, timings: dict[str, float]) -> None:
        self.model_dir = model_dir
        self.settings = settings
        self.timings = timings
        self._runner: Any = None

    def get(self) -> Any:
        if self._runner is None:
            from w2vlm.model import load_model
            from w2vlm.pipeline import CTCLogitsRunner
            from w2vlm.processor_parts import load_feature_extractor

            t0 = time.perf_counter()
            s = self.settings
            try:
                model = load_model(self.model_dir, device=s.device, dtype=s.dtype, quantize=s.quantize)
                self._runner = CTCLogitsRunner(model, load_feature_extractor(self.model_dir))
            except ModelError:
                raise
            except Exception as exc:  # e.g. torch missing: a problem of the model, not of one audio file
                raise ModelError(
                    f"{self.model_dir}: could not load the acoustic model ({type(exc).__name__}: {exc})"
                ) from exc
            self.timings["model_load"] = self.timings.get("model_load", 0.0) + time.perf_counter() - t0
        return self._runner


def _logits_of(item: ManifestItem, cache: LogitsCache | None, lazy: _LazyRunner) -> UtteranceLogits:
    from w2vlm.audio import audio_duration

    if item.error is not None:
        return UtteranceLogits(item, None, error=item.error)
    path = item.audio
    try:
        if not path.exists():
            return UtteranceLogits(item, None, error=f"{path}: no such audio file")
        if not path.is_file():
            return UtteranceLogits(item, None, error=f"{path}: not a file")
        audio_key = file_sha256(path) if cache is not None else ""
        if cache is not None:
            hit = cache.get(audio_key)
            if hit is not None:
                return UtteranceLogits(item, hit[0], duration_s=hit[1], cached=True)
        runner = lazy.get()
        s = lazy.settings
        t0 = time.perf_counter()
        (logits,) = runner.compute_logits([str(path)], s.chunk_length_s, s.stride_length_s, s.batch_size)
        seconds = time.perf_counter() - t0
        duration = audio_duration(path)
        if duration is None:
            duration = logits.shape[0] * runner.ratio / runner.sampling_rate
        if cache is not None:
            cache.put(audio_key, logits, duration)
        return UtteranceLogits(item, logits, duration_s=float(duration), seconds=seconds)
    except ModelError:
        raise  # the model itself cannot be loaded: nothing else would work either
    except Exception as exc:  # one bad file must not stop the evaluation; the error is recorded
        logger.info("%s: %s", item.id, exc)
        return UtteranceLogits(item, None, error=f"{type(exc).__name__}: {exc}")
