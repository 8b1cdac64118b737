"""End-to-end ASR benchmark: w2vlm's pipeline against transformers' pipeline with pyctcdecode.

Both pipelines get the same model folder (hub layout with alphabet.json + language_model/), the same audio
(English sentences spoken by espeak-ng, loaded once to 16 kHz arrays) and the same torch thread count, and
are called the way their users call them: once per utterance, with pyctcdecode's default decoding
parameters. Reported per side: end-to-end seconds, the seconds spent in LM decoding and its share of the
end-to-end time, and whether the transcripts are identical. Then, for w2vlm alone: int8 vs fp32 on CPU
(weight memory, model seconds, transcript agreement) and, with --long-minutes, one long file transcribed
from disk in chunks (peak RSS, real-time factor).

transformers' LM decoding needs pyctcdecode (numpy<2) and kenlm, which live in their own venv,
bench/.venv-pipeline (made with --setup: a venv over this interpreter's packages, so the same torch and
transformers, plus numpy<2, pyctcdecode and kenlm). The anchor runs there as a subprocess of this script.

    python bench/pipeline.py --setup                 # once: the anchor venv (a minute; kenlm compiles)
    python bench/pipeline.py                         # embedded default model, 40 utterances
    python bench/pipeline.py --model DIR --utterances 100 --long-minutes 60 --json out.json
    python bench/pipeline.py --random-model base     # no trained model at hand: a random wav2vec2-base
                                                     # with a peaky output layer (timings only)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
VENV = BENCH / ".venv-pipeline"
DEFAULT_LM = REPO / ".data" / "lm" / "bench_3gram.arpa"
DEFAULT_TEXT = REPO / ".data" / "corpus" / "test.txt"

FALLBACK_SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she had never seen so beautiful a morning",
    "it is a truth universally acknowledged",
    "the weather was cold and the roads were wet",
    "he walked slowly to the end of the garden",
    "we shall meet again at the house tomorrow",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ inputs


def read_sentences(path: Path, count: int) -> list[str]:
    if path.is_file():
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    else:
        log(f"{path} not found: using {len(FALLBACK_SENTENCES)} built-in sentences")
        lines = FALLBACK_SENTENCES
    out = []
    while len(out) < count:
        out.extend(lines[: count - len(out)])
    return out


def synthesize(sentences: list[str]) -> list[Path]:
    """espeak-ng wav files for the sentences (cached by content), with varied voices and rates."""
    folder = CACHE / "pipeline-audio"
    folder.mkdir(parents=True, exist_ok=True)
    voices = ["en-us", "en", "en-us+m3", "en+f2", "en-us+f4", "en+m7"]
    paths = []
    for i, text in enumerate(sentences):
        voice, rate = voices[i % len(voices)], 140 + (i * 7) % 50
        key = hashlib.sha1(f"{voice}|{rate}|{text}".encode()).hexdigest()[:16]
        path = folder / f"{key}.wav"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(tmp), text], check=True)
            tmp.replace(path)
        paths.append(path)
    return paths


def build_random_model(size: str, lm: Path) -> Path:
    """A random wav2vec2 CTC model with a character vocabulary and the given LM, in the hub layout.

    Its output layer is scaled so that each frame has one or two likely tokens, as a trained model's have;
    the transcripts are meaningless, the compute and decoding costs are those of a model of this size.
    """
    import torch
    import transformers

    folder = CACHE / f"random-{size}-{hashlib.sha1(str(lm.resolve()).encode()).hexdigest()[:8]}"
    if (folder / "language_model" / "attrs.json").is_file():
        return folder
    vocab = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]
    if size == "base":
        kw: dict[str, Any] = {}
    else:
        kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
        kw["conv_dim"] = (64,) * 7
    config = transformers.Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=0, **kw)
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(60.0 if size == "base" else 30.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json")).save_pretrained(str(folder))
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(str(folder))
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre["processor_class"] = "Wav2Vec2ProcessorWithLM"
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    labels = ["" if t == "<pad>" else " " if t == "|" else "⁇" if t == "<unk>" else t for t in vocab]
    (folder / "alphabet.json").write_text(json.dumps({"labels": labels, "is_bpe": False}))
    lm_dir = folder / "language_model"
    lm_dir.mkdir(exist_ok=True)
    (lm_dir / lm.name).write_bytes(lm.read_bytes())
    unigrams = lm.parent / "unigrams.txt"
    if unigrams.is_file():
        (lm_dir / "unigrams.txt").write_bytes(unigrams.read_bytes())
    (lm_dir / "attrs.json").write_text(
        json.dumps({"alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": True})
    )
    return folder


def resolve_model(args: argparse.Namespace) -> tuple[Path, str]:
    if args.model:
        return Path(args.model), "given"
    if args.random_model:
        if not Path(args.lm).is_file():
            sys.exit(f"--random-model needs an ARPA LM: {args.lm} not found (--lm PATH)")
        return build_random_model(args.random_model, Path(args.lm)), f"random-{args.random_model}"
    from w2vlm.model import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        sys.exit(f"no embedded model at {DEFAULT_MODEL_DIR}: pass --model DIR or --random-model base|tiny")
    return DEFAULT_MODEL_DIR, "embedded"


# ----------------------------------------------------------------------------------------------- workers


def run_w2vlm(model_dir: Path, audios: list[np.ndarray], threads: int, repeats: int) -> dict[str, Any]:
    import torch

    import w2vlm

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pipe = w2vlm.pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    load_s = time.perf_counter() - t0
    pipe({"raw": audios[0], "sampling_rate": 16000})  # warm-up
    best: dict[str, Any] | None = None
    for _ in range(repeats):
        texts, e2e, decode = [], 0.0, 0.0
        for audio in audios:
            t0 = time.perf_counter()
            out = pipe({"raw": audio, "sampling_rate": 16000})
            e2e += time.perf_counter() - t0
            decode += pipe.last_timings["decode"]
            texts.append(out["text"])
        if best is None or e2e < best["e2e_s"]:
            best = {"texts": texts, "e2e_s": e2e, "decode_s": decode}
    assert best is not None
    best["load_s"] = load_s
    return best


def run_transformers(model_dir: Path, audios: list[np.ndarray], threads: int, repeats: int) -> dict[str, Any]:
    """Runs inside the anchor venv: transformers' ASR pipeline, pyctcdecode decoding timed by a wrapper."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pipe = transformers.pipeline("automatic-speech-recognition", model=str(model_dir), device=-1)
    load_s = time.perf_counter() - t0
    if getattr(pipe, "type", None) != "ctc_with_lm":
        raise SystemExit(f"transformers did not load an LM decoder for {model_dir} (type {pipe.type})")
    decoder = pipe.decoder
    original = decoder.decode_beams
    spent = [0.0]

    def timed_decode_beams(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            spent[0] += time.perf_counter() - t

    decoder.decode_beams = timed_decode_beams
    pipe({"raw": audios[0], "sampling_rate": 16000})
    best: dict[str, Any] | None = None
    for _ in range(repeats):
        texts, e2e = [], 0.0
        spent[0] = 0.0
        for audio in audios:
            t0 = time.perf_counter()
            out = pipe({"raw": audio, "sampling_rate": 16000})
            e2e += time.perf_counter() - t0
            texts.append(out["text"])
        if best is None or e2e < best["e2e_s"]:
            best = {"texts": texts, "e2e_s": e2e, "decode_s": spent[0]}
    assert best is not None
    best["load_s"] = load_s
    best["versions"] = {
        "transformers": transformers.__version__,
        "pyctcdecode": __import__("importlib.metadata").metadata.version("pyctcdecode"),
    }
    return best


def run_int8(model_dir: Path, audios: list[np.ndarray], threads: int) -> dict[str, Any]:
    import torch

    from w2vlm.model import load_model, model_memory_bytes
    from w2vlm.pipeline import CTCLogitsRunner
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    torch.set_num_threads(threads)
    proc = Wav2Vec2ProcessorWithLM.from_pretrained(model_dir)
    out: dict[str, Any] = {}
    for name, quantize in (("fp32", None), ("int8", "int8")):
        model = load_model(model_dir, device="cpu", quantize=quantize)
        runner = CTCLogitsRunner(model, proc.feature_extractor)
        runner.compute_logits([audios[0]])
        t0 = time.perf_counter()
        logits = [runner.compute_logits([a])[0] for a in audios]
        model_s = time.perf_counter() - t0
        texts = proc.batch_decode(logits).text
        out[name] = {"weights_bytes": model_memory_bytes(model), "model_s": model_s, "texts": texts}
    return out


def run_long(model_dir: Path, path: Path, threads: int, chunk_s: float) -> dict[str, Any]:
    import torch

    import w2vlm

    torch.set_num_threads(threads)
    pipe = w2vlm.pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    pipe({"raw": np.zeros(16000, np.float32), "sampling_rate": 16000})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = pipe(str(path), chunk_length_s=chunk_s, return_timestamps="word")
    elapsed = time.perf_counter() - t0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": elapsed,
        "peak_rss_mb_before": rss_before / 1024,
        "peak_rss_mb_after": rss_after / 1024,
        "timings": pipe.last_timings,
        "words": len(out["chunks"]),
        "text_head": out["text"][:200],
    }


