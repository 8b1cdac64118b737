"""``w2vlm visualize``: the analysis (masks, posteriors, words), the PNG, the terminal rendering, the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from rich.console import Console
from typer.testing import CliRunner

from conftest import build_tiny_ctc_checkpoint, make_sine, write_audio_file
from w2vlm.cli import app
from w2vlm.eval import greedy_decode
from w2vlm.visualize import analyze
from w2vlm.visualize_render import render_png, render_terminal

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "children.wav"
runner = CliRunner()


@pytest.fixture(scope="module")
def embedded_pipe():
    from w2vlm import pipeline

    return pipeline("automatic-speech-recognition", device="cpu")


@pytest.fixture(scope="module")
def embedded_vis(embedded_pipe):
    return analyze(EXAMPLE, pipe=embedded_pipe)


@pytest.fixture(scope="module")
def group_norm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wav2vec2-base style model: group-norm front end, no attention mask."""
    return build_tiny_ctc_checkpoint(tmp_path_factory.mktemp("gn") / "model", feat_extract_norm="group")


def test_masks_of_a_model_that_takes_an_attention_mask(embedded_vis, embedded_pipe):
    vis = embedded_vis
    alone, padded = vis.masks
    assert alone.passed_to_model and padded.passed_to_model
    assert alone.samples.size == vis.audio.size and alone.samples.all()
    # the input's own frames are attended (a log-mel extractor, as the embedded Wav2Vec2-BERT's, rounds an odd
    # number of 10 ms frames up to an even one and masks the half-empty last 20 ms frame)
    assert alone.frames.size == vis.num_frames and vis.num_frames - 1 <= alone.attended_frames
    assert alone.frames[: alone.attended_frames].all()
    # padded: real samples first, then zeros; the attended frames are exactly the input's own frames
    assert padded.samples.size == round(vis.padded_seconds * vis.sampling_rate) > vis.audio.size
    assert padded.samples[: vis.audio.size].all() and not padded.samples[vis.audio.size :].any()
    own = padded.attended_frames
    assert own == alone.attended_frames < padded.frames.size
    assert padded.frames[:own].all() and not padded.frames[own:].any()
    # with the mask, padding leaves the posteriors (all but) unchanged
    assert vis.padding_max_diff < 1e-4
    assert vis.padded_greedy_text == vis.greedy_text and not vis.padding_changes_output


def test_posteriors_and_words_match_the_pipeline(embedded_vis, embedded_pipe):
    vis = embedded_vis
    assert vis.probs.shape == (vis.num_frames, len(vis.labels))
    np.testing.assert_allclose(vis.probs.sum(axis=1), 1.0, atol=1e-4)
    assert vis.labels[vis.blank] == "<blank>"
    (logits,) = embedded_pipe.compute_logits([str(EXAMPLE)])
    np.testing.assert_allclose(
        vis.probs,
        np.exp(logits - logits.max(1, keepdims=True))
        / np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True),
        atol=1e-5,
    )
    from w2vlm.processor import decoder_labels

    assert vis.greedy_text == greedy_decode(logits, decoder_labels(embedded_pipe.decoder))
    assert vis.lm_text == embedded_pipe(str(EXAMPLE))["text"]
    for words in (vis.greedy, vis.lm):
        assert words
        starts = [w.start for w in words]
        assert starts == sorted(starts)
        for w in words:
            assert 0 <= w.start < w.end <= vis.duration_s + 1e-6
            assert 0.0 <= w.confidence <= 1.0
    assert vis.lm_settings["alpha"] == pytest.approx(embedded_pipe.decoder.language_model.alpha)


def test_model_without_attention_mask_shows_the_padding_leak(group_norm_model, tmp_path):
    wav = write_audio_file(tmp_path / "a.wav", make_sine(1.2, freq=300), 16000)
    vis = analyze(wav, group_norm_model, device="cpu", pad_to_s=3.0)
    alone, padded = vis.masks
    assert not alone.passed_to_model and not padded.passed_to_model
    assert padded.frames.all() and padded.frames.size > vis.num_frames  # padding frames are attended
    assert padded.samples.size == 48000 and padded.samples.sum() == vis.audio.size
    # normalisation over the padded input and attention to the padding change the posteriors
    assert vis.padding_max_diff > 1e-6
    data = vis.to_dict()
    assert data["masks"][1]["attended_frames"] == padded.frames.size
    assert data["masks"][1]["passed_to_model"] is False


def test_png_is_written_atomically(embedded_vis, tmp_path):
    from matplotlib.image import imread

    out = render_png(embedded_vis, tmp_path / "sub" / "vis.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(out).shape[:2]
    assert width >= 900 and height >= 1000
    assert [p.name for p in out.parent.iterdir()] == ["vis.png"]


def test_png_needs_a_png_name(embedded_vis, tmp_path):
    from w2vlm.errors import W2vlmError

    with pytest.raises(W2vlmError, match=r"\.png"):
        render_png(embedded_vis, tmp_path / "vis.jpg")


def test_terminal_rendering_fits_the_width(embedded_vis):
    console = Console(record=True, width=90, color_system=None)
    render_terminal(embedded_vis, console)
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 90 for line in lines)
    names = [line.split()[0] for line in lines if line.strip()]
    for row in ("wave", "mask", "padded", "ctc", "greedy", "LM"):
        assert row in names
    # the words are placed in time order on their rows, and the full texts are printed
    assert f"LM      {embedded_vis.lm_text}" in text
    assert f"greedy  {embedded_vis.greedy_text}" in text
    low = [w for w in embedded_vis.lm if w.confidence < 0.5]
    if low:
        assert "low confidence" in text and low[0].word in text


