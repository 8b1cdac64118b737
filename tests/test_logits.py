"""The native log-softmax (``_core.log_probs``, used by the search and by ``to_log_probs``): for float64 the bits of
the numpy formulas it replaced (pyctcdecode's), for float32 within rounding of them (w2vlm's own vectorised exp);
the same checks and messages, the caller's array read in place."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from decoder_reference import numpy_log_probs
from w2vlm import _core
from w2vlm.decoder import to_log_probs
from w2vlm.decoder.logits import check_logits
from w2vlm.errors import DecoderInputError


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_numpy_kernels_are_used():
    assert _core.numpy_kernels


@st.composite
def matrices(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    frames = draw(st.integers(1, 6))
    vocab = draw(st.sampled_from([1, 2, 3, 7, 8, 9, 16, 17, 31, 32, 33, 64, 129, 255, 999, 1000, 1025]))
    kind = draw(st.sampled_from(["logits", "probs", "near-probs", "wide"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "wide":  # any finite or -inf values, rows with at least one finite value
        elems = st.floats(-(2.0**100), 2.0**100, width=32) | st.just(-np.inf)
        a = draw(hnp.arrays(dtype, (frames, vocab), elements=elems))
        a[:, draw(st.integers(0, vocab - 1))] = rng.normal(size=frames)
        return a
    x = rng.normal(0.0, draw(st.sampled_from([0.1, 3.0, 30.0])), (frames, vocab))
    if draw(st.booleans()):
        x[rng.random((frames, vocab)) < 0.2] = -np.inf
        x[:, 0] = 1.0
    if kind == "logits":
        return x.astype(dtype)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    if kind == "near-probs":  # row sums at the edge of np.allclose's tolerance
        p *= 1.0 + draw(st.sampled_from([1.0e-3, 1.01e-3, 1.0099e-3, 1.0101e-3, -1.0101e-3, 2e-3]))
        p = np.minimum(p, 1.0)
    return p.astype(dtype)


def matches_numpy(ours: np.ndarray, a: np.ndarray) -> bool:
    """float64: numpy's bits. float32: within what one ulp per exp can move the result (the exps feed a sum whose
    log is subtracted from every value: at most a few units of 2^-24 absolute, plus the last rounding); and
    probabilities, which take numpy's log and no exp, numpy's bits."""
    ref = numpy_log_probs(a)
    if a.dtype == np.float64 or _core.scan_logits(a):
        return same_bits(ours, ref)
    if ours.dtype != ref.dtype or ours.shape != ref.shape:
        return False
    return bool(np.all(np.abs(ours.astype(np.float64) - ref) <= 2.0**-21 + 2 * np.spacing(np.abs(ref))))


@settings(max_examples=400, deadline=None)
@given(matrices())
def test_native_log_probs_match_numpy(a):
    assert matches_numpy(_core.log_probs(a), a)
    assert matches_numpy(to_log_probs(a, a.shape[1]), a)


def test_float32_log_softmax_is_as_accurate_as_numpys():
    """Against the exact values (float64 arithmetic on the same float32 inputs), w2vlm's float32 result is as close
    as numpy's own float32 one; rows with extreme values give the exact limits (0 for the largest value)."""
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 8.0, (400, 1000)).astype(np.float32)
    exact = numpy_log_probs(x.astype(np.float64))
    ours = _core.log_probs(x).astype(np.float64)
    theirs = numpy_log_probs(x).astype(np.float64)
    assert np.abs(ours - exact).max() <= 1.5 * np.abs(theirs - exact).max()
    assert np.abs(ours - exact).mean() <= 1.5 * np.abs(theirs - exact).mean()
    wide = np.array([[0.0, -1e30, -np.inf, -120.0, -87.0, -86.0, 3.0]], dtype=np.float32)
    out = _core.log_probs(wide)
    assert abs(float(out[0, 6]) + np.log1p(np.exp(-3.0) + np.exp(-89.0))) <= 2.0**-23
    assert abs(float(out[0, 0]) - (-3.0 - np.log1p(np.exp(-3.0)))) <= 2.0**-21
    assert out[0, 1] == out[0, 2] == np.float32(np.log(1e-15))


