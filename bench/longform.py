"""Long files as accurate as short ones, and no words from silence (issue 30).

    python bench/longform.py                     # 10- and 60-minute files of seeds 0 and 1, non-speech, surfaces
    python bench/longform.py --quick             # 2- and 10-minute files
    python bench/longform.py --seeds 0           # one file of each length
    python bench/longform.py --minutes 30 --configs off --skip consistency --json longform.json

Data (made once under ``.data/longform/``, seeded; ``--data`` to put it elsewhere):

* **Long files**: utterances of the recipe's held-out synthetic test set (``.data/speech/test``, made with
  ``bench/accuracy.py``'s ``make_test_set`` when missing) in a random order, joined with random 0.3-2 s gaps
  (a -70 dBFS noise floor; every fourth gap digital zero), written as 16 kHz mono 16-bit wav piece by piece
  (the 60-minute file is never in memory whole); one file of each length per seed (``--seeds``: several draws,
  since on 100 utterances the ratio rests on a handful of them). Beside each file a JSON holds its timeline: per
  utterance its id, reference text, start and end in seconds. A file longer than the test set (41 minutes) uses
  utterances more than once, each pass in a fresh order.
* **Non-speech clips**, 60 s each: digital silence, white noise (-20 dBFS), pink noise (-20 dBFS), 50 Hz mains
  hum with harmonics, clicks on a -70 dBFS floor, and music without voice (synthesized chords, bass and melody).

Measurements, each configuration in a subprocess of its own (model loaded as ``w2vlm transcribe`` loads it,
default decoding: beam search with the embedded LM), so that its peak memory (``ru_maxrss``) is its own:

1. **Reference**: every utterance the long files use, transcribed one by one (each clip an input of its own,
   VAD off); WER/CER of the concatenated references against the concatenated hypotheses, per long file.
2. **Long files**, transcribed whole, once per configuration (``--configs``: ``default`` = the engine's
   defaults, VAD on for long inputs; ``off`` = VAD off): WER/CER against the reference texts and the ratio to
   the one-by-one WER, words placed in the gaps between utterances, segments, end-to-end seconds (model load
   excluded) and audio-s/s, the VAD's share of the end-to-end time, peak memory.
3. **Non-speech**: the words each configuration outputs on each clip.
4. **Consistency**: one ``--consistency-minutes`` long file through the command line
   (``w2vlm transcribe FILE -f json``), ``w2vlm.pipeline(...)``, the server (FastAPI app in-process) and Ray
   (``w2vlm.distributed``), all with their defaults: the same text and segments as the command line?

Targets (issue 30): WER within 10 % relative of one by one with the defaults, on every file (all files together
are printed too); 0 words on silence, white and pink
noise and hum; VAD time <= 5 % of end-to-end time; peak memory on the longest file <= 1.25x that on the
shortest; the four surfaces agree. The machine is shared: its load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from longform_data import DATA, log, long_file, nonspeech_files, read_manifest, test_manifest
from longform_scoring import error_rates, pooled_ratio, same_segments, words_in_gaps

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

#: non-speech clips that must give no words at all (the issue's target); clicks and music are reported only
SILENT_TARGET = ("silence", "white", "pink", "hum")
TARGET_WER_RATIO = 1.10
TARGET_VAD_SHARE = 0.05
TARGET_MEMORY_RATIO = 1.25


# ------------------------------------------------------------------------------------- the VAD API, in one place


def vad_supported() -> bool:
    """Whether the VAD extra is installed (the engine falls back to windows without it)."""
    from w2vlm.engine.silero import available

    return available()


def with_vad(config: Any, vad: bool | None) -> Any:
    """``config`` (an EngineConfig) with VAD on, off, or the default (None: on for long inputs)."""
    return config.with_(vad=vad)


def cli_vad_args(vad: bool | None) -> list[str]:
    """``w2vlm transcribe`` options for a VAD setting (none for the default)."""
    return [] if vad is None else ["--vad" if vad else "--no-vad"]


def transcript_segments(transcript: Any) -> list[list[Any]]:
    """``[start, end, text]`` of a Transcript's segments."""
    return [[float(s.start), float(s.end), s.text] for s in transcript.segments]


