"""Word error rate by edit distance (no dependencies, usable from both the main env and the anchors venv)."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitution, insertion, deletion cost 1)."""
    if not ref:
        return len(hyp)
    if not hyp:
        return len(ref)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits / total reference words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"wer: {len(references)} references but {len(hypotheses)} hypotheses")
    errors = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses, strict=True))
    words = sum(len(r.split()) for r in references)
    return errors / max(words, 1)


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus character error rate."""
    errors = sum(edit_distance(list(r), list(h)) for r, h in zip(references, hypotheses, strict=True))
    chars = sum(len(r) for r in references)
    return errors / max(chars, 1)
