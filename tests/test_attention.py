"""The padding-only attention mask (w2vlm.engine.attention): the same outputs as transformers' sdpa mask."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from w2vlm.engine import attention  # noqa: E402
from w2vlm.engine.model_runner import ModelRunner  # noqa: E402


def _wav2vec2() -> object:
    config = transformers.Wav2Vec2Config(
        vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    return transformers.Wav2Vec2ForCTC(config).eval()


def _w2v_bert() -> object:
    config = transformers.Wav2Vec2BertConfig(
        vocab_size=12,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_depthwise_kernel_size=3,
        position_embeddings_type="rotary",
    )
    torch.manual_seed(0)
    return transformers.Wav2Vec2BertForCTC(config).eval()


def _batch(model: object) -> tuple[dict[str, object], list[int]]:
    """A padded batch of three lengths: the model's inputs, and each row's real length in its own frames."""
    torch.manual_seed(1)
    if isinstance(model, transformers.Wav2Vec2BertForCTC):
        lengths = [120, 77, 40]
        values = torch.randn(3, 120, 160)
    else:
        lengths = [16000, 9000, 4000]
        values = torch.randn(3, 16000)
    mask = torch.zeros(3, values.shape[1], dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        values[row, n:] = 0.0
    name = "input_features" if values.dim() == 3 else "input_values"
    return {name: values, "attention_mask": mask}, lengths


def _family(name: str) -> object:
    """A tiny random CTC model of another wav2vec2-style family (HuBERT, Data2Vec, UniSpeech-SAT, Conformer)."""
    config = getattr(transformers, f"{name}Config")(
        vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    return getattr(transformers, f"{name}ForCTC")(config).eval()


FAMILIES = ["Hubert", "Data2VecAudio", "UniSpeechSat", "Wav2Vec2Conformer"]


@pytest.mark.parametrize(
    "make",
    [_wav2vec2, _w2v_bert, *(lambda name=name: _family(name) for name in FAMILIES)],
    ids=["wav2vec2", "w2v-bert", *FAMILIES],
)
def test_padding_mask_gives_the_same_logits_as_sdpa(make: object) -> None:
    model = make()
    assert model.config._attn_implementation == "sdpa"
    inputs, _ = _batch(model)
    with torch.inference_mode():
        reference = model(**inputs).logits
        with attention.padding_mask_attention(model) as switched:
            assert switched and model.config._attn_implementation == attention.NAME
            got = model(**inputs).logits
            alone = model(**{k: v[:1] for k, v in inputs.items()}).logits  # no padding: no mask at all
    assert model.config._attn_implementation == "sdpa"  # left as it was
    frames = model._get_feat_extract_output_lengths(inputs["attention_mask"].sum(-1)).tolist()
    if isinstance(model, transformers.Wav2Vec2BertForCTC):
        frames = inputs["attention_mask"].sum(-1).tolist()
    for row, n in enumerate(frames):
        torch.testing.assert_close(got[row, :n], reference[row, :n], rtol=0, atol=1e-6)
    torch.testing.assert_close(alone[0], reference[0], rtol=0, atol=1e-5)


def test_other_patterns_get_transformers_own_mask() -> None:
    from transformers import masking_utils

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    plain = attention.padding_mask(
        2, 4, 4, mask_function=masking_utils.bidirectional_mask_function, attention_mask=mask
    )
    assert plain.shape == (2, 1, 1, 4) and plain.dtype == torch.bool
    assert plain[0, 0, 0].tolist() == [True, True, True, False] and bool(plain[1].all())
    full = masking_utils.sdpa_mask(
        2, 4, 4, mask_function=masking_utils.bidirectional_mask_function, attention_mask=mask
    )
    assert torch.equal(plain.expand(2, 1, 4, 4), full)
    # nothing padded, and transformers allows no mask: none
    unpadded = torch.ones(2, 4, dtype=torch.long)
    assert (
        attention.padding_mask(
            2,
            4,
            4,
            mask_function=masking_utils.bidirectional_mask_function,
            attention_mask=unpadded,
            allow_is_bidirectional_skip=True,
        )
        is None
    )
    # a causal pattern is not a padding mask: transformers' own
    causal = attention.padding_mask(2, 4, 4, mask_function=masking_utils.causal_mask_function, attention_mask=mask)
    expected = masking_utils.sdpa_mask(2, 4, 4, mask_function=masking_utils.causal_mask_function, attention_mask=mask)
    assert torch.equal(causal, expected)


def test_only_sdpa_models_are_switched_and_the_cpu_runner_leaves_the_model_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eager = transformers.Wav2Vec2ForCTC(
        transformers.Wav2Vec2Config(
            vocab_size=12, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        ),
    )
    eager.set_attn_implementation("eager")
    with attention.padding_mask_attention(eager) as switched:
        assert not switched and eager.config._attn_implementation == "eager"
    # the engine's CPU runner: the padding-only mask during its forward passes, the model as it was after
    model = _wav2vec2()
    runner = ModelRunner(model, transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True))
    seen: list[str] = []
    forward = model.forward

    def watched(*args: object, **kwargs: object) -> object:
        seen.append(model.config._attn_implementation)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", watched)
    prepared = [runner.prepare(np.zeros(n, np.float32) + 0.01) for n in (16000, 9000)]
    runner.forward(prepared).result()
    assert seen == [attention.NAME] and model.config._attn_implementation == "sdpa"
