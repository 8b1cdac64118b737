"""``w2vlm transcribe`` and ``serve``: speech to text on files, on Ray, and over HTTP."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from w2vlm.cli.app import (
    AlphaOption,
    BeamWidthOption,
    BetaOption,
    DeviceOption,
    DtypeOption,
    LanguageOption,
    LmFileOption,
    MaxSegmentOption,
    MinSilenceOption,
    MinSpeechOption,
    ModelOption,
    NoSpeechThresholdOption,
    QuantizeOption,
    SpeechPadOption,
    UnkScoreOffsetOption,
    VadOption,
    VadThresholdOption,
    app,
    lm_processor,
    model_command,
)
from w2vlm.defaults import DEFAULT_BEAM_WIDTH
from w2vlm.results import CUE_LINE_WIDTH, CUE_LINES, CUE_MAX_S


@app.command("transcribe")
def transcribe_command(
    audio: Annotated[
        list[str] | None,
        typer.Argument(
            help="Audio files and/or folders (walked recursively for audio files); - reads standard input.",
            show_default=False,
        ),
    ] = None,
    model: ModelOption = None,
    lm: LmFileOption = None,
    output_dir: Annotated[
        str | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Folder for the outputs, named after each input's stem (sub-folders of input folders are "
            "mirrored).  [default: none: print to stdout]",
        ),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--output-format",
            "-f",
            help="txt, json, srt, vtt or tsv; several comma-separated (srt,vtt,json) or all need --output-dir; "
            "with --ray: jsonl or parquet.  "
            "[default: txt; jsonl with --ray]",
        ),
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="At most this many audio windows per model forward pass; batches are formed from windows of "
            "similar length within a budget of padded audio.  [default: the budget alone]",
        ),
    ] = None,
    chunk_length: Annotated[
        float | None,
        typer.Option(
            "--chunk-length",
            help="Cut long audio into fixed windows of this many seconds (with 1/6 of it as context on each side) "
            "instead of speech segments.  [default: speech segments beyond 10 s; with --no-vad whole files up "
            "to 60 s, 30 s windows beyond]",
        ),
    ] = None,
    beam_width: Annotated[
        int | None,
        typer.Option("--beam-width", help=f"Beams kept per frame.  [default: {DEFAULT_BEAM_WIDTH}]"),
    ] = None,
    alpha: AlphaOption = None,
    beta: BetaOption = None,
    unk_score_offset: UnkScoreOffsetOption = None,
    language: LanguageOption = None,
    hotwords: Annotated[
        str | None,
        typer.Option(
            "--hotwords",
            help="Words or phrases to favour: a file with one a line, or a comma-separated list.  [default: none]",
        ),
    ] = None,
    word_timestamps: Annotated[
        bool,
        typer.Option(
            "--word-timestamps",
            help="Word start/end times and confidences in json and tsv, word time tags in vtt (and the segments' mean "
            "word confidence in json).  [default: off]",
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
            help="CPU threads in all, shared by torch (three quarters) and the decoder (half), which run at the "
            "same time (at least one each).  [default: the available CPUs]",
        ),
    ] = None,
    no_lm: Annotated[
        bool,
        typer.Option(
            "--no-lm",
            help="Ignore the LM: greedy decoding, or a beam search without LM when --beam-width, --hotwords "
            "or --n-best > 1 ask for one.  [default: off]",
        ),
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing", help="Skip inputs whose outputs all exist already (resume a run).  [default: off]"
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.  [default: off]")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Print each input's segments with their times on stderr as it is done."),
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Run on Ray Data: the model in an actor pool, LM decoding in CPU tasks, records written to "
            "--output-dir as JSON lines or Parquet (re-runs skip finished inputs). The input may also be one "
            "JSONL/CSV manifest.  [default: off]",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Ray cluster to run on with --ray: 'auto' (the one started by `ray start` here), HOST:6379 or "
            "ray://HOST:10001.  [default: $RAY_ADDRESS, else a local Ray started for the job]",
        ),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option("--ray-workers", help="Acoustic model actors with --ray.  [default: the GPUs, else CPUs / 2]"),
    ] = None,
    vad: VadOption = None,
    vad_threshold: VadThresholdOption = None,
    min_speech: MinSpeechOption = None,
    min_silence: MinSilenceOption = None,
    speech_pad: SpeechPadOption = None,
    max_segment: MaxSegmentOption = None,
    no_speech_threshold: NoSpeechThresholdOption = None,
    read_processes: Annotated[
        bool | None,
        typer.Option(
            "--read-processes/--read-threads",
            help="Read, resample and cut audio (VAD, features) in worker processes rather than threads of this "
            "one: free of Python's lock, for GPU runs over many files (about 3 s of start-up; threads read until "
            "they are up).  [default: processes for 8 files or more on a GPU with 4+ CPUs, on Linux]",
            show_default=False,
        ),
    ] = None,
    max_cue_duration: Annotated[
        float, typer.Option("--max-cue-duration", help="Longest subtitle cue (srt, vtt, tsv rows), in seconds.")
    ] = CUE_MAX_S,
    max_line_width: Annotated[
        int, typer.Option("--max-line-width", min=1, help="Characters per subtitle line (srt, vtt).")
    ] = CUE_LINE_WIDTH,
    max_line_count: Annotated[
        int, typer.Option("--max-line-count", min=1, help="Lines per subtitle cue (srt, vtt).")
    ] = CUE_LINES,
) -> None:
    """Transcribe audio files (exit code 1 if any input failed)."""

    from rich.console import Console
    from rich.markup import escape

    from w2vlm.errors import W2vlmError
    from w2vlm.transcribe import TranscribeOptions, parse_hotwords
    from w2vlm.transcribe_run import describe_summary, run
    from w2vlm.writers import CueStyle, expand_formats

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
        "unk_score_offset": unk_score_offset,
        "language": language,
        "n_best": n_best,
        "vad": vad,
        "vad_threshold": vad_threshold,
        "vad_min_speech_s": min_speech,
        "vad_min_silence_s": min_silence,
        "vad_pad_s": speech_pad,
        "max_segment_s": max_segment,
        "no_speech_threshold": no_speech_threshold,
        "read_processes": read_processes,
    }
    if ray and verbose:
        raise typer.BadParameter(
            "prints as inputs are done here; with --ray read the records", param_hint="'--verbose'"
        )
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
    try:
        expand_formats(output_format)
    except W2vlmError as exc:
        raise typer.BadParameter(str(exc).removeprefix("output format: "), param_hint="'--output-format'") from None
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
    if not (0 < max_cue_duration < float("inf")):
        raise typer.BadParameter(
            f"must be a positive number of seconds; got {max_cue_duration}", param_hint="'--max-cue-duration'"
        )
    with model_command(err):
        try:
            style = CueStyle(max_cue_duration, max_line_width, max_line_count)
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
                cue_style=style,
                verbose=verbose,
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
    with model_command(err, logging.INFO):
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


#: uvicorn's log levels (``serve --log-level``)
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@app.command("serve")
def serve_command(
    model: ModelOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="TCP port (0: any free one).")] = 8000,
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
        typer.Option(
            "--model-name",
            help="Model id listed by /v1/models (default: the model folder's name, 'w2vlm' for the embedded model; "
            "OpenAI's 'whisper-1', 'gpt-4o-transcribe' and 'gpt-4o-mini-transcribe' are aliases of it).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Decoding threads.")] = 2,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=0, help="Requests that may wait for a worker; more get 503.")
    ] = 64,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", help="Upload size limit in MiB (1,048,576 bytes each).")
    ] = 25.0,
    upload_timeout: Annotated[
        float, typer.Option("--upload-timeout", help="Seconds a client may take to send its upload (else 408).")
    ] = 120.0,
    stream_chunk: Annotated[
        float, typer.Option("--stream-chunk", help="Seconds of audio per window when a request asks to stream.")
    ] = 10.0,
    language: LanguageOption = None,
    beam_width: BeamWidthOption = DEFAULT_BEAM_WIDTH,
    lm: LmFileOption = None,
    alpha: AlphaOption = None,
    beta: BetaOption = None,
    unk_score_offset: UnkScoreOffsetOption = None,
    low_confidence: Annotated[
        float,
        typer.Option("--low-confidence", min=0.0, max=1.0, help="The web page marks words below this confidence."),
    ] = 0.5,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    quantize: QuantizeOption = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help=f"uvicorn log level: {', '.join(_LOG_LEVELS)}.")
    ] = "info",
    vad: VadOption = None,
    vad_threshold: VadThresholdOption = None,
    min_speech: MinSpeechOption = None,
    min_silence: MinSilenceOption = None,
    speech_pad: SpeechPadOption = None,
    max_segment: MaxSegmentOption = None,
    no_speech_threshold: NoSpeechThresholdOption = None,
) -> None:
    """Run the OpenAI-compatible transcription server (POST /v1/audio/transcriptions) with a web page at /."""

    from rich.console import Console

    from w2vlm.errors import W2vlmError

    positive = (
        (max_upload_mb, "--max-upload-mb"),
        (upload_timeout, "--upload-timeout"),
        (stream_chunk, "--stream-chunk"),
    )
    for value, option in positive:
        if not 0 < value < float("inf"):
            raise typer.BadParameter(f"must be a positive number; got {value}", param_hint=f"'{option}'")
    if log_level.lower() not in _LOG_LEVELS:
        raise typer.BadParameter(
            f"expected one of {', '.join(_LOG_LEVELS)}; got {log_level!r}", param_hint="'--log-level'"
        )
    err = Console(stderr=True)
    try:
        from w2vlm.server import ServerSettings, serve
    except ImportError as exc:
        err.print(f"[bold red]error:[/] the server needs its extra: pip install 'w2vlm\\[server]' ({exc})")
        raise typer.Exit(1) from None
    # w2vlm's log records on stderr while the server runs; glibc's allocator as it is: the server's many threads
    # would each keep up to 64 MiB of freed memory (+110-210 MB resident after 3-12 rounds of requests), for
    # nothing at a server's request rates
    with model_command(err, logging.INFO, batch=False):
        try:
            from w2vlm.transcribe import TranscribeOptions

            TranscribeOptions(  # the decoding and VAD settings, checked (and named) before the model loads
                model=model,
                lm=lm,
                beam_width=beam_width,
                alpha=alpha,
                beta=beta,
                unk_score_offset=unk_score_offset,
                device=device,
                dtype=dtype,
                quantize=quantize,
                vad=vad,
                vad_threshold=vad_threshold,
                vad_min_speech_s=min_speech,
                vad_min_silence_s=min_silence,
                vad_pad_s=speech_pad,
                max_segment_s=max_segment,
                no_speech_threshold=no_speech_threshold,
            ).validate()
            settings = ServerSettings(
                api_key=api_key or None,
                max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                upload_timeout_s=upload_timeout,
                stream_chunk_s=stream_chunk,
                workers=workers,
                max_queue=max_queue,
                language=language,
                low_confidence=low_confidence,
                decoder_kwargs={"beam_width": beam_width}
                | ({} if no_speech_threshold is None else {"no_speech_threshold": no_speech_threshold}),
                vad=vad,
                vad_parameters={
                    key: value
                    for key, value in (
                        ("threshold", vad_threshold),
                        ("min_speech_s", min_speech),
                        ("min_silence_s", min_silence),
                        ("pad_s", speech_pad),
                        ("max_segment_s", max_segment),
                    )
                    if value is not None
                },
            )
            if model_name:
                settings.model_id = model_name
            serve(
                model,
                processor=lm_processor(model, lm, alpha, beta, unk_score_offset),
                host=host,
                port=port,
                settings=settings,
                device=device,
                dtype=dtype,
                quantize=quantize,
                log_level=log_level.lower(),
            )
        except (W2vlmError, ValueError) as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
