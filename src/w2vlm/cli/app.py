"""The command line's Typer app, the options several commands share, and their common set-up."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator
from typing import Annotated

import typer

from w2vlm.defaults import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_UNK_SCORE_OFFSET
from w2vlm.engine.config import (
    DEFAULT_MAX_SEGMENT_S,
    DEFAULT_NO_SPEECH_THRESHOLD,
    DEFAULT_VAD_ABOVE_S,
    DEFAULT_VAD_MIN_SILENCE_S,
    DEFAULT_VAD_MIN_SPEECH_S,
    DEFAULT_VAD_PAD_S,
    DEFAULT_VAD_THRESHOLD,
    DTYPES,
)
from w2vlm.memory import tune_allocator

#: ``w2vlm train``'s exit status when it saved and stopped because of ``--max-memory`` (EX_TEMPFAIL: run it
#: again with ``--resume``).
EXIT_MEMORY = 75

app = typer.Typer(
    name="w2vlm",
    help="Speech recognition with wav2vec2-family CTC models and n-gram LM beam search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


# Options shared by several commands: declared once so that their flags and help read the same everywhere.
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model folder (hub layout) or hub id.  [default: the embedded model]"),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]


def _one_of(flag: str, allowed: tuple[str | None, ...]) -> object:
    """An option callback that refuses values outside ``allowed`` (checked before the command does any work)."""

    def check(value: str | None) -> str | None:
        if value not in allowed:
            names = ", ".join(a for a in allowed if a is not None)
            raise typer.BadParameter(f"expected one of {names}; got {value!r}", param_hint=f"'{flag}'")
        return value

    return check


DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto, float32, float16 or bfloat16; auto: bfloat16 (or float16) on CUDA, float32 on a CPU.",
        callback=_one_of("--dtype", DTYPES),
    ),
]
QuantizeOption = Annotated[
    str | None,
    typer.Option(
        "--quantize",
        help="int8: 8-bit weights (dynamic int8 on CPU, bitsandbytes on CUDA).  [default: none]",
        callback=_one_of("--quantize", (None, "int8")),
    ),
]
ManifestArgument = Annotated[
    str, typer.Argument(help="JSONL or CSV manifest (audio path + reference text), or a folder of audio + .txt.")
]
DecodeThreadsOption = Annotated[
    int | None, typer.Option("--threads", min=1, help="Decoding threads.  [default: all CPUs]")
]
CacheDirOption = Annotated[
    str | None, typer.Option("--cache-dir", help="Logits cache folder.  [default: ~/.cache/w2vlm/logits]")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write cached logits.")]
NoNormalizeOption = Annotated[
    bool, typer.Option("--no-normalize", help="Score texts as they are (no lowercasing, punctuation kept).")
]
UnkScoreOffsetOption = Annotated[
    float | None,
    typer.Option(
        "--unk-score-offset",
        help="Score added to a word the LM does not know (log10).  [default: the LM's attrs.json, else "
        f"{DEFAULT_UNK_SCORE_OFFSET:g}]",
    ),
]
#: ``= DEFAULT_BEAM_WIDTH`` where it is used
BeamWidthOption = Annotated[int, typer.Option("--beam-width", help="Beams kept per frame.")]
AlphaOption = Annotated[
    float | None,
    typer.Option("--alpha", help=f"LM weight.  [default: the LM's attrs.json, else {DEFAULT_ALPHA:g}]"),
]
BetaOption = Annotated[
    float | None,
    typer.Option("--beta", help=f"Word insertion bonus.  [default: the LM's attrs.json, else {DEFAULT_BETA:g}]"),
]
LanguageOption = Annotated[
    str | None,
    typer.Option(
        "--language",
        help="The model's language (ISO 639, e.g. en), reported in the outputs; a model whose card names "
        "another is refused.  [default: the model card's (README.md)]",
    ),
]
LmFileOption = Annotated[
    str | None,
    typer.Option(
        "--lm",
        help="N-gram LM file (.arpa, .arpa.gz, w2vlm .w2vlm or KenLM .bin), or a folder of one (build-lm's, a "
        "language_model/, a model's), replacing the model's own; a unigrams.txt beside it is used.  "
        "[default: the model's language_model/]",
    ),
]
TableQuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or table.")]
# voice activity detection and the no-speech gate (transcribe and serve); defaults: w2vlm.engine.config
VadOption = Annotated[
    bool | None,
    typer.Option(
        "--vad/--no-vad",
        help="Cut inputs into speech segments with Silero VAD (the 'vad' extra) and recognise each on its own; "
        f"silence and noise are skipped.  [default: on for inputs longer than {DEFAULT_VAD_ABOVE_S:g} s]",
        show_default=False,
    ),
]
VadThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--vad-threshold", help=f"Speech probability that starts speech.  [default: {DEFAULT_VAD_THRESHOLD:g}]"
    ),
]
MinSpeechOption = Annotated[
    float | None,
    typer.Option(
        "--min-speech", help=f"Shortest speech segment kept, in seconds.  [default: {DEFAULT_VAD_MIN_SPEECH_S:g}]"
    ),
]
MinSilenceOption = Annotated[
    float | None,
    typer.Option(
        "--min-silence",
        help=f"Silence that ends a speech segment, in seconds.  [default: {DEFAULT_VAD_MIN_SILENCE_S:g}]",
    ),
]
SpeechPadOption = Annotated[
    float | None,
    typer.Option(
        "--speech-pad",
        help=f"Audio kept on each side of a speech segment, in seconds.  [default: {DEFAULT_VAD_PAD_S:g}]",
    ),
]
MaxSegmentOption = Annotated[
    float | None,
    typer.Option(
        "--max-segment",
        help="Longest speech segment in seconds; longer speech is cut at its quietest point.  [default: the "
        f"model's max_segment_s, else {DEFAULT_MAX_SEGMENT_S:g}]",
    ),
]
NoSpeechThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--no-speech-threshold",
        help="Segments whose no-speech probability (from the model's own posteriors) is above this give no "
        f"words; 1 keeps every word.  [default: {DEFAULT_NO_SPEECH_THRESHOLD:g}]",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        from w2vlm import __version__

        typer.echo(f"w2vlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print w2vlm's version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Speech recognition with wav2vec2-family CTC models and n-gram LM beam search."""


