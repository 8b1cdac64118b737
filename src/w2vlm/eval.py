"""Evaluation of a CTC model with and without its n-gram LM: WER/CER, per-utterance errors, real-time factor.

A manifest lists audio files with their reference text:

* JSONL, one ``{"audio": "wav/1.wav", "text": "the reference"}`` a line (``audio`` may also be called
  ``audio_filepath``, ``path`` or ``file``; ``text`` may be ``sentence``, ``transcript``, ``transcription``
  or ``reference``; an optional ``id``);
* CSV (or TSV) with a header naming the same columns;
* a directory of audio files, each with a ``.txt`` of the same name holding its reference.

Other fields of a JSONL line (or other CSV columns), such as a speaker or a recording condition, are kept
with each utterance; :meth:`EvalReport.breakdown` (``w2vlm eval --by FIELD``) scores each of their values
apart. Relative audio paths are relative to the manifest's folder. A missing or unreadable audio file (or a missing
``.txt`` in a directory) is an error of that utterance only: it is recorded in the report and the others are
scored. A malformed manifest (bad JSON, no audio/text column) raises :class:`~w2vlm.errors.ManifestError`.

Logits are cached on disk (``npz`` per utterance) under a key made of the model's files (config, weights,
feature extractor settings), the dtype/quantization, the chunking settings and the audio file's content, so
decoding again with other LM settings (:mod:`w2vlm.tune`) never runs the acoustic model twice.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.defaults import DEFAULT_BEAM_WIDTH, DEFAULT_MIN_TOKEN_LOGP, DEFAULT_PRUNE_LOGP
from w2vlm.engine.alignment import greedy_words
from w2vlm.errors import LanguageModelError, ManifestError, ModelError
from w2vlm.fileio import atomic_open

logger = logging.getLogger("w2vlm.eval")

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".wma", ".aiff", ".aif")
AUDIO_KEYS = ("audio", "audio_filepath", "path", "file", "filename")
TEXT_KEYS = ("text", "sentence", "transcript", "transcription", "reference")

#: Bump when the cache's file format or the way logits are computed changes.
CACHE_FORMAT = "w2vlm-logits-v1"

ProgressFn = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------------- manifests


@dataclass
class ManifestItem:
    """One utterance of a manifest. ``error`` is set when the manifest itself already tells it is unusable."""

    id: str
    audio: Path
    reference: str
    error: str | None = None
    #: the manifest's other fields for this utterance (JSON scalars; CSV: strings), e.g. a speaker
    fields: dict[str, Any] = field(default_factory=dict)


def _other_fields(rec: dict[str, Any], used: Sequence[str | None]) -> dict[str, Any]:
    """The fields of a manifest record other than its audio, text and id, scalars only."""
    skip = {k for k in used if k is not None} | {"id"}
    return {k: v for k, v in rec.items() if k not in skip and (v is None or isinstance(v, (str, int, float, bool)))}


def _pick(record: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in record and record[key] is not None:
            return record[key]
    return None


def _resolve(base: Path, audio: str) -> Path:
    p = Path(audio).expanduser()
    return p if p.is_absolute() else base / p


def _item_id(base: Path, audio: Path, given: Any) -> str:
    if given is not None and str(given):
        return str(given)
    try:
        return audio.relative_to(base).as_posix()
    except ValueError:
        return str(audio)


def read_manifest(path: str | os.PathLike[str], *, require_text: bool = True) -> list[ManifestItem]:
    """Read a JSONL/CSV/TSV manifest or a directory of audio + ``.txt`` pairs (see the module docstring).

    With ``require_text=False`` (transcription rather than scoring) the reference text is optional in
    JSONL/CSV manifests (``""`` when absent)."""
    p = Path(path).expanduser()
    if p.is_dir():
        items = _read_directory(p)
    elif not p.is_file():
        raise ManifestError(f"{p}: manifest not found (expected a .jsonl/.csv/.tsv file or a directory)")
    else:
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            items = _read_jsonl(p, require_text)
        elif suffix in (".csv", ".tsv"):
            items = _read_csv(p, "\t" if suffix == ".tsv" else ",", require_text)
        else:
            with open(p, encoding="utf-8", errors="replace") as f:
                head = f.read(4096).lstrip()
            if head.startswith("{"):
                items = _read_jsonl(p, require_text)
            else:
                items = _read_csv(p, "\t" if "\t" in head.split("\n", 1)[0] else ",", require_text)
    if not items:
        raise ManifestError(f"{p}: the manifest lists no utterances")
    return items


def _read_jsonl(path: Path, require_text: bool = True) -> list[ManifestItem]:
    base = path.parent
    items: list[ManifestItem] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        audio = _pick(rec, AUDIO_KEYS)
        text = _pick(rec, TEXT_KEYS)
        if not isinstance(audio, str) or not audio:
            raise ManifestError(
                f"{path}:{lineno}: no audio path; expected a string field named one of {list(AUDIO_KEYS)}"
            )
        if text is None and not require_text:
            text = ""
        if not isinstance(text, str):
            raise ManifestError(
                f"{path}:{lineno}: no reference text; expected a string field named one of {list(TEXT_KEYS)}"
            )
        audio_path = _resolve(base, audio)
        used = [next((k for k in keys if rec.get(k) is not None), None) for keys in (AUDIO_KEYS, TEXT_KEYS)]
        item_id = _item_id(base, audio_path, rec.get("id"))
        items.append(ManifestItem(item_id, audio_path, text, fields=_other_fields(rec, used)))
    return items


def _read_csv(path: Path, delimiter: str, require_text: bool = True) -> list[ManifestItem]:
    base = path.parent
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            audio_col = next((k for k in AUDIO_KEYS if k in header), None)
            text_col = next((k for k in TEXT_KEYS if k in header), None)
            if audio_col is None or (text_col is None and require_text):
                raise ManifestError(
                    f"{path}: the header {header} needs an audio column (one of {list(AUDIO_KEYS)}) and a text "
                    f"column (one of {list(TEXT_KEYS)})"
                )
            items = []
            for lineno, row in enumerate(reader, 2):
                rec = {(k or "").strip().lower(): v for k, v in row.items()}
                audio = (rec.get(audio_col) or "").strip()
                text = rec.get(text_col) if text_col is not None else ""
                if not audio:
                    raise ManifestError(f"{path}:{lineno}: column '{audio_col}' is empty")
                if text is None:
                    raise ManifestError(f"{path}:{lineno}: column '{text_col}' is missing")
                audio_path = _resolve(base, audio)
                item_id = _item_id(base, audio_path, rec.get("id"))
                fields = _other_fields(rec, [audio_col, text_col])
                items.append(ManifestItem(item_id, audio_path, text, fields=fields))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a valid CSV file ({exc})") from None
    return items


def _read_directory(folder: Path) -> list[ManifestItem]:
    items = []
    for audio in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        txt = audio.with_suffix(".txt")
        ident = audio.relative_to(folder).as_posix()
        if not txt.is_file():
            items.append(ManifestItem(ident, audio, "", error=f"{txt}: reference text file not found"))
            continue
        try:
            text = txt.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            items.append(ManifestItem(ident, audio, "", error=f"{txt}: cannot read the reference ({exc})"))
            continue
        items.append(ManifestItem(ident, audio, " ".join(text.split())))
    if not items:
        raise ManifestError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found in this directory")
    return items


# ---------------------------------------------------------------------------------------------- scoring

_NON_WORD = re.compile(r"[^\w\s'⁇]|_")


def normalize_text(text: str) -> str:
    """Text as it is scored: Unicode NFKC, lowercase, punctuation removed (apostrophes inside words and the
    decoder's unknown token ``⁇`` kept), whitespace collapsed."""
    # (NFKC would turn ⁇ into "??": keep it out of the normalization)
    text = "⁇".join(unicodedata.normalize("NFKC", part) for part in text.split("⁇"))
    text = text.lower().replace("’", "'")
    text = _NON_WORD.sub(" ", text)
    words = (w.strip("'") for w in text.split())
    return " ".join(w for w in words if w)


@dataclass
class ErrorCounts:
    """Edit operations of hypotheses against references (words or characters)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def rate(self) -> float:
        """Errors over reference length (an empty reference: 0 without errors, else 1 per error)."""
        if self.reference_length == 0:
            return float(self.errors)
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.hits + other.hits,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "errors": self.errors,
            "reference_length": self.reference_length,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
        }


def _jiwer() -> Any:
    try:
        import jiwer
    except ImportError:  # pragma: no cover - part of the eval extra
        raise ModelError("evaluation needs jiwer: pip install 'w2vlm[eval]'") from None
    return jiwer


def word_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Word-level edit counts (whitespace-separated words, texts as given)."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref or not hyp:
        return ErrorCounts(deletions=len(ref), insertions=len(hyp))
    out = _jiwer().process_words(" ".join(ref), " ".join(hyp))
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)


def char_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Character-level edit counts (spaces count as characters; runs of whitespace as one space)."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    if not ref or not hyp:
        return ErrorCounts(deletions=len(ref), insertions=len(hyp))
    out = _jiwer().process_characters(ref, hyp)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)


def corpus_errors(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[ErrorCounts, ErrorCounts]:
    """Summed (word, character) edit counts over pairs of texts (as given; normalize them first)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    words, chars = ErrorCounts(), ErrorCounts()
    for ref, hyp in zip(references, hypotheses, strict=True):
        words = words + word_errors(ref, hyp)
        chars = chars + char_errors(ref, hyp)
    return words, chars


# ------------------------------------------------------------------------------------------------ decoding


def greedy_decode(logits: np.ndarray, labels: Sequence[str], is_bpe: bool = False) -> str:
    """Best-path CTC decoding: the argmax token per frame, repeats merged, blanks and special labels dropped
    (the engine's :func:`~w2vlm.engine.alignment.greedy_words`).

    ``labels`` are decoder labels (``""`` blank, ``" "`` word delimiter; BPE labels start words with ``▁``).
    """
    if logits.shape[0] == 0:
        return ""
    if logits.shape[1] != len(labels):
        raise ModelError(f"logits have {logits.shape[1]} columns but the alphabet has {len(labels)} labels")
    return greedy_words(np.asarray(logits), labels, is_bpe)[0]


def load_eval_decoder(model_dir: Path, lm: str | os.PathLike[str] | None, use_lm: bool) -> Any:
    """The beam-search decoder for ``model_dir``: its alphabet with the LM of ``lm`` (an ARPA file, a
    ``language_model/`` folder or a model folder holding one) or else the model's own ``language_model/``.
    Without ``use_lm`` the decoder has no LM."""
    from w2vlm.decoder import Alphabet, BeamSearchDecoderCTC

    if (model_dir / "alphabet.json").is_file():
        base = BeamSearchDecoderCTC.load_from_dir(model_dir) if use_lm and lm is None else None
        if base is not None:
            return base
        from w2vlm.decoder import load_alphabet_json

        alphabet = load_alphabet_json(model_dir / "alphabet.json")
    else:
        from w2vlm.processor import load_tokenizer, tokenizer_labels

        alphabet = Alphabet.build_alphabet(tokenizer_labels(load_tokenizer(model_dir)))
    language_model = None
    if use_lm and lm is not None:
        language_model = load_language_model(lm)
    return BeamSearchDecoderCTC(alphabet, language_model)


def load_language_model(lm: str | os.PathLike[str]) -> Any:
    """An LM from an ARPA/KenLM file (with ``unigrams.txt``/``attrs.json`` beside it when present), a
    ``language_model/`` folder, or a model folder that has one."""
    from w2vlm.decoder import LanguageModel, load_unigrams

    p = Path(lm).expanduser()
    if p.is_dir():
        if (p / "language_model").is_dir():
            p = p / "language_model"
        return LanguageModel.load_from_dir(p)
    if not p.is_file():
        raise LanguageModelError(f"{p}: no such language model (expected an ARPA file or a language_model/ folder)")
    unigrams_file = p.parent / "unigrams.txt"
    unigrams = load_unigrams(unigrams_file) if unigrams_file.is_file() else None
    attrs: dict[str, Any] = {}
    attrs_file = p.parent / "attrs.json"
    if attrs_file.is_file():
        try:
            attrs = json.loads(attrs_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise LanguageModelError(f"{attrs_file}: not valid JSON ({exc})") from None
        if not isinstance(attrs, dict):
            raise LanguageModelError(f"{attrs_file}: expected a JSON object")
        attrs = {k: v for k, v in attrs.items() if k in ("alpha", "beta", "unk_score_offset", "score_boundary")}
    return LanguageModel(p, unigrams, **attrs)


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
            dtype=settings.dtype,
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
            from w2vlm.processor import load_feature_extractor

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


# ------------------------------------------------------------------------------------------------ evaluate


@dataclass
class DecodeSettings:
    """Beam search settings; ``alpha``/``beta``/``unk_score_offset`` None keep the LM's own (attrs.json)."""

    beam_width: int = DEFAULT_BEAM_WIDTH
    beam_prune_logp: float = DEFAULT_PRUNE_LOGP
    token_min_logp: float = DEFAULT_MIN_TOKEN_LOGP
    alpha: float | None = None
    beta: float | None = None
    unk_score_offset: float | None = None
    num_threads: int | None = None


@dataclass
class Hypothesis:
    """One system's output for an utterance, with its errors against the (normalized) reference."""

    text: str
    words: ErrorCounts
    chars: ErrorCounts

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "wer": self.words.rate,
            "cer": self.chars.rate,
            "word_errors": self.words.to_dict(),
            "char_errors": self.chars.to_dict(),
        }


@dataclass
class UtteranceResult:
    id: str
    audio: str
    reference: str
    duration_s: float = 0.0
    cached: bool = False
    error: str | None = None
    hypotheses: dict[str, Hypothesis] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)  # the manifest's other fields (see ManifestItem)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "audio": self.audio,
            "reference": self.reference,
            "duration_s": round(self.duration_s, 3),
            "cached": self.cached,
            "error": self.error,
            **({"fields": self.fields} if self.fields else {}),
            **{name: hyp.to_dict() for name, hyp in self.hypotheses.items()},
        }


