"""Interpolated modified Kneser-Ney estimation (Chen & Goodman 1998) with numpy.

N-grams are stored per order as sorted tables in "trie" form: an n-gram is (index of its (n-1)-gram prefix
in the table of order n-1, last word id), packed as ``key = prefix_index * V + word``. Tables are built from
the token stream with one ``np.unique`` per order, so the whole estimate is a handful of sorts and
``np.bincount`` calls.

Estimation, per order n (highest order N):

* adjusted counts a(g): the raw count for order N and for n-grams starting with ``<s>``; otherwise the
  number of distinct words seen to the left of g (the continuation count);
* discounts D1, D2, D3+ from the counts of counts t_k of the adjusted counts:
  ``Y = t1 / (t1 + 2 t2)``, ``D_k = k - (k + 1) Y t_{k+1} / t_k``;
* ``p(w | h) = (a(hw) - D(a(hw))) / sum_v a(hv) + gamma(h) p(w | h')`` with
  ``gamma(h) = (D1 N1(h) + D2 N2(h) + D3 N3+(h)) / sum_v a(hv)``; unigrams interpolate with the uniform
  distribution over the vocabulary (without ``<s>``), so ``<unk>`` gets the left-over mass.

Pruning drops n-grams (order >= 2) whose raw count is at most the order's threshold, except those that are a
prefix or suffix of a kept higher-order n-gram (ARPA consumers need both). Kept n-grams keep their
interpolated probability; each context's backoff weight is then computed so that its distribution sums to 1
exactly: ``bo(h) = (1 - sum_{w kept} p(w|h)) / (1 - sum_{w kept} p(w|h'))``, which equals gamma(h) when
nothing below h was pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from w2vlm.errors import LanguageModelError
from w2vlm.lm.corpus import BOS_ID, Corpus, Vocabulary

__all__ = ["NGramModel", "NGramTable", "estimate_kneser_ney", "kn_discounts", "prune_thresholds"]

logger = logging.getLogger("w2vlm.lm.kneser_ney")

#: Discounts used for an order whose counts of counts cannot give valid ones (tiny or pruned corpora);
#: the same values as lmplz's --discount_fallback.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
LOG10_ZERO = -99.0


@dataclass
class NGramTable:
    """The n-grams of one order, sorted by (prefix, word).

    For order 1 the table is indexed by word id and ``prefix`` is all zeros.
    """

    order: int
    prefix: np.ndarray  # int64: index into the table of order - 1
    word: np.ndarray  # int32: last word id
    log10_prob: np.ndarray  # float64
    log10_backoff: np.ndarray  # float64 (0 where the n-gram is no context of a longer one)
    has_backoff: np.ndarray  # bool: the n-gram is the context of at least one n-gram of order + 1
    count: np.ndarray  # int64 raw counts

    def __len__(self) -> int:
        return len(self.word)


@dataclass
class _Full:
    """One order's full (unpruned) statistics during estimation."""

    prefix: np.ndarray
    word: np.ndarray
    suffix: np.ndarray  # index into order - 1 of w2..wn (order >= 2)
    count: np.ndarray
    adjusted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bos_start: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def kn_discounts(adjusted: np.ndarray, order: int) -> tuple[tuple[float, float, float], bool]:
    """Modified Kneser-Ney discounts (D1, D2, D3+) from adjusted counts; second value False when the counts
    of counts could not give valid discounts and the fallback was used."""
    t = np.bincount(np.minimum(adjusted, 5), minlength=6)[1:5].astype(np.float64)
    t1, t2, t3, t4 = t
    if min(t1, t2, t3, t4) > 0:
        y = t1 / (t1 + 2 * t2)
        d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
        if all(0 < d[k] < k + 1 for k in range(3)):
            return (float(d[0]), float(d[1]), float(d[2])), True
    logger.warning(
        "order %d: counts of counts %s give no valid modified Kneser-Ney discounts; using %s",
        order,
        [int(x) for x in t],
        FALLBACK_DISCOUNTS,
    )
    return FALLBACK_DISCOUNTS, False


