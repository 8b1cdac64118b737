"""Word and character error rates: the one implementation (jiwer's alignments) that ``eval``, ``tune``,
``train``'s dev scores and the benchmarks use, and the text normalization they score with."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from w2vlm.errors import ModelError

_NON_WORD = re.compile(r"[^\w\s'⁇]|_")


def normalize_text(text: str) -> str:
    """Text as it is scored: Unicode NFKC, lowercase, punctuation removed (apostrophes inside words and the
    decoder's unknown token ``⁇`` kept), whitespace collapsed."""
    # (NFKC would turn ⁇ into "??": keep it out of the normalization)
    text = "⁇".join(unicodedata.normalize("NFKC", part) for part in text.split("⁇"))
    text = text.lower().replace("’", "'")
    text = _NON_WORD.sub(" ", text)
    words = (w.strip("'") for w in text.split())
    return " ".join(w for w in words if w)


@dataclass
class ErrorCounts:
    """Edit operations of hypotheses against references (words or characters)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def rate(self) -> float:
        """Errors over reference length (an empty reference: 0 without errors, else 1 per error)."""
        if self.reference_length == 0:
            return float(self.errors)
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.hits + other.hits,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "errors": self.errors,
            "reference_length": self.reference_length,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
        }


def _jiwer() -> Any:
    try:
        import jiwer
    except ImportError:  # pragma: no cover - part of the eval extra
        raise ModelError("evaluation needs jiwer: pip install 'w2vlm[eval]'") from None
    return jiwer


def word_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Word-level edit counts (whitespace-separated words, texts as given)."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref or not hyp:
        return ErrorCounts(deletions=len(ref), insertions=len(hyp))
    out = _jiwer().process_words(" ".join(ref), " ".join(hyp))
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)


def char_errors(reference: str, hypothesis: str) -> ErrorCounts:
    """Character-level edit counts (spaces count as characters; runs of whitespace as one space)."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    if not ref or not hyp:
        return ErrorCounts(deletions=len(ref), insertions=len(hyp))
    out = _jiwer().process_characters(ref, hyp)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)


def corpus_errors(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[ErrorCounts, ErrorCounts]:
    """Summed (word, character) edit counts over pairs of texts (as given; normalize them first)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    words, chars = ErrorCounts(), ErrorCounts()
    for ref, hyp in zip(references, hypotheses, strict=True):
        words = words + word_errors(ref, hyp)
        chars = chars + char_errors(ref, hyp)
    return words, chars


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, float]:
    """Corpus-level (WER, CER) of texts as given: summed edits over summed reference words / characters."""
    words, chars = corpus_errors(references, hypotheses)
    return words.rate, chars.rate
