"""What the engine's reading stage would give in worker processes instead of threads (issue 36's ceiling).

    python bench/reader_processes.py                  # 20 minutes of ~15 s files, 2 reading processes
    python bench/reader_processes.py --workers 4 --repeats 5

A measurement for a design decision, not a second engine. The engine reads its inputs (audio, VAD, features) in
threads of the calling process; on a 2-core machine the default ceiling (``bench/engine.py``) keeps only ~1.6 of
the CPUs busy, the readers spend ~30 % more CPU than alone, and each waits for the GIL. Here the same per-input
work, ``engine.inputs.units`` and ``runner.prepare`` of the engine ``w2vlm transcribe`` builds for the near-free
model of ``bench/engine.py``, runs in ``--workers`` processes (forkserver; each loads its own engine), their
features come back pickled, and the calling process runs the forward passes (batches of 24 windows sorted by
length) and greedy decoding of each window with the engine's own decoder (windows are not joined into per-input
transcripts: a few per cent of the engine's work that this leaves out). The reference, in the same run and on the
same files and model: ``engine.transcribe`` itself, greedy (the threads), fastest of ``--repeats`` each. Results
are not written, in both.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the commands set it up
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))

_worker: dict[str, Any] = {}


def _engine(model: str) -> Any:
    import torch

    from w2vlm.transcribe import TranscribeOptions, Transcriber

    torch.set_num_threads(1)
    return Transcriber(TranscribeOptions(model=model, no_lm=True)).engine


def _init(model: str) -> None:
    _worker["engine"] = _engine(model)


def _read(path: str) -> tuple[str, list[tuple[int, int, Any, int | None, float | None]]]:
    """One input's units as the engine's reading workers make them: (start, samples, features, valid, prob)."""
    from w2vlm.engine.inputs import InputInfo

    engine = _worker["engine"]
    out = []
    for start, audio, _right, _last, prob in engine.inputs.units(path, path, engine.config, False, InputInfo()):
        prepared = engine.runner.prepare(audio)
        out.append((start, audio.size, prepared.values.numpy(), prepared.valid, prob))
    return path, out


def in_processes(pool: Any, engine: Any, files: list[str], batch: int = 24) -> tuple[float, int]:
    """Seconds to read ``files`` in ``pool`` and run the model and greedy decoding here; windows decoded."""
    import torch

    from w2vlm.engine import DecodeConfig
    from w2vlm.engine.model_runner import Prepared

    config = DecodeConfig(use_lm=False)
    t = time.perf_counter()
    waiting: list[Any] = []
    decoded = 0

    def run(prepared: list[Any]) -> int:
        prepared.sort(key=lambda p: p.samples)
        outs = engine.runner.forward(prepared).result()
        for k, lp in enumerate(outs):
            engine.decoding.greedy(f"w{k}", lp, config)
        return len(outs)

    for _path, units in pool.imap_unordered(_read, files, chunksize=2):
        waiting += [Prepared(torch.from_numpy(v), n, True, valid) for _s, n, v, valid, _p in units]
        if len(waiting) >= batch:
            decoded += run(waiting)
            waiting = []
    if waiting:
        decoded += run(waiting)
    return time.perf_counter() - t, decoded


def in_threads(engine: Any, files: list[str]) -> float:
    from w2vlm.engine import DecodeConfig

    t = time.perf_counter()
    for tr in engine.transcribe(files, DecodeConfig(use_lm=False)):
        if tr.error:
            raise RuntimeError(f"{tr.audio}: {tr.error}")
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    import engine as bench_engine  # bench/engine.py: corpus and near-free model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="reading processes")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import torch

    from w2vlm.memory import tune_allocator

    tune_allocator()
    with tempfile.TemporaryDirectory(prefix="w2vlm-bench-readers-") as tmp:
        work = Path(tmp)
        files = [str(f) for f in bench_engine.make_corpus(work / "corpus", args.minutes)]
        model = str(bench_engine.random_model(work / "nearfree", "nearfree"))
        audio_s = args.minutes * 60
        engine = _engine(model)
        # the forward passes here on the model stage's threads, the count the command's engine config gives them
        torch.set_num_threads(engine.config.torch_threads or len(os.sched_getaffinity(0)))
        in_threads(engine, files[:4])  # warm-up
        threads = min(in_threads(engine, files) for _ in range(args.repeats))
        with mp.get_context("forkserver").Pool(args.workers, initializer=_init, initargs=(model,)) as pool:
            in_processes(pool, engine, files[:4])  # the workers' start-up and first calls
            runs = [in_processes(pool, engine, files) for _ in range(args.repeats)]
        procs = min(s for s, _ in runs)
        print(
            f"{len(files)} files, {args.minutes:g} min; load average {os.getloadavg()[0]:.2f} on "
            f"{len(os.sched_getaffinity(0))} CPUs"
        )
        print(f"readers in threads (engine.transcribe, greedy): {audio_s / threads:.0f} audio-s/s")
        print(
            f"readers in {args.workers} processes (model and greedy here): {audio_s / procs:.0f} audio-s/s "
            f"({threads / procs:.2f}x), {runs[0][1]} windows"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
