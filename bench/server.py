"""Load figures of ``w2vlm serve``: throughput and p50/p95 latency for N concurrent requests.

Starts ``w2vlm serve`` as a subprocess on 127.0.0.1 (an ephemeral port), sends ``--rounds`` bursts of
``--concurrency`` simultaneous ``POST /v1/audio/transcriptions`` requests (bounded: rounds × concurrency
requests in all, loopback only), and reports per request latency (p50/p95/max), throughput (requests/s and
audio seconds per second) and failures. The anchor, measured in the same run on the same machine: the same
clips transcribed one after another in this process by ``w2vlm.pipeline`` (no HTTP), so the ratio tells what
the server's concurrency gains or its HTTP/queueing costs.

    python bench/server.py                          # the embedded default model, examples/*.wav
    python bench/server.py --model DIR --audio a.wav b.wav --concurrency 50 --rounds 3 --workers 2

Measured on 2026-11-25 on the 2-core development machine (shared: load average 1.7-2.9 from other jobs),
the embedded model's architecture and final training weights (wav2vec2 "small" preset, 2.13 M parameters,
fp16) with its 3-gram ARPA LM, beam width 100, the four examples/*.wav (3.2 s mean), 3 bursts of 50
concurrent requests, response_format json: 150 requests, 0 failures, 0 transcripts differing from the
pipeline's; 63.8 requests/s (202 audio seconds per second); latency p50 0.43 s, p95 0.79 s, max 0.90 s;
1.00x the in-process sequential pipeline's rate measured in the same run (63.8 requests/s). With --workers 4:
37.2 requests/s, p50 0.67 s, p95 1.24 s (more threads than cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "w2vlm.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(args.workers), "--max-queue", str(max(args.concurrency, 64)), "--log-level", "warning"]
    cmd += ["--beam-width", str(args.beam_width)]
    if args.model:
        cmd += ["--model", args.model, "--model-name", "bench"]
    else:
        cmd += ["--model-name", "bench"]
    env = dict(os.environ)
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"the server exited with code {proc.returncode}:\n{err[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit("the server did not start in time")


def burst(url: str, clips: list[tuple[str, bytes]], concurrency: int) -> tuple[float, list[tuple[float, int, str]]]:
    """``concurrency`` requests released at once; returns (wall seconds, [(latency, status, text)])."""
    barrier = threading.Barrier(concurrency)
    clients = [httpx.Client(timeout=600) for _ in range(concurrency)]

    def one(i: int) -> tuple[float, int, str]:
        name, data = clips[i % len(clips)]
        barrier.wait()
        t0 = time.perf_counter()
        try:
            r = clients[i].post(
                f"{url}/v1/audio/transcriptions",
                data={"model": "bench"},
                files={"file": (name, data, "audio/wav")},
            )
            status, text = r.status_code, (r.json().get("text", "") if r.status_code == 200 else r.text)
        except httpx.HTTPError as exc:
            status, text = -1, repr(exc)
        return time.perf_counter() - t0, status, text

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, range(concurrency)))
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    return wall, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the embedded model)")
    ap.add_argument("--audio", nargs="*", default=None, help="audio files (default: examples/*.wav)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--beam-width", type=int, default=100)
    ap.add_argument("--torch-threads", type=int, default=0, help="OMP_NUM_THREADS for the server (0: default)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if not 1 <= args.concurrency <= 500 or not 1 <= args.rounds <= 20:
        raise SystemExit("--concurrency must be in 1..500 and --rounds in 1..20 (a bounded load)")

    paths = [Path(p) for p in args.audio] if args.audio else sorted((ROOT / "examples").glob("*.wav"))
    if not paths:
        raise SystemExit("no audio: pass --audio FILES (examples/*.wav not found)")
    clips = [(p.name, p.read_bytes()) for p in paths]

    import w2vlm
    from w2vlm.audio import load_audio

    # anchor: the same clips, one after another, in this process (no HTTP, no concurrency)
    pipe = w2vlm.pipeline("automatic-speech-recognition", model=args.model, device="cpu")
    pipe.decoder_kwargs = {"beam_width": args.beam_width}
    arrays = [load_audio(data, 16000) for _, data in clips]
    audio_s = {name: a.size / 16000 for (name, _), a in zip(clips, arrays)}
    expected = {name: pipe(a)["text"] for (name, _), a in zip(clips, arrays)}  # warm-up too
    n_anchor = max(len(arrays), min(args.concurrency, 20))

    def sequential() -> float:
        t0 = time.perf_counter()
        for i in range(n_anchor):
            pipe(arrays[i % len(arrays)])
        return (time.perf_counter() - t0) / n_anchor

    # on a worker thread, as the server runs the model: torch's OpenMP forward on the main thread can be
    # several times slower on a loaded 2-core machine (its 2-thread team waits on the busy core)
    with ThreadPoolExecutor(max_workers=1) as one_thread:
        anchor_s = one_thread.submit(sequential).result()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args, port)
    try:
        wait_ready(proc, url)
        burst(url, clips, min(4, args.concurrency))  # warm-up
        latencies: list[float] = []
        walls: list[float] = []
        failures = mismatches = 0
        total_audio = 0.0
        for _ in range(args.rounds):
            wall, results = burst(url, clips, args.concurrency)
            walls.append(wall)
            for i, (lat, status, text) in enumerate(results):
                name = clips[i % len(clips)][0]
                latencies.append(lat)
                total_audio += audio_s[name]
                failures += status != 200
                mismatches += status == 200 and text != expected[name]
        health = httpx.get(f"{url}/health").json()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    n = len(latencies)
    busy = sum(walls)
    figures = {
        "model": args.model or "embedded default",
        "clips": len(clips),
        "mean_clip_s": round(statistics.mean(audio_s.values()), 2),
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "workers": args.workers,
        "beam_width": args.beam_width,
        "requests": n,
        "failures": failures,
        "transcripts_differing_from_pipeline": mismatches,
        "throughput_req_s": round(n / busy, 2),
        "throughput_audio_s_per_s": round(total_audio / busy, 1),
        "latency_p50_s": round(percentile(latencies, 0.5), 3),
        "latency_p95_s": round(percentile(latencies, 0.95), 3),
        "latency_max_s": round(max(latencies), 3),
        "anchor_in_process_sequential_s_per_request": round(anchor_s, 4),
        "anchor_throughput_req_s": round(1 / anchor_s, 2),
        "server_vs_anchor_throughput": round((n / busy) * anchor_s, 2),
        "server_rejected": health.get("rejected"),
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    for key, value in figures.items():
        print(f"{key:45s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
