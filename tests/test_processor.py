from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("w2vlm.decoder")

from conftest import LM_SENTENCES, make_fake_hf_cache  # noqa: E402
from w2vlm.errors import DecoderInputError, ModelError, VocabularyMismatchError  # noqa: E402
from w2vlm.model import load_model  # noqa: E402
from w2vlm.processor import Wav2Vec2ProcessorWithLM  # noqa: E402
from w2vlm.processor_parts import tokenizer_labels  # noqa: E402


def _audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


@pytest.fixture(scope="module")
def proc_and_model(tiny_ctc_dir: Path):
    return Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir), load_model(tiny_ctc_dir, device="cpu")


def _logits(proc, model, audio: np.ndarray) -> np.ndarray:
    inputs = proc(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return model(inputs.input_values).logits[0].numpy()


def _lm_like_logits(proc, text: str, noise_seed: int = 0, peak: float = 8.0) -> np.ndarray:
    """Logits that spell ``text`` (two frames per char, blanks between), with some noise."""
    labels = list(proc.decoder.alphabet.labels)
    idx = {lab: i for i, lab in enumerate(labels)}
    rng = np.random.default_rng(noise_seed)
    rows = []
    for ch in text:
        for tok in (idx[ch], idx[ch], idx[""]):
            row = rng.normal(0, 1.0, len(labels))
            row[tok] += peak
            rows.append(row)
    return np.asarray(rows, dtype=np.float32)


def test_from_pretrained_reads_hub_layout(proc_and_model, tiny_ctc_dir: Path) -> None:
    proc, _ = proc_and_model
    assert isinstance(proc.feature_extractor, transformers.Wav2Vec2FeatureExtractor)
    assert isinstance(proc.tokenizer, transformers.Wav2Vec2CTCTokenizer)
    labels = json.loads((tiny_ctc_dir / "alphabet.json").read_text())["labels"]
    assert list(proc.decoder.alphabet.labels) == labels
    assert proc._base_lm_params == {
        "alpha": 0.5,
        "beta": 1.5,
        "unk_score_offset": -10.0,
        "lm_score_boundary": True,
    }
    assert tokenizer_labels(proc.tokenizer) == labels


def test_call_matches_feature_extractor(proc_and_model, tiny_ctc_dir: Path) -> None:
    proc, _ = proc_and_model
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(tiny_ctc_dir))
    batch = [_audio(0.5, 1), _audio(0.8, 2)]
    ours = proc(batch, sampling_rate=16000, padding=True, return_tensors="np")
    ref = fe(batch, sampling_rate=16000, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ours["input_values"], ref["input_values"])
    labeled = proc(audio=batch[0], text="the cat", sampling_rate=16000)
    assert labeled["labels"] == proc.tokenizer("the cat")["input_ids"]
    with pytest.raises(ValueError, match="either an `audio` or `text`"):
        proc()


def test_batch_decode_fields_and_consistency(proc_and_model) -> None:
    proc, model = proc_and_model
    logits = np.stack([_logits(proc, model, _audio(1.0, s)) for s in (1, 2)])
    out = proc.batch_decode(logits, output_word_offsets=True)
    assert isinstance(out.text, list) and len(out.text) == 2 and all(isinstance(t, str) for t in out.text)
    assert all(isinstance(v, float) for v in out.logit_score + out.lm_score)
    assert out["text"] == out.text and out[0] == out.text
    for text, offsets in zip(out.text, out.word_offsets, strict=True):
        assert " ".join(o["word"] for o in offsets) == text
        for o in offsets:
            assert 0 <= o["start_offset"] < o["end_offset"] <= logits.shape[1]
    # same as the decoder called directly with pyctcdecode's defaults
    for i in range(2):
        beam = proc.decoder.decode_beams(logits[i])[0]
        assert out.text[i] == beam.text
        assert out.logit_score[i] == pytest.approx(beam.logit_score)
        assert out.lm_score[i] == pytest.approx(beam.lm_score)
    assert "word_offsets" not in proc.batch_decode(logits)


