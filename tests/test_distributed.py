"""Ray Data transcription (``w2vlm.distributed``, ``w2vlm transcribe --ray``) on a local Ray with 2 workers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("ray")
pytest.importorskip("ray.data")

import numpy as np
import ray
import soundfile as sf
from typer.testing import CliRunner

from w2vlm.cli import app
from w2vlm.distributed import DistributedError, list_inputs, pack_parts, read_results, transcribe, unpack_parts
from w2vlm.distributed_results import JOB_FILE, job_settings, record_job, resume_point
from w2vlm.transcribe import InputFile, TranscribeOptions, Transcriber
from w2vlm.transcribe_run import run
from w2vlm.writers import segment_record

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for the module: 3 logical CPUs, so 2 model actors leave one for decoding."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=3,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}},
    )
    yield ray
    ray.shutdown()


def join_examples(path: Path, gap_s: float = 1.0) -> Path:
    """The example clips one after another with ``gap_s`` of silence between them: a 16 s file, long enough for
    voice activity detection (on by default past 10 s)."""
    clips = [sf.read(str(f), dtype="float32") for f in sorted(EXAMPLES.glob("*.wav"))]
    rate = clips[0][1]
    gap = np.zeros(round(gap_s * rate), np.float32)
    audio = np.concatenate([x for data, _ in clips for x in (data, gap)][:-1])
    sf.write(str(path), audio, rate)
    return path


def cli_json(audio: Path, out: Path, options: TranscribeOptions, word_timestamps: bool = False) -> dict:
    """What ``w2vlm transcribe AUDIO -f json -o OUT`` writes for ``audio`` with ``options``."""
    summary = run([str(audio)], options, output_dir=str(out), output_format="json", word_timestamps=word_timestamps)
    assert summary.done == 1 and not summary.failed
    return json.loads((out / f"{audio.stem}.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """12 example copies in a folder tree, a long file of all examples, a corrupt file, and a manifest that also
    names a missing file."""
    root = tmp_path_factory.mktemp("corpus")
    audio = root / "audio"
    wavs = sorted(EXAMPLES.glob("*.wav"))
    files = []
    for i in range(12):
        dst = audio / ("sub" if i % 3 == 0 else "") / f"{i:02d}_{wavs[i % len(wavs)].name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(wavs[i % len(wavs)], dst)
        files.append(dst)
    long = join_examples(audio / "long.wav")
    bad = audio / "corrupt.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    lines = [{"id": f"utt{i:02d}", "audio": str(f.relative_to(root)), "text": "x"} for i, f in enumerate(files)]
    lines.append({"id": "long", "audio": str(long.relative_to(root))})
    lines.append({"id": "corrupt", "audio": str(bad.relative_to(root))})  # no text: fine for transcription
    lines.append({"id": "missing", "audio": "audio/missing.wav"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    plain = Transcriber(TranscribeOptions())
    results = {str(r.file.path): r.transcript for r in plain.transcribe([InputFile(f) for f in [*files, long]])}
    expected = {name: t.text for name, t in results.items()}
    # the long file: cut into speech segments, each recognised on its own, as the command line writes them
    segments = [segment_record(s) for s in results[str(long)].segments]
    assert len(segments) == 4 and all(s["speech_prob"] is not None for s in segments)
    written = cli_json(long, root / "cli", TranscribeOptions())
    assert written["text"] == expected[str(long)] and written["segments"] == segments
    return {
        "root": root,
        "files": files,
        "long": long,
        "long_segments": segments,
        "bad": bad,
        "manifest": manifest,
        "expected": expected,
    }


def test_list_inputs(corpus, tmp_path):
    items = list_inputs(corpus["manifest"])
    assert [it.id for it in items][-2:] == ["corrupt", "missing"]
    assert items[0].reference == "x" and items[-1].reference == ""
    assert all(Path(it.path).is_absolute() for it in items)
    from_folder = list_inputs([corpus["root"] / "audio", tmp_path / "nope.wav"])
    ids = [it.id for it in from_folder]
    assert len(ids) == 15 and ids[-1] == str(tmp_path / "nope.wav")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "audio": "x.wav"}\n{"id": "a", "audio": "y.wav"}\n')
    with pytest.raises(DistributedError, match="'a' is given twice"):
        list_inputs(dup)
    with pytest.raises(DistributedError, match="nothing to transcribe"):
        list_inputs([])


def test_job_matches_the_cli_records_failures_and_resumes(local_ray, corpus, tmp_path):
    out = tmp_path / "out"
    summary = transcribe(corpus["manifest"], out, workers=2, files_per_batch=4)
    assert summary.workers == 2 and summary.device == "cpu"
    assert summary.total == 15 and summary.ok == 13 and summary.skipped == 0
    assert sorted(name for name, _ in summary.failed) == ["corrupt", "missing"]
    results = read_results(out)
    assert len(results) == 15
    for i, f in enumerate(corpus["files"]):
        rec = results[f"utt{i:02d}"]
        assert rec["status"] == "ok" and rec["error"] == ""
        assert rec["text"] == corpus["expected"][str(f)]  # the same transcript as the plain CLI engine
        assert rec["reference"] == "x" and rec["duration"] > 0
        assert [w["word"] for w in rec["words"]] == rec["text"].split()
        assert [s["text"] for s in rec["segments"]] == [rec["text"]]  # a short clip: one segment, no VAD
        assert rec["segments"][0]["speech_prob"] is None and rec["segments"][0]["confidence"] is None
    # the long file: the same speech segments and text as the engine and the command line's json
    assert results["long"]["status"] == "ok"
    assert results["long"]["text"] == corpus["expected"][str(corpus["long"])]
    assert results["long"]["segments"] == corpus["long_segments"]
    assert results["corrupt"]["status"] == "failed" and "not a readable audio file" in results["corrupt"]["error"]
    assert results["missing"]["status"] == "failed" and "missing.wav" in results["missing"]["error"]
    ok_ids = [f"utt{i:02d}" for i in range(12)] + ["long"]
    assert summary.audio_seconds == pytest.approx(sum(results[k]["duration"] for k in ok_ids))

    # a re-run skips the finished inputs and tries the failed ones again; once the file is there it succeeds
    files_before = sorted(p.name for p in out.iterdir())
    shutil.copy(corpus["files"][0], corpus["root"] / "audio" / "missing.wav")
    try:
        again = transcribe(corpus["manifest"], out, workers=1)
    finally:
        (corpus["root"] / "audio" / "missing.wav").unlink()
    assert again.skipped == 13 and again.ok == 1 and [n for n, _ in again.failed] == ["corrupt"]
    assert len(list(out.iterdir())) > len(files_before)
    results = read_results(out)
    assert results["missing"]["status"] == "ok"
    assert results["missing"]["text"] == corpus["expected"][str(corpus["files"][0])]
    assert results["corrupt"]["status"] == "failed"
    job = json.loads((out / JOB_FILE).read_text())
    assert job["model"] == "w2vlm embedded default" and job["format"] == "jsonl" and job["alpha"] is None
    assert "device" not in job and "threads" not in job  # where and how fast, not what it writes
    # other decoding settings: refused before anything runs, naming what differs
    with pytest.raises(DistributedError, match=r"other settings \(alpha None there, 2\.0 here; hotwords \[\] there"):
        transcribe(corpus["manifest"], out, options=TranscribeOptions(alpha=2.0, hotwords=["fond"]))


def test_cli_ray_parquet(local_ray, corpus, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "pq"
    folder = corpus["root"] / "audio"
    result = runner.invoke(
        app, ["transcribe", str(folder), "--ray", "--ray-workers", "2", "-o", str(out), "-f", "parquet", "-q"]
    )
    assert result.exit_code == 1, result.output  # the corrupt file failed
    assert "corrupt.wav" in result.output
    tables = [pq.read_table(p) for p in out.glob("*.parquet")]
    rows = [r for t in tables for r in t.to_pylist()]
    assert len(rows) == 14
    by_id = {r["id"]: r for r in rows}
    for f in [*corpus["files"], corpus["long"]]:
        assert by_id[str(f)]["text"] == corpus["expected"][str(f)]
    assert by_id[str(corpus["long"])]["segments"] == corpus["long_segments"]
    # everything done: a re-run has nothing to do and exits 0
    result = runner.invoke(app, ["transcribe", str(folder / "sub"), "--ray", "-o", str(out), "-f", "parquet"])
    assert result.exit_code == 0, result.output
    assert "0 transcribed, 0 failed, 4 skipped" in " ".join(result.output.split())


def test_without_vad_the_same_as_the_cli(local_ray, corpus, tmp_path):
    # no VAD: the long file decoded whole, its segments cut at pauses; word times and confidences too
    options = TranscribeOptions(vad=False)
    long = corpus["long"]
    written = cli_json(long, tmp_path / "cli", options, word_timestamps=True)
    assert len(written["segments"]) > 1 and all(s["speech_prob"] is None for s in written["segments"])
    assert all(s["confidence"] is not None for s in written["segments"])
    out = tmp_path / "out"
    summary = transcribe([long], out, options=options, workers=1, output_format="parquet", word_timestamps=True)
    assert summary.ok == 1 and not summary.failed
    rec = read_results(out)[str(long)]
    assert rec["text"] == written["text"] and rec["segments"] == written["segments"]
    assert [(w["word"], w["start"], w["end"]) for w in rec["words"]] == [
        (w["word"], w["start"], w["end"]) for w in written["words"]
    ]
    assert [round(w["confidence"], 4) for w in rec["words"]] == [w["confidence"] for w in written["words"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray"], "--output-dir"),
        (["--ray", "-o", "OUT", "-f", "srt"], "jsonl or parquet"),
        (["--ray", "-o", "OUT", "--ray-workers", "0"], "at least 1"),
        (["--ray-workers", "2"], "only goes with --ray"),
        (["--ray-address", "auto"], "only goes with --ray"),
    ],
)
def test_cli_ray_bad_options(args, message, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "o")) for a in args]
    result = runner.invoke(app, ["transcribe", str(EXAMPLES / "children.wav"), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_parts_travel_between_the_stages_unchanged():
    rng = np.random.default_rng(0)
    segmented = [(0.5, 0.9, rng.standard_normal((7, 5)).astype(np.float32)), (3.25, 0.75, np.zeros((0, 5)))]
    whole = [(0.0, None, rng.standard_normal((4, 5)))]
    outputs = [(segmented, 16.0, None), (whole, 2.0, None), ([], 12.0, None), (None, 0.0, OSError("unreadable"))]
    names = np.array(["a", "b", "c", "d"], dtype=object)
    batch = {"id": names, "audio": names, "path": names, "reference": np.array([""] * 4, dtype=object)}
    rows = pack_parts(batch, outputs, 0.02).to_pylist()
    assert [r["error"] for r in rows] == ["", "", "", "OSError: unreadable"]
    assert [r["duration"] for r in rows] == [16.0, 2.0, 12.0, 0.0]
    for row, (parts, _, _) in zip(rows, outputs):
        got = unpack_parts(row)
        assert len(got) == len(parts or [])
        for (start, prob, lp), (start2, prob2, lp2) in zip(got, parts or []):
            assert (start, prob) == (start2, prob2) and lp.dtype == np.float32
            np.testing.assert_array_equal(lp, lp2.astype(np.float32))


def test_read_results_skips_damaged_files(tmp_path):
    good = {"id": "a", "status": "failed", "error": "boom", "text": ""}
    (tmp_path / "1.json").write_text(json.dumps(good) + "\n")
    later = {"id": "a", "status": "ok", "error": "", "text": "hello"}
    (tmp_path / "2.json").write_text(json.dumps(later) + "\n" + '{"id": "b", "status": "o')  # cut off mid-line
    (tmp_path / "3.parquet").write_bytes(b"PAR1 broken")
    (tmp_path / "4.json").write_text(json.dumps({"id": "a", "status": "failed", "error": "late"}) + "\n")
    results = read_results(tmp_path)
    assert set(results) == {"a"}
    assert results["a"]["text"] == "hello"  # an ok record is not replaced by a later failure
    assert read_results(tmp_path / "absent") == {}


def test_bad_job_options(tmp_path):
    with pytest.raises(DistributedError, match="output format"):
        transcribe([str(EXAMPLES)], tmp_path / "o", output_format="csv")
    with pytest.raises(DistributedError, match="workers"):
        transcribe([str(EXAMPLES)], tmp_path / "o", workers=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DistributedError, match="not a folder"):
        transcribe([str(EXAMPLES)], tmp_path / "file")


def test_too_many_workers_for_the_cluster(local_ray, tmp_path):
    # 3 CPUs: 3 model actors would leave none for decoding, and the job would never finish
    with pytest.raises(DistributedError, match="need 4 CPUs"):
        transcribe([str(EXAMPLES / "children.wav")], tmp_path / "o", workers=3)


def test_a_local_instance_gets_no_more_model_workers_than_the_machine_has_cpus(tmp_path, monkeypatch):
    """Starting its own Ray instance, ``transcribe`` refuses more model workers than CPUs (50 on 2 cores started 46
    worker processes and never got going) before starting anything."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("Ray was started"))
    with pytest.raises(DistributedError, match=r"model workers on a local Ray instance, but this machine has"):
        transcribe([str(EXAMPLES)], tmp_path / "o", workers=(os.cpu_count() or 1) + 1)


