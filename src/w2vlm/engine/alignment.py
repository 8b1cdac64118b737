"""From log-probabilities and beams to words and characters with their frames.

:func:`greedy_words`: best-path CTC decoding with word frames and confidences. :func:`ctc_align`: a Viterbi
CTC alignment of known tokens. :func:`char_spans_from_beam`: character frames of a decoded hypothesis (the
decoder's own token spans, or an alignment within each word's frames).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from w2vlm.errors import DecoderInputError

#: Labels that are not text (``<s>``, ``</s>``, ``[cls]``, ...): skipped by greedy decoding, as tokenizers do.
SPECIAL_LABEL = re.compile(r"^(<[^<>]+>|\[[^\[\]]+\])$")


def greedy_words(
    log_probs: np.ndarray, labels: Sequence[str], is_bpe: bool = False
) -> tuple[str, list[tuple[str, int, int, float]]]:
    """Best-path CTC decoding of (frames, vocab) log-probabilities.

    Returns the text and its words as (word, start frame, end frame (exclusive), confidence), where a word's
    confidence is the lowest, over its tokens, of the token's posterior averaged over the frames where it was
    emitted. Labels that are not text (:data:`SPECIAL_LABEL`) are skipped. The text does not depend on whether
    the input is normalised (logits give the same argmax); the confidences need log-probabilities.
    """
    if log_probs.shape[0] == 0:
        return "", []
    ids = log_probs.argmax(axis=1)
    probs = np.exp(log_probs[np.arange(ids.size), ids])
    change = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [ids.size]])
    if not is_bpe:
        return _greedy_char_words(ids, probs, starts, ends, labels)
    words: list[tuple[str, int, int, float]] = []
    cur: list[str] = []
    cur_start = cur_end = 0
    cur_conf = 1.0

    def close() -> None:
        nonlocal cur, cur_conf
        if cur:
            words.append(("".join(cur), cur_start, cur_end, cur_conf))
        cur, cur_conf = [], 1.0

    for s, e in zip(starts.tolist(), ends.tolist()):
        label = labels[int(ids[s])]
        if label == "" or SPECIAL_LABEL.match(label):
            continue
        if label == " " or (not is_bpe and label.isspace()):
            close()
            continue
        piece = label
        if is_bpe:
            if label.startswith("▁"):
                close()
                piece = label.strip("▁") or ""
                if label == "▁⁇▁":
                    piece = "⁇"
            if not piece:
                continue
        if not cur:
            cur_start = s
        cur.append(piece)
        cur_end = e
        cur_conf = min(cur_conf, float(probs[s:e].mean()))
    close()
    return " ".join(w for w, *_ in words), words


@functools.lru_cache(maxsize=16)
def _label_kinds(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels as an object array, and which of them are blanks (or special tokens) and word delimiters (one
    alphabet's, computed once: every segment's greedy decoding asks)."""
    table = np.asarray(labels, dtype=object)
    blank = np.fromiter((lab == "" or bool(SPECIAL_LABEL.match(lab)) for lab in labels), bool, len(labels))
    delim = np.fromiter((lab != "" and lab.isspace() for lab in labels), bool, len(labels))
    return table, blank, delim


