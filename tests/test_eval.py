"""``w2vlm eval``: manifests, scoring, greedy vs LM decoding, the logits cache, failing files, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import write_audio_file
from w2vlm.errors import ManifestError
from w2vlm.eval import greedy_decode
from w2vlm.logits_cache import LogitsCache, model_cache_key
from w2vlm.manifest import read_manifest
from w2vlm.metrics import ErrorCounts, char_errors, corpus_errors, normalize_text, word_errors

jiwer = pytest.importorskip("jiwer")


def _noise_wav(path: Path, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    return write_audio_file(path, (0.2 * rng.standard_normal(round(16000 * seconds))).astype(np.float32), 16000)


# ------------------------------------------------------------------------------------------------ manifests


def test_jsonl_manifest_paths_relative_to_manifest(tmp_path: Path) -> None:
    sub = tmp_path / "set"
    sub.mkdir()
    absolute = tmp_path / "abs.wav"
    lines = [
        {"audio": "wav/a.wav", "text": "hello world"},
        {"audio_filepath": str(absolute), "sentence": "the cat", "id": "utt-2"},
        {"path": "b.flac", "transcript": ""},
    ]
    manifest = sub / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    items = read_manifest(manifest)
    assert [i.audio for i in items] == [sub / "wav/a.wav", absolute, sub / "b.flac"]
    assert [i.reference for i in items] == ["hello world", "the cat", ""]
    assert [i.id for i in items] == ["wav/a.wav", "utt-2", "b.flac"]
    assert all(i.error is None for i in items)


def test_csv_and_tsv_manifests(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text('file,Text\nx/1.wav,"hello, world"\n2.wav,the cat\n', encoding="utf-8")
    items = read_manifest(tmp_path / "m.csv")
    assert [(i.audio, i.reference) for i in items] == [
        (tmp_path / "x/1.wav", "hello, world"),
        (tmp_path / "2.wav", "the cat"),
    ]
    (tmp_path / "m.tsv").write_text("id\taudio\treference\nu1\t1.wav\ta b\n", encoding="utf-8")
    (item,) = read_manifest(tmp_path / "m.tsv")
    assert (item.id, item.audio, item.reference) == ("u1", tmp_path / "1.wav", "a b")


def test_manifests_keep_their_other_fields(tmp_path: Path) -> None:
    lines = [
        {"audio": "a.wav", "text": "x", "id": "u1", "speaker": "ann", "snr_db": 12.5, "nested": {"k": 1}},
        {"path": "b.wav", "audio": None, "sentence": "y", "text": None, "reverb": True},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    first, second = read_manifest(tmp_path / "m.jsonl")
    assert first.fields == {"speaker": "ann", "snr_db": 12.5}  # not audio/text/id, nor what is not a scalar
    assert second.fields == {"audio": None, "text": None, "reverb": True}  # the keys not used for audio/text
    (tmp_path / "m.csv").write_text("audio,text,Speaker\n1.wav,a b,bob\n", encoding="utf-8")
    (item,) = read_manifest(tmp_path / "m.csv")
    assert item.fields == {"speaker": "bob"}


def test_group_by_specs_and_keys() -> None:
    from w2vlm.eval import GroupBy

    assert GroupBy.parse("speaker") == GroupBy("speaker")
    assert GroupBy.parse("snr_db:10") == GroupBy("snr_db", 10.0) and str(GroupBy("snr_db", 10.0)) == "snr_db:10"
    for bad, message in (("", "expected FIELD"), ("x:0", "'0' is not a positive"), ("x:abc", "'abc' is not")):
        with pytest.raises(ManifestError, match=message):
            GroupBy.parse(bad)
    binned = GroupBy("snr", 10.0)
    assert binned.key({"snr": 12.5}, "u") == (0, 10.0, "10-20")
    assert binned.key({"snr": "-3"}, "u") == (0, -10.0, "-10-0")  # CSV text that is a number
    assert binned.key({}, "u") == (2, 0.0, "(none)")
    with pytest.raises(ManifestError, match=r"--by snr:10: utterance u7 has snr='loud', not a number"):
        binned.key({"snr": "loud"}, "u7")
    plain = GroupBy("g")
    keys = [plain.key({"g": v}, "u") for v in ("b", 2, 0.5, None, "a")]
    assert [k[2] for k in sorted(keys)] == ["0.5", "2", "a", "b", "(none)"]


def test_directory_manifest_with_missing_reference(tmp_path: Path) -> None:
    _noise_wav(tmp_path / "a.wav", 0.5, 0)
    (tmp_path / "a.txt").write_text("  hello\n world \n", encoding="utf-8")
    (tmp_path / "deep").mkdir()
    _noise_wav(tmp_path / "deep" / "b.wav", 0.5, 1)
    (tmp_path / "notes.md").write_text("not audio")
    items = read_manifest(tmp_path)
    assert [i.id for i in items] == ["a.wav", "deep/b.wav"]
    assert items[0].reference == "hello world" and items[0].error is None
    assert "b.txt" in str(items[1].error)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.jsonl", '{"audio": "a.wav", "text": "x"}\n{not json\n', "m.jsonl:2: not valid JSON"),
        ("m.jsonl", '{"audio": "a.wav"}\n', "no reference text"),
        ("m.jsonl", '{"text": "x"}\n', "no audio path"),
        ("m.jsonl", '["a.wav", "x"]\n', "expected a JSON object"),
        ("m.jsonl", "\n\n", "lists no utterances"),
        ("m.csv", "name,words\na.wav,x\n", "needs an audio column"),
        ("m.csv", "audio,text\n,x\n", "is empty"),
    ],
)
def test_malformed_manifests(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / name)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        read_manifest(tmp_path / "empty")


# -------------------------------------------------------------------------------------------------- scoring


def test_normalize_text() -> None:
    assert normalize_text("Hello, World!  It's 'quoted'.") == "hello world it's quoted"
    assert normalize_text("Don’t STOP — now") == "don't stop now"
    assert normalize_text("a_b") == "a b"
    assert normalize_text("   ") == ""
    assert normalize_text("ca⁇ sat") == "ca⁇ sat"


def test_error_counts_against_jiwer() -> None:
    refs = ["the cat sat on the mat", "hello world", "a b c d"]
    hyps = ["the bat sat on mat now", "hello world", "a x c"]
    words, chars = corpus_errors(refs, hyps)
    assert words.rate == pytest.approx(jiwer.wer(refs, hyps))
    assert chars.rate == pytest.approx(jiwer.cer(refs, hyps))
    w = word_errors("the cat sat on the mat", "the bat sat on mat")
    assert (w.substitutions, w.deletions, w.insertions, w.hits) == (1, 1, 0, 4)
    assert w.reference_length == 6 and w.errors == 2
    w = word_errors("a b", "a x b")
    assert (w.substitutions, w.deletions, w.insertions, w.hits) == (0, 0, 1, 2)


def test_empty_texts() -> None:
    assert word_errors("", "") == ErrorCounts()
    assert word_errors("", "a b").insertions == 2
    assert word_errors("a b c", "").deletions == 3
    assert char_errors("ab", "").deletions == 2
    assert ErrorCounts(insertions=2).rate == 2.0
    assert ErrorCounts().rate == 0.0


# ------------------------------------------------------------------------------------------------ greedy


def _one_hot(ids: list[int], vocab: int) -> np.ndarray:
    x = np.full((len(ids), vocab), -10.0, np.float32)
    x[np.arange(len(ids)), ids] = 5.0
    return x


def test_greedy_decode_collapses_repeats_and_blanks() -> None:
    labels = ["", "<s>", " ", "a", "b", "l", "⁇"]
    # a a _ b b ' ' ' ' l _ l <s> ⁇
    ids = [3, 3, 0, 4, 4, 2, 2, 5, 0, 5, 1, 6]
    assert greedy_decode(_one_hot(ids, len(labels)), labels) == "ab ll⁇"
    assert greedy_decode(np.zeros((0, len(labels)), np.float32), labels) == ""
    # leading/trailing/multiple delimiters collapse
    assert greedy_decode(_one_hot([2, 3, 2, 0, 2, 4, 2], len(labels)), labels) == "a b"


def test_greedy_decode_bpe() -> None:
    labels = ["", "▁the", "▁ca", "t", "s"]
    assert greedy_decode(_one_hot([1, 0, 2, 3, 3, 0, 4], len(labels)), labels, is_bpe=True) == "the cats"


# --------------------------------------------------------------------------------------------- logits cache


def test_logits_cache_round_trip_and_corruption(tmp_path: Path) -> None:
    cache = LogitsCache(tmp_path, "k" * 64)
    assert cache.get("ab" * 32) is None
    logits = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    cache.put("ab" * 32, logits, 1.25)
    got, duration = cache.get("ab" * 32)  # type: ignore[misc]
    np.testing.assert_array_equal(got, logits)
    assert duration == 1.25
    assert not list(tmp_path.rglob("*.tmp"))
    # another model key in the same folder prefix does not see it
    assert LogitsCache(tmp_path, "k" * 24 + "x" * 40).get("ab" * 32) is None
    entry = next(tmp_path.rglob("*.npz"))
    entry.write_bytes(b"garbage")
    assert cache.get("ab" * 32) is None


def test_model_cache_key_follows_weights_and_settings(tiny_ctc_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_ctc_dir, copy)
    key = model_cache_key(tiny_ctc_dir)
    assert model_cache_key(copy) == key  # content, not location
    assert model_cache_key(copy, quantize="int8") != key
    assert model_cache_key(copy, chunk_length_s=10.0) != key
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_cache_key(copy) != key


# ----------------------------------------------------------------------------------- evaluate (tiny model)


@pytest.fixture
def eval_set(tmp_path: Path) -> dict[str, Path]:
    """Four readable files, one corrupt, one empty, one missing."""
    data = tmp_path / "data"
    (data / "wav").mkdir(parents=True)
    lines = []
    for i in range(4):
        _noise_wav(data / "wav" / f"{i}.wav", 1.0 + 0.4 * i, seed=i)
        lines.append({"audio": f"wav/{i}.wav", "text": ["The cat sat.", "hello world", "a dog", "the mat"][i]})
    (data / "wav" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    (data / "wav" / "empty.wav").write_bytes(b"")
    lines += [
        {"audio": "wav/corrupt.wav", "text": "x"},
        {"audio": "wav/empty.wav", "text": "y"},
        {"audio": "wav/missing.wav", "text": "z"},
    ]
    manifest = data / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    good = data / "good.jsonl"
    good.write_text("\n".join(json.dumps(x) for x in lines[:4]), encoding="utf-8")
    return {"manifest": manifest, "good": good, "cache": tmp_path / "cache", "data": data}


def test_evaluate_records_failures_and_matches_pipeline(tiny_ctc_dir: Path, eval_set: dict[str, Path]) -> None:
    from w2vlm.eval import evaluate
    from w2vlm.logits_cache import AcousticSettings
    from w2vlm.pipeline import pipeline
    from w2vlm.processor_parts import load_tokenizer

    report = evaluate(
        eval_set["manifest"], tiny_ctc_dir, cache_dir=eval_set["cache"], acoustic=AcousticSettings(device="cpu")
    )
    assert report.systems == ["greedy", "lm"]
    by_id = {u.id: u for u in report.utterances}
    assert len(by_id) == 7
    failed = {u.id: u.error for u in report.failed}
    assert set(failed) == {"wav/corrupt.wav", "wav/empty.wav", "wav/missing.wav"}
    assert "AudioError" in failed["wav/corrupt.wav"]
    assert "empty" in failed["wav/empty.wav"]
    assert "no such audio file" in failed["wav/missing.wav"]
    assert all(not by_id[i].hypotheses for i in failed)

    # LM transcripts are what the pipeline produces; greedy what the tokenizer decodes from the argmax
    asr = pipeline(model=str(tiny_ctc_dir), device="cpu")
    tokenizer = load_tokenizer(tiny_ctc_dir)
    for i in range(4):
        u = by_id[f"wav/{i}.wav"]
        path = eval_set["data"] / "wav" / f"{i}.wav"
        assert u.hypotheses["lm"].text == asr(str(path))["text"]
        (logits,) = asr.compute_logits([str(path)])
        expected = tokenizer.decode(logits.argmax(-1).tolist())
        for special in ("<s>", "</s>", "<unk>"):  # w2vlm drops <s>/</s> and writes <unk> as ⁇
            expected = expected.replace(special, "")
        assert normalize_text(u.hypotheses["greedy"].text.replace("⁇", "")) == normalize_text(expected)
        assert u.duration_s == pytest.approx(1.0 + 0.4 * i)
        assert not u.cached

    # corpus figures equal jiwer on the normalized texts of the scored utterances
    scored = [by_id[f"wav/{i}.wav"] for i in range(4)]
    refs = [normalize_text(u.reference) for u in scored]
    for system in ("greedy", "lm"):
        hyps = [normalize_text(u.hypotheses[system].text) for u in scored]
        assert report.wer(system) == pytest.approx(jiwer.wer(refs, hyps))
        assert report.cer(system) == pytest.approx(jiwer.cer(refs, hyps))

    data = report.to_dict()
    json.dumps(data)  # serialisable
    assert data["num_failed"] == 3 and data["num_scored"] == 4
    assert data["rtf"]["acoustic"] > 0 and data["rtf"]["lm"] > 0
    assert data["decode_settings"]["alpha"] == 0.5 and data["decode_settings"]["beam_width"] == 100
    assert data["utterances"][0]["lm"]["word_errors"]["reference_length"] == 3


def test_breakdown_by_manifest_field_adds_up_to_the_totals(tiny_ctc_dir: Path, eval_set: dict[str, Path]) -> None:
    from w2vlm.eval import evaluate
    from w2vlm.logits_cache import AcousticSettings

    lines = [json.loads(x) for x in eval_set["manifest"].read_text(encoding="utf-8").splitlines()]
    for i, rec in enumerate(lines):
        rec["speaker"] = "ab"[i % 2]
        if i != 3:
            rec["snr"] = 7.5 * i
    manifest = eval_set["data"] / "fields.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    report = evaluate(
        manifest,
        tiny_ctc_dir,
        cache_dir=eval_set["cache"],
        acoustic=AcousticSettings(device="cpu"),
        group_by=["speaker", "snr:10"],
    )
    by_speaker = report.breakdown("speaker")
    assert [(g.label, g.utterances) for g in by_speaker] == [("a", 2), ("b", 2)]  # failed ones not counted
    for system in report.systems:
        for kind in ("words", "chars"):
            summed = ErrorCounts()
            for g in by_speaker:
                summed = summed + g.totals[system][kind]
            assert summed == report.totals[system][kind]
    # utterances 0-2 at snr 0, 7.5, 15 (0-10, 0-10, 10-20); utterance 3 has none
    assert [(g.label, g.utterances) for g in report.breakdown("snr:10")] == [("0-10", 2), ("10-20", 1), ("(none)", 1)]
    data = report.to_dict()
    assert list(data["breakdown"]) == ["speaker", "snr:10"]
    first = data["breakdown"]["speaker"][0]
    assert first["value"] == "a" and first["utterances"] == 2 and set(first) >= {"greedy", "lm"}
    assert data["utterances"][0]["fields"] == {"speaker": "a", "snr": 0.0}

    with pytest.raises(ManifestError, match=r"--by spk: no utterance of .*fields\.jsonl has a field 'spk' \(fields: "):
        evaluate(manifest, tiny_ctc_dir, cache_dir=eval_set["cache"], group_by=["spk"])
    with pytest.raises(ManifestError, match=r"--by speaker:5: utterance wav/0\.wav has speaker='a', not a number"):
        evaluate(manifest, tiny_ctc_dir, cache_dir=eval_set["cache"], group_by=["speaker:5"])


def test_cached_logits_skip_the_acoustic_model(tiny_ctc_dir: Path, eval_set: dict[str, Path], monkeypatch) -> None:
    from w2vlm import logits_cache as eval_module
    from w2vlm.engine.config import DecodeConfig
    from w2vlm.eval import evaluate
    from w2vlm.logits_cache import AcousticSettings, collect_logits
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    kwargs = dict(cache_dir=eval_set["cache"], acoustic=AcousticSettings(device="cpu"))
    first = evaluate(eval_set["good"], tiny_ctc_dir, **kwargs)  # type: ignore[arg-type]
    assert "model_load" in first.timings

    def no_model(self):  # the model must not be loaded again
        raise AssertionError("the acoustic model was loaded although all logits are cached")

    monkeypatch.setattr(eval_module._LazyRunner, "get", no_model)
    second = evaluate(eval_set["good"], tiny_ctc_dir, **kwargs)  # type: ignore[arg-type]
    assert all(u.cached for u in second.utterances)
    assert second.rtf["acoustic"] is None
    for a, b in zip(first.utterances, second.utterances, strict=True):
        assert a.hypotheses["lm"].text == b.hypotheses["lm"].text
        assert a.duration_s == pytest.approx(b.duration_s)
    # other decoding settings on the cached logits: a very high LM weight changes the transcripts' scoring
    third = evaluate(
        eval_set["good"],
        tiny_ctc_dir,
        decode=DecodeConfig(alpha=3.0, beta=0.0, beam_width=16),
        **kwargs,  # type: ignore[arg-type]
    )
    assert third.decode_settings["alpha"] == 3.0 and third.decode_settings["beam_width"] == 16
    cached = collect_logits(read_manifest(eval_set["good"]), tiny_ctc_dir, cache_dir=eval_set["cache"])
    processor = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir)
    beams = processor.decode_beams_batch([c.logits for c in cached], alpha=3.0, beta=0.0, beam_width=16)
    assert [u.hypotheses["lm"].text for u in third.utterances] == [b[0][0] for b in beams]
    # the commands' default dtype ("auto": float32 on a CPU) and an explicit float32 find the same entries
    for dtype in ("auto", "float32"):
        again = evaluate(eval_set["good"], tiny_ctc_dir, cache_dir=eval_set["cache"],
                         acoustic=AcousticSettings(device="cpu", dtype=dtype))  # fmt: skip
        assert all(u.cached for u in again.utterances)
    # without the cache the model is needed again (here: each utterance records the failure)
    fourth = evaluate(eval_set["good"], tiny_ctc_dir, use_cache=False, acoustic=AcousticSettings(device="cpu"))
    assert all("was loaded" in str(u.error) for u in fourth.utterances)


def test_evaluate_without_lm_and_with_external_lm(tiny_ctc_dir: Path, eval_set: dict[str, Path], tmp_path) -> None:
    from conftest import write_arpa
    from w2vlm.eval import evaluate
    from w2vlm.logits_cache import AcousticSettings

    kwargs = dict(cache_dir=eval_set["cache"], acoustic=AcousticSettings(device="cpu"))
    greedy_only = evaluate(eval_set["good"], tiny_ctc_dir, use_lm=False, **kwargs)  # type: ignore[arg-type]
    assert greedy_only.systems == ["greedy"] and greedy_only.lm is None
    arpa = write_arpa(tmp_path / "other.arpa", ["zebra quagga", "quagga zebra zebra"], order=2)
    external = evaluate(eval_set["good"], tiny_ctc_dir, lm=arpa, **kwargs)  # type: ignore[arg-type]
    assert external.lm == str(arpa)
    # the same as decoding the model's logits with a decoder built on that ARPA file
    from w2vlm.decoder import build_ctcdecoder
    from w2vlm.pipeline import pipeline

    asr = pipeline(model=str(tiny_ctc_dir), device="cpu")
    labels = asr.decoder.alphabet.labels
    decoder = build_ctcdecoder(labels, kenlm_model_path=str(arpa))
    for u in external.utterances:
        (logits,) = asr.compute_logits([u.audio])
        assert u.hypotheses["lm"].text == decoder.decode_beams(logits)[0].text


def test_cli_eval(tiny_ctc_dir: Path, eval_set: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from w2vlm.cli import app

    runner = CliRunner()
    out = tmp_path / ("a-long-folder-name-" * 4) / "report.json"  # longer than the 80 columns of a pipe
    common = ["--model", str(tiny_ctc_dir), "--cache-dir", str(eval_set["cache"]), "--device", "cpu"]
    result = runner.invoke(app, ["eval", str(eval_set["manifest"]), *common, "--output", str(out), "--show", "2"])
    assert result.exit_code == 1, result.output
    assert "3 of 7 utterances failed" in result.output
    assert "beam + LM" in result.output
    # piped (CliRunner is no terminal): lines are not broken inside the output path or the shown texts
    assert f"wrote {out}" in result.stdout.splitlines()
    assert not [line for line in result.stdout.splitlines() if "RTF" not in line and "0.0000" in line]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["num_failed"] == 3
    assert {u["id"] for u in report["utterances"] if u["error"]} == {
        "wav/corrupt.wav",
        "wav/empty.wav",
        "wav/missing.wav",
    }
    result = runner.invoke(app, ["eval", str(eval_set["good"]), *common, "--no-lm", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(tmp_path / "nope.jsonl"), *common])
    assert result.exit_code == 1 and "manifest not found" in result.output

    lines = [json.loads(x) for x in eval_set["good"].read_text(encoding="utf-8").splitlines()]
    for i, rec in enumerate(lines):
        rec["voice"] = f"v{i % 2}"
    with_fields = eval_set["data"] / "voices.jsonl"
    with_fields.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    result = runner.invoke(app, ["eval", str(with_fields), *common, "--by", "voice", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "by voice" in result.output and "v0" in result.output and "v1" in result.output
    assert [g["value"] for g in json.loads(out.read_text(encoding="utf-8"))["breakdown"]["voice"]] == ["v0", "v1"]
    result = runner.invoke(app, ["eval", str(with_fields), *common, "--by", "speaker"])
    assert result.exit_code == 1
    assert "--by speaker: no utterance of" in result.output and "(fields: voice)" in result.output


def test_logits_dtype_keys_the_dtype_the_model_runs_in() -> None:
    from w2vlm.logits_cache import AcousticSettings, logits_dtype

    assert logits_dtype(AcousticSettings(device="cpu")) is None
    assert logits_dtype(AcousticSettings(device="cpu", dtype="auto")) is None  # float32 on a CPU
    assert logits_dtype(AcousticSettings(device="cpu", dtype="float32")) is None
    assert logits_dtype(AcousticSettings(device="cpu", dtype="bfloat16")) == "bfloat16"
    assert logits_dtype(AcousticSettings(device="cpu", dtype="auto", quantize="int8")) is None


@pytest.mark.parametrize("command", ["transcribe", "eval", "tune", "visualize", "serve", "add-lm"])
def test_every_command_that_loads_a_model_takes_dtype_and_quantize(command: str) -> None:
    """The same --dtype (auto by default) and --quantize on every command that runs a model."""
    from typer.testing import CliRunner

    from w2vlm.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--dtype" in result.output and "--quantize" in result.output
    assert "auto: bfloat16 (or float16) on CUDA, float32 on a CPU" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "args",
    [
        ["transcribe", "x"],
        ["eval", "x"],
        ["tune", "x"],
        ["visualize", "x.wav"],
        ["serve"],
        ["add-lm", "m", "t", "-o", "o"],
    ],
)
def test_dtype_and_quantize_values_are_checked_alike_before_any_work(args: list[str]) -> None:
    from typer.testing import CliRunner

    from w2vlm.cli import app

    for option, value in (("--dtype", "fp32"), ("--quantize", "int4")):
        result = CliRunner().invoke(app, [*args, option, value])
        assert result.exit_code == 2, result.output
        assert "expected one of" in result.output and value in result.output


def test_add_lm_refuses_dtype_and_quantize_without_dev() -> None:
    from typer.testing import CliRunner

    from w2vlm.cli import app

    for extra in (["--dtype", "bfloat16"], ["--quantize", "int8"]):
        result = CliRunner().invoke(app, ["add-lm", "m", "t", "-o", "o", *extra])
        assert result.exit_code == 2 and "give --dev too" in result.output


def test_an_audio_file_given_as_the_manifest_is_named(tmp_path: Path) -> None:
    from w2vlm.errors import ManifestError
    from w2vlm.manifest import read_manifest

    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    with pytest.raises(ManifestError, match=r"clip\.wav: an audio file, not a manifest"):
        read_manifest(clip)
