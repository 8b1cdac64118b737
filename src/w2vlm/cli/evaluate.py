"""``w2vlm eval``, ``tune`` and ``visualize``: scoring models and decoders on manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from w2vlm.cli.app import (
    AlphaOption,
    BeamWidthOption,
    BetaOption,
    CacheDirOption,
    DecodeThreadsOption,
    DeviceOption,
    DtypeOption,
    LmFileOption,
    ManifestArgument,
    ModelOption,
    NoCacheOption,
    NoNormalizeOption,
    QuantizeOption,
    TableQuietOption,
    UnkScoreOffsetOption,
    app,
    lm_processor,
    model_command,
)
from w2vlm.defaults import DEFAULT_BEAM_WIDTH


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
        typer.Option(
            "--lm",
            help="LM to use instead of the model's: an LM file, or a folder of one (build-lm's, a language_model/).",
        ),
    ] = None,
    no_lm: Annotated[bool, typer.Option("--no-lm", help="Score greedy decoding only.")] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write the full report (per-utterance errors) as JSON.")
    ] = None,
    beam_width: BeamWidthOption = DEFAULT_BEAM_WIDTH,
    alpha: AlphaOption = None,
    beta: BetaOption = None,
    unk_score_offset: UnkScoreOffsetOption = None,
    threads: DecodeThreadsOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    quantize: QuantizeOption = None,
    chunk_length: Annotated[
        float | None,
        typer.Option("--chunk-length", help="Window length in seconds for long audio.  [default: auto]"),
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

    from w2vlm.engine.config import MIN_CHUNK_LENGTH_S, DecodeConfig
    from w2vlm.errors import W2vlmError
    from w2vlm.eval import SYSTEM_NAMES, breakdown_table, evaluate, summary_table, worst_utterances
    from w2vlm.fileio import atomic_write_json, check_output
    from w2vlm.logits_cache import AcousticSettings

    if chunk_length is not None and not MIN_CHUNK_LENGTH_S <= chunk_length < float("inf"):
        raise typer.BadParameter(
            f"must be at least {MIN_CHUNK_LENGTH_S:g} seconds; got {chunk_length}", param_hint="'--chunk-length'"
        )
    err = Console(stderr=True)
    try:
        if output:
            check_output(output)
        if cache_dir and not no_cache:
            check_output(Path(cache_dir).expanduser(), folder=True)
        with model_command(err), _eval_progress(err, quiet) as bar:  # type: ignore[attr-defined]
            report = evaluate(
                manifest,
                model,
                lm=lm,
                use_lm=not no_lm,
                decode=DecodeConfig(beam_width=beam_width, alpha=alpha, beta=beta, unk_score_offset=unk_score_offset),
                num_threads=threads,
                acoustic=AcousticSettings(device=device, dtype=dtype, quantize=quantize, chunk_length_s=chunk_length),
                cache_dir=cache_dir,
                use_cache=not no_cache,
                normalize=not no_normalize,
                progress=bar.update_stage,
                group_by=by or (),
            )
        if output:
            atomic_write_json(output, report.to_dict())
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
            out.print(f"acoustic model RTF {rtf['acoustic']:.3g} (on {report.computed_audio_seconds:.1f} s computed)")
        cached = sum(1 for u in report.utterances if u.cached)
        if cached:
            out.print(f"{cached} of {len(report.utterances)} utterances' logits came from the cache")
        for u in worst_utterances(report, show):
            # soft_wrap: a line longer than the terminal (or than 80 columns when piped) is not broken inside
            # a path or a word
            out.print(f"[bold]{escape(u.id)}[/]  ref: {escape(u.reference)}", highlight=False, soft_wrap=True)
            for system, hyp in u.hypotheses.items():
                name = SYSTEM_NAMES.get(system, system)
                line = f"  {name}: {escape(hyp.text)}  ({hyp.words.errors} word errors)"
                out.print(line, highlight=False, soft_wrap=True)
        if output:
            out.print(f"wrote {output}", soft_wrap=True)
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
            "--lm",
            help="LM to tune instead of the model's: an LM file, or a folder of one (build-lm's, a language_model/).",
        ),
    ] = None,
    alpha: Annotated[
        str, typer.Option("--alpha", help="LM weights: 'start:stop:step' (stop included) or 'a,b,c'.")
    ] = "0:2:0.25",
    beta: Annotated[str, typer.Option("--beta", help="Word insertion bonuses, as --alpha.")] = "0:4:0.5",
    beam_width: Annotated[str, typer.Option("--beam-width", help="Beam widths to try, e.g. '50,100'.")] = "100",
    unk_score_offset: Annotated[
        str | None,
        typer.Option("--unk-score-offset", help="OOV penalties to try, as --alpha.  [default: the LM's]"),
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
    dtype: DtypeOption = "auto",
    quantize: QuantizeOption = None,
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
    from w2vlm.fileio import atomic_write_json, check_output
    from w2vlm.logits_cache import AcousticSettings
    from w2vlm.tune import parse_values, plot_wer, results_table, tune, write_attrs

    err = Console(stderr=True)
    try:
        for path in (output, plot):
            if path:
                check_output(path)
        if cache_dir and not no_cache:
            check_output(Path(cache_dir).expanduser(), folder=True)
        widths = [int(w) for w in parse_values(beam_width, "beam width")]
        with model_command(err), _eval_progress(err, quiet) as bar:  # type: ignore[attr-defined]
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
                acoustic=AcousticSettings(device=device, dtype=dtype, quantize=quantize),
                cache_dir=cache_dir,
                use_cache=not no_cache,
                normalize=not no_normalize,
                heldout=heldout,
                progress=bar.update_stage,
            )
        if output:
            atomic_write_json(output, report.to_dict())
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
        typer.Option("--output", "-o", help="Write a PNG here.  [default: print a terminal rendering]"),
    ] = None,
    start: Annotated[float, typer.Option("--start", help="Seconds into the file to start from.")] = 0.0,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Seconds to show.  [default: the rest of the file, at most 60]"),
    ] = None,
    pad_to: Annotated[
        float | None,
        typer.Option(
            "--pad-to",
            help="Length in seconds of the padded-batch view.  [default: 1.5 x the input, at least +1 s]",
        ),
    ] = None,
    no_lm: Annotated[bool, typer.Option("--no-lm", help="Show greedy decoding only.")] = False,
    beam_width: BeamWidthOption = DEFAULT_BEAM_WIDTH,
    lm: LmFileOption = None,
    alpha: AlphaOption = None,
    beta: BetaOption = None,
    unk_score_offset: UnkScoreOffsetOption = None,
    low_confidence: Annotated[
        float, typer.Option("--low-confidence", help="Words below this confidence are marked.")
    ] = 0.5,
    width: Annotated[
        int | None, typer.Option("--width", help="Terminal rendering width in columns.  [default: the terminal's]")
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    quantize: QuantizeOption = None,
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
    from w2vlm import limits

    most = limits.MAX_AUDIO_DURATION_S
    if not 0 <= start <= most:
        raise typer.BadParameter(f"must be 0 to {most:g} seconds; got {start}", param_hint="'--start'")
    for value, option in ((duration, "--duration"), (pad_to, "--pad-to")):
        if value is not None and not 0 < value <= limits.MAX_VISUALIZE_S:
            raise typer.BadParameter(
                f"must be more than 0 and at most {limits.MAX_VISUALIZE_S:g} seconds (w2vlm.limits.MAX_VISUALIZE_S); "
                f"got {value}",
                param_hint=f"'{option}'",
            )
    if width is not None and width < 30:
        raise typer.BadParameter(f"must be at least 30 columns; got {width}", param_hint="'--width'")
    if output is not None and not output.lower().endswith(".png"):
        raise typer.BadParameter(f"expected a .png file name; got {output!r}", param_hint="'--output'")
    with model_command(err):
        try:
            from w2vlm.fileio import check_output
            from w2vlm.pipeline import pipeline
            from w2vlm.visualize import analyze
            from w2vlm.visualize_render import render_png, render_terminal

            if output is not None:
                check_output(output)

            processor = None if no_lm else lm_processor(model, lm, alpha, beta, unk_score_offset)
            pipe = pipeline(
                "automatic-speech-recognition",
                model=model,
                processor=processor,
                device=device,
                dtype=dtype,
                quantize=quantize,
            )
            vis = analyze(
                audio,
                pipe=pipe,
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
