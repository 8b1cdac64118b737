"""Tests of the learning-curve script of the embedded-model recipe (issue 34): how a training mix is drawn."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "embedded"
sys.path.insert(0, str(RECIPE))

pytest.importorskip("scipy")
import curve  # noqa: E402


def _aug(m: int, i: int, c: int, seconds: float = 1.0, rid: str = "") -> dict:
    return {"audio": f"/a/wav/{m:02d}_{i:06d}_{c:02d}.wav", "duration": seconds, "aug": {}, "id": rid or f"x/{m}_{i}"}


def test_fractions_are_nested() -> None:
    ids = [f"fsdd/{d}_jackson_{t}" for d in range(10) for t in range(5, 50)]
    quarter = {i for i in ids if curve.in_fraction(i, 0.25)}
    half = {i for i in ids if curve.in_fraction(i, 0.5)}
    assert quarter < half < set(ids)
    assert 0.15 < len(quarter) / len(ids) < 0.35 and 0.4 < len(half) / len(ids) < 0.6


def test_layered_gives_every_clip_once_before_any_second_copy() -> None:
    records = [_aug(0, i, c) for i in range(5) for c in range(3)]
    order = curve.layered(records, seed=1)
    assert [curve.clip_key(r, 0)[1] for r in order] == [0] * 5 + [1] * 5 + [2] * 5
    assert sorted(curve.clip_key(r, 0)[0] for r in order[:5]) == [f"00_{i:06d}" for i in range(5)]
    assert curve.clip_key({"audio": "wav/000003.wav", "duration": 1.0}, 7) == ("7", 0)


def test_draw_cycles_and_skips_long_clips() -> None:
    pool = [_aug(0, 0, 0, 2.0), _aug(0, 1, 0, 30.0), _aug(0, 2, 0, 1.0)]
    out = curve.draw(pool, 7.5 / 3600, max_duration=16)
    assert [r["audio"] for r in out] == [pool[0]["audio"], pool[2]["audio"]] * 2 + [pool[0]["audio"]]
    assert curve.draw([], 1.0, 16) == []


def test_build_mix_keeps_the_shares_and_the_real_fraction() -> None:
    pools = {
        "espeak": [{"audio": f"/e/{i}.wav", "duration": 1.0} for i in range(400)],
        "tts": [_aug(1, i, c) for i in range(100) for c in range(3)],
        "real": [_aug(2, i, c, rid=f"fsdd/{i % 10}_x_{i}") for i in range(200) for c in range(2)],
    }
    point = curve.Point("p", 0.35, 0.25, 0.40, real_fraction=0.25)
    mix, stats = curve.build_mix(point, pools, 100 / 3600, seed=3, max_duration=16)
    assert {k: v["records"] for k, v in stats.items()} == {"espeak": 35, "tts": 25, "real": 40}
    real = [r for r in mix if r.get("id", "").startswith("fsdd/")]
    assert all(curve.in_fraction(r["id"], 0.25) for r in real)
    assert stats["real"]["distinct_source_clips"] == len({r["id"] for r in real})
    control, stats = curve.build_mix(curve.Point("c", 1.0), pools, 50 / 3600, seed=3, max_duration=16)
    assert list(stats) == ["espeak"] and len(control) == 50
