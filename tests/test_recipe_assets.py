"""The embedded default model (src/w2vlm/assets/model): layout, sizes, consistency, and that it transcribes."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "src" / "w2vlm" / "assets" / "model"
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.skipif(not (MODEL / "config.json").is_file(), reason="embedded model not present")


def test_hub_layout_and_sizes() -> None:
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "vocab.json",
        "special_tokens_map.json",
        "alphabet.json",
        "language_model/attrs.json",
        "language_model/unigrams.txt",
    ):
        assert (MODEL / name).is_file(), name
    arpas = list((MODEL / "language_model").glob("*.arpa"))
    assert len(arpas) == 1
    assert (MODEL / "model.safetensors").stat().st_size <= 25_000_000
    lm_bytes = sum(p.stat().st_size for p in (MODEL / "language_model").iterdir())
    assert lm_bytes <= 20_000_000
    pp = json.loads((MODEL / "preprocessor_config.json").read_text())
    assert pp["processor_class"] == "Wav2Vec2ProcessorWithLM"
    assert pp["sampling_rate"] == 16000
    attrs = json.loads((MODEL / "language_model" / "attrs.json").read_text())
    assert {"alpha", "beta", "unk_score_offset", "score_boundary"} <= set(attrs)


def test_vocab_alphabet_config_agree() -> None:
    vocab = json.loads((MODEL / "vocab.json").read_text())
    config = json.loads((MODEL / "config.json").read_text())
    labels = json.loads((MODEL / "alphabet.json").read_text())["labels"]
    assert config["vocab_size"] == len(vocab) == len(labels)
    assert config["pad_token_id"] == vocab["<pad>"]
    assert labels[vocab["<pad>"]] == "" and labels[vocab["|"]] == " "
    unigrams = (MODEL / "language_model" / "unigrams.txt").read_text().split()
    allowed = set("abcdefghijklmnopqrstuvwxyz'")
    assert unigrams and all(set(w) <= allowed for w in unigrams[:5000])


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def test_examples_greedy_transcription_is_close() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    from w2vlm.train import Tokenizer, error_rates

    model = AutoModelForCTC.from_pretrained(str(MODEL), dtype=torch.float32).eval()
    extractor = AutoFeatureExtractor.from_pretrained(str(MODEL))
    tok = Tokenizer(json.loads((MODEL / "vocab.json").read_text()))
    refs, hyps = [], []
    for wav in sorted(EXAMPLES.glob("*.wav")):
        inputs = extractor(_read(wav), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0]
        hyps.append(tok.greedy_decode(logits.argmax(-1).tolist()))
        refs.append(wav.with_suffix(".txt").read_text().strip())
    assert len(refs) >= 3
    _, cer = error_rates(refs, hyps)
    # a real (if small) model: far from the ~100 % CER of an untrained one
    assert cer < 0.6, list(zip(refs, hyps, strict=True))


def test_example_logits_are_the_models() -> None:
    # the README's decoder example decodes examples/children.logits.npy: it must be what the model gives
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import numpy as np

    from w2vlm import Wav2Vec2ProcessorWithLM, load_model

    processor = Wav2Vec2ProcessorWithLM.from_pretrained(str(MODEL))
    model = load_model(str(MODEL))
    inputs = processor(_read(EXAMPLES / "children.wav"), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0].numpy()
    np.testing.assert_allclose(np.load(EXAMPLES / "children.logits.npy"), logits, atol=1e-3)


def test_padded_batch_decodes_like_single_clips() -> None:
    # transformers users decode a padded batch's logits as they are; the padded frames must say blank
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from w2vlm import Wav2Vec2ProcessorWithLM, load_model

    processor = Wav2Vec2ProcessorWithLM.from_pretrained(str(MODEL))
    model = load_model(str(MODEL))
    audio = [_read(wav) for wav in sorted(EXAMPLES.glob("*.wav"))]
    assert max(map(len, audio)) > 1.5 * min(map(len, audio))  # rows with a lot of padding
    inputs = processor(audio, sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        batch = model(**inputs).logits.numpy()
        singles = [model(**processor(a, sampling_rate=16000, return_tensors="pt")).logits[0].numpy() for a in audio]
    blank = model.config.pad_token_id
    for row, single in zip(batch, singles, strict=True):
        assert (row[len(single) :].argmax(-1) == blank).all()
    assert processor.batch_decode(batch).text == processor.batch_decode(singles).text