Totals = dict[str, dict[str, ErrorCounts]]  # system -> {"words": ..., "chars": ...}


def _new_totals(systems: Sequence[str]) -> Totals:
    return {s: {"words": ErrorCounts(), "chars": ErrorCounts()} for s in systems}


def _add_hypothesis(totals: Totals, system: str, hyp: Hypothesis) -> None:
    totals[system]["words"] = totals[system]["words"] + hyp.words
    totals[system]["chars"] = totals[system]["chars"] + hyp.chars


@dataclass(frozen=True)
class GroupBy:
    """How :meth:`EvalReport.breakdown` groups utterances: by the value of a manifest field, numbers
    optionally in bins of ``width`` (``"snr_db:10"``: 0-10, 10-20, ...)."""

    field: str
    width: float | None = None

    @classmethod
    def parse(cls, spec: str) -> GroupBy:
        """``"FIELD"`` or ``"FIELD:WIDTH"``; raises :class:`ManifestError` naming a malformed one."""
        name, sep, width = spec.partition(":")
        name = name.strip()
        if not name:
            raise ManifestError(f"--by {spec!r}: expected FIELD or FIELD:WIDTH (a manifest field)")
        if not sep:
            return cls(name)
        try:
            value = float(width)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise ManifestError(f"--by {spec!r}: the bin width {width.strip()!r} is not a positive number")
        return cls(name, value)

    @classmethod
    def of(cls, spec: GroupBy | str) -> GroupBy:
        """A :class:`GroupBy` as it is, or parsed from its ``"FIELD[:WIDTH]"`` spec."""
        return cls.parse(spec) if isinstance(spec, str) else spec

    def __str__(self) -> str:
        return self.field if self.width is None else f"{self.field}:{self.width:g}"

    def key(self, fields: dict[str, Any], utterance: str) -> tuple[int, float, str]:
        """(kind, number, label) of an utterance's group, in the order groups are listed: numbers (or bins)
        first by value, then strings, then utterances without the field ("(none)")."""
        value = fields.get(self.field)
        if value is None:
            return (2, 0.0, "(none)")
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.width is not None and isinstance(value, str):  # CSV columns are text
            with contextlib.suppress(ValueError):
                value, numeric = float(value), True
        if self.width is not None:
            if not numeric:
                raise ManifestError(
                    f"--by {self}: utterance {utterance} has {self.field}={value!r}, not a number to put in a bin"
                )
            low = (value // self.width) * self.width
            return (0, low, f"{low:g}-{low + self.width:g}")
        if numeric:
            return (0, float(value), f"{value:g}" if isinstance(value, float) else str(value))
        return (1, 0.0, str(value))


@dataclass
class GroupScore:
    """The scores of one group of a breakdown: its utterances, audio and error counts per system."""

    label: str
    utterances: int
    audio_seconds: float
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.label,
            "utterances": self.utterances,
            "audio_seconds": round(self.audio_seconds, 3),
            **{
                system: {"wer": t["words"].rate, "cer": t["chars"].rate, "words": t["words"].to_dict()}
                for system, t in self.totals.items()
            },
        }


