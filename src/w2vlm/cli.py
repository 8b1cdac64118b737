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


@app.command("train")
def train_command(
    manifest: str = typer.Argument(..., help='JSONL manifest: one {"audio": path, "text": ...} a line.'),
    output: str = typer.Option(
        ..., "--output", "-o", help="Folder to write the trained model to (hub layout)."
    ),
    dev: str | None = typer.Option(None, "--dev", help="Dev manifest: greedy WER/CER after every epoch."),
    init_from: str | None = typer.Option(
        None, "--init-from", help="Start from this model folder (hub layout) instead of from scratch."
    ),
    preset: str = typer.Option("small", "--preset", help="Model size from scratch: small, mini or tiny."),
    epochs: int = typer.Option(10, "--epochs", help="Passes over the training data."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many updates."),
    time_limit: float | None = typer.Option(
        None, "--time-limit", help="Training budget in seconds; the LR decay follows it too."
    ),
    batch_seconds: float = typer.Option(320.0, "--batch-seconds", help="Padded audio seconds per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW, warm-up then cosine)."),
    warmup: int = typer.Option(500, "--warmup", help="Warm-up steps."),
    mask_time_prob: float | None = typer.Option(
        None, "--mask-time-prob", help="SpecAugment time-mask probability (model default if unset)."
    ),
    max_duration: float = typer.Option(20.0, "--max-duration", help="Skip training clips longer than this."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bf16 autocast on CUDA."),
    save_every: int = typer.Option(
        1000, "--save-every", help="Checkpoint every N steps (0: per epoch only)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT.checkpoint if it exists."),
    lm: str | None = typer.Option(
        None, "--lm", help="Language model folder (ARPA + unigrams.txt [+ attrs.json]) to bundle."
    ),
    save_dtype: str = typer.Option("float32", "--save-dtype", help="float32, float16 or bfloat16."),
    seed: int = typer.Option(0, "--seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (log lines only)."),
) -> None:
    """Train (or fine-tune) a wav2vec2 CTC model on a manifest; saves it in the hub layout."""
    import logging
    import sys
    from pathlib import Path

    from rich.console import Console
    from rich.logging import RichHandler

    from w2vlm.errors import W2vlmError
    from w2vlm.train import TrainConfig, train

    err = Console(stderr=True)
    log = logging.getLogger("w2vlm")
    if not log.handlers:
        log.addHandler(RichHandler(console=err, show_path=False))
        log.setLevel(logging.INFO)
    cfg = TrainConfig(
        manifest=Path(manifest),
        output_dir=Path(output),
        dev_manifest=Path(dev) if dev else None,
        init_from=Path(init_from) if init_from else None,
        preset=preset,
        epochs=epochs,
        max_steps=max_steps,
        time_limit_s=time_limit,
        batch_seconds=batch_seconds,
        learning_rate=lr,
        warmup_steps=warmup,
        mask_time_prob=mask_time_prob,
        max_duration_s=max_duration,
        device=device,
        amp=amp,
        save_every=save_every,
        resume=resume,
        lm_dir=Path(lm) if lm else None,
        save_dtype=save_dtype,
        seed=seed,
        progress=not quiet and sys.stderr.isatty(),
    )
    try:
        result = train(cfg)
    except W2vlmError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out = Console()
    out.print(
        f"trained {result.steps} steps ({result.epochs_completed} epochs) on {result.audio_hours:.2f} h "
        f"of audio in {result.train_seconds:.0f} s; saved {result.output_dir}"
    )
    if result.dev is not None:
        out.print(
            f"dev greedy WER {100 * result.dev.wer:.2f}%  CER {100 * result.dev.cer:.2f}% "
            f"({result.dev.utterances} utterances)"
        )


def main() -> None:
    """Entry point of the ``w2vlm`` console script."""
    app()


if __name__ == "__main__":
    main()
