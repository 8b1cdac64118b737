"""Tests of w2vlm.train's data: batches on a length grid, edges around clips, the audio store and its cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import model_weights
from train_helpers import SR, tone_clip, train_config, write_wav
from w2vlm.errors import ManifestError
from w2vlm.train import (
    DEFAULT_VOCAB,
    AudioStore,
    Tokenizer,
    read_audio_int16,
    read_manifest,
    train,
)

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.parametrize("seeded", [False, True])
def test_batches_on_a_length_grid(seeded: bool) -> None:
    import random

    from w2vlm.features import WaveformInputs

    rng = np.random.default_rng(5)
    lengths = rng.integers(SR // 2, 6 * SR, size=300)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    audio = torch.from_numpy(rng.integers(-3000, 3000, size=int(lengths.sum())).astype(np.int16))
    store = AudioStore(audio, offsets, lengths, [[1]] * len(lengths), ["a"] * len(lengths))
    multiple, budget_s = SR // 2, 20.0
    batches = store.batches(budget_s, 256, random.Random(1) if seeded else None, multiple)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every clip exactly once
    shapes = set()
    for b in batches:
        padded = -(-lengths[b] // multiple) * multiple
        assert len(set(padded.tolist())) == 1  # one padded length a batch
        assert len(b) * int(padded[0]) <= budget_s * SR
        shapes.add((len(b), int(padded[0])))
    widths = {w for _, w in shapes}
    assert len(shapes) <= 2 * len(widths)  # full batches + at most one remainder per width
    assert len(widths) <= 12
    # collate pads to the same grid, extra padding included
    inputs = WaveformInputs(None, do_normalize=False)
    x, mask, labels = store.collate(batches[0], "cpu", inputs, extra=1234, multiple=multiple)
    assert x.shape[-1] % multiple == 0 and x.shape[-1] >= int(lengths[batches[0]].max()) + 1234
    assert mask.sum(-1).tolist() == lengths[batches[0]].tolist()
    assert labels.shape == (len(batches[0]), 1)


def test_edges_put_another_background_around_each_clip() -> None:
    """--edge-prob: a clip that gets edges is the same samples moved right by its lead, with the lead and trail
    filled by digital silence or noise at its level, and the row's length grown by both; other rows and the
    labels are untouched; with edge_prob 0 nothing is drawn (the batch and the random stream as before)."""
    import random

    from w2vlm.features import WaveformInputs
    from w2vlm.train.data import EDGE_LEVELS_DBFS, EDGE_MAX_S, Edges, draw_edges

    rng = np.random.default_rng(9)
    lengths = np.array([SR, SR // 2, 3 * SR // 4])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    audio = torch.from_numpy(rng.integers(-3000, 3000, size=int(lengths.sum())).astype(np.int16))
    store = AudioStore(audio, offsets, lengths, [[1], [2], [3]], ["a", "b", "c"])
    inputs = WaveformInputs(None, do_normalize=False)
    idx = [0, 1, 2]
    plain, _, plain_labels = store.collate(idx, "cpu", inputs)
    level = 10 ** (-60 / 20)
    edges = Edges(lead=[800, 0, 1600], trail=[400, 0, 0], level=[0.0, 0.0, level], seed=3)
    x, mask, labels = store.collate(idx, "cpu", inputs, extra=100, edges=edges)
    assert mask.sum(-1).tolist() == [SR + 1200, SR // 2, 3 * SR // 4 + 1600]
    assert torch.equal(labels, plain_labels)
    assert torch.equal(x[0, 800 : 800 + SR], plain[0, :SR])  # the clip, moved by its lead
    assert torch.equal(x[0, :800], torch.zeros(800))
    assert torch.equal(x[0, SR + 800 :], torch.zeros(x.shape[1] - SR - 800))
    assert torch.equal(x[1, : SR // 2], plain[1, : SR // 2])  # no edges: as before
    noise = x[2, :1600]
    assert torch.equal(x[2, 1600 : 1600 + 3 * SR // 4], plain[2, : 3 * SR // 4])
    assert 0.8 * level < float(noise.std()) < 1.2 * level and float(noise.abs().min()) > 0
    assert torch.equal(x[2, 1600 + 3 * SR // 4 :], torch.zeros(x.shape[1] - 1600 - 3 * SR // 4))  # padding stays 0

    before = random.Random(4)
    assert draw_edges(8, 0.0, before) is None and before.random() == random.Random(4).random()
    drawn = [draw_edges(8, 0.5, random.Random(s)) for s in range(200)]
    leads = [v for d in drawn if d is not None for v in d.lead]
    levels = [v for d in drawn if d is not None for v, a in zip(d.level, d.lead) if a]
    assert 0 < max(leads) <= EDGE_MAX_S * SR
    assert 0.4 < sum(1 for v in leads if v) / len(leads) < 0.6  # about half the clips
    silent = sum(1 for v in levels if v == 0) / len(levels)
    assert 0.25 < silent < 0.42  # a third digital silence, the rest noise within the levels
    low, high = (10 ** (d / 20) for d in EDGE_LEVELS_DBFS)
    assert all(low <= v <= high for v in levels if v)


@pytest.mark.parametrize("multiple", [1, 800])
def test_edges_are_counted_in_the_batch_budget(multiple: int) -> None:
    """With --edge-prob, batches are planned with room for both edges at their longest: a batch given the
    longest edges still fits --batch-seconds of padded audio (without the reserve, batches of short clips
    grew by up to 0.6 s a clip); without edges the plan is as before."""
    import random

    from w2vlm.features import WaveformInputs
    from w2vlm.train.data import EDGE_MAX_S, Edges, edge_reserve

    rng = np.random.default_rng(3)
    lengths = rng.integers(SR // 2, 2 * SR, size=40)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    audio = torch.from_numpy(rng.integers(-3000, 3000, size=int(lengths.sum())).astype(np.int16))
    store = AudioStore(audio, offsets, lengths, [[1]] * 40, [str(i) for i in range(40)])
    reserve = edge_reserve(0.5)
    assert reserve == 2 * int(EDGE_MAX_S * SR) and edge_reserve(0.0) == 0
    assert store.batches(4.0, 64, random.Random(1), multiple) == store.batches(4.0, 64, random.Random(1), multiple, 0)
    budget = 4.0 * SR
    most = int(EDGE_MAX_S * SR)
    batches = store.batches(4.0, 64, random.Random(1), multiple, reserve)
    assert sorted(i for b in batches for i in b) == list(range(40))
    for idx in batches:
        edges = Edges(lead=[most] * len(idx), trail=[most] * len(idx), level=[1e-3] * len(idx), seed=1)
        x, _, _ = store.collate(idx, "cpu", WaveformInputs(None, do_normalize=False), multiple=multiple, edges=edges)
        assert x.shape[0] * x.shape[1] <= budget
    plain = store.batches(4.0, 64, random.Random(1), multiple)
    grown = [len(idx) * (int(lengths[idx].max()) + 2 * most) for idx in plain]
    assert max(grown) > budget  # what the reserve prevents


@pytest.mark.parametrize("cached", [False, True])
def test_audio_store_copies_each_clip_once_and_grows_past_the_size_estimate(tmp_path: Path, cached: bool) -> None:
    """The loader writes clips straight into one buffer, sized from the files' bytes; files that decode to more
    samples than their size suggests (8 kHz wav resampled to 16 kHz, FLAC) make it grow without losing any.
    Through an audio cache the same clips come out of the cache file."""
    sf = pytest.importorskip("soundfile")
    from w2vlm.train.data import initial_samples

    rng = np.random.default_rng(11)
    (tmp_path / "wav").mkdir()
    rows = []
    for i, text in enumerate(["abc", "cab", "bad cab", "dab", "ace", "bead"]):
        clip = tone_clip(text, rng)
        if i == 2:  # 8 kHz: twice as many samples after resampling as the file's bytes suggest
            name = f"wav/{i}.wav"
            sf.write(tmp_path / name, clip[::2], SR // 2, subtype="PCM_16")
        elif i == 4:  # FLAC: compressed, so more samples than bytes / 2
            name = f"wav/{i}.flac"
            sf.write(tmp_path / name, clip, SR, subtype="PCM_16")
        else:
            name = f"wav/{i}.wav"
            write_wav(tmp_path / name, clip)
        rows.append({"audio": name, "text": text})
    rows.insert(3, {"audio": "wav/missing.wav", "text": "abc"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    tokenizer = Tokenizer({t: i for i, t in enumerate(DEFAULT_VOCAB)})
    cache = tmp_path / "cache" if cached else None
    store = AudioStore.load(manifest, tokenizer, lambda n: n // 320, 2.0, "cpu", workers=3, cache_dir=cache)
    kept = [r for r in rows if r["audio"] != "wav/missing.wav"]
    assert len(store) == len(kept)
    assert store.texts == [r["text"] for r in kept]
    for i, row in enumerate(kept):
        expected = read_audio_int16(tmp_path / row["audio"])
        got = store.audio[int(store.offsets[i]) : int(store.offsets[i] + store.lengths[i])].numpy()
        np.testing.assert_array_equal(got, expected)
    assert len(store.audio) == int(store.lengths.sum())
    # the premise: the estimate from the files' sizes was too small, so the buffer had to grow
    assert initial_samples(read_manifest(manifest)) < int(store.lengths.sum())


def _load_store(manifest: Path, cache: Path | None, max_duration_s: float = 20.0) -> AudioStore:
    tokenizer = Tokenizer({t: i for i, t in enumerate(DEFAULT_VOCAB)})
    return AudioStore.load(manifest, tokenizer, lambda n: n // 320, max_duration_s, "cpu", workers=2, cache_dir=cache)


def _clip(store: AudioStore, i: int) -> np.ndarray:
    return store.audio[int(store.offsets[i]) : int(store.offsets[i] + store.lengths[i])].numpy()


def test_audio_cache_is_made_once_then_read_from_its_file(
    tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import w2vlm.train.data as train_module

    cache = tmp_path / "cache"
    plain = _load_store(tiny_manifest, None)
    with caplog.at_level("INFO", logger="w2vlm"):
        first = _load_store(tiny_manifest, cache)
    assert "audio cache of 4 clips" in caplog.text
    (data,) = cache.glob("*.int16")
    assert data.name.startswith("train.jsonl-") and data.stat().st_size == 2 * int(plain.lengths.sum())
    assert first.texts == plain.texts and first.labels == plain.labels
    for i in range(len(plain)):
        np.testing.assert_array_equal(_clip(first, i), _clip(plain, i))

    # a second load decodes nothing: its samples are the cache file's (changed here behind its back)
    def no_decoding(path: Path) -> np.ndarray:
        raise AssertionError(f"decoded {path} although the cache holds it")

    monkeypatch.setattr(train_module, "read_audio_int16", no_decoding)
    raw = np.fromfile(data, dtype="<i2")
    raw[:5] = [1, 2, 3, 4, 5]
    raw.tofile(data)
    second = _load_store(tiny_manifest, cache)
    assert _clip(second, 0)[:5].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(_clip(second, 3), _clip(plain, 3))
    _clip(second, 0)[:5] = 0  # copy on write: training-side writes never reach the file
    assert np.fromfile(data, dtype="<i2")[:5].tolist() == [1, 2, 3, 4, 5]


def test_audio_cache_is_remade_when_a_file_changes_or_the_cache_is_damaged(
    tiny_manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    _load_store(tiny_manifest, cache)
    (old,) = cache.glob("*.int16")
    # a different recording under the same name: new key, new cache, the superseded one removed
    write_wav(tmp_path / "wav" / "0.wav", tone_clip("bad", np.random.default_rng(5)))
    fresh = _load_store(tiny_manifest, cache)
    np.testing.assert_array_equal(_clip(fresh, 0), read_audio_int16(tmp_path / "wav" / "0.wav"))
    (new,) = cache.glob("*.int16")
    assert new != old and sorted(p.suffix for p in cache.iterdir()) == [".int16", ".json"]

    expected = [_clip(fresh, i).copy() for i in range(len(fresh))]
    for damage, message in [
        (lambda: new.write_bytes(new.read_bytes()[:-100]), "unusable audio cache .*holds .* bytes"),
        (lambda: new.with_suffix(".json").write_text("{not json"), "damaged audio cache index"),
        (lambda: new.with_suffix(".json").unlink(), None),  # an interrupted build: samples without an index
    ]:
        damage()
        caplog.clear()
        with caplog.at_level("WARNING", logger="w2vlm"):
            again = _load_store(tiny_manifest, cache)
        if message:
            assert any(re.search(message, r.getMessage()) for r in caplog.records), caplog.text
        for i, clip in enumerate(expected):
            np.testing.assert_array_equal(_clip(again, i), clip)


def test_audio_cache_keeps_unreadable_clips_named_and_bad_folders_are_named(
    tiny_manifest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(tiny_manifest.read_text() + json.dumps({"audio": "wav/missing.wav", "text": "abc"}) + "\n")
    for _ in range(2):  # made, then read from the cache: the same warning both times
        caplog.clear()
        with caplog.at_level("WARNING", logger="w2vlm"):
            store = _load_store(mixed, tmp_path / "cache")
        assert len(store) == 4
        assert "skipped 1 of 5 utterances (unreadable audio)" in caplog.text and "missing.wav" in caplog.text
    # the limits apply to cached clips as to read ones
    assert len(_load_store(mixed, tmp_path / "cache", max_duration_s=0.9)) < 4

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ManifestError, match=r"audio cache folder .*a_file.*cannot create it"):
        _load_store(tiny_manifest, tmp_path / "a_file" / "cache")


def test_training_through_the_audio_cache_matches_training_without(tiny_manifest: Path, tmp_path: Path) -> None:
    plain = train(train_config(tiny_manifest, tmp_path / "plain", epochs=2))
    cached = train(train_config(tiny_manifest, tmp_path / "cached", epochs=2, audio_cache=tmp_path / "cache"))
    assert cached.steps == plain.steps
    a, b = model_weights(tmp_path / "plain"), model_weights(tmp_path / "cached")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(list((tmp_path / "cache").glob("*.int16"))) == 1  # train and dev manifest are one file here
