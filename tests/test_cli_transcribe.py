"""``w2vlm transcribe``: outputs, options, and per-file error handling, on tiny random checkpoints."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner

from cli_support import invoke, keep_torch_threads, make_audio_dir, pipeline_text  # noqa: F401 (an autouse fixture)
from conftest import make_sine, write_arpa, write_audio_file
from w2vlm.cli import app
from w2vlm.transcribe import collect_inputs, greedy_words, parse_hotwords


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_audio_dir(tmp_path_factory.mktemp("audio"))


# ------------------------------------------------------------------------------------------------ basics


def test_single_file_prints_the_pipeline_text(tiny_ctc_dir: Path, audio_dir: Path) -> None:
    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    expected = pipeline_text(tiny_ctc_dir, audio_dir / "one.wav")["text"]
    assert expected  # the tiny model's peaky output layer gives a non-empty transcript
    assert result.stdout == expected + "\n"
    assert "1 transcribed" in result.stderr and "audio-s/s" in result.stderr


def test_directory_to_all_formats(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(audio_dir, "--model", tiny_ctc_dir, "-o", out, "-f", "all", "--word-timestamps")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    stems = ["one", "sub/three", "two"]
    assert names == sorted(f"{s}.{ext}" for s in stems for ext in ("txt", "json", "srt", "vtt", "tsv"))
    # the json agrees with the pipeline's word timestamps (frames × 320 / 16000 s)
    ref = pipeline_text(tiny_ctc_dir, audio_dir / "two.flac", return_timestamps="word")
    data = json.loads((out / "two.json").read_text(encoding="utf-8"))
    assert data["text"] == ref["text"] == (out / "two.txt").read_text(encoding="utf-8").strip()
    assert data["duration"] == pytest.approx(1.5)
    assert [(w["word"], w["start"], w["end"]) for w in data["words"]] == [
        (c["text"], *c["timestamp"]) for c in ref["chunks"]
    ]
    assert all(0.0 <= w["confidence"] <= 1.0 for w in data["words"])
    srt = (out / "two.srt").read_text(encoding="utf-8")
    assert srt.count(" --> ") == len(data["words"])  # one cue per word with --word-timestamps
    assert (out / "two.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
    assert (out / "two.tsv").read_text(encoding="utf-8").startswith("start\tend\tword\tconfidence\n")
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind


def test_read_processes_give_the_same_outputs(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    outs = {}
    for flag in ("--read-processes", "--read-threads"):
        outs[flag] = tmp_path / flag.strip("-")
        result = invoke(audio_dir, "--model", tiny_ctc_dir, "-o", outs[flag], "-f", "json", flag)
        assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(outs["--read-threads"]) for p in outs["--read-threads"].rglob("*.json"))
    assert len(files) == 3
    for name in files:
        a, b = (json.loads((outs[f] / name).read_text(encoding="utf-8")) for f in outs)
        assert (a["text"], a["duration"]) == (b["text"], b["duration"])


def test_several_inputs_to_stdout(tiny_ctc_dir: Path, audio_dir: Path) -> None:
    result = invoke(audio_dir / "one.wav", audio_dir / "two.flac", "--model", tiny_ctc_dir)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(audio_dir / "one.wav"), str(audio_dir / "two.flac")]
    json_lines = invoke(audio_dir / "one.wav", audio_dir / "two.flac", "--model", tiny_ctc_dir, "-f", "json")
    docs = [json.loads(line) for line in json_lines.stdout.splitlines()]
    assert [d["text"] for d in docs] == [line.split("\t", 1)[1] for line in lines]


# --------------------------------------------------------------------------------------------- failures


def test_bad_files_are_reported_and_skipped(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(audio_dir, bad)
    (bad / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    (bad / "empty.mp3").write_bytes(b"")
    write_audio_file(bad / "tiny.wav", make_sine(0.01), 16000)  # shorter than one model frame
    out = tmp_path / "out"
    result = invoke(bad, tmp_path / "missing.wav", "--model", tiny_ctc_dir, "-o", out, "--batch-size", "4")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4, result.stderr
    for name in ("corrupt.wav", "empty.mp3", "tiny.wav", "missing.wav"):
        assert sum(name in line for line in errors) == 1, (name, errors)
    assert "Traceback" not in result.output
    # the good files were all transcribed
    assert sorted(p.name for p in out.rglob("*.txt")) == ["one.txt", "three.txt", "two.txt"]
    assert "3 transcribed, 4 failed" in result.stderr


def test_unreachable_model_path(tmp_path: Path, audio_dir: Path) -> None:
    result = invoke(audio_dir / "one.wav", "--model", tmp_path / "no-such-model")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'no-such-model'}: no such model folder"]
    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    result = invoke(audio_dir / "one.wav", "--model", not_a_model)
    assert result.exit_code == 1 and "config.json is missing" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output-format", "docx"], "--output-format"),
        (["--beam-width", "0"], "--beam-width"),
        (["--n-best", "0"], "--n-best"),
        (["--batch-size", "0"], "--batch-size"),
        (["--threads", "0"], "--threads"),
        (["--chunk-length", "-1"], "--chunk-length"),
        (["--quantize", "int4"], "--quantize"),
        (["--alpha", "abc"], "--alpha"),
        (["--max-line-width", "0"], "--max-line-width"),
        (["--max-line-count", "0"], "--max-line-count"),
        (["--max-cue-duration", "0"], "--max-cue-duration"),
        (["--max-cue-duration", "inf"], "--max-cue-duration"),
    ],
)
def test_bad_option_values(tiny_ctc_dir: Path, audio_dir: Path, args: list[str], message: str) -> None:
    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-lm", "--lm", "x.arpa"], "--lm and --no-lm"),
        (["--no-lm", "--alpha", "1.0"], "--alpha/--beta"),
        (["--lm", "nowhere/lm.arpa"], "nowhere/lm.arpa: no such language model file"),
        (["--hotwords", "nowhere/hotwords.txt"], "--hotwords: nowhere/hotwords.txt: no such file"),
        (["-f", "all"], "needs --output-dir"),
        (["--device", "tpu9"], "device"),
    ],
)
def test_options_that_cannot_work(tiny_ctc_dir: Path, audio_dir: Path, args: list[str], message: str) -> None:
    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, *args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


def test_corrupt_lm_file(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    lm = tmp_path / "broken.arpa"
    lm.write_text("this is not an ARPA file\n")
    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "--lm", lm)
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and str(lm) in result.stderr


# ------------------------------------------------------------------------------------------- resuming


def test_skip_existing(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert invoke(audio_dir, "--model", tiny_ctc_dir, "-o", out, "-f", "txt").exit_code == 0
    (out / "one.txt").write_text("kept\n")
    (out / "two.txt").unlink()
    result = invoke(audio_dir, "--model", tiny_ctc_dir, "-o", out, "-f", "txt", "--skip-existing")
    assert result.exit_code == 0
    assert "1 transcribed, 2 skipped" in result.stderr
    assert (out / "one.txt").read_text() == "kept\n"
    assert (out / "two.txt").is_file()
    # a format that is missing for a file means it is done again
    result = invoke(audio_dir, "--model", tiny_ctc_dir, "-o", out, "-f", "srt", "--skip-existing")
    assert "3 transcribed" in result.stderr
    # everything present: the model is not even loaded
    result = invoke(audio_dir, "--model", tmp_path / "absent-model", "-o", out, "-f", "txt", "--skip-existing")
    assert result.exit_code == 0 and "0 transcribed, 3 skipped" in result.stderr


def test_output_name_clash(tiny_ctc_dir: Path, tmp_path: Path) -> None:
    write_audio_file(tmp_path / "same.wav", make_sine(1.0), 16000)
    write_audio_file(tmp_path / "same.flac", make_sine(1.0, freq=300), 16000)
    result = invoke(tmp_path / "same.wav", tmp_path / "same.flac", "--model", tiny_ctc_dir, "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert "would overwrite" in result.stderr
    assert (tmp_path / "o" / "same.txt").is_file()


# ------------------------------------------------------------------------------------------- decoding


def test_no_lm_is_greedy(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    import w2vlm
    from w2vlm.processor import decoder_labels

    pipe = w2vlm.pipeline("automatic-speech-recognition", model=str(tiny_ctc_dir), device="cpu")
    (logits,) = pipe.compute_logits([str(audio_dir / "two.flac")])
    labels = decoder_labels(pipe.decoder)
    ids = logits.argmax(axis=1)
    collapsed = [int(i) for k, i in enumerate(ids) if k == 0 or i != ids[k - 1]]
    expected = " ".join("".join(labels[i] for i in collapsed if labels[i] != "").split())
    result = invoke(audio_dir / "two.flac", "--model", tiny_ctc_dir, "--no-lm", "-o", tmp_path, "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "two.json").read_text())
    assert data["text"] == expected


def test_greedy_words() -> None:
    labels = ["", " ", "a", "b", "c"]
    # frames: a a _ b ␣ ␣ c c _ c
    seq = [2, 2, 0, 3, 1, 1, 4, 4, 0, 4]
    lp = np.full((len(seq), len(labels)), np.log(0.05), dtype=np.float32)
    lp[np.arange(len(seq)), seq] = np.log(0.8)
    lp[1, 2] = np.log(0.6)
    text, words = greedy_words(lp, labels)
    assert text == "ab cc"
    assert [(w, s, e) for w, s, e, _ in words] == [("ab", 0, 4), ("cc", 6, 10)]
    assert words[0][3] == pytest.approx(0.7)  # token "a": mean of 0.8 and 0.6; "b": 0.8
    assert greedy_words(np.zeros((0, 5), np.float32), labels) == ("", [])
    bpe = ["", "▁he", "llo", "▁world"]
    lp = np.log(np.eye(4, dtype=np.float32)[[1, 2, 0, 3]] * 0.97 + 0.01)
    assert greedy_words(lp, bpe, is_bpe=True)[0] == "hello world"


def test_lm_override_matches_a_processor_with_that_lm(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    import w2vlm
    from w2vlm.decoder import build_ctcdecoder
    from w2vlm.processor import Wav2Vec2ProcessorWithLM, decoder_labels

    sentences = ["gm lm", "lm lm gm", "a gm"]  # words close to what the tiny model emits for this clip
    lm_dir = tmp_path / "other_lm"
    lm_dir.mkdir()
    arpa = write_arpa(lm_dir / "other.arpa", sentences, order=2)
    words = sorted({w for s in sentences for w in s.split()})
    (lm_dir / "unigrams.txt").write_text("\n".join(words) + "\n")
    base = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir)
    decoder = build_ctcdecoder(decoder_labels(base.decoder), str(arpa), words, alpha=0.9, beta=2.0)
    processor = Wav2Vec2ProcessorWithLM(base.feature_extractor, base.tokenizer, decoder)
    pipe = w2vlm.pipeline("automatic-speech-recognition", model=str(tiny_ctc_dir), processor=processor, device="cpu")
    audio = audio_dir / "one.wav"
    expected = pipe(str(audio))["text"]
    default = pipeline_text(tiny_ctc_dir, audio)["text"]
    result = invoke(audio, "--model", tiny_ctc_dir, "--lm", arpa, "--alpha", "0.9", "--beta", "2.0")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == expected
    assert expected != default


def test_alpha_beta_beam_width_threads(tiny_ctc_dir: Path, audio_dir: Path) -> None:
    audio = audio_dir / "two.flac"
    ref = pipeline_text(
        tiny_ctc_dir, audio, decoder_kwargs={"alpha": 2.0, "beta": -1.0, "beam_width": 8, "num_threads": 1}
    )
    result = invoke(
        audio, "--model", tiny_ctc_dir, "--alpha", "2", "--beta", "-1", "--beam-width", "8", "--threads", "1"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ref["text"]


def test_n_best_alternatives(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "--n-best", "3", "-o", tmp_path, "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "one.json").read_text())
    alts = data["alternatives"]
    assert len(alts) == 3
    assert alts[0]["text"] == data["text"]
    assert len({a["text"] for a in alts}) == 3
    scores = [a["lm_score"] for a in alts]
    assert scores == sorted(scores, reverse=True)


def test_hotwords_file_and_list(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    hot = tmp_path / "hot.txt"
    hot.write_text("zebra\n\nquilt pattern\nzebra\n")
    assert parse_hotwords(str(hot)) == ["zebra", "quilt pattern"]
    assert parse_hotwords("zebra, quilt pattern,") == ["zebra", "quilt pattern"]
    assert parse_hotwords(None) == []
    ref = pipeline_text(tiny_ctc_dir, audio_dir / "one.wav", decoder_kwargs={"hotwords": ["zebra", "quilt pattern"]})
    for value in (str(hot), "zebra,quilt pattern"):
        result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "--hotwords", value)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == ref["text"]


def test_chunked_long_input_matches_the_pipeline(tiny_ctc_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    audio = tmp_path / "long.wav"
    write_audio_file(audio, (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32), 16000)
    ref = pipeline_text(tiny_ctc_dir, audio, chunk_length_s=1.0, return_timestamps="word")
    result = invoke(audio, "--model", tiny_ctc_dir, "--chunk-length", "1", "--word-timestamps", "-f", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] == ref["text"]
    assert [(w["word"], w["start"], w["end"]) for w in data["words"]] == [
        (c["text"], *c["timestamp"]) for c in ref["chunks"]
    ]
    assert all(w["confidence"] is not None for w in data["words"])
    # without word timestamps the windows are decoded incrementally without keeping the logits: same text
    plain = invoke(audio, "--model", tiny_ctc_dir, "--chunk-length", "1")
    assert plain.exit_code == 0 and plain.stdout.strip() == ref["text"]


def test_quantize_int8(tiny_ctc_dir: Path, audio_dir: Path) -> None:
    import torch

    if torch.backends.quantized.engine == "none" and not torch.backends.quantized.supported_engines:
        pytest.skip("no quantized engine in this torch build")
    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "--quantize", "int8", "-f", "tsv")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("start\tend\ttext\n")


def test_model_without_lm_uses_beam_search_without_lm(tiny_ctc_factory, audio_dir: Path, tmp_path: Path) -> None:
    model = tiny_ctc_factory("nolm", with_lm=False)
    result = invoke(audio_dir / "one.wav", "--model", model)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == pipeline_text(model, audio_dir / "one.wav")["text"]
    # --alpha needs an LM to weight
    result = invoke(audio_dir / "one.wav", "--model", model, "--alpha", "1")
    assert result.exit_code == 1 and "no language model" in result.stderr


def test_collect_inputs(audio_dir: Path, tmp_path: Path) -> None:
    files, errors = collect_inputs([audio_dir, audio_dir / "one.wav", tmp_path / "nope.wav", tmp_path])
    assert [str(f.path.relative_to(audio_dir)) for f in files] == ["one.wav", "sub/three.wav", "two.flac"]
    assert [f.relative for f in files] == [Path(), Path("sub"), Path()]
    assert errors == [
        (str(tmp_path / "nope.wav"), "no such file or folder"),
        (str(tmp_path), "no audio files in this folder"),
    ]


def test_help_documents_every_option_with_its_default() -> None:
    result = CliRunner().invoke(app, ["transcribe", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = result.output
    for option in (
        "--model", "--lm", "--output-dir", "--output-format", "--device", "--batch-size", "--chunk-length",
        "--beam-width", "--alpha", "--beta", "--hotwords", "--word-timestamps", "--n-best", "--quantize",
        "--threads", "--no-lm", "--skip-existing",
    ):  # fmt: skip
        assert option in text, option
    assert text.count("[default:") >= 17


def test_embedded_default_model(tmp_path: Path) -> None:
    """Without --model the embedded default is used; where this install has none, that is one error line."""
    from w2vlm.model import DEFAULT_MODEL_DIR

    audio = write_audio_file(tmp_path / "a.wav", make_sine(1.0), 16000)
    result = invoke(audio, "--device", "cpu")
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        assert result.exit_code == 0, result.output
        assert result.stdout.endswith("\n")
    else:
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "embedded default model is not installed" in lines[0]


@pytest.mark.slow
def test_examples_with_the_embedded_model(tmp_path: Path) -> None:
    """The README's first command: the example recordings through the embedded model, as the pipeline
    transcribes them, with word times inside each file."""
    import w2vlm
    from w2vlm.model import DEFAULT_MODEL_DIR

    examples = Path(__file__).resolve().parents[1] / "examples"
    if not (DEFAULT_MODEL_DIR / "config.json").is_file() or not examples.is_dir():
        pytest.skip("the embedded model or examples/ is not installed")
    result = invoke(examples, "-o", tmp_path, "-f", "json", "--word-timestamps")
    assert result.exit_code == 0, result.output
    pipe = w2vlm.pipeline("automatic-speech-recognition", device="cpu")
    wavs = sorted(examples.glob("*.wav"))
    assert wavs
    errors = words = 0
    for wav in wavs:
        data = json.loads((tmp_path / f"{wav.stem}.json").read_text(encoding="utf-8"))
        assert data["text"] and data["text"] == pipe(str(wav))["text"]
        times = [(w["start"], w["end"]) for w in data["words"]]
        assert all(0 <= s < e <= data["duration"] + 0.02 for s, e in times)
        assert all(e1 <= s2 for (_, e1), (s2, _) in itertools.pairwise(times))
        reference = wav.with_suffix(".txt")
        if reference.is_file():
            expected = reference.read_text(encoding="utf-8").split()
            errors += _edit_distance(expected, data["text"].split())
            words += len(expected)
    # a speech model, not noise (the embedded model is small: its word error rate here is high)
    assert words == 0 or errors / words < 1.0, (errors, words)


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_progress_bar_shows_audio_seconds_per_second(tiny_ctc_dir: Path, audio_dir: Path, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from w2vlm.transcribe import TranscribeOptions
    from w2vlm.transcribe_run import describe_summary, run

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    summary = run(
        [str(audio_dir)],
        TranscribeOptions(model=str(tiny_ctc_dir), device="cpu"),
        output_dir=str(tmp_path),
        console=console,
        progress=True,
    )
    assert summary.done == 3 and summary.failed == 0
    assert summary.audio_seconds == pytest.approx(1.0 + 1.5 + 0.7)
    assert summary.speed > 0
    assert "audio-s/s" in buffer.getvalue()
    assert describe_summary(summary).startswith("3 transcribed; 3.2 s of audio in ")


def test_cuda_without_cuda_is_one_error_line(tiny_ctc_dir: Path, audio_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke(audio_dir / "one.wav", "--model", tiny_ctc_dir, "--device", "cuda")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0]
