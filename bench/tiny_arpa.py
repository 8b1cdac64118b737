"""Build a small n-gram ARPA file from text, for developing the benchmark without the project's LM.

Interpolated absolute discounting (one discount per order, D = n1 / (n1 + 2 n2)), stored in the usual ARPA
backoff form: each listed n-gram carries its interpolated probability, each context its backoff weight
gamma(h) = D * N1+(h .) / c(h). The unigram level reserves the discounted mass for ``<unk>``.

This is a development aid only: the benchmark's real LM is built by the project's own LM builder.

Usage: python bench/tiny_arpa.py TEXT OUT.arpa [--order 3]
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from pathlib import Path


def count_ngrams(lines: list[list[str]], order: int) -> list[Counter[tuple[str, ...]]]:
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order)]
    for words in lines:
        toks = ["<s>", *words, "</s>"]
        for n in range(1, order + 1):
            c = counts[n - 1]
            for i in range(len(toks) - n + 1):
                gram = tuple(toks[i : i + n])
                if n == 1 and gram == ("<s>",):
                    continue
                c[gram] += 1
    return counts


def discount(c: Counter[tuple[str, ...]]) -> float:
    n1 = sum(1 for v in c.values() if v == 1)
    n2 = sum(1 for v in c.values() if v == 2)
    if n1 == 0:
        return 0.5
    return min(0.9, max(0.1, n1 / (n1 + 2 * n2)))


def build_arpa(lines: list[list[str]], order: int) -> str:
    counts = count_ngrams(lines, order)
    probs: list[dict[tuple[str, ...], float]] = [dict() for _ in range(order)]
    backoffs: list[dict[tuple[str, ...], float]] = [dict() for _ in range(order)]

    # unigrams
    uni = counts[0]
    total = sum(uni.values())
    d1 = discount(uni)
    vocab_size = len(uni) + 1  # + <unk>
    left = d1 * len(uni) / total
    for gram, c in uni.items():
        probs[0][gram] = (c - d1) / total + left / vocab_size
    probs[0][("<unk>",)] = left / vocab_size
    probs[0][("<s>",)] = 0.0  # written as -99

    for n in range(2, order + 1):
        cn = counts[n - 1]
        d = discount(cn)
        ctx_total: dict[tuple[str, ...], int] = defaultdict(int)
        ctx_types: dict[tuple[str, ...], int] = defaultdict(int)
        for gram, c in cn.items():
            ctx_total[gram[:-1]] += c
            ctx_types[gram[:-1]] += 1
        gamma = {h: d * ctx_types[h] / ctx_total[h] for h in ctx_total}
        for h, g in gamma.items():
            backoffs[n - 2][h] = g
        for gram, c in cn.items():
            h = gram[:-1]
            lower = lower_prob(probs, backoffs, gram[1:])
            probs[n - 1][gram] = (c - d) / ctx_total[h] + gamma[h] * lower

    out = ["", "\\data\\"]
    for n in range(order):
        out.append(f"ngram {n + 1}={len(probs[n])}")
    for n in range(order):
        out.append("")
        out.append(f"\\{n + 1}-grams:")
        for gram, p in sorted(probs[n].items()):
            lp = -99.0 if gram == ("<s>",) else math.log10(p)
            words = " ".join(gram)
            if n < order - 1 and gram in backoffs[n]:
                out.append(f"{lp:.6f}\t{words}\t{math.log10(backoffs[n][gram]):.6f}")
            else:
                out.append(f"{lp:.6f}\t{words}")
    out.append("")
    out.append("\\end\\")
    out.append("")
    return "\n".join(out)


def lower_prob(
    probs: list[dict[tuple[str, ...], float]],
    backoffs: list[dict[tuple[str, ...], float]],
    gram: tuple[str, ...],
) -> float:
    """p(w | h) for an n-gram of a lower order, backing off as ARPA does."""
    n = len(gram)
    p = probs[n - 1].get(gram)
    if p is not None:
        return p
    if n == 1:
        return probs[0][("<unk>",)]
    bo = backoffs[n - 2].get(gram[:-1], 1.0)
    return bo * lower_prob(probs, backoffs, gram[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("text", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--order", type=int, default=3)
    args = ap.parse_args()
    lines = [ln.split() for ln in args.text.read_text(encoding="utf-8").splitlines() if ln.strip()]
    arpa = build_arpa(lines, args.order)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(arpa, encoding="utf-8")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
