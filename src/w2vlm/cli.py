"""The ``w2vlm`` command line.

Each command keeps its imports inside the function so that ``w2vlm --help`` stays fast and a command only
needs the extras it uses.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Annotated

import typer

#: ``w2vlm train``'s exit status when it saved and stopped because of ``--max-memory`` (EX_TEMPFAIL: run it
#: again with ``--resume``).
EXIT_MEMORY = 75

app = typer.Typer(
    name="w2vlm",
    help="Speech recognition with wav2vec2-family CTC models and n-gram LM beam search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Options shared by several commands: declared once so that their flags and help read the same everywhere.
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model folder (hub layout) or hub id.  \\[default: the embedded model]"),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype", help="auto, float32, float16 or bfloat16; auto: bfloat16 (or float16) on CUDA, float32 on a CPU."
    ),
]
QuantizeOption = Annotated[
    str | None,
    typer.Option(
        "--quantize", help="int8: 8-bit weights (dynamic int8 on CPU, bitsandbytes on CUDA).  \\[default: none]"
    ),
]
ManifestArgument = Annotated[
    str, typer.Argument(help="JSONL or CSV manifest (audio path + reference text), or a folder of audio + .txt.")
]
DecodeThreadsOption = Annotated[int | None, typer.Option("--threads", help="Decoding threads.  \\[default: all CPUs]")]
CacheDirOption = Annotated[
    str | None, typer.Option("--cache-dir", help="Logits cache folder.  \\[default: ~/.cache/w2vlm/logits]")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write cached logits.")]
NoNormalizeOption = Annotated[
    bool, typer.Option("--no-normalize", help="Score texts as they are (no lowercasing, punctuation kept).")
]
TableQuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display or table.")]


@app.callback()
def _root() -> None:
    """Speech recognition with wav2vec2-family CTC models and n-gram LM beam search."""


@contextlib.contextmanager
def _model_command(err: object, level: int = logging.WARNING) -> Iterator[None]:
    """Set-up shared by the commands that run a model: quiet hub progress bars, passive OpenMP waiting, and
    w2vlm's log records shown on stderr (at ``level``) while the command runs."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
    # torch's OpenMP threads spin while waiting by default; next to the decoder's threads (and anything else
    # running) that made the model up to 20x slower on a 2-core machine. Read when torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    log = logging.getLogger("w2vlm")
    handler = None
    before = log.level
    if not log.handlers:
        from rich.logging import RichHandler

        handler = RichHandler(console=err, show_path=False, show_time=False, level=level)  # type: ignore[arg-type]
        log.addHandler(handler)
        if log.getEffectiveLevel() > level:
            log.setLevel(level)
    try:
        yield
    finally:
        if handler is not None:
            log.removeHandler(handler)
            log.setLevel(before)


