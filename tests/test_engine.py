"""The transcription engine: configurations, stitching, greedy decoding, ordering, errors, cancellation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from conftest import write_audio_file  # noqa: E402
from w2vlm.engine import ConfigError, DecodeConfig, Engine, EngineConfig  # noqa: E402
from w2vlm.engine.alignment import greedy_words  # noqa: E402
from w2vlm.engine.windows import Stitcher, Window, chunk_sizes, cut_windows, join  # noqa: E402


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


@pytest.fixture(scope="module")
def engine(tiny_ctc_dir: Path) -> Engine:
    from w2vlm.model import load_model
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    processor = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir)
    model = load_model(tiny_ctc_dir, device="cpu")
    return Engine(model, processor.feature_extractor, processor.decoder, EngineConfig(batch_seconds=4.0))


# ------------------------------------------------------------------------------------------------ config


def test_decode_config_validates() -> None:
    with pytest.raises(ConfigError, match="beam_width"):
        DecodeConfig(beam_width=0)
    with pytest.raises(ConfigError, match="alpha: must be a finite number"):
        DecodeConfig(alpha=float("nan"))
    with pytest.raises(ConfigError, match="greedy decoding has no beams"):
        DecodeConfig(greedy=True, hotwords=("a",))
    with pytest.raises(ConfigError, match="cannot go without it"):
        DecodeConfig(use_lm=False, alpha=1.0)
    assert DecodeConfig(use_lm=False).is_greedy
    assert not DecodeConfig(use_lm=False, n_best=2).is_greedy
    assert not DecodeConfig().is_greedy
    assert DecodeConfig(hotwords=["x"]).hotwords == ("x",)  # frozen and hashable


def test_engine_config_validates() -> None:
    with pytest.raises(ConfigError, match="dtype"):
        EngineConfig(dtype="int4")
    with pytest.raises(ConfigError, match="batch_seconds"):
        EngineConfig(batch_seconds=0)
    with pytest.raises(ConfigError, match="workers"):
        EngineConfig(workers=0)
    with pytest.raises(ConfigError, match="batch_wait_s"):
        EngineConfig(batch_wait_s=-1.0)


# ------------------------------------------------------------------------------------------------ windows


def test_bad_strides_are_named() -> None:
    for stride in (-1.0, (0.2, -0.1), float("nan"), (float("inf"), 0.1)):
        with pytest.raises(ValueError, match=r"strides must be finite and at least 0 s"):
            chunk_sizes(2.0, stride, 16000, 320)
    with pytest.raises(ValueError, match=r"leave no centre in 2.0 s windows"):
        chunk_sizes(2.0, 1.0, 16000, 320)
    assert chunk_sizes(2.0, 0.0, 16000, 320) == (32000, 0, 0)


@given(
    total=st.integers(400, 40_000),
    chunk_s=st.sampled_from([0.5, 1.0, 1.3]),
    stride=st.sampled_from([0.05, 0.1, 0.2]),
    block=st.integers(100, 9000),
)
@settings(max_examples=60, deadline=None)
def test_windows_cover_the_input_and_stitch_in_any_order(total: int, chunk_s: float, stride: float, block: int) -> None:
    """Windows read from blocks cover every sample; their centres, computed in any order, stitch into one frame
    per ``ratio`` samples of the input as a whole (here the "model" outputs each frame's absolute index)."""
    ratio = 320
    audio = np.arange(total, dtype=np.float32)
    blocks = [audio[i : i + block] for i in range(0, total, block)]
    chunk, left, right = chunk_sizes(chunk_s, stride, 16000, ratio)
    cut = list(cut_windows(blocks, chunk, left, right, ratio))
    assert cut[-1][3] and all(not last for *_, last in cut[:-1])
    assert cut[-1][0] + cut[-1][1].size == total
    for start, piece, _, _ in cut:
        np.testing.assert_array_equal(piece, audio[start : start + piece.size])
    windows = [Window(0, i, s, a.size, r, last) for i, (s, a, r, last) in enumerate(cut)]
    stitcher = Stitcher(ratio)
    stitcher.count = len(windows)
    pieces = []
    for w in reversed(windows):  # the engine may finish windows out of order
        frames = (w.samples - 400) // ratio + 1  # a conv front end's frame count
        lp = (w.start // ratio + np.arange(frames, dtype=np.float32))[:, None]
        stitcher.add(w, lp)
        pieces += stitcher.ready()
    assert stitcher.complete
    got = join(pieces, 1)[:, 0]
    np.testing.assert_array_equal(got, np.arange(got.size, dtype=np.float32))
    assert got.size >= (total - 400) // ratio  # no frame lost at the end


def test_too_short_inputs_are_named(engine: Engine) -> None:
    (out,) = engine.transcribe([np.zeros(100, np.float32)], DecodeConfig())
    assert out.error is not None and "too short" in out.error and out.text == ""


# ------------------------------------------------------------------------------------------------ greedy


@given(
    frames=st.integers(0, 200),
    seed=st.integers(0, 2**31 - 1),
    peaky=st.floats(0.5, 8.0),
)
@settings(max_examples=80, deadline=None)
def test_vectorised_greedy_equals_the_token_loop(frames: int, seed: int, peaky: float) -> None:
    """The vectorised character path of greedy_words gives what the per-token loop gives (the loop is the
    BPE path, which treats an alphabet with no ``▁`` and only " " as whitespace the same way)."""
    labels = ["", " ", "'", *"abcdefg"]
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((frames, len(labels))) * peaky
    logits[:, 0] += 1.0  # blanks, as CTC models emit them
    lp = torch.log_softmax(torch.from_numpy(logits), -1).numpy().astype(np.float32)
    fast = greedy_words(lp, labels, is_bpe=False)
    loop = greedy_words(lp, labels, is_bpe=True)
    assert fast[0] == loop[0]
    assert [w[:3] for w in fast[1]] == [w[:3] for w in loop[1]]
    np.testing.assert_allclose([w[3] for w in fast[1]], [w[3] for w in loop[1]], rtol=1e-5)


def test_log_mel_single_equals_a_batch_of_one() -> None:
    from transformers import SeamlessM4TFeatureExtractor

    from w2vlm.features import fast_log_mel

    fbank = fast_log_mel(SeamlessM4TFeatureExtractor(), dtype=torch.float32)
    for samples in (400, 559, 16000, 16_161, 48_000):
        x = torch.from_numpy(_noise(samples / 16000, seed=samples))
        one, valid = fbank.single(x)
        batch, mask = fbank(x[None], torch.tensor([x.numel()]))
        assert one.shape == batch[0].shape and valid == int(mask[0].sum())
        torch.testing.assert_close(one[:valid], batch[0, :valid], atol=2e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ engine


def test_results_in_input_order_with_errors_isolated(engine: Engine, tmp_path: Path) -> None:
    paths = []
    for i, seconds in enumerate([2.5, 0.6, 4.0, 1.1, 3.3]):
        paths.append(str(write_audio_file(tmp_path / f"a{i}.wav", _noise(seconds, i), 16000)))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav")
    inputs = [*paths[:2], str(bad), *paths[2:], str(tmp_path / "missing.wav")]
    out = list(engine.transcribe(inputs, DecodeConfig()))
    assert [o.audio for o in out] == inputs
    assert [o.error is not None for o in out] == [False, False, True, False, False, False, True]
    assert out[2].exception is not None and str(bad) in out[2].error
    # the same texts as each file alone, and as an engine that batches nothing
    alone = [next(engine.transcribe([p], DecodeConfig())).text for p in paths]
    assert [o.text for o in out if o.error is None] == alone
    single = engine.config.with_(batch_size=1)
    assert [o.text for o in engine.transcribe(paths, DecodeConfig(), config=single)] == alone


def test_windowed_inputs_decode_incrementally_to_the_same_text(engine: Engine) -> None:
    audio = _noise(6.0, seed=3)
    whole = next(engine.transcribe([audio], DecodeConfig(timestamps="char", word_confidences=True)))
    config = engine.config.with_(chunk_length_s=1.5)
    pieces = list(engine.log_probs([audio], config=config))
    (lp, seconds, error) = pieces[0]
    assert error is None and seconds == pytest.approx(6.0)
    windowed = next(engine.transcribe([audio], DecodeConfig(word_confidences=True), config=config))
    beams = engine.decoding.decoder.decode_beams(lp)
    assert windowed.text == beams[0].text
    assert all(w.confidence is not None for w in windowed.words)
    assert whole.chars and all(c.word.strip() for c in whole.chars)
    streamed = np.concatenate(list(engine.stream_log_probs(audio, config)))
    np.testing.assert_allclose(streamed, lp, rtol=1e-5, atol=1e-4)


def test_greedy_and_log_probs_without_decoder(tiny_ctc_dir: Path) -> None:
    from w2vlm.model import load_model
    from w2vlm.processor_parts import load_feature_extractor

    acoustic = Engine(load_model(tiny_ctc_dir, device="cpu"), load_feature_extractor(tiny_ctc_dir))
    with pytest.raises(ConfigError, match="no decoder"):
        next(acoustic.transcribe([_noise(1.0)]))
    ((lp, _, error),) = list(acoustic.log_probs([_noise(1.0)]))
    assert error is None and lp.shape[1] == acoustic.vocab
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-4)


def test_abandoned_iteration_stops_the_stages(engine: Engine) -> None:
    import threading

    before = threading.active_count()
    items = [_noise(1.0, seed=i) for i in range(40)]
    it = engine.transcribe(items, DecodeConfig())
    next(it)
    it.close()  # the consumer walks away: the stages see the cancel and end
    for _ in range(50):
        if threading.active_count() <= before:
            break
        threading.Event().wait(0.1)
    assert threading.active_count() <= before


def test_a_script_that_ends_while_a_call_runs_exits_cleanly(tiny_ctc_dir: Path) -> None:
    """A call still running in a daemon thread when the interpreter exits: its stages are stopped at exit (a stage
    inside torch at finalisation aborted the process: "terminate called without an active exception")."""
    import subprocess
    import sys

    script = f"""
import threading, time
import numpy as np
from w2vlm.engine import EngineConfig
from w2vlm.pipeline import pipeline
engine = pipeline("automatic-speech-recognition", model={str(tiny_ctc_dir)!r}, device="cpu").engine
audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 60).astype(np.float32)
started = threading.Event()
def run():
    for _ in engine.transcribe([audio] * 40, config=EngineConfig(vad=False, chunk_length_s=2.0, read_processes=False)):
        started.set()
threading.Thread(target=run, daemon=True).start()
assert started.wait(120)
print("exiting", flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exiting" in proc.stdout
    assert "terminate called" not in proc.stderr and "leaked" not in proc.stderr, proc.stderr[-2000:]


def test_bad_decoding_options_fail_the_call(engine: Engine) -> None:
    with pytest.raises(ConfigError):
        list(engine.transcribe([_noise(1.0)], DecodeConfig(beam_width=-1)))


def test_batches_wait_for_slow_reading_but_not_past_the_last_input(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    runner = engine.runner
    prepare, forward = runner.prepare, runner.forward
    sizes: list[int] = []

    def slow_prepare(audio: np.ndarray) -> object:
        time.sleep(0.02)  # reading slower than the model: windows arrive one by one
        return prepare(audio)

    def counted_forward(prepared: list) -> object:
        sizes.append(len(prepared))
        return forward(prepared)

    monkeypatch.setattr(runner, "prepare", slow_prepare)
    monkeypatch.setattr(runner, "forward", counted_forward)
    items = [_noise(1.0, seed=i) for i in range(8)]  # a full batch (4 s) holds four of them
    waiting = engine.config.with_(batch_wait_s=5.0)
    texts = [t.text for t in engine.transcribe(items, DecodeConfig(), config=waiting)]
    assert max(sizes) == 4 and len(sizes) <= 3, sizes
    sizes.clear()
    assert [t.text for t in engine.transcribe(items, DecodeConfig(), config=waiting.with_(batch_wait_s=0.0))] == texts
    # a call whose inputs are all read does not wait for windows that cannot come
    t0 = time.perf_counter()
    assert next(engine.transcribe(items[:1], DecodeConfig(), config=waiting)).text == texts[0]
    assert time.perf_counter() - t0 < 4.0


def _omp_max_threads() -> Callable[[], int] | None:
    """The calling thread's OpenMP thread count (torch's own libgomp), or None when torch has none: torch's
    ``get_num_threads()`` reports the last value set in any thread, not the one the calling thread runs with."""
    import ctypes

    lib = Path(torch.__file__).parent / "lib"
    found = sorted(lib.glob("libgomp*.so*"))
    if not found:
        return None
    fn = ctypes.CDLL(str(found[0])).omp_get_max_threads
    fn.restype = ctypes.c_int
    return fn


def test_torch_threads_apply_to_the_model_stage_and_readers_run_on_one(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = _omp_max_threads()
    if threads is None:
        pytest.skip("torch without its own libgomp")
    runner = engine.runner
    prepare, forward = runner.prepare, runner.forward
    seen: dict[str, set[int]] = {"prepare": set(), "forward": set()}

    def counted_prepare(audio: np.ndarray) -> object:
        seen["prepare"].add(threads())
        return prepare(audio)

    def counted_forward(prepared: list) -> object:
        seen["forward"].add(threads())
        return forward(prepared)

    monkeypatch.setattr(runner, "prepare", counted_prepare)
    monkeypatch.setattr(runner, "forward", counted_forward)
    own = threads()
    items = [_noise(1.0, seed=i) for i in range(4)]
    list(engine.transcribe(items, DecodeConfig(), config=engine.config.with_(torch_threads=3)))
    assert seen == {"prepare": {1}, "forward": {3}}
    assert threads() == own  # the caller's thread runs as before


def test_a_threads_torch_count_holds_when_another_thread_sets_one_later() -> None:
    """torch takes a thread's count from the process-wide one on the thread's first parallel operation: a reading
    worker that set 1 and then ran its first operator after the model stage set 3 ran on 3."""
    threads = _omp_max_threads()
    if threads is None:
        pytest.skip("torch without its own libgomp")
    from w2vlm.engine.stages import set_thread_torch_threads

    before = torch.get_num_threads()
    ready, other_set = threading.Event(), threading.Event()
    seen: list[int] = []

    def worker() -> None:
        set_thread_torch_threads(1)
        ready.set()
        other_set.wait(10)
        torch.ones(1 << 16).add_(1.0)  # the thread's first parallel operator
        seen.append(threads())

    def other() -> None:
        ready.wait(10)
        torch.set_num_threads(3)
        other_set.set()

    try:
        pool = [threading.Thread(target=worker), threading.Thread(target=other)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


def test_calls_at_once_run_one_forward_pass_at_a_time(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls of the engine that run at the same time (the server's requests) share the model, whose modules keep
    caches that are not thread-safe: their forward passes take turns, and every call gets its own text."""
    model = engine.runner.model
    forward = model.forward
    running = {"now": 0, "most": 0}
    lock = threading.Lock()

    def watched(*args: object, **kwargs: object) -> object:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(0.02)  # long enough for another thread's pass to start, were it allowed to
        try:
            return forward(*args, **kwargs)
        finally:
            with lock:
                running["now"] -= 1

    items = [_noise(1.0 + 0.25 * i, seed=i) for i in range(6)]
    alone = [t.text for t in engine.transcribe(items, DecodeConfig())]
    monkeypatch.setattr(model, "forward", watched)
    texts: list[list[str]] = [[] for _ in range(4)]

    def call(k: int) -> None:
        texts[k] = [t.text for t in engine.transcribe(items, DecodeConfig(), config=engine.config.with_(batch_size=1))]

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert running["most"] == 1
    assert texts == [alone] * 4