@dataclass
class EvalReport:
    """What :func:`evaluate` measured. ``systems``: "greedy" and, with an LM, "lm" (beam search + LM)."""

    manifest: str
    model: str
    lm: str | None
    systems: list[str]
    decode_settings: dict[str, Any]
    normalize: bool
    utterances: list[UtteranceResult]
    totals: Totals
    timings: dict[str, float]
    audio_seconds: float
    computed_audio_seconds: float
    group_by: list[GroupBy] = field(default_factory=list)  # breakdowns to_dict includes

    @property
    def failed(self) -> list[UtteranceResult]:
        return [u for u in self.utterances if u.error is not None]

    def wer(self, system: str) -> float:
        return self.totals[system]["words"].rate

    def cer(self, system: str) -> float:
        return self.totals[system]["chars"].rate

    def breakdown(self, by: GroupBy | str) -> list[GroupScore]:
        """Scores per value of a manifest field (scored utterances only); the groups' counts add up to the
        totals. Utterances without the field form a group "(none)"."""
        group_by = GroupBy.of(by)
        groups: dict[tuple[int, float, str], GroupScore] = {}
        for u in self.utterances:
            if u.error is not None or not u.hypotheses:
                continue
            key = group_by.key(u.fields, u.id)
            g = groups.get(key)
            if g is None:
                g = groups[key] = GroupScore(key[2], 0, 0.0, _new_totals(self.systems))
            g.utterances += 1
            g.audio_seconds += u.duration_s
            for system, hyp in u.hypotheses.items():
                _add_hypothesis(g.totals, system, hyp)
        return [groups[k] for k in sorted(groups)]

    @property
    def rtf(self) -> dict[str, float | None]:
        """Processing seconds per audio second: acoustic model (utterances computed in this run), greedy and
        LM decoding, and acoustic + LM decoding."""
        audio = self.audio_seconds
        acoustic = (
            self.timings.get("acoustic", 0.0) / self.computed_audio_seconds if self.computed_audio_seconds else None
        )
        out: dict[str, float | None] = {"acoustic": acoustic}
        for system in self.systems:
            out[system] = self.timings.get(system, 0.0) / audio if audio else None
        if "lm" in self.systems and acoustic is not None and out["lm"] is not None:
            out["acoustic+lm"] = acoustic + out["lm"]  # type: ignore[operator]
        return out

    def to_dict(self) -> dict[str, Any]:
        summary = {}
        for system in self.systems:
            words, chars = self.totals[system]["words"], self.totals[system]["chars"]
            summary[system] = {"wer": words.rate, "cer": chars.rate, "words": words.to_dict(), "chars": chars.to_dict()}
        return {
            "manifest": self.manifest,
            "model": self.model,
            "lm": self.lm,
            "systems": self.systems,
            "decode_settings": self.decode_settings,
            "normalize": self.normalize,
            "num_utterances": len(self.utterances),
            "num_scored": len(self.utterances) - len(self.failed),
            "num_failed": len(self.failed),
            "audio_seconds": self.audio_seconds,
            "summary": summary,
            "rtf": self.rtf,
            "timings_s": dict(self.timings),
            **(
                {"breakdown": {str(g): [s.to_dict() for s in self.breakdown(g)] for g in self.group_by}}
                if self.group_by
                else {}
            ),
            "utterances": [u.to_dict() for u in self.utterances],
        }