def test_cropping_and_bad_arguments(embedded_pipe, tmp_path):
    vis = analyze(EXAMPLE, pipe=embedded_pipe, start_s=0.5, duration_s=1.0)
    assert vis.offset_s == pytest.approx(0.5)
    assert vis.duration_s == pytest.approx(1.0)
    with pytest.raises(Exception, match="past the end"):
        analyze(EXAMPLE, pipe=embedded_pipe, start_s=100.0)
    with pytest.raises(ValueError, match="pad_to"):
        analyze(EXAMPLE, pipe=embedded_pipe, pad_to_s=1.0)
    with pytest.raises(ValueError, match="sampling_rate"):
        analyze(np.zeros(16000, np.float32), pipe=embedded_pipe)
    vis = analyze(make_sine(1.0, 8000), pipe=embedded_pipe, sampling_rate=8000)
    assert vis.source == "<array>" and vis.audio.size == 16000


def test_long_input_is_cut(group_norm_model, tmp_path):
    wav = write_audio_file(tmp_path / "long.wav", make_sine(61.0, freq=200, amplitude=0.1), 16000)
    vis = analyze(wav, group_norm_model, device="cpu")
    assert vis.duration_s == pytest.approx(60.0)
    assert vis.file_duration_s == pytest.approx(61.0)


def test_cli_png_and_terminal(tmp_path):
    out = tmp_path / "children.png"
    result = runner.invoke(app, ["visualize", str(EXAMPLE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "wrote" in result.output
    result = runner.invoke(app, ["visualize", str(EXAMPLE), "--no-lm", "--width", "80"])
    assert result.exit_code == 0, result.output
    assert "greedy" in result.output and "\nLM " not in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.wav"], 1, "no such audio file"),
        ([str(EXAMPLE), "--model", "/no/such/model"], 1, "no such model folder"),
        ([str(EXAMPLE), "-o", "out.jpg"], 2, ".png"),
        ([str(EXAMPLE), "--duration", "0"], 2, "more than 0"),
        ([str(EXAMPLE), "--start", "50"], 1, "past the end"),
        ([str(EXAMPLE), "--pad-to", "0.5"], 1, "pad_to"),
        ([str(EXAMPLE), "--low-confidence", "2"], 2, "[0, 1]"),
        ([str(EXAMPLE), "--beam-width", "0"], 2, "at least 1"),
        ([str(EXAMPLE), "--pad-to", "inf"], 2, "at most 600 seconds"),
        ([str(EXAMPLE), "--pad-to", "1e6"], 2, "at most 600 seconds"),
        ([str(EXAMPLE), "--start", "nan"], 2, "'--start'"),
        ([str(EXAMPLE), "--duration", "inf"], 2, "'--duration'"),
    ],
)
def test_cli_errors(args, code, message, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    result = runner.invoke(app, ["visualize", *args])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    result = runner.invoke(app, ["visualize", str(bad)])
    assert result.exit_code == 1 and "bad.wav" in result.output


def test_model_without_language_model(tiny_ctc_factory, tmp_path):
    folder = tiny_ctc_factory("nolm", with_lm=False, feat_extract_norm="layer")
    wav = write_audio_file(tmp_path / "a.wav", make_sine(1.0, freq=300), 16000)
    vis = analyze(wav, folder, device="cpu")
    assert vis.lm is None and vis.lm_text is None and vis.lm_settings == {}
    assert vis.masks[1].passed_to_model  # a layer-norm model gets the attention mask
    console = Console(record=True, width=80, color_system=None)
    render_terminal(vis, console)
    names = [line.split()[0] for line in console.export_text().splitlines() if line.strip()]
    assert "greedy" in names and "LM" not in names
    out = render_png(vis, tmp_path / "nolm.png")
    assert out.stat().st_size > 10_000


def test_log_mel_model_is_padded_like_a_batch(tiny_ctc_factory, tmp_path):
    # Wav2Vec2-BERT pads its filter-bank frames, not the waveform: the padded view must still be the clip
    # in a batch with a longer one (one logit frame per 20 ms), not padding counted in feature frames
    folder = tiny_ctc_factory("w2v-bert", arch="wav2vec2-bert", with_lm=False)
    wav = write_audio_file(tmp_path / "a.wav", make_sine(1.0, freq=300), 16000)
    vis = analyze(wav, folder, device="cpu", pad_to_s=1.6)
    alone, padded = vis.masks
    assert abs(vis.num_frames - 16000 // 320) <= 1
    assert alone.frames.size == vis.num_frames and alone.frames.all()
    assert abs(padded.frames.size - round(1.6 * 16000) // 320) <= 1
    assert padded.attended_frames == vis.num_frames < padded.frames.size
    assert vis.padding_max_diff < 1e-4
