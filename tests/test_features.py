"""w2vlm.features: the torch twins of the feature extractors (training batches, the pipeline's fast path)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from w2vlm.features import FbankInputs, WaveformInputs, batch_log_mel, fast_log_mel  # noqa: E402
from w2vlm.train import DEFAULT_VOCAB, build_config  # noqa: E402

SR = 16000


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_fbank_inputs_match_the_seamless_m4t_feature_extractor() -> None:
    """The torch filter banks of training are what the model's feature extractor gives at inference."""
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor()
    rng = np.random.default_rng(5)
    clips = [_clip(1.3, 1), _clip(0.5, 2)[:7777], (0.3 * rng.standard_normal(12345)).astype(np.float32)]
    ref = extractor(clips, sampling_rate=SR, padding=True, return_tensors="pt")
    lens = torch.tensor([len(c) for c in clips])
    x = torch.zeros(len(clips), int(lens.max()) + 900)  # extra padding past the longest, as in training
    for i, c in enumerate(clips):
        x[i, : len(c)] = torch.from_numpy(c)
    inputs = FbankInputs(extractor)
    feats, mask = inputs(x, lens)
    n = ref["input_features"].shape[1]
    assert feats.shape[1] > n  # the extra padding makes extra frames, all masked
    assert not mask[:, n:].any() and not feats[:, n:].any()
    assert torch.equal(mask[:, :n], ref["attention_mask"])
    valid = ref["attention_mask"].bool()
    assert torch.allclose(feats[:, :n][valid], ref["input_features"][valid], atol=2e-3)
    assert [inputs.frames(len(c)) for c in clips] == ref["attention_mask"].sum(-1).tolist()
    assert inputs.frames(399) == 0


def test_waveform_inputs_match_the_wav2vec2_feature_extractor() -> None:
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    rng = np.random.default_rng(6)
    clips = [(0.2 * rng.standard_normal(n) + 0.05).astype(np.float32) for n in (8000, 5000)]
    ref = extractor(clips, sampling_rate=SR, padding=True, return_tensors="pt")
    x = torch.zeros(2, 8000)
    x[0], x[1, :5000] = torch.from_numpy(clips[0]), torch.from_numpy(clips[1])
    model = Wav2Vec2ForCTC(build_config(dict(zip(DEFAULT_VOCAB, range(len(DEFAULT_VOCAB)))), "tiny"))
    values, mask = WaveformInputs(model)(x, torch.tensor([8000, 5000]))
    assert torch.equal(mask, ref["attention_mask"])
    assert torch.allclose(values, ref["input_values"], atol=1e-4)


def test_batch_log_mel_is_what_the_extractor_gives() -> None:
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2FeatureExtractor

    extractor = SeamlessM4TFeatureExtractor()
    fbank = fast_log_mel(extractor)
    assert fbank is not None
    assert fast_log_mel(Wav2Vec2FeatureExtractor()) is None  # waveform models keep their own extractor
    clips = [_clip(2.0, 3), _clip(0.7, 4), _clip(1.1, 5)]
    ref = extractor(clips, sampling_rate=SR, padding=True, return_tensors="pt")
    got = batch_log_mel(fbank, clips, with_mask=True)
    assert got["input_features"].shape == ref["input_features"].shape
    assert torch.equal(got["attention_mask"], ref["attention_mask"])
    assert torch.allclose(got["input_features"], ref["input_features"], atol=2e-3)
    odd = [_clip(2.43, 8)]
    got = batch_log_mel(fbank, odd, with_mask=True)
    ref = extractor(odd, sampling_rate=SR, padding=True, return_tensors="pt")
    assert got["input_features"].shape == ref["input_features"].shape
    assert torch.equal(got["attention_mask"], ref["attention_mask"]) and not ref["attention_mask"][0, -1]
    assert torch.allclose(got["input_features"], ref["input_features"], atol=2e-3)
    single = batch_log_mel(fbank, clips[:1], with_mask=False)
    assert set(single) == {"input_features"}
    one = extractor(clips[:1], sampling_rate=SR, return_tensors="pt")["input_features"]
    assert torch.allclose(single["input_features"], one, atol=2e-3)


def test_pipeline_logits_of_a_log_mel_model_match_the_extractor_path(tiny_ctc_factory) -> None:
    from w2vlm.pipeline import CTCLogitsRunner
    from w2vlm.processor_parts import load_feature_extractor

    folder = tiny_ctc_factory("w2v-bert", arch="wav2vec2-bert", with_lm=False)
    from transformers import AutoModelForCTC

    model = AutoModelForCTC.from_pretrained(str(folder)).eval()
    fast = CTCLogitsRunner(model, load_feature_extractor(folder))
    slow = CTCLogitsRunner(model, load_feature_extractor(folder))
    assert fast.engine.runner.log_mel is not None
    slow.engine.runner.log_mel = None  # the transformers extractor, as for any other model
    clips = [_clip(1.5, 6), _clip(0.9, 7)]
    for batch_size in (1, 2):
        for a, b in zip(fast.compute_logits(clips, batch_size=batch_size),
                        slow.compute_logits(clips, batch_size=batch_size), strict=True):  # fmt: skip
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-3)


def test_log_mel_extractor_without_mel_filters_is_named() -> None:
    from w2vlm.errors import ModelError
    from w2vlm.features import model_inputs_for

    class Odd:  # a log-mel input extractor whose filter bank w2vlm cannot reproduce
        model_input_names = ("input_features",)

    with pytest.raises(ModelError, match="feature extractor Odd: log-mel input without mel filters"):
        model_inputs_for(None, Odd())
