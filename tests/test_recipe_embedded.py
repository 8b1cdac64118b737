"""Tests of the embedded-model recipe's corpus normalization and speech synthesis helpers."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "embedded"
sys.path.insert(0, str(RECIPE))

import corpus  # noqa: E402

scipy = pytest.importorskip("scipy")
import synth  # noqa: E402


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (115, "one hundred and fifteen"),
        (2000, "two thousand"),
        (3500, "three thousand five hundred"),
        (1_000_007, "one million and seven"),
    ],
)
def test_spell_number(n: int, words: str) -> None:
    assert corpus.spell_number(n) == words


def test_spell_ordinal() -> None:
    assert corpus.spell_ordinal(1) == "first"
    assert corpus.spell_ordinal(3) == "third"
    assert corpus.spell_ordinal(12) == "twelfth"
    assert corpus.spell_ordinal(20) == "twentieth"
    assert corpus.spell_ordinal(24) == "twenty fourth"


def test_normalize_maps_to_model_alphabet() -> None:
    text = "\u201cDon\u2019t,\u201d said Mr. Knightley\u2014\u201cit\u2019s £20 on the 3rd; in 1815!\u201d"
    text += " Caf\u00e9 'quoted'"
    out = corpus.normalize(text)
    assert out == ("don't said mister knightley it's twenty pounds on the third in eighteen fifteen cafe quoted")
    assert set(out) <= set("abcdefghijklmnopqrstuvwxyz' ")
    assert corpus.normalize("Mrs Smith & Dr Jones") == "missus smith and doctor jones"
    assert corpus.normalize("  ...  ") == ""


def test_split_sentences_keeps_titles() -> None:
    para = 'Mr. Darcy bowed. "Indeed!" said she. Was it so? Yes.'
    assert corpus.split_sentences(para) == ["Mr. Darcy bowed.", '"Indeed!" said she.', "Was it so?", "Yes."]


def test_xdr_reader_reads_character_vectors() -> None:
    def xdr_strings(values: list[str]) -> bytes:
        out = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
        out += struct.pack(">ii", 16, len(values))
        for v in values:
            raw = v.encode()
            out += struct.pack(">ii", 0x00040009, len(raw)) + raw
        return out

    reader = corpus._XdrReader(xdr_strings(["It is a truth", "", "universally acknowledged"]))
    reader.header()
    assert reader.strings() == ["It is a truth", "", "universally acknowledged"]
    bad = corpus._XdrReader(b"A\n" + b"\0" * 16)
    with pytest.raises(ValueError):
        bad.header()


def test_plan_is_deterministic_and_uses_given_variants() -> None:
    sentences = ["one two three", "four five six seven"]
    a = synth.plan(sentences, 20, ["m1", "f2"], seed=5)
    b = synth.plan(sentences, 20, ["m1", "f2"], seed=5)
    assert a == b
    assert {j.voice.split("+")[1] for j in a} <= {"m1", "f2"}
    assert {j.voice.split("+")[0] for j in a} <= set(synth.ACCENTS)
    assert [j.text for j in a[:3]] == ["one two three", "four five six seven", "one two three"]
    assert all(100 <= j.rate <= 260 for j in a)


def test_heldout_variants_never_used_for_training() -> None:
    assert not set(synth.HELDOUT_VARIANTS) & set(synth.EXCLUDED_VARIANTS)
    train_variants = [v for v in synth.DEFAULT_VARIANTS if v not in synth.HELDOUT_VARIANTS]
    jobs = synth.plan(["a b c"], 200, train_variants, seed=0)
    used = {j.voice.split("+")[1] if "+" in j.voice else "" for j in jobs}
    assert not used & set(synth.HELDOUT_VARIANTS)


def test_augment_adds_padding_noise_and_keeps_level_in_range() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    y, _ = synth.augment(x, np.random.default_rng(3))
    assert y.dtype == np.float32
    assert len(y) > len(x)
    assert 0.04 < np.abs(y).max() <= 0.951
    _, info_clean = synth.augment(x, np.random.default_rng(3), clean=True)
    assert "snr_db" not in info_clean and "reverb" not in info_clean
    h = synth.room_impulse_response(rng)
    assert h[0] > 0 and np.isclose(np.sum(h**2), 1.0, atol=1e-4)
    noise = synth.coloured_noise(rng, 12345)
    assert len(noise) == 12345 and np.isclose(np.sqrt(np.mean(noise**2)), 1.0, atol=1e-3)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_synthesize_with_espeak(tmp_path: Path) -> None:
    espeak = synth.Espeak.locate(None)
    records = synth.synthesize(["hello world", "good morning"], tmp_path, 2, "test", 0, 1, espeak)
    assert len(records) == 2
    assert (tmp_path / "manifest.jsonl").is_file()
    for rec in records:
        assert (tmp_path / rec["audio"]).is_file()
        assert rec["duration"] > 0.3
        variant = rec["voice"].split("+")[1]
        assert variant in synth.HELDOUT_VARIANTS


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_synthesize_survives_espeak_crashes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # espeak-ng 1.51 segfaults on some text with a wide SSML prosody range; a wrapper reproduces both
    # kinds of failure: "wobble" crashes only inside a prosody range, "doomed" crashes always
    wrapper = tmp_path / "espeak-ng"
    wrapper.write_text(
        "#!/bin/sh\n"
        'last=""; for a in "$@"; do last="$a"; done\n'
        'case "$last" in *prosody*wobble*|*doomed*) kill -SEGV $$ ;; esac\n'
        f'exec {shutil.which("espeak-ng")} "$@"\n'
    )
    wrapper.chmod(0o755)
    espeak = synth.Espeak(str(wrapper), dict(synth.os.environ))
    out = tmp_path / "out"
    sentences = ["hello world", "a wobble here", "doomed line", "good morning"]
    records = synth.synthesize(sentences, out, 4, "test", 0, 1, espeak)
    assert sorted(r["text"] for r in records) == ["a wobble here", "good morning", "hello world"]
    assert all((out / r["audio"]).is_file() and r["duration"] > 0.3 for r in records)
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 3
    said = capsys.readouterr().out
    assert "skipped utterance" in said and "doomed line" in said and "signal 11" in said
    # nothing said at all is an error naming the binary, not an empty manifest
    with pytest.raises(SystemExit, match="failed on all 2 utterances"):
        synth.synthesize(["doomed one", "doomed two"], tmp_path / "none", 2, "test", 0, 1, espeak)
    assert not (tmp_path / "none" / "manifest.jsonl").exists()


def test_new_layer_positions_spreads_new_layers() -> None:
    import grow

    assert grow.new_layer_positions(4, 8) == [0, None, 1, None, 2, None, 3, None]
    assert grow.new_layer_positions(2, 5) == [0, None, None, 1, None]
    assert grow.new_layer_positions(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="cannot grow 4 layers to 3"):
        grow.new_layer_positions(4, 3)


def test_grow_keeps_the_function_and_trains_the_new_layers() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import grow
    from transformers import Wav2Vec2ForCTC

    from w2vlm.train import DEFAULT_VOCAB, build_config

    torch.manual_seed(0)
    vocab = {tok: i for i, tok in enumerate(DEFAULT_VOCAB)}
    small = Wav2Vec2ForCTC(build_config(vocab, "tiny")).eval()
    big = grow.grow(small, 5, {"attention_dropout": 0.0}).eval()
    assert big.config.num_hidden_layers == 5 and big.config.attention_dropout == 0.0
    assert len(big.wav2vec2.encoder.layers) == 5
    x = torch.randn(2, 8000)
    with torch.no_grad():
        assert torch.allclose(small(x).logits, big(x).logits, atol=1e-5)
    # the copied layers are the old ones; a new layer is not (its inner weights are random, its outputs zero)
    assert torch.equal(
        big.wav2vec2.encoder.layers[3].attention.q_proj.weight, small.wav2vec2.encoder.layers[1].attention.q_proj.weight
    )
    new = big.wav2vec2.encoder.layers[1]
    assert not torch.equal(new.attention.q_proj.weight, small.wav2vec2.encoder.layers[0].attention.q_proj.weight)
    assert not new.feed_forward.output_dense.weight.any()
    # one training step moves the new layer's zeroed output layer: the new layers are trainable
    big.train()
    labels = torch.randint(5, len(vocab), (2, 6))
    big(x, labels=labels).loss.backward()
    assert new.feed_forward.output_dense.weight.grad.abs().sum() > 0