def decode_lm(decoder: Any, logits_list: Sequence[np.ndarray], settings: DecodeSettings | None = None) -> list[str]:
    """Beam search + LM transcripts of many utterances on the decoder's native threads (longest first, so
    that the threads finish together).

    The search is the one of ``decode_beams`` (no history pruning), so the transcripts are the pipeline's
    and ``w2vlm transcribe``'s; only the best beam is built.
    """
    settings = settings or DecodeSettings()
    lm_weights = {}
    if decoder.language_model is not None:  # for this call only: the shared LM is not changed
        lm_weights = {"alpha": settings.alpha, "beta": settings.beta, "unk_score_offset": settings.unk_score_offset}
    options = decoder.options(
        beam_width=settings.beam_width,
        beam_prune_logp=settings.beam_prune_logp,
        token_min_logp=settings.token_min_logp,
        prune_history=False,  # as in decode_beams / the pipeline
        n_best=1,
        **lm_weights,
    )
    order = sorted(range(len(logits_list)), key=lambda i: -logits_list[i].shape[0])
    beams = decoder.decode_beams_with(options, [logits_list[i] for i in order], settings.num_threads)
    out = [""] * len(logits_list)
    for i, best in zip(order, beams, strict=True):
        out[i] = best[0].text if best else ""
    return out


