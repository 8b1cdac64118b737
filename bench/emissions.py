"""Simulated CTC emissions over real English text, for benchmarking decoders.

What a character-level wav2vec2 CTC model emits at 50 frames/s is imitated frame by frame: each character
of the reference is a short spike (1-3 frames) of a near-certain posterior, separated by blank frames;
words are separated by a ``" "`` (word delimiter) spike; utterances start and end with silence. On top of
that the acoustic model is made to err the way real ones do:

- substitutions between letters that sound alike (m/n, b/p/d, e/i, s/z, c/k, ...): the wrong letter wins
  the frame, the right one is the runner-up a little below it, so an LM can fix it;
- ambiguous frames where the right letter still wins but a confusable one is close behind;
- deletions (the letter never wins a frame, it only shows up as a runner-up under the blank);
- insertions (a spurious letter spike, with the blank close behind);
- double letters whose separating blank is too weak, so they merge;
- weak word delimiters, so greedy decoding glues words together;
- noisy frames with a flat posterior (many candidate tokens).

Error rates vary per utterance (some "speakers" are harder), and everything is drawn from one seeded
generator, so the same arguments give the same emissions. The output are raw logits (not normalized),
like a model's; decoders apply their own log-softmax.

The emissions are cached in ``bench/.cache/emissions-<key>.npz`` where the key hashes the text file's
content, the generator version and the parameters.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bump when the generator changes, so cached emissions are rebuilt.
GENERATOR_VERSION = 4

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# pyctcdecode's conventions: "" is the CTC blank (any position), " " the word delimiter.
LABELS: list[str] = ["", " ", "'", *LETTERS]
BLANK = 0
SPACE = 1
INDEX = {c: i for i, c in enumerate(LABELS)}

# Letters an acoustic model mixes up, with relative weights.
CONFUSIONS: dict[str, dict[str, float]] = {
    "a": {"e": 3, "o": 1, "u": 1},
    "b": {"p": 3, "d": 2, "v": 1},
    "c": {"k": 3, "s": 2, "g": 1},
    "d": {"t": 3, "b": 2, "p": 1},
    "e": {"i": 3, "a": 2, "y": 1},
    "f": {"v": 3, "s": 1},
    "g": {"k": 3, "c": 1, "j": 1},
    "h": {"f": 1},
    "i": {"e": 3, "y": 2},
    "j": {"g": 3, "y": 1},
    "k": {"c": 3, "g": 2, "q": 1},
    "l": {"r": 3, "n": 1},
    "m": {"n": 4},
    "n": {"m": 4, "l": 1},
    "o": {"u": 3, "a": 2},
    "p": {"b": 3, "t": 1},
    "q": {"k": 3},
    "r": {"l": 3, "w": 1},
    "s": {"z": 3, "c": 2, "f": 1},
    "t": {"d": 3, "p": 1},
    "u": {"o": 3, "a": 1},
    "v": {"f": 3, "b": 2},
    "w": {"v": 2, "u": 1},
    "x": {"s": 2, "k": 2},
    "y": {"i": 3, "e": 1},
    "z": {"s": 3},
    "'": {"s": 1},
}


@dataclass(frozen=True)
class SimParams:
    """Per-event probabilities of the simulated acoustic model (scaled per utterance by a difficulty)."""

    p_sub: float = 0.025  # a letter loses its frames to a confusable one
    p_amb: float = 0.12  # the letter wins, a confusable one is close behind
    p_del: float = 0.01  # the letter never wins a frame
    p_ins: float = 0.007  # a spurious letter spike after a character
    p_merge: float = 0.25  # a double letter's separating blank loses
    p_space_weak: float = 0.04  # the word delimiter loses to the blank
    p_noise: float = 0.025  # a frame with a flat posterior
    frames_per_second: int = 50


@dataclass
class Emissions:
    """Simulated emissions: raw logits per utterance and their reference texts."""

    labels: list[str]
    logits: list[np.ndarray]  # each (frames, len(labels)), float32
    references: list[str]
    path: Path | None = None

    @property
    def total_frames(self) -> int:
        return sum(x.shape[0] for x in self.logits)

    def save(self, path: Path) -> None:
        offsets = np.cumsum([0] + [x.shape[0] for x in self.logits]).astype(np.int64)
        data = np.concatenate(self.logits, axis=0) if self.logits else np.zeros((0, len(self.labels)))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            logits=data.astype(np.float32),
            offsets=offsets,
            references=np.array(self.references, dtype=str),
            labels=np.array(self.labels, dtype=str),
        )
        tmp.replace(path)
        self.path = path

    @classmethod
    def load(cls, path: Path) -> Emissions:
        with np.load(path, allow_pickle=False) as z:
            data = z["logits"]
            offsets = z["offsets"]
            refs = [str(s) for s in z["references"]]
            labels = [str(s) for s in z["labels"]]
        logits = [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        return cls(labels=labels, logits=logits, references=refs, path=path)


def normalize_sentence(line: str) -> str | None:
    """Lower-case a corpus line and keep it only if it spells out with the character vocabulary."""
    s = line.strip().lower()
    s = s.replace("\u2019", "'")
    s = re.sub(r"[^a-z' ]+", " ", s) if not re.search(r"\d", s) else ""
    words = [w.strip("'") for w in s.split()]
    words = [w for w in words if w]
    if len(words) < 3:
        return None
    return " ".join(words)


def read_sentences(path: Path) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = normalize_sentence(line)
            if s is not None:
                out.append(s)
    if not out:
        raise ValueError(f"{path}: no usable sentences (expected English text, one sentence a line)")
    return out


class _Synth:
    """Builds the frames of one utterance."""

    def __init__(self, rng: np.random.Generator, params: SimParams, difficulty: float) -> None:
        self.rng = rng
        self.p = params
        self.k = difficulty
        self.rows: list[np.ndarray] = []
        self.vocab = len(LABELS)

    # --- frame primitives -------------------------------------------------------------------------------
    def frame(self, top: int, runner: int | None = None, gap: float | None = None) -> None:
        rng = self.rng
        if rng.random() < self.p.p_noise * self.k:
            # A flat, noisy frame: the top label still leads, but only slightly.
            row = rng.normal(0.0, 1.6, self.vocab)
            row[top] = row.max() + rng.uniform(0.3, 2.5)
            if runner is not None and gap is not None:
                row[runner] = row[top] - max(gap, 0.1)
        else:
            row = rng.normal(0.0, 1.0, self.vocab)
            row[top] = 13.0 + rng.normal(0.0, 1.0)
            if runner is not None and gap is not None:
                row[runner] = row[top] - gap
        self.rows.append(row)

    def blanks(self, n: int, hint: int | None = None) -> None:
        """n blank frames; the first one may carry a faint trace of the previous character."""
        for i in range(n):
            if hint is not None and i == 0:
                self.frame(BLANK, hint, self.rng.uniform(3.0, 9.0))
            else:
                self.frame(BLANK)

    def spike(self, label: int, runner: int | None = None, gap: float | None = None) -> None:
        u = self.rng.random()
        length = 1 if u < 0.62 else (2 if u < 0.9 else 3)
        for _ in range(length):
            if runner is None:
                # the blank is usually the runner-up on a spike frame
                self.frame(label, BLANK, self.rng.uniform(2.5, 9.0))
            else:
                self.frame(label, runner, gap)

    def confusable(self, ch: str) -> int:
        options = CONFUSIONS.get(ch)
        if not options:
            return INDEX[self.rng.choice(list(LETTERS))]
        keys = list(options)
        w = np.array([options[c] for c in keys], dtype=float)
        return INDEX[keys[int(self.rng.choice(len(keys), p=w / w.sum()))]]

    def gap_blanks(self) -> int:
        # blanks between the characters of a word: mean ~2
        return int(self.rng.geometric(0.42)) - 1 + (1 if self.rng.random() < 0.7 else 0)

    # --- characters --------------------------------------------------------------------------------------
    def char(self, ch: str, next_ch: str | None) -> None:
        rng, p, k = self.rng, self.p, self.k
        idx = INDEX[ch]
        if ch == " ":
            if rng.random() < p.p_space_weak * k:
                self.frame(BLANK, SPACE, rng.uniform(0.1, 5.5))
            else:
                self.spike(SPACE)
            self.blanks(int(rng.integers(0, 3)) + (int(rng.integers(2, 12)) if rng.random() < 0.15 else 0))
            return
        u = rng.random()
        if u < p.p_del * k:
            # never wins a frame: a runner-up under the blank
            self.frame(BLANK, idx, rng.uniform(0.3, 6.5))
        elif u < (p.p_del + p.p_sub) * k:
            self.spike(self.confusable(ch), idx, rng.uniform(0.2, 7.0))
        elif u < (p.p_del + p.p_sub + p.p_amb) * k:
            self.spike(idx, self.confusable(ch), rng.uniform(0.5, 4.5))
        else:
            self.spike(idx)
        if rng.random() < p.p_ins * k:
            self.blanks(int(rng.integers(0, 2)))
            self.frame(self.confusable(ch), BLANK, rng.uniform(0.2, 2.5))
        if next_ch == ch:
            # a double letter needs a blank in between; a weak one lets the two merge
            if rng.random() < p.p_merge * k:
                self.frame(idx, BLANK, rng.uniform(0.2, 2.0))
            else:
                self.frame(BLANK, idx, rng.uniform(0.5, 3.0))
                self.blanks(self.gap_blanks())
        else:
            self.blanks(self.gap_blanks(), hint=idx)

    def utterance(self, text: str) -> np.ndarray:
        rng = self.rng
        self.blanks(int(rng.integers(5, 40)))
        for i, ch in enumerate(text):
            self.char(ch, text[i + 1] if i + 1 < len(text) else None)
        self.blanks(int(rng.integers(5, 40)))
        return np.asarray(self.rows, dtype=np.float32)


def generate(
    sentences: list[str],
    n_utterances: int,
    seed: int = 0,
    mean_frames: int = 725,
    params: SimParams | None = None,
) -> Emissions:
    """Simulate ``n_utterances`` utterances of ~``mean_frames`` frames from the given sentences."""
    params = params or SimParams()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sentences))
    pos = 0
    logits: list[np.ndarray] = []
    refs: list[str] = []
    frames_per_char = 3.75  # measured average of the simulation, silences excluded

    def estimate(ws: list[str]) -> float:
        return len(" ".join(ws)) * frames_per_char + 45.0

    for _ in range(n_utterances):
        target = float(np.clip(rng.normal(mean_frames, 0.2 * mean_frames), 0.4 * mean_frames, 1.7 * mean_frames))
        words: list[str] = []
        while True:
            if pos >= len(order):
                order = rng.permutation(len(sentences))
                pos = 0
            candidate = words + sentences[order[pos]].split()
            if words and abs(estimate(candidate) - target) > abs(estimate(words) - target):
                break
            words = candidate
            pos += 1
            if estimate(words) >= target:
                break
        text = " ".join(words)
        difficulty = float(np.exp(rng.normal(0.0, 0.45)))
        synth = _Synth(rng, params, difficulty)
        logits.append(synth.utterance(text))
        refs.append(text)
    return Emissions(labels=list(LABELS), logits=logits, references=refs)


def cache_key(text_path: Path, n_utterances: int, seed: int, mean_frames: int, params: SimParams) -> str:
    h = hashlib.sha256()
    h.update(Path(text_path).read_bytes())
    h.update(
        json.dumps(
            {
                "v": GENERATOR_VERSION,
                "n": n_utterances,
                "seed": seed,
                "mean_frames": mean_frames,
                "params": params.__dict__,
                "labels": LABELS,
            },
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()[:16]


def load_or_generate(
    text_path: Path,
    n_utterances: int,
    cache_dir: Path,
    seed: int = 0,
    mean_frames: int = 725,
    params: SimParams | None = None,
) -> Emissions:
    """Emissions for ``n_utterances`` sentences-groups of ``text_path``, from the cache when present."""
    params = params or SimParams()
    key = cache_key(text_path, n_utterances, seed, mean_frames, params)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"emissions-{key}.npz"
    if path.exists():
        return Emissions.load(path)
    em = generate(read_sentences(text_path), n_utterances, seed=seed, mean_frames=mean_frames, params=params)
    em.save(path)
    return em


def greedy_decode(logits: np.ndarray, labels: list[str]) -> str:
    """Best path: argmax per frame, collapse repeats, drop blanks."""
    if logits.shape[0] == 0:
        return ""
    best = logits.argmax(axis=1)
    keep = np.ones(best.shape[0], dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    out = "".join(labels[i] for i in best[keep])
    return " ".join(out.split())


def pad_vocabulary(em: Emissions, size: int, cache_dir: Path, seed: int) -> Emissions:
    """The same utterances over ``size`` labels: the characters, then multi-letter pieces ("aa", "ab", ...)
    whose logits are N(0, 1) noise like the losing characters' (a piece almost never wins a frame), so that
    the vocabulary's cost shows with the same texts."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = (a + b for a in letters for b in letters)
    pieces3 = (a + b + c for a in letters for b in letters for c in letters)
    have = set(em.labels)
    extra: list[str] = []
    for p in (*pieces, *pieces3):
        if len(em.labels) + len(extra) >= size:
            break
        if p not in have:
            extra.append(p)
    path = cache_dir / f"{em.path.stem if em.path else 'emissions'}-vocab{size}-seed{seed}.npz"
    if path.exists():
        return Emissions.load(path)
    rng = np.random.default_rng(seed + 1)
    noise = [rng.normal(0.0, 1.0, (x.shape[0], len(extra))).astype(np.float32) for x in em.logits]
    logits = [np.concatenate([x, z], axis=1) for x, z in zip(em.logits, noise)]
    out = Emissions(labels=em.labels + extra, logits=logits, references=em.references)
    out.save(path)
    return out