def vad_seconds(timings: dict[str, float]) -> tuple[float | None, float | None]:
    """Seconds the engine spent in the VAD: wall clock (what its reading thread waited, other threads' turns on the
    CPUs included) and CPU (what the VAD itself cost); None when it did not run."""
    return timings.get("vad"), timings.get("vad_cpu")


def segments_from_words(segments: Any, words: Sequence[tuple[str, float, float]]) -> list[list[Any]]:
    """A surface's own ``segments`` (dicts with start, end, text) when it gives them, else segments made from
    its words the way Transcript makes them today (the pipeline's chunks and Ray's records have only words)."""
    if segments is not None:
        return [[float(s["start"]), float(s["end"]), s["text"].strip()] for s in segments]  # the server's: " text"
    from w2vlm.results import Word, segment_words

    return [[s.start, s.end, s.text] for s in segment_words([Word(w, a, b) for w, a, b in words])]


# ------------------------------------------------------------------------------------------------- workers


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def work_transcribe(job: dict[str, Any]) -> dict[str, Any]:
    """Load the model as ``w2vlm transcribe`` does, transcribe ``job["inputs"]`` in one engine call."""
    t = time.perf_counter()
    from w2vlm.transcribe import TranscribeOptions, Transcriber

    transcriber = Transcriber(TranscribeOptions())
    engine = transcriber.engine
    config = with_vad(engine.config, job["vad"])
    decode = transcriber.options.decode_config(False)
    # first-call costs (threads, allocator, loading the VAD) out of the timing: a short clip, VAD on unless off
    warm = with_vad(engine.config, True) if job["vad"] is not False and vad_supported() else config
    list(engine.transcribe([job["warmup"]], decode, config=warm))
    load_s = time.perf_counter() - t
    load_rss = _maxrss_mb()
    before = dict(engine.timings)
    results = []
    t = time.perf_counter()
    for tr in engine.transcribe(job["inputs"], decode, config=config):
        r: dict[str, Any] = {"audio": tr.audio, "text": tr.text, "duration": tr.duration, "error": tr.error}
        if job.get("detail"):
            r["segments"] = transcript_segments(tr)
            r["words"] = [[w.word, round(w.start, 3), round(w.end, 3)] for w in tr.words]
        results.append(r)
    seconds = time.perf_counter() - t
    timings = {k: v - before.get(k, 0.0) for k, v in engine.timings.items()}
    return {
        "results": results,
        "seconds": seconds,
        "load_seconds": load_s,
        "timings": timings,
        "vad_seconds": vad_seconds(timings),
        "load_maxrss_mb": load_rss,
        "maxrss_mb": _maxrss_mb(),
        "torch_threads": getattr(transcriber, "torch_threads", None),
    }


