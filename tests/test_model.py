from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import make_fake_hf_cache  # noqa: E402
from w2vlm.errors import ModelError  # noqa: E402
from w2vlm.model import (  # noqa: E402
    load_model,
    model_memory_bytes,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
)


def _input(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((1, int(16000 * seconds))).astype(np.float32))


def test_logits_equal_transformers(tiny_ctc_dir: Path) -> None:
    ours = load_model(tiny_ctc_dir, device="cpu")
    ref = transformers.Wav2Vec2ForCTC.from_pretrained(str(tiny_ctc_dir)).eval()
    assert type(ours) is transformers.Wav2Vec2ForCTC
    assert not ours.training
    x = _input()
    with torch.no_grad():
        np.testing.assert_array_equal(ours(x).logits.numpy(), ref(x).logits.numpy())


@pytest.mark.parametrize("arch", ["hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer"])
def test_other_architectures(tiny_ctc_factory, arch: str) -> None:
    folder = tiny_ctc_factory(arch, arch=arch, with_lm=False)
    model = load_model(folder, device="cpu")
    ref = transformers.AutoModelForCTC.from_pretrained(str(folder)).eval()
    assert type(model) is type(ref)
    x = _input(0.5)
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).logits.numpy(), ref(x).logits.numpy())


def test_pytorch_bin_weights(tiny_ctc_factory) -> None:
    folder = tiny_ctc_factory("bin", with_lm=False, safetensors=False)
    assert (folder / "pytorch_model.bin").is_file()
    assert load_model(folder, device="cpu").config.vocab_size == 32


def test_dtypes(tiny_ctc_dir: Path) -> None:
    for name, expected in [("fp16", torch.float16), ("bfloat16", torch.bfloat16), (None, torch.float32)]:
        model = load_model(tiny_ctc_dir, device="cpu", dtype=name)
        assert model.lm_head.weight.dtype == expected
    assert resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ModelError, match="dtype: 'int4' is not supported"):
        resolve_dtype("int4")


def test_bf16_logits_close(tiny_ctc_dir: Path) -> None:
    fp32 = load_model(tiny_ctc_dir, device="cpu")
    bf16 = load_model(tiny_ctc_dir, device="cpu", dtype="bf16")
    x = _input()
    with torch.no_grad():
        a = fp32(x).logits
        b = bf16(x.to(torch.bfloat16)).logits.float()
        # torch's own bf16 kernels; oneDNN's differ between CPUs: on AMX (Sapphire Rapids) they move this random
        # model's logits (std ~5) by ~1.3 on average (at most ~6), torch's by at most ~0.3
        with torch.backends.mkldnn.flags(enabled=False):
            c = bf16(x.to(torch.bfloat16)).logits.float()
    assert b.shape == c.shape == a.shape and torch.isfinite(b).all() and torch.isfinite(c).all()
    # a random tiny model has near-tied logits on most frames (median top-2 gap ~0.4): compare the frames where
    # fp32 makes a clear decision
    top2 = a.topk(2, dim=-1).values
    gap = top2[..., 0] - top2[..., 1]
    clear = gap > 0.5
    assert int(clear.sum()) >= 10
    assert (a.argmax(-1) == c.argmax(-1))[clear].float().mean() >= 0.9
    very_clear = gap > 2.0
    assert int(very_clear.sum()) >= 5
    assert (a.argmax(-1) == b.argmax(-1))[very_clear].float().mean() >= 0.8


def test_int8_cpu(tiny_ctc_dir: Path) -> None:
    fp32 = load_model(tiny_ctc_dir, device="cpu")
    int8 = load_model(tiny_ctc_dir, device="cpu", quantize="int8")
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(int8.lm_head, dynamic_linear)
    assert sum(isinstance(m, dynamic_linear) for m in int8.modules()) == sum(
        type(m) is torch.nn.Linear for m in fp32.modules()
    )
    assert not any(type(m) is torch.nn.Linear for m in int8.modules())
    linear_fp32 = sum(m.weight.numel() * 4 for m in fp32.modules() if isinstance(m, torch.nn.Linear))
    saved = model_memory_bytes(fp32) - model_memory_bytes(int8)
    # int8 weights take a quarter of the fp32 bytes of every linear layer
    assert saved == pytest.approx(linear_fp32 * 3 / 4, rel=0.02)
    x = _input(1.0, seed=3)
    with torch.no_grad():
        a = fp32(x).logits
        b = int8(x).logits
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.8
    assert torch.allclose(a, b, atol=0.2 * float(a.abs().max()))


def test_int8_rejects_half(tiny_ctc_dir: Path) -> None:
    with pytest.raises(ModelError, match="quantize='int8' works on float32"):
        load_model(tiny_ctc_dir, device="cpu", dtype="fp16", quantize="int8")
    with pytest.raises(ModelError, match="quantize: 'int4' is not supported"):
        load_model(tiny_ctc_dir, device="cpu", quantize="int4")


