"""Ray Data transcription vs the plain CLI engine: same transcripts, and throughput with 1 vs 2 model workers.

    python bench/distributed.py                       # 200 files: .data/speech/test if present, else examples/
    python bench/distributed.py --files 400 --workers 1,2,4 --address auto

The plain run is :class:`w2vlm.transcribe.Transcriber` (what ``w2vlm transcribe`` runs) over the same files.
Each Ray run writes to a fresh folder; its time covers the Ray Data pipeline (actor start and model loading
included), not the start of Ray itself. A last run re-uses the 1-worker folder to show that a re-run skips
finished inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]


def pick_files(count: int, work: Path) -> list[Path]:
    manifest = ROOT / ".data" / "speech" / "test" / "manifest.jsonl"
    if manifest.is_file():
        files = []
        for line in manifest.read_text().splitlines()[:count]:
            files.append((manifest.parent / json.loads(line)["audio"]).resolve())
        if len(files) >= count:
            return files
    examples = sorted((ROOT / "examples").glob("*.wav"))
    files = []
    for i in range(count):
        src = examples[i % len(examples)]
        dst = work / "audio" / f"{i:04d}_{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        files.append(dst)
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--workers", default="1,2", help="model worker counts to time, e.g. 1,2")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    ap.add_argument("--files-per-batch", type=int, default=16)
    ap.add_argument("--no-lm", action="store_true", help="greedy decoding: the acoustic model is the whole load")
    args = ap.parse_args()

    import ray

    from w2vlm.audio import audio_duration
    from w2vlm.distributed import read_results, transcribe
    from w2vlm.transcribe import InputFile, TranscribeOptions, Transcriber

    work = Path(tempfile.mkdtemp(prefix="w2vlm-bench-ray-"))
    files = pick_files(args.files, work)
    audio_s = sum(audio_duration(f) or 0.0 for f in files)
    print(f"{len(files)} files, {audio_s:.0f} s of audio; {os.cpu_count()} CPUs")

    t0 = time.perf_counter()
    options = TranscribeOptions(no_lm=args.no_lm)
    engine = Transcriber(options)
    plain = {str(r.file.path): r.transcript.text for r in engine.transcribe([InputFile(f) for f in files])}
    plain_s = time.perf_counter() - t0
    print(f"plain CLI engine: {plain_s:.1f} s ({audio_s / plain_s:.1f} audio-s/s), model load included")
    del engine

    counts = [int(w) for w in args.workers.split(",")]
    t0 = time.perf_counter()
    ray.init(
        address=args.address,
        num_cpus=None if args.address else max(os.cpu_count() or 1, max(counts) + 1),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
    )
    print(f"ray.init: {time.perf_counter() - t0:.1f} s")
    speeds = {}
    first_dir = None
    for n in counts:
        out = work / f"ray_{n}"
        summary = transcribe(
            [str(f) for f in files], out, options=options, workers=n, files_per_batch=args.files_per_batch
        )
        results = read_results(out)
        same = sum(results[str(f)]["text"] == plain[str(f)] for f in files if str(f) in results)
        speeds[n] = summary.speed
        print(
            f"ray, {n} model worker(s): {summary.seconds:.1f} s, {summary.speed:.1f} audio-s/s "
            f"({summary.ok} ok, {len(summary.failed)} failed); transcripts equal to the plain run: {same}/{len(files)}"
        )
        first_dir = first_dir or out
    if len(counts) > 1:
        base = counts[0]
        for n in counts[1:]:
            print(f"throughput {n} vs {base} worker(s): {speeds[n] / speeds[base]:.2f}x")
    t0 = time.perf_counter()
    again = transcribe([str(f) for f in files], first_dir, options=options, workers=counts[0])
    print(
        f"re-run on {first_dir.name}: {again.skipped} skipped, {again.processed} processed in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
