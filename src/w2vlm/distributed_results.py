"""The output folder of a Ray job (:mod:`w2vlm.distributed`): its records, and what they were made with.

Records are written by Ray's own JSON lines or Parquet writers, one per input, with one fixed schema
(:func:`schema`). :func:`read_results` reads them back, the latest per input. Beside them the job keeps
:data:`JOB_FILE`: the model, the format and every setting that changes what a record says (the LM and its
weights, beam, hotwords, n-best, chunking, dtype and quantization, voice activity detection, word times; not the
device, threads or batch size). A job that goes on in a folder that holds results checks them first
(:func:`resume_point`): results of another model, in the other format or made with other settings are refused,
since the folder would then mix two jobs' transcripts. :func:`record_job` writes the file when the job starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from w2vlm.errors import W2vlmError

logger = logging.getLogger("w2vlm.distributed")

OUTPUT_FORMATS = ("jsonl", "parquet")
#: The job's settings, beside its records (JSON; not a results file).
JOB_FILE = "w2vlm-job.json"
#: Options that change where and how fast a job runs, not what it writes.
_RUN_ONLY = ("device", "threads", "batch_size")
_SUFFIX_FORMATS = {".json": "jsonl", ".jsonl": "jsonl", ".parquet": "parquet"}


class DistributedError(W2vlmError, ValueError):
    """A distributed job that cannot start: bad options, no Ray, an unreachable cluster."""


def schema() -> Any:
    """The records' schema (the same for JSON lines and Parquet)."""
    import pyarrow as pa

    word = pa.struct(
        [("word", pa.string()), ("start", pa.float64()), ("end", pa.float64()), ("confidence", pa.float64())]
    )
    segment = pa.struct(
        [
            ("start", pa.float64()),
            ("end", pa.float64()),
            ("text", pa.string()),
            ("speech_prob", pa.float64()),
            ("no_speech_prob", pa.float64()),
            ("confidence", pa.float64()),
        ]
    )
    return pa.schema(
        [
            ("id", pa.string()),
            ("audio", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("text", pa.string()),
            ("duration", pa.float64()),
            ("segments", pa.list_(segment)),
            ("words", pa.list_(word)),
            ("reference", pa.string()),
            ("model", pa.string()),
            ("language", pa.string()),
        ]
    )


def _result_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.suffix in _SUFFIX_FORMATS and p.name != JOB_FILE]


def read_results(output_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The records in ``output_dir`` (JSON lines and Parquet files), the latest per id, "ok" before "failed".

    Unreadable files and lines (say, from a job killed while writing) are skipped with a warning.
    """
    out: dict[str, dict[str, Any]] = {}
    folder = Path(output_dir).expanduser()
    if not folder.is_dir():
        return out
    for path in sorted(_result_files(folder), key=lambda p: (p.stat().st_mtime, p.name)):
        for record in _read_records(path):
            key = record.get("id")
            if not isinstance(key, str):
                continue
            if out.get(key, {}).get("status") == "ok" and record.get("status") != "ok":
                continue
            out[key] = record
    return out


def _read_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        except Exception as exc:
            logger.warning("%s: unreadable Parquet file, ignored (%s)", path, exc)
            return []
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning("%s:%d: not a complete JSON record, ignored", path, lineno)
                    continue
                if isinstance(rec, dict):
                    records.append(rec)
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("%s: unreadable, ignored (%s)", path, exc)
    return records


def job_settings(options: Any, model_name: str, output_format: str, word_timestamps: bool) -> dict[str, Any]:
    """What a job's records depend on: ``options`` (a :class:`~w2vlm.transcribe.TranscribeOptions`, with the
    LM path resolved) less :data:`_RUN_ONLY`, the model's name, the format and whether words are timed."""
    settings = {k: v for k, v in dataclasses.asdict(options).items() if k not in _RUN_ONLY}
    settings.update(model=model_name, format=output_format, word_timestamps=word_timestamps)
    return json.loads(json.dumps(settings, default=str))  # as it reads back from the file


def resume_point(out: Path, settings: dict[str, Any]) -> set[str]:
    """The ids that already have an "ok" record in ``out``, once it is clear that going on there is right: no
    results of another model, in another format or (where :data:`JOB_FILE` says) with other settings; then
    :class:`DistributedError` otherwise, naming what differs."""
    earlier = {k: r for k, r in read_results(out).items() if r.get("status") == "ok"}
    job = out / JOB_FILE
    if earlier:
        model = settings["model"]
        others = sorted({str(r.get("model")) for r in earlier.values()} - {model})
        if others:
            raise DistributedError(
                f"output: {out} holds results of another model ({', '.join(others)}); this job's is {model}: "
                "write to a new folder"
            )
        kept = {_SUFFIX_FORMATS[p.suffix] for p in _result_files(out)}
        if settings["format"] not in kept:
            raise DistributedError(
                f"output: {out} holds {', '.join(sorted(kept))} results; this job writes {settings['format']}: "
                "give the same format to go on where it stopped, or write to a new folder"
            )
        if not job.is_file():  # written by a version that kept no settings
            logger.warning("%s: no %s (an older job): its decoding settings cannot be checked", out, JOB_FILE)
            return set(earlier)
        before = _read_job(job)
        changed = [
            f"{key} {before.get(key)!r} there, {value!r} here"
            for key, value in settings.items()
            if before.get(key) != value
        ]
        if changed:
            raise DistributedError(
                f"output: {out} holds results made with other settings ({'; '.join(changed)}): give the same "
                "settings to go on where it stopped, or write to a new folder"
            )
        return set(earlier)
    return set()


def record_job(out: Path, settings: dict[str, Any], done: set[str]) -> None:
    """Make ``out`` and write ``settings`` to its :data:`JOB_FILE` (not where results of an older job without
    one are, ``done``: their settings are not known)."""
    job = out / JOB_FILE
    if done and not job.is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    job.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_job(path: Path) -> dict[str, Any]:
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DistributedError(f"output: {path} is not a readable job file ({exc}); write to a new folder") from None
    if not isinstance(settings, dict):
        raise DistributedError(f"output: {path}: expected a JSON object of settings; got {type(settings).__name__}")
    return settings


__all__ = [
    "JOB_FILE",
    "OUTPUT_FORMATS",
    "DistributedError",
    "job_settings",
    "read_results",
    "record_job",
    "resume_point",
    "schema",
]
