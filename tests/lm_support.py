"""What the n-gram LM builder's tests share: a synthetic language, and an independent ARPA reader with the
checks a valid backoff model passes (``test_lm_build.py``, ``test_lm_build_spill.py``)."""

from __future__ import annotations

import gzip
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest


def ngram_counts(sentences: list[list[str]], order: int) -> list[Counter]:
    """Counts of every n-gram (n = 1..order; index n) of ``sentences``, each framed by <s> and </s>."""
    counts: list[Counter] = [Counter() for _ in range(order + 1)]
    for s in sentences:
        toks = ["<s>", *s, "</s>"]
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                counts[n][tuple(toks[i : i + n])] += 1
    return counts


# ---------------------------------------------------------------------------------------------------------
# A synthetic language: Zipfian words with a sparse first-order Markov structure.


def make_sentences(n: int, seed: int, vocab_size: int = 1500) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    gen = np.random.default_rng(1234)  # the language itself is fixed; seed only changes the sample
    words = ["w" + chr(97 + i // 676) + chr(97 + i // 26 % 26) + chr(97 + i % 26) for i in range(vocab_size)]
    zipf = 1.0 / np.arange(1, vocab_size + 1) ** 1.05
    cdf = np.cumsum(zipf / zipf.sum())
    succ = gen.integers(0, vocab_size, size=(vocab_size, 4))  # each word's favourite successors
    out = []
    for _ in range(n):
        length = int(rng.integers(2, 12))
        w = int(np.searchsorted(cdf, rng.random()))
        sent = [words[w]]
        for _ in range(length - 1):
            if rng.random() < 0.6:
                w = int(succ[w, min(int(rng.geometric(0.5)) - 1, 3)])
            else:
                w = int(np.searchsorted(cdf, rng.random()))
            sent.append(words[min(w, vocab_size - 1)])
        out.append(sent)
    return out


def write_text(path: Path, sentences: list[list[str]]) -> Path:
    path.write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
    return path


def make_corpus(folder: Path) -> dict:
    """Training (3,000 sentences) and held-out (300) text of the synthetic language, as lists and files."""
    train = make_sentences(3000, seed=1)
    held = make_sentences(300, seed=2)
    return {
        "dir": folder,
        "train": train,
        "held": held,
        "train_path": write_text(folder / "train.txt", train),
        "held_path": write_text(folder / "held.txt", held),
    }


# ---------------------------------------------------------------------------------------------------------
# An independent ARPA reader and backoff scorer.


class Arpa:
    def __init__(self, path: Path) -> None:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        assert "\\data\\" in lines, "no \\data\\ header"
        i = lines.index("\\data\\") + 1
        self.declared: dict[int, int] = {}
        while lines[i].startswith("ngram "):
            n, c = lines[i][6:].split("=")
            self.declared[int(n)] = int(c)
            i += 1
        self.order = max(self.declared)
        self.prob: dict[tuple[str, ...], float] = {}
        self.bo: dict[tuple[str, ...], float] = {}
        seen = Counter()
        section = 0
        for line in lines[i:]:
            if not line.strip():
                continue
            if line == "\\end\\":
                break
            if line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1 : line.index("-")])
                continue
            parts = line.split("\t")
            assert len(parts) in (2, 3), f"bad line {line!r}"
            ngram = tuple(parts[1].split(" "))
            assert len(ngram) == section, f"{ngram} in section {section}"
            assert ngram not in self.prob, f"duplicate {ngram}"
            self.prob[ngram] = float(parts[0])
            if len(parts) == 3:
                assert section < self.order, "backoff on a highest-order n-gram"
                self.bo[ngram] = float(parts[2])
            seen[section] += 1
        found = {n: seen.get(n, 0) for n in self.declared}
        assert found == self.declared, f"declared {self.declared}, found {found}"
        self.vocab = [g[0] for g in self.prob if len(g) == 1]

    def log10p(self, word: str, context: tuple[str, ...]) -> float:
        context = context[-(self.order - 1) :] if self.order > 1 else ()
        if (*context, word) in self.prob:
            return self.prob[(*context, word)]
        if not context:
            return self.prob[("<unk>",)] if word not in self.prob else self.prob[(word,)]
        return self.bo.get(context, 0.0) + self.log10p(word, context[1:])

    def sentence_log10(self, words: list[str]) -> tuple[float, int]:
        ctx: tuple[str, ...] = ("<s>",)
        total = 0.0
        for w in [*words, "</s>"]:
            w = w if (w,) in self.prob else "<unk>"
            total += self.log10p(w, ctx)
            ctx = (*ctx, w)
        return total, len(words) + 1


def predictable(arpa: Arpa) -> list[str]:
    return [w for w in arpa.vocab if w != "<s>"]


def contexts_to_check(arpa: Arpa, per_order: int, seed: int = 0) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    ctxs: list[tuple[str, ...]] = [(), ("<s>",)]
    for n in range(1, arpa.order):
        grams = sorted(g for g in arpa.prob if len(g) == n and g[-1] != "</s>")
        ctxs += rng.sample(grams, min(per_order, len(grams)))
    # Contexts never seen in training.
    ctxs += [("<unk>",), ("<s>", "<unk>"), ("</s>",)]
    return ctxs


def assert_normalized(arpa: Arpa, per_order: int = 60) -> None:
    words = predictable(arpa)
    for ctx in contexts_to_check(arpa, per_order):
        total = sum(10 ** arpa.log10p(w, ctx) for w in words)
        assert total == pytest.approx(1.0, abs=2e-4), f"context {ctx}: probabilities sum to {total}"


def assert_closed(arpa: Arpa) -> None:
    for g in arpa.prob:
        if len(g) > 1:
            assert g[:-1] in arpa.prob, f"prefix of {g} missing"
            assert g[1:] in arpa.prob, f"suffix of {g} missing"
