"""Reading n-gram LM files (ARPA, gzipped ARPA, KenLM binaries) and unigram lists into native models."""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path
from typing import Any

from w2vlm import _core, limits
from w2vlm.errors import LanguageModelError

logger = logging.getLogger("w2vlm.decoder")

ATTRS_FILENAME = "attrs.json"
UNIGRAMS_FILENAME = "unigrams.txt"
#: w2vlm's own binary form of an n-gram LM (``w2vlm convert-lm``, ``build-lm --binary``).
W2VLM_BINARY_SUFFIX = ".w2vlm"
LM_SUFFIXES = (".arpa", ".arpa.gz", ".bin", ".binary", W2VLM_BINARY_SUFFIX)
_KENLM_MAGIC = b"mmap lm "
_W2VLM_MAGIC = b"w2vlm ngram bin\n"


def lm_file_kind(path: Path) -> str:
    """ "arpa", "arpa.gz", "binary" (a KenLM binary) or "w2vlm" (w2vlm's binary form), from the first bytes
    and the name."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_W2VLM_MAGIC):
        return "w2vlm"
    name = path.name.lower()
    if name.endswith(".arpa.gz") or name.endswith(".gz"):
        return "arpa.gz"
    if name.endswith(".bin") or name.endswith(".binary") or head.startswith(_KENLM_MAGIC):
        return "binary"
    if name.endswith(W2VLM_BINARY_SUFFIX):
        return "w2vlm"
    if head[:2] == b"\x1f\x8b":
        return "arpa.gz"
    return "arpa"


def load_ngram(path: str | os.PathLike[str], binary_backend: str = "native") -> _core.LMBackend:
    """Load an n-gram LM file: ARPA (plain or .gz), w2vlm's binary form or a KenLM binary, natively.

    ``binary_backend`` picks the reader of KenLM binaries: ``"native"`` (w2vlm's own reader; if it cannot read
    the file, e.g. a binary built without vocabulary strings, and the ``kenlm`` module is installed, KenLM
    serves it instead) or ``"kenlm"`` (always KenLM's Python module).
    """
    if binary_backend not in ("native", "kenlm"):
        raise LanguageModelError(f"binary_backend must be 'native' or 'kenlm', got {binary_backend!r}")
    p = Path(path)
    if not p.exists():
        raise LanguageModelError(f"{p}: language model file not found")
    if p.is_dir():
        raise LanguageModelError(f"{p}: is a directory, expected an .arpa/.arpa.gz/.bin file")
    size = p.stat().st_size
    if size > limits.MAX_LM_FILE_BYTES:
        raise LanguageModelError(
            f"{p}: the file has {size:,} bytes, more than the {limits.MAX_LM_FILE_BYTES:,} accepted "
            "(w2vlm.limits.MAX_LM_FILE_BYTES)"
        )
    kind = lm_file_kind(p)
    if kind == "binary":
        return kenlm_backend(p) if binary_backend == "kenlm" else load_kenlm_binary(p)
    if kind == "w2vlm":
        lm = _core.NGramLM.from_binary_file(str(p))
        logger.info("%s: w2vlm binary read (%d-gram, %s n-grams)", p, lm.order, "/".join(map(str, lm.counts)))
        return lm
    # both stream: the text is never held whole
    lm = load_gzipped_arpa(p) if kind == "arpa.gz" else _core.NGramLM.from_arpa_file(str(p))
    for w in lm.warnings:
        logger.warning("%s: %s", p, w)
    logger.info("%s: loaded natively (%d-gram, %s n-grams)", p, lm.order, "/".join(map(str, lm.counts)))
    return lm


#: Bytes decompressed from a gzipped ARPA file and fed to the native parser at a time.
GZ_BLOCK_BYTES = 4 << 20
#: A gzipped ARPA file is expected to hold at most this many times its size in text (gzip -9 packs ARPA text 4-6
#: times): up to that, the tables are sized by the file's counts at once; beyond it they grow as lines arrive.
GZ_EXPECTED_RATIO = 16


def load_gzipped_arpa(path: Path) -> _core.NGramLM:
    """Decompress a gzipped ARPA file block by block into the native parser: the text is never held whole (the
    parser keeps only the model and a line cut by a block's end; it runs with the GIL released)."""
    try:
        expect = min(path.stat().st_size * GZ_EXPECTED_RATIO, limits.MAX_LM_FILE_BYTES)
    except OSError:
        expect = 0
    parser = _core.ArpaParser(str(path), expect_size=expect)
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(GZ_BLOCK_BYTES):
                total += len(chunk)
                if total > limits.MAX_LM_FILE_BYTES:
                    raise LanguageModelError(
                        f"{path}: decompresses to more than {limits.MAX_LM_FILE_BYTES:,} bytes "
                        "(w2vlm.limits.MAX_LM_FILE_BYTES)"
                    )
                parser.feed(chunk)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise LanguageModelError(f"{path}: cannot decompress the gzipped ARPA file: {e}") from None
    except MemoryError:
        raise LanguageModelError(f"{path}: out of memory while decompressing the gzipped ARPA file") from None
    return parser.finish()


def save_ngram_binary(lm: _core.NGramLM, path: str | os.PathLike[str]) -> Path:
    """Write a loaded model in w2vlm's binary form (atomically): ``load_ngram`` reads it back in a fraction of
    the ARPA file's time, with no parsing. The file is w2vlm's own (KenLM and pyctcdecode cannot read it)."""
    from w2vlm.fileio import atomic_path

    if not isinstance(lm, _core.NGramLM):
        raise LanguageModelError(
            f"only a model read from an ARPA file (w2vlm NGramLM) can be saved in binary form, got {type(lm).__name__}"
        )
    with atomic_path(path) as tmp:
        lm.save_binary(str(tmp))
    return Path(path)


def binary_path_for(arpa: str | os.PathLike[str]) -> Path:
    """Where the binary form of an ARPA file goes by default: ``lm.arpa`` / ``lm.arpa.gz`` -> ``lm.w2vlm``."""
    p = Path(arpa)
    name = p.name
    for suffix in (".arpa.gz", ".gz", ".arpa"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + W2VLM_BINARY_SUFFIX)


def find_lm_file(folder: str | os.PathLike[str]) -> Path:
    """The language model file of a folder (a ``language_model/`` folder, or what ``build-lm`` wrote): its one
    file of :data:`LM_SUFFIXES`, or, where ``convert-lm`` has put the binary form beside the ARPA file it was made
    from (``lm.arpa`` or ``lm.arpa.gz`` and ``lm.w2vlm``), the binary form (loaded in a fraction of the time)."""
    d = Path(folder)
    models = sorted(p for p in d.iterdir() if p.is_file() and p.name.lower().endswith(LM_SUFFIXES))
    binary = [p for p in models if p.name.lower().endswith(W2VLM_BINARY_SUFFIX)]
    if (
        len(models) == 2
        and len(binary) == 1
        and binary_path_for(next(p for p in models if p not in binary)) == binary[0]
    ):
        models = binary
    if len(models) != 1:
        raise LanguageModelError(
            f"{d}: expected one language model file ({', '.join(LM_SUFFIXES)}), or an ARPA file and the "
            f"{W2VLM_BINARY_SUFFIX} that convert-lm made from it; found {[p.name for p in models] or 'none'}"
        )
    return models[0]


def lm_file_of(path: str | os.PathLike[str], name: str = "lm") -> Path:
    """The language model file ``path`` names: the file itself, or the one of a folder (:func:`find_lm_file`; a
    model folder's ``language_model/``); a :class:`LanguageModelError` naming ``name`` when there is none."""
    p = Path(path).expanduser()
    if p.is_dir():
        return find_lm_file(p / "language_model" if (p / "language_model").is_dir() else p)
    if not p.is_file():
        raise LanguageModelError(
            f"{name}: {p}: no such language model file ({', '.join(LM_SUFFIXES)}) or folder holding one"
        )
    return p


def convert_to_binary(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> _core.NGramLM:
    """Read an ARPA file (plain or .gz) and write it in w2vlm's binary form; returns the model."""
    lm = load_ngram(source)
    if not isinstance(lm, _core.NGramLM):
        raise LanguageModelError(f"{source}: a KenLM binary cannot be converted; convert the ARPA file it came from")
    save_ngram_binary(lm, target)
    return lm


def load_kenlm_binary(path: str | os.PathLike[str], fallback: bool = True) -> _core.LMBackend:
    """Read a KenLM binary (probing or trie, quantized or not) with w2vlm's native reader, no KenLM needed.

    With ``fallback``, binaries the native reader cannot use are served by the ``kenlm`` module when it is
    installed.
    """
    p = Path(path)
    try:
        lm = _core.KenlmBinaryLM.from_file(str(p))
    except LanguageModelError as e:
        if not fallback:
            raise
        try:
            import kenlm  # noqa: F401
        except ImportError:
            raise e from None
        logger.warning("%s; serving it through the kenlm module instead", e)
        try:
            return kenlm_backend(p)
        except LanguageModelError:
            raise e from None
    logger.info(
        "%s: KenLM binary read natively (%s, %d-gram, %s n-grams)",
        p,
        lm.model_type_name,
        lm.order,
        "/".join(map(str, lm.counts)),
    )
    return lm


def kenlm_backend(model: Any) -> _core.KenlmBackend:
    """An LM served by KenLM's Python module (``pip install w2vlm[kenlm]``): a path or a ``kenlm.Model``."""
    try:
        import kenlm
    except ImportError:
        raise LanguageModelError(
            f"{model}: KenLM binary language models need the kenlm module (pip install 'w2vlm[kenlm]'), "
            "or pass the ARPA file the binary was built from"
        ) from None
    if isinstance(model, (str, os.PathLike)):
        try:
            model = kenlm.Model(str(model))
        except (OSError, RuntimeError) as e:
            raise LanguageModelError(f"{model}: KenLM could not load this file: {e}") from None
    logger.info("%s: served by the kenlm module (%d-gram)", getattr(model, "path", model), model.order)
    return _core.KenlmBackend(model, kenlm.State)


def load_unigrams(path: str | os.PathLike[str]) -> list[str]:
    """Read a ``unigrams.txt`` (one word a line)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LanguageModelError(f"{p}: unigrams file not found") from None
    except UnicodeDecodeError as e:
        raise LanguageModelError(f"{p}: unigrams file is not UTF-8 text ({e})") from None
    return [w for w in (line.strip() for line in text.splitlines()) if w]
