"""Tests of the real-speech and extra-voices parts of the embedded-model recipe (issue 34)."""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "embedded"
sys.path.insert(0, str(RECIPE))

pytest.importorskip("scipy")
import kit  # noqa: E402
import real_speech  # noqa: E402
import voices  # noqa: E402


def _wav(path: Path, seconds: float = 0.3, sr: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (np.sin(np.arange(int(seconds * sr)) * 0.05) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(x.tobytes())
    return path


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_fsdd_split_keeps_takes_0_to_4_for_dev(tmp_path: Path) -> None:
    for name in ("3_jackson_0.wav", "3_jackson_4.wav", "3_jackson_5.wav", "7_theo_49.wav", "notes.wav"):
        _wav(tmp_path / name)
    train, dev, unseen = real_speech.fsdd_manifests(tmp_path)
    assert sorted(r["id"] for r in dev) == ["fsdd/3_jackson_0", "fsdd/3_jackson_4"]
    assert sorted((r["id"], r["text"]) for r in train) == [("fsdd/3_jackson_5", "three"), ("fsdd/7_theo_49", "seven")]
    assert real_speech.fsdd_split("0_george_12.wav") == ("zero", "george", 12)
    assert unseen == []


def test_fsdd_unseen_speakers_are_held_out_entirely(tmp_path: Path) -> None:
    for name in ("3_jackson_0.wav", "3_jackson_5.wav", "7_theo_0.wav", "7_theo_49.wav"):
        _wav(tmp_path / name)
    train, dev, unseen = real_speech.fsdd_manifests(tmp_path, {"theo"})
    assert [r["id"] for r in train] == ["fsdd/3_jackson_5"]
    assert [r["id"] for r in dev] == ["fsdd/3_jackson_0"]
    assert sorted(r["id"] for r in unseen) == ["fsdd/7_theo_0", "fsdd/7_theo_49"]
    real_speech.check_disjoint(train, dev + unseen, {"theo"})
    with pytest.raises(ValueError, match="held out"):
        real_speech.check_disjoint([{"audio": "/x/7_theo_30.wav", "id": "fsdd/7_theo_30"}], [], {"theo"})


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (
            "Please enter your password followed by the pound key.",
            "please enter your password followed by the pound key",
        ),
        ("press * to toggle pause, press # to enter", "press star to toggle pause press pound to enter"),
        ("Call-Forward on No Answer.", "call forward on no answer"),
        ("Press 1 to mute.", "press one to mute"),
        ("[ascending tones]", None),
        ("  ", None),
    ],
)
def test_asterisk_text(raw: str, text: str | None) -> None:
    assert real_speech.asterisk_text(raw) == text


def test_asterisk_dev_slice_is_deterministic_and_about_15_percent() -> None:
    names = [f"vm-prompt-{i}" for i in range(2000)]
    dev = [n for n in names if real_speech.asterisk_is_dev(n)]
    assert dev == [n for n in names if real_speech.asterisk_is_dev(n)]
    assert 0.12 < len(dev) / len(names) < 0.18


def test_sphinx_transcripts(tmp_path: Path) -> None:
    p = tmp_path / "t"
    p.write_text("<s> ten of clubs  </s> (001)\n<s> Mr Smith had 2 </s> (sense-0870)\n", encoding="utf-8")
    assert real_speech.sphinx_transcripts(p) == {"001": "ten of clubs", "sense-0870": "mister smith had two"}


def test_check_disjoint_refuses_dev_clips() -> None:
    ok = {"audio": "/d/5_theo_7.wav", "id": "fsdd/5_theo_7"}
    dev = [{"audio": "/d/5_theo_1.wav", "id": "fsdd/5_theo_1"}]
    real_speech.check_disjoint([ok], dev)
    with pytest.raises(ValueError, match="dev clip"):
        real_speech.check_disjoint([ok, dev[0]], dev)
    with pytest.raises(ValueError, match="take 2"):
        real_speech.check_disjoint([{"audio": "/x/5_theo_2.wav", "id": "fsdd/5_theo_2"}], [])
    dev_name = next(n for n in (f"p{i}" for i in range(100)) if real_speech.asterisk_is_dev(n))
    with pytest.raises(ValueError, match="Asterisk dev"):
        real_speech.check_disjoint([{"audio": "/a.wav", "id": f"asterisk/{dev_name}"}], [])
    with pytest.raises(ValueError, match="pocketsphinx"):
        real_speech.check_disjoint([{"audio": "/b.wav", "id": "pocketsphinx/cards/001"}], [])


def test_speed_perturb_and_mu_law() -> None:
    x = np.sin(np.arange(16000) * 0.02).astype(np.float32) * 0.5
    assert abs(len(voices.speed_perturb(x, 1.2)) - 16000 / 1.2) < 2
    assert abs(len(voices.speed_perturb(x, 0.85)) - 16000 / 0.85) < 2
    y = voices.mu_law(x)
    assert y.shape == x.shape and np.max(np.abs(y - x)) < 0.02


def test_augment_clip_is_deterministic_and_finite() -> None:
    x = np.sin(np.arange(8000) * 0.03).astype(np.float32) * 0.3
    for seed in range(12):
        a, info_a = voices.augment_clip(x, np.random.default_rng(seed))
        b, info_b = voices.augment_clip(x, np.random.default_rng(seed))
        assert info_a == info_b and np.array_equal(a, b)
        assert np.isfinite(a).all() and 0 < np.abs(a).max() <= 0.96
    clean, info = voices.augment_clip(x, np.random.default_rng(0), clean=True)
    assert info == {} and len(clean) >= len(x)


