"""The ``w2vlm`` command line.

Each command keeps its imports inside the function so that ``w2vlm --help`` stays fast and a command only
needs the extras it uses.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="w2vlm",
    help="Speech recognition with wav2vec2-family CTC models and n-gram LM beam search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Speech recognition with wav2vec2-family CTC models and n-gram LM beam search."""


@app.command("build-lm")
def build_lm_command(
    text_files: Annotated[
        list[str], typer.Argument(help="UTF-8 text files (plain or .gz), one sentence a line.")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="ARPA file to write (.arpa or .arpa.gz).")],
    order: Annotated[int, typer.Option("--order", "-n", help="N-gram order.")] = 3,
    prune: Annotated[
        str | None,
        typer.Option(
            "--prune",
            help="Count thresholds per order like lmplz, e.g. '0 0 1' or '0,0,1': n-grams (order >= 2) seen "
            "at most that many times are dropped; the last value applies to higher orders.",
        ),
    ] = None,
    vocab_limit: Annotated[
        int | None,
        typer.Option("--vocab-limit", help="Keep only the K most frequent words; the others become <unk>."),
    ] = None,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--no-normalize", help="Reduce the text to the model's characters (default a-z, ')."
        ),
    ] = True,
    allowed_chars: Annotated[
        str | None,
        typer.Option("--allowed-chars", help="Characters words may contain (default: a-z and ')."),
    ] = None,
    alphabet: Annotated[
        str | None,
        typer.Option(
            "--alphabet", help="Take the allowed characters from a model's vocab.json/alphabet.json."
        ),
    ] = None,
    heldout: Annotated[
        list[str] | None,
        typer.Option("--heldout", help="Held-out text to report perplexity on (repeatable)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or summary.")] = False,
) -> None:
    """Build a modified Kneser-Ney n-gram LM (ARPA + unigrams.txt) from text, without KenLM."""
    import re
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from w2vlm.errors import W2vlmError
    from w2vlm.lm import allowed_chars_from_file, build_lm

    err = Console(stderr=True)
    try:
        thresholds = None
        if prune:
            parts = [p for p in re.split(r"[,\s]+", prune.strip()) if p]
            if not all(p.isdigit() for p in parts):
                raise typer.BadParameter(f"expected non-negative integers like '0 0 1', got {prune!r}")
            thresholds = [int(p) for p in parts]
        chars: str | None = allowed_chars
        if alphabet is not None:
            if allowed_chars is not None:
                raise typer.BadParameter("give either --alphabet or --allowed-chars, not both")
            chars = allowed_chars_from_file(alphabet)
        stage_names = {
            "read": "Reading text",
            "estimate": "Estimating",
            "write": "Writing ARPA",
            "heldout": "Scoring held-out",
        }
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            console=err,
            disable=quiet or not sys.stderr.isatty(),
            transient=True,
        ) as bar:
            tasks: dict[str, int] = {}

            def on_progress(stage: str, done: int, total: int) -> None:
                size = total if total > 0 else None  # None: a pulsing bar
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage_names.get(stage, stage), total=size)
                bar.update(tasks[stage], completed=done, total=size)

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
            )
    except W2vlmError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if quiet:
        return
    out = Console()
    table = Table(title=f"{stats.order}-gram modified Kneser-Ney LM", show_header=True, title_justify="left")
    table.add_column("order", justify="right")
    table.add_column("n-grams", justify="right")
    table.add_column("D1", justify="right")
    table.add_column("D2", justify="right")
    table.add_column("D3+", justify="right")
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
    out.print(f"wrote {stats.arpa_path} and {stats.unigrams_path} in {stats.seconds:.1f} s")


def main() -> None:
    """Entry point of the ``w2vlm`` console script."""
    app()


if __name__ == "__main__":
    main()
