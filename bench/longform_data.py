"""The data of bench/longform.py (issue 30): long files of held-out utterances joined with random gaps, with
their timelines, and non-speech clips; made once under ``.data/longform/`` (seeded) and reused while their
manifest matches. See bench/longform.py's docstring for what each file holds."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = ROOT / ".data" / "longform"
TEST_MANIFEST = ROOT / ".data" / "speech" / "test" / "manifest.jsonl"
SR = 16000
#: bump when the generated data would change, so that cached files are made again
DATA_VERSION = 1
GAP_S = (0.3, 2.0)
GAP_FLOOR_DBFS = -70.0
ZERO_GAP_EVERY = 4
NONSPEECH = ("silence", "white", "pink", "hum", "clicks", "music")


def log(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Utterance:
    id: str
    text: str
    audio: str
    duration: float


def read_manifest(path: Path) -> list[Utterance]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        audio = Path(rec["audio"])
        audio = audio if audio.is_absolute() else path.parent / audio
        out.append(Utterance(str(rec.get("id") or audio.stem), rec["text"], str(audio), float(rec["duration"])))
    return out


def test_manifest(path: Path | None) -> Path:
    """The held-out test set: ``path``, or the recipe's, made by bench/accuracy.py when missing."""
    if path is not None:
        return path
    if not TEST_MANIFEST.is_file():
        sys.path.insert(0, str(BENCH))
        from accuracy import make_test_set

        log("making the synthetic test set (recipes/embedded corpus.py + synth.py with espeak-ng) ...")
        make_test_set(0)
    return TEST_MANIFEST


def _floor(rng: np.random.Generator, n: int, dbfs: float = GAP_FLOOR_DBFS) -> np.ndarray:
    return (rng.standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


def _gaps(seed: int) -> Iterator[tuple[float, bool]]:
    """(seconds, digital zero?) of successive gaps."""
    rng = np.random.default_rng(seed)
    i = 0
    while True:
        yield float(rng.uniform(*GAP_S)), i % ZERO_GAP_EVERY == ZERO_GAP_EVERY - 1
        i += 1


def _order(count: int, seed: int) -> Iterator[int]:
    """Indices of ``count`` utterances, each pass in a fresh random order."""
    rng = np.random.default_rng(seed)
    while True:
        yield from (int(i) for i in rng.permutation(count))


def make_long_file(utterances: Sequence[Utterance], path: Path, seconds: float, seed: int) -> dict[str, Any]:
    """Write ``path`` (16 kHz mono 16-bit wav, at most ``seconds`` long): a gap, then utterance + gap while the
    next pair fits. Returns the timeline also written beside it as ``path.json``."""
    import soundfile as sf

    rng = np.random.default_rng([seed, 1])
    gaps = _gaps(seed)
    order = _order(len(utterances), seed + 2)
    timeline: list[dict[str, Any]] = []
    zero_gaps = floor_gaps = 0
    limit = round(seconds * SR)
    tmp = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(tmp), "w", samplerate=SR, channels=1, subtype="PCM_16", format="WAV") as out:
        pos = 0

        def gap(length: float, zero: bool) -> None:
            nonlocal pos, zero_gaps, floor_gaps
            n = round(length * SR)
            out.write(np.zeros(n, np.float32) if zero else _floor(rng, n))
            pos += n
            zero_gaps += zero
            floor_gaps += not zero

        gap(*next(gaps))
        while True:
            utt = utterances[next(order)]
            audio, rate = sf.read(utt.audio, dtype="float32", always_2d=True)
            if rate != SR or audio.shape[1] != 1:
                raise ValueError(f"{utt.audio}: expected 16 kHz mono, got {rate} Hz, {audio.shape[1]} channels")
            length, zero = next(gaps)
            if timeline and pos + audio.shape[0] + round(length * SR) > limit:
                break
            out.write(audio[:, 0])
            timeline.append(
                {
                    "id": utt.id,
                    "text": utt.text,
                    "start": pos / SR,
                    "end": (pos + audio.shape[0]) / SR,
                    "audio": utt.audio,
                }
            )
            pos += audio.shape[0]
            gap(length, zero)
    tmp.replace(path)
    info = {
        "version": DATA_VERSION,
        "seed": seed,
        "seconds_asked": seconds,
        "duration": pos / SR,
        "sampling_rate": SR,
        "gap_s": list(GAP_S),
        "gap_floor_dbfs": GAP_FLOOR_DBFS,
        "gaps": {"noise_floor": floor_gaps, "digital_zero": zero_gaps},
        "utterances": timeline,
    }
    path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def long_file(data: Path, manifest: Path, utterances: Sequence[Utterance], minutes: float, seed: int) -> Path:
    """The cached ``minutes``-long file (made when missing or made from other data)."""
    path = data / f"long-{minutes:g}min-seed{seed}.wav"
    meta = path.with_suffix(".json")
    source = {"manifest": str(manifest), "manifest_sha1": _sha1(manifest)}
    if path.is_file() and meta.is_file():
        info = json.loads(meta.read_text(encoding="utf-8"))
        # the manifest's content decides, not the path it was read by (a symlinked .data is the same data)
        made_from = (info.get("source") or {}).get("manifest_sha1")
        if info.get("version") == DATA_VERSION and made_from == source["manifest_sha1"]:
            return path
    t = time.perf_counter()
    info = make_long_file(utterances, path, minutes * 60, seed + round(minutes * 60))
    info["source"] = source
    meta.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    log(
        f"made {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {info['duration'] / 60:.1f} min, "
        f"{len(info['utterances'])} utterances, {time.perf_counter() - t:.1f} s"
    )
    return path


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    return np.fft.irfft(spectrum, n)