def test_decode_single_and_batch_equal(proc_and_model) -> None:
    proc, model = proc_and_model
    items = [_logits(proc, model, _audio(sec, s)) for s, sec in ((3, 0.6), (4, 1.2), (5, 0.9))]
    batch = proc.batch_decode(items, output_word_offsets=True)
    for i, item in enumerate(items):
        single = proc.decode(item, output_word_offsets=True)
        assert single.text == batch.text[i]
        assert single.lm_score == pytest.approx(batch.lm_score[i])
        assert single.word_offsets == batch.word_offsets[i]


def test_a_processor_pickles_and_copies(proc_and_model) -> None:
    """``datasets.map(num_proc=...)`` and ``copy.deepcopy`` need the processor pickled (its decoder held a native
    alphabet that could not be)."""
    import copy
    import pickle

    proc, model = proc_and_model
    item = _logits(proc, model, _audio(0.9, 6))
    want = proc.decode(item).text
    assert pickle.loads(pickle.dumps(proc)).decode(item).text == want
    assert copy.deepcopy(proc).decode(item).text == want


def test_padding_rows_are_trimmed(proc_and_model) -> None:
    proc, model = proc_and_model
    short = _logits(proc, model, _audio(0.6, 7))
    long = _logits(proc, model, _audio(1.1, 8))
    padded = np.full((2, long.shape[0], long.shape[1]), -100.0, dtype=np.float32)
    padded[0, : short.shape[0]] = short
    padded[1] = long
    out = proc.batch_decode(padded, output_word_offsets=True)
    ref = proc.batch_decode([short, long], output_word_offsets=True)
    assert out.text == ref.text and out.lm_score == pytest.approx(ref.lm_score)
    assert out.word_offsets == ref.word_offsets
    # torch tensors are accepted as well
    assert proc.batch_decode(torch.from_numpy(padded)).text == ref.text


def test_lm_changes_and_per_call_params_do_not_leak(proc_and_model) -> None:
    proc, _ = proc_and_model
    logits = _lm_like_logits(proc, "the cat sat on the mat", noise_seed=3)
    base = proc.decode(logits)
    no_lm = proc.decode(logits, alpha=0.0, beta=0.0)
    heavy = proc.decode(logits, alpha=3.0, beta=-2.0)
    assert no_lm.lm_score == pytest.approx(no_lm.logit_score, abs=1e-3)
    assert heavy.lm_score != pytest.approx(base.lm_score)
    again = proc.decode(logits)
    assert again.text == base.text and again.lm_score == pytest.approx(base.lm_score)
    assert proc._base_lm_params["alpha"] == 0.5 and proc.decoder.language_model.alpha == 0.5
    assert proc.decoder.language_model.beta == 1.5


