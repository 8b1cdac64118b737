"""Silero VAD's network in torch and the native core, run over a whole stretch of audio at once.

Silero VAD (the ``silero-vad`` wheel, v5/v6 layout) gives a speech probability per 32 ms frame: a magnitude STFT
of the frame (with the end of the frame before it as context), four convolutions with ReLU, an LSTM cell, and a
1x1 convolution with a sigmoid. Only the LSTM carries state from one frame to the next. The wheel's own runners
(ONNX or TorchScript) take one frame per call, which costs far more in calls than in arithmetic (on a 15 s input
~4 ms of CPU per audio second). :class:`SileroVad` instead runs the STFT, the convolutions and the LSTM's input
gates over every frame of its input as one batch (torch), and the LSTM's recurrence (``w2vlm._core.lstm_readout``)
over rows of :data:`ROW_FRAMES` frames, each row first seeing :data:`WARMUP_FRAMES` frames of the audio before it so
that its state has settled by the row's first frame. The weights are the wheel's (read from its TorchScript file,
the one file that holds the 8 kHz network); the numbers match the wheel's model run frame by frame to a few 1e-6
wherever the state is the same (``tests/test_vad_network.py`` checks the TorchScript and the ONNX model to 2e-5, at
8 and 16 kHz).

It runs at 8 kHz, where a frame is 256 samples, for half the work of 16 kHz. Each row (with its warm-up) is first
raised towards :data:`LEVEL_DBFS` when its loudest frame is quieter than that: the network is level-sensitive, and
quiet recordings lost whole utterances without it.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.errors import W2vlmError

#: Seconds per VAD frame, and the rate the VAD runs at.
FRAME_S = 0.032
VAD_RATE = 8000
#: the rates Silero VAD runs at: samples per frame, and samples of the previous frame each frame sees
RATES = {8000: (256, 32), 16000: (512, 64)}
#: Frames per row of the recurrent pass (4.1 s), and frames of warm-up each row sees before its first frame. Rows
#: are short on purpose: the LSTM's state, carried over a long quiet stretch, can stay at "no speech" through
#: the speech after it (the wheel's own frame-by-frame model gives under 0.1 on all 6 s of an utterance that 1.7
#: s of near-silence precede, where the same network from a fresh state 0.5 s before it gives 0.5-0.9); each
#: row starts afresh. On the long files of ``bench/longform.py`` 4 s rows had 5 % fewer word errors in all than
#: 8 s rows, with less time (fewer steps in sequence); 2 s rows were no better, and longer warm-ups worse.
ROW_FRAMES = 128
WARMUP_FRAMES = 16
#: Level the VAD's input is raised to, row by row: a row (with its warm-up) whose loudest frame is quieter than
#: :data:`LEVEL_DBFS` is amplified until it is at that level, by at most :data:`MAX_GAIN_DB`. Silero's network is
#: level-sensitive: the example clips scaled to a loudest frame of -45 dBFS get probabilities over 0.5 on under half
#: of their speech frames (a quarter at -55 dBFS), and a held-out utterance at -36 to -44 dBFS got 0.01 where the
#: same utterance 20 dB louder got 0.9 (a quiet recording lost most of its text with the VAD on). Rows at ordinary
#: levels (most speech peaks above -30 dBFS) are not changed, and a row of pure noise floor stays far below speech
#: levels (a -70 dBFS floor reaches -46 dBFS).
LEVEL_DBFS = -30.0
MAX_GAIN_DB = 24.0
#: Frames encoded as one batch (their intermediates stay in cache; bounds memory on long inputs).
_ENCODE_BATCH = 512
_MODEL_FILE = "silero_vad.jit"


class VadUnavailable(W2vlmError, RuntimeError):
    """Voice activity detection was asked for, but the ``vad`` extra is not installed (or its model is not one
    this version of w2vlm can run)."""


@functools.cache  # a found file is remembered (the engine asks once per input); a missing one is looked for again
def model_path() -> Path:
    """Silero VAD's TorchScript file inside the installed ``silero-vad`` wheel (found without importing the
    package, whose import changes torch's thread count)."""
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "data" / _MODEL_FILE
        if path.is_file():
            return path
    raise VadUnavailable("voice activity detection needs the 'vad' extra (silero-vad): pip install 'w2vlm[vad]'")


def available() -> bool:
    """Whether Silero VAD is installed."""
    try:
        model_path()
    except VadUnavailable:
        return False
    return True


