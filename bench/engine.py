"""The transcription engine's throughput, against references measured in the same run.

    python bench/engine.py                                 # CPU: ceiling + the embedded model, 20 minutes
    python bench/engine.py --minutes 60 --shape large --device cuda --dtype bfloat16 --quantize-check
    python bench/engine.py --json out.json

Three measurements, on a corpus of ~15 s wav files made from ``examples/`` (the clips joined with 0.3-1 s
gaps and a little noise; written once to a temporary folder, so the reading stage reads real files):

1. **Ceiling** — what the CPU side can feed: a near-free model in the embedded model's layout (log-mel
   input, one conformer layer of width 32, random weights), greedy decoding, run exactly as
   ``w2vlm transcribe DIR -o OUT --no-lm`` runs (the same :class:`~w2vlm.transcribe.Transcriber` and writers),
   in audio seconds per second; then the CPU milliseconds per audio second of each stage measured alone
   (read, VAD, features, forward, greedy decoding, writing).
2. **Model** — end to end with LM decoding (``engine.transcribe``) against the model's forward pass alone on
   the same inputs, in the same batches (same budget), on the same device and dtype, features precomputed on
   the device: the ratio says how much of the model's speed the engine delivers. ``--shape``: ``embedded``
   (the packaged model and LM), ``base`` or ``large`` (wav2vec2-base/large shaped, random weights, the
   embedded model's alphabet and LM, a peaky output layer), or a model folder. ``--anchor`` adds
   transformers' own ASR pipeline (greedy, no LM) on the same files.
3. **Transcripts** — the engine's against a plain reference path (each file whole through transformers'
   feature extractor and the model, then the same decoder) on ``examples/`` and the corpus.

On CUDA, ``--quantize-check`` also loads the model with ``--quantize int8`` (bitsandbytes) and reports its
weight memory, speed and transcript agreement against the dtype run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# OpenMP threads that wait sleep, as the commands set it up (cli.app.model_command) before torch is imported: with
# torch's default (spinning), the model stage's idle OpenMP thread took a core from the reading workers
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------------ corpus


def make_corpus(folder: Path, minutes: float, seed: int = 0) -> list[Path]:
    """~15 s wav files (13-17 s) from the example clips with gaps and noise, ``minutes`` of audio in all."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    clips = [sf.read(str(p), dtype="float32")[0] for p in sorted(EXAMPLES.glob("*.wav"))]
    rng = np.random.default_rng(seed)
    files, total, i = [], 0.0, 0
    while total < minutes * 60:
        target = int(rng.uniform(13, 17) * 16000)
        parts, n = [], 0
        while n < target:
            clip = clips[int(rng.integers(len(clips)))]
            gap = np.zeros(int(rng.uniform(0.3, 1.0) * 16000), np.float32)
            parts += [clip, gap]
            n += clip.size + gap.size
        audio = np.concatenate(parts)[:target]
        audio = audio + rng.normal(0, 0.002, audio.size).astype(np.float32)
        path = folder / f"f{i:04d}.wav"
        sf.write(str(path), audio, 16000, subtype="PCM_16")
        files.append(path)
        total += audio.size / 16000
        i += 1
    return files


# ------------------------------------------------------------------------------------------------ models


def embedded_folder() -> Path:
    from w2vlm.model import resolve_model_path

    return Path(resolve_model_path(None))