def test_per_call_params_under_threads(proc_and_model) -> None:
    proc, _ = proc_and_model
    logits = _lm_like_logits(proc, "a cat and a dog", noise_seed=4)
    expected = {None: proc.decode(logits).lm_score, 0.0: proc.decode(logits, alpha=0.0).lm_score}
    errors: list[str] = []

    def work(alpha):
        for _ in range(20):
            got = proc.decode(logits, alpha=alpha).lm_score
            if got != pytest.approx(expected[alpha]):
                errors.append(f"alpha={alpha}: {got} != {expected[alpha]}")

    threads = [threading.Thread(target=work, args=(a,)) for a in (None, 0.0, None, 0.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_n_best(proc_and_model) -> None:
    proc, model = proc_and_model
    logits = np.stack([_logits(proc, model, _audio(1.0, 11))] * 2)
    out = proc.batch_decode(logits, n_best=3, output_word_offsets=True)
    assert all(isinstance(t, list) and 1 <= len(t) <= 3 for t in out.text)
    assert out.text[0][0] == proc.batch_decode(logits).text[0]
    assert len(out.word_offsets[0]) == len(out.text[0])
    single = proc.decode(logits[0], n_best=2)
    assert isinstance(single.text, list) and len(single.text) <= 2
    with pytest.raises(DecoderInputError, match="n_best"):
        proc.batch_decode(logits, n_best=0)


def test_hotwords_and_beam_kwargs(proc_and_model) -> None:
    proc, _ = proc_and_model
    logits = _lm_like_logits(proc, "the bird sang", noise_seed=5)
    out = proc.decode(logits, beam_width=5, beam_prune_logp=-8.0, token_min_logp=-4.0, hotwords=["bird"])
    assert isinstance(out.text, str)
    assert proc.batch_decode(logits[None], num_processes=1, pool=None).text == [proc.decode(logits).text]
    with pytest.raises(DecoderInputError, match="num_processes: must be a positive integer"):
        proc.batch_decode(logits[None], num_processes=0)


def test_bad_logits_shapes(proc_and_model) -> None:
    proc, _ = proc_and_model
    with pytest.raises(DecoderInputError, match=r"expects \(batch, frames, vocab\)"):
        proc.batch_decode(np.zeros((4, 32), np.float32))
    with pytest.raises(DecoderInputError, match=r"decode expects \(frames, vocab\)"):
        proc.decode(np.zeros((1, 4, 32), np.float32))
    with pytest.raises(ValueError):
        proc.decode(np.zeros((4, 7), np.float32))  # width differs from the alphabet


def test_save_pretrained_round_trip(proc_and_model, tmp_path: Path) -> None:
    proc, model = proc_and_model
    out_dir = tmp_path / "saved"
    proc.save_pretrained(out_dir)
    for name in ("preprocessor_config.json", "vocab.json", "tokenizer_config.json", "alphabet.json"):
        assert (out_dir / name).is_file(), name
    assert json.loads((out_dir / "preprocessor_config.json").read_text())["processor_class"] == (
        "Wav2Vec2ProcessorWithLM"
    )
    lm_files = [p for p in (out_dir / "language_model").iterdir() if p.suffix in (".arpa", ".bin", ".binary")]
    assert len(lm_files) == 1
    attrs = json.loads((out_dir / "language_model" / "attrs.json").read_text())
    assert attrs["alpha"] == 0.5 and attrs["beta"] == 1.5 and attrs["score_boundary"] is True
    again = Wav2Vec2ProcessorWithLM.from_pretrained(out_dir)
    logits = [_logits(proc, model, _audio(1.0, 21)), _lm_like_logits(proc, "hello world")]
    a = proc.batch_decode(logits, output_word_offsets=True)
    b = again.batch_decode(logits, output_word_offsets=True)
    assert a.text == b.text and a.lm_score == pytest.approx(b.lm_score) and a.word_offsets == b.word_offsets
    # transformers loads the feature extractor and tokenizer we wrote
    fe = transformers.AutoFeatureExtractor.from_pretrained(str(out_dir))
    tok = transformers.Wav2Vec2CTCTokenizer.from_pretrained(str(out_dir))
    assert fe.sampling_rate == 16000 and tok.get_vocab() == proc.tokenizer.get_vocab()


def test_decoder_overrides(tiny_ctc_dir: Path) -> None:
    proc = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir, alpha=0.9, beta=0.1, score_boundary=False)
    assert proc._base_lm_params == {
        "alpha": 0.9,
        "beta": 0.1,
        "unk_score_offset": -10.0,
        "lm_score_boundary": False,
    }
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir, alpah=1.0)


def test_alphabet_mismatch_lists_missing_tokens(tiny_ctc_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mismatch"
    shutil.copytree(tiny_ctc_dir, folder)
    alphabet = json.loads((folder / "alphabet.json").read_text())
    alphabet["labels"] = [lab for lab in alphabet["labels"] if lab not in ("q", "z")]
    (folder / "alphabet.json").write_text(json.dumps(alphabet))
    with pytest.raises(VocabularyMismatchError, match=r"The tokens \['q', 'z'\] are defined in the tokenizer"):
        Wav2Vec2ProcessorWithLM.from_pretrained(folder)
    good = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir)
    assert Wav2Vec2ProcessorWithLM.get_missing_alphabet_tokens(good.decoder, good.tokenizer) == set()


