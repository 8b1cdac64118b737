"""Interpolated modified Kneser-Ney with bounded counting memory: the estimator behind ``w2vlm build-lm``.

The n-grams of each order are counted by the native module ``w2vlm._lmbuild`` in hash tables made once, of what
the ``memory`` budget leaves beside what the process already holds (split among the threads); a full table is
sorted and spilled to disk as a run, and the runs are merged into one sorted table per order (a file, mapped
read-only while a step reads it). The estimate then works on these sorted tables with sequential joins (prefix
and suffix indexes between orders), so it holds a few numbers per distinct n-gram, not per running word. The
formulas, the pruning rule and the output are those of :func:`w2vlm.lm.kneser_ney.estimate_kneser_ney`, which
stays as the in-memory reference (and is used for n-grams too wide for 128-bit keys).

An n-gram w1..wn is a key ``w1 << (n-1)b | ... | wn`` with ``b`` bits a word id: a uint64 when ``n b <= 64``,
else two uint64 (low half first). Sorted keys are n-grams in lexicographic ("context") order.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2vlm.errors import LanguageModelError
from w2vlm.fileio import atomic_open, atomic_path
from w2vlm.lm.corpus import BOS_ID, EOS_ID, Corpus, Vocabulary
from w2vlm.lm.kneser_ney import LOG10_ZERO, NGramModel, NGramTable, kn_discounts, unigram_probs
from w2vlm.memory import release_free_memory, resident_bytes

__all__ = ["DEFAULT_MEMORY", "ScalableModel", "estimate_scalable", "parse_memory"]

logger = logging.getLogger("w2vlm.lm.scalable")

DEFAULT_MEMORY = "1G"
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory(value: str | int) -> int:
    """``"1G"``, ``"512M"``, ``"300K"``, a number of bytes, or ``"50%"`` of physical memory → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        text = str(value).strip().upper()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?|(\d+(?:\.\d+)?)\s*%", text)
        if not m:
            raise LanguageModelError(f"memory: expected a size like 1G, 512M or 50%, got {value!r}")
        if m.group(3) is not None:
            try:
                total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError, AttributeError):
                raise LanguageModelError("memory: cannot read the physical memory size; give a size like 1G") from None
            n = int(total * float(m.group(3)) / 100)
        else:
            n = int(float(m.group(1)) * _UNITS[m.group(2)])
    if n < 1 << 16:
        raise LanguageModelError(f"memory: expected at least 64K, got {value!r}")
    return n


@dataclass
class _Order:
    """The sorted table of one order n >= 2 (rows in context order, files in the spill folder) and what the
    estimate adds to it. Keys and counts are mapped from their files only while a step reads them, so that their
    pages do not stay in memory over the whole build."""

    n: int
    size: int
    wide: bool
    folder: Path
    prefix: np.ndarray | None = None  # uint32 index of w1..w(n-1) in order n - 1
    suffix: np.ndarray | None = None  # uint32 index of w2..wn in order n - 1

    def keys(self) -> np.ndarray:
        """uint64 (m,) or (m, 2) when wide, mapped read-only."""
        return _load(self.folder / f"o{self.n}.keys", self.size, self.wide)

    def counts(self) -> np.ndarray:
        """uint64 raw counts, mapped read-only."""
        return _load(self.folder / f"o{self.n}.counts", self.size)

    def __len__(self) -> int:
        return self.size


