"""Per-word confidence under LM decoding (see :func:`word_confidences` for the definition).

Two kinds of evidence are available for a word of a hypothesis:

- acoustic: the posterior of each token the word emitted, averaged over the frames where it was emitted;
- competition: the posterior of the hypothesis among the final beams (a softmax of their scores), summed
  over the beams that also contain the word at an overlapping place ("n-best agreement").

``bench/confidence.py`` measures how well candidate definitions separate right from wrong words (ROC-AUC);
:func:`word_confidences` implements the one that did best there (see its docstring).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def _beam_posteriors(beams: Sequence[Any], temperature: float = 1.0) -> np.ndarray:
    scores = np.array([b.lm_score for b in beams], dtype=np.float64) / temperature
    scores -= scores.max()
    p = np.exp(scores)
    return p / p.sum()


def _words_with_tokens(beam: Any, labels: Sequence[str]) -> list[tuple[str, int, int, list[tuple[int, int, int]]]]:
    """(word, start, end, [(token index, start, end), ...]) of a beam, from its word and char frames."""
    index = {lab: i for i, lab in enumerate(labels)}
    tokens = [(index[c], s, e) for c, (s, e) in beam.char_frames]
    out = []
    k = 0
    for word, (ws, we) in beam.text_frames:
        mine = []
        while k < len(tokens) and tokens[k][1] < we:
            if tokens[k][1] >= ws and labels[tokens[k][0]].strip():
                mine.append(tokens[k])
            k += 1
        out.append((word, ws, we, mine))
    return out


def _nbest_agreement(beams: Sequence[Any], posteriors: np.ndarray) -> list[list[float]]:
    """For each beam and word: total posterior of the beams with the same word at an overlapping span."""
    occurrences: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for b_idx, beam in enumerate(beams):
        for word, (s, e) in beam.text_frames:
            occurrences[word].append((s, e, b_idx))
    result = []
    for beam in beams:
        values = []
        for word, (s, e) in beam.text_frames:
            seen: set[int] = set()
            total = 0.0
            for s2, e2, b2 in occurrences[word]:
                if b2 not in seen and s2 < e and s < e2:
                    seen.add(b2)
                    total += posteriors[b2]
            values.append(min(1.0, total))
        result.append(values)
    return result


def _acoustic(
    words: list[tuple[str, int, int, list[tuple[int, int, int]]]], log_probs: np.ndarray
) -> tuple[list[float], list[float]]:
    """Per word: (min, mean) over its tokens of the token's mean posterior over the frames it was emitted."""
    mins, means = [], []
    for _, _, _, toks in words:
        if not toks:
            mins.append(0.0)
            means.append(0.0)
            continue
        per_token = [float(np.exp(log_probs[s:e, t]).mean()) if e > s else 0.0 for t, s, e in toks]
        mins.append(min(per_token))
        means.append(float(np.mean(per_token)))
    return mins, means


# Logistic weights over [ln agreement, ln acoustic min, word known to the LM, log10 p(word | history)], fitted by
# bench/confidence.py --fit on simulated emissions (seed 1, 100 utterances, 3,276 words).
_BIAS = 4.3218
_WEIGHTS = (7.0689, 0.0136, 3.9168, 1.2328)


def word_confidences(
    beams: Sequence[Any], log_probs: np.ndarray, labels: Sequence[str], lm: Any = None
) -> list[list[float]]:
    """Confidence in [0, 1] of every word of every beam.

    With a language model: a logistic function of four pieces of evidence about the word,
    (1) its n-best agreement: the posterior mass of the final beams (softmax of their scores) that contain the
    same word at an overlapping frame span; (2) the posterior of its weakest token, averaged over the frames
    where that token was emitted; (3) whether the LM knows the word; (4) log10 p(word | preceding words) under
    the LM. The weights were fitted on simulated emissions; bench/confidence.py reports the ROC-AUC of this and
    of each single piece of evidence (n-best agreement alone: ~0.81; this combination: ~0.95).
    Without a language model: the n-best agreement.
    """
    if not beams:
        return []
    post = _beam_posteriors(beams)
    agreement = _nbest_agreement(beams, post)
    if lm is None:
        return [[float(a) for a in agree] for agree in agreement]
    out = []
    b0, (w_agree, w_ac, w_known, w_logp) = _BIAS, _WEIGHTS
    for beam, agree in zip(beams, agreement):
        mins, _ = _acoustic(_words_with_tokens(beam, labels), log_probs)
        known, logp = lm_features(beam, lm)
        conf = []
        for a, m, k, p in zip(agree, mins, known, logp):
            z = b0 + w_agree * np.log(max(a, 1e-6)) + w_ac * np.log(max(m, 1e-6)) + w_known * k + w_logp * p
            conf.append(float(1.0 / (1.0 + np.exp(-z))))
        out.append(conf)
    return out


def lm_features(beam: Any, lm: Any) -> tuple[list[float], list[float]]:
    """Per word of a beam: (1 if the LM knows the word else 0, log10 p(word | preceding words))."""
    known, logp = [], []
    scorer = getattr(lm.ngram, "base_score", None) if lm is not None else None
    if scorer is None:  # no LM, or one served by the kenlm module: no per-word probabilities here
        return [1.0] * len(beam.text_frames), [0.0] * len(beam.text_frames)
    state = lm.get_start_state()
    for word, _ in beam.text_frames:
        known.append(1.0 if word in lm.ngram else 0.0)
        p, state = scorer(state, word)
        logp.append(float(p))
    return known, logp


def candidate_confidences(
    beams: Sequence[Any], log_probs: np.ndarray, labels: Sequence[str], lm: Any = None
) -> dict[str, list[float]]:
    """Several confidence definitions for the words of the top beam (used by bench/confidence.py)."""
    if not beams:
        return {}
    words = _words_with_tokens(beams[0], labels)
    mins, means = _acoustic(words, log_probs)
    known, logp = lm_features(beams[0], lm)
    out: dict[str, list[float]] = {
        "acoustic: min token posterior": mins,
        "acoustic: mean token posterior": means,
        "LM: word known": known,
        "LM: log10 p(word | history)": logp,
    }
    for temp in (0.5, 1.0, 2.0):
        agree = _nbest_agreement(beams, _beam_posteriors(beams, temp))[0]
        out[f"n-best agreement (T={temp:g})"] = agree
        if temp == 1.0:
            out["agreement x acoustic min"] = [a * m for a, m in zip(agree, mins)]
            out["sqrt(agreement x acoustic min)"] = [float(np.sqrt(a * m)) for a, m in zip(agree, mins)]
            out["min(agreement, acoustic min)"] = [min(a, m) for a, m in zip(agree, mins)]
            out["agreement x acoustic mean"] = [a * m for a, m in zip(agree, means)]
    return out
