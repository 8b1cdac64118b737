"""``w2vlm tune``: search spaces, the search on cached logits, attrs.json writing, the plot, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import CHAR_VOCAB, LM_SENTENCES, write_arpa, write_audio_file
from w2vlm.errors import LanguageModelError, W2vlmError
from w2vlm.tune import Setting, Trial, TuneReport, grid_settings, parse_values, random_settings, search, write_attrs

jiwer = pytest.importorskip("jiwer")

LABELS = ["" if t == "<pad>" else " " if t == "|" else "⁇" if t == "<unk>" else t for t in CHAR_VOCAB]
# what the acoustic model hears instead: each pair (right, wrong) makes "wrong" win greedy decoding
CONFUSIONS = {"c": "k", "a": "e", "o": "u", "t": "d"}


def _confusable_logits(text: str, rng: np.random.Generator, confuse_every: int = 3) -> np.ndarray:
    """Logits spelling ``text`` (2 frames a character + a blank) where every ``confuse_every``-th confusable
    character is heard slightly more as its confusion than as itself."""
    idx = {lab: i for i, lab in enumerate(LABELS)}
    rows = []
    seen = 0
    for ch in text:
        wrong = None
        if ch in CONFUSIONS:
            seen += 1
            if seen % confuse_every == 0:
                wrong = CONFUSIONS[ch]
        for tok in (ch, ch, ""):
            row = rng.normal(0.0, 0.3, len(LABELS))
            if wrong is not None and tok:
                row[idx[wrong]] += 6.0
                row[idx[tok]] += 5.6
            else:
                row[idx[tok]] += 6.0
            rows.append(row)
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture(scope="module")
def confusable(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from w2vlm.decoder import build_ctcdecoder

    folder = tmp_path_factory.mktemp("tune_lm")
    arpa = write_arpa(folder / "lm.arpa", LM_SENTENCES, order=2)
    words = sorted({w for s in LM_SENTENCES for w in s.split()})
    rng = np.random.default_rng(0)
    texts = LM_SENTENCES * 2
    logits = [_confusable_logits(t, rng, confuse_every=2 + i % 2) for i, t in enumerate(texts)]
    decoder = build_ctcdecoder(LABELS, str(arpa), words)
    return {"arpa": arpa, "words": words, "texts": texts, "logits": logits, "decoder": decoder}


# --------------------------------------------------------------------------------------------------- spaces


def test_parse_values() -> None:
    assert parse_values("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_values("0:0.3:0.1") == [0.0, 0.1, 0.2, 0.3]
    assert parse_values("-2:-1:0.5") == [-2.0, -1.5, -1.0]
    assert parse_values("0.5, 1,2") == [0.5, 1.0, 2.0]
    assert parse_values("3") == [3.0]
    assert parse_values(1.5) == [1.5]
    assert parse_values([1, 2]) == [1.0, 2.0]
    for bad in ("1:0:0.5", "0:1:0", "0:1", "a,b", "", "nan"):
        with pytest.raises(W2vlmError):
            parse_values(bad, "alpha")


def test_searches_larger_than_the_limits_are_refused_before_building_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A range with a typo for a step ("0:1000000:0.001") once built a billion-value list (GBs, minutes) before
    anything looked at it."""
    import w2vlm.limits

    with pytest.raises(W2vlmError, match=r"alpha: '0:1000000:0.001' gives 1,000,000,001 values; at most 100,000"):
        parse_values("0:1000000:0.001", "alpha")
    values = parse_values("0:9.99:0.01")  # 1,000 a side: a million settings
    with pytest.raises(W2vlmError, match=r"1,000 \(alpha\) x 1,000 \(beta\) = 1,000,000 settings; at most 10,000"):
        grid_settings(values, values)
    for count in (0, 10_001):
        with pytest.raises(W2vlmError, match="between 1 and 10,000"):
            random_settings(count, [0.0, 1.0], [0.0, 1.0])
    monkeypatch.setattr(w2vlm.limits, "MAX_TUNE_SETTINGS", 1_000_000)
    assert len(grid_settings(values, values)) == 1_000_000


