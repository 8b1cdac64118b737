"""bench/longform.py's data: a long file's audio matches its timeline, gaps are as documented, clips as named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import longform_data  # noqa: E402
import longform_scoring  # noqa: E402


@pytest.fixture()
def utterances(tmp_path: Path) -> list[longform_data.Utterance]:
    """Five 1-3 s tone clips (16-bit wav) in a manifest, as the test set's."""
    lines = []
    rng = np.random.default_rng(0)
    for i in range(5):
        seconds = 1.0 + 0.5 * i
        t = np.arange(round(seconds * 16000)) / 16000
        audio = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        sf.write(str(tmp_path / f"u{i}.wav"), audio, 16000, subtype="PCM_16")
        lines.append(json.dumps({"audio": f"u{i}.wav", "text": f"words of utterance {i}", "duration": seconds}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return longform_data.read_manifest(tmp_path / "manifest.jsonl")


def test_long_file_matches_its_timeline(tmp_path: Path, utterances: list[longform_data.Utterance]) -> None:
    path = tmp_path / "long.wav"
    info = longform_data.make_long_file(utterances, path, 20.0, seed=3)
    assert json.loads(path.with_suffix(".json").read_text())["utterances"] == info["utterances"]
    audio, rate = sf.read(str(path), dtype="int16")
    assert rate == 16000 and audio.ndim == 1
    assert audio.size == round(info["duration"] * 16000)
    assert 20.0 - 3.0 - 2.0 <= info["duration"] <= 20.0  # stops when the next utterance and gap would not fit
    timeline = info["utterances"]
    by_id = {u.id: u for u in utterances}
    assert len(timeline) > len(utterances)  # a 20 s file uses the 10 s of clips more than once
    edges = [0.0]
    for u in timeline:
        clip, _ = sf.read(by_id[u["id"]].audio, dtype="int16")
        start, end = round(u["start"] * 16000), round(u["end"] * 16000)
        assert np.array_equal(audio[start:end], clip)  # the clip itself, sample for sample
        assert u["text"] == by_id[u["id"]].text
        edges += [u["start"], u["end"]]
    edges.append(info["duration"])
    gaps = list(zip(edges[::2], edges[1::2]))
    assert len(gaps) == len(timeline) + 1
    for i, (a, b) in enumerate(gaps):
        assert 0.3 - 1e-3 <= b - a <= 2.0 + 1e-3
        gap = audio[round(a * 16000) : round(b * 16000)].astype(np.float64) / 32768
        if i % 4 == 3:
            assert not gap.any()  # digital zero
        else:
            dbfs = 20 * np.log10(np.sqrt(np.mean(gap**2)))
            assert -71.5 < dbfs < -68.5  # the noise floor, not zero
    assert info["gaps"] == {"noise_floor": len(gaps) - len(gaps) // 4, "digital_zero": len(gaps) // 4}
    # seeded: the same file again
    again = longform_data.make_long_file(utterances, tmp_path / "again.wav", 20.0, seed=3)
    assert again["utterances"] == info["utterances"]
    assert sf.read(str(tmp_path / "again.wav"), dtype="int16")[0].tobytes() == audio.tobytes()


def test_nonspeech_clips_levels() -> None:
    clips = {kind: longform_data.nonspeech_clip(kind, 2.0, seed=0) for kind in longform_data.NONSPEECH}
    assert all(c.size == 32000 and c.dtype == np.float32 for c in clips.values())
    assert not clips["silence"].any()
    for kind in ("white", "pink", "hum", "music"):
        rms = 20 * np.log10(np.sqrt(np.mean(clips[kind].astype(np.float64) ** 2)))
        assert abs(rms - -20.0) < 0.5, kind
    spectrum = np.abs(np.fft.rfft(clips["hum"]))
    assert np.argmax(spectrum) == 100  # 50 Hz over 2 s: bin 100
    assert np.abs(clips["clicks"]).max() > 0.05 and np.median(np.abs(clips["clicks"])) < 1e-3


def test_words_in_gaps() -> None:
    timeline = [{"start": 1.0, "end": 2.0}, {"start": 3.0, "end": 4.0}]
    words = [["a", 1.1, 1.3], ["b", 2.1, 2.3], ["c", 2.5, 2.6], ["d", 0.1, 0.2], ["e", 4.5, 4.7]]
    assert (
        longform_scoring.words_in_gaps(timeline, words) == 3
    )  # c (2.55), d (0.15) and e (4.6); b is within the margin


# ------------------------------------------------------------------ bench/longform_errors.py's bookkeeping


def test_errors_classify_assign_and_edits() -> None:
    import longform_errors as le

    timeline = [
        {"start": 1.0, "end": 3.0},
        {"start": 4.0, "end": 6.0},
        {"start": 6.5, "end": 8.0},
        {"start": 9.0, "end": 11.0},
        {"start": 12.0, "end": 13.0},
    ]
    segs = [
        (0.9, 3.1, True),  # clean
        (4.0, 8.1, True),  # the next two merged
        (8.9, 9.8, True),  # split in two
        (10.2, 11.0, True),
        (12.0, 13.0, False),  # the no-speech gate dropped it: missed
    ]
    got = le.classify(timeline, segs)
    assert [c["class"] for c in got] == ["clean", "merged", "merged", "split", "missed"]
    assert got[0]["lead"] == pytest.approx(0.1) and got[0]["trail"] == pytest.approx(0.1)
    assert got[3]["cut_at"] == [pytest.approx(0.8)]

    words = [("a", 1.1, 1.3), ("b", 3.5, 3.6), ("c", 3.6, 3.7), ("d", 8.2, 8.3)]
    per, gap = le.assign(timeline, words)
    # each word goes to the nearest utterance; "b" and "c" are more than GAP_MARGIN_S from every utterance
    assert per[0] == ["a"] and per[1] == ["b", "c"] and per[2] == ["d"] and gap == 2

    assert le.edits(["a", "b", "c"], ["a", "x", "c", "d"]) == 2
    assert le.edits([], ["x"]) == 1 and le.edits(["x"], []) == 1


def test_error_rates_and_the_pooled_ratio_count_word_edits() -> None:
    """Each file's rates carry its word edits; several files together are the ratio of summed edits (not a mean of
    ratios), and an empty hypothesis is all deletions."""
    long = [
        longform_scoring.error_rates(["the cat sat", "on a mat"], "the cat sad on mat"),
        longform_scoring.error_rates(["a b"], ""),
    ]
    assert (long[0]["wer"], long[0]["errors"], long[0]["ref_words"]) == (pytest.approx(2 / 6), 2, 6)
    assert (long[1]["wer"], long[1]["deletions"]) == (1.0, 2)
    alone = [
        longform_scoring.error_rates(["the cat sat", "on a mat"], "the cat sat on a mat"),
        longform_scoring.error_rates(["a b"], "a"),
    ]
    assert longform_scoring.pooled_ratio(long, alone) == 4 / 1
    assert longform_scoring.pooled_ratio(long, alone[:1]) is None  # no edits one by one: no ratio


def test_oracle_fill_own_mirrors_the_clip_edges() -> None:
    """fill=own: the padding before a clip is its first samples mirrored outwards again and again, so the sample
    next to the clip equals the clip's first and copies meet without a jump; after the clip the same, reversed."""
    import longform_errors as le

    edge = np.array([1.0, 2.0, 3.0, 4.0])
    before = le.mirror_before(edge, 10)
    assert before.tolist() == [2, 1, 1, 2, 3, 4, 4, 3, 2, 1]
    assert le.mirror_before(edge, 3).tolist() == [3, 2, 1] and le.mirror_before(edge, 0).size == 0
    end = np.array([5.0, 6.0, 7.0])  # the clip's last samples
    after = le.mirror_before(end[::-1], 5)[::-1]
    assert after.tolist() == [7, 6, 5, 5, 6]
    assert le.parse_variant("oracle,vad_pad_s=0.1,fill=own") == (
        "oracle,vad_pad_s=0.1,fill=own",
        {"vad_pad_s": 0.1, "fill": "own"},
    )


def test_extended_parts_recut_only_segments_the_model_hears_speech_at(tmp_path: Path) -> None:
    """extend=S: a segment whose edge frames hold a non-blank token above the level is cut again up to S further on
    that side (at most half way to its neighbour) and computed again; the others are left as they were."""
    pytest.importorskip("torch")
    import longform_errors as le
    from w2vlm.engine import silero

    if not silero.available():
        pytest.skip("needs the vad extra")
    root = Path(__file__).resolve().parents[1] / "examples"
    clips = [sf.read(str(root / f"{n}.wav"), dtype="float32")[0] for n in ("children", "hoped", "cottages")]
    gap = np.zeros(16000, np.float32)
    path = tmp_path / "three.wav"
    sf.write(str(path), np.concatenate([clips[0], gap, clips[1], gap, clips[2]]), 16000)
    run = le.Run()
    (parts,) = run.parts([str(path)], run.engine.config.with_(vad=True))
    assert len(parts) >= 2
    same, count = le.extended_parts(run, path, parts, 0.4, level=1.01)  # no posterior is above 1
    assert count == 0 and same == parts
    out, count = le.extended_parts(run, path, parts, 0.4, level=0.0)  # any non-blank edge frame
    assert count >= 1 and len(out) == len(parts)

    def span(p: tuple) -> tuple[float, float]:
        return p[0], p[0] + p[2].shape[0] * run.spf

    for i, (before, after) in enumerate(zip(parts, out)):
        if after is before:
            continue
        (a, b), (a2, b2) = span(before), span(after)
        assert a2 <= a + 1e-9 and b2 >= b - 0.03 and (a - a2) <= 0.4 + 1e-6 and (b2 - b) <= 0.4 + 0.03
        if i:
            assert a2 >= (span(parts[i - 1])[1] + a) / 2 - 0.03  # at most half way to the previous segment