def work_consistency(job: dict[str, Any]) -> dict[str, Any]:
    """One file through the command line, the pipeline, the server and Ray, each with its defaults."""
    path = job["file"]
    out: dict[str, Any] = {}

    def attempt(name: str, body: Callable[[], dict[str, Any]]) -> None:
        t = time.perf_counter()
        try:
            out[name] = body()
        except Exception as exc:  # a surface that cannot run here is reported, not fatal
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = time.perf_counter() - t
        log(f"  {name}: {out[name]['seconds']:.1f} s{'; ' + out[name]['error'] if 'error' in out[name] else ''}")

    def cli() -> dict[str, Any]:
        cmd = [sys.executable, "-c", "from w2vlm.cli import main; main()", "transcribe", path, "-f", "json", "-q"]
        cmd += cli_vad_args(job.get("vad"))  # the default (None) for the consistency check: no option
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        body = json.loads(proc.stdout)
        return {"text": body["text"], "segments": segments_from_words(body.get("segments"), [])}

    attempt("cli", cli)

    import w2vlm

    pipe = w2vlm.pipeline("automatic-speech-recognition")

    def pipeline() -> dict[str, Any]:
        r = pipe(path, return_timestamps="segment")
        segments = [{"start": c["timestamp"][0], "end": c["timestamp"][1], "text": c["text"]} for c in r["chunks"]]
        return {"text": r["text"], "segments": segments_from_words(segments, [])}

    attempt("pipeline", pipeline)

    def server() -> dict[str, Any]:
        from fastapi.testclient import TestClient

        from w2vlm.server import ServerSettings, create_app

        settings = ServerSettings()
        with TestClient(create_app(pipe, settings)) as client:
            r = client.post(
                "/v1/audio/transcriptions",
                data={
                    "model": settings.model_id,
                    "response_format": "verbose_json",
                    "timestamp_granularities[]": "segment",
                },
                files={"file": (Path(path).name, Path(path).read_bytes(), "audio/wav")},
            )
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:500]}")
        body = r.json()
        return {"text": body["text"], "segments": segments_from_words(body.get("segments"), [])}

    attempt("server", server)

    def ray_run() -> dict[str, Any]:
        import ray

        from w2vlm.distributed import read_results, transcribe
        from w2vlm.transcribe import TranscribeOptions

        folder = tempfile.mkdtemp(prefix="w2vlm-longform-ray-")
        try:
            transcribe([path], folder, options=TranscribeOptions(), workers=1, word_timestamps=True)
            (record,) = read_results(folder).values()
        finally:
            ray.shutdown()
            shutil.rmtree(folder, ignore_errors=True)
        if record.get("status") != "ok":
            raise RuntimeError(record.get("error"))
        words = [(w["word"], w["start"], w["end"]) for w in record.get("words") or []]
        return {"text": record["text"], "segments": segments_from_words(record.get("segments"), words)}

    attempt("ray", ray_run)
    return out


def worker_main(job_path: str, out_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    result = work_consistency(job) if job["kind"] == "consistency" else work_transcribe(job)
    Path(out_path).write_text(json.dumps(result))
    return 0


def run_worker(job: dict[str, Any], work: Path, name: str) -> dict[str, Any]:
    """Run a job in a fresh Python process and return what it wrote."""
    job_path, out_path = work / f"{name}.job.json", work / f"{name}.out.json"
    job_path.write_text(json.dumps(job))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", str(job_path), str(out_path)], check=False
    )
    if proc.returncode or not out_path.is_file():
        raise RuntimeError(f"worker {name} failed (exit {proc.returncode})")
    return json.loads(out_path.read_text())


# ------------------------------------------------------------------------------------------------- scoring


def file_label(minutes: float, seed: int, seeds: Sequence[int]) -> str:
    """A long file's name in the report: its length, and its seed when there are several."""
    return f"{minutes:g} min" + (f" s{seed}" if len(seeds) > 1 else "")