def test_devices() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(-1).type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelError, match="device: 'toaster'"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_missing_and_invalid_folders(tmp_path: Path, tiny_ctc_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"nothere: no such model folder"):
        load_model(tmp_path / "nothere", device="cpu")
    with pytest.raises(ModelError, match="no such model folder"):
        load_model("./relative/missing", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"config\.json is missing"):
        load_model(empty, device="cpu")
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"config\.json: not valid JSON"):
        load_model(bad_json, device="cpu")
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(tiny_ctc_dir / "config.json", no_weights / "config.json")
    with pytest.raises(ModelError, match=r"no model weights found; expected one of model\.safetensors"):
        load_model(no_weights, device="cpu")
    a_file = tmp_path / "file.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(ModelError, match="got a file"):
        load_model(a_file, device="cpu")


def test_corrupt_weights(tmp_path: Path, tiny_ctc_dir: Path) -> None:
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_ctc_dir, folder)
    (folder / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(ModelError, match="corrupt"):
        load_model(folder, device="cpu")


def test_non_ctc_model(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    cfg = transformers.BertConfig(
        vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    transformers.BertModel(cfg).save_pretrained(str(folder))
    with pytest.raises(ModelError, match="model_type 'bert' has no CTC head"):
        load_model(folder, device="cpu")


def test_hub_id_from_offline_cache(tmp_path: Path, tiny_ctc_dir: Path, monkeypatch) -> None:
    cache = tmp_path / "hf_cache"
    snap = make_fake_hf_cache(cache, "someorg/tiny-w2v", tiny_ctc_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "someorg/tiny-w2v" must not resolve as a relative folder
    folder = resolve_model_path("someorg/tiny-w2v", cache_dir=cache)
    assert folder.resolve() == snap.resolve()
    model = load_model("someorg/tiny-w2v", device="cpu", cache_dir=cache)
    ref = load_model(tiny_ctc_dir, device="cpu")
    x = _input(0.5)
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).logits.numpy(), ref(x).logits.numpy())


def test_hub_id_explicit_local_files_only(tmp_path: Path, tiny_ctc_dir: Path, monkeypatch) -> None:
    cache = tmp_path / "hf_cache"
    make_fake_hf_cache(cache, "org/model", tiny_ctc_dir)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("org/model", cache_dir=cache, local_files_only=True).is_dir()


def test_hub_id_not_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=r"someorg/absent: not a local folder, and not in the Hugging Face cache"):
        load_model("someorg/absent", device="cpu", cache_dir=tmp_path / "empty_cache")


def test_default_model_missing_or_present() -> None:
    from w2vlm import model as model_mod

    if (model_mod.DEFAULT_MODEL_DIR / "config.json").is_file():
        assert resolve_model_path(None) == model_mod.DEFAULT_MODEL_DIR
    else:
        with pytest.raises(ModelError, match="embedded default model is not installed"):
            resolve_model_path(None)


def test_default_model_dir_override(monkeypatch, tiny_ctc_dir: Path) -> None:
    from w2vlm import model as model_mod

    monkeypatch.setattr(model_mod, "DEFAULT_MODEL_DIR", tiny_ctc_dir)
    assert (
        load_model(None, device="cpu").config.vocab_size
        == json.loads((tiny_ctc_dir / "config.json").read_text())["vocab_size"]
    )


def test_int8_cuda_needs_bitsandbytes() -> None:
    import importlib.util

    from w2vlm.model import _bnb_kwargs

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    with pytest.raises(ModelError, match=r"needs bitsandbytes; install it with pip install 'w2vlm\[gpu\]'"):
        _bnb_kwargs(torch.device("cuda"))


# ------------------------------------------------------------------------------ the model card's language


def test_model_language_from_the_card(tmp_path: Path) -> None:
    from w2vlm.errors import ModelError
    from w2vlm.model import model_language, resolve_language, same_language, write_model_card

    assert model_language(tmp_path) is None and resolve_language(None, tmp_path) is None
    assert resolve_language("PT-BR", tmp_path) == "pt-br"  # no card: the setting, checked
    write_model_card(tmp_path, language="en", title="m")
    assert model_language(tmp_path) == "en"
    assert resolve_language(None, tmp_path) == "en" and resolve_language("en-GB", tmp_path) == "en-gb"
    with pytest.raises(ModelError, match="transcribes 'en'"):
        resolve_language("de", tmp_path)
    with pytest.raises(ModelError, match="ISO 639"):
        resolve_language("english", tmp_path)
    assert same_language("en_US", "en") and not same_language("en", "de")
    # hub cards: a list of one language counts, several or broken metadata leave it unknown
    (tmp_path / "README.md").write_text("---\nlanguage:\n- fr\n---\n# m\n")
    assert model_language(tmp_path) == "fr"
    (tmp_path / "README.md").write_text("---\nlanguage: [fr, de]\n---\n")
    assert model_language(tmp_path) is None
    (tmp_path / "README.md").write_text("---\nlanguage: [fr\n---\n")
    assert model_language(tmp_path) is None


def test_the_embedded_model_is_english() -> None:
    from w2vlm.model import default_model_dir, model_language

    assert model_language(default_model_dir()) == "en"


def test_gc_paused_restores_the_collector() -> None:
    import gc

    from w2vlm.model import gc_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failed load")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()