@dataclass
class ScalableModel:
    """What :func:`estimate_scalable` estimated; :meth:`write_arpa` writes it, :meth:`to_ngram_model` gives
    the in-memory form (held-out scoring)."""

    vocab: Vocabulary
    bits: int
    tables: list[_Order]  # orders 2..N
    unigram_count: np.ndarray
    log10_prob: list[np.ndarray]  # per order 1..N, all rows
    log10_backoff: list[np.ndarray]  # per order 1..N-1
    has_backoff: list[np.ndarray]  # per order 1..N-1 (bool)
    keep: list[np.ndarray | None]  # per order 1..N; None: all kept
    discounts: list[tuple[float, float, float]]
    spill_runs: int = 0

    @property
    def order(self) -> int:
        return len(self.log10_prob)

    @property
    def ngram_counts(self) -> list[int]:
        return [len(p) if k is None else int(np.count_nonzero(k)) for p, k in zip(self.log10_prob, self.keep)]

    def to_ngram_model(self) -> NGramModel:
        """The kept n-grams as an :class:`~w2vlm.lm.kneser_ney.NGramModel` (for perplexity)."""
        v = len(self.vocab)
        tables = []
        new_prev: np.ndarray | None = None
        wmask = np.uint64((1 << self.bits) - 1)
        for n in range(1, self.order + 1):
            keep = self.keep[n - 1]
            size = len(self.log10_prob[n - 1])
            idx = np.arange(size) if keep is None else np.flatnonzero(keep)
            new_index = np.full(size, -1, np.int64)
            new_index[idx] = np.arange(len(idx))
            if n == 1:
                word = np.arange(v, dtype=np.int32)[idx]
                prefix = np.zeros(len(idx), np.int64)
                count = self.unigram_count[idx]
            else:
                t = self.tables[n - 2]
                keys = t.keys()
                low = keys[:, 0] if t.wide else keys
                word = (np.asarray(low)[idx] & wmask).astype(np.int32)
                del keys, low
                assert new_prev is not None and t.prefix is not None
                prefix = new_prev[t.prefix[idx].astype(np.int64)]
                count = np.asarray(t.counts())[idx].astype(np.int64)
            if n < self.order:
                has = self.has_backoff[n - 1][idx]
                lbo = self.log10_backoff[n - 1][idx]
            else:
                has = np.zeros(len(idx), bool)
                lbo = np.zeros(len(idx))
            tables.append(NGramTable(n, prefix, word, self.log10_prob[n - 1][idx], lbo, has, count))
            new_prev = new_index
        return NGramModel(vocab=self.vocab, tables=tables, discounts=self.discounts)

    def write_arpa(self, path: str | os.PathLike[str], temp_dir: str | os.PathLike[str] | None = None) -> Path:
        """Write the ARPA file (gzip when ``path`` ends with ``.gz``), atomically."""
        from w2vlm import _lmbuild

        out = Path(path)
        words = self.vocab.words
        encoded = [w.encode("utf-8") for w in words]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        blob = b"".join(encoded)
        with contextlib.ExitStack() as stack:
            if out.suffix == ".gz":
                tmp_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="w2vlm-arpa-", dir=temp_dir))
                plain = Path(tmp_dir) / "lm.arpa"
            else:
                plain = stack.enter_context(atomic_path(out))
            with open(plain, "w", encoding="utf-8", newline="\n") as f:
                head = ["", "\\data\\"] + [f"ngram {n}={c}" for n, c in enumerate(self.ngram_counts, start=1)]
                f.write("\n".join(head) + "\n\n\\1-grams:\n")
                f.write(self._unigram_lines())
            for n in range(2, self.order + 1):
                with open(plain, "a", encoding="utf-8") as f:
                    f.write(f"\n\\{n}-grams:\n")
                t = self.tables[n - 2]
                keep = self.keep[n - 1]
                with_bo = n < self.order
                empty_f, empty_u8 = np.zeros(0), np.zeros(0, np.uint8)
                _lmbuild.write_section(
                    str(plain),
                    np.ascontiguousarray(t.keys()).reshape(-1),
                    len(t),
                    t.wide,
                    n,
                    self.bits,
                    empty_u8 if keep is None else keep.view(np.uint8),
                    keep is not None,
                    self.log10_prob[n - 1],
                    self.log10_backoff[n - 1] if with_bo else empty_f,
                    self.has_backoff[n - 1].view(np.uint8) if with_bo else empty_u8,
                    with_bo,
                    blob,
                    offsets,
                )
            with open(plain, "a", encoding="utf-8") as f:
                f.write("\n\\end\\\n")
            if out.suffix == ".gz":
                with (
                    open(plain, "rb") as src,
                    atomic_open(out, "wb") as raw,
                    gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=5) as gz,
                ):
                    shutil.copyfileobj(src, gz, 1 << 20)
        logger.info("wrote %s (%s n-grams)", out, self.ngram_counts)
        return out

    def _unigram_lines(self) -> str:
        lp = [f"{v:.6f}" for v in self.log10_prob[0].tolist()]
        lp[BOS_ID] = "-99"
        words = self.vocab.words
        if self.order == 1:
            return "".join(f"{p}\t{w}\n" for p, w in zip(lp, words))
        # Like lmplz, every unigram but </s> gets a backoff (0 when unused): pyctcdecode reads its list of
        # known words from the unigram lines that have one.
        bo = [f"{v:.6f}" if h else "0" for v, h in zip(self.log10_backoff[0].tolist(), self.has_backoff[0].tolist())]
        lines = [f"{p}\t{w}\t{b}\n" for p, w, b in zip(lp, words, bo)]
        lines[EOS_ID] = f"{lp[EOS_ID]}\t{words[EOS_ID]}\n"
        return "".join(lines)