@settings(max_examples=100, deadline=None)
@given(matrices(), st.integers(0, 3), st.booleans())
def test_strided_and_read_only_inputs_are_read_in_place(a, pad, reverse):
    big = np.full((a.shape[0] * 2, a.shape[1] + pad), 7.0, dtype=a.dtype)
    big[::2, : a.shape[1]] = a
    view = big[::2, : a.shape[1]]
    if reverse:
        view, a = view[::-1], a[::-1]
    view.flags.writeable = False
    assert same_bits(_core.log_probs(view), _core.log_probs(np.ascontiguousarray(a)))
    assert matches_numpy(_core.log_probs(view), np.ascontiguousarray(a))


def test_other_dtypes_and_layouts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 40))
    assert same_bits(to_log_probs(x.astype(np.float16), 40), _core.log_probs(x.astype(np.float16).astype(np.float32)))
    ints = rng.integers(-5, 5, (5, 40))
    assert same_bits(to_log_probs(ints, 40), numpy_log_probs(ints.astype(np.float64)))
    cols = np.ascontiguousarray(x[:, ::2])
    assert same_bits(to_log_probs(x[:, ::2], 20), numpy_log_probs(cols))
    assert to_log_probs(np.zeros((0, 40)), 40).shape == (0, 40)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_values_are_named(dtype):
    x = np.zeros((6, 9), dtype=dtype)
    x[2, 5] = np.nan
    x[4, 1] = np.inf
    x[4, 0] = np.nan
    with pytest.raises(DecoderInputError, match=r"^logits contain NaN at frame 2, column 5 \(2 bad frames in all\)$"):
        to_log_probs(x, 9)
    x[2, 5] = np.inf
    with pytest.raises(DecoderInputError, match=r"^logits contain \+inf at frame 2, column 5 \(2 bad frames in all\)$"):
        check_logits(x, 9)
    y = np.zeros((3, 40), dtype=dtype)
    y[1] = -np.inf
    with pytest.raises(DecoderInputError, match=r"^logits frame 1 is -inf in every column$"):
        _core.log_probs(y)
    with pytest.raises(DecoderInputError, match=r"^logits frame 1 is -inf in every column$"):
        _core.scan_logits(y)


def test_batch_normalises_on_workers_like_single_calls():
    from w2vlm.decoder import build_ctcdecoder

    labels = ["", " ", "a", "b", "c", "d"] + [f"x{i}" for i in range(60)]
    dec = build_ctcdecoder(labels)
    rng = np.random.default_rng(3)
    xs = [rng.normal(0, 4, (int(rng.integers(1, 80)), len(labels))) for _ in range(9)]
    xs = [x.astype(np.float32) if i % 2 else x for i, x in enumerate(xs)]
    xs[4] = np.exp(xs[4]) / np.exp(xs[4]).sum(axis=1, keepdims=True)  # probabilities
    xs[5] = np.asfortranarray(xs[5])
    single = [[(b[0], b[-2], b[-1]) for b in dec.decode_beams(x)] for x in xs]
    for nt in (1, 2, 3):
        batch = dec.decode_beams_batch(None, xs, num_threads=nt)
        assert [[(b[0], b[-2], b[-1]) for b in bs] for bs in batch] == single
    bad = list(xs)
    bad[6] = xs[6].copy()
    bad[6][3, 7] = np.nan
    bad[2] = xs[2].copy()
    bad[2][0] = -np.inf
    for nt in (1, 3):
        with pytest.raises(DecoderInputError, match=r"^logits_list\[2\]: logits frame 0 is -inf in every column$"):
            dec.decode_beams_batch(None, bad, num_threads=nt)
    with pytest.raises(DecoderInputError, match=r"^logits: logits contain NaN at frame 3, column 7"):
        dec.decode_beams(bad[6])
