"""The native LSTM recurrence behind the VAD (``w2vlm._core.lstm_readout``) against an LSTM written out in numpy
(float64): values, rows that do not depend on each other, the table index, and bad shapes and indices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_core = pytest.importorskip("w2vlm._core")


def reference(gx: np.ndarray, index: np.ndarray, w_hh: np.ndarray, out_w: np.ndarray, out_b: float) -> np.ndarray:
    """PyTorch's LSTM gates (input, forget, cell, output) over each row from zero state, then relu(h) . out_w."""
    hidden = out_w.size
    steps, rows = index.shape
    h = np.zeros((rows, hidden))
    c = np.zeros((rows, hidden))
    z = np.zeros((steps, rows))

    def sigmoid(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-x))

    for t in range(steps):
        g = gx[index[t]].astype(np.float64) + h @ w_hh.astype(np.float64)
        i, f, cell, o = np.split(g, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(cell)
        h = sigmoid(o) * np.tanh(c)
        z[t] = np.maximum(h, 0.0) @ out_w.astype(np.float64) + out_b
    return z


def weights(hidden: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    w_hh = (rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(hidden)).astype(np.float32)
    out_w = (rng.standard_normal(hidden) * 0.3).astype(np.float32)
    return w_hh, out_w, float(rng.standard_normal())


def table(frames: int, hidden: int, seed: int, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((frames, 4 * hidden)) * scale).astype(np.float32)


@pytest.mark.parametrize("hidden", [128, 12, 4])  # 128: the VAD's (AVX2 where the CPU has it); 12 and 4: SSE2
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9])
def test_values_are_an_lstms(hidden: int, rows: int) -> None:
    steps = 40
    w_hh, out_w, out_b = weights(hidden, rows)
    gx = table(steps * rows, hidden, rows + 100)
    index = np.arange(steps * rows, dtype=np.int64).reshape(steps, rows)
    got = _core.lstm_readout(gx, index, w_hh, out_w, out_b)
    assert got.dtype == np.float32 and got.shape == (steps, rows)
    np.testing.assert_allclose(got, reference(gx, index, w_hh, out_w, out_b), atol=2e-5 * (1 + np.abs(out_w).sum()))


def test_a_row_gives_the_same_bits_alone_and_among_others() -> None:
    w_hh, out_w, out_b = weights(128, 0)
    gx = table(600, 128, 1)
    index = np.random.default_rng(2).integers(0, 600, size=(50, 7))
    together = _core.lstm_readout(gx, index, w_hh, out_w, out_b)
    for r in range(7):
        alone = _core.lstm_readout(gx, np.ascontiguousarray(index[:, r : r + 1]), w_hh, out_w, out_b)
        np.testing.assert_array_equal(alone[:, 0], together[:, r])
    rolled = _core.lstm_readout(gx, np.ascontiguousarray(np.roll(index, 3, axis=1)), w_hh, out_w, out_b)
    np.testing.assert_array_equal(np.roll(together, 3, axis=1), rolled)


def test_saturated_gates_stay_finite() -> None:
    w_hh, out_w, out_b = weights(16, 3)
    gx = table(30, 16, 4, scale=500.0)  # exp over- and underflows in every gate
    index = np.arange(30, dtype=np.int64).reshape(15, 2)
    got = _core.lstm_readout(gx, index, w_hh, out_w, out_b)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, reference(gx, index, w_hh, out_w, out_b), atol=1e-4)


def test_no_steps_or_no_rows_give_an_empty_result() -> None:
    w_hh, out_w, out_b = weights(8, 5)
    gx = table(3, 8, 6)
    assert _core.lstm_readout(gx, np.zeros((0, 2), np.int64), w_hh, out_w, out_b).shape == (0, 2)
    assert _core.lstm_readout(gx, np.zeros((4, 0), np.int64), w_hh, out_w, out_b).shape == (4, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"index": np.array([[0], [3]], np.int64)}, r"index 3 at 1 is outside the 3 frames"),
        ({"index": np.array([[-1]], np.int64)}, r"index -1 at 0 is outside"),
        ({"w_hh": np.zeros((8, 31), np.float32)}, r"w_hh is 8 x 31, expected 8 x 32"),
        ({"gx": np.zeros((3, 16), np.float32)}, r"gx has 16 gates a frame, expected 32"),
        ({"out_w": np.zeros(6, np.float32), "w_hh": np.zeros((6, 24), np.float32)}, r"hidden size 6 is not a multiple"),
        ({"index": np.zeros(3, np.int64)}, r"index \(steps, rows\)"),
    ],
)
def test_bad_shapes_and_indices_are_named_errors(change: dict[str, np.ndarray], message: str) -> None:
    w_hh, out_w, out_b = weights(8, 7)
    args = {"gx": table(3, 8, 8), "index": np.zeros((2, 1), np.int64), "w_hh": w_hh, "out_w": out_w} | change
    with pytest.raises(ValueError, match=message):
        _core.lstm_readout(args["gx"], args["index"], args["w_hh"], args["out_w"], out_b)


@settings(max_examples=40, deadline=None)
@given(
    hidden=st.sampled_from([4, 8, 12, 16, 32]),
    steps=st.integers(1, 12),
    rows=st.integers(1, 10),
    frames=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_the_reference(hidden: int, steps: int, rows: int, frames: int, seed: int) -> None:
    w_hh, out_w, out_b = weights(hidden, seed)
    gx = table(frames, hidden, seed + 1)
    index = np.random.default_rng(seed + 2).integers(0, frames, size=(steps, rows))
    got = _core.lstm_readout(gx, index, w_hh, out_w, out_b)
    np.testing.assert_allclose(got, reference(gx, index, w_hh, out_w, out_b), atol=2e-5 * (1 + np.abs(out_w).sum()))