def evaluate(
    manifest: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    *,
    lm: str | os.PathLike[str] | None = None,
    use_lm: bool = True,
    decode: DecodeSettings | None = None,
    acoustic: AcousticSettings | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    normalize: bool = True,
    progress: ProgressFn | None = None,
    group_by: Sequence[GroupBy | str] = (),
) -> EvalReport:
    """Greedy and beam search + LM WER/CER of a model on a manifest (see the module docstring).

    ``model``: a model folder in the hub layout, a hub id, or None for the embedded default model.
    ``lm``: an LM to use instead of the model's ``language_model/``; ``use_lm=False`` scores greedy only.
    ``group_by``: manifest fields (``"FIELD"`` or ``"FIELD:BIN_WIDTH"``) to break the scores down by (the
    report's ``to_dict`` includes them; :meth:`EvalReport.breakdown` computes any); checked against the
    manifest before the model runs.
    """
    from w2vlm.model import resolve_model_path

    decode = decode or DecodeSettings()
    timings: dict[str, float] = {}
    items = read_manifest(manifest)
    groups = check_group_by(items, group_by, manifest)
    model_dir = resolve_model_path(model)
    decoder = load_eval_decoder(model_dir, lm, use_lm)
    labels = decoder.alphabet.labels
    has_lm = decoder.language_model is not None
    if use_lm and not has_lm:
        logger.warning("%s has no language model (and no --lm was given): scoring greedy decoding only", model_dir)

    results = collect_logits(
        items, model_dir, acoustic, cache_dir=cache_dir, use_cache=use_cache, progress=progress, timings=timings
    )
    ok = [r for r in results if r.logits is not None]
    for r in ok:
        if r.logits.shape[1] != len(labels):  # type: ignore[union-attr]
            raise ModelError(
                f"{model_dir}: the model outputs {r.logits.shape[1]} tokens per frame but the decoder's "  # type: ignore[union-attr]
                f"alphabet has {len(labels)} labels"
            )
    timings["acoustic"] = sum(r.seconds for r in ok if not r.cached)
    computed_audio = sum(r.duration_s for r in ok if not r.cached)

    systems = ["greedy"] + (["lm"] if has_lm else [])
    texts: dict[str, list[str]] = {}
    t0 = time.perf_counter()
    texts["greedy"] = [greedy_decode(r.logits, labels, decoder.alphabet.is_bpe) for r in ok]  # type: ignore[arg-type]
    timings["greedy"] = time.perf_counter() - t0
    if has_lm:
        if progress:
            progress("lm", 0, 1)
        t0 = time.perf_counter()
        texts["lm"] = decode_lm(decoder, [r.logits for r in ok], decode)  # type: ignore[misc]
        timings["lm"] = time.perf_counter() - t0
        if progress:
            progress("lm", 1, 1)

    norm = normalize_text if normalize else (lambda t: " ".join(t.split()))
    totals = _new_totals(systems)
    utterances: list[UtteranceResult] = []
    position = {id(r): i for i, r in enumerate(ok)}
    for r in results:
        u = UtteranceResult(
            id=r.item.id,
            audio=str(r.item.audio),
            reference=r.item.reference,
            duration_s=r.duration_s,
            cached=r.cached,
            error=r.error,
            fields=dict(r.item.fields),
        )
        if r.logits is not None:
            ref = norm(r.item.reference)
            for system in systems:
                hyp = texts[system][position[id(r)]]
                h = Hypothesis(hyp, word_errors(ref, norm(hyp)), char_errors(ref, norm(hyp)))
                u.hypotheses[system] = h
                _add_hypothesis(totals, system, h)
        utterances.append(u)

    # the weights in effect: this run's where given, else the LM's own
    lm_params = dict(decoder.language_model.serializable_attrs) if has_lm else {}
    settings = {k: v for k, v in asdict(decode).items() if k not in ("alpha", "beta", "unk_score_offset")}
    for name in ("alpha", "beta", "unk_score_offset"):
        if has_lm and getattr(decode, name) is not None:
            lm_params[name] = getattr(decode, name)
    settings.update(lm_params)
    lm_name = None
    if has_lm:
        path = decoder.language_model.path
        lm_name = str(path) if path is not None else str(lm)
    return EvalReport(
        manifest=str(manifest),
        model=str(model_dir),
        lm=lm_name,
        systems=systems,
        decode_settings=settings,
        normalize=normalize,
        utterances=utterances,
        totals=totals,
        timings=timings,
        audio_seconds=sum(r.duration_s for r in ok),
        computed_audio_seconds=computed_audio,
        group_by=groups,
    )


