"""Streaming decoding of a long input: memory stays flat, and the result equals decoding the whole matrix.

Builds one long utterance (default 60 minutes at 50 frames/s) by concatenating simulated emissions, feeds it
to ``decoder.stream()`` one second at a time, and prints the process RSS after 1, 5, 15, 30 and 60 minutes of
audio, then decodes the same matrix with ``decode()`` and compares the transcripts; then streams each of the
100 benchmark utterances on its own and counts the texts equal to ``decode()``'s.

    python bench/streaming.py [--minutes 60] [--lm .data/lm/bench_3gram.arpa]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from emissions import load_or_generate
from w2vlm.decoder import build_ctcdecoder, load_unigrams

ROOT = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--lm", type=Path, default=ROOT / ".data/lm/bench_3gram.arpa")
    ap.add_argument("--text", type=Path, default=ROOT / ".data/corpus/test.txt")
    ap.add_argument("--chunk-frames", type=int, default=50, help="frames per fed chunk (50 = 1 s)")
    args = ap.parse_args()

    fps = 50
    em = load_or_generate(args.text, 100, ROOT / "bench/.cache", seed=0)
    total = int(args.minutes * 60 * fps)
    pieces, n, i = [], 0, 0
    while n < total:
        x = em.logits[i % len(em.logits)]
        pieces.append(x)
        n += len(x)
        i += 1
    logits = np.concatenate(pieces)[:total]
    unigrams_path = args.lm.with_name("unigrams.txt")
    decoder = build_ctcdecoder(
        em.labels, str(args.lm), unigrams=load_unigrams(unigrams_path) if unigrams_path.exists() else None
    )
    print(f"input: {total:,} frames ({args.minutes:g} min at {fps} frames/s), logits {logits.nbytes / 2**20:.0f} MiB")
    print(f"RSS before streaming: {rss_mib():.0f} MiB")
    marks = {int(m * 60 * fps) for m in (1, 5, 15, 30, 60, args.minutes) if m <= args.minutes}
    stream = decoder.stream()
    t0 = time.perf_counter()
    rss = {}
    for a in range(0, total, args.chunk_frames):
        stream.feed(logits[a : a + args.chunk_frames])
        done = min(a + args.chunk_frames, total)
        for m in sorted(marks):
            if a < m <= done:
                rss[m] = rss_mib()
                print(
                    f"  after {m / fps / 60:5.1f} min of audio: RSS {rss[m]:.0f} MiB, "
                    f"partial has {len(stream.partial().text.split()):,} words"
                )
    streamed = stream.finalize()[0].text
    t_stream = time.perf_counter() - t0
    t0 = time.perf_counter()
    whole = decoder.decode(logits)
    t_whole = time.perf_counter() - t0
    first, last = rss[min(rss)], rss[max(rss)]
    print(f"streamed in {t_stream:.1f} s ({total / t_stream:,.0f} frames/s); whole matrix in {t_whole:.1f} s")
    print(f"RSS growth from {min(rss) / fps / 60:g} min to {max(rss) / fps / 60:g} min: {last - first:+.0f} MiB")
    print(f"streamed transcript == decode() of the whole matrix: {streamed == whole} ({len(whole.split()):,} words)")
    # each benchmark utterance on its own, fed in chunks: stream()'s defaults give decode()'s text
    same = 0
    for x in em.logits:
        s = decoder.stream()
        for a in range(0, len(x), args.chunk_frames):
            s.feed(x[a : a + args.chunk_frames])
        same += s.finalize()[0].text == decoder.decode(x)
    print(f"per utterance, streamed text == decode(): {same}/{len(em.logits)}")


if __name__ == "__main__":
    main()
