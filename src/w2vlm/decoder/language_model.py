"""N-gram language models for shallow fusion: loading, parameters and the hub's ``language_model/`` layout."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from w2vlm import _core, limits
from w2vlm.errors import LanguageModelError

logger = logging.getLogger("w2vlm.decoder")

ATTRS_FILENAME = "attrs.json"
UNIGRAMS_FILENAME = "unigrams.txt"
LM_SUFFIXES = (".arpa", ".arpa.gz", ".bin", ".binary")
_KENLM_MAGIC = b"mmap lm "

DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.5
DEFAULT_UNK_SCORE_OFFSET = -10.0
DEFAULT_SCORE_BOUNDARY = True


def _lm_file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".arpa.gz") or name.endswith(".gz"):
        return "arpa.gz"
    if name.endswith(".bin") or name.endswith(".binary"):
        return "binary"
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_KENLM_MAGIC):
        return "binary"
    if head[:2] == b"\x1f\x8b":
        return "arpa.gz"
    return "arpa"


def load_ngram(path: str | os.PathLike[str], binary_backend: str = "native") -> _core.LMBackend:
    """Load an n-gram LM file: ARPA (plain or .gz) or a KenLM binary, natively.

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
    kind = _lm_file_kind(p)
    if kind == "binary":
        return kenlm_backend(p) if binary_backend == "kenlm" else load_kenlm_binary(p)
    if kind == "arpa.gz":
        try:
            chunks: list[bytes] = []
            total = 0
            with gzip.open(p, "rb") as f:
                while total <= limits.MAX_LM_FILE_BYTES and (chunk := f.read(1 << 24)):
                    chunks.append(chunk)
                    total += len(chunk)
            data = b"".join(chunks)
            del chunks
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise LanguageModelError(f"{p}: cannot decompress the gzipped ARPA file: {e}") from None
        except MemoryError:
            raise LanguageModelError(f"{p}: out of memory while decompressing the gzipped ARPA file") from None
        if len(data) > limits.MAX_LM_FILE_BYTES:
            raise LanguageModelError(
                f"{p}: decompresses to more than {limits.MAX_LM_FILE_BYTES:,} bytes (w2vlm.limits.MAX_LM_FILE_BYTES)"
            )
        lm = _core.NGramLM.from_arpa_bytes(data, str(p))
    else:
        lm = _core.NGramLM.from_arpa_file(str(p))
    for w in lm.warnings:
        logger.warning("%s: %s", p, w)
    logger.info("%s: loaded natively (%d-gram, %s n-grams)", p, lm.order, "/".join(map(str, lm.counts)))
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


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LanguageModelError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise LanguageModelError(f"{name} must be finite, got {value!r}")
    if abs(v) > limits.MAX_ABS_WEIGHT:
        raise LanguageModelError(
            f"{name} is {value!r}; at most {limits.MAX_ABS_WEIGHT:g} in magnitude (w2vlm.limits.MAX_ABS_WEIGHT)"
        )
    return v


