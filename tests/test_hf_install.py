"""``w2vlm.install()``: transformers' AutoProcessor and pipeline on a model with an LM use w2vlm (tiny local
models, no hub downloads)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("w2vlm.decoder")

import w2vlm  # noqa: E402
from conftest import make_fake_hf_cache  # noqa: E402
from w2vlm import hf_compat  # noqa: E402
from w2vlm.decoder import BeamSearchDecoderCTC  # noqa: E402
from w2vlm.processor import Wav2Vec2ProcessorWithLM  # noqa: E402


@pytest.fixture
def installed():
    w2vlm.install()
    yield
    w2vlm.uninstall()


def _noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


def test_install_is_idempotent_and_reversible() -> None:
    original_pipeline = transformers.pipeline
    original_processor = transformers.Wav2Vec2ProcessorWithLM
    w2vlm.install()
    try:
        wrapped = transformers.pipeline
        assert transformers.Wav2Vec2ProcessorWithLM is Wav2Vec2ProcessorWithLM
        assert transformers.pipelines.pipeline is not original_pipeline
        w2vlm.install()
        assert transformers.pipeline is wrapped and hf_compat.installed()
    finally:
        w2vlm.uninstall()
    assert not hf_compat.installed()
    assert transformers.pipeline is original_pipeline
    assert transformers.Wav2Vec2ProcessorWithLM is original_processor


def test_auto_processor_gives_w2vlm_processor(installed, tiny_ctc_dir: Path) -> None:
    proc = transformers.AutoProcessor.from_pretrained(str(tiny_ctc_dir))
    assert isinstance(proc, Wav2Vec2ProcessorWithLM)
    ours = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir)
    logits = np.random.default_rng(0).standard_normal((2, 30, len(ours.decoder.alphabet.labels)))
    out = proc.batch_decode(logits)
    assert isinstance(out, dict) and out.text == ours.batch_decode(logits).text
    import transformers.models.wav2vec2_with_lm as with_lm

    assert with_lm.Wav2Vec2ProcessorWithLM is Wav2Vec2ProcessorWithLM


def test_auto_processor_without_lm_is_transformers(installed, tiny_ctc_factory) -> None:
    folder = tiny_ctc_factory("plain", with_lm=False)
    proc = transformers.AutoProcessor.from_pretrained(str(folder))
    assert not isinstance(proc, Wav2Vec2ProcessorWithLM)


def test_pipeline_uses_w2vlm_decoder(installed, tiny_ctc_dir: Path) -> None:
    asr = transformers.pipeline("automatic-speech-recognition", model=str(tiny_ctc_dir))
    assert asr.type == "ctc_with_lm"
    assert isinstance(asr.decoder, BeamSearchDecoderCTC)
    audio = _noise(1.0, seed=3)
    out = asr(audio)
    # the same text as w2vlm's processor decoding the model's logits
    proc = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir)
    inputs = proc(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        logits = asr.model(inputs.input_values).logits[0].numpy()
    assert out == {"text": proc.decode(logits).text}
    with pytest.raises(TypeError):
        asr(audio, decoder_kwargs={"num_beams": 2})
    words = asr(audio, return_timestamps="word")
    assert [c["text"] for c in words["chunks"]] == out["text"].split()


def test_pipeline_hub_id_offline(installed, tiny_ctc_dir: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hub"
    make_fake_hf_cache(cache, "someone/tiny-with-lm", tiny_ctc_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    decoder = hf_compat.lm_decoder_for("someone/tiny-with-lm", cache_dir=str(cache))
    assert isinstance(decoder, BeamSearchDecoderCTC)
    assert hf_compat.lm_decoder_for("someone/not-cached", cache_dir=str(cache)) is None


def test_pipeline_without_lm_is_plain_ctc(installed, tiny_ctc_factory) -> None:
    folder = tiny_ctc_factory("plain", with_lm=False)
    asr = transformers.pipeline("automatic-speech-recognition", model=str(folder))
    assert asr.type == "ctc"


def test_pipeline_does_not_say_the_lm_falls_back_to_greedy(installed, tiny_ctc_factory, monkeypatch) -> None:
    """transformers, without pyctcdecode and kenlm, warns that a model's LM "falls back to greedy CTC" even when
    w2vlm's decoder is given and used: that warning is left out while the pipeline is made (and only that one)."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logging.getLogger("transformers.pipelines").addHandler(handler)
    try:
        monkeypatch.setattr(hf_compat, "_not_the_greedy_fallback_warning", lambda record: True)  # filter off
        transformers.pipeline("automatic-speech-recognition", model=str(tiny_ctc_factory("a")))
        unfiltered = list(seen)
        monkeypatch.undo()
        seen.clear()
        asr = transformers.pipeline("automatic-speech-recognition", model=str(tiny_ctc_factory("b")))
    finally:
        logging.getLogger("transformers.pipelines").removeHandler(handler)
    assert isinstance(asr.decoder, BeamSearchDecoderCTC)
    if importlib.util.find_spec("pyctcdecode") is None:  # transformers warns only without it
        assert any("falls back to greedy CTC" in m for m in unfiltered)
    assert not any("falls back to greedy CTC" in m for m in seen)