def test_grid_and_random_settings() -> None:
    grid = grid_settings([0.0, 0.5], [1.0, 2.0, 3.0], [50, 100], [-10.0])
    assert len(grid) == 12 and len(set(grid)) == 12
    assert Setting(0.5, 3.0, 50, -10.0) in grid
    rand = random_settings(50, [0.0, 2.0], [-1.0, 4.0], [32, 64], [-12.0, -8.0], seed=3)
    assert len(rand) == 50
    assert all(0 <= s.alpha <= 2 and -1 <= s.beta <= 4 and s.beam_width in (32, 64) for s in rand)
    assert all(-12 <= s.unk_score_offset <= -8 for s in rand)
    assert rand == random_settings(50, [0.0, 2.0], [-1.0, 4.0], [32, 64], [-12.0, -8.0], seed=3)
    assert rand != random_settings(50, [0.0, 2.0], [-1.0, 4.0], [32, 64], [-12.0, -8.0], seed=4)
    assert {s.unk_score_offset for s in random_settings(5, [0, 1], [0, 1], [8], [-10.0])} == {-10.0}
    with pytest.raises(W2vlmError):
        random_settings(0, [0.0], [0.0])


# --------------------------------------------------------------------------------------------------- search


def test_search_scores_equal_independent_decoding(confusable: dict) -> None:
    from w2vlm.decoder import build_ctcdecoder
    from w2vlm.metrics import normalize_text

    settings = grid_settings([0.0, 0.5, 1.5], [0.0, 2.0], [16], [-10.0])
    trials = search(confusable["decoder"], confusable["logits"], confusable["texts"], settings, num_threads=2)
    assert [t.setting for t in trials] == settings
    for trial in trials[::2]:
        s = trial.setting
        fresh = build_ctcdecoder(
            LABELS, str(confusable["arpa"]), confusable["words"], alpha=s.alpha, beta=s.beta, unk_score_offset=-10.0
        )
        hyps = [fresh.decode_beams(x, beam_width=s.beam_width)[0].text for x in confusable["logits"]]
        refs = [normalize_text(t) for t in confusable["texts"]]
        assert trial.wer == pytest.approx(jiwer.wer(refs, [normalize_text(h) for h in hyps]))
        assert trial.cer == pytest.approx(jiwer.cer(refs, [normalize_text(h) for h in hyps]))
    # the LM repairs the confusions the acoustics got wrong: some alpha > 0 beats alpha = 0
    by_setting = {t.setting: t for t in trials}
    no_lm = min(by_setting[s].wer for s in settings if s.alpha == 0.0)
    assert no_lm > 0.2
    assert min(t.wer for t in trials if t.setting.alpha > 0) < no_lm / 2


def test_search_is_thread_count_independent(confusable: dict) -> None:
    settings = random_settings(6, [0.0, 2.0], [-1.0, 3.0], [8, 32], [-10.0], seed=1)
    one = search(confusable["decoder"], confusable["logits"], confusable["texts"], settings, num_threads=1)
    two = search(confusable["decoder"], confusable["logits"], confusable["texts"], settings, num_threads=2)
    assert [(t.word_errors, t.char_errors) for t in one] == [(t.word_errors, t.char_errors) for t in two]


def test_search_needs_an_lm() -> None:
    from w2vlm.decoder import build_ctcdecoder

    with pytest.raises(LanguageModelError):
        search(build_ctcdecoder(LABELS), [np.zeros((3, len(LABELS)), np.float32)], ["a"], [Setting(0.5, 1.0)])


# ----------------------------------------------------------------------------------------------- attrs.json


def test_write_attrs(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "language_model").mkdir(parents=True)
    (model / "language_model" / "lm.arpa").write_text("x")
    attrs = model / "language_model" / "attrs.json"
    attrs.write_text(json.dumps({"alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": False}))
    write_attrs(model, Setting(0.75, 2.5, 64, -7.0), include_unk=False)
    assert json.loads(attrs.read_text()) == {
        "alpha": 0.75,
        "beta": 2.5,
        "unk_score_offset": -10.0,
        "score_boundary": False,
    }
    write_attrs(model / "language_model", Setting(1.0, 0.0, 64, -7.0))  # the language_model/ folder itself
    assert json.loads(attrs.read_text())["unk_score_offset"] == -7.0
    assert sorted(p.name for p in attrs.parent.iterdir()) == ["attrs.json", "lm.arpa"]
    attrs.unlink()
    write_attrs(model, Setting(0.25, 1.0))
    assert json.loads(attrs.read_text()) == {
        "alpha": 0.25,
        "beta": 1.0,
        "unk_score_offset": -10.0,
        "score_boundary": True,
    }
    with pytest.raises(LanguageModelError, match="no language_model"):
        write_attrs(tmp_path, Setting(1.0, 1.0))
    with pytest.raises(LanguageModelError, match="no such folder"):
        write_attrs(tmp_path / "nope", Setting(1.0, 1.0))
    attrs.write_text("{broken")
    with pytest.raises(LanguageModelError, match="not valid JSON"):
        write_attrs(model, Setting(1.0, 1.0))


