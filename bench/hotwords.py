"""Hotword lists for the benchmark: real words and two-word phrases, some of them in the references.

A tenth of each list (at least one) comes from the references (longer, rarer words and word pairs that
really occur in the utterances, so boosting them can help); the rest are drawn from the LM's vocabulary and
its bigrams (real words of the same domain, mostly absent from the utterances, so boosting them can only
hurt: what a long list of names in a real deployment looks like). About a quarter are two-word phrases.
Deterministic for a given seed.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

_WORD = re.compile(r"^[a-z']+$")


def read_arpa_vocabulary(path: Path, max_bigrams: int = 200_000) -> tuple[list[str], list[str]]:
    """Unigram words and (up to ``max_bigrams``) bigram phrases of an ARPA file, special tokens excluded."""
    words: list[str] = []
    bigrams: list[str] = []
    section = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1 : line.index("-")])
                if section > 2:
                    break
                continue
            if not line or section == 0:
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                parts = line.split()
                gram = parts[1 : 1 + section]
            else:
                gram = parts[1].split()
            if any(not _WORD.match(w) for w in gram):
                continue
            if section == 1:
                words.append(gram[0])
            elif len(bigrams) < max_bigrams:
                bigrams.append(" ".join(gram))
    return words, bigrams


def make_hotwords(
    count: int,
    references: list[str],
    lm_words: list[str],
    lm_bigrams: list[str],
    seed: int = 0,
    present_fraction: float = 0.1,
    phrase_fraction: float = 0.25,
) -> list[str]:
    """``count`` distinct hotwords/phrases; see the module docstring."""
    if count <= 0:
        return []
    rng = random.Random(seed * 7919 + count)
    ref_counts: Counter[str] = Counter(w for r in references for w in r.split())
    ref_words = sorted(w for w, c in ref_counts.items() if len(w) >= 5 and c <= 2)
    ref_pairs = sorted(
        {
            f"{a} {b}"
            for r in references
            for a, b in zip(r.split(), r.split()[1:], strict=False)
            if len(a) >= 4 and len(b) >= 4
        }
    )
    n_present = max(1, round(count * present_fraction))
    chosen: list[str] = []
    seen: set[str] = set()

    def take(pool: list[str], n: int) -> None:
        if not pool:
            return
        tries = 0
        start = len(chosen)
        while len(chosen) - start < n and tries < 50 * n + 100:
            tries += 1
            w = pool[rng.randrange(len(pool))]
            if w not in seen:
                seen.add(w)
                chosen.append(w)

    n_present_phrases = round(n_present * phrase_fraction)
    take(ref_pairs, n_present_phrases)
    take(ref_words, n_present - len(chosen))
    rest = count - len(chosen)
    n_phrases = round(rest * phrase_fraction)
    long_words = [w for w in lm_words if len(w) >= 4]
    take([b for b in lm_bigrams if all(len(w) >= 3 for w in b.split())], n_phrases)
    take(long_words, count - len(chosen))
    rng.shuffle(chosen)
    return chosen


def lm_summary(path: Path) -> str:
    """One line about an ARPA file: its path, order and n-gram counts (from its header)."""
    counts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("ngram "):
                counts.append(int(line.split("=")[1]))
            elif line.startswith("\\1-grams"):
                break
    return f"{path} ({len(counts)}-gram, {sum(counts):,} n-grams: {' / '.join(f'{c:,}' for c in counts)})"