def make_long_file(audios: list[np.ndarray], minutes: float) -> Path:
    import soundfile as sf

    path = CACHE / f"pipeline-long-{minutes:g}min.flac"
    if path.is_file():
        return path
    target = int(minutes * 60 * 16000)
    gap = np.zeros(8000, np.float32)
    tmp = path.with_suffix(".tmp.flac")
    written = 0
    with sf.SoundFile(str(tmp), "w", samplerate=16000, channels=1, format="FLAC") as fh:
        while written < target:
            for audio in audios:
                piece = np.concatenate([audio, gap])[: target - written]
                fh.write(piece)
                written += piece.size
                if written >= target:
                    break
    tmp.replace(path)
    return path


# -------------------------------------------------------------------------------------------------- main


def setup_venv() -> None:
    if not (VENV / "bin" / "python").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "numpy<2", "pyctcdecode", "kenlm"], check=True)
    subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import pyctcdecode, kenlm, transformers, torch; print('ok')"],
        check=True,
    )


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    sys.path.insert(0, str(BENCH))
    from metrics import wer

    return wer(refs, hyps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="create the anchor venv and exit")
    ap.add_argument("--model", help="model folder in the hub layout (default: the embedded model)")
    ap.add_argument("--random-model", choices=["tiny", "base"], help="benchmark a random model of this size")
    ap.add_argument("--lm", default=str(DEFAULT_LM), help="ARPA LM for --random-model")
    ap.add_argument("--text", default=str(DEFAULT_TEXT), help="sentences to speak, one a line")
    ap.add_argument("--utterances", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (default 1: steadier)")
    ap.add_argument("--repeats", type=int, default=1, help="timed passes (fastest kept)")
    ap.add_argument("--no-anchor", action="store_true", help="skip transformers + pyctcdecode")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 vs fp32 comparison")
    ap.add_argument("--long-minutes", type=float, default=0.0, help="also transcribe one long file")
    ap.add_argument("--chunk-length-s", type=float, default=30.0, help="chunk length for the long file")
    ap.add_argument("--json", help="write every figure and text to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-in", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        data = np.load(args.worker_in, allow_pickle=False)
        keys = sorted((k for k in data.files if k.startswith("a")), key=lambda s: int(s[1:]))
        audios = [data[k] for k in keys]
        model_dir = Path(str(data["model"])) if "model" in data.files else Path(args.model)
        fn = {"transformers": run_transformers, "w2vlm": run_w2vlm}[args.worker]
        result = fn(model_dir, audios, args.threads, args.repeats)
        Path(args.worker_out).write_text(json.dumps(result))
        return
    if args.setup:
        setup_venv()
        return

    CACHE.mkdir(exist_ok=True)
    model_dir, model_kind = resolve_model(args)
    sentences = read_sentences(Path(args.text), args.utterances)
    log(f"synthesizing {len(sentences)} utterances with espeak-ng ...")
    from w2vlm.audio import load_audio

    audios = [load_audio(p) for p in synthesize(sentences)]
    audio_s = sum(a.size for a in audios) / 16000
    report: dict[str, Any] = {
        "model": str(model_dir),
        "model_kind": model_kind,
        "utterances": len(audios),
        "audio_seconds": audio_s,
        "threads": args.threads,
        "load_average": os.getloadavg(),
    }
    log(f"{len(audios)} utterances, {audio_s:.1f} s of audio; model {model_dir} ({model_kind})")

    log("w2vlm pipeline ...")
    ours = run_w2vlm(model_dir, audios, args.threads, args.repeats)
    report["w2vlm"] = ours
    if not args.no_anchor:
        if not (VENV / "bin" / "python").is_file():
            sys.exit(f"no anchor venv at {VENV}: run python bench/pipeline.py --setup (or pass --no-anchor)")
        log("transformers pipeline + pyctcdecode (anchor venv) ...")
        npz = CACHE / "pipeline-audio.npz"
        np.savez(npz, model=str(model_dir), **{f"a{i}": a for i, a in enumerate(audios)})
        out_json = CACHE / "pipeline-anchor.json"
        cmd = [str(VENV / "bin" / "python"), __file__, "--worker", "transformers", "--worker-in", str(npz)]
        cmd += ["--worker-out", str(out_json), "--threads", str(args.threads), "--repeats", str(args.repeats)]
        subprocess.run(cmd, check=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        report["transformers"] = json.loads(out_json.read_text())
    if not args.no_int8:
        log("int8 vs fp32 ...")
        report["int8"] = run_int8(model_dir, audios, args.threads)
    if args.long_minutes > 0:
        path = make_long_file(audios, args.long_minutes)
        log(f"long file: {args.long_minutes:g} min from {path} ...")
        report["long"] = run_long(model_dir, path, args.threads, args.chunk_length_s)
        report["long"]["audio_minutes"] = args.long_minutes

    print_report(report, sentences)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def print_report(r: dict[str, Any], refs: list[str]) -> None:
    audio_s = r["audio_seconds"]
    print(f"model: {r['model']} ({r['model_kind']}); {r['utterances']} utterances, {audio_s:.1f} s of audio;")
    print(f"torch threads: {r['threads']}; load average: {', '.join(f'{x:.2f}' for x in r['load_average'])}")
    print()
    print(f"{'pipeline':<36} {'e2e s':>8} {'RTF':>7} {'LM decode s':>12} {'LM share':>9} {'WER':>7}")
    rows = [("w2vlm", r["w2vlm"])]
    if "transformers" in r:
        versions = r["transformers"]["versions"]
        rows.append(
            (f"transformers {versions['transformers']} + pyctcdecode {versions['pyctcdecode']}", r["transformers"])
        )
    for name, res in rows:
        share = res["decode_s"] / res["e2e_s"] if res["e2e_s"] else 0.0
        w = word_error_rate(refs, res["texts"])
        print(
            f"{name:<36} {res['e2e_s']:>8.2f} {res['e2e_s'] / audio_s:>7.3f} {res['decode_s']:>12.2f} "
            f"{share:>8.1%} {w:>7.1%}"
        )
    if "transformers" in r:
        ours, theirs = r["w2vlm"], r["transformers"]
        same = sum(a == b for a, b in zip(ours["texts"], theirs["texts"], strict=True))
        print()
        print(f"identical transcripts: {same}/{len(ours['texts'])}")
        print(f"end-to-end speed-up (transformers / w2vlm): {theirs['e2e_s'] / ours['e2e_s']:.2f}x")
        print(f"LM decoding speed-up (pyctcdecode / w2vlm):  {theirs['decode_s'] / max(ours['decode_s'], 1e-9):.2f}x")
        share = ours["decode_s"] / ours["e2e_s"]
        print(
            f"w2vlm LM-decoding share of end-to-end time: {share:.1%} "
            f"(target <= 10%: {'met' if share <= 0.10 else 'NOT met'})"
        )
        for i, (a, b) in enumerate(zip(ours["texts"], theirs["texts"], strict=True)):
            if a != b:
                print(f"  differs #{i}: w2vlm={a!r}\n              transformers={b!r}")
    if "int8" in r:
        fp, q = r["int8"]["fp32"], r["int8"]["int8"]
        same = sum(a == b for a, b in zip(fp["texts"], q["texts"], strict=True))
        print()
        print(f"{'CPU model':<10} {'weights MB':>11} {'model s':>9} {'WER':>7}")
        for name, res in (("fp32", fp), ("int8", q)):
            print(
                f"{name:<10} {res['weights_bytes'] / 1e6:>11.1f} {res['model_s']:>9.2f} "
                f"{word_error_rate(refs, res['texts']):>7.1%}"
            )
        print(
            f"int8/fp32: weights {q['weights_bytes'] / fp['weights_bytes']:.2f}x, model time "
            f"{q['model_s'] / fp['model_s']:.2f}x; identical transcripts {same}/{len(fp['texts'])}; "
            f"WER int8 vs fp32 transcripts {word_error_rate(fp['texts'], q['texts']):.1%}"
        )
    if "long" in r:
        lg = r["long"]
        print()
        print(
            f"long file ({lg['audio_minutes']:g} min, chunked): {lg['seconds']:.1f} s "
            f"(RTF {lg['seconds'] / (lg['audio_minutes'] * 60):.3f}); peak RSS {lg['peak_rss_mb_before']:.0f} MB "
            f"after loading -> {lg['peak_rss_mb_after']:.0f} MB after the file; {lg['words']} words; "
            f"time split {json.dumps({k: round(v, 2) for k, v in lg['timings'].items()})}"
        )


if __name__ == "__main__":
    main()