def test_going_on_in_a_folder_of_another_model_or_format_is_refused(tmp_path, monkeypatch):
    """Resuming skips inputs that have results: only when those are this model's and in this job's format (a
    rerun with another model skipped everything; one with -f jsonl after parquet wrote nothing)."""
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("Ray was started"))
    out = tmp_path / "o"
    out.mkdir()
    record = {"id": "children.wav", "status": "ok", "text": "x", "model": "w2vlm embedded default"}
    (out / "part-0.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(DistributedError, match="holds jsonl results; this job writes parquet"):
        transcribe([str(EXAMPLES)], out, output_format="parquet")
    (out / "part-0.jsonl").write_text(json.dumps(record | {"model": "/models/other"}) + "\n")
    with pytest.raises(DistributedError, match=r"holds results of another model \(/models/other\)"):
        transcribe([str(EXAMPLES)], out)


def test_a_folder_without_a_job_file_goes_on_and_the_job_file_is_not_a_result(tmp_path, caplog):
    """A folder of an older job (records, no job file) goes on with a warning and keeps no job file (its settings
    are not known); a new folder gets the job's settings, and read_results never takes them for a record."""
    out = tmp_path / "o"
    out.mkdir()
    record = {"id": "a", "status": "ok", "text": "x", "model": "m"}
    (out / "part-0.json").write_text(json.dumps(record) + "\n")
    settings = job_settings(TranscribeOptions(), "m", "jsonl", False)
    with caplog.at_level("WARNING", logger="w2vlm.distributed"):
        done = resume_point(out, settings)
    assert done == {"a"} and "its decoding settings cannot be checked" in caplog.text
    record_job(out, settings, done)
    assert not (out / JOB_FILE).exists()
    fresh = tmp_path / "new"
    assert resume_point(fresh, settings) == set()
    record_job(fresh, settings, set())
    assert json.loads((fresh / JOB_FILE).read_text()) == settings
    assert read_results(fresh) == {}
    (fresh / "part-0.json").write_text(json.dumps(record) + "\n")
    assert resume_point(fresh, settings) == {"a"}  # the same settings: it goes on
    (fresh / JOB_FILE).write_text("[1, 2]")
    with pytest.raises(DistributedError, match="expected a JSON object of settings"):
        resume_point(fresh, settings)


def test_an_address_where_nothing_listens_is_named_at_once(tmp_path, monkeypatch):
    """Ray retries an unreachable cluster for minutes (a refused local port: still waiting after 3); the job
    checks that the address answers first."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("Ray was asked to connect"))
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(DistributedError, match=f"cannot reach the cluster at {address}: Connection refused"):
            transcribe([str(EXAMPLES / "children.wav")], tmp_path / "o", address=address, workers=1)
