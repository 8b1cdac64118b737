"""Building n-gram language models from text (``w2vlm build-lm``).

Interpolated modified Kneser-Ney estimation (no KenLM needed; counting with a memory budget, spilling sorted
runs to disk, in the native module ``w2vlm._lmbuild``), with count pruning and a vocabulary limit, text
normalization matched to a character CTC vocabulary, and ARPA output (plus ``unigrams.txt``) that KenLM,
pyctcdecode and w2vlm's decoder load.

>>> from w2vlm.lm import build_lm
>>> stats = build_lm(["corpus.txt"], "lm/3gram.arpa", order=3, prune=[0, 0, 1])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from w2vlm.errors import LanguageModelError
from w2vlm.fileio import check_output
from w2vlm.lm.arpa import unigrams_from_arpa, write_arpa, write_unigrams
from w2vlm.lm.corpus import Corpus, Vocabulary, read_corpus
from w2vlm.lm.kneser_ney import NGramModel, estimate_kneser_ney, prune_thresholds
from w2vlm.lm.normalize import DEFAULT_ALLOWED_CHARS, TextNormalizer, allowed_chars_from_file, normalize_text
from w2vlm.lm.scalable import DEFAULT_MEMORY, estimate_scalable, parse_memory, spill_directory

__all__ = [
    "DEFAULT_ALLOWED_CHARS",
    "DEFAULT_MEMORY",
    "Corpus",
    "LMStats",
    "NGramModel",
    "TextNormalizer",
    "Vocabulary",
    "allowed_chars_from_file",
    "build_lm",
    "estimate_kneser_ney",
    "normalize_text",
    "parse_memory",
    "read_corpus",
    "unigrams_from_arpa",
    "write_arpa",
    "write_unigrams",
]

logger = logging.getLogger("w2vlm.lm")

#: ``progress(stage, done, total)``: stage is "read", "estimate", "write" or "heldout".
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class LMStats:
    """What :func:`build_lm` built."""

    order: int
    ngram_counts: list[int]  # n-grams written per order (1-grams first)
    vocab_size: int  # unigrams in the ARPA, including <s>, </s>, <unk>
    num_sentences: int
    num_words: int  # running words of the training text
    num_unk: int  # running words mapped to <unk> by the vocabulary limit
    discounts: list[tuple[float, float, float]]  # (D1, D2, D3+) per order
    arpa_path: Path
    unigrams_path: Path
    seconds: float
    heldout_perplexity: float | None = None
    heldout_tokens: int | None = None
    heldout_oov_rate: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    spill_runs: int = 0  # sorted runs written to disk while counting (0: counted within the budget)


def _normalizer(normalize: bool, allowed_chars: str | Iterable[str] | os.PathLike[str] | None) -> TextNormalizer | None:
    if not normalize:
        return None
    if isinstance(allowed_chars, os.PathLike):
        allowed_chars = allowed_chars_from_file(allowed_chars)
    return TextNormalizer(allowed_chars)


def build_lm(
    text_files: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    order: int = 3,
    prune: Sequence[int] | None = None,
    vocab_limit: int | None = None,
    normalize: bool = True,
    allowed_chars: str | Iterable[str] | os.PathLike[str] | None = None,
    heldout_files: Sequence[str | os.PathLike[str]] | None = None,
    progress: ProgressCallback | None = None,
    memory: str | int = DEFAULT_MEMORY,
    threads: int | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
) -> LMStats:
    """Estimate an interpolated modified Kneser-Ney n-gram model from text and write it as ARPA.

    Args:
        text_files: UTF-8 text (plain or ``.gz``), one sentence a line.
        output: the ARPA file to write; gzip-compressed when it ends with ``.gz``. ``unigrams.txt`` (one
            word a line, most frequent first) is written next to it.
        order: the n-gram order (>= 1).
        prune: count thresholds per order like lmplz ``--prune 0 0 1``: n-grams of order >= 2 seen at most
            that many times are dropped (the last value applies to the remaining orders); the model stays
            normalized (the dropped mass goes to the backoff weights).
        vocab_limit: keep only the this many most frequent words; the others become ``<unk>``.
        normalize: reduce the text to ``allowed_chars`` (see :func:`normalize_text`); False splits the text
            on whitespace as it is.
        allowed_chars: the characters words may contain, or the path of a ``vocab.json`` / ``alphabet.json``
            to take them from; default lowercase a-z and the apostrophe.
        heldout_files: text to report the model's perplexity on (same normalization).
        progress: optional ``progress(stage, done, total)`` callback.
        memory: the build's memory budget, like lmplz ``-S`` (``"1G"``, ``"512M"``, ``"50%"`` of physical
            memory, or bytes): the n-gram counting hash tables get what the process does not already hold, and
            when full they are sorted and spilled to ``temp_dir`` and merged afterwards. The estimate after it
            holds about 25-40 bytes per distinct n-gram (below the budget for the 5-gram of 20 M n-grams).
        threads: counting threads (default: the CPU count, at most 4).
        temp_dir: where spilled runs and the sorted tables go (default the system temp folder); removed after.

    Raises:
        LanguageModelError: a missing, empty, binary or non-UTF-8 input file, text with no usable words,
            or invalid options.
    """
    if isinstance(text_files, (str, os.PathLike)):
        text_files = [text_files]
    if not isinstance(order, int) or order < 1:
        raise LanguageModelError(f"order: expected an integer >= 1, got {order!r}")
    out = Path(output)
    if out.exists() and out.is_dir():
        raise LanguageModelError(f"output {out}: is a directory; expected an ARPA file path (e.g. lm.arpa)")
    check_output(out)  # before the counting, not after it
    if not (out.name.endswith(".arpa") or out.name.endswith(".arpa.gz")):
        logger.warning("output %s does not end with .arpa or .arpa.gz; pyctcdecode looks for *.arpa", out)
    norm = _normalizer(normalize, allowed_chars)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def read_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("read", done, total)

    corpus = read_corpus(text_files, norm, vocab_limit=vocab_limit, progress=read_progress)
    timings["read"] = time.perf_counter() - t0
    logger.info(
        "read %d sentences, %d words, %d word types",
        corpus.num_sentences,
        corpus.num_words,
        len(corpus.vocab) - 3,
    )
    t1 = time.perf_counter()
    thresholds = prune_thresholds(prune, order)
    budget = parse_memory(memory)
    n_threads = threads if threads is not None else min(4, os.cpu_count() or 1)
    if n_threads < 1:
        raise LanguageModelError(f"threads: expected >= 1, got {threads}")
    runs = 0
    with spill_directory(temp_dir) as spill:
        if order * len(corpus.vocab).bit_length() <= 128:

            def est_progress(done: int, total: int) -> None:
                if progress is not None:
                    progress("estimate", done, total)

            model = estimate_scalable(corpus, order, thresholds, spill, budget, n_threads, est_progress)
            runs = model.spill_runs
            timings["estimate"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            if progress is not None:
                progress("write", 0, 0)
            arpa_path = model.write_arpa(out, temp_dir=temp_dir)
            ngram_model: NGramModel | None = None
        else:  # keys wider than 128 bits: the in-memory estimator
            logger.info("order %d over %d words: in-memory estimation", order, len(corpus.vocab))
            ngram_model = estimate_kneser_ney(corpus, order=order, prune=prune)
            model = ngram_model  # type: ignore[assignment]
            timings["estimate"] = time.perf_counter() - t1
            t2 = time.perf_counter()

            def write_progress(done: int, total: int) -> None:
                if progress is not None:
                    progress("write", done, total)

            arpa_path = write_arpa(ngram_model, out, progress=write_progress)
        unigrams_path = write_unigrams(model, out.parent / "unigrams.txt")  # type: ignore[arg-type]
        timings["write"] = time.perf_counter() - t2
        if heldout_files and ngram_model is None:
            ngram_model = model.to_ngram_model()  # type: ignore[union-attr]
    stats = LMStats(
        order=order,
        ngram_counts=model.ngram_counts,
        vocab_size=len(model.vocab),
        num_sentences=corpus.num_sentences,
        num_words=corpus.num_words,
        num_unk=corpus.num_unk,
        discounts=model.discounts,
        arpa_path=arpa_path,
        unigrams_path=unigrams_path,
        seconds=0.0,
        timings=timings,
        spill_runs=runs,
    )
    if heldout_files:
        t3 = time.perf_counter()
        assert ngram_model is not None
        held = read_corpus(heldout_files, norm, vocab=ngram_model.vocab)
        ppl, n = ngram_model.perplexity(held)
        stats.heldout_perplexity = ppl
        stats.heldout_tokens = n
        stats.heldout_oov_rate = held.num_unk / max(held.num_words, 1)
        timings["heldout"] = time.perf_counter() - t3
    stats.seconds = time.perf_counter() - t0
    return stats