def check_group_by(
    items: Sequence[ManifestItem], group_by: Sequence[GroupBy | str], manifest: str | os.PathLike[str]
) -> list[GroupBy]:
    """Parse ``group_by`` and check each field against the manifest: some utterance has it, and binned
    ones are numbers. Raises :class:`ManifestError` naming the field and the fields there are."""
    out = [GroupBy.of(g) for g in group_by]
    present: dict[str, None] = {}
    for item in items:
        present.update(dict.fromkeys(item.fields))
    for g in out:
        if g.field not in present:
            have = ", ".join(present) if present else "none besides audio and text"
            raise ManifestError(f"--by {g}: no utterance of {manifest} has a field {g.field!r} (fields: {have})")
        for item in items:
            g.key(item.fields, item.id)  # a binned field with a value that is not a number is named now
    return out


# -------------------------------------------------------------------------------------------------- output


SYSTEM_NAMES = {"greedy": "greedy", "lm": "beam + LM"}


def summary_table(report: EvalReport) -> Any:
    """A rich table: WER, CER and edit counts per system, side by side."""
    from rich.table import Table

    n_ok = len(report.utterances) - len(report.failed)
    table = Table(title=f"{n_ok} utterances, {report.audio_seconds / 60:.1f} min of audio", title_justify="left")
    for col in ("system", "WER %", "CER %", "sub", "del", "ins", "ref words", "RTF"):
        table.add_column(col, justify="left" if col == "system" else "right")
    rtf = report.rtf
    for system in report.systems:
        words, chars = report.totals[system]["words"], report.totals[system]["chars"]
        value = rtf.get(system)
        table.add_row(
            SYSTEM_NAMES.get(system, system),
            f"{100 * words.rate:.2f}",
            f"{100 * chars.rate:.2f}",
            str(words.substitutions),
            str(words.deletions),
            str(words.insertions),
            str(words.reference_length),
            "-" if value is None else f"{value:.3g}",  # greedy decoding: 1e-4 and less
        )
    return table