def _count(tokens: np.ndarray, sentence_id: np.ndarray, order: int, vocab_size: int) -> list[_Full]:
    """Tables of all n-grams of orders 1..order in the stream."""
    n_tok = len(tokens)
    v = np.int64(vocab_size)
    tok64 = tokens.astype(np.int64)
    counts1 = np.bincount(tokens, minlength=vocab_size).astype(np.int64)
    tables = [
        _Full(
            prefix=np.zeros(vocab_size, np.int64),
            word=np.arange(vocab_size, dtype=np.int32),
            suffix=np.zeros(vocab_size, np.int64),
            count=counts1,
        )
    ]
    # end_index[i]: index (in the previous order's table) of the n-gram starting at position i, -1 if none.
    start_index = tok64
    for n in range(2, order + 1):
        m = n_tok - n + 1
        if m <= 0:
            empty = np.zeros(0, np.int64)
            tables.append(_Full(empty, np.zeros(0, np.int32), empty, empty))
            start_index = np.full(n_tok, -1, np.int64)
            continue
        pos = np.flatnonzero(sentence_id[:m] == sentence_id[n - 1 :])
        keys = start_index[pos] * v + tok64[pos + n - 1]
        uniq, first, inverse, cnt = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        first_pos = pos[first]
        suffix = start_index[first_pos + 1]
        tables.append(
            _Full(prefix=uniq // v, word=(uniq % v).astype(np.int32), suffix=suffix, count=cnt.astype(np.int64))
        )
        new_index = np.full(n_tok, -1, np.int64)
        new_index[pos] = inverse.reshape(-1)
        start_index = new_index
    return tables


@dataclass
class NGramModel:
    """A backoff n-gram model: the output of :func:`estimate_kneser_ney`, ready to write or to score."""

    vocab: Vocabulary
    tables: list[NGramTable]
    discounts: list[tuple[float, float, float]]

    @property
    def order(self) -> int:
        return len(self.tables)

    @property
    def ngram_counts(self) -> list[int]:
        return [len(t) for t in self.tables]

    def _lookup(self, n: int, ctx_index: np.ndarray, word: np.ndarray) -> np.ndarray:
        """Index in table n of (ctx_index, word) pairs, -1 where absent or ctx_index < 0."""
        t = self.tables[n - 1]
        v = np.int64(len(self.vocab))
        keys = t.prefix * v + t.word.astype(np.int64)
        q = ctx_index * v + word.astype(np.int64)
        out = np.full(len(q), -1, np.int64)
        ok = ctx_index >= 0
        if not ok.any() or len(keys) == 0:
            return out
        j = np.searchsorted(keys, q[ok])
        jj = np.minimum(j, len(keys) - 1)
        hit = keys[jj] == q[ok]
        res = np.where(hit, jj, -1)
        out[ok] = res
        return out

    def score_tokens(self, tokens: np.ndarray, sentence_id: np.ndarray) -> np.ndarray:
        """log10 p(token_i | history) for every position of a stream built like :class:`Corpus` (``<s>``
        positions get 0)."""
        n_tok = len(tokens)
        tok64 = tokens.astype(np.int64)
        # end[n][i]: index in table n of the n-gram ending at position i (-1 if absent).
        end: list[np.ndarray] = [np.zeros(0)]
        end.append(tok64.copy())
        for n in range(2, self.order + 1):
            ctx = np.full(n_tok, -1, np.int64)
            if n_tok > 1:
                ctx[1:] = end[n - 1][:-1]
                same = np.zeros(n_tok, bool)
                same[n - 1 :] = sentence_id[n - 1 :] == sentence_id[: n_tok - n + 1]
                ctx[~same] = -1
            end.append(self._lookup(n, ctx, tokens))
        score = np.full(n_tok, np.nan)
        done = np.zeros(n_tok, bool)
        backoff_sum = np.zeros(n_tok)
        for n in range(self.order, 0, -1):
            e = end[n]
            hit = (e >= 0) & ~done
            score[hit] = self.tables[n - 1].log10_prob[e[hit]] + backoff_sum[hit]
            done |= hit
            if n > 1:
                # Context of length n - 1 ending at i - 1 backs off for the positions not matched at order n.
                c = np.full(n_tok, -1, np.int64)
                c[1:] = end[n - 1][:-1]
                same = np.zeros(n_tok, bool)
                same[n - 1 :] = sentence_id[n - 1 :] == sentence_id[: n_tok - n + 1]
                c[~same] = -1
                use = (c >= 0) & ~done
                backoff_sum[use] += self.tables[n - 2].log10_backoff[c[use]]
        score[tokens == BOS_ID] = 0.0
        return score

    def perplexity(self, corpus: Corpus) -> tuple[float, int]:
        """(perplexity, number of predicted tokens) over a corpus read with this model's vocabulary
        (words, ``</s>``; not ``<s>``)."""
        s = self.score_tokens(corpus.tokens, corpus.sentence_id)
        pred = corpus.tokens != BOS_ID
        n = int(pred.sum())
        if n == 0:
            raise LanguageModelError("held-out text: no tokens to score")
        return float(10 ** (-s[pred].sum() / n)), n


def prune_thresholds(prune: Sequence[int] | None, order: int) -> list[int]:
    """The pruning count of every order 1..order from lmplz-style ``prune`` values (validated)."""
    thresholds = [0] * order
    if prune:
        p = [int(x) for x in prune]
        if any(x < 0 for x in p):
            raise LanguageModelError(f"prune: expected thresholds >= 0, got {p}")
        if p[0] != 0:
            raise LanguageModelError(
                f"prune: the unigram threshold must be 0 (use vocab_limit to shrink the vocabulary), got {p}"
            )
        if len(p) > order:
            raise LanguageModelError(f"prune: expected at most {order} thresholds for order {order}, got {p}")
        thresholds = p + [p[-1]] * (order - len(p))
    return thresholds


def unigram_probs(adjusted: np.ndarray, discounts: Sequence[float]) -> np.ndarray:
    """Interpolated modified Kneser-Ney unigram probabilities (linear, float64) from the adjusted unigram
    counts and the order's three discounts; the leftover mass is spread evenly over every word but ``<s>``,
    which gets 0."""
    dvec = np.array((0.0, *discounts))
    predictable = np.ones(len(adjusted), bool)
    predictable[BOS_ID] = False
    total = float(adjusted[predictable].sum())
    if total <= 0:
        raise LanguageModelError("text files: no words to estimate a language model from")
    disc = dvec[np.minimum(adjusted, 3)]
    gamma = float((disc * (adjusted > 0))[predictable].sum() / total)
    prob = np.maximum(adjusted - disc, 0) / total + gamma / int(predictable.sum())
    prob[BOS_ID] = 0.0
    return prob


def estimate_kneser_ney(corpus: Corpus, order: int = 3, prune: Sequence[int] | None = None) -> NGramModel:
    """Estimate an interpolated modified Kneser-Ney model of ``order`` from ``corpus``.

    Args:
        prune: count thresholds per order (lmplz ``--prune`` semantics): n-grams of order n >= 2 with a raw
            count <= prune[n-1] are dropped; the last value applies to higher orders; 0 keeps everything;
            the unigram threshold must be 0.
    """
    if order < 1:
        raise LanguageModelError(f"order: expected >= 1, got {order}")
    thresholds = prune_thresholds(prune, order)
    vocab = corpus.vocab
    v = len(vocab)
    full = _count(corpus.tokens, corpus.sentence_id, order, v)

    # Adjusted counts.
    full[0].bos_start = np.arange(v) == BOS_ID
    for n in range(2, order + 1):
        full[n - 1].bos_start = full[n - 2].bos_start[full[n - 1].prefix]
    full[-1].adjusted = full[-1].count.copy()
    for n in range(order - 1, 0, -1):
        cont = np.bincount(full[n].suffix, minlength=len(full[n - 1].count)).astype(np.int64)
        f = full[n - 1]
        f.adjusted = np.where(f.bos_start, f.count, cont)
    full[0].adjusted[BOS_ID] = 0  # <s> is never predicted

    discounts = []
    for n in range(1, order + 1):
        d, _ = kn_discounts(full[n - 1].adjusted, n)
        discounts.append(d)

    # Which n-grams are kept: threshold, then close under prefix and suffix from the top order down.
    keep = [np.ones(v, bool)]
    for n in range(2, order + 1):
        keep.append(full[n - 1].count > thresholds[n - 1])
    for n in range(order, 2, -1):
        k = keep[n - 1]
        keep[n - 2][full[n - 1].prefix[k]] = True
        keep[n - 2][full[n - 1].suffix[k]] = True

    # Probabilities, bottom up (linear domain, float64). prob[n-1][j] valid where keep[n-1][j].
    prob: list[np.ndarray] = []
    backoff_lin: list[np.ndarray] = []
    prob.append(unigram_probs(full[0].adjusted, discounts[0]))

    for n in range(2, order + 1):
        f = full[n - 1]
        m_prev = len(full[n - 2].count)
        dvec = np.array((0.0, *discounts[n - 1]))
        a = f.adjusted.astype(np.float64)
        d = dvec[np.minimum(f.adjusted, 3)]
        total = np.bincount(f.prefix, weights=a, minlength=m_prev)
        dsum = np.bincount(f.prefix, weights=d, minlength=m_prev)
        has_ctx = total > 0
        gamma = np.zeros(m_prev)
        gamma[has_ctx] = dsum[has_ctx] / total[has_ctx]
        k = keep[n - 1]
        pk = np.full(len(a), np.nan)
        tk = total[f.prefix[k]]
        lower = prob[n - 2][f.suffix[k]]
        pk[k] = (a[k] - d[k]) / tk + gamma[f.prefix[k]] * lower
        prob.append(pk)
        # Backoff weights of the contexts (order n - 1).
        pruned_mass = np.bincount(f.prefix[~k], weights=(a[~k] - d[~k]) / total[f.prefix[~k]], minlength=m_prev)
        kept_lower = np.bincount(f.prefix[k], weights=lower, minlength=m_prev)
        bo = np.ones(m_prev)
        bo[has_ctx] = gamma[has_ctx]
        pr = pruned_mass > 0
        if pr.any():
            denom = 1.0 - kept_lower[pr]
            bo[pr] = gamma[pr] + pruned_mass[pr] / np.maximum(denom, 1e-300)
        backoff_lin.append(bo)
        # Contexts whose continuations were all pruned may be absent; that is fine: they are not written.

    # Assemble the kept tables with re-indexed prefixes.
    tables: list[NGramTable] = []
    new_index_prev: np.ndarray | None = None
    for n in range(1, order + 1):
        f = full[n - 1]
        k = keep[n - 1]
        idx = np.flatnonzero(k)
        new_index = np.full(len(k), -1, np.int64)
        new_index[idx] = np.arange(len(idx))
        p = prob[n - 1][idx]
        with np.errstate(divide="ignore"):
            lp = np.log10(p)
        if n == 1:
            lp[BOS_ID] = LOG10_ZERO
            prefix = np.zeros(len(idx), np.int64)
        else:
            assert new_index_prev is not None
            prefix = new_index_prev[f.prefix[idx]]
            if (prefix < 0).any():
                raise AssertionError("pruning closure left an n-gram without its prefix")
        if n < order:
            nxt = full[n]
            ctx_used = np.zeros(len(k), bool)
            ctx_used[nxt.prefix[keep[n]]] = True
            has_bo = ctx_used[idx]
            lbo = np.where(has_bo, np.log10(np.maximum(backoff_lin[n - 1][idx], 1e-300)), 0.0)
        else:
            has_bo = np.zeros(len(idx), bool)
            lbo = np.zeros(len(idx))
        if not np.all(np.isfinite(lp[lp != LOG10_ZERO])) or np.any(lp > 1e-9):
            bad = np.flatnonzero(~np.isfinite(lp) | (lp > 1e-9))[:5]
            raise AssertionError(f"order {n}: invalid probabilities at {bad.tolist()}: {lp[bad].tolist()}")
        tables.append(
            NGramTable(
                order=n,
                prefix=prefix,
                word=f.word[idx],
                log10_prob=np.minimum(lp, 0.0),
                log10_backoff=lbo,
                has_backoff=has_bo,
                count=f.count[idx],
            )
        )
        new_index_prev = new_index
    logger.info(
        "estimated %d-gram model: %s n-grams, discounts %s",
        order,
        [len(t) for t in tables],
        [tuple(round(x, 4) for x in d) for d in discounts],
    )
    return NGramModel(vocab=vocab, tables=tables, discounts=discounts)
