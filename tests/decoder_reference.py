"""Independent reference implementations used by the decoder tests.

- :class:`ArpaReference`: a dictionary-based ARPA reader and backoff scorer, written separately from the native
  hashed one.
- :func:`exhaustive_best`: enumerates every CTC alignment of a small matrix, sums the probability of each
  collapsed text exactly, adds the LM/hotword terms of the text, and returns the best text. A beam search
  without pruning must find the same text and the same acoustic score.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np

LN10 = math.log(10.0)


class ArpaReference:
    def __init__(self, text: str) -> None:
        self.probs: dict[tuple[str, ...], float] = {}
        self.backoffs: dict[tuple[str, ...], float] = {}
        order = 0
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("ngram ") or line in ("\\data\\", "\\end\\"):
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                order = int(line[1:-7])
                continue
            parts = line.split()
            p = float(parts[0])
            words = tuple(parts[1 : 1 + order])
            self.probs[words] = p
            if len(parts) == order + 2:
                self.backoffs[words] = float(parts[-1])
        # the order is the header's (a section may be empty: its lower-order backoffs still apply)
        self.order = sum(1 for line in text.splitlines() if line.strip().startswith("ngram "))
        self.vocab = {k[0] for k in self.probs if len(k) == 1}

    def logp(self, context: tuple[str, ...], word: str) -> float:
        if word not in self.vocab:
            word = "<unk>"
        context = tuple(w if w in self.vocab else "<unk>" for w in context)
        context = context[-(self.order - 1) :] if self.order > 1 else ()
        while True:
            if (*context, word) in self.probs:
                return self.probs[(*context, word)]
            if not context:
                return self.probs.get(("<unk>",), -100.0)
            bo = self.backoffs.get(context, 0.0)
            context = context[1:]
            return bo + self.logp(context, word)

    def sentence_logp(self, words: list[str], bos: bool = True, eos: bool = True) -> float:
        ctx: tuple[str, ...] = ("<s>",) if bos else ()
        total = 0.0
        for w in [*words, "</s>"] if eos else words:
            total += self.logp(ctx, w)
            ctx = (*ctx, w)
        return total


def collapse(path: tuple[int, ...], labels: list[str]) -> str:
    out = []
    prev = None
    for t in path:
        if t != prev and labels[t] != "":
            out.append(labels[t])
        prev = t
    return " ".join("".join(out).split())


def lm_term(
    text: str,
    lm: ArpaReference | None,
    alpha: float,
    beta: float,
    unk_offset: float,
    unigrams: set[str] | None,
    hotwords: dict[str, float] | None = None,
) -> float:
    words = text.split()
    total = 0.0
    if hotwords:
        total += sum(hotwords.get(w, 0.0) for w in words)
    if lm is None:
        return total
    ctx: tuple[str, ...] = ("<s>",)
    for w in words:
        p = lm.logp(ctx, w)
        known = w in lm.vocab and w != "<unk>" and (unigrams is None or w in unigrams)
        if not known:
            p += unk_offset
        total += alpha * LN10 * p + beta
        ctx = (*ctx, w)
    total += alpha * LN10 * lm.logp(ctx, "</s>")
    return total


def exhaustive_best(
    log_probs: np.ndarray,
    labels: list[str],
    lm: ArpaReference | None = None,
    alpha: float = 0.5,
    beta: float = 1.5,
    unk_offset: float = -10.0,
    unigrams: set[str] | None = None,
    hotwords: dict[str, float] | None = None,
) -> tuple[str, float, float, dict[str, float]]:
    """(best text, its acoustic log-prob, its total score, all texts' acoustic log-probs)."""
    frames, vocab = log_probs.shape
    acoustic: dict[str, float] = defaultdict(lambda: -math.inf)
    for path in itertools.product(range(vocab), repeat=frames):
        lp = float(sum(log_probs[t, k] for t, k in enumerate(path)))
        text = collapse(path, labels)
        a = acoustic[text]
        acoustic[text] = max(a, lp) + math.log1p(math.exp(-abs(a - lp))) if a > -math.inf else lp
    best_text, best_total = "", -math.inf
    for text, a in acoustic.items():
        total = a + lm_term(text, lm, alpha, beta, unk_offset, unigrams, hotwords)
        if total > best_total:
            best_text, best_total = text, total
    return best_text, acoustic[best_text], best_total, dict(acoustic)


def numpy_log_probs(a: np.ndarray) -> np.ndarray:
    """The log-probabilities w2vlm computed in numpy before the native log-softmax (pyctcdecode's formulas): the
    bits the native one must give, for a valid float32/float64 (frames, vocab) matrix."""
    sums = a.sum(axis=1, dtype=np.float64)
    if a.min() >= 0.0 and a.max() <= 1.0 and np.allclose(sums, 1.0, atol=1e-3):
        with np.errstate(divide="ignore"):
            out = np.log(np.clip(a, 1e-15, 1.0))
    else:
        m = a.max(axis=1, keepdims=True)
        shifted = a - m
        with np.errstate(divide="ignore", under="ignore"):
            out = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        np.clip(out, float(np.log(1e-15)), 0.0, out=out)
    return np.ascontiguousarray(out, dtype=a.dtype)
