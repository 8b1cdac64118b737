"""Loading CTC acoustic models: local folders, hub ids (cache / offline honoured), the embedded default.

:func:`load_model` wraps transformers' ``AutoModelForCTC`` (wav2vec2, HuBERT, WavLM, data2vec-audio,
Wav2Vec2-Conformer, Wav2Vec2-BERT, MMS, ...) and adds device/dtype selection and 8-bit quantization:
dynamic int8 linear layers on CPU (torch's eager dynamic quantization), bitsandbytes 8-bit on CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w2vlm.errors import ModelError
from w2vlm.fileio import read_json_object

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("w2vlm.model")

#: Folder of the embedded default model shipped inside the package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "model"

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

#: Files fetched for a hub id: everything the model, feature extractor, tokenizer and decoder need.
HUB_ALLOW_PATTERNS = [
    "README.md",  # the model card: its metadata names the model's language
    "*.json",
    "*.safetensors",
    "pytorch_model*.bin",
    "*.txt",
    "language_model/*",
    "*.model",
]

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline_mode() -> bool:
    """True when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE asks for no network access."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def default_model_dir() -> Path:
    """The embedded default model's folder; :class:`ModelError` when this install does not ship one."""
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise ModelError(
            f"the embedded default model is not installed: {DEFAULT_MODEL_DIR / 'config.json'} does not "
            "exist; "
            "pass model=<local folder or hub id> explicitly"
        )
    return DEFAULT_MODEL_DIR


def check_model_dir(path: Path, need_weights: bool = True) -> Path:
    """Validate a local model folder in the hub layout; raise :class:`ModelError` naming what is missing."""
    if not path.exists():
        raise ModelError(f"{path}: no such model folder")
    if not path.is_dir():
        raise ModelError(f"{path}: expected a model folder (config.json + weights), got a file")
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path}: not a model folder: config.json is missing")
    data = read_json_object(config, ModelError)
    if "model_type" not in data:
        raise ModelError(f"{config}: no 'model_type' field; expected a transformers model config")
    if need_weights and not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(
            f"{path}: no model weights found; expected one of {', '.join(WEIGHT_FILES)}",
        )
    return path


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a local path rather than a hub id (``org/name``)."""
    return text.startswith((".", "/", "~")) or "\\" in text or not _HUB_ID.match(text)


def resolve_model_path(
    path_or_hub_id: str | os.PathLike | None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> Path:
    """Turn a local folder, a hub id (``"org/name"``) or None (embedded default) into a local folder.

    Hub ids go through ``huggingface_hub.snapshot_download``: files already in the cache are used without
    network access when ``local_files_only`` is true or HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set.
    """
    if path_or_hub_id is None:
        return default_model_dir()
    text = os.fspath(path_or_hub_id)
    local = Path(text).expanduser()
    if local.exists() or isinstance(path_or_hub_id, os.PathLike) or looks_like_path(text):
        return check_model_dir(local)
    return check_model_dir(
        snapshot_folder(text, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    )


def snapshot_folder(
    repo_id: str,
    *,
    allow_patterns: list[str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> Path:
    """Local folder of a hub repository's snapshot (downloaded unless offline / ``local_files_only``)."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - part of the audio extra
        raise ModelError(f"{repo_id}: loading from the hub needs huggingface_hub (pip install 'w2vlm[audio]')") from exc
    offline = offline_mode() if local_files_only is None else local_files_only
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
            local_files_only=offline,
            allow_patterns=HUB_ALLOW_PATTERNS if allow_patterns is None else allow_patterns,
            token=token,
        )
    except LocalEntryNotFoundError as exc:
        where = f" in {cache_dir}" if cache_dir is not None else ""
        raise ModelError(
            f"{repo_id}: not a local folder, and not in the Hugging Face cache{where}"
            + (" (offline mode: no download attempted)" if offline else " and it could not be downloaded")
        ) from exc
    except HFValidationError as exc:
        raise ModelError(f"{repo_id}: neither a local folder nor a valid hub id ({exc})") from exc
    except Exception as exc:  # network errors, repository not found, gated repositories, ...
        raise ModelError(f"{repo_id}: could not fetch the model from the hub ({type(exc).__name__}: {exc})") from exc
    logger.info("hub id %s resolved to %s", repo_id, folder)
    return Path(folder)