@app.command("build-lm")
def build_lm_command(
    text_files: Annotated[list[str], typer.Argument(help="UTF-8 text files (plain or .gz), one sentence a line.")],
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
        typer.Option("--normalize/--no-normalize", help="Reduce the text to the model's characters (default a-z, ')."),
    ] = True,
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
        typer.Option("--lm", help="Language model folder (ARPA + unigrams.txt [+ attrs.json]) to bundle."),
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
    from rich.logging import RichHandler

    from w2vlm.errors import W2vlmError
    from w2vlm.train import TrainConfig, parse_config_overrides, train

    err = Console(stderr=True)
    log = logging.getLogger("w2vlm")
    if not log.handlers:
        log.addHandler(RichHandler(console=err, show_path=False))
        log.setLevel(logging.INFO)
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
        device=device,
        amp=amp,
        save_every=save_every,
        snapshot_every=snapshot_every,
        resume=resume,
        lm_dir=Path(lm) if lm else None,
        save_dtype=save_dtype,
        audio_cache=Path(audio_cache) if audio_cache else None,
        max_memory_gb=max_memory,
        seed=seed,
        config_overrides=overrides,
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
        typer.Option("--weights", help="Comma-separated weight per model folder, e.g. 1,3.  \\[default: equal]"),
    ] = None,
    last: Annotated[
        int | None, typer.Option("--last", help="Average only the last N model folders.  \\[default: all]")
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


@app.command("transcribe")
def transcribe_command(
    audio: Annotated[
        list[str] | None,
        typer.Argument(help="Audio files and/or folders (walked recursively for audio files).", show_default=False),
    ] = None,
    model: ModelOption = None,
    lm: Annotated[
        str | None,
        typer.Option(
            "--lm",
            help="N-gram LM file (.arpa, .arpa.gz, or KenLM .bin) replacing the model's own; a unigrams.txt "
            "beside it is used.  \\[default: the model's language_model/]",
        ),
    ] = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Folder for the outputs, named after each input's stem (sub-folders of input folders are "
            "mirrored).  \\[default: none: print to stdout]",
        ),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--output-format",
            "-f",
            help="txt, json, srt, vtt, tsv, or all (all needs --output-dir); with --ray: jsonl or parquet.  "
            "\\[default: txt; jsonl with --ray]",
        ),
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="At most this many audio windows per model forward pass; batches are formed from windows of "
            "similar length within a budget of padded audio.  \\[default: the budget alone]",
        ),
    ] = None,
    chunk_length: Annotated[
        float | None,
        typer.Option(
            "--chunk-length",
            help="Window length in seconds for long audio (with 1/6 of it as context on each side).  "
            "\\[default: whole files up to 60 s, 30 s windows beyond]",
        ),
    ] = None,
    beam_width: Annotated[
        int | None,
        typer.Option("--beam-width", help="Beams kept per frame.  \\[default: 100]"),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option("--alpha", help="LM weight.  \\[default: the LM's attrs.json, else 0.5]"),
    ] = None,
    beta: Annotated[
        float | None,
        typer.Option("--beta", help="Word insertion bonus.  \\[default: the LM's attrs.json, else 1.5]"),
    ] = None,
    hotwords: Annotated[
        str | None,
        typer.Option(
            "--hotwords",
            help="Words or phrases to favour: a file with one a line, or a comma-separated list.  \\[default: none]",
        ),
    ] = None,
    word_timestamps: Annotated[
        bool,
        typer.Option(
            "--word-timestamps",
            help="Word start/end times (and confidences) in json, srt, vtt and tsv outputs.  \\[default: off]",
        ),
    ] = False,
    n_best: Annotated[
        int, typer.Option("--n-best", help="Hypotheses to keep; more than 1 adds 'alternatives' to json.")
    ] = 1,
    quantize: QuantizeOption = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="CPU threads in all, split between torch and the decoder, which run at the same time (at "
            "least one each).  \\[default: the available CPUs]",
        ),
    ] = None,
    no_lm: Annotated[
        bool,
        typer.Option(
            "--no-lm",
            help="Ignore the LM: greedy decoding, or a beam search without LM when --beam-width, --hotwords "
            "or --n-best > 1 ask for one.  \\[default: off]",
        ),
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing", help="Skip inputs whose outputs all exist already (resume a run).  \\[default: off]"
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.  \\[default: off]")
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Run on Ray Data: the model in an actor pool, LM decoding in CPU tasks, records written to "
            "--output-dir as JSON lines or Parquet (re-runs skip finished inputs). The input may also be one "
            "JSONL/CSV manifest.  \\[default: off]",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to run on with --ray: 'auto' (the one started by `ray start` here), HOST:6379 or "
            "ray://HOST:10001.  \\[default: $RAY_ADDRESS, else a local Ray started for the job]",
        ),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option("--ray-workers", help="Acoustic model actors with --ray.  \\[default: the GPUs, else CPUs / 2]"),
    ] = None,
) -> None:
    """Transcribe audio files (exit code 1 if any input failed)."""

    from rich.console import Console
    from rich.markup import escape

    from w2vlm.errors import W2vlmError
    from w2vlm.transcribe import TranscribeOptions, describe_summary, parse_hotwords, run
    from w2vlm.writers import FORMATS

    err = Console(stderr=True)
    audio = list(audio or [])
    settings = {
        "model": model,
        "lm": lm,
        "no_lm": no_lm,
        "device": device,
        "dtype": dtype,
        "quantize": quantize,
        "batch_size": batch_size,
        "chunk_length_s": chunk_length,
        "beam_width": beam_width,
        "alpha": alpha,
        "beta": beta,
        "n_best": n_best,
    }
    if ray:
        _transcribe_on_ray(
            audio,
            ray_address,
            ray_workers,
            output_dir,
            output_format,
            word_timestamps,
            quiet,
            err,
            hotwords=hotwords,
            **settings,
        )
        return
    if ray_workers is not None or ray_address is not None:
        raise typer.BadParameter("only goes with --ray", param_hint="'--ray-workers' / '--ray-address'")
    if not audio:
        raise typer.BadParameter("give at least one audio file or folder", param_hint="'AUDIO...'")
    output_format = output_format or "txt"
    if output_format not in (*FORMATS, "all"):
        raise typer.BadParameter(
            f"expected one of {', '.join(FORMATS)}, all; got {output_format!r}", param_hint="'--output-format'"
        )
    if quantize is not None and quantize != "int8":
        raise typer.BadParameter(f"expected int8; got {quantize!r}", param_hint="'--quantize'")
    for name, value in (("--batch-size", batch_size), ("--n-best", n_best), ("--beam-width", beam_width)):
        if value is not None and value < 1:
            raise typer.BadParameter(f"must be at least 1; got {value}", param_hint=f"'{name}'")
    if threads is not None and threads < 1:
        raise typer.BadParameter(f"must be at least 1; got {threads}", param_hint="'--threads'")
    if chunk_length is not None and not chunk_length > 0:
        raise typer.BadParameter(
            f"must be a positive number of seconds; got {chunk_length}", param_hint="'--chunk-length'"
        )
    with _model_command(err):
        try:
            options = TranscribeOptions(**settings, hotwords=parse_hotwords(hotwords), threads=threads)  # type: ignore[arg-type]
            summary = run(
                audio,
                options,
                output_dir=output_dir,
                output_format=output_format,
                skip_existing=skip_existing,
                word_timestamps=word_timestamps,
                console=err,
                progress=False if quiet else None,
            )
        except W2vlmError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    if not quiet:
        err.print(describe_summary(summary), highlight=False, soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)