# ----------------------------------------------------------------------------------------------------- main


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", default=None, help="lengths of the long files, comma-separated (default 10,60)")
    ap.add_argument("--quick", action="store_true", help="2- and 10-minute files")
    ap.add_argument(
        "--configs",
        default=None,
        help="default (the engine's defaults: VAD on for long inputs), off (VAD off), on; "
        "comma-separated (default: default,off; off alone while the engine has no VAD)",
    )
    ap.add_argument(
        "--seeds", default="0,1", help="seeds of the long files, comma-separated: a set of files for each (default 0,1)"
    )
    ap.add_argument("--manifest", type=Path, default=None, help="held-out manifest (default: the recipe's test set)")
    ap.add_argument("--data", type=Path, default=DATA, help="where the generated files are kept")
    ap.add_argument("--nonspeech-seconds", type=float, default=60.0)
    ap.add_argument("--consistency-minutes", type=float, default=2.0)
    ap.add_argument("--skip", default="", help="comma-separated: long, nonspeech, consistency")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)

    minutes = [float(m) for m in (args.minutes or ("2,10" if args.quick else "10,60")).split(",")]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if not seeds:
        ap.error("--seeds: give at least one seed")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    has_vad = vad_supported()
    names = [c.strip() for c in (args.configs or ("default,off" if has_vad else "off")).split(",") if c.strip()]
    configs: dict[str, bool | None] = {}
    for name in names:
        if name not in ("default", "off", "on"):
            ap.error(f"--configs: expected default, off or on; got {name!r}")
        configs[name] = {"default": None, "off": False, "on": True}[name]
    if not has_vad:
        log("the engine has no VAD yet (EngineConfig has no 'vad'): 'off' and 'default' are the current engine")
    report: dict[str, Any] = {
        "load_average": os.getloadavg()[0],
        "cpus": len(os.sched_getaffinity(0)),
        "vad_supported": has_vad,
        "minutes": minutes,
        "seeds": seeds,
        "configs": names,
    }

    manifest = test_manifest(args.manifest)
    utterances = read_manifest(manifest)
    log(f"test set: {len(utterances)} utterances, {sum(u.duration for u in utterances) / 60:.1f} min ({manifest})")
    # one long file per (minutes, seed), named by both where there is more than one seed
    files = {
        file_label(m, seed, seeds): long_file(args.data, manifest, utterances, m, seed)
        for seed in seeds
        for m in minutes
        if "long" not in skip
    }
    infos = {m: json.loads(p.with_suffix(".json").read_text()) for m, p in files.items()}
    report["files"] = {
        m: {
            "path": str(p),
            "duration": infos[m]["duration"],
            "utterances": len(infos[m]["utterances"]),
            "gaps": infos[m]["gaps"],
        }
        for m, p in files.items()
    }
    clips = nonspeech_files(args.data, args.nonspeech_seconds, seeds[0]) if "nonspeech" not in skip else {}
    warmup = utterances[0].audio

    with tempfile.TemporaryDirectory(prefix="w2vlm-bench-longform-") as tmp:
        work = Path(tmp)
        # 1. one by one
        if files:
            used = list(dict.fromkeys(u["audio"] for info in infos.values() for u in info["utterances"]))
            log(f"one by one: {len(used)} utterances ...")
            ref = run_worker({"kind": "transcribe", "inputs": used, "vad": False, "warmup": warmup}, work, "ref")
            hyps = {r["audio"]: r["text"] for r in ref["results"]}
            audio_s = sum(r["duration"] for r in ref["results"])
            report["one_by_one"] = {
                "utterances": len(used),
                "audio_seconds": audio_s,
                "seconds": ref["seconds"],
                "audio_s_per_s": audio_s / ref["seconds"],
                "maxrss_mb": ref["maxrss_mb"],
                "failed": sum(r["error"] is not None for r in ref["results"]),
                "per_file": {},
            }
            for m, info in infos.items():
                tl = info["utterances"]
                rates = error_rates([u["text"] for u in tl], " ".join(hyps[u["audio"]] for u in tl))
                report["one_by_one"]["per_file"][m] = rates
            log(
                f"  {audio_s / 60:.1f} min in {ref['seconds']:.1f} s ({audio_s / ref['seconds']:.1f} audio-s/s), "
                f"peak {ref['maxrss_mb']:.0f} MB"
            )

        # 2. long files, 3. non-speech
        report["long"] = {}
        report["nonspeech"] = {}
        for cname, vad in configs.items():
            for m, path in files.items():
                log(f"{m} file, {cname} ...")
                job = {"kind": "transcribe", "inputs": [str(path)], "vad": vad, "warmup": warmup, "detail": True}
                got = run_worker(job, work, f"long-{m.replace(' ', '-')}-{cname}")
                (r,) = got["results"]
                info = infos[m]
                tl = info["utterances"]
                rates = error_rates([u["text"] for u in tl], r["text"])
                base = report["one_by_one"]["per_file"][m]["wer"]
                seg_lengths = [b - a for a, b, _ in r["segments"]]
                vad_s, vad_cpu_s = got["vad_seconds"]
                entry = {
                    **rates,
                    "one_by_one_wer": base,
                    "minutes": info["seconds_asked"] / 60,
                    "seed": info["seed"],
                    "wer_ratio": rates["wer"] / base if base else None,
                    "error": r["error"],
                    "audio_seconds": r["duration"],
                    "seconds": got["seconds"],
                    "audio_s_per_s": r["duration"] / got["seconds"],
                    "load_seconds": got["load_seconds"],
                    "vad_seconds": vad_s,
                    "vad_share": None if vad_s is None else vad_s / got["seconds"],
                    "vad_cpu_seconds": vad_cpu_s,
                    "vad_cpu_share": None if vad_cpu_s is None else vad_cpu_s / got["seconds"],
                    "stage_seconds": {k: round(v, 3) for k, v in got["timings"].items()},
                    "maxrss_mb": got["maxrss_mb"],
                    "load_maxrss_mb": got["load_maxrss_mb"],
                    "words": len(r["text"].split()),
                    "words_in_gaps": words_in_gaps(tl, r["words"]),
                    "segments": len(r["segments"]),
                    "longest_segment_s": round(max(seg_lengths, default=0.0), 3),
                }
                report["long"].setdefault(cname, {})[m] = entry
                log(
                    f"  WER {_pct(rates['wer'])} (one by one {_pct(base)}), {got['seconds']:.1f} s, "
                    f"peak {got['maxrss_mb']:.0f} MB"
                )
            if clips:
                log(f"non-speech clips, {cname} ...")
                job = {
                    "kind": "transcribe",
                    "inputs": [str(p) for p in clips.values()],
                    "vad": vad,
                    "warmup": warmup,
                    "detail": True,
                }
                got = run_worker(job, work, f"nonspeech-{cname}")
                report["nonspeech"][cname] = {
                    kind: {
                        "words": len(r["text"].split()),
                        "text": r["text"],
                        "segments": len(r["segments"]),
                        "error": r["error"],
                    }
                    for kind, r in zip(clips, got["results"])
                }

        # 4. consistency
        if "consistency" not in skip:
            path = long_file(args.data, manifest, utterances, args.consistency_minutes, seeds[0])
            log(f"consistency on {path.name}: command line, pipeline, server, Ray ...")
            got = run_worker({"kind": "consistency", "file": str(path)}, work, "consistency")
            cli = got.get("cli", {})
            rows = {}
            for surface, r in got.items():
                row: dict[str, Any] = {"seconds": r.get("seconds"), "error": r.get("error")}
                if "error" not in r and "error" not in cli:
                    same, diff = same_segments(cli["segments"], r["segments"])
                    row.update(
                        text=r["text"],
                        segments=len(r["segments"]),
                        same_text=r["text"] == cli["text"],
                        same_segments=same,
                        max_time_diff_s=diff,
                    )
                rows[surface] = row
            report["consistency"] = {"file": str(path), "surfaces": rows}

    print_report(report, clips)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


