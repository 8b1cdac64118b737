"""Manifests of audio with reference texts, as ``eval``, ``tune``, ``train`` and Ray read them: JSON lines,
CSV/TSV with a header, or a folder of audio files each with a ``.txt`` of the same name."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2vlm.audio import AUDIO_EXTENSIONS
from w2vlm.errors import ManifestError

#: file names read as manifests (JSONL, CSV, TSV) rather than as audio
MANIFEST_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv")

AUDIO_KEYS = ("audio", "audio_filepath", "path", "file", "filename")
TEXT_KEYS = ("text", "sentence", "transcript", "transcription", "reference")


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
        if suffix in AUDIO_EXTENSIONS:
            raise ManifestError(
                f"{p}: an audio file, not a manifest (expected a .jsonl/.csv/.tsv file listing audio and text, or a "
                "folder of audio files with .txt transcripts beside them)"
            )
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
    for audio in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()):
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
        raise ManifestError(f"{folder}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) found in this directory")
    return items