def resolve_device(device: str | int | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → cuda when available else cpu; accepts ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ints."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int):
        device = "cpu" if device < 0 else f"cuda:{device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"device: {device!r} is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device: {device!r} requested but CUDA is not available on this machine")
    if dev.type not in {"cpu", "cuda", "mps", "xpu"}:
        raise ModelError(f"device: {device!r} is not supported; expected 'auto', 'cpu' or 'cuda[:N]'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Accept None, a torch dtype or a name (float32/fp32, float16/fp16/half, bfloat16/bf16)."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ModelError(f"dtype: {dtype} is not supported; expected float32, float16 or bfloat16")
        return dtype
    name = _DTYPE_NAMES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ModelError(f"dtype: {dtype!r} is not supported; expected float32, float16 or bfloat16")
    return getattr(torch, name)


def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a model or a processor loads, as it was after. Loading imports
    torch and transformers and builds the model: millions of objects that live on, which the collector went
    over again and again (0.65 s of the 3.3 s that `w2vlm transcribe` took for one short file)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def quiet_transformers_progress() -> Iterator[None]:
    """transformers draws a tqdm bar ("Loading weights") on stderr while it loads; w2vlm's commands show
    their own progress, so it is switched off while a model loads (and put back as it was)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@gc_paused()
def load_model(
    path_or_hub_id: str | os.PathLike | None = None,
    device: str | int | torch.device | None = "auto",
    dtype: str | torch.dtype | None = None,
    quantize: str | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> Any:
    """Load a CTC model (transformers ``AutoModelForCTC``) in eval mode on ``device``.

    ``path_or_hub_id``: a local folder in the hub layout, a hub id, or None for the embedded default model.
    ``dtype``: None (float32), "float32", "float16" or "bfloat16" (or a ``torch.dtype``), or "auto"
    (bfloat16 on CUDA where the GPU has it, else float16 there; float32 on a CPU).
    ``quantize``: None or "int8" — on CPU, dynamic int8 quantization of the linear layers (weights stored in
    int8, activations quantized on the fly); on CUDA, bitsandbytes 8-bit (``pip install 'w2vlm[gpu]'``).

    Raises :class:`~w2vlm.errors.ModelError` for missing/invalid folders, unknown hub ids, configs without a
    CTC head and bad device/dtype/quantize values.
    """
    import torch

    folder = resolve_model_path(
        path_or_hub_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
    )
    dev = resolve_device(device)
    if isinstance(dtype, str):  # "auto": bf16 (or fp16) on CUDA, fp32 elsewhere
        from w2vlm.engine.config import run_dtype_name

        dtype = run_dtype_name(dtype, quantize, dev.type)
    torch_dtype = resolve_dtype(dtype)
    if quantize not in (None, "int8"):
        raise ModelError(f"quantize: {quantize!r} is not supported; expected None or 'int8'")
    if quantize == "int8" and torch_dtype not in (None, torch.float32):
        raise ModelError(f"quantize='int8' works on float32 weights; got dtype={dtype!r} (leave dtype unset)")

    from transformers import AutoConfig, AutoModelForCTC

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder / 'config.json'}: not a usable transformers config ({exc})") from exc
    kwargs: dict[str, Any] = {_dtype_kwarg(): torch_dtype or torch.float32}
    if quantize == "int8" and dev.type == "cuda":
        kwargs.update(_bnb_kwargs(dev))
    try:
        with quiet_transformers_progress():
            model = AutoModelForCTC.from_pretrained(str(folder), config=config, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ModelError(
                f"{folder}: model_type {config.model_type!r} has no CTC head in transformers "
                "(AutoModelForCTC); expected a wav2vec2-family CTC checkpoint"
            ) from exc
        raise ModelError(f"{folder}: could not load the model ({exc})") from exc
    except Exception as exc:  # safetensors, pickle and shape errors have no common base class
        raise ModelError(
            f"{folder}: could not load the model weights; they may be corrupt or incomplete "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    model.eval()
    if quantize == "int8" and dev.type == "cuda":
        return model  # bitsandbytes placed the model already
    model.to(dev)
    if quantize == "int8":
        if dev.type != "cpu":
            raise ModelError(f"quantize='int8' is supported on cpu and cuda; got device {dev}")
        model = quantize_int8_cpu(model)
    logger.info(
        "loaded %s (%s) on %s, dtype=%s, quantize=%s",
        folder,
        type(model).__name__,
        dev,
        torch_dtype or torch.float32,
        quantize,
    )
    return model


def _bnb_kwargs(dev: torch.device) -> dict[str, Any]:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            "quantize='int8' on CUDA needs bitsandbytes; install it with pip install 'w2vlm[gpu]'"
        ) from exc
    from transformers import BitsAndBytesConfig

    index = dev.index if dev.index is not None else 0
    # keep the CTC output layer in full precision: it is small and its logits feed the decoder directly
    bnb = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["lm_head"])
    return {"quantization_config": bnb, "device_map": {"": index}}


def quantize_int8_cpu(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations quantized per batch)."""
    import torch

    quantize_dynamic = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
    if quantize_dynamic is None:
        raise ModelError(
            "quantize='int8' on CPU needs torch.ao.quantization.quantize_dynamic, which torch "
            f"{torch.__version__} lacks"
        )
    engines = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine == "none":
        for engine in ("x86", "fbgemm", "qnnpack"):
            if engine in engines:
                torch.backends.quantized.engine = engine
                break
    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated in favour of torchao; it remains the fast CPU path
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    quantized.eval()
    return quantized


def model_memory_bytes(model: Any) -> int:
    """Bytes held by a model's weights: parameters, buffers and packed int8 weights of quantized layers."""
    total = 0
    seen: set[int] = set()
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        # a quantized layer holds a LinearPackedParams submodule that holds the packed weights: count once
        if packed is None or hasattr(packed, "modules") or not hasattr(module, "_weight_bias"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weight, bias = module._weight_bias()
        total += weight.numel() * weight.element_size()
        if bias is not None:
            total += bias.numel() * bias.element_size()
    return total


# ------------------------------------------------------------------------------------------- model card

#: the model card of a folder in the hub layout; its YAML front matter says, among others, the language
MODEL_CARD = "README.md"
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}([-_][a-z0-9]{2,8})?")


def check_language(code: str, what: str = "language") -> str:
    """``code`` lower-cased if it looks like an ISO 639 code (``en``, ``pt-br``); else a ModelError."""
    value = code.strip().lower()
    if not _LANGUAGE_CODE.fullmatch(value):
        raise ModelError(f"{what}: expected an ISO 639 language code like 'en'; got {code!r}")
    return value


def model_language(folder: str | os.PathLike) -> str | None:
    """The language of the model in ``folder`` as its model card (``README.md``, hub metadata) gives it:
    ``language: en`` or a list of one code. None when the card is missing, names several languages, or
    names none."""
    card = Path(folder) / MODEL_CARD
    if not card.is_file():
        return None
    try:
        from huggingface_hub import metadata_load

        meta = metadata_load(card) or {}
    except Exception as exc:  # a card with broken YAML still leaves a usable model
        logger.warning("%s: unreadable metadata (%s); the model's language is unknown", card, exc)
        return None
    value = meta.get("language")
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if not isinstance(value, str):
        return None
    try:
        return check_language(value)
    except ModelError:
        logger.warning("%s: language %r is not an ISO 639 code; ignored", card, value)
        return None


def write_model_card(folder: str | os.PathLike, *, language: str | None, title: str, body: str = "") -> Path:
    """Write ``folder/README.md``: hub metadata (language, library, task) and a short description."""
    from huggingface_hub import ModelCardData

    from w2vlm.fileio import atomic_write_text

    data = ModelCardData(
        language=check_language(language) if language else None,
        library_name="w2vlm",
        pipeline_tag="automatic-speech-recognition",
        tags=["ctc", "wav2vec2", "n-gram"],
    )
    text = f"---\n{data.to_yaml()}\n---\n\n# {title}\n" + (f"\n{body.strip()}\n" if body.strip() else "")
    return atomic_write_text(Path(folder) / MODEL_CARD, text)


def resolve_language(requested: str | None, folder: str | os.PathLike, flag: str = "--language") -> str | None:
    """The language a model transcribes: ``requested`` (checked) or, if None, its model card's. A request
    for another language than the card names (``pt`` for an ``en`` model) is a ModelError; a region
    (``en-gb`` for ``en``) is accepted."""
    own = model_language(folder)
    if requested is None:
        return own
    language = check_language(requested, flag)
    if own is not None and not same_language(language, own):
        raise ModelError(f"{flag} {language}: the model in {folder} transcribes {own!r} (its README.md says so)")
    return language


def same_language(a: str, b: str) -> bool:
    """Whether two language codes name the same language (regions aside: ``en-gb`` and ``en``)."""
    return re.split(r"[-_]", a.lower(), maxsplit=1)[0] == re.split(r"[-_]", b.lower(), maxsplit=1)[0]