def random_model(folder: Path, shape: str) -> Path:
    """A model folder in the hub layout with random weights: ``nearfree`` (the embedded layout, one tiny
    conformer layer), ``base`` or ``large`` (wav2vec2-shaped), with the embedded alphabet, tokenizer and LM."""
    import torch
    import transformers

    src = embedded_folder()
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("model.safetensors", "training_info.json"))
    vocab = len(json.loads((src / "vocab.json").read_text()))
    torch.manual_seed(0)
    if shape == "nearfree":
        cfg = json.loads((src / "config.json").read_text())
        for key in ("architectures", "transformers_version", "model_type"):
            cfg.pop(key, None)
        cfg.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        cfg.update(conv_depthwise_kernel_size=3)
        model = transformers.Wav2Vec2BertForCTC(transformers.Wav2Vec2BertConfig(**cfg))
    else:
        size = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096)}[shape]
        config = transformers.Wav2Vec2Config(
            vocab_size=vocab,
            hidden_size=size[0],
            num_hidden_layers=size[1],
            num_attention_heads=size[2],
            intermediate_size=size[3],
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
            pad_token_id=0,
        )
        model = transformers.Wav2Vec2ForCTC(config)
        fe = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True)
        (folder / "preprocessor_config.json").unlink()
        fe.save_pretrained(str(folder))
        pre = json.loads((folder / "preprocessor_config.json").read_text())
        pre["processor_class"] = "Wav2Vec2ProcessorWithLM"
        (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # peaky outputs, as a trained model's
    model.eval().save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------------------------------------ runs


def stage_costs(engine: Any, files: list[Path], out: Path) -> dict[str, float]:
    """CPU milliseconds per audio second of each stage, measured alone on one thread."""
    import torch

    from w2vlm.audio import load_audio
    from w2vlm.engine import DecodeConfig, silero, vad
    from w2vlm.writers import write_transcript

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = time.process_time()
        audios = [load_audio(str(f), 16000) for f in files]
        seconds = sum(a.size for a in audios) / 16000
        costs = {"read": time.process_time() - t}
        if silero.available():  # speech segments of each file (what the default does with inputs over 10 s)
            finder_args = (engine.inputs.vad_model(), engine.sampling_rate, engine.inputs.vad_params(engine.config))
            list(vad.SpeechFinder(*finder_args).segments([audios[0]]))  # warm-up (FFT plans, first calls)
            t = time.process_time()
            for audio in audios:
                list(vad.SpeechFinder(*finder_args).segments([audio]))
            costs["vad"] = time.process_time() - t
        t = time.process_time()
        prepared = [engine.runner.prepare(a) for a in audios]
        costs["features"] = time.process_time() - t
        t = time.process_time()
        outs = []
        for i in range(0, len(prepared), 8):
            outs += engine.runner.forward(prepared[i : i + 8]).result()
        costs["forward"] = time.process_time() - t
        t = time.process_time()
        texts = engine.decoding.decode([str(f) for f in files], outs, DecodeConfig(use_lm=False), 1)
        costs["greedy decode"] = time.process_time() - t
        t = time.process_time()
        for i, tr in enumerate(texts):
            write_transcript(tr, out / f"s{i}", ["txt"])
        costs["write"] = time.process_time() - t
    finally:
        torch.set_num_threads(threads)
    return {k: 1000 * v / seconds for k, v in costs.items()}


def warm_readers(engine: Any, files: list[Path], repeats: int) -> dict[str, float]:
    """``engine.transcribe`` (greedy, nothing written) with its reading threads and with its reading processes up
    and warm, as in a server or a long job: audio-s/s, fastest of ``repeats`` each, runs interleaved."""
    from w2vlm.engine import DecodeConfig

    pool = engine.reader_pool()
    deadline = time.monotonic() + 120
    while not pool.ready():
        if time.monotonic() > deadline:  # the processes could not be started here: their log says why
            engine.close()
            return {}
        time.sleep(0.05)
    names = [str(f) for f in files]
    decode = DecodeConfig(use_lm=False)
    best: dict[str, float] = {}
    for _ in range(repeats):
        for label, processes in (("threads", False), ("processes", True)):
            t = time.perf_counter()
            seconds = sum(
                tr.duration
                for tr in engine.transcribe(names, decode, config=engine.config.with_(read_processes=processes))
            )
            best[label] = max(best.get(label, 0.0), seconds / (time.perf_counter() - t))
    engine.close()
    return best


def ceiling(files: list[Path], work: Path, repeats: int, device: str) -> dict[str, Any]:
    """``w2vlm transcribe DIR -o OUT --no-lm`` with a near-free model: audio-s/s, fastest of ``repeats``."""
    from rich.console import Console

    from w2vlm.transcribe import TranscribeOptions, Transcriber
    from w2vlm.transcribe_run import run

    folder = random_model(work / "nearfree", "nearfree")
    speeds: dict[str, float] = {}
    for _ in range(repeats):
        # the default (the VAD on for inputs over 10 s when its extra is installed), then --no-vad, then reading in
        # processes (--read-processes: their start-up overlaps the model's loading; threads read until they are up)
        for label, vad, processes in (("default", None, None), ("no_vad", False, None), ("read_processes", None, True)):
            out = work / "ceiling-out"
            shutil.rmtree(out, ignore_errors=True)
            summary = run(
                [str(files[0].parent)],
                TranscribeOptions(model=str(folder), no_lm=True, device=device, vad=vad, read_processes=processes),
                output_dir=str(out),
                console=Console(stderr=True, quiet=True),
                progress=False,
            )
            speeds[label] = max(speeds.get(label, 0.0), summary.speed)
    engine = Transcriber(TranscribeOptions(model=str(folder), no_lm=True, device=device)).engine
    warm = warm_readers(engine, files, repeats)
    costs = stage_costs(engine, files, work)
    # what the machine's CPUs could feed if every stage ran on them with no overhead at all (the stages' CPU time
    # divided over the CPUs): the measured speed against it is the pipeline's efficiency, which, unlike audio-s/s,
    # can be compared between machines
    cpus = len(os.sched_getaffinity(0))
    bound = {
        label: cpus * 1000.0 / sum(v for k, v in costs.items() if vad or k != "vad")
        for label, vad in (("default", True), ("no_vad", False))
    }
    return {
        "audio_s_per_s": speeds["default"],
        "no_vad_audio_s_per_s": speeds["no_vad"],
        "read_processes_audio_s_per_s": speeds["read_processes"],
        "warm_engine_audio_s_per_s": warm,
        "stage_ms_per_audio_s": costs,
        "stage_bound_audio_s_per_s": bound,
        "efficiency": {k: speeds[k] / bound[k] for k in bound},
    }


def model_run(args: argparse.Namespace, files: list[Path], work: Path) -> dict[str, Any]:
    """End to end with LM decoding vs the forward pass alone, same inputs and batches."""
    import torch

    from w2vlm.audio import load_audio
    from w2vlm.engine import DecodeConfig, Engine, EngineConfig
    from w2vlm.model import load_model
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    if args.shape == "embedded":
        folder = embedded_folder()
    elif args.shape in ("base", "large"):
        folder = random_model(work / args.shape, args.shape)
    else:
        folder = Path(args.shape)
    dtype = None if args.dtype == "float32" else args.dtype
    model = load_model(folder, device=args.device, dtype=dtype)
    processor = Wav2Vec2ProcessorWithLM.from_pretrained(folder)
    config = EngineConfig(batch_seconds=args.batch_seconds)
    engine = Engine(model, processor.feature_extractor, processor.decoder, config)
    decode = DecodeConfig(beam_width=args.beam_width)
    names = [str(f) for f in files]
    list(engine.transcribe(names[:4], decode))  # warm-up: kernels, allocator
    cuda = engine.runner.on_cuda

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    runs = []
    for _ in range(args.repeats):
        sync()
        t = time.perf_counter()
        transcripts = list(engine.transcribe(names, decode))
        sync()
        runs.append(time.perf_counter() - t)
    seconds = sum(tr.duration for tr in transcripts)
    e2e = seconds / min(runs)
    # the forward pass alone: the same windows in the same batches, inputs already on the device
    audios = [load_audio(n, 16000) for n in names]
    from w2vlm.engine.windows import Window

    windows = [Window(i, 0, 0, a.size, 0, True, engine.runner.prepare(a)) for i, a in enumerate(audios)]
    windows.sort(key=lambda w: w.samples, reverse=True)
    batches = []
    with torch.inference_mode():
        for batch in engine.batches(windows):
            values, mask = engine.runner.batch_inputs([w.prepared for w in batch], engine.runner.uses_mask)
            inputs = {engine.runner.input_name: values.to(engine.runner.dtype)}
            if mask is not None:
                inputs["attention_mask"] = mask
            batches.append(inputs)
        model(**batches[0])
        fwd = []
        for _ in range(args.repeats):
            sync()
            t = time.perf_counter()
            for inputs in batches:
                model(**inputs)
            sync()
            fwd.append(time.perf_counter() - t)
    forward = seconds / min(fwd)
    out: dict[str, Any] = {
        "model": str(folder) if args.shape not in ("base", "large") else f"wav2vec2-{args.shape} shaped, random",
        "device": str(engine.runner.device),
        "dtype": str(engine.runner.dtype).replace("torch.", ""),
        "audio_seconds": seconds,
        "batches": len(batches),
        "e2e_audio_s_per_s": e2e,
        "forward_audio_s_per_s": forward,
        "ratio": e2e / forward,
        "stage_seconds": {k: round(v, 3) for k, v in engine.timings.items()},
        "transcripts": [tr.text for tr in transcripts],
    }
    if args.anchor:
        out["anchor_transformers_greedy_audio_s_per_s"] = transformers_anchor(folder, names, args)
    if args.quantize_check and cuda:
        out["int8"] = int8_check(folder, names, transcripts, args)
    del engine, model
    return out


def transformers_anchor(folder: Path, names: list[str], args: argparse.Namespace) -> float | None:
    """transformers' own pipeline (greedy CTC, no LM) on the same audio, batched, same device and dtype. It
    gets arrays (its file reading needs an ffmpeg binary), so its figure leaves out reading."""
    import soundfile as sf
    import torch
    import transformers

    arrays = [sf.read(n, dtype="float32")[0] for n in names]
    seconds = sum(a.size for a in arrays) / 16000

    def inputs(count: int | None = None) -> list[dict[str, Any]]:  # fresh dicts: the pipeline pops their keys
        return [{"raw": a, "sampling_rate": 16000} for a in arrays[:count]]

    try:
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.dtype, torch.float32)
        if args.dtype == "auto" and args.device.startswith("cuda"):
            dtype = torch.bfloat16
        pipe = transformers.pipeline(
            "automatic-speech-recognition",
            model=str(folder),
            device=args.device if args.device not in ("auto", "cpu") else -1,
            dtype=dtype,
        )
        pipe(inputs(2), batch_size=16)
        batch = inputs()
        t = time.perf_counter()
        pipe(batch, batch_size=16)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    except Exception as exc:  # an anchor that cannot run here is reported, not fatal
        log(f"transformers anchor failed: {type(exc).__name__}: {exc}")
        return None
    return seconds / dt


