"""``w2vlm train`` and ``average``: making models."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from w2vlm.cli.app import (
    EXIT_MEMORY,
    DeviceOption,
    ManifestArgument,
    app,
    log_records_to,
)


@app.command("train")
def train_command(
    manifest: ManifestArgument,
    output: Annotated[str, typer.Option("--output", "-o", help="Folder to write the trained model to (hub layout).")],
    dev: Annotated[str | None, typer.Option("--dev", help="Dev manifest: greedy WER/CER after every epoch.")] = None,
    init_from: Annotated[
        str | None,
        typer.Option("--init-from", help="Start from this model folder (hub layout) instead of from scratch."),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="Model from scratch: conformer (Wav2Vec2-BERT on log-mel features, 5.2 M parameters), small or "
            "medium (wav2vec2 on the waveform, 2.0 M / 6.1 M), tiny or tiny-conformer (tests).",
        ),
    ] = "small",
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training data.")] = 10,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many updates.")] = None,
    time_limit: Annotated[
        float | None, typer.Option("--time-limit", help="Training budget in seconds; the LR decay follows it too.")
    ] = None,
    stop_after: Annotated[
        float | None,
        typer.Option(
            "--stop-after",
            help="End this run after so many seconds (model and checkpoint saved); --resume goes on with the "
            "same schedule. For machines lent in slices.",
        ),
    ] = None,
    batch_seconds: Annotated[float, typer.Option("--batch-seconds", help="Padded audio seconds per batch.")] = 320.0,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up then cosine).")] = 1e-3,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up steps.")] = 500,
    mask_time_prob: Annotated[
        float | None,
        typer.Option("--mask-time-prob", help="SpecAugment time-mask probability (model default if unset)."),
    ] = None,
    config_settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A model config setting, KEY=VALUE (repeatable), e.g. --set hidden_dropout=0 --set layerdrop=0.05; "
            "VALUE is read as JSON (numbers, true/false), else as a string. Applies from scratch and to --init-from.",
            show_default=False,
        ),
    ] = None,
    max_duration: Annotated[float, typer.Option("--max-duration", help="Skip training clips longer than this.")] = 20.0,
    sortagrad: Annotated[
        bool,
        typer.Option(
            "--sortagrad/--no-sortagrad",
            help="First epoch shortest-first (helps CTC find alignments from scratch; off suits fine-tuning).",
        ),
    ] = True,
    pad_blank_weight: Annotated[
        float,
        typer.Option(
            "--pad-blank-weight",
            help="Weight of a loss teaching padded frames to say blank, so padded batches decode untrimmed (0: off).",
        ),
    ] = 0.2,
    pad_multiple: Annotated[
        float,
        typer.Option(
            "--pad-multiple",
            help="Pad each batch to a multiple of this many seconds, with clips of one padded length a batch: "
            "batch shapes repeat, so CPU kernels built for a shape are reused. 0: pad to the longest clip.",
        ),
    ] = 0.5,
    edge_prob: Annotated[
        float,
        typer.Option(
            "--edge-prob",
            help="Probability that a clip gets up to 0.3 s of another background (digital silence or quieter noise) "
            "before and after it, as VAD segments of long recordings have (0: off).",
        ),
    ] = 0.0,
    device: DeviceOption = "auto",
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA and on CPUs with AMX or AVX512-BF16.")
    ] = True,
    save_every: Annotated[
        int, typer.Option("--save-every", help="Checkpoint every N steps (0: per epoch only).")
    ] = 1000,
    snapshot_every: Annotated[
        int,
        typer.Option(
            "--snapshot-every",
            help="Also keep the weights every N steps as a model folder of its own, OUTPUT.snapshots/step-NNNNNNN "
            "(hub layout), to pick from or average (0: off; the checkpoint keeps only the latest).",
        ),
    ] = 0,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue from OUTPUT.checkpoint if it exists, where it stopped (mid-epoch too, same batch order).",
        ),
    ] = False,
    lm: Annotated[
        str | None,
        typer.Option(
            "--lm",
            help="Language model folder to bundle: one LM file (ARPA, KenLM binary or .w2vlm; an ARPA with the "
            ".w2vlm convert-lm made from it bundles the .w2vlm) + unigrams.txt [+ attrs.json].",
        ),
    ] = None,
    language: Annotated[
        str | None,
        typer.Option(
            "--language",
            help="The model's language (ISO 639, e.g. en), recorded in its model card (README.md).  "
            "[default: --init-from's, else none]",
        ),
    ] = None,
    save_dtype: Annotated[str, typer.Option("--save-dtype", help="float32, float16 or bfloat16.")] = "float32",
    max_memory: Annotated[
        float | None,
        typer.Option(
            "--max-memory",
            help="GB of resident memory (not counting --audio-cache files) to stay under: past it the allocator's "
            "free pages are handed back (jemalloc or glibc); if that is not enough, the run saves and stops with "
            "exit code 75, and --resume goes on.",
        ),
    ] = None,
    audio_cache: Annotated[
        str | None,
        typer.Option(
            "--audio-cache",
            help="Folder to keep the decoded audio of the manifests in (one int16 file each, made on first use, "
            "remade when an audio file changes). It is memory-mapped: later runs and --resume start without "
            "decoding, and the audio sits in the page cache, which the system can reclaim, not in process memory.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of initialization, shuffling and masks.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (log lines only).")] = False,
) -> None:
    """Train (or fine-tune) a wav2vec2 CTC model on a manifest; saves it in the hub layout."""
    import sys
    from pathlib import Path

    from rich.console import Console

    from w2vlm.errors import W2vlmError
    from w2vlm.train import TrainConfig, parse_config_overrides, train

    err = Console(stderr=True)
    try:
        overrides = parse_config_overrides(config_settings or [])
    except W2vlmError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    cfg = TrainConfig(
        manifest=Path(manifest),
        output_dir=Path(output),
        dev_manifest=Path(dev) if dev else None,
        init_from=Path(init_from) if init_from else None,
        preset=preset,
        epochs=epochs,
        max_steps=max_steps,
        time_limit_s=time_limit,
        stop_after_s=stop_after,
        batch_seconds=batch_seconds,
        learning_rate=lr,
        warmup_steps=warmup,
        mask_time_prob=mask_time_prob,
        max_duration_s=max_duration,
        sortagrad=sortagrad,
        pad_blank_weight=pad_blank_weight,
        pad_multiple_s=pad_multiple,
        edge_prob=edge_prob,
        device=device,
        amp=amp,
        save_every=save_every,
        snapshot_every=snapshot_every,
        resume=resume,
        lm_dir=Path(lm) if lm else None,
        language=language,
        save_dtype=save_dtype,
        audio_cache=Path(audio_cache) if audio_cache else None,
        max_memory_gb=max_memory,
        seed=seed,
        config_overrides=overrides,
        progress=not quiet and sys.stderr.isatty(),
    )
    try:
        with log_records_to(err, logging.INFO, show_time=True):
            result = train(cfg)
    except W2vlmError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out = Console()
    epochs = f"{result.epochs_completed} epoch" + ("" if result.epochs_completed == 1 else "s")
    out.print(
        f"trained {result.steps} steps ({epochs}) on {result.audio_hours:.2f} h "
        f"of audio in {result.train_seconds:.0f} s; saved {result.output_dir}"
    )
    if result.dev is not None:
        out.print(
            f"dev greedy WER {100 * result.dev.wer:.2f}%  CER {100 * result.dev.cer:.2f}% "
            f"({result.dev.utterances} utterances)"
        )
    if result.stopped_for == "memory":
        err.print(f"stopped: over --max-memory {max_memory:g} GB; --resume goes on", highlight=False)
        raise typer.Exit(EXIT_MEMORY)


@app.command("average")
def average_command(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Model folders of one architecture, or folders of them (e.g. OUTPUT.snapshots from "
            "`w2vlm train --snapshot-every`), taken in name order."
        ),
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="Model folder to write.")],
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="Comma-separated weight per model folder, e.g. 1,3.  [default: equal]"),
    ] = None,
    last: Annotated[
        int | None, typer.Option("--last", help="Average only the last N model folders.  [default: all]")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Average the weights of model folders (checkpoint averaging, or a soup of consecutive runs).

    Float tensors become the weighted mean; the other files come from the last model folder."""
    from rich.console import Console
    from rich.markup import escape

    from w2vlm.average import average_models, model_folders
    from w2vlm.errors import W2vlmError

    err = Console(stderr=True)
    parsed: list[float] | None = None
    if weights is not None:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            raise typer.BadParameter(
                f"expected comma-separated numbers such as 1,3; got {weights!r}", param_hint="'--weights'"
            ) from None
    try:
        folders = model_folders(models, last)
        out = average_models(folders, output, weights=parsed, overwrite=overwrite)
    except W2vlmError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    Console().print(f"averaged {len(folders)} models into {escape(str(out))}", highlight=False)
