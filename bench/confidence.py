"""Which per-word confidence best separates right from wrong words under LM decoding?

Decodes the simulated emissions (bench/emissions.py: references are known) with w2vlm and an LM, labels
every word of the top hypothesis right or wrong by aligning it to the reference, and reports the ROC-AUC of
several confidence definitions, plus the calibration of the one w2vlm ships (``word_confidences``).

    python bench/confidence.py [--utterances 100] [--lm .data/lm/bench_3gram.arpa]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from emissions import load_or_generate
from w2vlm.decoder import build_ctcdecoder, load_unigrams, to_log_probs
from w2vlm.decoder.confidence import candidate_confidences

ROOT = Path(__file__).resolve().parents[1]


def align_correct(ref: list[str], hyp: list[str]) -> list[bool]:
    """For each hypothesis word: is it matched (not substituted/inserted) in a minimum edit alignment?"""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    ok = [False] * m
    i, j = n, m
    while i > 0 and j > 0:
        if d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            ok[j - 1] = ref[i - 1] == hyp[j - 1]
            i, j = i - 1, j - 1
        elif d[i, j] == d[i, j - 1] + 1:
            j -= 1
        else:
            i -= 1
    return ok


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random right word scores above a random wrong one (ties count half)."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method: returns [bias, weights...]."""
    A = np.column_stack([np.ones(len(X)), X])
    w = np.zeros(A.shape[1])
    t = y.astype(np.float64)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(A @ w)))
        g = A.T @ (p - t) + l2 * w
        H = (A * (p * (1 - p))[:, None]).T @ A + l2 * np.eye(A.shape[1])
        w -= np.linalg.solve(H, g)
    return w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=100)
    ap.add_argument("--lm", type=Path, default=ROOT / ".data/lm/bench_3gram.arpa")
    ap.add_argument("--text", type=Path, default=ROOT / ".data/corpus/test.txt")
    ap.add_argument("--seed", type=int, default=1, help="emission seed (1: not the decoder benchmark's set)")
    ap.add_argument("--beam-width", type=int, default=100)
    ap.add_argument("--fit", action="store_true", help="also print the logistic weights fitted on all words")
    args = ap.parse_args()

    em = load_or_generate(args.text, args.utterances, ROOT / "bench/.cache", seed=args.seed)
    unigrams_path = args.lm.with_name("unigrams.txt")
    unigrams = load_unigrams(unigrams_path) if unigrams_path.exists() else None
    decoder = build_ctcdecoder(em.labels, str(args.lm), unigrams=unigrams)
    feats: dict[str, list[float]] = {}
    labels: list[bool] = []
    t0 = time.perf_counter()
    for logits, ref in zip(em.logits, em.references):
        beams = decoder.decode_beams(logits, beam_width=args.beam_width)
        lp = to_log_probs(logits, len(em.labels))
        cands = candidate_confidences(beams, lp, em.labels, decoder.language_model)
        labels.extend(align_correct(ref.split(), beams[0].text.split()))
        for name, values in cands.items():
            feats.setdefault(name, []).extend(values)
        shipped = beams[0].word_confidences
        feats.setdefault("shipped (word_confidences)", []).extend(shipped)
    elapsed = time.perf_counter() - t0
    y = np.array(labels, dtype=bool)
    print(
        f"{len(em.logits)} utterances, {len(y)} words, {int((~y).sum())} wrong ({100 * (~y).mean():.1f}%), "
        f"decode+confidence {elapsed:.1f} s"
    )
    print(f"{'definition':44s} {'ROC-AUC':>8s}")
    for name, values in sorted(feats.items(), key=lambda kv: -roc_auc(np.array(kv[1]), y)):
        print(f"{name:44s} {roc_auc(np.array(values), y):8.3f}")
    # a logistic combination of the features, fitted on half of the utterances' words, scored on the other half
    names = ["n-best agreement (T=1)", "acoustic: min token posterior", "LM: word known", "LM: log10 p(word | history)"]
    X = np.column_stack([np.array(feats[n]) for n in names])
    X = np.column_stack([np.log(np.clip(X[:, 0], 1e-6, 1)), np.log(np.clip(X[:, 1], 1e-6, 1)), X[:, 2], X[:, 3]])
    half = len(y) // 2
    if args.fit:
        w_all = fit_logistic(X, y)
        print(f"fitted on all {len(y)} words: bias {w_all[0]:.4f}, weights {[round(float(v), 4) for v in w_all[1:]]}")
    w = fit_logistic(X[:half], y[:half])
    print(
        f"logistic on [log agreement, log acoustic min, known, log10 p]: weights {np.round(w, 3).tolist()}, "
        f"held-out ROC-AUC {roc_auc(X[half:] @ w[1:] + w[0], y[half:]):.3f} "
        f"(agreement alone on the same half: {roc_auc(np.array(feats[names[0]])[half:], y[half:]):.3f})"
    )
    s = np.array(feats["shipped (word_confidences)"])
    print("calibration of word_confidences (bin: words, mean confidence, fraction right):")
    for lo, hi in ((0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 0.95), (0.95, 1.01)):
        m = (s >= lo) & (s < hi)
        if m.any():
            print(f"  [{lo:.2f}, {min(hi, 1):.2f}): {int(m.sum()):5d}  {s[m].mean():.3f}  {y[m].mean():.3f}")


if __name__ == "__main__":
    main()
