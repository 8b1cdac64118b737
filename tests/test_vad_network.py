"""Silero VAD's network in torch (w2vlm.engine.silero): probabilities on the example recordings, quiet speech, rows
and their gains, against the wheel's own model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vad_helpers import (
    RATE,
    joined_with_gaps,
    needs_vad,
    noise_floor,
    reference_probs,
    silence,
    speech_span,
    to_vad_rate,
)
from w2vlm.engine import silero as vadnet


def test_probabilities_are_high_in_speech_and_low_in_silence(silero: vadnet.SileroVad, clips: list[np.ndarray]) -> None:
    for clip in clips:
        low = to_vad_rate(np.concatenate([silence(1.0), clip, silence(1.5)]))
        probs = silero.probs(low)
        assert probs.dtype == np.float32 and probs.shape == (low.size // 256,)
        assert ((probs >= 0) & (probs <= 1)).all()
        lo, hi = speech_span(clip)
        first = math.ceil((RATE + lo) / 512)  # frames (32 ms) wholly inside the speech
        last = (RATE + hi) // 512
        inside = probs[first:last]
        assert inside.mean() > 0.75 and (inside > 0.5).mean() > 0.9
        assert probs[: RATE // 512 - 2].max() < 0.05  # digital silence before the clip
        after = math.ceil((RATE + clip.size) / 512) + 10  # from 0.3 s after its end
        assert probs[after:].max() < 0.1


@needs_vad
@pytest.mark.parametrize("peak_dbfs", [-45.0, -55.0])
def test_quiet_speech_is_found(silero: vadnet.SileroVad, clips: list[np.ndarray], peak_dbfs: float) -> None:
    """Silero's network is level-sensitive: the wheel's own model finds under half of the speech frames of the
    example clips scaled to a loudest frame at -45 dBFS (a quarter at -55). Each row of the VAD's input is raised
    towards LEVEL_DBFS first, so a quiet recording is found nearly as the same recording at its own level."""
    gaps = [silence(1.0), *[noise_floor(1.2, k) for k in range(3)], silence(1.0)]
    audio, spans = joined_with_gaps(clips, gaps)
    low = to_vad_rate(audio)
    loudest = np.sqrt((low.reshape(-1, 256).astype(np.float64) ** 2).mean(axis=1)).max()
    quiet = (low * (10 ** (peak_dbfs / 20) / loudest)).astype(np.float32)
    speech = np.zeros(low.size // 256, bool)
    for lo, hi in spans:
        speech[math.ceil(lo / 512) : hi // 512] = True
    wheel = reference_probs(quiet)
    assert (wheel[speech] > 0.5).mean() < 0.5  # what the level costs without the gain
    ours, loud = silero.probs(quiet), silero.probs(low)
    assert (ours[speech] > 0.5).mean() > 0.8
    assert ((ours > 0.5) == (loud > 0.5)).mean() > 0.85
    assert (ours[~speech] > 0.5).mean() <= (loud[~speech] > 0.5).mean() + 0.02  # no more speech in the gaps


def test_row_gains_raise_quiet_rows_only() -> None:
    own = np.zeros((6, 256), np.float32)
    own[0:2] = 0.3  # -10 dBFS: left as it is
    own[2:4] = 10 ** (-50 / 20)  # 20 dB under the level: raised by 20 dB
    own[4] = 10 ** (-70 / 20)  # a noise floor: raised by at most MAX_GAIN_DB
    index = np.array([[0, 2, 4, 5], [1, 3, 6, 6]])  # 6: no audio
    gains = 20 * np.log10(vadnet._row_gains(own, index))
    np.testing.assert_allclose(gains, [0.0, 20.0, vadnet.MAX_GAIN_DB, vadnet.MAX_GAIN_DB], atol=1e-4)


@needs_vad
def test_a_call_at_a_row_of_another_gain_gives_the_probabilities_of_one_call(
    silero: vadnet.SileroVad, clips: list[np.ndarray]
) -> None:
    """Rows of different gains (a loud clip, then the same quiet): each row's warm-up frames are computed at the
    row's own gain, so a call that starts at any whole row, given the audio before it, still gives the numbers of
    one call over the whole input."""
    loud = to_vad_rate(np.concatenate([clips[0], silence(0.5), clips[1]]))
    quiet = to_vad_rate(np.concatenate([silence(0.3), 0.005 * clips[2], silence(0.5), 0.005 * clips[3]]))
    low = np.concatenate([loud, quiet, loud[: 3 * vadnet.ROW_FRAMES * 256], quiet])  # calls with quiet rows only
    probs = silero.probs(low)
    rows = -(-probs.size // vadnet.ROW_FRAMES)
    assert rows >= 5
    for row in range(1, rows):
        at = row * vadnet.ROW_FRAMES * 256
        # to rounding: torch's kernels round a frame or two by ~1e-8 differently when a call starts at some rows
        # (the same without the gain); a warm-up at the wrong gain moves probabilities by up to ~1
        np.testing.assert_allclose(silero.probs(low[at:], low[:at]), probs[row * vadnet.ROW_FRAMES :], atol=1e-6)


@needs_vad
def test_probabilities_of_short_inputs(silero: vadnet.SileroVad) -> None:
    assert silero.probs(np.zeros(255, np.float32)).size == 0
    assert silero.probs(np.zeros(256 * 3 + 100, np.float32)).size == 3  # whole frames only


@needs_vad
def test_batched_probabilities_follow_a_continuous_run(silero: vadnet.SileroVad, clips: list[np.ndarray]) -> None:
    """probs() runs rows of ROW_FRAMES frames as one batch, each from a fresh state warmed up on the audio before
    it; its decisions are mostly those of one continuous frame-by-frame run with the state carried through the
    whole input, and where they differ, the fresh states find speech that the carried state misses (none in the
    silence)."""
    audio, spans = joined_with_gaps(clips * 2, [silence(1.0)] * 9)
    low = to_vad_rate(audio)
    probs = silero.probs(low)
    reference = reference_probs(low)
    assert probs.size == reference.size > 2 * vadnet.ROW_FRAMES  # several rows
    speech = np.zeros(probs.size, bool)  # frames inside the clips' speech
    for lo, hi in spans:
        speech[math.ceil(lo / 512) : hi // 512] = True
    ours, theirs = probs > 0.5, reference > 0.5
    assert (ours == theirs).mean() >= 0.94
    assert (ours == speech).mean() >= (theirs == speech).mean()  # at least as right as the continuous run
    assert (ours & ~theirs & ~speech).sum() <= 0.01 * probs.size  # no speech the continuous run does not see
    assert np.abs(probs - reference).mean() < 0.055
    # a call that starts at a whole row, given the audio before it, gives the same probabilities as one call
    for row in (1, 2):
        at = row * vadnet.ROW_FRAMES * 256
        np.testing.assert_array_equal(silero.probs(low[at:], low[:at]), probs[row * vadnet.ROW_FRAMES :])
    # the first row starts at the input's start, like the reference (after warm-up frames of zeros)
    first = slice(0, vadnet.ROW_FRAMES)
    assert np.abs(probs[first] - reference[first]).max() < 0.1


@needs_vad
@pytest.mark.parametrize("rate", [8000, 16000])
def test_network_is_the_wheels_model(rate: int, clips: list[np.ndarray]) -> None:
    """The batched network (the STFT, convolutions and input gates over all frames, the native recurrence) gives
    the numbers of the wheel's TorchScript model run frame by frame, and of its ONNX model where onnxruntime is
    installed."""
    import soxr
    import torch

    audio = np.concatenate([silence(0.5), clips[0], noise_floor(0.7, 3), clips[2]])
    audio = audio if rate == RATE else soxr.resample(audio, RATE, rate).astype(np.float32)
    frame, context = vadnet.RATES[rate]
    frames = audio.size // frame
    signal = np.concatenate([np.zeros(context, np.float32), audio])
    windows = np.stack([signal[k * frame : k * frame + context + frame] for k in range(frames)])
    net = vadnet.SileroVad(rate=rate).network
    with torch.inference_mode():
        gates = torch.empty(frames, net.w_hh.shape[1])
        net.encode(torch.from_numpy(windows), gates)
        ours = net.recur(gates, np.arange(frames)[:, None])[:, 0]  # one row, zero state
    reference = reference_probs(audio, rate)
    assert ours.shape == reference.shape and reference.max() > 0.9 and reference.min() < 0.1
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(vadnet.model_path().with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    onnx = []
    for k in range(frames):
        prob, state = session.run(None, {"input": windows[k][None], "state": state, "sr": np.array(rate, np.int64)})
        onnx.append(float(prob[0, 0]))
    np.testing.assert_allclose(ours, np.array(onnx, np.float32), atol=2e-5)


@needs_vad
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script / save, to make a file of another layout
def test_a_model_file_of_another_layout_is_a_named_error(tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "other.jit"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(bad))
    with pytest.raises(vadnet.VadUnavailable, match=r"other\.jit: not a layout"):
        vadnet.SileroVad(bad)
    (tmp_path / "junk.jit").write_bytes(b"\x00" * 63)
    with pytest.raises(vadnet.VadUnavailable, match=r"junk\.jit"):
        vadnet.SileroVad(tmp_path / "junk.jit")


# ------------------------------------------------------------------------------------------------ SpeechFinder
