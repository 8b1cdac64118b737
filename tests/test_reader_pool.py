"""The engine's reading processes (w2vlm.engine.reader_pool): the same transcripts and errors as its reading
threads, a process that dies fails only its input, abandoned calls stop their processes, and the pool ends with
the engine."""

from __future__ import annotations

import io
import os
import pickle
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vad_helpers import RATE, embedded_engine, example_clips, silence
from w2vlm.engine import DecodeConfig, Engine, EngineConfig
from w2vlm.engine.inputs import InputInfo
from w2vlm.engine.reader_pool import ReaderDied, ReaderPool, portable
from w2vlm.engine.reader_worker import portable_error
from w2vlm.errors import W2vlmError

PROCESSES = EngineConfig(read_processes=True)
THREADS = EngineConfig(read_processes=False)


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The embedded default model's engine on the CPU, with its reading processes up."""
    eng = embedded_engine()
    _ready(eng)
    yield eng
    eng.close()


def _ready(eng: Engine) -> ReaderPool:
    """``eng``'s reading processes, once they can be had."""
    pool = eng.reader_pool()
    deadline = time.monotonic() + 120
    while not pool.ready():
        assert time.monotonic() < deadline, "the reading processes' fork server did not come up"
        time.sleep(0.05)
    return pool


def _long_input() -> np.ndarray:
    """The four example clips with 1.5 s of silence around each (~22 s: cut into speech segments by default)."""
    gap = silence(1.5)
    return np.concatenate([gap] + [x for clip in example_clips() for x in (clip, gap)])


def _inputs(tmp_path: Path) -> list[object]:
    files = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "examples").glob("*.wav"))
    return [
        *files,
        _long_input(),
        {"array": example_clips()[0], "sampling_rate": RATE},
        b"\x00" * 63,
        str(tmp_path / "missing.wav"),
        Path(files[1]).read_bytes(),
        io.BytesIO(Path(files[2]).read_bytes()),  # a file object: read in a thread of the caller
    ]


def test_processes_give_what_threads_give(engine: Engine, tmp_path: Path) -> None:
    decode = DecodeConfig(timestamps="word", word_confidences=True)
    threads = list(engine.transcribe(_inputs(tmp_path), decode, config=THREADS))
    before = engine.reader_pool().started
    processes = list(engine.transcribe(_inputs(tmp_path), decode, config=PROCESSES))
    assert engine.reader_pool().started >= max(before, 1)
    for a, b in zip(threads, processes):
        assert (a.text, a.error, a.duration) == (b.text, b.error, b.duration)
        assert [(s.start, s.end, s.text) for s in a.segments] == [(s.start, s.end, s.text) for s in b.segments]
        assert [(w.word, w.start, w.end) for w in a.words] == [(w.word, w.start, w.end) for w in b.words]
        # batches are formed as windows arrive, so padding (and the last bits of a float) can differ between runs
        assert [w.confidence for w in a.words] == pytest.approx([w.confidence for w in b.words], abs=1e-6)
    assert processes[4].text and len(processes[4].segments) >= 2  # the long input went through the VAD
    assert [tr.error is not None for tr in processes] == [False] * 6 + [True, True, False, False]
    assert "63" in processes[6].error or "bytes" in processes[6].error
    assert "missing.wav" in processes[7].error


def test_a_waveform_model_reads_the_same_in_processes(tiny_ctc_dir: Path) -> None:
    from w2vlm.model import load_model
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    processor = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir)
    eng = Engine(load_model(tiny_ctc_dir, device="cpu"), processor.feature_extractor, processor.decoder)
    try:
        pool = _ready(eng)
        clips = [*example_clips(), _long_input()]
        threads = [tr.text for tr in eng.transcribe(clips, config=THREADS.with_(vad=False, chunk_length_s=5.0))]
        processes = [tr.text for tr in eng.transcribe(clips, config=PROCESSES.with_(vad=False, chunk_length_s=5.0))]
        assert pool.started >= 1
        assert processes == threads and all(threads)
    finally:
        eng.close()


def test_a_reading_process_that_dies_fails_only_its_input(engine: Engine) -> None:
    pool = engine.reader_pool()
    process = pool.borrow()
    assert process is not None
    item = {"array": np.tile(_long_input(), 8), "sampling_rate": RATE}  # ~3 min: many speech segments
    units = process.units(item, "long input", PROCESSES, False, InputInfo(), threading.Event())
    next(units)
    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(ReaderDied, match=r"long input: the reading process \(pid \d+\) ended"):
        list(units)
    started = pool.started
    pool.give_back(process)
    assert pool.started == started - 1
    # the next call forks a new one and reads as before
    out = list(engine.transcribe([example_clips()[0]] * 3, config=PROCESSES))
    assert all(tr.error is None and tr.text for tr in out)