def _transcribe_on_ray(
    audio: list[str],
    address: str | None,
    workers: int | None,
    output_dir: str | None,
    output_format: str | None,
    word_timestamps: bool,
    quiet: bool,
    err: object,
    **options: object,
) -> None:
    """``w2vlm transcribe --ray``: the job on Ray Data (see :mod:`w2vlm.distributed`)."""
    from rich.markup import escape

    from w2vlm.errors import W2vlmError

    if not audio:
        raise typer.BadParameter("give at least one audio file, folder or manifest", param_hint="'AUDIO...'")
    fmt = {"json": "jsonl", None: "jsonl"}.get(output_format, output_format)
    if fmt not in ("jsonl", "parquet"):
        raise typer.BadParameter(f"with --ray: expected jsonl or parquet; got {output_format!r}", param_hint="'-f'")
    if output_dir is None:
        raise typer.BadParameter("--ray writes its records to a folder: give --output-dir", param_hint="'--ray'")
    if workers is not None and workers < 1:
        raise typer.BadParameter(f"must be at least 1; got {workers}", param_hint="'--ray-workers'")
    with _model_command(err, logging.INFO):
        try:
            from w2vlm.distributed import transcribe as transcribe_on_ray
            from w2vlm.transcribe import TranscribeOptions, parse_hotwords

            hot = options.pop("hotwords")
            opts = TranscribeOptions(**options, hotwords=parse_hotwords(hot))  # type: ignore[arg-type]
            summary = transcribe_on_ray(
                audio,
                output_dir,
                options=opts,
                address=address,
                workers=workers,
                output_format=fmt,
                word_timestamps=word_timestamps,
                progress=not quiet,
            )
        except W2vlmError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # type: ignore[attr-defined]
            raise typer.Exit(1) from None
    for name, message in summary.failed:
        err.print(f"[red]failed:[/] {escape(name)}: {escape(message)}", highlight=False, soft_wrap=True)  # type: ignore[attr-defined]
    if not quiet:
        err.print(  # type: ignore[attr-defined]
            f"{summary.ok} transcribed, {len(summary.failed)} failed, {summary.skipped} skipped (done before) of "
            f"{summary.total}; {summary.audio_seconds:.1f} s of audio in {summary.seconds:.1f} s "
            f"({summary.speed:.1f} audio-s/s, {summary.workers} model worker(s) on {summary.device}); "
            f"records in {summary.output_dir}",
            highlight=False,
            soft_wrap=True,
        )
    if summary.failed:
        raise typer.Exit(1)


