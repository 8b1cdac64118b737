"""Batch transcription of audio files: the engine behind ``w2vlm transcribe``.

:func:`collect_inputs` turns the command line's files and folders into a list of audio files (folders are
walked recursively for known audio extensions). :class:`Transcriber` loads the model, the processor and the
decoder once and transcribes files in groups: the CTC model runs over a group's files (windows batched as the
pipeline does), then the group is decoded on the decoder's native threads in a background thread while the
model already runs over the next group. A file that cannot be read or decoded is reported and skipped; the
others go on. :func:`w2vlm.transcribe_run.run` adds the command line's side: output names, ``--skip-existing``, atomic
writes, stdout, the progress bar and the summary.

Decoding modes: beam search with the model's LM (or ``lm_path``); beam search without an LM
(``no_lm`` with a beam width, hotwords or several best hypotheses requested); greedy best-path decoding
(``no_lm`` otherwise: per frame the most probable token, repeats merged, blanks dropped).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.audio import AUDIO_EXTENSIONS
from w2vlm.engine.alignment import greedy_words
from w2vlm.engine.config import DTYPES, ConfigError, DecodeConfig, EngineConfig, available_cpus
from w2vlm.errors import LanguageModelError, W2vlmError
from w2vlm.manifest import MANIFEST_SUFFIXES
from w2vlm.model import gc_paused
from w2vlm.results import Transcript

logger = logging.getLogger("w2vlm.transcribe")

#: the input name that stands for standard input
STDIN = "-"


class TranscribeError(W2vlmError, ValueError):
    """Options of a transcription run that cannot work together or have bad values."""


@dataclass
class TranscribeOptions:
    """What to load and how to decode; None means the model's own setting or the decoder's default."""

    model: str | None = None
    lm: str | None = None
    no_lm: bool = False
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    batch_size: int | None = None
    chunk_length_s: float | None = None
    beam_width: int | None = None
    alpha: float | None = None
    beta: float | None = None
    unk_score_offset: float | None = None
    #: the model's language (ISO 639): reported in the outputs, checked against the model card's
    language: str | None = None
    hotwords: list[str] = field(default_factory=list)
    n_best: int = 1
    threads: int | None = None
    #: voice activity detection: True, False, or None (on for long inputs); the other VAD settings as in
    #: :class:`~w2vlm.engine.config.EngineConfig` (None: its defaults)
    vad: bool | None = None
    vad_threshold: float | None = None
    vad_min_speech_s: float | None = None
    vad_min_silence_s: float | None = None
    vad_pad_s: float | None = None
    max_segment_s: float | None = None
    no_speech_threshold: float | None = None
    #: read inputs in worker processes (True), threads (False), or as the engine decides (None)
    read_processes: bool | None = None

    def validate(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
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
        if self.no_lm and (self.alpha is not None or self.beta is not None or self.unk_score_offset is not None):
            raise TranscribeError(
                "--alpha/--beta/--unk-score-offset weight the language model; they cannot go with --no-lm"
            )
        weights = (("--alpha", self.alpha), ("--beta", self.beta), ("--unk-score-offset", self.unk_score_offset))
        for name, value in weights:
            if value is not None and not np.isfinite(value):
                raise TranscribeError(f"{name}: must be a finite number; got {value}")

        if self.dtype not in DTYPES:
            raise TranscribeError(f"--dtype: expected one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.quantize is not None and self.dtype not in ("auto", "float32"):
            raise TranscribeError("--quantize int8 runs float32 activations; it cannot go with --dtype " + self.dtype)
        self.engine_config()  # the VAD settings
        try:
            self.decode_config(False)
        except ConfigError as exc:
            raise TranscribeError(_flag_names(str(exc))) from None

    @property
    def greedy(self) -> bool:
        """Best-path decoding: no LM and nothing that needs a beam search."""
        return self.no_lm and self.beam_width is None and self.n_best == 1 and not self.hotwords

    def decode_config(self, word_timestamps: bool) -> DecodeConfig:
        """How the engine decodes for these options (the LM, when used, is the processor's)."""
        extra = {} if self.no_speech_threshold is None else {"no_speech_threshold": self.no_speech_threshold}
        return DecodeConfig(
            use_lm=not self.no_lm,
            beam_width=self.beam_width,
            hotwords=tuple(self.hotwords),
            n_best=self.n_best,
            timestamps="word" if word_timestamps else None,
            word_confidences=word_timestamps,
            **extra,
        )

    def engine_config(self) -> EngineConfig:
        """How the engine feeds the model for these options."""
        budget = self.threads or available_cpus()
        vad = {
            name: getattr(self, name)
            for name in ("vad_threshold", "vad_min_speech_s", "vad_min_silence_s", "vad_pad_s", "max_segment_s")
            if getattr(self, name) is not None
        }
        try:
            return EngineConfig(
                device=self.device,
                dtype=self.dtype,
                quantize=self.quantize,
                chunk_length_s=self.chunk_length_s,
                batch_size=self.batch_size,
                decode_threads=max(1, budget - budget // 2),
                # torch's threads for the forward pass (the reading workers run on one each): three quarters of the
                # budget (all of two CPUs); the decoder has half. They overlap because the decoder waits for the
                # model most of the time (the embedded model on 2 CPUs, a 10-minute file: 134 -> 169 audio-s/s
                # median against torch with 1 thread); more would oversubscribe the CPUs, where torch's OpenMP
                # threads slow down badly
                torch_threads=max(1, budget - budget // 4),
                vad=self.vad,
                read_processes=self.read_processes,
                **vad,
            )
        except ConfigError as exc:
            raise TranscribeError(_flag_names(str(exc))) from None

    def model_dtype(self) -> str | None:
        """The dtype to load the model in (``auto``: bf16/fp16 on CUDA, float32 on a CPU)."""
        return None if self.quantize is not None else self.dtype


#: the command line's names of engine settings, for error messages
_FLAGS = {
    "vad_threshold": "--vad-threshold",
    "vad_min_speech_s": "--min-speech",
    "vad_min_silence_s": "--min-silence",
    "vad_pad_s": "--speech-pad",
    "max_segment_s": "--max-segment",
    "no_speech_threshold": "--no-speech-threshold",
    "chunk_length_s": "--chunk-length",
    "batch_size": "--batch-size",
}


def _flag_names(message: str) -> str:
    for name, flag in _FLAGS.items():
        message = message.replace(f"{name}:", f"{flag}:")
    return message


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
    #: how the input is named in messages and outputs (``-`` for standard input); the path by default
    name: str = ""
    #: the stem of its output files (``stdin`` for standard input); the file's stem by default
    stem: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or str(self.path)
        self.stem = self.stem or self.path.stem


def collect_inputs(
    inputs: Sequence[str | os.PathLike], stdin_file: Path | None = None
) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Files named on the command line and the audio files found in folders (recursively, sorted, hidden
    files skipped); returns (files, [(input, problem)]) with each file once. ``-`` stands for standard
    input, whose bytes the caller has copied to ``stdin_file``."""
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
        if str(raw) == STDIN:
            if stdin_file is None:
                errors.append((STDIN, "standard input cannot be read here (not with --ray)"))
            elif any(f.name == STDIN for f in files):
                errors.append((STDIN, "standard input given more than once"))
            else:
                files.append(InputFile(stdin_file, name=STDIN, stem="stdin"))
        elif path.is_dir():
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
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            errors.append(
                (
                    str(raw),
                    "a manifest, not audio: `w2vlm transcribe --ray MANIFEST` transcribes one (given alone), "
                    "`w2vlm eval MANIFEST` scores one",
                )
            )
        elif path.is_file():
            add(path, Path())
        elif path.exists():
            errors.append((str(raw), "not a regular file"))
        else:
            errors.append((str(raw), "no such file or folder"))
    return files, errors


# ------------------------------------------------------------------------------------------------ loading


def _read_lm_attrs(folder: Path) -> dict[str, Any]:

    attrs_file = folder / "language_model" / "attrs.json"
    if not attrs_file.is_file():
        return {}
    from w2vlm.fileio import read_json_object

    return read_json_object(attrs_file, LanguageModelError)


def _lm_overrides(options: TranscribeOptions) -> dict[str, float]:
    """The LM settings given on the command line (those not given keep the LM's attrs.json values)."""
    given = {"alpha": options.alpha, "beta": options.beta, "unk_score_offset": options.unk_score_offset}
    return {k: v for k, v in given.items() if v is not None}


def build_processor(folder: Path, options: TranscribeOptions) -> Any:
    """The model folder's processor with the decoder the options ask for (its LM, another LM, or none)."""
    from w2vlm.decoder import Alphabet, BeamSearchDecoderCTC, LanguageModel, load_alphabet_json, load_unigrams
    from w2vlm.decoder.ngram_files import lm_file_of
    from w2vlm.processor import Wav2Vec2ProcessorWithLM
    from w2vlm.processor_parts import load_feature_extractor, load_tokenizer, tokenizer_labels

    if not options.no_lm and options.lm is None:
        overrides = _lm_overrides(options)
        processor = Wav2Vec2ProcessorWithLM.from_pretrained(folder, **overrides)
        if overrides and not getattr(processor.decoder, "language_model", None):
            raise TranscribeError(
                f"--{'/--'.join(k.replace('_', '-') for k in overrides)}: {folder} has no language model "
                "(language_model/) to weight; pass --lm"
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
        lm_path = lm_file_of(options.lm, "--lm")
        unigrams_file = lm_path.parent / "unigrams.txt"
        unigrams = load_unigrams(unigrams_file) if unigrams_file.is_file() else None
        attrs = {k: v for k, v in _read_lm_attrs(folder).items() if k in ("alpha", "beta", "unk_score_offset")}
        attrs.update(_lm_overrides(options))
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


class Transcriber:
    """Loads a model + decoder once and transcribes files through the engine (:mod:`w2vlm.engine`), with
    per-file error isolation."""

    @gc_paused()  # loading: see gc_paused
    def __init__(self, options: TranscribeOptions) -> None:
        options.validate()
        self.options = options

        from w2vlm.engine import Engine
        from w2vlm.model import load_model, resolve_language, resolve_model_path

        self.folder = resolve_model_path(options.model)
        self.language = resolve_language(options.language, self.folder)
        self.model_name = options.model if options.model is not None else "w2vlm embedded default"
        processor = build_processor(self.folder, options)
        engine_config = options.engine_config()
        model = load_model(self.folder, device=options.device, dtype=options.model_dtype(), quantize=options.quantize)
        self.engine = Engine(
            model, processor.feature_extractor, processor.decoder, engine_config, model_name=self.model_name
        )
        self.torch_threads = None if self.engine.runner.on_cuda else engine_config.torch_threads
        self.processor = processor

    @property
    def mode(self) -> str:
        return self.engine.decoding.mode(self.options.decode_config(False))

    def transcribe(
        self,
        files: Sequence[InputFile],
        on_audio: Callable[[float], None] | None = None,
        *,
        word_timestamps: bool = False,
    ) -> Iterator[FileResult]:
        """Transcribe ``files`` in order, yielding one :class:`FileResult` per file as soon as it is done.

        ``on_audio(seconds)`` is called as files are done (for a progress bar).
        """
        decode = self.options.decode_config(word_timestamps)
        paths = [str(f.path) for f in files]
        for file, transcript in zip(files, self.engine.transcribe(paths, decode)):
            if on_audio is not None:
                on_audio(transcript.duration)
            if transcript.error is not None:
                error = transcript.error.replace(str(file.path), file.name)  # standard input: "-", not its copy
                yield FileResult(file, error=error, audio_seconds=transcript.duration)
                continue
            transcript.word_timestamps = word_timestamps
            transcript.audio = file.name
            transcript.language = self.language
            yield FileResult(file, transcript=transcript, audio_seconds=transcript.duration)


__all__ = [
    "AUDIO_EXTENSIONS",
    "FileResult",
    "InputFile",
    "TranscribeError",
    "TranscribeOptions",
    "Transcriber",
    "build_processor",
    "collect_inputs",
    "greedy_words",
    "parse_hotwords",
]