def test_folder_without_lm(tiny_ctc_factory) -> None:
    folder = tiny_ctc_factory("nolm", with_lm=False)
    proc = Wav2Vec2ProcessorWithLM.from_pretrained(folder)
    assert proc.decoder.language_model is None
    assert proc._base_lm_params == {}
    model = load_model(folder, device="cpu")
    text = proc.decode(_logits(proc, model, _audio(1.0, 1))).text
    assert isinstance(text, str)


def test_missing_files(tiny_ctc_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such processor folder"):
        Wav2Vec2ProcessorWithLM.from_pretrained(tmp_path / "none")
    for missing, message in (("preprocessor_config.json", "preprocessor_config"), ("vocab.json", "vocab")):
        folder = tmp_path / f"no_{missing}"
        shutil.copytree(tiny_ctc_dir, folder)
        (folder / missing).unlink()
        with pytest.raises(ModelError, match=f"{message}.* is missing"):
            Wav2Vec2ProcessorWithLM.from_pretrained(folder)


def test_hub_id_offline(tiny_ctc_dir: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    make_fake_hf_cache(cache, "acme/tiny-with-lm", tiny_ctc_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    proc = Wav2Vec2ProcessorWithLM.from_pretrained("acme/tiny-with-lm", cache_dir=cache)
    assert proc.decoder.language_model is not None
    assert sorted(proc.decoder.language_model.unigrams) == sorted({w for s in LM_SENTENCES for w in s.split()})


ANCHOR_PY = Path(__file__).resolve().parents[1] / "bench" / ".venv-pipeline" / "bin" / "python"

_ANCHOR_SCRIPT = """
import json, sys
import numpy as np
from transformers import Wav2Vec2ProcessorWithLM
src, logits_path, save_to = sys.argv[1:4]
proc = Wav2Vec2ProcessorWithLM.from_pretrained(src)
logits = np.load(logits_path)
out = proc.batch_decode(logits, output_word_offsets=True)
proc.save_pretrained(save_to)
print(json.dumps({"text": list(out.text), "lm_score": [float(x) for x in out.lm_score]}))
"""


@pytest.mark.skipif(not ANCHOR_PY.is_file(), reason="needs bench/.venv-pipeline (python bench/pipeline.py --setup)")
def test_interop_with_transformers_and_pyctcdecode(proc_and_model, tmp_path: Path) -> None:
    """transformers + pyctcdecode load what w2vlm saved and decode alike; w2vlm loads what they saved."""
    import subprocess

    proc, _ = proc_and_model
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    proc.save_pretrained(ours_dir)
    texts = ["the cat sat on the mat", "hello world", "a dog and a cat"]
    items = [_lm_like_logits(proc, t, noise_seed=i, peak=5.0) for i, t in enumerate(texts)]
    frames = max(x.shape[0] for x in items)
    logits = np.full((len(items), frames, items[0].shape[1]), -100.0, np.float32)
    for i, x in enumerate(items):
        logits[i, : x.shape[0]] = x
    np.save(tmp_path / "logits.npy", logits)
    script = tmp_path / "anchor.py"
    script.write_text(_ANCHOR_SCRIPT)
    done = subprocess.run(
        [str(ANCHOR_PY), str(script), str(ours_dir), str(tmp_path / "logits.npy"), str(theirs_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = proc.batch_decode(logits)
    assert theirs["text"] == ours.text
    assert theirs["lm_score"] == pytest.approx(ours.lm_score, rel=1e-3, abs=1e-2)
    reloaded = Wav2Vec2ProcessorWithLM.from_pretrained(theirs_dir)
    assert reloaded.batch_decode(logits).text == ours.text