def _greedy_char_words(
    ids: np.ndarray, probs: np.ndarray, starts: np.ndarray, ends: np.ndarray, labels: Sequence[str]
) -> tuple[str, list[tuple[str, int, int, float]]]:
    """:func:`greedy_words` for a character alphabet, vectorised over the runs of the best path."""
    table, blanks, delims = _label_kinds(tuple(labels))
    run_ids = ids[starts]
    run_labels = table[run_ids]
    blank = blanks[run_ids]
    delim = delims[run_ids]
    conf = np.add.reduceat(probs, starts) / (ends - starts)
    word_of = np.cumsum(delim)  # runs after the k-th delimiter belong to word k
    keep = ~(blank | delim)
    if not keep.any():
        return "", []
    kept = np.flatnonzero(keep)
    groups = np.flatnonzero(np.diff(word_of[kept])) + 1
    firsts = np.concatenate([[0], groups])
    lasts = np.concatenate([groups, [kept.size]]) - 1
    word_conf = np.minimum.reduceat(conf[kept], firsts)
    words = [
        ("".join(run_labels[kept[a : b + 1]]), int(starts[kept[a]]), int(ends[kept[b]]), float(c))
        for a, b, c in zip(firsts.tolist(), lasts.tolist(), word_conf.tolist())
    ]
    return " ".join(w for w, *_ in words), words


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def ctc_align(logp: np.ndarray, tokens: Sequence[int], blank: int) -> list[tuple[int, int]]:
    """Viterbi CTC alignment of ``tokens`` to ``logp`` (frames, vocab); per token its (start, end) frames,
    end exclusive (a token spans the frames where it is emitted, repeats included). Frames must be at least
    as many as the tokens plus the blanks required between repeated tokens."""
    n, length = logp.shape[0], len(tokens)
    if length == 0:
        return []
    ext = [blank]
    for t in tokens:
        ext += [t, blank]
    ext_arr = np.asarray(ext)
    s = len(ext)
    neg = -np.inf
    score = np.full(s, neg)
    score[0] = logp[0, blank]
    score[1] = logp[0, ext[1]]
    back = np.zeros((n, s), dtype=np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    can_skip = np.zeros(s, dtype=bool)
    can_skip[2:] = (ext_arr[2:] != blank) & (ext_arr[2:] != ext_arr[:-2])
    emit = logp[:, ext_arr]
    for f in range(1, n):
        stay = score
        one = np.concatenate([[neg], score[:-1]])
        two = np.where(can_skip, np.concatenate([[neg, neg], score[:-2]]), neg)
        choice = np.argmax(np.stack([stay, one, two]), axis=0)
        best = np.choose(choice, [stay, one, two])
        back[f] = choice
        score = best + emit[f]
    end = s - 1 if score[s - 1] >= score[s - 2] else s - 2
    if not np.isfinite(score[end]):
        raise DecoderInputError(f"ctc_align: {n} frames cannot hold {length} tokens")
    state_at = np.empty(n, dtype=np.int64)
    state = end
    for f in range(n - 1, -1, -1):
        state_at[f] = state
        state -= int(back[f, state])
    spans: list[tuple[int, int]] = []
    for k in range(length):
        frames = np.flatnonzero(state_at == 2 * k + 1)
        spans.append((int(frames[0]), int(frames[-1]) + 1))
    return spans


def char_spans_from_beam(beam: Any, logits: np.ndarray | None, labels: Sequence[str]) -> list[tuple[str, tuple]]:
    """Character (start, end) frames of a beam's words (spaces excluded).

    Uses the decoder's own token spans when the beam carries them (``beam.char_frames``: each emitted token
    with its frames); otherwise aligns each word's characters to the logits within the word's frames (CTC
    Viterbi)."""
    own = getattr(beam, "char_frames", None)
    if own:
        return [(ch, (int(s), int(e))) for ch, (s, e) in own if ch.strip()]
    index = {label: i for i, label in enumerate(labels)}
    blank = index.get("", 0)
    logp = log_softmax(logits) if logits is not None and logits.size else None
    spans: list[tuple[str, tuple[int, int]]] = []
    for word, (start, end) in beam_words(beam):
        chars = list(word)
        ids = [index.get(ch, index.get("⁇", -1)) for ch in chars]
        if logp is None:  # no logits kept (incremental decoding): spread the word's frames evenly
            spans.extend(
                (ch, (start + s, start + e))
                for ch, (s, e) in zip(chars, _even_split(len(chars), end - start), strict=True)
            )
            continue
        if any(i < 0 for i in ids) or end <= start:
            # a word made of multi-character (BPE) tokens: one span for the whole word
            spans.append((word, (int(start), int(end))))
            continue
        try:
            local = ctc_align(logp[start:end], ids, blank)
        except DecoderInputError:
            local = _even_split(len(chars), end - start)
        spans.extend((ch, (start + s, start + e)) for ch, (s, e) in zip(chars, local, strict=True))
    return spans


def _even_split(count: int, frames: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, frames, count + 1).round().astype(int)
    return [(int(edges[i]), int(max(edges[i + 1], edges[i] + 1))) for i in range(count)]


def beam_words(beam: Any) -> list[tuple[str, tuple[int, int]]]:
    """(word, (start, end) frames) of a beam: a w2vlm OutputBeam or pyctcdecode's tuple."""
    from w2vlm.processor import beam_fields

    return beam_fields(beam)[1]


__all__ = ["char_spans_from_beam", "ctc_align", "greedy_words", "log_softmax"]