@app.command("serve")
def serve_command(
    model: ModelOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="W2VLM_API_KEY",
            help="Require 'Authorization: Bearer KEY' on /v1 endpoints (also read from W2VLM_API_KEY).",
        ),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option("--model-name", help="Model id listed by /v1/models (default: the model folder's name)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Decoding threads.")] = 2,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Requests that may wait for a worker; more get 503.")
    ] = 64,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Upload size limit in MB.")] = 25.0,
    upload_timeout: Annotated[
        float, typer.Option("--upload-timeout", help="Seconds a client may take to send its upload (else 408).")
    ] = 120.0,
    stream_chunk: Annotated[
        float, typer.Option("--stream-chunk", help="Seconds of audio per window when a request asks to stream.")
    ] = 10.0,
    language: Annotated[
        str | None,
        typer.Option("--language", help="The model's language (ISO-639-1); requests for another get 400."),
    ] = None,
    beam_width: Annotated[int, typer.Option("--beam-width", help="Beam search width.")] = 100,
    low_confidence: Annotated[
        float, typer.Option("--low-confidence", help="The web page marks words below this confidence.")
    ] = 0.5,
    device: DeviceOption = "auto",
    quantize: QuantizeOption = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Run the OpenAI-compatible transcription server (POST /v1/audio/transcriptions) with a web page at /."""

    from rich.console import Console
    from rich.logging import RichHandler

    from w2vlm.errors import W2vlmError

    err = Console(stderr=True)
    try:
        from w2vlm.server import ServerSettings, serve
    except ImportError as exc:
        err.print(f"[bold red]error:[/] the server needs its extra: pip install 'w2vlm[server]' ({exc})")
        raise typer.Exit(1) from None
    log = logging.getLogger("w2vlm")
    if not log.handlers:
        log.addHandler(RichHandler(console=err, show_path=False))
        log.setLevel(logging.INFO)
    try:
        settings = ServerSettings(
            api_key=api_key or None,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            upload_timeout_s=upload_timeout,
            stream_chunk_s=stream_chunk,
            workers=workers,
            max_queue=max_queue,
            language=language.lower() if language else None,
            low_confidence=low_confidence,
            decoder_kwargs={"beam_width": beam_width},
        )
        if model_name:
            settings.model_id = model_name
        serve(
            model,
            host=host,
            port=port,
            settings=settings,
            device=device,
            quantize=quantize,
            log_level=log_level,
        )
    except (W2vlmError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _eval_progress(console: object, quiet: bool) -> object:
    """A rich progress display for eval/tune stages, as a context manager with an ``update(stage, done,
    total)`` callback."""
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    names = {"logits": "Acoustic model (cached logits reused)", "lm": "Beam search + LM", "tune": "Settings"}
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,  # type: ignore[arg-type]
        disable=quiet or not sys.stderr.isatty(),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(names.get(stage, stage), total=total)
        bar.update(tasks[stage], completed=done, total=total)

    bar.update_stage = update  # type: ignore[attr-defined]
    return bar


@app.command("eval")
def eval_command(
    manifest: ManifestArgument,
    model: ModelOption = None,
    lm: Annotated[
        str | None,
        typer.Option("--lm", help="LM to use instead of the model's: an ARPA/KenLM file, or a language_model/ folder."),
    ] = None,
    no_lm: Annotated[bool, typer.Option("--no-lm", help="Score greedy decoding only.")] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write the full report (per-utterance errors) as JSON.")
    ] = None,
    beam_width: Annotated[int, typer.Option("--beam-width", help="Beams kept per frame.")] = 100,
    alpha: Annotated[float | None, typer.Option("--alpha", help="LM weight.  \\[default: the LM's attrs.json]")] = None,
    beta: Annotated[
        float | None, typer.Option("--beta", help="Word insertion bonus.  \\[default: the LM's attrs.json]")
    ] = None,
    unk_score_offset: Annotated[
        float | None,
        typer.Option("--unk-score-offset", help="Penalty of out-of-vocabulary words.  \\[default: attrs.json]"),
    ] = None,
    threads: DecodeThreadsOption = None,
    device: DeviceOption = "auto",
    dtype: Annotated[str | None, typer.Option("--dtype", help="float32, float16 or bfloat16.")] = None,
    quantize: QuantizeOption = None,
    chunk_length: Annotated[
        float | None,
        typer.Option("--chunk-length", help="Window length in seconds for long audio.  \\[default: auto]"),
    ] = None,
    cache_dir: CacheDirOption = None,
    no_cache: NoCacheOption = False,
    no_normalize: NoNormalizeOption = False,
    show: Annotated[int, typer.Option("--show", help="Print the N utterances with the most word errors.")] = 0,
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="Also score each value of this manifest field apart (a speaker, a condition; repeatable); "
            "FIELD:WIDTH puts numbers in bins of WIDTH (e.g. snr_db:10). In the --output JSON too.",
            show_default=False,
        ),
    ] = None,
    quiet: TableQuietOption = False,
) -> None:
    """WER/CER of greedy vs beam search + LM decoding on a manifest, with real-time factors.

    Exits with 1 when an utterance could not be scored (missing/corrupt audio; recorded in the report)."""
    from rich.console import Console
    from rich.markup import escape

    from w2vlm.errors import W2vlmError
    from w2vlm.eval import (
        SYSTEM_NAMES,
        AcousticSettings,
        DecodeSettings,
        breakdown_table,
        evaluate,
        summary_table,
        worst_utterances,
        write_json_atomic,
    )

    err = Console(stderr=True)
    try:
        with _eval_progress(err, quiet) as bar:  # type: ignore[attr-defined]
            report = evaluate(
                manifest,
                model,
                lm=lm,
                use_lm=not no_lm,
                decode=DecodeSettings(
                    beam_width=beam_width,
                    alpha=alpha,
                    beta=beta,
                    unk_score_offset=unk_score_offset,
                    num_threads=threads,
                ),
                acoustic=AcousticSettings(device=device, dtype=dtype, quantize=quantize, chunk_length_s=chunk_length),
                cache_dir=cache_dir,
                use_cache=not no_cache,
                normalize=not no_normalize,
                progress=bar.update_stage,
                group_by=by or (),
            )
        if output:
            write_json_atomic(output, report.to_dict())
    except W2vlmError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if not quiet:
        out = Console()
        out.print(summary_table(report))
        for group_by in report.group_by:
            out.print(breakdown_table(report, group_by))
        rtf = report.rtf
        if rtf.get("acoustic") is not None:
            out.print(f"acoustic model RTF {rtf['acoustic']:.4f} (on {report.computed_audio_seconds:.1f} s computed)")
        cached = sum(1 for u in report.utterances if u.cached)
        if cached:
            out.print(f"{cached} of {len(report.utterances)} utterances' logits came from the cache")
        for u in worst_utterances(report, show):
            out.print(f"[bold]{escape(u.id)}[/]  ref: {escape(u.reference)}", highlight=False)
            for system, hyp in u.hypotheses.items():
                name = SYSTEM_NAMES.get(system, system)
                out.print(f"  {name}: {escape(hyp.text)}  ({hyp.words.errors} word errors)", highlight=False)
        if output:
            out.print(f"wrote {output}")
    for u in report.failed:
        err.print(f"[red]failed:[/] {escape(u.id)}: {escape(str(u.error))}", highlight=False, soft_wrap=True)
    if report.failed:
        err.print(f"{len(report.failed)} of {len(report.utterances)} utterances failed")
        raise typer.Exit(1)


@app.command("tune")
def tune_command(
    manifest: ManifestArgument,
    model: ModelOption = None,
    lm: Annotated[
        str | None,
        typer.Option(
            "--lm", help="LM to tune instead of the model's: an ARPA/KenLM file, or a language_model/ folder."
        ),
    ] = None,
    alpha: Annotated[
        str, typer.Option("--alpha", help="LM weights: 'start:stop:step' (stop included) or 'a,b,c'.")
    ] = "0:2:0.25",
    beta: Annotated[str, typer.Option("--beta", help="Word insertion bonuses, as --alpha.")] = "0:4:0.5",
    beam_width: Annotated[str, typer.Option("--beam-width", help="Beam widths to try, e.g. '50,100'.")] = "100",
    unk_score_offset: Annotated[
        str | None,
        typer.Option("--unk-score-offset", help="OOV penalties to try, as --alpha.  \\[default: the LM's]"),
    ] = None,
    random_search: Annotated[
        int | None,
        typer.Option("--random", help="Random search: N settings drawn from the ranges instead of the grid."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random search.")] = 0,
    threads: DecodeThreadsOption = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Write a PNG of WER over alpha x beta.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write all settings and scores as JSON.")] = None,
    write_attrs_to: Annotated[
        str | None,
        typer.Option(
            "--write-attrs",
            help="Store the best alpha/beta (and unk_score_offset when tuned) in MODEL_DIR/language_model/attrs.json.",
            metavar="MODEL_DIR",
        ),
    ] = None,
    heldout: Annotated[
        str | None,
        typer.Option(
            "--heldout", help="A second manifest to score the current and the best setting on after the search."
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Settings shown in the table.")] = 10,
    device: DeviceOption = "auto",
    cache_dir: CacheDirOption = None,
    no_cache: NoCacheOption = False,
    no_normalize: NoNormalizeOption = False,
    quiet: TableQuietOption = False,
) -> None:
    """Search LM weights (alpha, beta; optionally beam width, unk_score_offset) on cached logits.

    Exits with 1 when an utterance could not be read (the others are still used)."""
    from rich.console import Console
    from rich.markup import escape

    from w2vlm.errors import W2vlmError
    from w2vlm.eval import AcousticSettings, write_json_atomic
    from w2vlm.tune import parse_values, plot_wer, results_table, tune, write_attrs

    err = Console(stderr=True)
    try:
        widths = [int(w) for w in parse_values(beam_width, "beam width")]
        with _eval_progress(err, quiet) as bar:  # type: ignore[attr-defined]
            report = tune(
                manifest,
                model,
                lm=lm,
                alphas=alpha,
                betas=beta,
                beam_widths=widths,
                unk_score_offsets=unk_score_offset,
                num_random=random_search,
                seed=seed,
                num_threads=threads,
                acoustic=AcousticSettings(device=device),
                cache_dir=cache_dir,
                use_cache=not no_cache,
                normalize=not no_normalize,
                heldout=heldout,
                progress=bar.update_stage,
            )
        if output:
            write_json_atomic(output, report.to_dict())
        if plot:
            plot_wer(report, plot)
        attrs_path = (
            write_attrs(write_attrs_to, report.best.setting, include_unk=unk_score_offset is not None)
            if (write_attrs_to)
            else None
        )
    except W2vlmError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out = Console()
    if not quiet:
        out.print(results_table(report, top))
    b, c = report.best, report.baseline
    out.print(
        f"best: alpha={b.setting.alpha:g} beta={b.setting.beta:g} beam_width={b.setting.beam_width} "
        f"unk_score_offset={b.setting.unk_score_offset:g}: WER {100 * b.wer:.2f}% CER {100 * b.cer:.2f}% "
        f"(current alpha={c.setting.alpha:g} beta={c.setting.beta:g}: WER {100 * c.wer:.2f}%; "
        f"greedy WER {100 * report.greedy_wer:.2f}%)",
        highlight=False,
    )
    if report.heldout is not None:
        h = report.heldout
        out.print(
            f"held-out {h['manifest']} ({h['num_utterances']} utterances): WER {100 * h['current']['wer']:.2f}% "
            f"with the current setting, {100 * h['best']['wer']:.2f}% with the best; greedy "
            f"{100 * h['greedy']['wer']:.2f}%",
            highlight=False,
        )
    for path in (output, plot, attrs_path):
        if path:
            out.print(f"wrote {path}")
    for item in report.failed:
        err.print(f"[red]failed:[/] {escape(item['id'])}: {escape(item['error'])}", highlight=False, soft_wrap=True)
    if report.failed:
        err.print(f"{len(report.failed)} utterances failed and were left out")
        raise typer.Exit(1)


@app.command("visualize")
def visualize_command(
    audio: Annotated[str, typer.Argument(help="Audio file to look at.")],
    model: ModelOption = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write a PNG here.  \\[default: print a terminal rendering]"),
    ] = None,
    start: Annotated[float, typer.Option("--start", help="Seconds into the file to start from.")] = 0.0,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Seconds to show.  \\[default: the rest of the file, at most 60]"),
    ] = None,
    pad_to: Annotated[
        float | None,
        typer.Option(
            "--pad-to",
            help="Length in seconds of the padded-batch view.  \\[default: 1.5 x the input, at least +1 s]",
        ),
    ] = None,
    no_lm: Annotated[bool, typer.Option("--no-lm", help="Show greedy decoding only.")] = False,
    beam_width: Annotated[int, typer.Option("--beam-width", help="Beams kept per frame by the LM search.")] = 100,
    low_confidence: Annotated[
        float, typer.Option("--low-confidence", help="Words below this confidence are marked.")
    ] = 0.5,
    width: Annotated[
        int | None, typer.Option("--width", help="Terminal rendering width in columns.  \\[default: the terminal's]")
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Show what the model sees and decodes, as a PNG (-o) or in the terminal.

    Waveform, attention mask (alone and padded in a batch), CTC posteriorgram, greedy vs LM words + confidence."""

    from rich.console import Console
    from rich.markup import escape

    from w2vlm.errors import W2vlmError

    err = Console(stderr=True)
    if beam_width < 1:
        raise typer.BadParameter(f"must be at least 1; got {beam_width}", param_hint="'--beam-width'")
    if not 0.0 <= low_confidence <= 1.0:
        raise typer.BadParameter(f"must be in [0, 1]; got {low_confidence}", param_hint="'--low-confidence'")
    if start < 0:
        raise typer.BadParameter(f"must not be negative; got {start}", param_hint="'--start'")
    if duration is not None and not duration > 0:
        raise typer.BadParameter(f"must be a positive number of seconds; got {duration}", param_hint="'--duration'")
    if width is not None and width < 30:
        raise typer.BadParameter(f"must be at least 30 columns; got {width}", param_hint="'--width'")
    if output is not None and not output.lower().endswith(".png"):
        raise typer.BadParameter(f"expected a .png file name; got {output!r}", param_hint="'--output'")
    with _model_command(err):
        try:
            from w2vlm.visualize import analyze, render_png, render_terminal

            vis = analyze(
                audio,
                model,
                start_s=start,
                duration_s=duration,
                pad_to_s=pad_to,
                use_lm=not no_lm,
                beam_width=beam_width,
                device=device,
            )
            if output is None:
                render_terminal(vis, Console(width=width), low_confidence=low_confidence)
            else:
                path = render_png(vis, output, low_confidence=low_confidence)
                err.print(f"wrote {escape(str(path))}", highlight=False)
        except (W2vlmError, ValueError) as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


def main() -> None:
    """Entry point of the ``w2vlm`` console script."""
    app()


if __name__ == "__main__":
    main()