@contextlib.contextmanager
def log_records_to(err: object, level: int = logging.WARNING, show_time: bool = False) -> Iterator[None]:
    """w2vlm's log records shown on stderr (at ``level``, with the time of day when ``show_time``) while a command
    runs, unless a handler is already there; the handler and the level are taken back after it."""
    log = logging.getLogger("w2vlm")
    handler = None
    before = log.level
    if not log.handlers:
        from rich.logging import RichHandler

        handler = RichHandler(console=err, show_path=False, show_time=show_time, level=level)  # type: ignore[arg-type]
        log.addHandler(handler)
        if log.getEffectiveLevel() > level:
            log.setLevel(level)
    try:
        yield
    finally:
        if handler is not None:
            log.removeHandler(handler)
            log.setLevel(before)


@contextlib.contextmanager
def model_command(err: object, level: int = logging.WARNING, *, batch: bool = True) -> Iterator[None]:
    """Set-up shared by the commands that run a model: quiet hub progress bars, passive OpenMP waiting, for a
    ``batch`` command the allocator's free memory kept for reuse (:func:`w2vlm.memory.tune_allocator`), and
    w2vlm's log records shown on stderr (at ``level``) while the command runs."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the hub's download bars (model loading: model.py)
    # torch's OpenMP threads spin while waiting by default; next to the decoder's threads (and anything else
    # running) that made the model up to 20x slower on a 2-core machine. Read when torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if batch:
        tune_allocator()
    with log_records_to(err, level):
        yield


def lm_processor(
    model: str | None,
    lm: str | None,
    alpha: float | None,
    beta: float | None,
    unk_score_offset: float | None,
) -> object | None:
    """The model's processor with the LM the LM options ask for (another LM file, other weights), built
    once as ``transcribe`` builds it; None when no LM option is given (the model's own processor)."""
    if lm is None and alpha is None and beta is None and unk_score_offset is None:
        return None
    from w2vlm.model import resolve_model_path
    from w2vlm.transcribe import TranscribeOptions, build_processor

    options = TranscribeOptions(model=model, lm=lm, alpha=alpha, beta=beta, unk_score_offset=unk_score_offset)
    options.validate()
    return build_processor(resolve_model_path(model), options)


def main() -> None:
    """Entry point of the ``w2vlm`` console script."""
    try:
        app()
    finally:
        # Python's shutdown looks for reference cycles among every object the command made (torch, transformers,
        # the model, the LM): ~1 s of a 4 s `w2vlm transcribe` of one short file. Frozen objects are left out of
        # that walk; everything else about shutdown (atexit, flushing, closing) is as before. The native modules'
        # instances then outlive them, so their leak report (on everywhere else) is turned off first.
        from w2vlm.memory import silence_leak_report

        silence_leak_report()
        gc.freeze()