def test_augment_jobs_and_merge_refuse_dev_ids(tmp_path: Path) -> None:
    a = _jsonl(
        tmp_path / "a.jsonl", [{"audio": f"w{i}.wav", "text": "one", "id": f"fsdd/1_x_{i + 5}"} for i in range(3)]
    )
    jobs = voices.augment_jobs([voices.parse_input(f"{a}:2")], tmp_path / "aug", seed=1, keep_clean=True, limit=2)
    assert len(jobs) == 4
    assert [j[3] for j in jobs] == [True, False, True, False]  # first copy of each clip clean
    assert jobs == voices.augment_jobs([(a, 2)], tmp_path / "aug", seed=1, keep_clean=True, limit=2)
    assert voices.parse_input("m.jsonl") == (Path("m.jsonl"), 1)
    merged = voices.merge([a], [])
    assert all(Path(r["audio"]).is_absolute() for r in merged)
    dev = _jsonl(tmp_path / "dev.jsonl", [{"audio": "d.wav", "text": "one", "id": "fsdd/1_x_6"}])
    with pytest.raises(ValueError, match="dev clip"):
        voices.merge([a], [dev])


def test_augment_command_writes_16k_clips(tmp_path: Path) -> None:
    src = _wav(tmp_path / "src" / "0.wav", 0.4, 8000)
    m = _jsonl(tmp_path / "m.jsonl", [{"audio": str(src), "text": "zero", "id": "fsdd/0_a_9"}])
    voices.main(["augment", "--input", f"{m}:3", "--out", str(tmp_path / "aug"), "--workers", "1"])
    out = voices.read_jsonl(tmp_path / "aug" / "manifest.jsonl")
    assert len(out) == 3 and {r["id"] for r in out} == {"fsdd/0_a_9"}
    for r in out:
        with wave.open(r["audio"]) as w:
            assert w.getframerate() == 16000


def test_kit_text_helpers(tmp_path: Path) -> None:
    assert kit.interleave(["a", "b", "c", "d", "e", "f"], ["X"], every=3) == ["a", "b", "X", "c", "d", "X", "e", "f"]
    digits = kit.digit_strings(50, seed=3)
    assert digits == kit.digit_strings(50, seed=3)
    assert all(set(d.split()) <= set(real_speech.DIGITS) for d in digits)
    real = tmp_path / "real"
    real.mkdir()
    _jsonl(real / "asterisk_train.jsonl", [{"audio": "a", "text": "thank you"}, {"audio": "b", "text": "goodbye"}])
    _jsonl(real / "asterisk_dev.jsonl", [{"audio": "c", "text": "goodbye"}])
    _jsonl(real / "fsdd_dev.jsonl", [])
    _jsonl(real / "pocketsphinx_dev.jsonl", [])
    assert kit.domain_text(real, n_digits=0) == ["thank you"]


def test_kit_pack_and_unpack_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("soundfile")
    recs = []
    for i, seconds in enumerate((0.5, 1.2, 0.8)):
        path = _wav(tmp_path / "src" / f"{i}.wav", seconds, 8000)
        recs.append({"audio": str(path), "text": "one", "duration": seconds, "id": f"fsdd/1_a_{i + 5}"})
    m = _jsonl(tmp_path / "m.jsonl", recs)
    info = kit.encode_train_set(m, tmp_path / "kit", "fsdd_train")
    assert info["utterances"] == 3 and (tmp_path / "kit" / "fsdd_train.ogg").is_file()
    packed = voices.read_jsonl(tmp_path / "kit" / "fsdd_train.jsonl")
    assert [r["rate"] for r in packed] == [8000] * 3 and "audio" not in packed[0]
    out = voices.unpack(tmp_path / "kit" / "fsdd_train.jsonl", tmp_path / "clips")
    assert [r["id"] for r in out] == [r["id"] for r in recs]
    for r, seconds in zip(out, (0.5, 1.2, 0.8), strict=True):
        with wave.open(r["audio"]) as w:
            assert w.getframerate() == 8000 and w.getnframes() == int(seconds * 8000)


def test_describe_records_sources_and_licences(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "training_info.json").write_text(json.dumps({"steps": 3}))
    kit_dir = tmp_path / "kit"
    kit_dir.mkdir()
    (kit_dir / "kit.json").write_text(json.dumps({"licences": {"fsdd": "CC BY-SA 4.0"}}))
    train = _jsonl(
        tmp_path / "t.jsonl",
        [
            {"audio": "a", "text": "x", "duration": 1800.0, "source": "fsdd"},
            {"audio": "b", "text": "y", "duration": 3600.0},
        ],
    )
    data = voices.describe(model, train, kit_dir, [Path("dev/fsdd_dev.jsonl")])
    info = json.loads((model / "training_info.json").read_text())
    assert info["steps"] == 3 and info["data"] == data
    assert data["hours_by_source"] == {"espeak-ng": 1.0, "fsdd": 0.5}
    assert data["licences"] == {"fsdd": "CC BY-SA 4.0"} and data["dev_sets_kept_out"] == ["fsdd_dev"]
