"""Batch transcription of audio files: the engine behind ``w2vlm transcribe``.

:func:`collect_inputs` turns the command line's files and folders into a list of audio files (folders are
walked recursively for known audio extensions). :class:`Transcriber` loads the model, the processor and the
decoder once and transcribes files in groups: the CTC model runs over a group's files (windows batched as the
pipeline does), then the group is decoded on the decoder's native threads in a background thread while the
model already runs over the next group. A file that cannot be read or decoded is reported and skipped; the
others go on. :func:`run` adds the command line's side: output names, ``--skip-existing``, atomic writes,
stdout, the progress bar and the summary.

Decoding modes: beam search with the model's LM (or ``lm_path``); beam search without an LM
(``no_lm`` with a beam width, hotwords or several best hypotheses requested); greedy best-path decoding
(``no_lm`` otherwise: per frame the most probable token, repeats merged, blanks dropped).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from w2vlm.errors import LanguageModelError, W2vlmError
from w2vlm.writers import Alternative, Transcript, Word, expand_formats, output_paths, render, write_transcript

logger = logging.getLogger("w2vlm.transcribe")

#: File extensions picked up when a folder is walked (a file named explicitly is tried whatever its name).
_EXTENSION_NAMES = (
    "wav wave flac mp3 ogg oga opus spx m4a m4b aac wma aif aiff aifc au snd caf amr 3gp webm mka mkv mp4 mov avi wv"
)
AUDIO_EXTENSIONS = frozenset("." + name for name in _EXTENSION_NAMES.split())

#: Beams kept when a long input is decoded incrementally; their agreement feeds the word confidences.
STREAM_CONFIDENCE_BEAMS = 16


class TranscribeError(W2vlmError, ValueError):
    """Options of a transcription run that cannot work together or have bad values."""


@dataclass
class TranscribeOptions:
    """What to load and how to decode; None means the model's own setting or the decoder's default."""

    model: str | None = None
    lm: str | None = None
    no_lm: bool = False
    device: str = "auto"
    quantize: str | None = None
    batch_size: int = 1
    chunk_length_s: float | None = None
    beam_width: int | None = None
    alpha: float | None = None
    beta: float | None = None
    hotwords: list[str] = field(default_factory=list)
    n_best: int = 1
    threads: int | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise TranscribeError(f"--batch-size: must be at least 1; got {self.batch_size}")
        if self.chunk_length_s is not None and self.chunk_length_s <= 0:
            raise TranscribeError(f"--chunk-length: must be a positive number of seconds; got {self.chunk_length_s}")
        if self.beam_width is not None and self.beam_width < 1:
            raise TranscribeError(f"--beam-width: must be at least 1; got {self.beam_width}")
        if self.n_best < 1:
            raise TranscribeError(f"--n-best: must be at least 1; got {self.n_best}")
        if self.threads is not None and self.threads < 1:
            raise TranscribeError(f"--threads: must be at least 1; got {self.threads}")
        if self.quantize not in (None, "int8"):
            raise TranscribeError(f"--quantize: expected int8; got {self.quantize!r}")
        if self.no_lm and self.lm is not None:
            raise TranscribeError("--lm and --no-lm: give one or the other")
        if self.no_lm and (self.alpha is not None or self.beta is not None):
            raise TranscribeError("--alpha/--beta weight the language model; they cannot go with --no-lm")
        for name, value in (("--alpha", self.alpha), ("--beta", self.beta)):
            if value is not None and not np.isfinite(value):
                raise TranscribeError(f"{name}: must be a finite number; got {value}")

    @property
    def greedy(self) -> bool:
        """Best-path decoding: no LM and nothing that needs a beam search."""
        return self.no_lm and self.beam_width is None and self.n_best == 1 and not self.hotwords


def parse_hotwords(value: str | None) -> list[str]:
    """``--hotwords``: a file with one word or phrase a line, or a comma-separated list."""
    if value is None or not value.strip():
        return []
    path = Path(value).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TranscribeError(f"--hotwords: {path}: cannot read it as UTF-8 text ({exc})") from exc
        words = [line.strip() for line in text.splitlines()]
    elif path.is_dir():
        raise TranscribeError(f"--hotwords: {path} is a folder; expected a text file or a comma-separated list")
    elif "," not in value and (os.sep in value or path.suffix.lower() in {".txt", ".lst", ".list"}):
        raise TranscribeError(f"--hotwords: {path}: no such file (a file with one hotword a line was expected)")
    else:
        words = [part.strip() for part in value.split(",")]
    return [w for w in dict.fromkeys(words) if w]


@dataclass
class InputFile:
    """An audio file to transcribe; ``relative`` is its folder relative to the folder given on the command
    line (mirrored under the output folder)."""

    path: Path
    relative: Path = Path()


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Files named on the command line and the audio files found in folders (recursively, sorted, hidden
    files skipped); returns (files, [(input, problem)]) with each file once."""
    files: list[InputFile] = []
    errors: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, relative: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(InputFile(path, relative))

    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in AUDIO_EXTENSIONS
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                errors.append((str(raw), "no audio files in this folder"))
            for p in found:
                add(p, p.relative_to(path).parent)
        elif path.is_file():
            add(path, Path())
        elif path.exists():
            errors.append((str(raw), "not a regular file"))
        else:
            errors.append((str(raw), "no such file or folder"))
    return files, errors


