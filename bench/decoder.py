"""Decoder benchmark: w2vlm against pyctcdecode, ctc-beam-decoder and flashlight-text.

All decoders get the same emissions (simulated CTC posteriors over real English sentences, see
bench/emissions.py) and the same ARPA LM, with the same parameters (beam width, pruning, alpha, beta,
unk offset, hotword weight). Reported: WER against the references, decode throughput (frames/s; the LM
load is timed and reported apart), throughput ratios w2vlm / anchor, top-1 agreement with pyctcdecode and
the utterances where it differs; for w2vlm with 1 and 2 threads, and for 0 / 100 / 1,000 hotwords.

The anchors run in their own venv (bench/.venv-anchors, made by bench/setup_anchors.sh: pyctcdecode needs
numpy<2) through bench/anchors/run_anchor.py, one subprocess per anchor, one thread each; w2vlm runs in
this interpreter. Without w2vlm installed the anchors still run, and vice versa (--no-anchors).

    python bench/decoder.py                       # the full run (100 utterances, ~68k frames)
    python bench/decoder.py --quick --no-anchors  # a few seconds: smoke run of w2vlm alone
    python bench/decoder.py --json out.json       # also write every figure and text as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from emissions import Emissions, greedy_decode, load_or_generate, pad_vocabulary  # noqa: E402
from hotwords import lm_summary, make_hotwords, read_arpa_vocabulary  # noqa: E402
from metrics import cer, wer  # noqa: E402

DEFAULT_TEXT = REPO / ".data" / "corpus" / "test.txt"
DEFAULT_LM = REPO / ".data" / "lm" / "bench_3gram.arpa"
ANCHOR_PYTHON = BENCH / ".venv-anchors" / "bin" / "python"
ANCHORS = ("pyctcdecode", "ctc-beam-decoder", "flashlight-text")
REFERENCE = "pyctcdecode"


# --------------------------------------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark w2vlm's CTC beam search + LM decoder against pyctcdecode, ctc-beam-decoder "
        "and flashlight-text on the same emissions and LM.",
    )
    ap.add_argument("--utterances", type=int, default=100, help="utterances to decode (default 100)")
    ap.add_argument("--beam-width", type=int, default=100, help="beam width (default 100, pyctcdecode's)")
    ap.add_argument("--beam-prune-logp", type=float, default=-10.0)
    ap.add_argument("--token-min-logp", type=float, default=-5.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=1.5)
    ap.add_argument("--unk-score-offset", type=float, default=-10.0)
    ap.add_argument("--hotword-weight", type=float, default=10.0)
    ap.add_argument("--hotwords", default="0,100,1000", help="comma-separated hotword list sizes (default 0,100,1000)")
    ap.add_argument(
        "--hotword-phrases",
        type=float,
        default=0.25,
        help="fraction of two-word phrases in the hotword lists (default 0.25; 0: single words only)",
    )
    ap.add_argument("--threads", default="1,2", help="w2vlm thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=1, help="time each run N times, report the fastest")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 utterances, no repeats")
    ap.add_argument("--no-anchors", action="store_true", help="run w2vlm only")
    ap.add_argument("--no-w2vlm", action="store_true", help="run the anchors only")
    ap.add_argument("--anchors", default=",".join(ANCHORS), help=f"anchors to run (default {','.join(ANCHORS)})")
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="sentences, one a line")
    ap.add_argument("--lm", type=Path, default=DEFAULT_LM, help="ARPA language model")
    ap.add_argument(
        "--unigrams",
        default="auto",
        help="word list (one a line) given to every decoder as its unigrams; 'none': each decoder reads the "
        "ARPA's unigram section by its own rule; 'auto' (default): unigrams.txt beside the LM if present, "
        "else none",
    )
    ap.add_argument(
        "--vocab",
        type=int,
        default=0,
        help="pad the vocabulary to N labels (like a BPE model's ~1,000) with multi-letter pieces whose logits are "
        "noise like the other non-winning labels' (default 0: the 32 characters)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=BENCH / ".cache")
    ap.add_argument("--max-diffs", type=int, default=15, help="differing utterances to print per setting")
    ap.add_argument("--json", type=Path, default=None, help="write all figures and texts here")
    args = ap.parse_args(argv)
    if args.quick:
        args.utterances = min(args.utterances, 5)
        args.repeats = 1
    if args.unigrams == "auto":
        cand = args.lm.parent / "unigrams.txt"
        args.unigrams_path = cand if cand.exists() else None
    elif args.unigrams == "none":
        args.unigrams_path = None
    else:
        args.unigrams_path = Path(args.unigrams)
        if not args.unigrams_path.exists():
            ap.error(f"--unigrams: {args.unigrams_path} not found")
    args.hotword_counts = [int(x) for x in args.hotwords.split(",") if x.strip()]
    args.thread_counts = [int(x) for x in args.threads.split(",") if x.strip()]
    args.anchor_list = [] if args.no_anchors else [a.strip() for a in args.anchors.split(",") if a.strip()]
    for a in args.anchor_list:
        if a not in ANCHORS:
            ap.error(f"--anchors: unknown anchor {a!r}; expected some of {', '.join(ANCHORS)}")
    return args


def parallel_capacity(threads: int, seconds: float = 0.6) -> float:
    """How much faster ``threads`` threads get GIL-free work done than one thread, on this machine now.

    A yardstick for the decoder's thread scaling: on a 2-core machine shared with other jobs, 2 threads may
    get far less than 2 cores. The work is sha256 over a buffer (hashlib releases the GIL).
    """
    import hashlib
    import threading

    buf = b"\x5a" * (4 << 20)

    def rate(n: int) -> float:
        counts = [0] * n
        stop = time.perf_counter() + seconds / 2

        def work(k: int) -> None:
            while time.perf_counter() < stop:
                hashlib.sha256(buf).digest()
                counts[k] += 1

        ts = [threading.Thread(target=work, args=(k,)) for k in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / (seconds / 2)

    one = rate(1)
    return rate(threads) / one if one > 0 else float("nan")


def decode_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "beam_width": args.beam_width,
        "beam_prune_logp": args.beam_prune_logp,
        "token_min_logp": args.token_min_logp,
        "alpha": args.alpha,
        "beta": args.beta,
        "unk_score_offset": args.unk_score_offset,
        "hotword_weight": args.hotword_weight,
    }


# --------------------------------------------------------------------------------------------------------
# anchors (subprocess in bench/.venv-anchors)
# --------------------------------------------------------------------------------------------------------
def run_anchor(
    tool: str, em: Emissions, args: argparse.Namespace, hotword_sets: dict[str, list[str]]
) -> dict[str, Any]:
    job = {
        "tool": tool,
        "emissions": str(em.path),
        "lm": str(args.lm),
        "hotword_sets": hotword_sets,
        "repeats": args.repeats,
        "utterances": args.utterances,
        "unigrams": str(args.unigrams_path) if args.unigrams_path else None,
        **decode_params(args),
    }
    with tempfile.TemporaryDirectory(prefix="w2vlm-bench-") as tmp:
        job_path = Path(tmp) / "job.json"
        out_path = Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        proc = subprocess.run(
            [str(ANCHOR_PYTHON), str(BENCH / "anchors" / "run_anchor.py"), str(job_path), str(out_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        for line in (proc.stderr or "").splitlines():
            if line.startswith(f"{tool}:"):
                print(line, file=sys.stderr)
        if proc.returncode != 0 or not out_path.exists():
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
            return {"tool": tool, "error": f"exit {proc.returncode}:\n{tail}"}
        return json.loads(out_path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------------
# w2vlm (this interpreter)
# --------------------------------------------------------------------------------------------------------
def run_w2vlm(em: Emissions, args: argparse.Namespace, hotword_sets: dict[str, list[str]]) -> dict[str, Any]:
    try:
        import w2vlm
        from w2vlm.decoder import build_ctcdecoder
    except ImportError as exc:
        return {"tool": "w2vlm", "error": f"w2vlm.decoder not importable: {exc}"}
    logits = em.logits[: args.utterances]
    frames = sum(x.shape[0] for x in logits)
    p = decode_params(args)
    kw = {
        "beam_width": p["beam_width"],
        "beam_prune_logp": p["beam_prune_logp"],
        "token_min_logp": p["token_min_logp"],
        "hotword_weight": p["hotword_weight"],
    }
    out: dict[str, Any] = {
        "tool": "w2vlm",
        "version": getattr(w2vlm, "__version__", "?"),
        "frames": frames,
        "utterances": len(logits),
        "runs": {},
    }
    unigrams = None
    if args.unigrams_path:
        with open(args.unigrams_path, encoding="utf-8") as f:
            unigrams = [w for w in (line.strip() for line in f) if w]
    t0 = time.perf_counter()
    dec = build_ctcdecoder(
        em.labels,
        kenlm_model_path=str(args.lm),
        unigrams=unigrams,
        alpha=p["alpha"],
        beta=p["beta"],
        unk_score_offset=p["unk_score_offset"],
        lm_score_boundary=True,
    )
    out["load_s"] = time.perf_counter() - t0
    dec.decode(logits[0], **kw)  # warm-up (first-touch of the LM tables), not timed
    if len(args.thread_counts) > 1:
        out["parallel_capacity"] = {nt: parallel_capacity(nt) for nt in args.thread_counts[1:]}
    texts: list[str] = []
    for key, hotwords in hotword_sets.items():
        hw = hotwords or None
        # 1) decode_batch on the native thread pool (first, so that building the hotword automaton, which
        # w2vlm caches per hotword list, is part of the first timed run)
        for nt in args.thread_counts:
            best = float("inf")
            for rep in range(max(1, args.repeats)):
                t0 = time.perf_counter()
                rep_texts = dec.decode_batch(None, logits, hotwords=hw, num_threads=nt, **kw)
                best = min(best, time.perf_counter() - t0)
                if rep == 0:
                    texts = list(rep_texts)
            out["runs"][f"{key}/{nt}"] = {
                "hotwords": len(hotwords),
                "threads": nt,
                "decode_s": best,
                "frames_per_s": frames / best,
                "texts": texts,
            }
            print(
                f"w2vlm decode_batch: {len(hotwords)} hotwords, {nt} threads: {frames / best:,.0f} frames/s",
                file=sys.stderr,
            )
        # 2) one decode() call per utterance, the way the anchors are driven
        best = float("inf")
        for rep in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            rep_texts = [dec.decode(x, hotwords=hw, **kw) for x in logits]
            best = min(best, time.perf_counter() - t0)
            if rep == 0:
                texts = rep_texts
        out["runs"][f"{key}/call"] = {
            "hotwords": len(hotwords),
            "threads": "call",
            "decode_s": best,
            "frames_per_s": frames / best,
            "texts": texts,
        }
        print(f"w2vlm decode(): {len(hotwords)} hotwords: {frames / best:,.0f} frames/s", file=sys.stderr)
    out["_decoder"] = dec
    out["_kw"] = kw
    return out


def w2vlm_scores(res: dict[str, Any], x: np.ndarray, hotwords: list[str]) -> tuple[str, float, float] | None:
    """Top beam (text, logit_score, lm_score) of w2vlm for one utterance, for the disagreement listing."""
    dec = res.get("_decoder")
    if dec is None:
        return None
    kw = dict(res["_kw"], hotwords=hotwords or None)
    try:
        beams = dec.decode_beams(x, prune_history=True, **kw)
    except TypeError:
        beams = dec.decode_beams(x, **kw)
    if not beams:
        return None
    b = beams[0]
    return str(b[0]), float(b[3]), float(b[4])


# --------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------
def fmt_ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def report(
    em: Emissions,
    args: argparse.Namespace,
    hotword_sets: dict[str, list[str]],
    anchor_results: dict[str, dict[str, Any]],
    w2: dict[str, Any] | None,
) -> dict[str, Any]:
    refs = em.references[: args.utterances]
    logits = em.logits[: args.utterances]
    frames = sum(x.shape[0] for x in logits)
    summary: dict[str, Any] = {"rows": [], "agreement": {}, "criteria": {}}

    greedy = [greedy_decode(x, em.labels) for x in logits]
    print()
    print(f"greedy (no LM): WER {wer(refs, greedy):.2%}  CER {cer(refs, greedy):.2%}")
    summary["greedy_wer"] = wer(refs, greedy)

    print()
    print("LM / decoder load time:")
    for tool, res in [*anchor_results.items(), *([("w2vlm", w2)] if w2 else [])]:
        if "error" in res:
            print(f"  {tool:<17} ERROR: {res['error']}")
        else:
            print(f"  {tool:<17} {res['load_s']:.2f} s  (version {res.get('version', '?')})")

    def fps(res: dict[str, Any] | None, run: str) -> float | None:
        if not res or "error" in res:
            return None
        r = res["runs"].get(run)
        if not r or "unsupported" in r:
            return None
        return float(r["frames_per_s"])

    anchors_ok = {t: r for t, r in anchor_results.items() if "error" not in r}
    header = f"{'decoder':<28}{'hotwords':>9}{'WER':>8}{'frames/s':>11}{'decode s':>10}"
    header += "".join(f"{'vs ' + t:>21}" for t in anchors_ok)
    print()
    print(f"decoding {len(logits)} utterances, {frames:,} frames, beam {args.beam_width}:")
    print(header)
    print("-" * len(header))
    for key in hotword_sets:
        rows: list[tuple[str, dict[str, Any]]] = []
        for tool, res in anchors_ok.items():
            r = res["runs"].get(key)
            if r is not None:
                rows.append((f"{tool} (1 thread)", r))
        if w2 and "error" not in w2:
            for run_key, r in w2["runs"].items():
                if run_key.split("/")[0] == key:
                    label = "w2vlm decode() loop" if r["threads"] == "call" else f"w2vlm batch {r['threads']} thr"
                    rows.append((label, r))
        for label, r in rows:
            if "unsupported" in r:
                print(f"{label:<28}{key:>9}{'':>8}{'n/a: ' + r['unsupported']:>21}")
                continue
            w = wer(refs, r["texts"])
            line = f"{label:<28}{key:>9}{w:>8.2%}{r['frames_per_s']:>11,.0f}{r['decode_s']:>10.2f}"
            if label.startswith("w2vlm"):
                line += "".join(f"{fmt_ratio(r['frames_per_s'], fps(anchors_ok[t], key)):>21}" for t in anchors_ok)
            print(line)
            summary["rows"].append(
                {
                    "decoder": label,
                    "hotwords": int(key),
                    "wer": w,
                    "frames_per_s": r["frames_per_s"],
                    "decode_s": r["decode_s"],
                }
            )
        print()

    # hotword cost per tool: time(N hotwords) / time(0)
    base_key = "0" if "0" in hotword_sets and len(hotword_sets) > 1 else None
    if base_key:
        print("hotword slowdown (decode time with N hotwords / with none):")
        tools: list[tuple[str, dict[str, Any], str]] = [(t, r, "") for t, r in anchors_ok.items()]
        if w2 and "error" not in w2:
            tools += [(f"w2vlm {nt} thr", w2, f"/{nt}") for nt in args.thread_counts]
        for name, res, suffix in tools:
            b = res["runs"].get(base_key + suffix)
            parts = []
            for key in hotword_sets:
                if key == base_key:
                    continue
                r = res["runs"].get(key + suffix)
                if r and b and "unsupported" not in r:
                    parts.append(f"{key}: {r['decode_s'] / b['decode_s']:.2f}x")
                else:
                    parts.append(f"{key}: n/a")
            print(f"  {name:<24}{'   '.join(parts)}")
        print()

    if w2 and "error" not in w2 and len(args.thread_counts) > 1:
        t1 = args.thread_counts[0]
        print("w2vlm thread scaling (frames/s vs {} thread{}):".format(t1, "" if t1 == 1 else "s"))
        for key in hotword_sets:
            base = fps(w2, f"{key}/{t1}")
            parts = [f"{nt} thr {fmt_ratio(fps(w2, f'{key}/{nt}'), base)}" for nt in args.thread_counts[1:]]
            same = all(
                w2["runs"][f"{key}/{nt}"]["texts"] == w2["runs"][f"{key}/{t1}"]["texts"]
                for nt in args.thread_counts[1:]
            )
            print(f"  {key:>5} hotwords: {'  '.join(parts)}   (same texts as {t1} thread: {same})")
        cap = w2.get("parallel_capacity", {})
        if cap:
            parts = [f"{nt} thr {c:.2f}x" for nt, c in cap.items()]
            print(f"  yardstick, GIL-free sha256 on this machine just before: {'  '.join(parts)}")
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"  (cores: {os.cpu_count()}, load average at the end: {load})")
        print()

    # agreement with pyctcdecode
    ref_res = anchors_ok.get(REFERENCE)
    if ref_res:
        for tool, res in anchors_ok.items():
            if tool == REFERENCE:
                continue
            parts = []
            for key in hotword_sets:
                r = res["runs"].get(key)
                if r and "texts" in r:
                    a = ref_res["runs"][key]["texts"]
                    same = sum(x == y for x, y in zip(a, r["texts"], strict=True))
                    parts.append(f"{key} hotwords {same}/{len(a)}")
            print(f"{tool} top-1 identical to pyctcdecode: {', '.join(parts)}")
        print()
    if w2 and "error" not in w2 and ref_res:
        t1 = args.thread_counts[0] if args.thread_counts else "call"
        for key, hotwords in hotword_sets.items():
            a = ref_res["runs"][key]["texts"]
            b = w2["runs"][f"{key}/{t1}"]["texts"]
            diff = [i for i in range(len(a)) if a[i] != b[i]]
            agree = 1 - len(diff) / max(len(a), 1)
            print(
                f"top-1 agreement with pyctcdecode, {key} hotwords: {agree:.1%} "
                f"({len(a) - len(diff)}/{len(a)} identical)"
            )
            listed = []
            for i in diff:
                p_logit, p_lm = ref_res["runs"][key]["scores"][i]
                w_scores = w2vlm_scores(w2, logits[i], hotwords)
                entry = {
                    "utterance": i,
                    "reference": refs[i],
                    "pyctcdecode": a[i],
                    "w2vlm": b[i],
                    "pyctcdecode_scores": [p_logit, p_lm],
                    "w2vlm_scores": list(w_scores[1:]) if w_scores else None,
                }
                listed.append(entry)
                if len(listed) <= args.max_diffs:
                    print(f"  #{i}")
                    print(f"    reference   : {refs[i]}")
                    print(f"    pyctcdecode : {a[i]}")
                    print(f"                  logit_score {p_logit:.4f}  lm_score {p_lm:.4f}")
                    print(f"    w2vlm       : {b[i]}")
                    if w_scores:
                        print(f"                  logit_score {w_scores[1]:.4f}  lm_score {w_scores[2]:.4f}")
            if len(listed) > args.max_diffs:
                print(f"  ... {len(listed) - args.max_diffs} more (all in --json)")
            summary["agreement"][key] = {"fraction": agree, "differing": listed}
        print()

    # the acceptance figures
    if w2 and "error" not in w2:
        crit = summary["criteria"]
        t1 = args.thread_counts[0] if args.thread_counts else None
        lines = []
        if ref_res and "0" in hotword_sets and t1 is not None:
            w_w = wer(refs, w2["runs"][f"0/{t1}"]["texts"])
            w_p = wer(refs, ref_res["runs"]["0"]["texts"])
            crit["wer_le_pyctcdecode"] = w_w <= w_p
            lines.append(f"WER w2vlm {w_w:.2%} <= pyctcdecode {w_p:.2%}: {w_w <= w_p}")
            ag = summary["agreement"]["0"]["fraction"]
            crit["agreement_ge_97"] = ag >= 0.97
            lines.append(f"top-1 identical to pyctcdecode {ag:.1%} >= 97%: {ag >= 0.97}")
        cbd = anchors_ok.get("ctc-beam-decoder")
        if cbd and "0" in hotword_sets and t1 == 1:
            ratio = fps(w2, "0/1") / fps(cbd, "0")
            crit["single_thread_ge_2x_ctc_beam_decoder"] = ratio >= 2.0
            lines.append(f"1-thread throughput vs ctc-beam-decoder {ratio:.2f}x >= 2x: {ratio >= 2.0}")
        if 1 in args.thread_counts and 2 in args.thread_counts and "0" in hotword_sets:
            ratio = fps(w2, "0/2") / fps(w2, "0/1")
            crit["two_threads_ge_1_8x"] = ratio >= 1.8
            lines.append(f"2 threads vs 1 thread {ratio:.2f}x >= 1.8x: {ratio >= 1.8}")
        if "0" in hotword_sets and "1000" in hotword_sets and t1 is not None:
            ratio = w2["runs"][f"1000/{t1}"]["decode_s"] / w2["runs"][f"0/{t1}"]["decode_s"]
            crit["hotwords_1000_le_1_5x"] = ratio <= 1.5
            lines.append(f"1,000 hotwords vs none {ratio:.2f}x <= 1.5x: {ratio <= 1.5}")
        if lines:
            print("acceptance figures (issue 3):")
            for ln in lines:
                print(f"  {ln}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.text.exists():
        print(
            f"error: sentence file {args.text} not found (see --text; the default is made by "
            "python recipes/embedded/corpus.py)",
            file=sys.stderr,
        )
        return 2
    if not args.lm.exists():
        print(
            f"error: language model {args.lm} not found (see --lm; the default is made by "
            "w2vlm build-lm .data/corpus/lm_train.txt -o .data/lm/bench_3gram.arpa)",
            file=sys.stderr,
        )
        return 2

    t0 = time.perf_counter()
    # Always simulate at least 100 utterances (same cache for --quick and full runs); use the first N.
    em = load_or_generate(args.text, max(args.utterances, 100), args.cache_dir, seed=args.seed)
    args.utterances = min(args.utterances, len(em.logits))
    if args.vocab > len(em.labels):
        em = pad_vocabulary(em, args.vocab, args.cache_dir, args.seed)
    frames = sum(x.shape[0] for x in em.logits[: args.utterances])
    print(f"emissions: {em.path} ({time.perf_counter() - t0:.1f} s)")
    print(
        f"  {args.utterances} utterances, {frames:,} frames ({frames / 50 / 60:.1f} min at 50 frames/s), "
        f"vocabulary {len(em.labels)} labels"
    )
    print(f"LM: {lm_summary(args.lm)}")
    if args.unigrams_path:
        print(f"unigrams: {args.unigrams_path} (the same list for every decoder)")
    else:
        print("unigrams: none given; each decoder takes them from the ARPA by its own rule")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    p = decode_params(args)
    print("params: " + ", ".join(f"{k}={v}" for k, v in p.items()) + f", repeats={args.repeats}")

    refs = em.references[: args.utterances]
    words, bigrams = read_arpa_vocabulary(args.lm)
    hotword_sets = {
        str(n): make_hotwords(n, refs, words, bigrams, seed=args.seed, phrase_fraction=args.hotword_phrases)
        for n in args.hotword_counts
    }
    for n, hw in hotword_sets.items():
        if hw:
            in_refs = sum(1 for h in hw if any(f" {h} " in f" {r} " for r in refs))
            print(f"hotwords {n}: {in_refs} occur in the references; e.g. {', '.join(hw[:6])}")

    anchor_results: dict[str, dict[str, Any]] = {}
    if args.anchor_list:
        if not ANCHOR_PYTHON.exists():
            print(f"anchors skipped: {ANCHOR_PYTHON} missing (run bash bench/setup_anchors.sh)")
        else:
            for tool in args.anchor_list:
                print(f"running {tool} ...", file=sys.stderr, flush=True)
                anchor_results[tool] = run_anchor(tool, em, args, hotword_sets)

    w2 = None
    if not args.no_w2vlm:
        print("running w2vlm ...", file=sys.stderr, flush=True)
        w2 = run_w2vlm(em, args, hotword_sets)

    summary = report(em, args, hotword_sets, anchor_results, w2)

    if args.json:
        data = {
            "params": p,
            "utterances": args.utterances,
            "frames": frames,
            "emissions": str(em.path),
            "lm": str(args.lm),
            "references": refs,
            "hotwords": hotword_sets,
            "anchors": anchor_results,
            "w2vlm": {k: v for k, v in (w2 or {}).items() if not k.startswith("_")},
            "summary": summary,
        }
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(args.json)
        print(f"\nwrote {args.json}")
    failed = [t for t, r in anchor_results.items() if "error" in r]
    if w2 is not None and "error" in w2:
        failed.append("w2vlm")
    return 1 if failed and len(failed) == len(anchor_results) + (w2 is not None) else 0


if __name__ == "__main__":
    sys.exit(main())