def counting_budget(memory: int) -> int:
    """The bytes the counting hash tables may take of the build's ``memory``: what this process does not already
    hold (the corpus, the interpreter; measured after giving the reading's freed buffers back to the system) less
    32 MB for the counting threads' own buffers (output, merge readers); at least an eighth of ``memory``."""
    release_free_memory()
    held_bytes = resident_bytes() or 0
    budget = max(memory - held_bytes - (32 << 20), memory // 8)
    logger.info(
        "counting tables: %d MB of the %d MB budget (%d MB resident)", budget >> 20, memory >> 20, held_bytes >> 20
    )
    return budget


def _load(path: Path, count: int, wide: bool = False) -> np.ndarray:
    shape = (count, 2) if wide else (count,)
    if count == 0:
        return np.zeros(shape, np.uint64)
    return np.memmap(path, dtype=np.uint64, mode="r", shape=shape)


@contextlib.contextmanager
def spill_directory(temp_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    """A private folder for spilled runs and tables, removed on any exit (errors and Ctrl-C included)."""
    try:
        if temp_dir is not None:
            Path(temp_dir).mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix="w2vlm-lm-", dir=temp_dir))
    except OSError as e:
        raise LanguageModelError(
            f"temp folder {temp_dir or tempfile.gettempdir()}: cannot create a folder ({e})"
        ) from None
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def estimate_scalable(
    corpus: Corpus,
    order: int,
    thresholds: Sequence[int],
    spill_dir: Path,
    memory: int,
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> ScalableModel:
    """Estimate the model of ``order`` from ``corpus`` (``thresholds``: the pruning count per order, order 1's
    being 0). Needs ``order * bits <= 128`` with ``bits = len(vocab).bit_length()``."""
    from w2vlm import _lmbuild

    vocab = corpus.vocab
    v = len(vocab)
    bits = v.bit_length()
    if order * bits > 128:
        raise LanguageModelError(f"order {order} with {v} words needs keys over 128 bits")
    tokens = np.ascontiguousarray(corpus.tokens, dtype=np.int32)
    count1 = np.bincount(tokens, minlength=v).astype(np.int64)
    orders = list(range(order, 1, -1))
    tables_budget = counting_budget(memory)
    try:
        sizes = (
            _lmbuild.count_ngrams(tokens, orders, bits, BOS_ID, tables_budget, str(spill_dir / "o"), threads)
            if orders
            else []
        )
    except (OSError, RuntimeError) as e:
        raise LanguageModelError(f"counting n-grams in {spill_dir}: {e}") from None
    runs = sum(int(r) for _, r in sizes)
    tables: list[_Order] = []
    for n in range(2, order + 1):
        size = int(sizes[orders.index(n)][0])
        wide = n * bits > 64
        tables.append(_Order(n, size, wide, spill_dir))
    if progress is not None:
        progress(1, 4)
    # Prefix and suffix indexes into the order below.
    wmask = np.uint64((1 << bits) - 1)
    for t in tables:
        if t.n == 2:
            keys = np.asarray(t.keys())
            t.prefix = (keys >> np.uint64(bits)).astype(np.uint32)
            t.suffix = (keys & wmask).astype(np.uint32)
            del keys
            continue
        low = tables[t.n - 3]
        keys, low_keys = np.ascontiguousarray(t.keys()).reshape(-1), np.ascontiguousarray(low.keys()).reshape(-1)
        for suffix in (False, True):
            out = np.empty(len(t), np.uint32)
            _lmbuild.lower_index(
                keys, len(t), t.wide, low_keys, len(low), low.wide, t.n, bits, suffix, out, threads
            )  # fmt: skip
            if suffix:
                t.suffix = out
            else:
                t.prefix = out
        del keys, low_keys
    if progress is not None:
        progress(2, 4)

    # Adjusted counts: raw for the top order (read from its file when its probabilities are computed) and for
    # n-grams starting with <s>, else continuation counts; uint64 throughout (the native pass reads them as
    # they are). Pruning thresholds are applied to the raw counts on the way.
    sizes_by_order = [v] + [len(t) for t in tables]
    bos_start = [np.arange(v) == BOS_ID]
    for t in tables:
        assert t.prefix is not None
        bos_start.append(bos_start[-1][t.prefix])
    pruned = any(thresholds[n - 1] > 0 for n in range(2, order + 1))
    keep: list[np.ndarray | None] = [None] * order
    adjusted: list[np.ndarray | None] = [None] * order
    discounts: list[tuple[float, float, float]] = []  # from the top order down, reversed after
    for n in range(order, 0, -1):
        raw = np.asarray(tables[n - 2].counts()) if n > 1 else count1.astype(np.uint64)
        if pruned and n > 1:
            keep[n - 1] = raw > thresholds[n - 1]
        if n == order:
            adj = raw
        else:
            suf = tables[n - 1].suffix
            assert suf is not None
            cont = np.bincount(suf, minlength=sizes_by_order[n - 1]).astype(np.uint64)
            adj = np.where(bos_start[n - 1], raw, cont)
            del cont
        if n == 1:
            adj[BOS_ID] = 0  # <s> is never predicted
        discounts.append(kn_discounts(adj.view(np.int64), n)[0])
        adjusted[n - 1] = None if n == order > 1 else adj
        del raw, adj
    del bos_start
    discounts.reverse()

    # Pruning: closure under prefix and suffix from the top order down.
    if pruned:
        for n in range(order, 2, -1):
            t = tables[n - 2]
            k = keep[n - 1]
            lower = keep[n - 2]
            assert k is not None and lower is not None and t.prefix is not None and t.suffix is not None
            lower[t.prefix[k]] = True
            lower[t.suffix[k]] = True
    if progress is not None:
        progress(3, 4)

    # Probabilities bottom up (linear domain, float64).
    assert adjusted[0] is not None
    prob = unigram_probs(adjusted[0].view(np.int64), discounts[0])
    log10_prob: list[np.ndarray] = []
    log10_backoff: list[np.ndarray] = []
    has_backoff: list[np.ndarray] = []
    with np.errstate(divide="ignore"):
        lp = np.log10(prob)
    lp[BOS_ID] = LOG10_ZERO
    log10_prob.append(lp)
    for n in range(2, order + 1):
        t = tables[n - 2]
        m_prev = sizes_by_order[n - 2]
        d = discounts[n - 1]
        k = keep[n - 1]
        p_n = np.empty(len(t))
        bo = np.ones(m_prev)
        has = np.zeros(m_prev, np.uint8)
        keep_u8 = np.zeros(0, np.uint8) if k is None else k.view(np.uint8)
        adj = adjusted[n - 1]
        _lmbuild.interpolate(
            t.prefix, t.suffix, np.asarray(t.counts()) if adj is None else adj, keep_u8, k is not None,
            d[0], d[1], d[2], prob, p_n, bo, has,
        )  # fmt: skip
        del adj
        adjusted[n - 1] = None
        t.suffix = None  # only the estimate needs it
        has_b = has.astype(bool)
        log10_backoff.append(np.where(has_b, np.log10(np.maximum(bo, 1e-300)), 0.0))
        has_backoff.append(has_b)
        with np.errstate(divide="ignore"):
            lp = np.log10(p_n)
        sel = lp if k is None else lp[k]
        if not np.all(np.isfinite(sel)) or np.any(sel > 1e-9):
            raise AssertionError(f"order {n}: invalid probabilities {sel[~np.isfinite(sel) | (sel > 1e-9)][:5]}")
        log10_prob.append(np.minimum(lp, 0.0, out=lp))
        prob = p_n
    lp1 = log10_prob[0]
    bad = (lp1 != LOG10_ZERO) & (~np.isfinite(lp1) | (lp1 > 1e-9))
    if bad.any():
        raise AssertionError(f"order 1: invalid probabilities at {np.flatnonzero(bad)[:5].tolist()}")
    log10_prob[0] = np.minimum(lp1, 0.0)
    if progress is not None:
        progress(4, 4)
    model = ScalableModel(
        vocab=vocab,
        bits=bits,
        tables=tables,
        unigram_count=count1,
        log10_prob=log10_prob,
        log10_backoff=log10_backoff,
        has_backoff=has_backoff,
        keep=keep,
        discounts=discounts,
        spill_runs=runs,
    )
    logger.info(
        "estimated %d-gram model: %s n-grams (%d runs spilled), discounts %s",
        order,
        model.ngram_counts,
        runs,
        [tuple(round(x, 4) for x in dd) for dd in discounts],
    )
    return model