def int8_check(folder: Path, names: list[str], reference: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """bitsandbytes int8 weights on CUDA: weight memory, speed and transcript agreement with the dtype run."""
    import torch

    from w2vlm.engine import DecodeConfig, Engine
    from w2vlm.model import load_model
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    try:
        model = load_model(folder, device=args.device, quantize="int8")
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    processor = Wav2Vec2ProcessorWithLM.from_pretrained(folder)
    engine = Engine(model, processor.feature_extractor, processor.decoder)
    decode = DecodeConfig(beam_width=args.beam_width)
    list(engine.transcribe(names[:4], decode))
    torch.cuda.synchronize()
    t = time.perf_counter()
    got = list(engine.transcribe(names, decode))
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    same = sum(a.text == b.text for a, b in zip(got, reference))
    return {
        "weight_mb": weight_bytes / 1e6,
        "audio_s_per_s": sum(tr.duration for tr in got) / dt,
        "same_transcripts": f"{same}/{len(got)}",
    }


def reference_check(files: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Engine transcripts against a plain path: each file whole through transformers' feature extractor and
    the model, then the same decoder (``decode_beams`` of the processor's decoder, same options)."""
    import torch

    from w2vlm.audio import load_audio
    from w2vlm.engine import DecodeConfig, Engine
    from w2vlm.model import load_model
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    folder = embedded_folder()
    model = load_model(folder, device="cpu")
    processor = Wav2Vec2ProcessorWithLM.from_pretrained(folder)
    engine = Engine(model, processor.feature_extractor, processor.decoder)
    names = [str(f) for f in files]
    got = [tr.text for tr in engine.transcribe(names, DecodeConfig())]
    fe = processor.feature_extractor
    same = 0
    diffs = []
    for name, text in zip(names, got):
        audio = load_audio(name, 16000)
        inputs = fe(audio, sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            logits = model(**inputs).logits[0].float().numpy()
        beams = processor.decoder.decode_beams(logits)
        ref = beams[0].text if beams else ""
        same += ref == text
        if ref != text:
            diffs.append((Path(name).name, text, ref))
    return {"same": same, "total": len(names), "differences": diffs[:10]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="audio in the corpus (default 20)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16 (model run)")
    ap.add_argument("--shape", default="embedded", help="embedded, base, large, or a model folder")
    ap.add_argument("--batch-seconds", type=float, default=None, help="padded audio per forward pass")
    ap.add_argument("--beam-width", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="runs per measurement; the fastest counts")
    ap.add_argument("--skip", default="", help="comma-separated: ceiling, model, transcripts")
    ap.add_argument("--anchor", action="store_true", help="also time transformers' own pipeline (greedy)")
    ap.add_argument("--quantize-check", action="store_true", help="CUDA: also the bitsandbytes int8 model")
    ap.add_argument("--json", default=None, help="write every figure here")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    from w2vlm.memory import tune_allocator

    # the allocator as the commands set it up (MALLOC_TOP_PAD_=131072, glibc's own value, in the environment leaves
    # glibc's defaults)
    report: dict[str, Any] = {
        "load_average": os.getloadavg()[0],
        "cpus": len(os.sched_getaffinity(0)),
        "allocator_tuned": tune_allocator(),
    }
    log(f"allocator tuned as the commands do: {report['allocator_tuned']}")
    with tempfile.TemporaryDirectory(prefix="w2vlm-bench-engine-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        files = make_corpus(work / "corpus", args.minutes)
        log(f"corpus: {len(files)} files, {args.minutes:g} min, made in {time.perf_counter() - t:.1f} s")
        if "ceiling" not in skip:
            report["ceiling"] = ceiling(files, work, args.repeats, args.device)
            c = report["ceiling"]
            log(
                f"ceiling (near-free model, greedy, as `w2vlm transcribe`): {c['audio_s_per_s']:.0f} audio-s/s "
                f"(--no-vad: {c['no_vad_audio_s_per_s']:.0f}; "
                f"--read-processes: {c['read_processes_audio_s_per_s']:.0f})"
            )
            w = c["warm_engine_audio_s_per_s"]
            if w:
                log(
                    f"  one engine, warm (as a server or a long job sees it; nothing written): reading threads "
                    f"{w['threads']:.0f} audio-s/s, reading processes {w['processes']:.0f} "
                    f"({w['processes'] / w['threads']:.2f}x)"
                )
            else:
                log("  one engine, warm: its reading processes did not come up within 120 s (see the log above)")
            log(
                "  CPU ms per audio second, each stage alone: "
                + ", ".join(f"{k} {v:.3f}" for k, v in c["stage_ms_per_audio_s"].items())
            )
            b, e = c["stage_bound_audio_s_per_s"], c["efficiency"]
            log(
                f"  the stages' CPU time spread over {report['cpus']} CPUs with no overhead: {b['default']:.0f} "
                f"audio-s/s (--no-vad {b['no_vad']:.0f}); the pipeline reaches {e['default']:.0%} of it "
                f"(--no-vad {e['no_vad']:.0%})"
            )
        if "model" not in skip:
            m = model_run(args, files, work)
            report["model"] = {k: v for k, v in m.items() if k != "transcripts"}
            log(
                f"model {m['model']} on {m['device']} ({m['dtype']}), {m['batches']} batches: end to end with LM "
                f"{m['e2e_audio_s_per_s']:.0f} audio-s/s, forward pass alone {m['forward_audio_s_per_s']:.0f}: "
                f"ratio {m['ratio']:.2f}"
            )
            log(f"  stage seconds (overlapping): {m['stage_seconds']}")
            if m.get("anchor_transformers_greedy_audio_s_per_s"):
                log(f"  transformers' pipeline (greedy, no LM): {m['anchor_transformers_greedy_audio_s_per_s']:.0f}")
            if "int8" in m:
                log(f"  int8 (bitsandbytes): {m['int8']}")
        if "transcripts" not in skip:
            sample = sorted(EXAMPLES.glob("*.wav")) + files[: max(4, len(files) // 10)]
            r = reference_check(sample, args)
            report["transcripts"] = r
            log(f"transcripts: engine = reference path on {r['same']}/{r['total']} (examples/ + corpus files)")
            for name, got, ref in r["differences"]:
                log(f"  {name}: engine {got!r} / reference {ref!r}")
    log(f"load average {report['load_average']:.2f} on {report['cpus']} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
