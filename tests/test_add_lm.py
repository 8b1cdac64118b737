"""``w2vlm add-lm``: a CTC model without LM → the same model with an n-gram LM, in one step."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner

from conftest import make_sine, write_audio_file
from w2vlm.add_lm import add_lm
from w2vlm.cli import app
from w2vlm.errors import LanguageModelError, ModelError
from w2vlm.model import model_language, write_model_card

TEXT = ["the cat sat on the mat", "a dog ran in the park", "the cat ran", "Hello, World! 42 times"]


@pytest.fixture
def bare_model(tiny_ctc_factory) -> Path:
    """A tiny CTC model without LM, with a model card that has text of its own."""
    folder = tiny_ctc_factory("bare", with_lm=False)
    write_model_card(folder, language="en", title="bare", body="Our own notes about this model.")
    return folder


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    return path


def test_the_model_gets_an_lm_that_every_loader_reads(bare_model: Path, text_file: Path, tmp_path: Path) -> None:
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    out = tmp_path / "with-lm"
    result = add_lm(bare_model, [text_file], out, order=2)
    assert result.output == out and result.language == "en"
    assert (out / "model.safetensors").read_bytes() == (bare_model / "model.safetensors").read_bytes()
    lm_dir = out / "language_model"
    assert sorted(p.name for p in lm_dir.iterdir()) == ["attrs.json", "lm.arpa", "unigrams.txt"]
    unigrams = (lm_dir / "unigrams.txt").read_text().split()
    assert "cat" in unigrams and "hello" in unigrams and "42" not in unigrams  # the model's characters only
    labels = json.loads((out / "alphabet.json").read_text())["labels"]
    vocab = json.loads((bare_model / "vocab.json").read_text())
    assert len(labels) == len(vocab) and "" in labels and " " in labels
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["processor_class"] == "Wav2Vec2ProcessorWithLM"
    processor = Wav2Vec2ProcessorWithLM.from_pretrained(out)
    lm = processor.decoder.language_model
    assert lm is not None and (lm.alpha, lm.beta) == (result.alpha, result.beta)
    card = (out / "README.md").read_text()
    assert model_language(out) == "en" and "Our own notes about this model." in card  # the card is kept
    assert not list(tmp_path.glob(".*add-lm-tmp"))


def test_refusals_leave_nothing_behind(bare_model: Path, text_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ModelError, match="not empty"):
        add_lm(bare_model, [text_file], out)
    with pytest.raises(ModelError, match="transcribes 'en'"):
        add_lm(bare_model, [text_file], tmp_path / "de", language="de")
    with pytest.raises(ModelError, match="new folder"):
        add_lm(bare_model, [text_file], bare_model)
    with pytest.raises(LanguageModelError):
        add_lm(bare_model, [tmp_path / "missing.txt"], tmp_path / "new")
    assert not (tmp_path / "new").exists() and not (tmp_path / "de").exists()
    assert not list(tmp_path.glob(".*add-lm-tmp"))
    assert (out / "keep.txt").read_text() == "x"
    add_lm(bare_model, [text_file], out, overwrite=True, order=2)
    assert not (out / "keep.txt").exists() and (out / "language_model" / "lm.arpa").is_file()


def test_cli_tunes_alpha_and_beta_on_a_dev_manifest(bare_model: Path, text_file: Path, tmp_path: Path) -> None:
    for i in range(3):
        write_audio_file(tmp_path / f"{i}.wav", make_sine(1.0, freq=300 + 100 * i), 16000)
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"{i}.wav", "text": t}) + "\n" for i, t in enumerate(TEXT[:3])))
    out = tmp_path / "tuned"
    args = ["add-lm", str(bare_model), str(text_file), "-o", str(out), "-n", "2", "--dev", str(manifest)]
    result = CliRunner().invoke(app, [*args, "--alpha", "0.3,0.9", "--beta", "0.5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "tuned on" in result.stdout and f"wrote {out} (language en)" in result.stdout
    attrs = json.loads((out / "language_model" / "attrs.json").read_text())
    # the grid, or the default weights (the search keeps the current setting when nothing beats it)
    assert attrs["alpha"] in (0.3, 0.9, 0.5) and attrs["beta"] in (0.5, 1.5)
    assert f"alpha {attrs['alpha']:g}, beta {attrs['beta']:g}: WER" in result.stdout
    bad_args = ["add-lm", str(bare_model), str(text_file), "-o", str(tmp_path / "x"), "--alpha", "1"]
    bad = CliRunner().invoke(app, bad_args)
    assert bad.exit_code == 2 and "--dev" in bad.stderr


def test_cli_counts_within_a_memory_budget_like_build_lm(bare_model: Path, tmp_path: Path) -> None:
    """--memory/--threads/--temp-dir reach the counting: a tiny budget spills sorted runs into the given folder
    (left empty after) and writes the same LM as the default budget."""
    text = tmp_path / "big.txt"
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6))) for _ in range(400)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(3000)]
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spill = tmp_path / "spill"
    spill.mkdir()
    base = ["add-lm", str(bare_model), str(text), "-n", "3", "-q"]
    small = [*base, "-o", str(tmp_path / "small"), "--memory", "64K", "--threads", "2", "--temp-dir", str(spill)]
    for args in (small, [*base, "-o", str(tmp_path / "default")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    assert list(spill.iterdir()) == []
    arpa = [(tmp_path / name / "language_model" / "lm.arpa").read_bytes() for name in ("small", "default")]
    assert arpa[0] == arpa[1]
    spilled = add_lm(bare_model, [text], tmp_path / "api", order=3, memory="64K", threads=1)
    assert spilled.lm_stats.spill_runs > 0
    assert (tmp_path / "api" / "language_model" / "lm.arpa").read_bytes() == arpa[1]