def breakdown_table(report: EvalReport, by: GroupBy | str) -> Any:
    """A rich table: utterances, audio minutes, WER and CER per system for each group of a breakdown."""
    from rich.table import Table

    group_by = GroupBy.of(by)
    table = Table(title=f"by {group_by}", title_justify="left")
    table.add_column(group_by.field)
    for col in ("utts", "min"):
        table.add_column(col, justify="right")
    for system in report.systems:
        name = SYSTEM_NAMES.get(system, system)
        table.add_column(f"{name} WER %", justify="right")
        table.add_column(f"{name} CER %", justify="right")
    for g in report.breakdown(group_by):
        cells = [g.label, str(g.utterances), f"{g.audio_seconds / 60:.1f}"]
        for system in report.systems:
            cells += [f"{100 * g.totals[system]['words'].rate:.2f}", f"{100 * g.totals[system]['chars'].rate:.2f}"]
        table.add_row(*cells)
    return table


def worst_utterances(report: EvalReport, count: int, system: str | None = None) -> list[UtteranceResult]:
    """The ``count`` scored utterances with the most word errors (of the LM system when there is one)."""
    system = system or report.systems[-1]
    scored = [u for u in report.utterances if system in u.hypotheses]
    scored.sort(key=lambda u: (-u.hypotheses[system].words.errors, u.id))
    return scored[:count]
