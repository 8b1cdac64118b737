"""Tests of w2vlm.train: scoring, manifests, and a few real CTC training steps on CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import model_weights
from train_helpers import SR, tone_clip, train_config, write_wav
from w2vlm.errors import ManifestError, ModelError
from w2vlm.metrics import error_rates
from w2vlm.model import model_language
from w2vlm.train import (
    DEFAULT_VOCAB,
    Tokenizer,
    build_config,
    parse_config_overrides,
    read_manifest,
    train,
)
from w2vlm.train.loop import padding_blank_loss

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_error_rates_of_dev_scores() -> None:
    wer, cer = error_rates(["the cat sat", "a dog"], ["the cat sat", "a dog"])
    assert (wer, cer) == (0.0, 0.0)
    wer, cer = error_rates(["the cat sat"], ["the hat"])
    assert wer == pytest.approx(2 / 3)
    assert cer == pytest.approx(5 / len("the cat sat"))  # c->h, and " sat" deleted
    with pytest.raises(ValueError):
        error_rates(["a"], [])


def test_tokenizer_roundtrip() -> None:
    vocab = {t: i for i, t in enumerate(DEFAULT_VOCAB)}
    tok = Tokenizer(vocab)
    ids = tok.encode("Don't  Stop")
    assert ids is not None
    assert ids.count(vocab["|"]) == 1
    # CTC collapse: repeats merge, blanks split real repeats, blanks vanish
    blank = vocab["<pad>"]
    frames = [vocab["a"], vocab["a"], blank, vocab["a"], vocab["|"], vocab["b"], blank]
    assert tok.greedy_decode(frames) == "aa b"
    assert tok.encode("naïve?") is not None  # unknown characters become <unk>
    no_unk = Tokenizer({"<pad>": 0, "|": 1, "a": 2})
    assert no_unk.encode("ab") is None
    with pytest.raises(ModelError):
        Tokenizer({"a": 0})


def test_vocab_labels() -> None:
    from w2vlm.processor_parts import vocab_labels

    vocab = {t: i for i, t in enumerate(DEFAULT_VOCAB)}
    labels = vocab_labels(vocab)
    assert labels[vocab["<pad>"]] == ""
    assert labels[vocab["|"]] == " "
    assert labels[vocab["<unk>"]] == "⁇"
    assert labels[vocab["z"]] == "z"


def test_read_manifest_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"audio": "a.wav", "text": "hi"}\nnot json\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2"):
        read_manifest(bad)
    bad.write_text('{"text": "hi"}\n')
    with pytest.raises(ManifestError, match="audio"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "missing.jsonl")
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"audio_filepath": "x/a.wav", "sentence": "hi"}\n')
    (item,) = read_manifest(ok)
    assert item.audio == tmp_path / "x" / "a.wav"
    assert item.text == "hi"
    # the same formats as `w2vlm eval`: CSV, and a folder of audio + .txt, where every clip needs its text
    (tmp_path / "m.csv").write_text("path,transcript\nx/b.wav,hello there\n")
    (item,) = read_manifest(tmp_path / "m.csv")
    assert (item.audio, item.text) == (tmp_path / "x" / "b.wav", "hello there")
    folder = tmp_path / "clips"
    folder.mkdir()
    write_wav(folder / "1.wav", np.zeros(1600))
    write_wav(folder / "2.wav", np.zeros(1600))
    (folder / "1.txt").write_text("one\n")
    with pytest.raises(ManifestError, match=r"1 of 2 utterances have no usable text.*2\.txt"):
        read_manifest(folder)
    (folder / "2.txt").write_text("two")
    assert [u.text for u in read_manifest(folder)] == ["one", "two"]


def test_train_tiny_on_cpu_loss_decreases_and_loads(tiny_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    losses: list[float] = []
    result = train(train_config(tiny_manifest, out), on_epoch=lambda rec: losses.append(rec["loss"]))
    assert result.steps > 0
    assert result.epochs_completed == 12
    assert len(losses) == 12
    assert all(loss > 0 for loss in losses)  # every epoch its own loss (short epochs were reported as 0)
    assert losses[-1] < 0.7 * losses[0]
    assert result.dev is not None and result.dev.utterances == 4
    assert result.dev.cer >= 0.0

    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "vocab.json",
        "special_tokens_map.json",
    ):
        assert (out / name).is_file(), name
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and "|" in vocab
    assert json.loads((out / "preprocessor_config.json").read_text())["processor_class"] == "Wav2Vec2Processor"
    assert not (out / "alphabet.json").exists()

    from transformers import AutoModelForCTC, Wav2Vec2Processor

    model = AutoModelForCTC.from_pretrained(str(out))
    processor = Wav2Vec2Processor.from_pretrained(str(out))
    assert model.config.vocab_size == len(vocab)
    audio = tone_clip("abc", np.random.default_rng(1)).astype(np.float32)
    inputs = processor(audio, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == len(vocab)
    text = processor.batch_decode(logits.argmax(-1))[0]
    assert isinstance(text, str)


def test_stop_after_pauses_and_resume_finishes_the_same_schedule(tiny_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    whole = train(train_config(tiny_manifest, tmp_path / "whole", epochs=3, dev_manifest=None))
    paused = train(train_config(tiny_manifest, out, epochs=3, dev_manifest=None, stop_after_s=1e-9))
    assert paused.steps < whole.steps and paused.epochs_completed == 0
    assert json.loads((out / "training_info.json").read_text())["paused"] is True  # the model is saved anyway
    done = train(train_config(tiny_manifest, out, epochs=3, dev_manifest=None, resume=True))
    assert done.epochs_completed == 3 and done.steps == whole.steps
    assert json.loads((out / "training_info.json").read_text())["paused"] is False
    assert model_language(out) is None  # no --language given, and trained from scratch


def test_language_recorded_in_the_model_card(tiny_manifest: Path, tmp_path: Path) -> None:
    first = train(train_config(tiny_manifest, tmp_path / "a", epochs=1, dev_manifest=None, language="EN")).output_dir
    assert model_language(first) == "en"
    second = train(train_config(tiny_manifest, tmp_path / "b", epochs=1, dev_manifest=None, init_from=first))
    assert model_language(second.output_dir) == "en"  # inherited from --init-from


def test_snapshot_every_keeps_loadable_copies_of_the_weights(tiny_manifest: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCTC

    from w2vlm.average import average_models

    out = tmp_path / "model"
    result = train(train_config(tiny_manifest, out, epochs=2, batch_seconds=1.0, dev_manifest=None, snapshot_every=2))
    snaps = sorted((tmp_path / "model.snapshots").iterdir())
    assert [p.name for p in snaps] == [f"step-{s:07d}" for s in range(2, result.steps + 1, 2)]
    info = json.loads((snaps[-1] / "training_info.json").read_text())
    assert info["steps"] == 2 * len(snaps) and info["snapshot_of"] == str(out)
    AutoModelForCTC.from_pretrained(str(snaps[0]))
    if result.steps % 2 == 0:  # the last snapshot was taken after the last step: the final weights
        final, last = model_weights(out), model_weights(snaps[-1])
        assert all(torch.equal(final[k], last[k]) for k in final)
    first, second = model_weights(snaps[0]), model_weights(snaps[1])
    assert any(not torch.equal(first[k], second[k]) for k in first)  # training moved on between them
    avg = average_models([tmp_path / "model.snapshots"], tmp_path / "avg", last=2)
    assert len(json.loads((avg / "training_info.json").read_text())["averaged_from"]) == 2


@pytest.mark.parametrize("how", ["crash", "sigint"])
def test_resume_within_an_epoch_matches_an_uninterrupted_run(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Stopped in the middle of an epoch (a crash after a checkpoint, or Ctrl-C), ``--resume`` goes on with
    the same batches and random draws, so the result equals the run that was never stopped."""
    import os
    import signal

    import w2vlm.train.loop as train_mod

    kw: dict = {"epochs": 2, "batch_seconds": 1.0, "dev_manifest": None, "save_every": 2, "pad_extra_prob": 0.5}
    whole = train(train_config(tiny_manifest, tmp_path / "whole", **kw))
    assert whole.steps >= 6  # several batches an epoch, so step 3 is inside the first

    real_step = train_mod.train_step
    calls = {"n": 0}

    def interrupted_step(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if how == "crash" and calls["n"] == 3:
            raise RuntimeError("simulated crash")
        loss = real_step(*args, **kwargs)
        if how == "sigint" and calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    out = tmp_path / "model"
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run in a background job
    monkeypatch.setattr(train_mod, "train_step", interrupted_step)
    if how == "crash":
        with pytest.raises(RuntimeError, match="simulated"):
            train(train_config(tiny_manifest, out, **kw))
        saved_at = 2  # the last checkpoint before the crash
    else:
        paused = train(train_config(tiny_manifest, out, **{**kw, "dev_manifest": tiny_manifest}))
        saved_at = 3  # stops after the step during which the signal came, and saves
        assert paused.steps == 3 and paused.dev is None  # no dev pass on the way out
        assert json.loads((out / "training_info.json").read_text())["paused"] is True
        assert signal.getsignal(signal.SIGINT) is handler_before  # handlers are put back
    state = json.loads((tmp_path / "model.checkpoint" / "state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (saved_at, 0, saved_at)
    monkeypatch.setattr(train_mod, "train_step", real_step)

    done = train(train_config(tiny_manifest, out, **kw, resume=True))
    assert done.steps == whole.steps and done.epochs_completed == 2
    ref, got = model_weights(tmp_path / "whole"), model_weights(out)
    assert ref.keys() == got.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resume_with_another_batch_plan_is_refused(tiny_manifest: Path, tmp_path: Path) -> None:
    """A resumed run must draw the batches it was planned with: other batch settings (here the edges' reserve of
    --edge-prob, which changes how many clips fit a batch) are refused with a clear error, not silently re-planned."""
    out = tmp_path / "model"
    train(train_config(tiny_manifest, out, epochs=3, dev_manifest=None, stop_after_s=1e-9, batch_seconds=2.0))
    with pytest.raises(ModelError, match=r"planned with \d+ batches per epoch, these settings give \d+"):
        train(
            train_config(tiny_manifest, out, epochs=3, dev_manifest=None, resume=True, batch_seconds=2.0, edge_prob=0.5)
        )
    done = train(train_config(tiny_manifest, out, epochs=3, dev_manifest=None, resume=True, batch_seconds=2.0))
    assert done.epochs_completed == 3


def test_resume_from_a_damaged_checkpoint_names_it(tiny_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    train(train_config(tiny_manifest, out, epochs=1, dev_manifest=None))
    state_file = tmp_path / "model.checkpoint" / "state.json"
    good = json.loads(state_file.read_text())
    for damaged in ("{not json", json.dumps({**good, "rng": "x"}), json.dumps({"epoch": 1})):
        state_file.write_text(damaged)
        with pytest.raises(ModelError, match=r"model\.checkpoint/state\.json: not a readable w2vlm training"):
            train(train_config(tiny_manifest, out, epochs=2, dev_manifest=None, resume=True))


_TINY_ARPA = "\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\t<s>\t0\n-0.5\t</s>\n-0.3\tcab\n\n\\end\\\n"


def test_resume_and_language_model_bundle(tiny_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    first = train(train_config(tiny_manifest, out, epochs=2, dev_manifest=None))
    state = json.loads((tmp_path / "model.checkpoint" / "state.json").read_text())
    assert state["step"] == first.steps and state["epoch"] == 2

    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "lm.arpa").write_text(_TINY_ARPA)
    (lm / "unigrams.txt").write_text("cab\n")
    second = train(train_config(tiny_manifest, out, epochs=4, dev_manifest=None, resume=True, lm_dir=lm))
    assert second.epochs_completed == 4
    assert second.steps == 2 * first.steps
    assert len(second.history) == 4
    assert (out / "language_model" / "lm.arpa").is_file()
    attrs = json.loads((out / "language_model" / "attrs.json").read_text())
    assert attrs["alpha"] == 0.5 and attrs["beta"] == 1.5
    alphabet = json.loads((out / "alphabet.json").read_text())
    assert alphabet["labels"][0] == "" and alphabet["is_bpe"] is False
    pp = json.loads((out / "preprocessor_config.json").read_text())
    assert pp["processor_class"] == "Wav2Vec2ProcessorWithLM"

    bad_lm = tmp_path / "bad_lm"
    bad_lm.mkdir()
    with pytest.raises(ModelError, match="expected one language model file"):
        train(train_config(tiny_manifest, tmp_path / "m2", epochs=1, dev_manifest=None, lm_dir=bad_lm))


def test_an_lm_folder_with_its_convert_lm_binary_bundles_one_file_that_loads(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    """The README's workflow (build-lm, convert-lm, train --lm FOLDER): the folder holds lm.arpa and lm.w2vlm; the
    model gets one of them (the binary form) and loads; a folder of only the binary form is taken too; two
    unrelated LM files, or no unigrams.txt, are refused before any training step."""
    from w2vlm.decoder.ngram_files import convert_to_binary
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "lm.arpa").write_text(_TINY_ARPA)
    (lm / "unigrams.txt").write_text("cab\n")
    convert_to_binary(lm / "lm.arpa", lm / "lm.w2vlm")
    out = tmp_path / "model"
    train(train_config(tiny_manifest, out, epochs=1, dev_manifest=None, lm_dir=lm))
    assert sorted(p.name for p in (out / "language_model").iterdir()) == ["attrs.json", "lm.w2vlm", "unigrams.txt"]
    assert Wav2Vec2ProcessorWithLM.from_pretrained(str(out)).decoder is not None

    (lm / "lm.arpa").unlink()
    train(train_config(tiny_manifest, tmp_path / "binary_only", epochs=1, dev_manifest=None, lm_dir=lm))
    assert (tmp_path / "binary_only" / "language_model" / "lm.w2vlm").is_file()

    (lm / "other.arpa").write_text(_TINY_ARPA)  # not the binary's source: which one was meant is not known
    with pytest.raises(ModelError, match=r"found \['lm.w2vlm', 'other.arpa'\]"):
        train(train_config(tiny_manifest, tmp_path / "m3", epochs=1, dev_manifest=None, lm_dir=lm))
    (lm / "other.arpa").unlink()
    (lm / "unigrams.txt").unlink()
    with pytest.raises(ModelError, match=r"no unigrams\.txt"):
        train(train_config(tiny_manifest, tmp_path / "m4", epochs=1, dev_manifest=None, lm_dir=lm))
    assert not (tmp_path / "m3.checkpoint").exists() and not (tmp_path / "m4.checkpoint").exists()


def test_a_save_dtype_that_cannot_be_saved_is_refused_before_training(tiny_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"--save-dtype \(save_dtype\): 'int8'"):
        train(train_config(tiny_manifest, tmp_path / "m", save_dtype="int8"))
    assert not (tmp_path / "m.checkpoint").exists()


def _first_epoch_batch_lengths(manifest: Path, out: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> list[int]:
    """Longest clip of each batch of the first epoch, in the order training sees them."""
    from w2vlm import train as train_module

    seen: list[int] = []
    collate = train_module.AudioStore.collate

    def spy(self: train_module.AudioStore, idx: list[int], *args: object) -> object:
        seen.append(int(self.lengths[list(idx)].max()))
        return collate(self, idx, *args)

    monkeypatch.setattr(train_module.AudioStore, "collate", spy)
    result = train(train_config(manifest, out, epochs=1, dev_manifest=None, **kw))
    monkeypatch.undo()
    return seen[: result.steps]


def test_sortagrad_orders_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "wav").mkdir()
    texts = ["ab", "abcdefg", "abc", "abcdefghij", "a", "abcdef", "abcde", "abcdefgh", "abcd", "abcdefghi"]
    with open(tmp_path / "m.jsonl", "w") as f:
        for i, text in enumerate(texts):
            write_wav(tmp_path / "wav" / f"{i}.wav", tone_clip(text, rng))
            f.write(json.dumps({"audio": f"wav/{i}.wav", "text": text}) + "\n")
    # batch_seconds below any clip: one clip per batch, so the order of batches is the order of clips
    sorted_run = _first_epoch_batch_lengths(tmp_path / "m.jsonl", tmp_path / "a", monkeypatch, batch_seconds=0.3)
    shuffled_run = _first_epoch_batch_lengths(
        tmp_path / "m.jsonl", tmp_path / "b", monkeypatch, batch_seconds=0.3, sortagrad=False
    )
    assert len(sorted_run) == len(shuffled_run) == len(texts)
    assert sorted_run == sorted(sorted_run)
    assert shuffled_run != sorted(shuffled_run)
    assert sorted(shuffled_run) == sorted_run


def test_train_command_from_scratch_then_init_from(tiny_manifest: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from w2vlm.cli import app

    runner = CliRunner()
    common = ["--preset", "tiny", "--batch-seconds", "4", "--lr", "3e-3", "--warmup", "2", "--device", "cpu", "-q"]
    first = tmp_path / "first"
    res = runner.invoke(app, ["train", str(tiny_manifest), "-o", str(first), "--epochs", "2", *common])
    assert res.exit_code == 0, res.output
    assert "trained" in res.output and "2 epochs" in res.output
    info = json.loads((first / "training_info.json").read_text())
    assert info["epochs_completed"] == 2 and info["steps"] > 0

    second = tmp_path / "second"
    args = ["train", str(tiny_manifest), "-o", str(second), "--init-from", str(first), "--epochs", "1"]
    res = runner.invoke(app, [*args, "--dev", str(tiny_manifest), "--no-sortagrad", *common])
    assert res.exit_code == 0, res.output
    assert "dev greedy WER" in res.output
    assert json.loads((second / "vocab.json").read_text()) == json.loads((first / "vocab.json").read_text())
    assert (
        json.loads((second / "config.json").read_text())["hidden_size"]
        == json.loads((first / "config.json").read_text())["hidden_size"]
    )
    before, after = model_weights(first), model_weights(second)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained on from the first model

    res = runner.invoke(app, ["train", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x"), *common])
    assert res.exit_code == 1
    assert "missing.jsonl: manifest not found" in res.output
    res = runner.invoke(app, ["train", str(tiny_manifest), "-o", str(tmp_path / "y"), "--init-from", str(tmp_path)])
    assert res.exit_code == 1
    assert "config.json not found" in res.output


def test_train_command_set_changes_the_model_config(tiny_manifest: Path, tmp_path: Path) -> None:
    """``--set KEY=VALUE`` reaches the model config, from scratch and on --init-from; bad ones are named."""
    from typer.testing import CliRunner

    from w2vlm.cli import app

    runner = CliRunner()
    common = ["--preset", "tiny", "--batch-seconds", "4", "--epochs", "1", "--device", "cpu", "-q"]
    first = tmp_path / "first"
    sets = ["--set", "hidden_dropout=0", "--set", "layerdrop=0.05", "--set", "mask_time_length=3"]
    res = runner.invoke(app, ["train", str(tiny_manifest), "-o", str(first), *sets, *common])
    assert res.exit_code == 0, res.output
    config = json.loads((first / "config.json").read_text())
    assert (config["hidden_dropout"], config["layerdrop"], config["mask_time_length"]) == (0, 0.05, 3)

    second = tmp_path / "second"
    args = ["train", str(tiny_manifest), "-o", str(second), "--init-from", str(first), "--set", "layerdrop=0"]
    res = runner.invoke(app, [*args, *common])
    assert res.exit_code == 0, res.output
    config = json.loads((second / "config.json").read_text())
    assert (config["layerdrop"], config["hidden_dropout"]) == (0, 0)  # the one set, the rest kept from first

    for bad, code, message in (
        ("hiden_dropout=0", 1, "--set hiden_dropout: Wav2Vec2Config has no such setting; did you mean hidden_dropout"),
        ("hidden_dropout=none", 1, "--set hidden_dropout='none': expected a number"),
        ("hidden_dropout", 2, "--set 'hidden_dropout': expected KEY=VALUE"),
    ):
        res = runner.invoke(app, ["train", str(tiny_manifest), "-o", str(tmp_path / "bad"), "--set", bad, *common])
        assert res.exit_code == code, res.output
        assert message in " ".join(res.output.split()), res.output
    res = runner.invoke(app, [*args[:-1], "hidden_size=8", *common])
    assert res.exit_code == 1
    assert "a --set that changes layer sizes cannot start from its weights" in " ".join(res.output.split())


def test_train_step_skips_a_non_finite_gradient_and_keeps_the_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import Wav2Vec2ForCTC

    import w2vlm.train.loop as train_mod

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(build_config(dict(zip(DEFAULT_VOCAB, range(len(DEFAULT_VOCAB)))), "tiny")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = train_config(tmp_path / "m.jsonl", tmp_path / "out")
    mask = torch.ones(2, 16000, dtype=torch.long)
    labels = torch.tensor([[7, 8, 9], [9, 8, -100]])
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bad = torch.randn(2, 16000)
    bad[0, 100] = float("nan")  # one NaN sample: NaN loss and gradients
    with caplog.at_level("WARNING", logger="w2vlm"):
        loss = train_mod.train_step(model, optimizer, bad, mask, labels, cfg, amp=False)
    assert not math.isfinite(float(loss.detach()))
    assert "step skipped" in caplog.text
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # untouched, not NaN
    # a good batch still trains
    loss = train_mod.train_step(model, optimizer, torch.randn(2, 16000), mask, labels, cfg, amp=False)
    assert math.isfinite(float(loss.detach()))
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(before[k], v)]
    assert changed and all(bool(torch.isfinite(v).all()) for v in model.state_dict().values())


def test_padding_blank_loss_is_the_blank_nll_of_padded_frames() -> None:
    from transformers import Wav2Vec2ForCTC

    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(build_config(dict(zip(DEFAULT_VOCAB, range(len(DEFAULT_VOCAB)))), "tiny")).eval()
    x = torch.randn(2, 16000)
    full = torch.ones(2, 16000, dtype=torch.long)
    with torch.no_grad():
        logits = model(x, attention_mask=full).logits
        assert float(padding_blank_loss(model, logits, full)) == 0.0  # no padding, nothing to learn
        mask = full.clone()
        mask[1, 6000:] = 0
        logits = model(x * mask, attention_mask=mask).logits
        got = float(padding_blank_loss(model, logits, mask))
    n_valid = int(model._get_feat_extract_output_lengths(torch.tensor(6000)))
    log_probs = torch.log_softmax(logits[1, n_valid:], dim=-1)[:, model.config.pad_token_id]
    assert logits.shape[1] - n_valid > 10
    assert got == pytest.approx(float(-log_probs.mean()), rel=1e-5)


def test_training_adds_the_padding_loss_and_extra_padding(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import w2vlm.train.loop as train_mod

    # (batch width in samples, longest row in samples, padded logit frames, loss value) per step
    seen: list[tuple[int, int, int, float]] = []

    def recording(model, logits, attention_mask):  # type: ignore[no-untyped-def]
        value = padding_blank_loss(model, logits, attention_mask)
        frames = model._get_feature_vector_attention_mask(logits.shape[1], attention_mask).bool()
        longest = int(attention_mask.sum(-1).max())
        seen.append((attention_mask.shape[1], longest, int((~frames).sum()), float(value.detach())))
        return value

    monkeypatch.setattr(train_mod, "padding_blank_loss", recording)
    result = train(train_config(tiny_manifest, tmp_path / "a", dev_manifest=None, epochs=3, pad_extra_prob=1.0))
    assert len(seen) == result.steps > 0
    assert all(width > longest for width, longest, *_ in seen), seen  # every batch got extra padding
    assert all(padded > 0 for *_, padded, _ in seen), seen  # ... of whole logit frames, which the term trains
    assert all(math.isfinite(value) and value > 0 for *_, value in seen), seen

    seen.clear()
    result = train(train_config(tiny_manifest, tmp_path / "b", dev_manifest=None, epochs=3, pad_blank_weight=0.0))
    assert result.steps > 0 and not seen  # switched off: plain CTC on unpadded batches


def test_unreadable_audio_is_skipped_and_named(
    tiny_manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "wav" / "junk.wav").write_bytes(b"not audio at all")
    mixed = tmp_path / "mixed.jsonl"
    extra = [{"audio": "wav/missing.wav", "text": "abc"}, {"audio": "wav/junk.wav", "text": "abc"}]
    mixed.write_text(tiny_manifest.read_text() + "".join(json.dumps(r) + "\n" for r in extra))
    with caplog.at_level("WARNING", logger="w2vlm"):
        result = train(train_config(mixed, tmp_path / "m", epochs=1, dev_manifest=None))
    assert result.steps > 0
    assert "skipped 2 of 6 utterances (unreadable audio)" in caplog.text
    assert "missing.wav" in caplog.text

    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text("".join(json.dumps(r) + "\n" for r in extra))
    with pytest.raises(ManifestError, match=r"no usable utterance.*'unreadable audio': 2.*missing\.wav"):
        train(train_config(only_bad, tmp_path / "b", epochs=1, dev_manifest=None))


def test_parse_config_overrides_reads_json_values_else_strings() -> None:
    got = parse_config_overrides(["a=0", "b = 0.5", "c=true", "d=null", "e=[1, 2]", "f=swish", "g="])
    assert got == {"a": 0, "b": 0.5, "c": True, "d": None, "e": [1, 2], "f": "swish", "g": ""}
    for bad in ("novalue", "=1", "two words=1", ""):
        with pytest.raises(ModelError, match="expected KEY=VALUE"):
            parse_config_overrides([bad])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"pad_blank_weight": -0.5}, r"--pad-blank-weight \(pad_blank_weight\): -0.5; expected a number >= 0"),
        ({"stop_after_s": 0.0}, r"--stop-after \(stop_after_s\): 0.0; expected a number > 0"),
        ({"learning_rate": -1e-3}, r"--lr \(learning_rate\)"),
        ({"epochs": 0}, r"--epochs \(epochs\): 0"),
        ({"pad_extra_prob": 1.5}, r"pad_extra_prob: 1.5; expected a probability between 0 and 1"),
        ({"mask_time_prob": -0.1}, r"--mask-time-prob"),
        ({"snapshot_every": -1}, r"--snapshot-every \(snapshot_every\): -1; expected a number >= 0"),
    ],
)
def test_settings_out_of_range_are_named(tiny_manifest: Path, tmp_path: Path, setting: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        train(train_config(tiny_manifest, tmp_path / "m", **setting))
    assert not (tmp_path / "m").exists()  # refused before any work


def test_train_conformer_preset_and_use_it_in_the_pipeline(tiny_manifest: Path, tmp_path: Path) -> None:
    """A Wav2Vec2-BERT (log-mel conformer) model trains, resumes from its folder, and runs in w2vlm."""
    out = tmp_path / "conformer"
    losses: list[float] = []
    cfg = train_config(tiny_manifest, out, preset="tiny-conformer", epochs=8, pad_extra_prob=0.5)
    result = train(cfg, on_epoch=lambda rec: losses.append(rec["loss"]))
    assert result.steps > 0 and all(loss > 0 for loss in losses) and losses[-1] < 0.9 * losses[0]  # (8 steps: 0.81x)
    assert result.dev is not None and result.dev.utterances == 4
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "wav2vec2-bert" and config["architectures"] == ["Wav2Vec2BertForCTC"]
    pp = json.loads((out / "preprocessor_config.json").read_text())
    assert pp["feature_extractor_type"] == "SeamlessM4TFeatureExtractor"

    again = train(train_config(tiny_manifest, tmp_path / "again", init_from=out, epochs=1, dev_manifest=None))
    assert again.steps > 0  # fine-tuning starts from a log-mel model's folder as from a waveform one's

    from w2vlm.pipeline import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    audio = tone_clip("bad cab", np.random.default_rng(1)).astype(np.float32)
    text = asr(audio)["text"]
    assert isinstance(text, str)


def test_unknown_preset_is_named() -> None:
    with pytest.raises(ModelError, match="preset: 'huge' is unknown"):
        build_config(dict(zip(DEFAULT_VOCAB, range(len(DEFAULT_VOCAB)))), "huge")


@pytest.mark.parametrize("native_bf16", [False, True])
def test_cpu_autocast_only_where_the_cpu_has_bf16(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    import w2vlm.train.loop as train_mod

    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: native_bf16)
    losses: list[float] = []
    out = tmp_path / "m"
    train(train_config(tiny_manifest, out, dev_manifest=None), on_epoch=lambda rec: losses.append(rec["loss"]))
    info = json.loads((out / "training_info.json").read_text())
    assert info["autocast"] == ("bfloat16" if native_bf16 else None)
    assert losses[-1] < 0.7 * losses[0]  # it learns either way
    train(train_config(tiny_manifest, tmp_path / "off", dev_manifest=None, amp=False, epochs=1))
    assert json.loads((tmp_path / "off" / "training_info.json").read_text())["autocast"] is None


def test_a_run_that_fails_before_its_first_step_leaves_no_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        train(train_config(tmp_path / "missing.jsonl", tmp_path / "m", dev_manifest=None))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
