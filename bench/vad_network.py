"""The VAD network's CPU cost, part by part, against torch's own LSTM measured in the same run.

    python bench/vad_network.py                  # 2 minutes of 15 s inputs and one 2-minute input
    python bench/vad_network.py --minutes 10 --repeats 7

The inputs are ``bench/engine.py``'s corpus files (the example clips joined with gaps and a little noise), at the
VAD's 8 kHz. One thread, CPU time (``time.thread_time``), fastest of ``--repeats``, in ms per audio second:

* ``SileroVad.probs`` whole, on the 15 s inputs one call each and on all of them as one input;
* its parts on the same rows: the encoder up to the LSTM's input gates (``SileroNetwork.encode``), and the
  recurrence with the read-out (``SileroNetwork.recur``, native);
* the reference: ``torch.nn.LSTM`` with the same weights over the same rows from the encoder's last convolution
  (its input projection included, as torch runs it), the read-out in torch; and the largest difference between
  its probabilities and the native ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import make_corpus


def fastest(repeats: int, body: Callable[[], object]) -> float:
    """The least thread CPU seconds of ``repeats`` calls of ``body`` (after one warm-up call)."""
    body()
    best = float("inf")
    for _ in range(repeats):
        t = time.thread_time()
        body()
        best = min(best, time.thread_time() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="audio in the corpus")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    import soxr
    import torch

    from w2vlm.audio import load_audio
    from w2vlm.engine.silero import ROW_FRAMES, WARMUP_FRAMES, SileroVad
    from w2vlm.memory import tune_allocator

    tune_allocator()  # as the commands run it
    torch.set_num_threads(1)  # as the engine's reading workers run it
    vad = SileroVad()
    net = vad.network
    with tempfile.TemporaryDirectory() as tmp:
        files = make_corpus(Path(tmp), args.minutes)
        inputs = []
        for f in files:
            low = soxr.resample(load_audio(str(f), 16000), 16000, vad.rate).astype(np.float32)
            inputs.append(low[: low.size // vad.frame * vad.frame])
    seconds = sum(x.size for x in inputs) / vad.rate
    joined = np.concatenate(inputs)
    print(f"{len(inputs)} inputs, {seconds / 60:.1f} min at {vad.rate} Hz; {args.repeats} repeats, one thread")

    def per_audio_s(cpu: float) -> float:
        return 1e3 * cpu / seconds

    whole = fastest(args.repeats, lambda: [vad.probs(x) for x in inputs])
    long = fastest(args.repeats, lambda: vad.probs(joined))
    print(
        f"SileroVad.probs: 15 s inputs {per_audio_s(whole):.3f} ms CPU per audio s, one input {per_audio_s(long):.3f}"
    )

    # the parts, on the rows of each input (no warm-up audio at an input's start: the rows' first steps read the
    # window of zeros, as probs does)
    jobs = []
    for x in inputs:
        signal = np.concatenate([np.zeros(vad.context, np.float32), x])
        n = x.size // vad.frame
        windows = np.lib.stride_tricks.sliding_window_view(signal, vad.context + vad.frame)[:: vad.frame][:n]
        windows = np.concatenate([windows, np.zeros((1, windows.shape[1]), np.float32)])
        rows = -(-n // ROW_FRAMES)
        index = np.arange(WARMUP_FRAMES + ROW_FRAMES)[:, None] + (np.arange(rows) * ROW_FRAMES - WARMUP_FRAMES)
        jobs.append((torch.from_numpy(np.ascontiguousarray(windows)), np.where((index >= 0) & (index < n), index, n)))

    def encode() -> list[torch.Tensor]:
        out = []
        for windows, _ in jobs:
            gates = torch.empty(windows.shape[0], net.w_hh.shape[1])
            net.encode(windows, gates)
            out.append(gates)
        return out

    with torch.inference_mode():
        gates = encode()
        t_encode = fastest(args.repeats, encode)
        native = [net.recur(g, index) for g, (_, index) in zip(gates, jobs, strict=True)]
        t_recur = fastest(args.repeats, lambda: [net.recur(g, i) for g, (_, i) in zip(gates, jobs, strict=True)])

        # the reference: torch's LSTM from the last convolution's output (its input projection inside)
        hidden = net.w_hh.shape[0]
        lstm = torch.nn.LSTM(hidden, hidden)
        lstm.weight_ih_l0.data.copy_(net.gates[0].T)
        lstm.weight_hh_l0.data.copy_(torch.from_numpy(net.w_hh).T)
        lstm.bias_ih_l0.data.copy_(net.gates[1])
        lstm.bias_hh_l0.data.zero_()
        out_w, out_b = torch.from_numpy(net.out_weight), net.out_bias

        feats = [net.features(windows) for windows, _ in jobs]
        rows_in = [f[torch.from_numpy(index)] for f, (_, index) in zip(feats, jobs, strict=True)]
        t_proj = fastest(args.repeats, lambda: [torch.addmm(net.gates[1], f, net.gates[0]) for f in feats])

        def reference() -> list[torch.Tensor]:
            return [torch.sigmoid(torch.relu(lstm(r)[0]) @ out_w + out_b) for r in rows_in]

        t_torch = fastest(args.repeats, reference)
        diff = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(native, reference(), strict=True))
    print(f"  encoder up to the LSTM's input gates: {per_audio_s(t_encode):.3f} ms CPU per audio s")
    print(f"    of which the input gates' product (once per frame): {per_audio_s(t_proj):.3f}")
    print(
        f"  recurrence and read-out (native, rows of {ROW_FRAMES} + {WARMUP_FRAMES} steps): {per_audio_s(t_recur):.3f}"
    )
    print(
        f"  reference: torch.nn.LSTM over the same rows (its input projection for every step) and the read-out: "
        f"{per_audio_s(t_torch):.3f}"
    )
    ratio = t_torch / (t_proj + t_recur)
    print(
        f"the LSTM, input gates + native recurrence against torch's: {ratio:.2f}x; probabilities differ by {diff:.1e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
