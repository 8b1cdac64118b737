"""Corpus-scale transcription on Ray Data: ``w2vlm transcribe --ray`` and :func:`transcribe`.

The job is a Ray Data pipeline of two stages:

1. **Acoustic model** in an actor pool (``workers`` actors, each holding the model once; one GPU each when
   the cluster has GPUs, else CPU): audio file → log-probabilities by
   :meth:`w2vlm.engine.Engine.segment_log_probs`, with the same voice activity detection, windowing and batching
   as ``w2vlm transcribe`` (inputs longer than 10 s cut into speech segments unless the options' ``vad`` says
   otherwise). Each input's parts (speech segments, or all its frames) go to the next stage in one row of an
   Arrow table (:func:`pack_parts`).
2. **Decoding** in CPU tasks: parts → transcript with the model's LM (or ``--lm``, ``--no-lm``), hotwords
   and n-best, by the same code as ``w2vlm transcribe``
   (:meth:`w2vlm.engine.decoding.TranscriptDecoder.transcribe_parts`), so the transcripts and their segments are
   the same. Each worker process loads the decoder (and LM) once and keeps it.

Results are written by Ray's own writers into ``output_dir`` as JSON lines (``*.json``) or Parquet files,
one record per input: ``id``, ``audio``, ``status`` ("ok" or "failed"), ``error`` ("" when ok), ``text``,
``duration``, ``segments`` (start, end, text, speech_prob, no_speech_prob, confidence, as in the json output of
``w2vlm transcribe``), ``words`` (word, start, end, confidence), ``reference`` (a manifest's text, if any) and
``model``. A file that cannot be read or decoded becomes a "failed" record with its error; the job goes on.

Re-running the same job skips the inputs that already have an "ok" record in ``output_dir`` (failed ones
are tried again), so an interrupted job resumes where it stopped. Files from several runs may then hold
several records of one input; :func:`read_results` gives the latest per input, an "ok" one before any
failure. The job's model, format and decoding settings are kept beside the records (``w2vlm-job.json``); a job
with others is refused there (:mod:`w2vlm.distributed_results`).

On a cluster (``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the others, w2vlm
installed on every node, audio and model on paths every node can read), pass ``address="auto"`` (or
``HEAD:6379``); without an address a local Ray instance is started.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from w2vlm.distributed_results import (
    OUTPUT_FORMATS,
    DistributedError,
    job_settings,
    read_results,
    record_job,
    resume_point,
    schema,
)
from w2vlm.engine.config import DecodeConfig
from w2vlm.engine.decoding import describe, failed
from w2vlm.fileio import check_output
from w2vlm.results import Transcript
from w2vlm.transcribe import TranscribeOptions, build_processor
from w2vlm.writers import segment_record

logger = logging.getLogger("w2vlm.distributed")

#: Seconds to wait for a cluster's address to answer before Ray is asked to connect.
REACH_TIMEOUT_S = 10.0
#: Environment of the Ray workers: torch's OpenMP threads must not spin next to the decoder's.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class WorkItem:
    """One input of a job: ``id`` names it in the results, ``path`` is where the workers read it."""

    id: str
    audio: str
    path: str
    reference: str = ""


@dataclass
class DistributedSummary:
    """What a job did. ``seconds``: wall time of the Ray pipeline (model loading included, Ray start-up not)."""

    output_dir: Path
    total: int
    skipped: int
    ok: int
    failed: list[tuple[str, str]]
    audio_seconds: float
    seconds: float
    workers: int
    device: str

    @property
    def processed(self) -> int:
        return self.ok + len(self.failed)

    @property
    def speed(self) -> float:
        """Audio seconds transcribed per wall-clock second (this run's successful inputs)."""
        return self.audio_seconds / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------------------------------ inputs


def list_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[WorkItem]:
    """The job's inputs: one manifest (JSONL/CSV/TSV with an audio column, optional ``text`` and ``id``) or
    audio files and folders (walked recursively, as ``w2vlm transcribe`` does). Ids are the manifest's ids
    (else the audio path relative to the manifest) or the file paths as given; paths that do not exist are
    kept as inputs and end as failed records."""
    from w2vlm.manifest import MANIFEST_SUFFIXES, read_manifest
    from w2vlm.transcribe import collect_inputs

    raw = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not raw:
        raise DistributedError("inputs: nothing to transcribe (no files, folders or manifest given)")
    items: list[WorkItem] = []
    first = Path(raw[0]).expanduser()
    if len(raw) == 1 and first.is_file() and first.suffix.lower() in MANIFEST_SUFFIXES:
        for m in read_manifest(first, require_text=False):
            items.append(WorkItem(m.id, str(m.audio), str(m.audio.resolve()), m.reference))
    else:
        files, problems = collect_inputs(raw)
        for f in files:
            items.append(WorkItem(str(f.path), str(f.path), str(f.path.resolve())))
        for name, _ in problems:
            # kept so that the results record why it failed (an empty folder gives no record)
            if not Path(name).expanduser().is_dir():
                items.append(WorkItem(name, name, str(Path(name).expanduser().absolute())))
            else:
                logger.warning("%s: no audio files in this folder", name)
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DistributedError(f"inputs: the id {item.id!r} is given twice; ids must be unique")
        seen.add(item.id)
    return items


# ------------------------------------------------------------------------------------------------ parts

#: An input's parts as :meth:`w2vlm.engine.Engine.segment_log_probs` gives them: (start seconds, speech
#: probability or None, (frames, vocab) log-probabilities).
Parts = list[tuple[float, float | None, np.ndarray]]


def _parts_schema() -> Any:
    """Between the stages, one row per input: its parts' float32 log-probabilities, one after another, in one
    binary value ``log_probs`` (``vocab`` values a frame), and per part its frames, start (seconds) and speech
    probability (null without VAD). An input without speech has no parts; a failed one has its ``error``."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("audio", pa.string()),
            ("path", pa.string()),
            ("reference", pa.string()),
            ("log_probs", pa.large_binary()),
            ("vocab", pa.int64()),
            ("part_frames", pa.list_(pa.int64())),
            ("part_starts", pa.list_(pa.float64())),
            ("part_speech_probs", pa.list_(pa.float64())),
            ("seconds_per_frame", pa.float64()),
            ("duration", pa.float64()),
            ("error", pa.string()),
        ]
    )


def pack_parts(
    batch: dict[str, Any],
    outputs: Sequence[tuple[Parts | None, float, BaseException | None]],
    seconds_per_frame: float,
) -> Any:
    """The acoustic stage's table: ``batch``'s work items with their ``segment_log_probs`` outputs."""
    import pyarrow as pa

    blobs: list[bytes] = []
    vocabs: list[int] = []
    frames: list[list[int]] = []
    starts: list[list[float]] = []
    probs: list[list[float | None]] = []
    errors: list[str] = []
    for parts, _, error in outputs:
        parts = parts if error is None and parts is not None else []
        mats = [np.ascontiguousarray(lp, dtype=np.float32) for _, _, lp in parts]
        blobs.append(b"".join(m.tobytes() for m in mats))
        vocabs.append(mats[0].shape[1] if mats else 0)
        frames.append([m.shape[0] for m in mats])
        starts.append([float(start) for start, _, _ in parts])
        probs.append([None if prob is None else float(prob) for _, prob, _ in parts])
        errors.append(describe(error) if error is not None else "")
    columns = {
        **{k: [str(x) for x in batch[k]] for k in ("id", "audio", "path", "reference")},
        "log_probs": blobs,
        "vocab": vocabs,
        "part_frames": frames,
        "part_starts": starts,
        "part_speech_probs": probs,
        "seconds_per_frame": [float(seconds_per_frame)] * len(outputs),
        "duration": [float(secs) for _, secs, _ in outputs],
        "error": errors,
    }
    return pa.table(columns, schema=_parts_schema())


def unpack_parts(row: dict[str, Any]) -> Parts:
    """One input's parts from a row of the acoustic stage's table (see :func:`pack_parts`)."""
    flat = np.frombuffer(row["log_probs"], dtype=np.float32)
    vocab = int(row["vocab"])
    parts: Parts = []
    at = 0
    for n, start, prob in zip(row["part_frames"], row["part_starts"], row["part_speech_probs"]):
        parts.append((float(start), None if prob is None else float(prob), flat[at : at + n * vocab].reshape(n, vocab)))
        at += n * vocab
    return parts


# ------------------------------------------------------------------------------------------------ stages


class AcousticStage:
    """Ray Data actor: holds the CTC model and turns a batch of work items into logits (or errors).

    A job runs a subclass made by :func:`_acoustic_stage` whose class attributes carry the settings.
    """

    options_dict: ClassVar[dict[str, Any]] = {}
    threads: ClassVar[int] = 1

    def __init__(self) -> None:
        import torch

        from w2vlm.engine import Engine
        from w2vlm.memory import tune_allocator
        from w2vlm.model import load_model, resolve_model_path
        from w2vlm.processor_parts import load_feature_extractor

        tune_allocator()
        torch.set_num_threads(max(1, self.threads))
        self.options = TranscribeOptions(**self.options_dict)
        folder = resolve_model_path(self.options.model)
        model = load_model(
            folder, device=self.options.device, dtype=self.options.model_dtype(), quantize=self.options.quantize
        )
        # each actor is a process with its share of the CPUs: it reads in its own threads
        config = self.options.engine_config().with_(
            workers=max(1, self.threads), torch_threads=max(1, self.threads), read_processes=False
        )
        self.engine = Engine(model, load_feature_extractor(folder), None, config)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        """A batch of work items → a pyarrow table of their parts (see :func:`_parts_schema`) or errors."""
        paths = [str(p) for p in batch["path"]]
        outputs = list(self.engine.segment_log_probs(paths))
        return pack_parts(batch, outputs, self.engine.seconds_per_frame)


def _acoustic_stage(options: dict[str, Any], threads: int) -> type[AcousticStage]:
    # settings as class attributes rather than constructor arguments: Ray keeps constructor arguments in
    # its object store for actor restarts, and warns about it
    return type("AcousticStage", (AcousticStage,), {"options_dict": options, "threads": threads})


_DECODERS: dict[str, Any] = {}


def _decoder_for(options: TranscribeOptions, model_name: str, seconds_per_frame: float) -> Any:
    """This worker process's decoder for ``options`` (loaded once, then reused by later tasks)."""
    from w2vlm.engine.decoding import TranscriptDecoder
    from w2vlm.model import resolve_model_path

    key = json.dumps([dataclasses.asdict(options), model_name, seconds_per_frame], sort_keys=True, default=str)
    if key not in _DECODERS:
        processor = build_processor(resolve_model_path(options.model), options)
        _DECODERS.clear()
        _DECODERS[key] = TranscriptDecoder(processor.decoder, seconds_per_frame, model_name)
    return _DECODERS[key]


def _transcripts(
    decoder: Any, items: list[tuple[str, Parts, float]], config: DecodeConfig, threads: int
) -> list[Transcript]:
    """``decoder.transcribe_parts`` of the items in one call; should it fail, item by item, so that only the
    items that fail get an error."""
    try:
        return decoder.transcribe_parts(items, config, threads)
    except Exception:
        pass
    out = []
    for item in items:
        try:
            out += decoder.transcribe_parts([item], config, threads)
        except Exception as exc:
            out.append(failed(item[0], exc))
    return out


def _record_words(t: Transcript) -> list[dict[str, Any]]:
    return [
        {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "confidence": w.confidence}
        for w in t.words
    ]


def decode_stage(batch: Any, *, options: dict[str, Any], model_name: str, word_timestamps: bool, threads: int) -> Any:
    """Ray Data task: the acoustic stage's table of a batch (:func:`pack_parts`) → result records (a pyarrow
    table with the results' schema), made by :meth:`~w2vlm.engine.decoding.TranscriptDecoder.transcribe_parts`
    as ``w2vlm transcribe`` makes them."""
    import pyarrow as pa

    opts = TranscribeOptions(**options)
    rows = batch.to_pylist()
    n = len(rows)
    errors = [str(r["error"] or "") for r in rows]
    texts = [""] * n
    segments: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    words: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    ok = [i for i in range(n) if not errors[i]]
    if ok:
        spf = float(rows[ok[0]]["seconds_per_frame"])
        try:
            decoder = _decoder_for(opts, model_name, spf)
            items = [(str(rows[i]["audio"]), unpack_parts(rows[i]), float(rows[i]["duration"])) for i in ok]
            outcomes = _transcripts(decoder, items, opts.decode_config(word_timestamps), threads)
        except Exception as exc:  # the decoder itself could not be built: every item of the batch failed
            outcomes = [failed("", exc) for _ in ok]
        for i, outcome in zip(ok, outcomes):
            if outcome.error is not None:
                errors[i] = outcome.error
                continue
            texts[i] = outcome.text
            segments[i] = [segment_record(s) for s in outcome.segments]
            words[i] = _record_words(outcome)
    columns = {
        "id": [str(r["id"]) for r in rows],
        "audio": [str(r["audio"]) for r in rows],
        "status": ["failed" if e else "ok" for e in errors],
        "error": errors,
        "text": texts,
        "duration": [float(r["duration"]) for r in rows],
        "segments": segments,
        "words": words,
        "reference": [str(r["reference"]) for r in rows],
        "model": [model_name] * n,
        "language": [opts.language] * n,
    }
    return pa.table(columns, schema=schema())


# ------------------------------------------------------------------------------------------------ driver


def _check_reachable(address: str) -> None:
    """A named error at once where ``address`` ("HOST:PORT" or "ray://HOST:PORT") has nothing listening: Ray
    itself retries for minutes (a refused port on this machine: still waiting after 3 minutes)."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms: Ray resolves them
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise DistributedError(f"Ray: cannot reach the cluster at {address}: {exc.strerror or exc}") from None


def _init_ray(address: str | None, workers: int, verbose: bool = False) -> Any:
    try:
        import ray
    except ImportError:
        raise DistributedError("--ray needs Ray Data: pip install 'w2vlm[ray]'") from None
    if ray.is_initialized():
        return ray
    if address or os.environ.get("RAY_ADDRESS"):
        _check_reachable(address or os.environ["RAY_ADDRESS"])
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING if verbose else logging.ERROR,
        "runtime_env": {"env_vars": dict(WORKER_ENV)},
    }
    if address:
        kwargs["address"] = address
    elif not os.environ.get("RAY_ADDRESS"):
        cores = os.cpu_count() or 1
        if workers > cores:
            # the instance would claim CPUs the machine does not have: every actor loads the model, and the job
            # crawls (50 actors on 2 cores never got going)
            raise DistributedError(
                f"workers (--ray-workers): {workers} model workers on a local Ray instance, but this machine has "
                f"{cores} CPUs; at most {cores} (or give --ray-address of a bigger cluster)"
            )
        # a local instance: one logical CPU more than the model actors take, so decoding tasks always have one
        kwargs["num_cpus"] = max(cores, workers + 1)
    try:
        ray.init(**kwargs)
    except Exception as exc:
        raise DistributedError(f"Ray: cannot start or reach the cluster at {address or 'local'}: {exc}") from exc
    if not verbose:
        import ray.data  # configures its loggers on import: quiet them afterwards

        # Ray Data's own notices (progress bars off, execution finished) are not the job's business
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    return ray


def transcribe(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    options: TranscribeOptions | None = None,
    address: str | None = None,
    workers: int | None = None,
    output_format: str = "jsonl",
    word_timestamps: bool = False,
    files_per_batch: int = 16,
    progress: bool = False,
) -> DistributedSummary:
    """Transcribe a manifest or files/folders on Ray Data, writing records to ``output_dir``.

    ``options``: what to load and how to decode, as for ``w2vlm transcribe`` (model, lm/no_lm, alpha, beta,
    beam width, hotwords, n-best, chunk length, device, quantize, voice activity detection, no-speech
    threshold). ``address``: a Ray cluster ("auto", "HOST:6379", "ray://HOST:10001"); None starts a local
    instance (an already initialised Ray is used as it is). ``workers``: acoustic model actors (default: the
    cluster's GPUs, else one per two CPUs).
    ``output_format``: "jsonl" or "parquet". ``files_per_batch``: inputs per model/decoding call.
    """
    options = options or TranscribeOptions()
    options.validate()
    if output_format not in OUTPUT_FORMATS:
        raise DistributedError(f"output format: expected one of {', '.join(OUTPUT_FORMATS)}; got {output_format!r}")
    if workers is not None and workers < 1:
        raise DistributedError(f"workers: must be at least 1; got {workers}")
    if files_per_batch < 1:
        raise DistributedError(f"files per batch: must be at least 1; got {files_per_batch}")
    from w2vlm.model import resolve_language, resolve_model_path

    model_name = options.model if options.model is not None else "w2vlm embedded default"
    folder = resolve_model_path(options.model)  # fail early, on the driver, when the model cannot be found
    options = dataclasses.replace(options, language=resolve_language(options.language, folder))
    if options.model is not None and Path(options.model).expanduser().exists():
        options = dataclasses.replace(options, model=str(folder.resolve()))
    if options.lm is not None:
        options = dataclasses.replace(options, lm=str(Path(options.lm).expanduser().resolve()))

    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DistributedError(f"output: {out} exists and is not a folder")
    check_output(out, folder=True)
    items = list_inputs(inputs)
    settings = job_settings(options, model_name, output_format, word_timestamps)
    done = resume_point(out, settings)
    todo = [it for it in items if it.id not in done]
    skipped = len(items) - len(todo)
    if skipped:
        logger.info("%d of %d inputs already have results in %s: skipped", skipped, len(items), out)

    ray_module = _init_ray(address, workers or 1, progress)
    from ray.data import ActorPoolStrategy, DataContext, from_items

    resources = ray_module.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = (gpus > 0 and options.device in ("auto", "cuda")) or options.device.startswith("cuda")
    if workers is None:
        workers = gpus if use_gpu and gpus else max(1, int(resources.get("CPU", 2)) // 2)
    device = "cuda" if use_gpu else "cpu"
    cpus = float(resources.get("CPU", 0))
    if workers + 1 > cpus:
        # every model actor holds a CPU for the whole job; with none left the decoding tasks would never run
        raise DistributedError(
            f"workers: {workers} model worker(s) need {workers + 1} CPUs in the Ray cluster (one each, plus one "
            f"for LM decoding) but it has {cpus:g}; use fewer workers or a bigger cluster"
        )
    record_job(out, settings, done)
    if not todo:
        return DistributedSummary(out, len(items), skipped, 0, [], 0.0, 0.0, workers, device)

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    opts = dataclasses.asdict(
        dataclasses.replace(options, device=device if options.device == "auto" else options.device)
    )
    t0 = time.perf_counter()
    # enough blocks that every model worker gets some (a block is the unit of work a worker takes)
    blocks = min(len(todo), max(2 * workers, -(-len(todo) // files_per_batch)))
    ds = from_items([dataclasses.asdict(it) for it in todo], override_num_blocks=blocks)
    ds = ds.map_batches(
        _acoustic_stage(opts, 1),
        batch_size=files_per_batch,
        compute=ActorPoolStrategy(size=workers),
        num_cpus=1,
        num_gpus=1 if use_gpu else 0,
        runtime_env={"env_vars": dict(WORKER_ENV)},
    )
    ds = ds.map_batches(
        decode_stage,
        fn_kwargs={"options": opts, "model_name": model_name, "word_timestamps": word_timestamps, "threads": 1},
        batch_size=files_per_batch,
        batch_format="pyarrow",
        num_cpus=1,
        runtime_env={"env_vars": dict(WORKER_ENV)},
    )
    if output_format == "parquet":
        ds.write_parquet(str(out))
    else:
        ds.write_json(str(out), force_ascii=False)
    seconds = time.perf_counter() - t0

    results = read_results(out)
    ok = 0
    audio_seconds = 0.0
    failed: list[tuple[str, str]] = []
    for it in todo:
        rec = results.get(it.id)
        if rec is None:
            failed.append((it.id, "no result was written"))
        elif rec.get("status") == "ok":
            ok += 1
            audio_seconds += float(rec.get("duration") or 0.0)
        else:
            failed.append((it.id, str(rec.get("error") or "failed")))
    return DistributedSummary(out, len(items), skipped, ok, failed, audio_seconds, seconds, workers, device)


__all__ = [
    "OUTPUT_FORMATS",
    "AcousticStage",
    "DistributedError",
    "DistributedSummary",
    "WorkItem",
    "decode_stage",
    "list_inputs",
    "pack_parts",
    "read_results",
    "transcribe",
    "unpack_parts",
]