class SileroNetwork:
    """The weights of Silero VAD's network for one rate, and its two halves: :meth:`encode` (per frame, no
    state: :meth:`features`, then the LSTM's input gates) and :meth:`recur` (the LSTM's recurrence and the
    output layer over rows of frames).

    The STFT is a Hann-windowed DFT (the wheel keeps it as a convolution basis; here it is an FFT of the windowed
    frames), and each convolution (kernel 3, padding 1) is a matrix product per output step over the slice of a
    frame's channel-last input its taps read (the whole VAD 10-25 % faster than with torch's convolutions; one
    product over the whole input, zeros included, was 15-35 % slower in the first two layers, and column copies
    slower still). The recurrence is native: torch's LSTM ran the input projection again for every row's warm-up
    and each step as separate small operators (on an AVX2 CPU 1.18x the time of the gates' product and this
    recurrence, ``bench/vad_network.py``; the VAD as a whole took 1.16-1.25x its time now)."""

    def __init__(self, path: Path, rate: int) -> None:
        import torch

        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; the wheel ships its weights so
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.load(str(path), map_location="cpu")
            net = scripted._model_8k if rate == 8000 else scripted._model
            weights = {k: v.detach().float().clone() for k, v in net.state_dict().items()}
            basis = weights["stft.forward_basis_buffer"][:, 0, :]  # (2 * bins, window): Hann x [cos; -sin]
            self.hop = int(net.stft.hop_length)
            self.pad = int(net.stft.padding.padding[1])  # reflected on the right only
            self.window = basis[0].clone()  # the k = 0 row: the window itself
            length = basis.shape[1]
            n = torch.arange(length, dtype=torch.float64)
            k = torch.arange(length // 2 + 1, dtype=torch.float64)[:, None]
            dft = torch.cat([torch.cos(2 * torch.pi * k * n / length), -torch.sin(2 * torch.pi * k * n / length)])
            if (
                basis.shape[0] != 2 * (length // 2 + 1)
                or (basis.double() - self.window.double() * dft).abs().max() > 1e-5
            ):
                raise ValueError("the STFT basis is not a windowed DFT")
            # each layer as matrices over a frame's whole (steps x channels) input: a frame has only a few steps
            # (4, 2, 1, 1 at 8 kHz), so the convolution (kernel 3, padding 1) is a small dense map, with zeros where
            # a tap reads the padding or another output step. Each output step is one product over the input steps
            # its taps read (a contiguous slice of the input: the zeros, 3/8 of the first two layers, are skipped)
            frame, context = RATES[rate]
            steps = (frame + context + self.pad - length) // self.hop + 1
            self.layers: list[list[tuple[int, int, Any, Any]]] = []
            for i in range(4):
                conv = getattr(net.encoder, str(i)).reparam_conv
                w, b = weights[f"encoder.{i}.reparam_conv.weight"], weights[f"encoder.{i}.reparam_conv.bias"]
                stride = int(conv.stride[0])
                if w.shape[2] != 3 or int(conv.padding[0]) != 1:
                    raise ValueError(f"encoder layer {i}: kernel {w.shape[2]}, padding {conv.padding[0]}")
                cin, out = w.shape[1], (steps - 1) // stride + 1
                products = []
                for t in range(out):
                    taps = [tap for tap in range(3) if 0 <= tap + stride * t - 1 < steps]
                    first = taps[0] + stride * t - 1  # the first input step read
                    dense = torch.zeros(len(taps), cin, w.shape[0])
                    for n, tap in enumerate(taps):
                        dense[n] = w[:, :, tap].T
                    products.append((first * cin, (first + len(taps)) * cin, dense.reshape(-1, w.shape[0]), b))
                self.layers.append(products)
                steps = out
            hidden = weights["decoder.rnn.weight_hh"].shape[1]
            # the LSTM's input gates as the encoder's last product (once per frame; both biases in it), and its
            # recurrent weights transposed for the native recurrence (w2vlm._core.lstm_readout)
            self.gates = (
                weights["decoder.rnn.weight_ih"].T.contiguous(),
                weights["decoder.rnn.bias_ih"] + weights["decoder.rnn.bias_hh"],
            )
            self.w_hh = weights["decoder.rnn.weight_hh"].T.contiguous().numpy()
            self.out_weight = weights["decoder.decoder.2.weight"][0, :, 0].contiguous().numpy()  # (hidden,)
            self.out_bias = float(weights["decoder.decoder.2.bias"][0])
            last = self.layers[-1]
            if int(net.context_size_samples) != context or steps != 1 or last[0][2].shape[1] != hidden:
                raise ValueError("unexpected frame context or layer sizes")
            if self.gates[0].shape != (hidden, 4 * hidden) or hidden % 4:
                raise ValueError(f"unexpected LSTM sizes {tuple(self.gates[0].shape)}")
        except (RuntimeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            raise VadUnavailable(f"Silero VAD model {path}: not a layout w2vlm can run ({exc})") from exc

    def encode(self, windows: Any, out: Any) -> None:
        """The LSTM's input gates per frame of ``windows`` (frames, context + frame samples) into ``out`` (frames,
        4 hidden)."""
        import torch

        torch.addmm(self.gates[1], self.features(windows), self.gates[0], out=out)

    def features(self, windows: Any) -> Any:
        """The encoder's output per frame of ``windows``, (frames, hidden): what the LSTM takes as its input."""
        import torch
        import torch.nn.functional as F

        n = windows.shape[0]
        x = F.pad(windows[:, None], (0, self.pad), mode="reflect")[:, 0]
        spec = torch.fft.rfft(x.unfold(1, self.window.numel(), self.hop) * self.window)
        # (n, steps, bins), as the wheel computes it (abs: 3x slower); in place, the same numbers with fewer buffers
        x = spec.real.square().add_(spec.imag.square()).sqrt_().reshape(n, -1)
        for products in self.layers:
            width = products[0][2].shape[1]
            y = torch.empty(n, width * len(products))
            for t, (lo, hi, matrix, bias) in enumerate(products):
                torch.addmm(bias, x[:, lo:hi], matrix, out=y[:, t * width : (t + 1) * width])
            x = y.relu_()
        return x

    def recur(self, gates: Any, index: np.ndarray) -> np.ndarray:
        """Speech probabilities, (steps, rows), of rows that each start from zero state and read, step by step, the
        rows of the table of input ``gates`` (frames, 4 hidden) that ``index`` (steps, rows) gives. The native
        recurrence computes each row the same way whatever the others: a frame gets the same number in any call,
        and the segments do not depend on how an input is read."""
        from w2vlm import _core

        index = np.ascontiguousarray(index, dtype=np.int64)
        z = _core.lstm_readout(gates.numpy(), index, self.w_hh, self.out_weight, self.out_bias)
        with np.errstate(over="ignore"):  # exp(-z) = inf where z < -88: a probability of 0
            return (1.0 / (1.0 + np.exp(-z))).astype(np.float32, copy=False)


class SileroVad:
    """Speech probabilities per 32 ms frame of 8 kHz audio. One instance serves many threads."""

    _shared: SileroVad | None = None
    _shared_lock = threading.Lock()

    def __init__(self, path: str | Path | None = None, rate: int = VAD_RATE) -> None:
        if rate not in RATES:
            raise ValueError(f"rate: Silero VAD runs at {sorted(RATES)} Hz; got {rate}")
        self.rate = rate
        self.frame, self.context = RATES[rate]
        self.network = SileroNetwork(Path(path) if path is not None else model_path(), rate)

    @classmethod
    def shared(cls) -> SileroVad:
        """One loaded VAD for the process."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _encode(self, windows: np.ndarray, out: Any) -> None:
        """The LSTM's input gates per frame of ``windows`` (at least two) into ``out``, in batches of
        :data:`_ENCODE_BATCH` (never a last batch of one)."""
        import torch

        cut = list(range(_ENCODE_BATCH, windows.shape[0] + 1, _ENCODE_BATCH))
        if cut and windows.shape[0] - cut[-1] < 2:
            cut.pop()
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        for lo, hi in zip([0, *cut], [*cut, windows.shape[0]], strict=True):
            self.network.encode(torch.from_numpy(windows[lo:hi]), out[lo:hi])

    def probs(self, audio: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """Probabilities for the whole frames of ``audio`` (at :attr:`rate`, a multiple of :attr:`frame` samples),
        given the ``before`` audio that precedes it (at most ``WARMUP_FRAMES`` frames and the :attr:`context`
        samples before them are used; none at an input's start). With that much ``before``, a call that starts at
        a whole row of an input gives the probabilities of one call over the whole input. A call should also end
        at a whole row or at the input's end: a row's gain (:data:`LEVEL_DBFS`) depends on all of its audio, so a
        frame's probability can change with up to one row of audio after it."""
        import torch

        frame_len, context_len = self.frame, self.context
        frames = audio.size // frame_len
        if frames == 0:
            return np.zeros(0, np.float32)
        warm = 0 if before is None else min(WARMUP_FRAMES, before.size // frame_len)
        head = before[before.size - warm * frame_len :] if warm else np.zeros(0, np.float32)
        lead = np.zeros(context_len, np.float32)  # what the first frame sees of the audio before it
        if before is not None:
            known = before[: before.size - warm * frame_len][-context_len:]
            lead[context_len - known.size :] = known
        signal = np.concatenate([lead, head, audio[: frames * frame_len]], dtype=np.float32)
        total = warm + frames  # frames of head + audio; frame j's window starts at signal[j * frame_len]
        windows = np.lib.stride_tricks.sliding_window_view(signal, context_len + frame_len)[::frame_len][:total]
        # window `total` has no audio (the steps before the input's start and past its end). Batches of one take
        # other kernels in torch (rounding differs by ~1e-7), so every batch has two or more members: the same
        # frame gives the same numbers whatever call it is in
        windows = np.concatenate([windows, np.zeros((1, context_len + frame_len), np.float32)])
        # row r covers frames [r·ROW, (r+1)·ROW) of audio, preceded by up to WARMUP frames; `total` (no audio) pads
        rows = -(-frames // ROW_FRAMES)
        steps = WARMUP_FRAMES + ROW_FRAMES
        index = np.arange(steps)[:, None] + (np.arange(rows) * ROW_FRAMES + warm - WARMUP_FRAMES)[None, :]
        index = np.where((index >= 0) & (index < total), index, total)
        gain = _row_gains(signal[context_len : context_len + total * frame_len].reshape(total, frame_len), index)
        # each frame is encoded once with the gain of the row it belongs to (head frames: the first row's, whose
        # warm-up they are); the warm-up frames of a row whose gain differs from that are encoded again with the
        # row's own gain, so that every row sees its audio at one level
        owner = np.empty(total + 1, np.float32)
        owner[:warm] = gain[0]
        owner[warm:total] = np.repeat(gain, ROW_FRAMES)[:frames]
        owner[total] = gain[0]  # the window without audio (zeros at any gain), in the first row's warm-up
        again = np.flatnonzero((owner[index[:WARMUP_FRAMES]] != gain).any(axis=0))
        network = self.network
        with torch.inference_mode():
            # one table of input gates: every window's (total + 1 rows), then the warm-ups encoded again, whose
            # entries of `index` are moved to their rows
            gates = torch.empty(total + 1 + again.size * WARMUP_FRAMES, network.w_hh.shape[1])
            self._encode(windows if (owner == 1.0).all() else windows * owner[:, None], gates[: total + 1])
            if again.size:
                warmups = [windows[index[:WARMUP_FRAMES, r]] * gain[r] for r in again]
                self._encode(np.concatenate(warmups), gates[total + 1 :])
                redone = total + 1 + np.arange(again.size * WARMUP_FRAMES).reshape(again.size, WARMUP_FRAMES)
                index[:WARMUP_FRAMES, again] = redone.T
            probs = network.recur(gates, index)  # (steps, rows)
        return np.ascontiguousarray(probs[WARMUP_FRAMES:].T).reshape(-1)[:frames]


def _row_gains(own: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Per row of ``index`` (steps, rows: frame numbers, ``own.shape[0]`` for no audio): the linear gain that
    brings the row's loudest frame (RMS of its own samples, ``own``: frames x samples) to :data:`LEVEL_DBFS`, at
    least 1 and at most :data:`MAX_GAIN_DB` decibels (float32; 1 where the row's level is not a number)."""
    power = np.einsum("ij,ij->i", own, own) / own.shape[1]
    peak = np.sqrt(np.append(power, 0.0)[index].max(axis=0), dtype=np.float64)
    target, most = 10.0 ** (LEVEL_DBFS / 20.0), 10.0 ** (MAX_GAIN_DB / 20.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(np.clip(target / peak, 1.0, most), nan=1.0).astype(np.float32)


__all__ = [
    "FRAME_S",
    "LEVEL_DBFS",
    "MAX_GAIN_DB",
    "RATES",
    "ROW_FRAMES",
    "VAD_RATE",
    "WARMUP_FRAMES",
    "SileroNetwork",
    "SileroVad",
    "VadUnavailable",
    "available",
    "model_path",
]
