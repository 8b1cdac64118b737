"""Reading LM training text into integer token streams.

Each input line is one sentence. Words are mapped to integer ids; the corpus becomes one flat array
``<s> w w w </s> <s> w ... </s>`` (see :class:`Corpus`). Files are validated as they are read: a missing,
empty, binary or non-UTF-8 file raises :class:`~w2vlm.errors.LanguageModelError` naming the file.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from w2vlm import _lmbuild
from w2vlm.errors import LanguageModelError
from w2vlm.lm.normalize import TextNormalizer

__all__ = ["BOS", "EOS", "UNK", "Corpus", "Vocabulary", "read_corpus"]

logger = logging.getLogger("w2vlm.lm.corpus")

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
_CHUNK_CHARS = 8 << 20

ProgressFn = Callable[[int, int], None]


@dataclass
class Vocabulary:
    """Word list; ids 0, 1, 2 are ``<unk>``, ``<s>``, ``</s>``, then words by decreasing count."""

    words: list[str]
    counts: np.ndarray  # raw occurrence count per id (int64)

    def __len__(self) -> int:
        return len(self.words)

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}


@dataclass
class Corpus:
    """A token stream: ``tokens[i]`` is a word id; every sentence is ``<s> ... </s>``.

    :attr:`sentence_id` numbers the sentence that each position belongs to.
    """

    tokens: np.ndarray  # int32
    vocab: Vocabulary
    num_sentences: int
    num_words: int  # running words, without <s> and </s>
    num_unk: int  # running words mapped to <unk>

    @property
    def sentence_id(self) -> np.ndarray:
        """int32 sentence number of every position (computed on demand: 4 bytes a token)."""
        return (np.cumsum(self.tokens == BOS_ID, dtype=np.int32) - 1).astype(np.int32, copy=False)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict", newline=None)
    return open(path, encoding="utf-8", errors="strict", newline=None)


def _check_file(path: Path) -> int:
    if not path.exists():
        raise LanguageModelError(f"text file {path}: does not exist")
    if not path.is_file():
        raise LanguageModelError(f"text file {path}: is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise LanguageModelError(f"text file {path}: is empty (0 bytes); expected UTF-8 text, one sentence a line")
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as e:
        raise LanguageModelError(f"text file {path}: cannot be read ({e})") from None
    if path.suffix == ".gz":
        if not head.startswith(b"\x1f\x8b"):
            raise LanguageModelError(f"text file {path}: has a .gz suffix but is not gzip data")
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(65536)
        except (OSError, EOFError) as e:
            raise LanguageModelError(f"text file {path}: corrupt gzip data ({e})") from None
    if b"\x00" in head:
        raise LanguageModelError(f"text file {path}: contains NUL bytes, looks like binary data; expected UTF-8 text")
    return size


def _iter_chunks(path: Path, progress: ProgressFn | None, done_before: int, total: int) -> Iterator[str]:
    """Yield pieces of the file's text, each ending at a line break."""
    try:
        with _open_text(path) as f:
            raw = f.buffer if hasattr(f, "buffer") else None
            while True:
                lines = f.readlines(_CHUNK_CHARS)
                if not lines:
                    break
                chunk = "".join(lines)
                if "\x00" in chunk:
                    raise LanguageModelError(
                        f"text file {path}: contains NUL bytes, looks like binary data; expected UTF-8 text"
                    )
                yield chunk
                if progress is not None and raw is not None:
                    try:
                        pos = raw.tell() if path.suffix != ".gz" else raw.fileobj.tell()  # type: ignore[attr-defined]
                    except (OSError, AttributeError, ValueError):
                        pos = 0
                    progress(done_before + min(pos, total - done_before), total)
    except UnicodeDecodeError as e:
        raise LanguageModelError(
            f"text file {path}: not valid UTF-8 ({e.reason} near byte {e.start} of a chunk); expected UTF-8"
        ) from None
    except (OSError, EOFError) as e:
        raise LanguageModelError(f"text file {path}: cannot be read ({e})") from None