class LanguageModel:
    """An n-gram LM with the fusion parameters of pyctcdecode's ``LanguageModel``.

    ``kenlm_model`` may be a path to an ARPA file (plain or .gz), a loaded :class:`w2vlm._core.NGramLM`, or a
    ``kenlm.Model`` (its file is read natively). ``unigrams`` are the known words: partial words that are not
    a prefix of one of them get ``unk_score_offset``. When no unigrams are given, the LM's own vocabulary is
    used (pyctcdecode would penalise every partial word instead).
    """

    def __init__(
        self,
        kenlm_model: Any,
        unigrams: Collection[str] | None = None,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        unk_score_offset: float = DEFAULT_UNK_SCORE_OFFSET,
        score_boundary: bool = DEFAULT_SCORE_BOUNDARY,
    ) -> None:
        self._path: Path | None = None
        if isinstance(kenlm_model, _core.LMBackend):
            ngram = kenlm_model
        elif isinstance(kenlm_model, (str, os.PathLike)):
            self._path = Path(kenlm_model)
            ngram = load_ngram(self._path)
        elif hasattr(kenlm_model, "path") and hasattr(kenlm_model, "BaseScore"):
            # a kenlm.Model: read its file natively (faster, no GIL); KenLM serves it only if that fails
            raw = kenlm_model.path
            self._path = Path(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            native: _core.LMBackend | None = None
            if self._path.exists():
                try:
                    native = (
                        load_kenlm_binary(self._path, fallback=False)
                        if _lm_file_kind(self._path) == "binary"
                        else load_ngram(self._path)
                    )
                except LanguageModelError as e:
                    logger.warning("%s; serving it through the kenlm module", e)
            ngram = native if native is not None else kenlm_backend(kenlm_model)
        else:
            raise LanguageModelError(
                f"kenlm_model must be a path, a w2vlm NGramLM or a kenlm.Model, got {type(kenlm_model).__name__}"
            )
        self._ngram = ngram
        self._unigrams: list[str] | None = None if unigrams is None else [str(u) for u in unigrams]
        if self._unigrams is not None:
            if len(self._unigrams) < 1000:
                logger.info("Only %d unigrams given. Is this small or artificial data?", len(self._unigrams))
            self._native = _core.LanguageModel(ngram, self._unigrams, False)
            known = self._native.num_unigrams
            if self._unigrams and known / len(set(self._unigrams)) < 0.1:
                logger.warning(
                    "Only %.1f%% of the unigrams are in the language model: do the vocabulary and the LM match?",
                    100.0 * known / len(set(self._unigrams)),
                )
        else:
            self._native = _core.LanguageModel(ngram, [], True)
        self.alpha = _check_float("alpha", alpha)
        self.beta = _check_float("beta", beta)
        self.unk_score_offset = _check_float("unk_score_offset", unk_score_offset)
        if not isinstance(score_boundary, bool):
            raise LanguageModelError(f"score_boundary must be a bool, got {type(score_boundary).__name__}")
        self.score_boundary = score_boundary

    # -- properties -------------------------------------------------------------------------------
    @property
    def order(self) -> int:
        return int(self._ngram.order)

    @property
    def ngram(self) -> _core.LMBackend:
        """The n-gram model the decoder uses (shared, read-only): native, or KenLM's module for binaries."""
        return self._ngram

    @property
    def backend(self) -> str:
        """ "native" (w2vlm's ARPA reader), "native-binary" (w2vlm's KenLM binary reader) or "kenlm" (KenLM's
        Python module)."""
        if isinstance(self._ngram, _core.NGramLM):
            return "native"
        return "native-binary" if isinstance(self._ngram, _core.KenlmBinaryLM) else "kenlm"

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def unigrams(self) -> list[str]:
        """The known words used for partial-word checks."""
        if self._unigrams is not None:
            return sorted({u for u in self._unigrams if u in self._ngram})
        if not isinstance(self._ngram, (_core.NGramLM, _core.KenlmBinaryLM)):
            return []
        return sorted(w for w in self._ngram.vocab() if w not in ("<unk>", "<s>", "</s>"))

    @property
    def native(self) -> _core.LanguageModel:
        return self._native

    def get_start_state(self) -> _core.LMState:
        """LM state at the start of an utterance (after ``<s>`` when score_boundary is on)."""
        return self._ngram.begin_sentence_state() if self.score_boundary else self._ngram.null_state()

    def score(self, text: str, bos: bool = True, eos: bool = True) -> float:
        """Total log10 probability of a whitespace-separated text (KenLM's ``Model.score``)."""
        if not isinstance(self._ngram, (_core.NGramLM, _core.KenlmBinaryLM)):
            raise LanguageModelError("score() is available for models read natively (ARPA or KenLM binary)")
        return float(self._ngram.score(text, bos, eos))

    def reset_params(self, **params: Any) -> None:
        """Change alpha, beta, unk_score_offset or score_boundary."""
        allowed = {"alpha", "beta", "unk_score_offset", "score_boundary"}
        unknown = set(params) - allowed
        if unknown:
            raise LanguageModelError(f"unknown language model parameters {sorted(unknown)}; allowed: {sorted(allowed)}")
        for name in ("alpha", "beta", "unk_score_offset"):
            if params.get(name) is not None:
                setattr(self, name, _check_float(name, params[name]))
        if params.get("score_boundary") is not None:
            if not isinstance(params["score_boundary"], bool):
                raise LanguageModelError(
                    f"score_boundary must be a bool, got {type(params['score_boundary']).__name__}"
                )
            self.score_boundary = params["score_boundary"]

    @property
    def serializable_attrs(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "unk_score_offset": self.unk_score_offset,
            "score_boundary": self.score_boundary,
        }

    # -- hub layout -------------------------------------------------------------------------------
    def save_to_dir(self, filepath: str | os.PathLike[str]) -> None:
        """Write ``attrs.json``, ``unigrams.txt`` and the LM file into ``filepath`` (the hub layout)."""
        d = Path(filepath)
        d.mkdir(parents=True, exist_ok=True)
        if self._path is None:
            raise LanguageModelError("this language model was not loaded from a file, so it cannot be saved")
        _atomic_write(d / ATTRS_FILENAME, json.dumps(self.serializable_attrs))
        _atomic_write(d / UNIGRAMS_FILENAME, "".join(u + "\n" for u in self.unigrams))
        target = d / self._path.name
        if target.resolve() != self._path.resolve():
            tmp = target.with_name(target.name + ".tmp")
            shutil.copy2(self._path, tmp)
            os.replace(tmp, target)

    @staticmethod
    def parse_directory_contents(filepath: str | os.PathLike[str]) -> dict[str, str | None]:
        """Find ``attrs.json``, ``unigrams.txt`` and the one LM file of a ``language_model/`` directory."""
        d = Path(filepath)
        if not d.is_dir():
            raise LanguageModelError(f"{d}: language model directory not found")
        contents = sorted(c.name for c in d.iterdir() if not c.name.startswith((".", "__")))
        lm_files = [c for c in contents if c.lower().endswith(LM_SUFFIXES)]
        if len(lm_files) != 1:
            raise LanguageModelError(
                f"{d}: expected exactly one language model file ({', '.join(LM_SUFFIXES)}), found "
                f"{lm_files or 'none'} among {contents}"
            )
        return {
            "json_attrs": str(d / ATTRS_FILENAME) if ATTRS_FILENAME in contents else None,
            "unigrams": str(d / UNIGRAMS_FILENAME) if UNIGRAMS_FILENAME in contents else None,
            "kenlm": str(d / lm_files[0]),
        }

    @classmethod
    def load_from_dir(cls, filepath: str | os.PathLike[str], unigram_encoding: str | None = None) -> LanguageModel:
        """Load a ``language_model/`` directory of the hub layout."""
        files = cls.parse_directory_contents(filepath)
        attrs: dict[str, Any] = {}
        if files["json_attrs"] is not None:
            try:
                attrs = json.loads(Path(files["json_attrs"]).read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise LanguageModelError(f"{files['json_attrs']}: not valid JSON ({e})") from None
            if not isinstance(attrs, dict):
                raise LanguageModelError(f"{files['json_attrs']}: expected a JSON object")
            unknown = set(attrs) - {"alpha", "beta", "unk_score_offset", "score_boundary"}
            if unknown:
                raise LanguageModelError(
                    f"{files['json_attrs']}: unknown keys {sorted(unknown)}; expected alpha, beta, "
                    "unk_score_offset, score_boundary"
                )
        unigrams = None
        if files["unigrams"] is not None:
            p = Path(files["unigrams"])
            unigrams = (
                load_unigrams(p)
                if unigram_encoding is None
                else [w.strip() for w in p.read_text(encoding=unigram_encoding).splitlines() if w.strip()]
            )
        return cls(files["kenlm"], unigrams, **attrs)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
