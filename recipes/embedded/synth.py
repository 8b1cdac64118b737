"""Synthesize noisy, reverberant English speech with espeak-ng for CTC training.

Each sentence is rendered by espeak-ng with a randomly drawn English accent (``en-us``, ``en-gb``,
``en-gb-scotland``, ...), voice variant (``+m3``, ``+f2``, ``+klatt``, ``+Annie``, ...), speaking rate, pitch,
pitch range and word gap; then resampled to 16 kHz mono, padded with silence, optionally reverberated with
a synthetic room impulse response, optionally band-limited (telephone), mixed with white/pink/brown noise
at a random SNR and scaled to a random level. Output: ``OUT/wav/NNNNNN.wav`` (16-bit PCM) and
``OUT/manifest.jsonl`` (``{"audio": "wav/NNNNNN.wav", "text": ..., "duration": ..., "voice": ...}``, audio
paths relative to the manifest).

Voice variants are split into a training set and a held-out set (``HELDOUT_VARIANTS``): ``--voices test``
uses only held-out variants, ``--voices train`` never does, so test speech comes from voices the model never
heard. Every utterance's settings derive from ``(--seed, index)``, so output is deterministic for a given
espeak-ng version, whatever ``--workers``.

Usage::

    python recipes/embedded/synth.py --sentences .data/corpus/speech_train.txt --out .data/speech/train \
        --count 20000 --voices train --workers 16
    python recipes/embedded/synth.py --sentences .data/corpus/test.txt --out .data/speech/test --voices test

espeak-ng need not be installed: ``--espeak DIR`` (or ``$ESPEAK_ROOT``) points at a tree unpacked from the
Debian packages with ``dpkg -x`` (``DIR/usr/bin/espeak-ng``); library and data paths are set from it.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import os
import shutil
import subprocess
import sys
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import fft, signal

SAMPLE_RATE = 16000

ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-x-rp",
    "en-029",
    "en-us-nyc",
)
# Variants that only ever appear in held-out (test) speech.
HELDOUT_VARIANTS = ("m4", "f4", "Annie", "david", "steph2", "john", "belinda", "klatt3", "iven2", "aunty")
# Variants too distorted to be useful speech for an English model.
EXCLUDED_VARIANTS = ("Demonic", "UniRobot", "anikaRobot", "whisperf", "Tweaky")
# Fallback list when espeak-ng cannot be asked (voice listing is parsed from `--voices=variant`).
DEFAULT_VARIANTS = (
    "",
    *(f"m{i}" for i in range(1, 9)),
    *(f"f{i}" for i in range(1, 6)),
    "klatt",
    "klatt2",
    "klatt4",
    "croak",
    "whisper",
    "Andy",
    "Alicia",
    "Andrea",
    "edward",
    "linda",
    "max",
    "robert",
    "travis",
    "zac",
)


# ---------------------------------------------------------------- espeak-ng


@dataclass
class Espeak:
    """How to call espeak-ng: the binary and the environment it needs."""

    binary: str
    env: dict[str, str]

    @classmethod
    def locate(cls, root: str | None) -> Espeak:
        env = dict(os.environ)
        if root:
            base = Path(root)
            binary = base / "usr/bin/espeak-ng"
            libdirs = [
                str(base / sub)
                for sub in (
                    "usr/lib/x86_64-linux-gnu",
                    "lib/x86_64-linux-gnu",
                    "usr/lib/x86_64-linux-gnu/pulseaudio",
                )
            ]
            env["LD_LIBRARY_PATH"] = ":".join([*libdirs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
            data = base / "usr/lib/x86_64-linux-gnu/espeak-ng-data"
            if data.is_dir():
                env["ESPEAK_DATA_PATH"] = str(data.parent)
            if not binary.is_file():
                sys.exit(f"--espeak {root}: no usr/bin/espeak-ng in it")
            return cls(str(binary), env)
        found = shutil.which("espeak-ng")
        if not found:
            sys.exit("espeak-ng not found: apt-get install espeak-ng, or pass --espeak DIR (dpkg -x tree)")
        return cls(found, env)

    def variants(self) -> list[str]:
        try:
            out = subprocess.run(
                [self.binary, "--voices=variant"], env=self.env, capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return list(DEFAULT_VARIANTS)
        names = [""]
        for line in out.splitlines()[1:]:
            parts = line.split()
            if parts and parts[-1].startswith("!v/"):
                names.append(parts[-1][3:])
        return names

    def render(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, gap: int) -> np.ndarray:
        """Return float32 mono audio at SAMPLE_RATE."""
        # espeak-ng has no pitch-range option on its command line; the range is set with SSML prosody
        cmd = [self.binary, "-m", "-v", voice, "-s", str(rate), "-p", str(pitch), "-g", str(gap), "--stdout"]
        try:
            ssml = f'<speak><prosody range="{pitch_range}%">{html.escape(text)}</prosody></speak>'
            res = subprocess.run([*cmd, ssml], env=self.env, capture_output=True, check=True)
        except subprocess.CalledProcessError as e:
            if e.returncode >= 0:
                raise
            # espeak-ng 1.51 crashes (SIGSEGV) on some text with a wide prosody range, e.g. "continuing
            # forever or indefinitely" at range 159 % with en-gb-x-rp+rob: say it with the voice's own range
            ssml = f"<speak>{html.escape(text)}</speak>"
            res = subprocess.run([*cmd, ssml], env=self.env, capture_output=True, check=True)
        with wave.open(io.BytesIO(res.stdout)) as w:
            sr = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        if sr != SAMPLE_RATE:
            g = np.gcd(sr, SAMPLE_RATE)
            pcm = signal.resample_poly(pcm, SAMPLE_RATE // g, sr // g).astype(np.float32)
        return pcm


# ---------------------------------------------------------------- augmentation


def room_impulse_response(rng: np.random.Generator) -> np.ndarray:
    """A synthetic RIR: direct path, a few early reflections, exponentially decaying diffuse tail."""
    rt60 = rng.uniform(0.15, 0.8)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    # the tail builds up after ~5 ms; smooth its onset and colour it slightly (air absorption)
    tail *= np.minimum(1.0, t / 0.005)
    b, a = signal.butter(1, rng.uniform(3000, 7000) / (SAMPLE_RATE / 2))
    tail = signal.lfilter(b, a, tail)
    h = tail * rng.uniform(0.05, 0.4) / (np.abs(tail).max() + 1e-9)
    h[0] = 1.0
    for _ in range(rng.integers(2, 6)):
        h[rng.integers(40, 800)] += rng.uniform(0.1, 0.5) * rng.choice([-1.0, 1.0])
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """White, pink or brown noise (unit RMS)."""
    kind = rng.choice(["white", "pink", "brown", "pink"])
    if kind == "white":
        noise = rng.standard_normal(n)
    else:
        nfft = fft.next_fast_len(n, real=True)
        spec = fft.rfft(rng.standard_normal(nfft))
        f = np.fft.rfftfreq(nfft, 1 / SAMPLE_RATE)
        f[0] = f[1] if nfft > 1 else 1.0
        spec /= np.sqrt(f) if kind == "pink" else f
        noise = fft.irfft(spec, nfft)[:n]
    noise = noise - noise.mean()
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, clean: bool = False) -> tuple[np.ndarray, dict]:
    info: dict = {}
    pad = rng.uniform(0.05, 0.4, size=2)
    x = np.concatenate([np.zeros(int(pad[0] * SAMPLE_RATE)), x, np.zeros(int(pad[1] * SAMPLE_RATE))])
    if not clean and rng.random() < 0.5:
        h = room_impulse_response(rng)
        x = signal.fftconvolve(x, h)[: len(x)]
        info["reverb"] = True
    if not clean and rng.random() < 0.15:  # telephone band
        sos = signal.butter(4, [300, 3400], btype="band", fs=SAMPLE_RATE, output="sos")
        x = signal.sosfilt(sos, x)
        info["telephone"] = True
    speech_rms = np.sqrt(np.mean(x**2)) + 1e-9
    if not clean and rng.random() < 0.85:
        snr = rng.uniform(10, 40)
        x = x + coloured_noise(rng, len(x)) * speech_rms / (10 ** (snr / 20))
        info["snr_db"] = round(float(snr), 1)
    peak = np.abs(x).max() + 1e-9
    x = x * (rng.uniform(0.05, 0.95) / peak)
    return x.astype(np.float32), info


# ---------------------------------------------------------------- jobs


@dataclass
class Job:
    index: int
    text: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    gap: int
    seed: int


def plan(sentences: list[str], count: int, variants: list[str], seed: int) -> list[Job]:
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        text = sentences[i % len(sentences)]
        accent = ACCENTS[rng.integers(len(ACCENTS))]
        variant = variants[rng.integers(len(variants))]
        voice = accent + (f"+{variant}" if variant else "")
        rate = int(np.clip(rng.normal(165, 30), 100, 260))
        jobs.append(
            Job(
                index=i,
                text=text,
                voice=voice,
                rate=rate,
                pitch=int(rng.integers(15, 85)),
                pitch_range=int(rng.integers(40, 160)),
                gap=int(rng.choice([0, 0, 0, 1, 2, 4])),
                seed=int(rng.integers(2**31)),
            )
        )
    return jobs


_ESPEAK: Espeak | None = None


def _init_worker(espeak: Espeak) -> None:
    global _ESPEAK
    _ESPEAK = espeak


def _run_job(args: tuple[Job, str, bool]) -> dict:
    job, out_dir, clean = args
    assert _ESPEAK is not None
    try:
        audio = _ESPEAK.render(job.text, job.voice, job.rate, job.pitch, job.pitch_range, job.gap)
    except subprocess.CalledProcessError as e:
        # one utterance espeak-ng cannot say must not cost the thousands already made: skip it, say why
        why = f"signal {-e.returncode}" if e.returncode < 0 else f"exit status {e.returncode}"
        return {"skipped": job.index, "text": job.text, "voice": job.voice, "why": f"espeak-ng {why}"}
    rng = np.random.default_rng(job.seed)
    audio, info = augment(audio, rng, clean=clean)
    rel = f"wav/{job.index:06d}.wav"
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    path = Path(out_dir) / rel
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    record = {"audio": rel, "text": job.text, "duration": round(len(pcm) / SAMPLE_RATE, 3)}
    record.update({k: v for k, v in asdict(job).items() if k in ("voice", "rate", "pitch")})
    record.update(info)
    return record


def synthesize(
    sentences: list[str],
    out: Path,
    count: int,
    voices: str,
    seed: int,
    workers: int,
    espeak: Espeak,
    clean: bool = False,
) -> list[dict]:
    available = [v for v in espeak.variants() if v not in EXCLUDED_VARIANTS]
    if voices == "test":
        variants = [v for v in HELDOUT_VARIANTS if v in available] or list(HELDOUT_VARIANTS)
    else:
        variants = [v for v in available if v not in HELDOUT_VARIANTS]
    jobs = plan(sentences, count, variants, seed)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(espeak,)) as pool:
        for k, rec in enumerate(pool.map(_run_job, [(j, str(out), clean) for j in jobs], chunksize=16)):
            if "skipped" in rec:
                print(
                    f"  skipped utterance {rec['skipped']} ({rec['voice']}: {rec['text']!r}): {rec['why']}", flush=True
                )
            else:
                records.append(rec)
            if (k + 1) % 2000 == 0:
                print(f"  {k + 1}/{len(jobs)} utterances, {time.time() - t0:.0f}s", flush=True)
    if jobs and not records:
        sys.exit(f"{out}: espeak-ng ({espeak.binary}) failed on all {len(jobs)} utterances; no manifest written")
    tmp = out / "manifest.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    tmp.replace(out / "manifest.jsonl")
    return records


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=Path, required=True, help="text file, one sentence a line")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=0, help="utterances to make (default: one per sentence)")
    ap.add_argument("--skip", type=int, default=0, help="skip this many sentences first")
    ap.add_argument("--max-words", type=int, default=1000, help="use only sentences this short")
    ap.add_argument("--voices", choices=("train", "test"), default="train")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--clean", action="store_true", help="no noise/reverb/telephone (silence padding only)")
    ap.add_argument("--espeak", default=os.environ.get("ESPEAK_ROOT"), help="dpkg -x tree of espeak-ng")
    args = ap.parse_args(argv)
    lines = args.sentences.read_text(encoding="utf-8").splitlines()
    sentences = [s.strip() for s in lines[args.skip :] if 0 < len(s.split()) <= args.max_words]
    if not sentences:
        sys.exit(f"{args.sentences}: no sentences")
    count = args.count or len(sentences)
    espeak = Espeak.locate(args.espeak)
    t0 = time.time()
    records = synthesize(sentences, args.out, count, args.voices, args.seed, args.workers, espeak, args.clean)
    hours = sum(r["duration"] for r in records) / 3600
    print(f"{len(records)} utterances, {hours:.2f} h of audio in {time.time() - t0:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
