"""Writing n-gram models as ARPA files (plain or gzip) and pyctcdecode-style ``unigrams.txt``."""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from w2vlm.errors import LanguageModelError
from w2vlm.fileio import atomic_open, atomic_write_text
from w2vlm.lm.corpus import BOS, EOS, UNK
from w2vlm.lm.kneser_ney import NGramModel

__all__ = ["unigrams_from_arpa", "write_arpa", "write_unigrams"]

logger = logging.getLogger("w2vlm.lm.arpa")

_BATCH = 200_000


def _ngram_texts(model: NGramModel) -> list[list[str]]:
    """The space-joined words of every n-gram, per order, in table order."""
    words = model.vocab.words
    texts: list[list[str]] = [list(words[i] for i in model.tables[0].word.tolist())]
    for t in model.tables[1:]:
        prev = texts[-1]
        texts.append([prev[p] + " " + words[w] for p, w in zip(t.prefix.tolist(), t.word.tolist(), strict=True)])
    return texts


def _fmt(x: np.ndarray) -> list[str]:
    # 6 decimals of log10 is a relative precision of ~1.4e-6, below float32 (what KenLM stores).
    return [f"{v:.6f}" for v in x.tolist()]


def write_arpa(
    model: NGramModel, path: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None
) -> Path:
    """Write ``model`` as an ARPA file; gzip-compressed when ``path`` ends with ``.gz``. Written to a
    temporary name in the same folder and renamed, so a reader never sees a partial file."""
    out = Path(path)
    total = sum(model.ngram_counts)
    with atomic_open(out, "wb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=5) if out.suffix == ".gz" else raw
        with stream:
            _write_body(model, stream, progress, total)
    logger.info("wrote %s (%s n-grams)", out, model.ngram_counts)
    return out


def _write_body(model: NGramModel, stream, progress, total: int) -> None:  # type: ignore[no-untyped-def]
    order = model.order
    head = ["", "\\data\\"] + [f"ngram {n}={c}" for n, c in enumerate(model.ngram_counts, start=1)] + [""]
    stream.write(("\n".join(head) + "\n").encode("utf-8"))
    texts = _ngram_texts(model)
    done = 0
    for n, (t, tx) in enumerate(zip(model.tables, texts, strict=True), start=1):
        stream.write(f"\\{n}-grams:\n".encode())
        lp = _fmt(t.log10_prob)
        if n == 1:
            # <s> is never predicted: -99 by convention.
            bos = model.vocab.words.index(BOS)
            lp[bos] = "-99"
        if n < order:
            bo = _fmt(t.log10_backoff)
            has = t.has_backoff.tolist()
            if n == 1:
                # Like lmplz, every unigram but </s> gets a backoff (0 when unused): pyctcdecode reads its
                # list of known words from the unigram lines that have one.
                eos = model.vocab.words.index(EOS)
                has = [True] * len(has)
                has[eos] = False
                bo = [b if t_has else "0" for b, t_has in zip(bo, t.has_backoff.tolist(), strict=True)]
            for s in range(0, len(tx), _BATCH):
                e = min(s + _BATCH, len(tx))
                lines = [f"{lp[i]}\t{tx[i]}\t{bo[i]}\n" if has[i] else f"{lp[i]}\t{tx[i]}\n" for i in range(s, e)]
                stream.write("".join(lines).encode("utf-8"))
                done += e - s
                if progress is not None:
                    progress(done, total)
        else:
            for s in range(0, len(tx), _BATCH):
                e = min(s + _BATCH, len(tx))
                stream.write("".join([f"{lp[i]}\t{tx[i]}\n" for i in range(s, e)]).encode("utf-8"))
                done += e - s
                if progress is not None:
                    progress(done, total)
        stream.write(b"\n")
    stream.write(b"\\end\\\n")


def write_unigrams(model: NGramModel, path: str | os.PathLike[str]) -> Path:
    """Write the model's words (without ``<s>``, ``</s>``, ``<unk>``), one a line, most frequent first —
    the ``unigrams.txt`` that pyctcdecode and w2vlm use to tell known words from unknown ones."""
    out = Path(path)
    special = {BOS, EOS, UNK}
    words = [w for w in model.vocab.words if w not in special]
    if not words:
        raise LanguageModelError(f"{out}: the model has no words to list")
    atomic_write_text(out, "\n".join(words) + "\n")
    return out


def unigrams_from_arpa(path: str | os.PathLike[str]) -> list[str]:
    """The words of an ARPA file's ``\\1-grams:`` section (plain or ``.gz``), without ``<s>``, ``</s>``,
    ``<unk>``, in file order — what pyctcdecode derives ``unigrams`` from when none are given."""
    p = Path(path)
    if not p.is_file():
        raise LanguageModelError(f"ARPA file {p}: does not exist")
    special = {BOS, EOS, UNK}
    words: list[str] = []
    section = None
    saw_data = False
    try:
        f = gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")  # noqa: SIM115
        with f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                if line == "\\data\\":
                    saw_data = True
                elif line.startswith("\\"):
                    if section == "\\1-grams:":
                        break
                    section = line
                elif section == "\\1-grams:":
                    parts = line.split("\t")
                    if len(parts) < 2:
                        raise LanguageModelError(f"ARPA file {p}: malformed 1-gram line {line[:80]!r}")
                    if parts[1] not in special:
                        words.append(parts[1])
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise LanguageModelError(f"ARPA file {p}: cannot be read as UTF-8 text ({e})") from None
    if not saw_data:
        raise LanguageModelError(f"ARPA file {p}: no \\data\\ header; expected an ARPA language model")
    if not words:
        raise LanguageModelError(f"ARPA file {p}: no words in the \\1-grams: section")
    return words
