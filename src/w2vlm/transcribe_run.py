"""What ``w2vlm transcribe`` does after parsing its options (:func:`run`): output names, ``--skip-existing``,
standard input, writes on a thread of their own, stdout in input order, ``--verbose``, the progress bar and
the summary line. The transcription itself is :class:`w2vlm.transcribe.Transcriber`'s."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from w2vlm.engine.config import reads_in_processes
from w2vlm.engine.reader_pool import ForkServer
from w2vlm.errors import W2vlmError
from w2vlm.fileio import check_output
from w2vlm.results import Transcript
from w2vlm.transcribe import (
    STDIN,
    FileResult,
    InputFile,
    TranscribeError,
    TranscribeOptions,
    Transcriber,
    collect_inputs,
)
from w2vlm.writers import CueStyle, expand_formats, output_paths, render, write_transcript

logger = logging.getLogger("w2vlm.transcribe")


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
    cue_style: CueStyle | None = None,
    stdin: BinaryIO | None = None,
    verbose: bool = False,
) -> RunSummary:
    """Everything ``w2vlm transcribe`` does after parsing its options.

    ``verbose``: print each input's segments with their times on ``console`` as the input is done. An
    input ``-`` is read from ``stdin`` (default: the process's standard input). Problems with single
    inputs go to ``console`` (a rich Console on stderr) as one line each and count as
    failed; problems that stop the whole run (bad options, a model that cannot be loaded) raise
    :class:`~w2vlm.errors.W2vlmError`.
    """
    from rich.console import Console

    out = stdout or sys.stdout
    err = console or Console(stderr=True)
    formats = expand_formats(output_format)
    if output_dir is None and len(formats) > 1:
        raise TranscribeError(f"--output-format {','.join(formats)}: several files per input: it needs --output-dir")
    options.validate()
    if output_dir is not None:
        check_output(Path(output_dir).expanduser(), folder=True)
    with contextlib.ExitStack() as stack:
        stdin_file = None
        if STDIN in [str(raw) for raw in inputs]:
            stdin_file = stack.enter_context(_spooled_stdin(stdin))
        return _run(inputs, options, stdin_file, output_dir, formats, skip_existing, word_timestamps, out, err,
                    progress, cue_style, verbose, stack)  # fmt: skip


@contextlib.contextmanager
def _spooled_stdin(stdin: BinaryIO | None) -> Iterator[Path]:
    """Standard input copied to a temporary file (in blocks: memory stays small however long the audio),
    removed afterwards; the audio format is found from the bytes."""
    source = stdin if stdin is not None else sys.stdin.buffer
    with tempfile.TemporaryDirectory(prefix="w2vlm-stdin-") as folder:
        path = Path(folder) / "stdin"
        with open(path, "wb") as f:
            shutil.copyfileobj(source, f, 1 << 20)
        yield path


def _run(
    inputs: Sequence[str],
    options: TranscribeOptions,
    stdin_file: Path | None,
    output_dir: str | None,
    formats: list[str],
    skip_existing: bool,
    word_timestamps: bool,
    out: TextIO,
    err: Any,
    progress: bool | None,
    cue_style: CueStyle | None,
    verbose: bool,
    stack: contextlib.ExitStack,
) -> RunSummary:
    summary = RunSummary()
    files, problems = collect_inputs(inputs, stdin_file)
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
            base = Path(output_dir).expanduser() / f.relative / f.stem
            if base in claimed:
                _error(err, f.name, f"its outputs would overwrite those of {claimed[base]} ({base}.*); skipped")
                summary.failed += 1
                continue
            claimed[base] = Path(f.name)
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
    # reading processes, when the run uses them, start their imports now, while the model loads
    server = ForkServer() if reads_in_processes(options.read_processes, len(todo), _cuda_expected(options)) else None
    if server is not None:
        stack.callback(server.close)
    transcriber = Transcriber(options)
    stack.callback(transcriber.engine.close)  # its reading processes, if it started any
    if server is not None:
        transcriber.engine.reader_pool(server)
    summary.load_seconds = time.perf_counter() - t0
    logger.info("model %s loaded in %.1f s (%s)", transcriber.folder, summary.load_seconds, transcriber.mode)

    total = sum(_duration_or_zero(f.path) for f in todo)
    show = progress if progress is not None else err.is_terminal
    several = len(todo) + summary.skipped + summary.failed > 1
    t1 = time.perf_counter()
    # files are written on a thread of their own, so that output I/O overlaps the engine's work; stdout keeps
    # the input order on this thread
    writes: list[tuple[FileResult, Future]] = []

    def settle(done_only: bool) -> None:
        while writes and (not done_only or writes[0][1].done()):
            result, future = writes.pop(0)
            try:
                future.result()
            except W2vlmError as exc:
                _error(err, result.file.name, str(exc))
                summary.failed += 1
                continue
            summary.done += 1
            summary.audio_seconds += result.audio_seconds

    try:
        with _progress_bar(err, total, enabled=show) as bar, ThreadPoolExecutor(1, "w2vlm-write") as writer:
            for result in transcriber.transcribe(todo, bar.advance, word_timestamps=word_timestamps):
                bar.file_done(result)
                if result.error is not None:
                    _error(err, result.file.name, result.error)
                    summary.failed += 1
                    continue
                assert result.transcript is not None
                if verbose:
                    _print_segments(bar, result, several)
                if output_dir is not None:
                    job = writer.submit(write_transcript, result.transcript, bases[id(result.file)], formats, cue_style)
                else:  # stdout: written here, in input order
                    job = Future()
                    try:
                        _to_stdout(out, result.transcript, formats[0], several, cue_style)
                        job.set_result(None)
                    except W2vlmError as exc:
                        job.set_exception(exc)
                writes.append((result, job))
                settle(done_only=True)
            settle(done_only=False)
    except KeyboardInterrupt:
        settle(done_only=False)  # the writer finished what it had: those outputs are complete
        left = len(todo) - summary.done - summary.failed
        err.print(
            f"interrupted: {summary.done} of {len(todo)} inputs transcribed and written"
            + (f"; --skip-existing goes on with the other {left}" if output_dir is not None and left else "")
        )
        raise
    summary.seconds = time.perf_counter() - t1
    return summary


def _to_stdout(out: TextIO, transcript: Transcript, fmt: str, several: bool, style: CueStyle | None) -> None:
    if fmt == "txt" and several:
        out.write(f"{transcript.audio}\t{transcript.text}\n")
    elif fmt == "json" and several:
        import json

        out.write(json.dumps(json.loads(render(transcript, "json")), ensure_ascii=False) + "\n")
    else:
        text = render(transcript, fmt, style)
        if several and fmt in ("srt", "vtt", "tsv"):
            out.write(f"==> {transcript.audio} <==\n")
        out.write(text if text.endswith("\n") or not text else text + "\n")
    out.flush()


def _print_segments(bar: _progress_bar, result: FileResult, several: bool) -> None:
    """``--verbose``: the input's segments with their times, on stderr (above the progress bar)."""
    from rich.text import Text

    from w2vlm.writers import segment_line

    assert result.transcript is not None
    if several:
        bar.console.print(Text(f"==> {result.file.name} <==", style="bold"), highlight=False)
    for segment in result.transcript.segments:
        bar.console.print(Text(segment_line(segment)), highlight=False, soft_wrap=True)


def _cuda_expected(options: TranscribeOptions) -> bool:
    """Whether the model will run on a GPU (before it is loaded; a bad device is named when it is)."""
    from w2vlm.errors import ModelError
    from w2vlm.model import resolve_device

    try:
        return resolve_device(options.device).type == "cuda"
    except ModelError:
        return False


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
            self.progress.update(self.task, description=f"{Path(result.file.name).name[:40]}")

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


__all__ = ["RunSummary", "describe_summary", "run"]