def test_abandoned_calls_stop_their_processes(engine: Engine) -> None:
    pool = engine.reader_pool()
    long = {"array": np.tile(_long_input(), 6), "sampling_rate": RATE}
    for _ in range(2):
        results = engine.transcribe([long] * 6, config=PROCESSES)
        next(results)
        t0 = time.monotonic()
        results.close()
        assert time.monotonic() - t0 < 10
    assert pool.started <= pool.size
    out = list(engine.transcribe([example_clips()[1]] * 2, config=PROCESSES))
    assert all(tr.error is None and tr.text for tr in out)


def test_the_default_reads_in_threads_on_a_cpu(engine: Engine) -> None:
    assert not engine.reads_in_processes(100, EngineConfig())
    assert engine.reads_in_processes(1, PROCESSES)
    assert not engine.reads_in_processes(100, THREADS)


def test_a_process_that_ends_while_idle_is_replaced(engine: Engine) -> None:
    pool = engine.reader_pool()
    clips = example_clips()
    list(engine.transcribe(clips, config=PROCESSES))  # the processes exist and are idle
    idle = [pool.borrow() for _ in range(pool.size)]
    for process in idle:
        assert process is not None
        pool.give_back(process)
    for process in idle:  # they end while idle (the out-of-memory killer, say)
        os.kill(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _running(process.pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    out = list(engine.transcribe(clips, config=PROCESSES))
    assert [tr.error for tr in out] == [None] * 4 and all(tr.text for tr in out)


def test_what_reading_logs_reaches_the_callers_loggers(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import soundfile as sf

    path = tmp_path / "cut.flac"
    sf.write(path, np.tile(example_clips()[0], 3), RATE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a truncated flac: read up to its end, with a warning
    for config in (THREADS, PROCESSES):
        caplog.clear()
        with caplog.at_level("WARNING", logger="w2vlm"):
            (out,) = engine.transcribe([str(path)], config=config)
        assert out.error is None
        assert [r.name for r in caplog.records if str(path) in r.getMessage()], config


def test_a_process_forked_from_the_engines_leaves_its_readers_alone(engine: Engine) -> None:
    pool = engine.reader_pool()
    list(engine.transcribe(example_clips(), config=PROCESSES))
    process = pool.borrow()
    assert process is not None
    pool.give_back(process)
    child = os.fork()
    if child == 0:  # what a forked worker may do with the engine it inherited: close it, and exit
        try:
            assert not pool.ready() and pool.borrow() is None
            engine.close()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert process.ours() and process.usable()
    out = list(engine.transcribe(example_clips(), config=PROCESSES))
    assert all(tr.error is None and tr.text for tr in out)


def test_portable_inputs_and_errors() -> None:
    assert portable("a.wav") and portable(Path("a.wav")) and portable(b"x") and portable(np.zeros(3))
    assert portable({"array": np.zeros(3), "sampling_rate": 16000})
    assert not portable(io.BytesIO(b"x")) and not portable({"array": io.BytesIO(b"x")})

    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:  # does not survive a pickle round trip
            super().__init__(f"{a}-{b}")

    odd = pickle.loads(portable_error(Odd(1, 2)))
    assert isinstance(odd, W2vlmError) and "Odd: 1-2" in str(odd)
    kept = pickle.loads(portable_error(ValueError("bad")))
    assert type(kept) is ValueError and str(kept) == "bad"


def test_closing_the_pool_ends_its_processes(engine: Engine) -> None:
    pool = ReaderPool(engine.runner.preparer, engine.sampling_rate, engine.runner.ratio, None, 2)
    deadline = time.monotonic() + 120
    while not pool.ready():
        assert time.monotonic() < deadline, "the reading processes' fork server did not come up"
        time.sleep(0.05)
    process = pool.borrow()
    assert process is not None and process.ours()
    pool.give_back(process)
    server = pool.server_pid
    pool.close()
    assert pool.borrow() is None
    deadline = time.monotonic() + 10
    while _running(process.pid) or _running(server):
        assert time.monotonic() < deadline, "the pool's processes outlived it"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie until its parent (this process) reaps it
        return f.read().split(")")[-1].split()[0] != "Z"


def test_reading_processes_that_cannot_start_leave_reading_to_threads(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from w2vlm.engine import reader_pool

    for attribute, value, message in (
        ("executable", "/nonexistent/python", "could not be started"),
        ("platform", "darwin", "need Linux"),
    ):
        caplog.clear()
        fresh = Engine(engine.model, engine.runner.feature_extractor, engine.decoding.decoder)  # no pool yet
        with monkeypatch.context() as patch:
            patch.setattr(reader_pool.sys, attribute, value)
            out = list(fresh.transcribe([example_clips()[2]] * 2, config=PROCESSES))
        assert all(tr.error is None and tr.text for tr in out)
        assert message in caplog.text