# ------------------------------------------------------------------------------------------------ loading


def _read_lm_attrs(folder: Path) -> dict[str, Any]:
    import json

    attrs_file = folder / "language_model" / "attrs.json"
    if not attrs_file.is_file():
        return {}
    try:
        data = json.loads(attrs_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LanguageModelError(f"{attrs_file}: not valid JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def build_processor(folder: Path, options: TranscribeOptions) -> Any:
    """The model folder's processor with the decoder the options ask for (its LM, another LM, or none)."""
    from w2vlm.decoder import Alphabet, BeamSearchDecoderCTC, LanguageModel, load_alphabet_json, load_unigrams
    from w2vlm.processor import (
        Wav2Vec2ProcessorWithLM,
        load_feature_extractor,
        load_tokenizer,
        tokenizer_labels,
    )

    if not options.no_lm and options.lm is None:
        overrides = {k: v for k, v in (("alpha", options.alpha), ("beta", options.beta)) if v is not None}
        processor = Wav2Vec2ProcessorWithLM.from_pretrained(folder, **overrides)
        if overrides and not getattr(processor.decoder, "language_model", None):
            raise TranscribeError(
                f"--alpha/--beta: {folder} has no language model (language_model/) to weight; pass --lm"
            )
        return processor
    feature_extractor = load_feature_extractor(folder)
    tokenizer = load_tokenizer(folder)
    alphabet_file = folder / "alphabet.json"
    if alphabet_file.is_file():
        alphabet = load_alphabet_json(alphabet_file)
    else:
        alphabet = Alphabet.build_alphabet(tokenizer_labels(tokenizer))
    lm = None
    if options.lm is not None:
        lm_path = Path(options.lm).expanduser()
        if not lm_path.is_file():
            raise LanguageModelError(f"--lm: {lm_path}: no such language model file (.arpa, .arpa.gz or .bin)")
        unigrams_file = lm_path.parent / "unigrams.txt"
        unigrams = load_unigrams(unigrams_file) if unigrams_file.is_file() else None
        attrs = {k: v for k, v in _read_lm_attrs(folder).items() if k in ("alpha", "beta", "unk_score_offset")}
        if options.alpha is not None:
            attrs["alpha"] = options.alpha
        if options.beta is not None:
            attrs["beta"] = options.beta
        lm = LanguageModel(str(lm_path), unigrams, **attrs)
        logger.info("language model %s (%s backend, %d-gram)", lm_path, lm.backend, lm.order)
    decoder = BeamSearchDecoderCTC(alphabet, lm)
    return Wav2Vec2ProcessorWithLM(feature_extractor=feature_extractor, tokenizer=tokenizer, decoder=decoder)


# ------------------------------------------------------------------------------------------------- engine


@dataclass
class FileResult:
    """The outcome for one input: a transcript, or the error that stopped it."""

    file: InputFile
    transcript: Transcript | None = None
    error: str | None = None
    audio_seconds: float = 0.0


@dataclass
class _Pending:
    file: InputFile
    pieces: list[np.ndarray] = field(default_factory=list)
    stream: Any = None
    frames: int = 0
    error: BaseException | None = None  # raised while feeding the stream (on the decoding thread)

    def feed(self, piece: np.ndarray) -> None:
        if self.error is None:
            try:
                self.stream.feed(piece)
            except Exception as exc:
                self.error = exc


class Transcriber:
    """Loads a model + decoder once and transcribes files with per-file error isolation."""

    def __init__(self, options: TranscribeOptions) -> None:
        options.validate()
        self.options = options
        import torch

        from w2vlm.model import resolve_model_path
        from w2vlm.pipeline import pipeline

        # the model and the decoder run at the same time (see transcribe()), so the thread budget (default: the
        # available CPUs) is split between them; torch's OpenMP threads slow down badly when oversubscribed
        budget = options.threads or _available_cpus()
        self.torch_threads = max(1, budget // 2)
        self.decode_threads = max(1, budget - budget // 2)
        torch.set_num_threads(self.torch_threads)
        self.folder = resolve_model_path(options.model)
        self.model_name = options.model if options.model is not None else "w2vlm embedded default"
        processor = build_processor(self.folder, options)
        self.pipe = pipeline(
            "automatic-speech-recognition",
            model=str(self.folder),
            processor=processor,
            device=options.device,
            quantize=options.quantize,
            batch_size=options.batch_size,
        )
        self.processor = processor
        self.decoding = LogitsDecoder(processor, options, self.model_name, self.pipe.ratio / self.pipe.sampling_rate)
        self.group_size = max(4, options.batch_size, self.decode_threads)

    @property
    def mode(self) -> str:
        return self.decoding.mode

    # ------------------------------------------------------------------------------------------- run

    def transcribe(
        self,
        files: Sequence[InputFile],
        on_audio: Callable[[float], None] | None = None,
        *,
        word_timestamps: bool = False,
    ) -> Iterator[FileResult]:
        """Transcribe ``files`` in order, yielding one :class:`FileResult` per file as soon as it is done.

        ``on_audio(seconds)`` is called as the model gets through audio (for a progress bar).
        """
        # one decoding thread, in submission order: a long input's windows are fed to its incremental decoder
        # there while the model computes the next windows; a group is decoded after its windows were fed
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="w2vlm-decode") as pool:
            pending: Future | None = None
            for start in range(0, len(files), self.group_size):
                group = list(files[start : start + self.group_size])
                computed, failed = self._logits_group(group, on_audio, pool, word_timestamps)
                job = pool.submit(self._decode_group, computed, word_timestamps)
                if pending is not None:
                    yield from pending.result()
                # failures of this group are reported once the group is done, in input order with the rest
                pending = _merge_future(job, failed, group)
            if pending is not None:
                yield from pending.result()

    def _logits_group(
        self,
        group: list[InputFile],
        on_audio: Callable[[float], None] | None,
        pool: ThreadPoolExecutor,
        word_timestamps: bool,
    ) -> tuple[list[_Pending], dict[int, FileResult]]:
        """Model outputs for a group; on an error the group's files are retried one by one."""
        try:
            return self._logits(group, on_audio, pool, word_timestamps), {}
        except Exception as exc:  # retry alone to isolate the bad file
            if len(group) == 1:
                return [], {0: FileResult(group[0], error=_describe_error(exc))}
            logger.debug("group of %d failed (%s); retrying its files one by one", len(group), exc)
        computed: list[_Pending] = []
        failed: dict[int, FileResult] = {}
        for i, file in enumerate(group):
            try:
                computed += self._logits([file], on_audio, pool, word_timestamps)
            except Exception as exc:
                failed[i] = FileResult(file, error=_describe_error(exc))
        return computed, failed

    def _logits(
        self,
        group: list[InputFile],
        on_audio: Callable[[float], None] | None,
        pool: ThreadPoolExecutor,
        word_timestamps: bool,
    ) -> list[_Pending]:
        """Run the model over a group. Whole inputs keep their logits for the group's batch decoding; long
        (chunked) inputs are fed window by window to an incremental decoder on the decoding thread and keep
        their logits only when word confidences are wanted."""
        opts = self.options
        n_best = max(opts.n_best, STREAM_CONFIDENCE_BEAMS) if word_timestamps else opts.n_best
        state = [_Pending(f) for f in group]
        for item, piece, chunked in self.pipe.iter_logits(
            [str(f.path) for f in group], opts.chunk_length_s, None, opts.batch_size
        ):
            st = state[item]
            st.frames += piece.shape[0]
            if chunked and not opts.greedy:
                if st.stream is None:
                    st.stream = self.processor.stream(**self.decoding.decode_kwargs, n_best=n_best)
                pool.submit(st.feed, piece)
                if word_timestamps:
                    st.pieces.append(piece)
            else:
                st.pieces.append(piece)
            if on_audio is not None:
                on_audio(piece.shape[0] * self.decoding.seconds_per_frame)
        return state

    def _decode_group(self, computed: list[_Pending], word_timestamps: bool) -> list[FileResult]:
        results: list[FileResult] = []
        whole = [p for p in computed if p.stream is None]
        decoded = self.decoding.decode(
            [str(p.file.path) for p in whole], [self._concat(p) for p in whole], word_timestamps, self.decode_threads
        )
        outcome_of = {id(p): d for p, d in zip(whole, decoded)}
        for p in computed:
            audio_seconds = _duration(p.file.path, p.frames * self.decoding.seconds_per_frame)
            try:
                if p.stream is not None:
                    transcript = self.decoding.from_beams(str(p.file.path), *self._finalize_stream(p, word_timestamps))
                else:
                    transcript = outcome_of[id(p)]
                    if isinstance(transcript, Exception):
                        raise transcript
            except Exception as exc:
                results.append(FileResult(p.file, error=_describe_error(exc), audio_seconds=audio_seconds))
                continue
            transcript.duration = audio_seconds
            transcript.word_timestamps = word_timestamps
            results.append(FileResult(p.file, transcript=transcript, audio_seconds=audio_seconds))
            p.pieces.clear()
        return results

    # ------------------------------------------------------------------------------------------ results

    def _concat(self, p: _Pending) -> np.ndarray:
        if not p.pieces:
            return np.zeros((0, self.decoding.vocab), np.float32)
        return p.pieces[0] if len(p.pieces) == 1 else np.concatenate(p.pieces)

    def _finalize_stream(self, p: _Pending, confidences: bool) -> tuple[list[Any], list[float]]:
        """Beams of an incrementally decoded input and, when asked for, the best beam's word confidences
        (computed from the input's log-probabilities, which the stream does not keep)."""
        from w2vlm.decoder import to_log_probs
        from w2vlm.decoder.confidence import word_confidences

        if p.error is not None:
            raise p.error
        beams = p.stream.finalize()
        if not beams or not confidences:
            return beams, []
        lp = to_log_probs(self._concat(p), self.decoding.vocab)
        return beams, word_confidences(beams, lp, self.decoding.labels, self.processor.decoder.language_model)[0]


class LogitsDecoder:
    """The decoding half of :class:`Transcriber`: model outputs (logits) to :class:`Transcript` objects, with
    the options' decoding mode, LM, hotwords and n-best. Also used by :mod:`w2vlm.distributed`, so that its
    transcripts are those of ``w2vlm transcribe``."""

    def __init__(self, processor: Any, options: TranscribeOptions, model_name: str, seconds_per_frame: float) -> None:
        from w2vlm.processor import decoder_is_bpe, decoder_labels

        self.processor = processor
        self.options = options
        self.model_name = model_name
        self.seconds_per_frame = seconds_per_frame
        self.labels = decoder_labels(processor.decoder)
        self.is_bpe = decoder_is_bpe(processor.decoder)
        self.vocab = len(self.labels)
        self.has_lm = getattr(processor.decoder, "language_model", None) is not None
        self.decode_kwargs: dict[str, Any] = {
            "beam_width": options.beam_width,
            "hotwords": options.hotwords or None,
        }

    @property
    def mode(self) -> str:
        if self.options.greedy:
            return "greedy"
        return "beam search + LM" if self.has_lm else "beam search, no LM"

    def decode(
        self, audio: Sequence[str], logits: Sequence[np.ndarray], word_timestamps: bool, threads: int
    ) -> list[Transcript | Exception]:
        """Transcripts of whole inputs (``audio`` names them), decoded in parallel on ``threads`` native
        threads; an input that fails gets its exception in its place."""
        if self.options.greedy:
            out: list[Transcript | Exception] = []
            for name, lg in zip(audio, logits):
                try:
                    out.append(self.greedy(name, lg))
                except Exception as exc:
                    out.append(exc)
            return out
        if not logits:
            return []
        conf = None if word_timestamps else []
        try:
            beams = self.processor.decode_beams_batch(list(logits), num_threads=threads, **self.decode_kwargs)
            return [self.from_beams(name, b, conf) for name, b in zip(audio, beams)]
        except Exception:  # decode one by one to find the bad one
            pass
        out = []
        for name, lg in zip(audio, logits):
            try:
                b = self.processor.decode_beams_batch([lg], num_threads=threads, **self.decode_kwargs)[0]
                out.append(self.from_beams(name, b, conf))
            except Exception as exc:
                out.append(exc)
        return out

    def from_beams(self, audio: str, beams: list[Any], conf: list[float] | None = None) -> Transcript:
        """A transcript from beams (best first); ``conf``: the best beam's word confidences, None to take
        them from the beam (computing them costs about as much as the beam search: only when shown)."""
        from w2vlm.processor import beam_fields

        spf = self.seconds_per_frame
        if not beams:
            return Transcript(audio=audio, text="", duration=0.0, model=self.model_name)
        best = beams[0]
        text, word_frames, _, _ = beam_fields(best)
        if conf is None:
            conf = list(getattr(best, "word_confidences", []) or [])
        words = [
            Word(w, s * spf, e * spf, float(conf[i]) if i < len(conf) else None)
            for i, (w, (s, e)) in enumerate(word_frames)
        ]
        alternatives = []
        for beam in beams[: self.options.n_best]:
            t, _, logit_score, lm_score = beam_fields(beam)
            alternatives.append(Alternative(t, logit_score, lm_score))
        return Transcript(
            audio=audio,
            text=text,
            duration=0.0,
            words=words,
            alternatives=alternatives,
            model=self.model_name,
        )

    def greedy(self, audio: str, logits: np.ndarray) -> Transcript:
        from w2vlm.decoder import to_log_probs

        lp = to_log_probs(logits, self.vocab)
        text, words = greedy_words(lp, self.labels, self.is_bpe)
        spf = self.seconds_per_frame
        return Transcript(
            audio=audio,
            text=text,
            duration=0.0,
            words=[Word(w, s * spf, e * spf, c) for w, s, e, c in words],
            alternatives=[Alternative(text, float(lp.max(axis=1).sum()) if lp.size else 0.0, None)],
            model=self.model_name,
        )


def greedy_words(
    log_probs: np.ndarray, labels: Sequence[str], is_bpe: bool = False
) -> tuple[str, list[tuple[str, int, int, float]]]:
    """Best-path CTC decoding of (frames, vocab) log-probabilities.

    Returns the text and its words as (word, start frame, end frame (exclusive), confidence), where a word's
    confidence is the lowest, over its tokens, of the token's posterior averaged over the frames where it was
    emitted.
    """
    if log_probs.shape[0] == 0:
        return "", []
    ids = log_probs.argmax(axis=1)
    probs = np.exp(log_probs[np.arange(ids.size), ids])
    change = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [ids.size]])
    words: list[tuple[str, int, int, float]] = []
    cur: list[str] = []
    cur_start = cur_end = 0
    cur_conf = 1.0

    def close() -> None:
        nonlocal cur, cur_conf
        if cur:
            words.append(("".join(cur), cur_start, cur_end, cur_conf))
        cur, cur_conf = [], 1.0

    for s, e in zip(starts.tolist(), ends.tolist()):
        label = labels[int(ids[s])]
        if label == "":
            continue
        if label == " " or (not is_bpe and label.isspace()):
            close()
            continue
        piece = label
        if is_bpe:
            if label.startswith("▁"):
                close()
                piece = label.strip("▁") or ""
                if label == "▁⁇▁":
                    piece = "⁇"
            if not piece:
                continue
        if not cur:
            cur_start = s
        cur.append(piece)
        cur_end = e
        cur_conf = min(cur_conf, float(probs[s:e].mean()))
    close()
    return " ".join(w for w, *_ in words), words


def _merge_future(job: Future, failed: dict[int, FileResult], group: list[InputFile]) -> Future:
    """A future of the group's results in input order: decoded files and the ones that failed earlier."""
    if not failed:
        return job
    merged: Future = Future()

    def done(f: Future) -> None:
        try:
            decoded = iter(f.result())
        except BaseException as exc:  # pragma: no cover - _decode_group catches per file
            merged.set_exception(exc)
            return
        merged.set_result([failed[i] if i in failed else next(decoded) for i in range(len(group))])

    job.add_done_callback(done)
    return merged


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _duration(path: Path, fallback: float) -> float:
    from w2vlm.audio import audio_duration

    value = audio_duration(path)
    return float(value) if value is not None and value > 0 else float(fallback)


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, W2vlmError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------ command line


@dataclass
class RunSummary:
    files: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    load_seconds: float = 0.0

    @property
    def speed(self) -> float:
        """Audio seconds transcribed per second of wall time (model loading excluded)."""
        return self.audio_seconds / self.seconds if self.seconds > 0 else 0.0


def run(
    inputs: Sequence[str],
    options: TranscribeOptions,
    *,
    output_dir: str | None = None,
    output_format: str = "txt",
    skip_existing: bool = False,
    word_timestamps: bool = False,
    stdout: TextIO | None = None,
    console: Any = None,
    progress: bool | None = None,
) -> RunSummary:
    """Everything ``w2vlm transcribe`` does after parsing its options.

    Problems with single inputs go to ``console`` (a rich Console on stderr) as one line each and count as
    failed; problems that stop the whole run (bad options, a model that cannot be loaded) raise
    :class:`~w2vlm.errors.W2vlmError`.
    """
    from rich.console import Console

    out = stdout or sys.stdout
    err = console or Console(stderr=True)
    formats = expand_formats(output_format)
    summary = RunSummary()
    if output_dir is None and len(formats) > 1:
        raise TranscribeError("--output-format all writes several files per input: it needs --output-dir")
    options.validate()

    files, problems = collect_inputs(inputs)
    for raw, problem in problems:
        _error(err, raw, problem)
    summary.failed += len(problems)
    summary.files = len(files) + len(problems)

    # output names: <output dir>/<folder relative to the input folder>/<stem>.<ext>; clashes are errors
    todo: list[InputFile] = []
    bases: dict[int, Path] = {}
    claimed: dict[Path, Path] = {}
    for f in files:
        if output_dir is not None:
            base = Path(output_dir).expanduser() / f.relative / f.path.stem
            if base in claimed:
                _error(err, str(f.path), f"its outputs would overwrite those of {claimed[base]} ({base}.*); skipped")
                summary.failed += 1
                continue
            claimed[base] = f.path
            if skip_existing and all(p.is_file() for p in output_paths(base, formats).values()):
                summary.skipped += 1
                continue
            bases[id(f)] = base
        todo.append(f)
    if output_dir is not None:
        out_root = Path(output_dir).expanduser()
        if out_root.exists() and not out_root.is_dir():
            raise TranscribeError(f"--output-dir: {out_root} exists and is not a folder")
    if not todo:
        return summary

    t0 = time.perf_counter()
    transcriber = Transcriber(options)
    summary.load_seconds = time.perf_counter() - t0
    logger.info("model %s loaded in %.1f s (%s)", transcriber.folder, summary.load_seconds, transcriber.mode)

    total = sum(_duration_or_zero(f.path) for f in todo)
    show = progress if progress is not None else err.is_terminal
    several = len(todo) + summary.skipped + summary.failed > 1
    t1 = time.perf_counter()
    with _progress_bar(err, total, enabled=show) as bar:
        for result in transcriber.transcribe(todo, bar.advance, word_timestamps=word_timestamps):
            bar.file_done(result)
            if result.error is not None:
                _error(err, str(result.file.path), result.error)
                summary.failed += 1
                continue
            assert result.transcript is not None
            summary.audio_seconds += result.audio_seconds
            try:
                if output_dir is None:
                    _to_stdout(out, result.transcript, formats[0], several)
                else:
                    write_transcript(result.transcript, bases[id(result.file)], formats)
            except W2vlmError as exc:
                _error(err, str(result.file.path), str(exc))
                summary.failed += 1
                continue
            summary.done += 1
    summary.seconds = time.perf_counter() - t1
    return summary


def _to_stdout(out: TextIO, transcript: Transcript, fmt: str, several: bool) -> None:
    if fmt == "txt" and several:
        out.write(f"{transcript.audio}\t{transcript.text}\n")
    elif fmt == "json" and several:
        import json

        out.write(json.dumps(json.loads(render(transcript, "json")), ensure_ascii=False) + "\n")
    else:
        text = render(transcript, fmt)
        if several and fmt in ("srt", "vtt", "tsv"):
            out.write(f"==> {transcript.audio} <==\n")
        out.write(text if text.endswith("\n") or not text else text + "\n")
    out.flush()


def _duration_or_zero(path: Path) -> float:
    from w2vlm.audio import audio_duration

    try:
        return float(audio_duration(path) or 0.0)
    except Exception:  # a corrupt header: the file's own error is reported when it is transcribed
        return 0.0


def _error(console: Any, name: str, message: str) -> None:
    """One line on the console: ``error: <input>: <problem>`` (the input named once)."""
    from rich.text import Text

    line = message if message.startswith(name) else f"{name}: {message}"
    console.print(Text.assemble(("error:", "bold red"), " ", line), highlight=False, soft_wrap=True)


class _progress_bar:
    """A rich progress bar over audio seconds, with the speed in audio-seconds per second."""

    def __init__(self, console: Any, total_seconds: float, *, enabled: bool) -> None:
        self.enabled = enabled
        self.console = console
        self.total = total_seconds
        self.progress: Any = None
        self.task: Any = None
        self.started = time.perf_counter()

    def __enter__(self) -> _progress_bar:
        if not self.enabled:
            return self
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class _Speed(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.completed / task.elapsed if task.elapsed else 0.0
                return Text(f"{speed:6.1f} audio-s/s", style="progress.data.speed")

        class _Seconds(ProgressColumn):
            def render(self, task: Any) -> Text:
                return Text(f"{task.completed:7.1f}/{task.total or 0:.1f} s", style="progress.download")

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _Seconds(),
            _Speed(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.__enter__()
        self.task = self.progress.add_task("transcribing", total=max(self.total, 1e-9))
        return self

    def advance(self, seconds: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=seconds)

    def file_done(self, result: FileResult) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=f"{result.file.path.name[:40]}")

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)  # type: ignore[arg-type]


def describe_summary(summary: RunSummary) -> str:
    """One line: files done/skipped/failed and the speed in audio-seconds per second."""
    parts = [f"{summary.done} transcribed"]
    if summary.skipped:
        parts.append(f"{summary.skipped} skipped (outputs exist)")
    if summary.failed:
        parts.append(f"{summary.failed} failed")
    line = ", ".join(parts)
    if summary.done:
        line += (
            f"; {summary.audio_seconds:.1f} s of audio in {summary.seconds:.2f} s = {summary.speed:.1f} audio-s/s"
            f" (model load {summary.load_seconds:.1f} s)"
        )
    return line


__all__ = [
    "AUDIO_EXTENSIONS",
    "FileResult",
    "InputFile",
    "RunSummary",
    "TranscribeError",
    "TranscribeOptions",
    "Transcriber",
    "build_processor",
    "collect_inputs",
    "describe_summary",
    "greedy_words",
    "parse_hotwords",
    "run",
]
