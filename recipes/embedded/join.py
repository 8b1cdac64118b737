"""Training clips of several utterances in a row: what a model meets in a recording longer than a sentence.

The embedded model was trained on single utterances with at most 0.4 s of silence at each end, and it falls
apart on an input that holds several sentences with pauses between them (greedy WER on held-out synthetic
speech: 14.8 % one utterance at a time, 34.8 % for the same utterances joined into ~8 s files with 0.3-1 s
gaps). A voice activity detector hides that on clear pauses, but segments still join sentences whose pause is
shorter than its minimum silence, and every input shorter than the VAD's threshold goes to the model whole.

``join.py`` writes clips made of 2-4 utterances of a manifest, separated by pauses of 0.15-2.5 s filled with
background noise at the level of the clips' own noise floor (half of the time), a low noise floor (-75 to -55
dBFS) or digital silence, with each utterance's level within a factor of two of the first one's (one speaker
at one microphone), up to ``--max-seconds``::

    python recipes/embedded/join.py .data/speech/trainP/manifest.jsonl --out .data/speech/joinP \
        --count 8000 --seed 41 --workers 2

Output: ``OUT/wav/NNNNNN.wav`` + ``OUT/manifest.jsonl`` (``audio`` relative to OUT, ``text`` the utterances'
texts joined by spaces, ``duration``, ``parts`` (source audio paths), ``gaps`` (seconds), ``fill``).
Deterministic for a given seed, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import coloured_noise
from voices import merge, read_audio, to_rate, write_jsonl, write_wav

SAMPLE_RATE = 16000
FRAME = 320  # 20 ms, for the noise-floor estimate


def noise_floor(x: np.ndarray) -> float:
    """RMS of the quietest tenth of a clip's 20 ms frames (its background noise)."""
    frames = x[: x.size // FRAME * FRAME].reshape(-1, FRAME)
    if frames.size == 0:
        return 0.0
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return float(np.quantile(rms, 0.1))


def plan(records: list[dict], count: int, seed: int, max_seconds: float) -> list[dict]:
    """``count`` jobs: which records to join, the gaps between them, how to fill them and each part's gain."""
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        want = int(rng.choice([2, 2, 3, 3, 4]))
        parts: list[int] = []
        total = 0.0
        gaps: list[float] = []
        while len(parts) < want:
            j = int(rng.integers(len(records)))
            gap = round(float(rng.uniform(0.15, 2.5)), 3) if parts else 0.0
            if parts and total + gap + records[j]["duration"] > max_seconds:
                break
            if parts:
                gaps.append(gap)
            parts.append(j)
            total += gap + records[j]["duration"]
        if len(parts) < 2:
            continue
        fill = str(rng.choice(["matched", "matched", "floor", "zero"]))
        gains = [1.0] + [float(2 ** rng.uniform(-1, 1)) for _ in parts[1:]]
        jobs.append({"index": i, "parts": parts, "gaps": gaps, "fill": fill, "gains": gains,
                     "seed": int(rng.integers(2**31))})  # fmt: skip
    return jobs


def render(job: dict, records: list[dict], out: Path) -> dict:
    """Write one joined clip; its manifest record."""
    rng = np.random.default_rng(job["seed"])
    clips = []
    for j in job["parts"]:
        x, sr = read_audio(records[j]["audio"])
        clips.append(to_rate(x, sr))
    first_rms = float(np.sqrt(np.mean(clips[0].astype(np.float64) ** 2))) + 1e-9
    pieces = [clips[0]]
    for clip, gap, gain in zip(clips[1:], job["gaps"], job["gains"][1:], strict=True):
        n = int(gap * SAMPLE_RATE)
        rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) + 1e-9
        clip = clip * (first_rms * gain / rms)
        if job["fill"] == "zero":
            filler = np.zeros(n, np.float32)
        elif job["fill"] == "floor":
            filler = coloured_noise(rng, n) * float(10 ** (rng.uniform(-75, -55) / 20))
        else:  # the background of the clips on either side
            level = 0.5 * (noise_floor(pieces[-1]) + noise_floor(clip))
            filler = coloured_noise(rng, n) * level
        pieces += [filler.astype(np.float32), clip.astype(np.float32)]
    x = np.concatenate(pieces)
    peak = float(np.abs(x).max())
    if peak > 0.99:
        x = x * (0.99 / peak)
    path = out / "wav" / f"{job['index']:06d}.wav"
    write_wav(path, x)
    return {
        "audio": f"wav/{path.name}",
        "text": " ".join(records[j]["text"] for j in job["parts"]),
        "duration": round(x.size / SAMPLE_RATE, 3),
        "parts": [records[j]["audio"] for j in job["parts"]],
        "gaps": job["gaps"],
        "fill": job["fill"],
    }


_RECORDS: list[dict] = []
_OUT = Path()


def _init(records: list[dict], out: Path) -> None:
    global _RECORDS, _OUT
    _RECORDS, _OUT = records, out


def _render(job: dict) -> dict:
    return render(job, _RECORDS, _OUT)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifests", type=Path, nargs="+", help="manifests of single utterances")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, required=True, help="joined clips to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=28.0, help="longest joined clip (default 28)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    records = merge(args.manifests, [])  # absolute audio paths
    jobs = plan(records, args.count, args.seed, args.max_seconds)
    (args.out / "wav").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(records, args.out)) as pool:
        rows = list(pool.map(_render, jobs, chunksize=32))
    write_jsonl(args.out / "manifest.jsonl", rows)
    hours = sum(r["duration"] for r in rows) / 3600
    print(f"join: {len(rows)} clips, {hours:.2f} h, {time.perf_counter() - t0:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
