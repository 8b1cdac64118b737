"""Scoring of ``bench/longform.py``'s long files against their timelines: WER/CER with edit counts, the ratio of
several files together, words placed in the gaps between utterances, and segment lists compared."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

#: a hypothesis word whose middle lies this far outside every utterance counts as a word in a gap
GAP_MARGIN_S = 0.25


def pooled_ratio(entries: Sequence[dict[str, Any]], references: Sequence[dict[str, Any]]) -> float | None:
    """Word errors of several long files together over those of the same utterances one by one."""
    base = sum(r["errors"] for r in references)
    return sum(e["errors"] for e in entries) / base if base else None


def error_rates(refs: Sequence[str], hyp: str) -> dict[str, Any]:
    """WER/CER and word edit counts of ``hyp`` against the references joined (w2vlm's own metrics)."""
    from w2vlm.metrics import char_errors, word_errors

    ref = " ".join(refs)
    words = word_errors(ref, hyp)
    return {
        "wer": words.rate,
        "cer": char_errors(ref, hyp).rate,
        "ref_words": words.reference_length,
        "errors": words.errors,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
    }


def words_in_gaps(timeline: Sequence[dict[str, Any]], words: Sequence[Sequence[Any]]) -> int:
    """Hypothesis words whose middle is more than GAP_MARGIN_S away from every utterance."""
    starts = [u["start"] for u in timeline]
    count = 0
    for _, a, b in words:
        mid = (a + b) / 2
        i = bisect.bisect_right(starts, mid + GAP_MARGIN_S) - 1
        if i < 0 or mid > timeline[i]["end"] + GAP_MARGIN_S:
            count += 1
    return count


def same_segments(a: list[list[Any]], b: list[list[Any]], tol: float = 0.02) -> tuple[bool, float | None]:
    """Whether two segment lists have the same texts and times within ``tol``; the largest time difference
    (None when the texts differ)."""
    if len(a) != len(b) or any(x[2] != y[2] for x, y in zip(a, b)):
        return False, None
    diff = max((abs(x[i] - y[i]) for x, y in zip(a, b) for i in (0, 1)), default=0.0)
    return diff <= tol, diff