def _tokenize(text: str, word_index: _lmbuild.WordIndex) -> tuple[np.ndarray, np.ndarray]:
    """Word ids (new words get the next ids; raw ids, the vocabulary is renumbered by count afterwards) and the
    word count of every non-empty line of ``text``: ``str.split()``'s words, natively."""
    if not text.isascii():
        # Unicode whitespace (U+00A0, U+2028, ...) splits words as str.split() does; the native splitter knows
        # only the ASCII kind, so such text is pre-split here
        text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    data = text.encode("utf-8")
    ids = np.empty(len(data) // 2 + 1, dtype=np.int32)
    lens = np.empty(data.count(b"\n") + 1, dtype=np.int64)
    n, m = word_index.tokenize(data, ids, lens)
    return ids[:n].copy(), lens[:m].copy()


def read_corpus(
    paths: Iterable[str | os.PathLike[str]],
    normalizer: TextNormalizer | None = None,
    vocab_limit: int | None = None,
    progress: ProgressFn | None = None,
    vocab: Vocabulary | None = None,
) -> Corpus:
    """Read text files (plain or ``.gz``, UTF-8, one sentence a line) into a :class:`Corpus`.

    Args:
        paths: the text files.
        normalizer: applied to the text before splitting into words; ``None`` keeps the text as it is
            (split on whitespace).
        vocab_limit: keep only the this many most frequent words (ties broken alphabetically); all other
            words become ``<unk>``.
        progress: called with (bytes done, bytes total) while reading.
        vocab: a fixed vocabulary (e.g. a model's, to read held-out text); words outside it become
            ``<unk>``. ``vocab_limit`` is ignored then.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise LanguageModelError("text files: expected at least one file, got none")
    if vocab_limit is not None and vocab_limit < 1:
        raise LanguageModelError(f"vocab_limit: expected a positive number of words, got {vocab_limit}")
    sizes = [_check_file(p) for p in files]
    total = sum(sizes)

    word_index = _lmbuild.WordIndex([UNK, BOS, EOS])
    id_chunks: list[np.ndarray] = []
    len_chunks: list[np.ndarray] = []
    done = 0
    for path, size in zip(files, sizes, strict=True):
        file_words = 0
        nonblank = False
        for chunk in _iter_chunks(path, progress, done, total):
            if not nonblank and chunk.strip():
                nonblank = True
            text = normalizer.clean(chunk) if normalizer is not None else chunk
            arr, lens = _tokenize(text, word_index)
            if len(arr) == 0:
                continue
            if normalizer is None:
                # Sentence markers written into the text are dropped (each line gets its own).
                marker = (arr == BOS_ID) | (arr == EOS_ID)
                if marker.any():
                    sent = np.repeat(np.arange(len(lens)), lens)
                    keep = ~marker
                    arr = arr[keep]
                    lens = np.bincount(sent[keep], minlength=len(lens)).astype(np.int64)
                    lens = lens[lens > 0]
            id_chunks.append(arr)
            len_chunks.append(lens)
            file_words += len(arr)
        done += size
        if progress is not None:
            progress(done, total)
        if not nonblank:
            raise LanguageModelError(f"text file {path}: contains only whitespace; expected sentences")
        if file_words == 0:
            allowed = "".join(sorted(normalizer.allowed)) if normalizer is not None else ""
            raise LanguageModelError(
                f"text file {path}: no words left after normalization to the characters {allowed!r}; "
                "expected text in the model's alphabet (or pass --no-normalize / other allowed characters)"
            )
        logger.info("read %s: %d words", path, file_words)

    ids = np.concatenate(id_chunks) if id_chunks else np.zeros(0, np.int32)
    lens = np.concatenate(len_chunks) if len_chunks else np.zeros(0, np.int64)
    del id_chunks, len_chunks  # one copy of the words, not two
    raw_words = [w.decode("utf-8") for w in word_index.words()]
    n_types = len(raw_words)
    raw_counts = np.bincount(ids, minlength=n_types).astype(np.int64)

    if vocab is not None:
        index = vocab.index()
        remap = np.asarray([index.get(w, UNK_ID) for w in raw_words], dtype=np.int32)
        remap[BOS_ID], remap[EOS_ID] = BOS_ID, EOS_ID
        np.take(remap, ids, out=ids)
        return _assemble(ids, lens, list(vocab.words))

    # Renumber: specials first, then words by decreasing count (ties alphabetical), cut at vocab_limit.
    word_ids = np.arange(3, n_types)
    order = sorted(word_ids.tolist(), key=lambda i: (-int(raw_counts[i]), raw_words[i]))
    if vocab_limit is not None:
        order = order[:vocab_limit]
    remap = np.full(n_types, UNK_ID, dtype=np.int32)
    remap[BOS_ID], remap[EOS_ID] = BOS_ID, EOS_ID
    remap[np.asarray(order, dtype=np.int64)] = np.arange(3, 3 + len(order), dtype=np.int32)
    words = [UNK, BOS, EOS] + [raw_words[i] for i in order]
    np.take(remap, ids, out=ids)  # in place: the renumbered ids replace the raw ones
    return _assemble(ids, lens, words)


def _assemble(ids: np.ndarray, lens: np.ndarray, words: list[str]) -> Corpus:
    num_unk = int(np.count_nonzero(ids == UNK_ID))

    # Build the stream <s> ids </s> per sentence.
    n_sent = len(lens)
    sent_len = lens + 2
    starts = np.zeros(n_sent, dtype=np.int64)
    np.cumsum(sent_len[:-1], out=starts[1:])
    total_len = int(sent_len.sum())
    tokens = np.empty(total_len, dtype=np.int32)
    is_word = np.ones(total_len, dtype=bool)
    is_word[starts] = False
    is_word[starts + lens + 1] = False
    tokens[starts] = BOS_ID
    tokens[starts + lens + 1] = EOS_ID
    tokens[is_word] = ids
    counts = np.bincount(tokens, minlength=len(words)).astype(np.int64)
    return Corpus(
        tokens=tokens,
        vocab=Vocabulary(words=words, counts=counts),
        num_sentences=n_sent,
        num_words=len(ids),
        num_unk=num_unk,
    )