# ------------------------------------------------------------------------------------------------------ plot


def _report(trials: list[Trial], kind: str) -> TuneReport:
    best = min(trials, key=lambda t: t.word_errors)
    return TuneReport("m.jsonl", "model", None, kind, trials, trials[0], best, 0.5, 0.2, 10)


@pytest.mark.parametrize("kind", ["grid", "random"])
def test_plot_wer(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("matplotlib")
    from w2vlm.tune import plot_wer

    rng = np.random.default_rng(0)
    settings = (
        grid_settings([0.0, 0.5, 1.0], [0.0, 1.0, 2.0, 3.0])
        if kind == "grid"
        else random_settings(20, [0, 2], [0, 4], seed=0)
    )
    trials = [Trial(s, float(rng.uniform(0.1, 0.5)), 0.1, int(rng.integers(1, 50)), 5, 0.1) for s in settings]
    out = plot_wer(_report(trials, kind), tmp_path / "plots" / "wer.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in out.parent.iterdir()] == ["wer.png"]


# ------------------------------------------------------------------------------------- tune on a real model


@pytest.fixture
def tune_set(tmp_path: Path) -> dict[str, Path]:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(7)
    lines = []
    for i in range(3):
        audio = (0.2 * rng.standard_normal(16000 + 8000 * i)).astype(np.float32)
        write_audio_file(data / f"{i}.wav", audio, 16000)
        lines.append({"audio": f"{i}.wav", "text": LM_SENTENCES[i]})
    (data / "broken.wav").write_bytes(b"\x00\x01" * 500)
    with_bad = [*lines, {"audio": "broken.wav", "text": "a"}, {"audio": "gone.wav", "text": "b"}]
    (data / "all.jsonl").write_text("\n".join(json.dumps(x) for x in with_bad), encoding="utf-8")
    (data / "good.csv").write_text(
        "audio,text\n" + "".join(f"{x['audio']},{x['text']}\n" for x in lines), encoding="utf-8"
    )
    return {"all": data / "all.jsonl", "good": data / "good.csv", "cache": tmp_path / "cache"}


def test_tune_on_model(tiny_ctc_dir: Path, tune_set: dict[str, Path]) -> None:
    from w2vlm.engine.config import DecodeConfig
    from w2vlm.eval import evaluate
    from w2vlm.logits_cache import AcousticSettings
    from w2vlm.tune import tune

    common = dict(cache_dir=tune_set["cache"], acoustic=AcousticSettings(device="cpu"))
    report = tune(tune_set["all"], tiny_ctc_dir, alphas="0,1", betas="0:2:1", beam_widths=[8], **common)  # type: ignore[arg-type]
    assert report.num_utterances == 3
    assert {f["id"] for f in report.failed} == {"broken.wav", "gone.wav"}
    # the LM's own setting (attrs.json: 0.5, 1.5) is always tried, so the best is never worse than it
    assert report.baseline.setting == Setting(0.5, 1.5, 8, -10.0)
    assert len(report.trials) == 7
    assert report.best.wer <= report.baseline.wer
    assert report.best.word_errors == min(t.word_errors for t in report.trials)
    # each trial's WER is what `eval` measures with that setting
    for trial in report.trials[:3]:
        s = trial.setting
        ev = evaluate(
            tune_set["good"],
            tiny_ctc_dir,
            decode=DecodeConfig(beam_width=s.beam_width, alpha=s.alpha, beta=s.beta),
            **common,  # type: ignore[arg-type]
        )
        assert ev.wer("lm") == pytest.approx(trial.wer)
        assert ev.wer("greedy") == pytest.approx(report.greedy_wer)
    data = report.to_dict()
    json.dumps(data)
    assert data["trials"][0]["wer"] == report.best.wer and data["num_failed"] == 2


def test_tune_random_search(tiny_ctc_dir: Path, tune_set: dict[str, Path]) -> None:
    from w2vlm.logits_cache import AcousticSettings
    from w2vlm.tune import tune

    report = tune(
        tune_set["good"],
        tiny_ctc_dir,
        alphas="0:2:1",
        betas="-1,3",
        beam_widths=[4, 8],
        unk_score_offsets="-12:-6:1",
        num_random=5,
        cache_dir=tune_set["cache"],
        acoustic=AcousticSettings(device="cpu"),
    )
    assert report.search == "random" and len(report.trials) == 6  # 5 drawn + the current setting
    drawn = [t.setting for t in report.trials if t is not report.baseline]
    assert all(0 <= s.alpha <= 2 and -1 <= s.beta <= 3 and -12 <= s.unk_score_offset <= -6 for s in drawn)


def test_tune_without_lm(tiny_ctc_factory, tune_set: dict[str, Path]) -> None:
    from w2vlm.tune import tune

    folder = tiny_ctc_factory("nolm", with_lm=False)
    with pytest.raises(LanguageModelError, match="no language model"):
        tune(tune_set["good"], folder, cache_dir=tune_set["cache"])


def test_cli_tune(tiny_ctc_dir: Path, tune_set: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from w2vlm.cli import app
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    model = tmp_path / "model"
    shutil.copytree(tiny_ctc_dir, model)
    runner = CliRunner()
    out, plot = tmp_path / "tune.json", tmp_path / "wer.png"
    args = ["--model", str(model), "--cache-dir", str(tune_set["cache"]), "--device", "cpu", "--beam-width", "8"]
    args += ["--alpha", "0:1.5:0.5", "--beta", "0,1,2"]
    result = runner.invoke(
        app, ["tune", str(tune_set["all"]), *args, "-o", str(out), "--plot", str(plot), "--write-attrs", str(model)]
    )
    assert result.exit_code == 1, result.output  # two files failed; the others were used
    assert "2 utterances failed" in result.output and "best: alpha=" in result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    best = report["best"]
    assert report["num_failed"] == 2 and len(report["trials"]) == 13
    attrs = json.loads((model / "language_model" / "attrs.json").read_text())
    assert (attrs["alpha"], attrs["beta"]) == (best["alpha"], best["beta"])
    assert attrs["unk_score_offset"] == -10.0 and attrs["score_boundary"] is True
    assert Wav2Vec2ProcessorWithLM.from_pretrained(model).decoder.language_model.alpha == best["alpha"]
    assert plot.read_bytes()[:4] == b"\x89PNG"

    result = runner.invoke(app, ["tune", str(tune_set["good"]), *args, "--quiet", "--heldout", str(tune_set["good"])])
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output and "with the best" in result.output
    result = runner.invoke(app, ["tune", str(tune_set["good"]), *args[:-4], "--alpha", "2:1:0.5"])
    assert result.exit_code == 1 and "start <= stop" in result.output


def test_tune_scores_heldout_set(tiny_ctc_dir: Path, tune_set: dict[str, Path]) -> None:
    from w2vlm.engine.config import DecodeConfig
    from w2vlm.eval import evaluate
    from w2vlm.logits_cache import AcousticSettings
    from w2vlm.tune import tune

    common = dict(cache_dir=tune_set["cache"], acoustic=AcousticSettings(device="cpu"))
    report = tune(
        tune_set["good"],
        tiny_ctc_dir,
        alphas="0,2",
        betas="0,3",
        beam_widths=[8],
        heldout=tune_set["all"],
        **common,  # type: ignore[arg-type]
    )
    held = report.heldout
    assert held is not None and held["num_utterances"] == 3 and held["num_failed"] == 2
    assert {(f["set"], f["id"]) for f in report.failed} == {("heldout", "broken.wav"), ("heldout", "gone.wav")}
    for key, trial in (("current", report.baseline), ("best", report.best)):
        s = trial.setting
        assert (held[key]["alpha"], held[key]["beta"]) == (s.alpha, s.beta)
        ev = evaluate(
            tune_set["all"],
            tiny_ctc_dir,
            decode=DecodeConfig(beam_width=s.beam_width, alpha=s.alpha, beta=s.beta),
            **common,  # type: ignore[arg-type]
        )
        assert held[key]["wer"] == pytest.approx(ev.wer("lm"))
        assert held["greedy"]["wer"] == pytest.approx(ev.wer("greedy"))