def print_report(report: dict[str, Any], clips: dict[str, Path]) -> None:
    log("")
    targets: list[tuple[str, bool | None]] = []
    ran = set(report["long"]) | set(report["nonspeech"])
    main_cfg = next((c for c in ("default", "on", "off") if c in ran), "default")
    if "one_by_one" in report:
        o = report["one_by_one"]
        log(
            f"one by one: {o['utterances']} utterances, {o['audio_seconds'] / 60:.1f} min, "
            f"{o['audio_s_per_s']:.1f} audio-s/s, peak {o['maxrss_mb']:.0f} MB"
        )
        head = (
            f"{'file':>11} {'config':>8} {'WER':>8} {'CER':>8} {'1-by-1':>8} {'ratio':>6} {'gap w':>6} "
            f"{'segs':>5} {'longest':>8} {'e2e s':>7} {'aud-s/s':>8} {'VAD %':>6} {'CPU %':>6} "
            f"{'peak MB':>8} {'+MB':>5}"
        )
        log(head)
        for cname, per in report["long"].items():
            for m, e in per.items():
                share = "-" if e["vad_share"] is None else f"{100 * e['vad_share']:.1f}"
                cpu = "-" if e.get("vad_cpu_share") is None else f"{100 * e['vad_cpu_share']:.1f}"
                ratio = "-" if e["wer_ratio"] is None else f"{e['wer_ratio']:.2f}"
                log(
                    f"{m:>11} {cname:>8} {_pct(e['wer']):>8} {_pct(e['cer']):>8} "
                    f"{_pct(e['one_by_one_wer']):>8} {ratio:>6} {e['words_in_gaps']:>6} {e['segments']:>5} "
                    f"{e['longest_segment_s']:>7.1f}s {e['seconds']:>7.1f} {e['audio_s_per_s']:>8.1f} "
                    f"{share:>6} {cpu:>6} "
                    f"{e['maxrss_mb']:>8.0f} {e['maxrss_mb'] - e['load_maxrss_mb']:>5.0f}"
                )
        log(
            "  (gap w: words placed between utterances; longest: longest segment; e2e: model load excluded; "
            "VAD %: the VAD's wall-clock time in its reading thread, CPU %: its CPU time, both over e2e; "
            "+MB: peak memory over that after loading)"
        )
        per = report["long"].get(main_cfg, {})
        if len(per) > 1:
            for cname, entries in report["long"].items():
                pooled = pooled_ratio(list(entries.values()), [o["per_file"][m] for m in entries])
                log(f"  {cname}, all {len(entries)} files together: {'-' if pooled is None else f'{pooled:.2f}'}x")
        for m, e in per.items():
            ok = None if e["wer_ratio"] is None else e["wer_ratio"] <= TARGET_WER_RATIO
            targets.append((f"{m} ({main_cfg}): WER <= {TARGET_WER_RATIO:.2f}x one by one", ok))
        for m, e in per.items():
            ok = None if e["vad_share"] is None else e["vad_share"] <= TARGET_VAD_SHARE
            what = f"VAD wall-clock time <= {100 * TARGET_VAD_SHARE:.0f}% of end to end"
            targets.append((f"{m} ({main_cfg}): {what}", ok))
        if len({e["minutes"] for e in per.values()}) > 1:
            peaks: dict[float, float] = {}  # the highest peak among the files of each length
            for e in per.values():
                peaks[e["minutes"]] = max(peaks.get(e["minutes"], 0.0), e["maxrss_mb"])
            lo, hi = min(peaks), max(peaks)
            ratio = peaks[hi] / peaks[lo]
            targets.append(
                (
                    f"memory bounded ({main_cfg}): peak {hi:g} min / {lo:g} min = {ratio:.2f} <= "
                    f"{TARGET_MEMORY_RATIO:.2f}",
                    ratio <= TARGET_MEMORY_RATIO,
                )
            )
    if report["nonspeech"]:
        cfgs = list(report["nonspeech"])
        log("")
        log(f"{'clip':>8} " + " ".join(f"{c + ' words':>14}" for c in cfgs) + "   text")
        for kind in clips:
            row = [report["nonspeech"][c][kind] for c in cfgs]
            text = next((r["text"] for r in row if r["text"]), "")
            log(f"{kind:>8} " + " ".join(f"{r['words']:>14}" for r in row) + f"   {text[:60]!r}")
        ns = report["nonspeech"].get(main_cfg, {})
        if ns:
            words = {k: ns[k]["words"] for k in SILENT_TARGET if k in ns}
            targets.append(
                (f"0 words on {', '.join(words)} ({main_cfg}): {sum(words.values())} words", sum(words.values()) == 0)
            )
    if "consistency" in report:
        c = report["consistency"]
        log("")
        log(f"consistency on {Path(c['file']).name}:")
        log(f"{'surface':>10} {'seconds':>8} {'segs':>5} {'text = CLI':>11} {'segs = CLI':>11}  max time diff")
        all_same: bool | None = True
        for surface, r in c["surfaces"].items():
            if r.get("error"):
                log(f"{surface:>10} {r['seconds'] or 0:>8.1f}  error: {r['error']}")
                all_same = None if all_same else all_same
                continue
            log(
                f"{surface:>10} {r['seconds']:>8.1f} {r['segments']:>5} {r['same_text']!s:>11} "
                f"{r['same_segments']!s:>11}  {_seconds(r['max_time_diff_s'])}"
            )
            if not (r["same_text"] and r["same_segments"]):
                all_same = False
        targets.append(("CLI, pipeline, server and Ray give the same text and segments", all_same))
    if targets:
        log("")
        log("targets (issue 30):")
        for label, ok in targets:
            log(f"  {label}: {_mark(ok)}")
    log(
        f"load average {report['load_average']:.2f} at the start, {os.getloadavg()[0]:.2f} now, on "
        f"{report['cpus']} CPUs; VAD in the engine: {'yes' if report['vad_supported'] else 'not yet'}"
    )


if __name__ == "__main__":
    sys.exit(main())
