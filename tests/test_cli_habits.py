"""``w2vlm transcribe``'s command-line habits (issue 33): --version, several formats, standard input, help that fits
80 columns, --verbose, the language, and the command in a process of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner

from cli_support import invoke, keep_torch_threads, make_audio_dir, pipeline_text  # noqa: F401 (an autouse fixture)
from w2vlm.cli import app


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_audio_dir(tmp_path_factory.mktemp("audio"))


# ------------------------------------------------------------------------- command-line habits (issue 33)


def test_version() -> None:
    import w2vlm

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"w2vlm {w2vlm.__version__}\n"


def test_several_formats_in_one_run(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "-o", out, "-f", "srt, vtt,json,srt")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["one.json", "one.srt", "one.vtt"]
    bad = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "-o", out, "-f", "srt,docx")
    assert bad.exit_code == 2 and "'docx'" in bad.stderr


def test_standard_input(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    data = (audio_dir / "two.flac").read_bytes()
    expected = pipeline_text(tiny_ctc_dir, audio_dir / "two.flac")["text"]
    result = CliRunner().invoke(app, ["transcribe", "-", "--model", str(tiny_ctc_dir), "-f", "json"], input=data)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["audio"] == "-" and record["text"] == expected
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["transcribe", "-", "--model", str(tiny_ctc_dir), "-o", str(out)], input=data)
    assert result.exit_code == 0 and (out / "stdin.txt").read_text() == expected + "\n"
    # not audio: the error names standard input, not the temporary file it was copied to
    result = CliRunner().invoke(app, ["transcribe", "-", "--model", str(tiny_ctc_dir)], input=b"not audio\n")
    assert result.exit_code == 1
    assert "error: -: " in result.stderr and "w2vlm-stdin" not in result.stderr


def test_unk_score_offset_reaches_the_lm(tiny_ctc_dir: Path, tmp_path: Path) -> None:
    from w2vlm.transcribe import TranscribeError, TranscribeOptions, build_processor

    processor = build_processor(tiny_ctc_dir, TranscribeOptions(unk_score_offset=-3.5))
    lm = processor.decoder.language_model
    if lm is not None:
        assert lm.unk_score_offset == -3.5
    with pytest.raises(TranscribeError, match="--unk-score-offset"):
        TranscribeOptions(no_lm=True, unk_score_offset=-3.0).validate()


@pytest.mark.parametrize(
    "command",
    ["transcribe", "serve", "eval", "tune", "build-lm", "convert-lm", "add-lm", "train", "visualize", "average"],
)
def test_help_fits_80_columns_and_shows_flags_as_flags(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    assert "<bool>" not in result.stdout and "\\[" not in result.stdout
    assert not [line for line in lines if line.rstrip().endswith("…")]  # nothing cut off


def test_verbose_prints_segments_on_stderr(tiny_ctc_dir: Path, audio_dir: Path) -> None:
    result = invoke(audio_dir / "one.wav", audio_dir / "two.flac", "--model", tiny_ctc_dir, "--verbose", "-q")
    assert result.exit_code == 0, result.output
    assert f"==> {audio_dir / 'one.wav'} <==" in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert lines and all(" --> " in line and "] " in line for line in lines)
    assert result.stdout.count("\t") == 2  # stdout: the transcripts as without --verbose


def test_language_reported_and_checked(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    from w2vlm.model import write_model_card

    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "-f", "json", "--language", "de")
    assert result.exit_code == 0 and json.loads(result.stdout)["language"] == "de"
    model = tmp_path / "m"
    shutil.copytree(tiny_ctc_dir, model)
    write_model_card(model, language="en", title="m")
    result = invoke(audio_dir / "one.wav", "--model", model, "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["language"] == "en"
    result = invoke(audio_dir / "one.wav", "--model", model, "--language", "de")
    assert result.exit_code == 1 and "transcribes 'en'" in result.stderr


def test_lm_options_reach_serve_and_visualize(tiny_ctc_dir: Path) -> None:
    from w2vlm.cli.app import lm_processor
    from w2vlm.transcribe import TranscribeError

    assert lm_processor(str(tiny_ctc_dir), None, None, None, None) is None  # the model's own processor
    processor = lm_processor(str(tiny_ctc_dir), None, 0.25, 3.0, -4.0)
    lm = processor.decoder.language_model
    assert (lm.alpha, lm.beta, lm.unk_score_offset) == (0.25, 3.0, -4.0)
    with pytest.raises(TranscribeError, match="--alpha"):
        lm_processor(str(tiny_ctc_dir), None, float("nan"), None, None)
    pytest.importorskip("fastapi")
    from w2vlm.server import ServerSettings, create_app

    app = create_app(str(tiny_ctc_dir), ServerSettings(), device="cpu", processor=processor)
    assert app.state.w2vlm.transcriber.pipe.decoder.language_model.alpha == 0.25


def test_the_command_in_its_own_process_exits_cleanly(tmp_path: Path) -> None:
    """`w2vlm transcribe` as a user runs it (a fresh process through the console script's entry point): the
    transcript on stdout, the files it wrote complete, and a quiet exit (the entry point freezes the objects
    at exit so that shutdown skips the collector's walk over them; nothing may report them as leaked)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "w2vlm.cli", "transcribe", str(root / "examples" / "children.wav")]
    done = subprocess.run([*cmd, "-o", str(tmp_path), "-f", "json"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "children.json").read_text())
    assert record["text"] == "the children a all fond of him"
    assert "leak" not in done.stderr and "nanobind" not in done.stderr, done.stderr[-2000:]
    printed = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert printed.returncode == 0 and printed.stdout.strip() == "the children a all fond of him"
    assert "leak" not in printed.stderr, printed.stderr[-2000:]


def test_a_manifest_given_to_transcribe_is_named_with_what_reads_one(tmp_path: Path) -> None:
    from w2vlm.transcribe import collect_inputs

    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.wav", "text": "a"}\n')
    files, errors = collect_inputs([str(manifest)])
    assert files == [] and errors == [(str(manifest), errors[0][1])]
    assert "a manifest, not audio" in errors[0][1] and "--ray" in errors[0][1]


def test_ctrl_c_keeps_finished_outputs_and_says_how_far_it_got(
    tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the first input: its outputs are written whole, a line says how many of how many are done
    (and that --skip-existing goes on), and the interrupt goes on up (exit 130)."""
    import io

    from rich.console import Console

    import w2vlm.transcribe_run as transcribe_run
    from w2vlm.transcribe import TranscribeOptions

    real = transcribe_run.Transcriber.transcribe

    def interrupted(self, todo, *args, **kwargs):
        for i, result in enumerate(real(self, todo, *args, **kwargs)):
            if i == 1:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(transcribe_run.Transcriber, "transcribe", interrupted)
    err = io.StringIO()
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        transcribe_run.run(
            [str(audio_dir)], TranscribeOptions(model=str(tiny_ctc_dir)), output_dir=str(out),
            console=Console(file=err, width=200), progress=False,
        )  # fmt: skip
    assert "interrupted: 1 of 3 inputs transcribed and written; --skip-existing goes on with the other 2" in (
        err.getvalue()
    )
    assert [p.name for p in out.rglob("*.txt")] == ["one.txt"]
