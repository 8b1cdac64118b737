"""``w2vlm build-lm`` and ``add-lm``: n-gram language models, on their own or added to a CTC model."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from w2vlm.cli.app import DeviceOption, DtypeOption, LanguageOption, QuantizeOption, app
from w2vlm.lm import DEFAULT_MEMORY

# options both commands take
OrderOption = Annotated[int, typer.Option("--order", "-n", help="N-gram order.")]
PruneOption = Annotated[
    str | None,
    typer.Option(
        "--prune",
        help="Count thresholds per order like lmplz, e.g. '0 0 1' or '0,0,1': n-grams (order >= 2) seen "
        "at most that many times are dropped; the last value applies to higher orders.",
    ),
]
VocabLimitOption = Annotated[
    int | None,
    typer.Option("--vocab-limit", help="Keep only the K most frequent words; the others become <unk>."),
]
NormalizeOption = Annotated[
    bool,
    typer.Option(
        "--normalize/--no-normalize",
        help="Reduce the text to the allowed characters (default a-z and '; add-lm: the model's).",
    ),
]
TextFilesArgument = Annotated[list[str], typer.Argument(help="UTF-8 text files (plain or .gz), one sentence a line.")]
LmQuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or summary.")]
MemoryOption = Annotated[
    str,
    typer.Option(
        "--memory",
        "-S",
        help="Memory budget of the build, like lmplz -S (e.g. 1G, 512M, 50%): the counting tables get what "
        "the process does not already hold; when full, sorted runs are spilled to --temp-dir and merged.",
    ),
]
TempDirOption = Annotated[
    str | None,
    typer.Option("--temp-dir", "-T", help="Folder for spilled runs (removed after).  [default: system temp]"),
]

_STAGES = {
    "read": "Reading text",
    "estimate": "Estimating",
    "write": "Writing ARPA",
    "heldout": "Scoring held-out",
    "logits": "Running the model",
    "tune": "Tuning alpha/beta",
}


def parse_prune(prune: str | None) -> list[int] | None:
    """``--prune '0 0 1'`` (or ``0,0,1``) → ``[0, 0, 1]``."""
    if not prune:
        return None
    parts = [p for p in re.split(r"[,\s]+", prune.strip()) if p]
    if not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"expected non-negative integers like '0 0 1', got {prune!r}", param_hint="'--prune'")
    return [int(p) for p in parts]


@contextlib.contextmanager
def lm_progress(console: Any, quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display (on a terminal, unless quiet) fed by ``progress(stage, done, total)``."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not sys.stderr.isatty(),
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            size = total if total > 0 else None  # None: a pulsing bar
            if stage not in tasks:
                tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=size)
            bar.update(tasks[stage], completed=done, total=size)

        yield on_progress


def print_lm_stats(stats: Any) -> None:
    """The n-gram counts, discounts and text statistics of a built LM, on stdout."""
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(title=f"{stats.order}-gram modified Kneser-Ney LM", show_header=True, title_justify="left")
    for column in ("order", "n-grams", "D1", "D2", "D3+"):
        table.add_column(column, justify="right")
    for n, (count, d) in enumerate(zip(stats.ngram_counts, stats.discounts, strict=True), start=1):
        table.add_row(str(n), f"{count:,}", f"{d[0]:.3f}", f"{d[1]:.3f}", f"{d[2]:.3f}")
    out.print(table)
    out.print(
        f"text: {stats.num_sentences:,} sentences, {stats.num_words:,} words, vocabulary {stats.vocab_size:,}"
        + (f" ({stats.num_unk:,} words mapped to <unk>)" if stats.num_unk else "")
    )
    if stats.heldout_perplexity is not None:
        out.print(
            f"held-out perplexity: {stats.heldout_perplexity:.2f} over {stats.heldout_tokens:,} tokens "
            f"(OOV rate {100 * (stats.heldout_oov_rate or 0):.2f}%)"
        )


@app.command("build-lm")
def build_lm_command(
    text_files: TextFilesArgument,
    output: Annotated[str, typer.Option("--output", "-o", help="ARPA file to write (.arpa or .arpa.gz).")],
    order: OrderOption = 3,
    prune: PruneOption = None,
    vocab_limit: VocabLimitOption = None,
    normalize: NormalizeOption = True,
    allowed_chars: Annotated[
        str | None,
        typer.Option("--allowed-chars", help="Characters words may contain (default: a-z and ')."),
    ] = None,
    alphabet: Annotated[
        str | None,
        typer.Option("--alphabet", help="Take the allowed characters from a model's vocab.json/alphabet.json."),
    ] = None,
    heldout: Annotated[
        list[str] | None,
        typer.Option("--heldout", help="Held-out text to report perplexity on (repeatable)."),
    ] = None,
    memory: MemoryOption = DEFAULT_MEMORY,
    threads: Annotated[
        int | None, typer.Option("--threads", help="Counting threads.  [default: CPU count, at most 4]")
    ] = None,
    temp_dir: TempDirOption = None,
    binary: Annotated[
        bool,
        typer.Option(
            "--binary",
            help="Also write the LM in w2vlm's binary form beside the ARPA file (lm.arpa -> lm.w2vlm): it loads "
            "in a fraction of the ARPA's time (w2vlm only; see convert-lm).",
        ),
    ] = False,
    quiet: LmQuietOption = False,
) -> None:
    """Build a modified Kneser-Ney n-gram LM (ARPA + unigrams.txt) from text, without KenLM."""
    from rich.console import Console

    from w2vlm.errors import W2vlmError
    from w2vlm.lm import allowed_chars_from_file, build_lm

    err = Console(stderr=True)
    thresholds = parse_prune(prune)
    if alphabet is not None and allowed_chars is not None:
        raise typer.BadParameter("give either --alphabet or --allowed-chars, not both", param_hint="'--alphabet'")
    try:
        chars = allowed_chars_from_file(alphabet) if alphabet is not None else allowed_chars
        with lm_progress(err, quiet) as on_progress:
            stats = build_lm(
                text_files,
                output,
                order=order,
                prune=thresholds,
                vocab_limit=vocab_limit,
                normalize=normalize,
                allowed_chars=chars,
                heldout_files=heldout or None,
                progress=on_progress,
                memory=memory,
                threads=threads,
                temp_dir=temp_dir,
            )
        binary_path = None
        if binary:
            from w2vlm.decoder.ngram_files import binary_path_for, convert_to_binary

            binary_path = binary_path_for(stats.arpa_path)
            convert_to_binary(stats.arpa_path, binary_path)
    except W2vlmError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if not quiet:
        print_lm_stats(stats)
        if stats.spill_runs:
            print(f"counting spilled {stats.spill_runs} sorted runs to disk (budget --memory {memory})")
        also = f", {binary_path}" if binary_path else ""
        print(f"wrote {stats.arpa_path}{also} and {stats.unigrams_path} in {stats.seconds:.1f} s")


@app.command("convert-lm")
def convert_lm_command(
    source: Annotated[str, typer.Argument(help="ARPA file (.arpa or .arpa.gz).")],
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Binary file to write.  [default: SOURCE with the suffix .w2vlm]"),
    ] = None,
    quiet: LmQuietOption = False,
) -> None:
    """Write an ARPA LM in w2vlm's binary form: the tables as w2vlm holds them, read back with no parsing (a
    5-gram of 20 M n-grams loads in under a second instead of 18 s on a 2-core machine). Only w2vlm reads it:
    keep the ARPA file for KenLM and pyctcdecode."""
    import time

    from rich.console import Console

    from w2vlm.decoder.ngram_files import binary_path_for, convert_to_binary
    from w2vlm.errors import W2vlmError

    target = output or str(binary_path_for(source))
    t0 = time.perf_counter()
    try:
        lm = convert_to_binary(source, target)
    except W2vlmError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if not quiet:
        counts = "/".join(f"{c:,}" for c in lm.counts)
        print(f"wrote {target} ({lm.order}-gram, {counts} n-grams) in {time.perf_counter() - t0:.1f} s")


@app.command("add-lm")
def add_lm_command(
    model: Annotated[str, typer.Argument(help="Model folder (hub layout) or hub id; 'embedded' for the default.")],
    text_files: TextFilesArgument,
    output: Annotated[str, typer.Option("--output", "-o", help="Folder to write the model with its LM to.")],
    order: OrderOption = 3,
    prune: PruneOption = None,
    vocab_limit: VocabLimitOption = None,
    normalize: NormalizeOption = True,
    language: LanguageOption = None,
    dev: Annotated[
        str | None,
        typer.Option("--dev", help="Dev manifest (audio + text) to tune alpha and beta on.  [default: no tuning]"),
    ] = None,
    alpha: Annotated[
        str | None, typer.Option("--alpha", help="LM weights tried with --dev: 'start:stop:step' or 'a,b,c'.")
    ] = None,
    beta: Annotated[
        str | None, typer.Option("--beta", help="Word insertion bonuses tried with --dev, as --alpha.")
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    quantize: QuantizeOption = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="Threads for counting n-grams and for decoding with --dev.  [default: CPUs]"),
    ] = None,
    memory: MemoryOption = DEFAULT_MEMORY,
    temp_dir: TempDirOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output folder.")] = False,
    quiet: LmQuietOption = False,
) -> None:
    """Give a CTC model an n-gram LM: a copy of the model with alphabet.json and language_model/ (built from
    text with the model's characters), ready for transcribe, serve, transformers and pyctcdecode."""
    from rich.console import Console

    from w2vlm.add_lm import add_lm
    from w2vlm.cli.app import model_command
    from w2vlm.errors import W2vlmError

    err = Console(stderr=True)
    thresholds = parse_prune(prune)
    if dev is None and (alpha is not None or beta is not None):
        raise typer.BadParameter("--alpha/--beta are the values tried on --dev; give --dev too", param_hint="'--dev'")
    if dev is None and (dtype != "auto" or quantize is not None):
        raise typer.BadParameter("--dtype/--quantize are for decoding --dev; give --dev too", param_hint="'--dev'")
    with model_command(err):
        try:
            from w2vlm.logits_cache import AcousticSettings

            with lm_progress(err, quiet) as on_progress:
                result = add_lm(
                    None if model == "embedded" else model,
                    text_files,
                    output,
                    order=order,
                    prune=thresholds,
                    vocab_limit=vocab_limit,
                    normalize=normalize,
                    language=language,
                    dev_manifest=dev,
                    alphas=alpha,
                    betas=beta,
                    overwrite=overwrite,
                    progress=on_progress,
                    memory=memory,
                    threads=threads,
                    temp_dir=temp_dir,
                    tune_options={"acoustic": AcousticSettings(device=device, dtype=dtype, quantize=quantize)},
                )
        except W2vlmError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    if quiet:
        return
    print_lm_stats(result.lm_stats)
    if result.tune_report is not None:
        best = result.tune_report.best
        print(
            f"tuned on {dev}: alpha {result.alpha:g}, beta {result.beta:g}: WER {100 * best.wer:.2f}% "
            f"(greedy {100 * result.tune_report.greedy_wer:.2f}%)"
        )
    else:
        print(f"alpha {result.alpha:g}, beta {result.beta:g} (defaults; --dev tunes them)")
    print(f"wrote {result.output}" + (f" (language {result.language})" if result.language else ""))