def _music(rng: np.random.Generator, n: int) -> np.ndarray:
    """Chords (I-vi-IV-V and friends), a bass an octave below and a melody, each note a few harmonics with
    a quick attack and an exponential decay."""
    out = np.zeros(n)
    roots = [0, 9, 5, 7, 2, 4]  # semitones above C4
    t0 = 0
    while t0 < n:
        length = int(rng.uniform(0.6, 1.6) * SR)
        root = roots[int(rng.integers(len(roots)))]
        minor = root in (9, 2, 4)
        chord = [root, root + (3 if minor else 4), root + 7]
        t = np.arange(min(length, n - t0)) / SR
        env = np.minimum(t / 0.01, 1.0) * np.exp(-t * rng.uniform(1.5, 3.5))
        notes = [(s, 0.3, 0) for s in chord] + [(root - 12, 0.4, 0)]  # (semitones, level, first sample)
        for k in range(int(rng.integers(2, 5))):  # melody notes over the chord
            notes.append((chord[int(rng.integers(3))] + 12, 0.25, int(k * len(t) / 4)))
        for semis, amp, start in notes:
            f = 261.63 * 2 ** (semis / 12)
            tt = t[: len(t) - start]
            wave = sum(np.sin(2 * np.pi * f * h * tt) / h**1.5 for h in (1, 2, 3, 4))
            out[t0 + start : t0 + start + len(tt)] += amp * env[: len(tt)] * wave
        t0 += length
    return out


def nonspeech_clip(kind: str, seconds: float, seed: int) -> np.ndarray:
    """One non-speech clip as float32 in [-1, 1]."""
    rng = np.random.default_rng([seed, NONSPEECH.index(kind)])
    n = round(seconds * SR)
    t = np.arange(n) / SR

    def at_rms(x: np.ndarray, dbfs: float) -> np.ndarray:
        return x * (10 ** (dbfs / 20) / max(float(np.sqrt(np.mean(x**2))), 1e-12))

    if kind == "silence":
        x = np.zeros(n)
    elif kind == "white":
        x = at_rms(rng.standard_normal(n), -20)
    elif kind == "pink":
        x = at_rms(_pink(rng, n), -20)
    elif kind == "hum":  # mains hum: odd harmonics stronger, as from a transformer or a ground loop
        harmonics = {1: 1.0, 2: 0.3, 3: 0.6, 4: 0.1, 5: 0.3, 7: 0.15, 9: 0.08}
        x = sum(a * np.sin(2 * np.pi * 50 * h * t + rng.uniform(0, 2 * np.pi)) for h, a in harmonics.items())
        x = at_rms(np.asarray(x), -20) + _floor(rng, n)
    elif kind == "clicks":
        x = _floor(rng, n).astype(np.float64)
        pos = 0
        while True:
            pos += int(rng.exponential(0.4) * SR) + SR // 50
            if pos >= n - SR // 100:
                break
            k = np.arange(SR // 200)  # 5 ms decaying burst, random polarity and level
            x[pos : pos + k.size] += (
                rng.choice([-1, 1]) * rng.uniform(0.1, 0.5) * np.exp(-k / 12) * (rng.standard_normal(k.size) * 0.3 + 1)
            )
    elif kind == "music":
        x = at_rms(_music(rng, n), -20) + _floor(rng, n)
    else:
        raise ValueError(f"unknown non-speech kind {kind!r}")
    return np.clip(x, -1, 1).astype(np.float32)


def nonspeech_files(data: Path, seconds: float, seed: int) -> dict[str, Path]:
    """The cached non-speech clips (made when missing)."""
    import soundfile as sf

    folder = data / "nonspeech"
    stamp = folder / "version.json"
    want = {"version": DATA_VERSION, "seconds": seconds, "seed": seed}
    paths = {kind: folder / f"{kind}-{seconds:g}s.wav" for kind in NONSPEECH}
    if stamp.is_file() and json.loads(stamp.read_text()) == want and all(p.is_file() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for kind, path in paths.items():
        sf.write(str(path), nonspeech_clip(kind, seconds, seed), SR, subtype="PCM_16")
    stamp.write_text(json.dumps(want))
    return paths
