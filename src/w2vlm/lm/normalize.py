"""Text normalization that matches a character CTC vocabulary.

A language model used with a character CTC model can only ever be asked about words the model can spell, so
the LM's training text is reduced to the model's character set: case folded the way the vocabulary is cased,
accents stripped where the bare letter is allowed, typographic apostrophes mapped to ``'``, every other
character turned into a word break, and apostrophes kept only inside words.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from w2vlm.errors import LanguageModelError

__all__ = [
    "DEFAULT_ALLOWED_CHARS",
    "TextNormalizer",
    "allowed_chars_from_file",
    "normalize_text",
]

#: The character set of the usual English character CTC vocabularies (lowercase letters and the apostrophe).
DEFAULT_ALLOWED_CHARS = "abcdefghijklmnopqrstuvwxyz'"

CaseMode = Literal["auto", "lower", "upper", "keep"]

# Tokens of CTC vocabularies that are not characters of words.
_SPECIAL_TOKENS = {
    "",
    " ",
    "|",
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "[pad]",
    "[unk]",
    "[PAD]",
    "[UNK]",
    "<PAD>",
    "<UNK>",
    "⁇",
    "<blank>",
    "<eps>",
}
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_APOSTROPHES = "\u2019\u2018\u02bc\u02bb`\u00b4\u2032"


class TextNormalizer:
    """Reusable normalizer for one allowed character set.

    Args:
        allowed_chars: characters that may appear inside words (space and newline are always word/line
            breaks). ``None`` means :data:`DEFAULT_ALLOWED_CHARS`.
        case: ``"lower"``, ``"upper"``, ``"keep"``, or ``"auto"`` (lowercase when the allowed letters are all
            lowercase, uppercase when all uppercase, unchanged when mixed).
    """

    def __init__(self, allowed_chars: str | Iterable[str] | None = None, case: CaseMode = "auto") -> None:
        chars = set(DEFAULT_ALLOWED_CHARS if allowed_chars is None else allowed_chars)
        for c in chars:
            if len(c) != 1:
                raise LanguageModelError(f"allowed_chars: expected single characters, got {c!r}")
        chars -= {" ", "\n", "\t", "\r"}
        if not chars:
            raise LanguageModelError("allowed_chars: expected at least one character, got none")
        self.allowed: frozenset[str] = frozenset(chars)
        if case == "auto":
            letters = [c for c in chars if c.lower() != c.upper()]
            if letters and all(c == c.lower() for c in letters):
                case = "lower"
            elif letters and all(c == c.upper() for c in letters):
                case = "upper"
            else:
                case = "keep"
        if case not in ("lower", "upper", "keep"):
            raise LanguageModelError(f"case: expected 'auto', 'lower', 'upper' or 'keep', got {case!r}")
        self.case: str = case
        self._keep_apostrophe = "'" in chars
        # Translations of characters that are not allowed (ordinal -> replacement), all of ASCII up front,
        # other characters as they are first seen.
        self._table: dict[int, str] = {}
        self._known: set[str] = set(chars) | {" ", "\n"}
        for o in range(128):
            c = chr(o)
            if c not in self._known:
                self._table[o] = self._translation_for(c)
                self._known.add(c)
        # An apostrophe not between two word characters (quotes, leading/trailing) is dropped: with only
        # letters/digits as word characters this is done with plain replacements, otherwise with a regex.
        self._simple_words = all(c.isalnum() for c in chars if c != "'")
        self._edge_apostrophe = re.compile(r"(?<!\w)'+|'+(?!\w)")
        # ASCII text takes a bytes path (one 256-byte translation table) when every ASCII character maps to
        # one ASCII character.
        ascii_map = []
        for o in range(128):
            c = chr(o)
            c = c.lower() if case == "lower" else c.upper() if case == "upper" else c
            r = c if c in self._known and ord(c) not in self._table else self._table.get(ord(c), c)
            ascii_map.append(r)
        self._bytes_table: bytes | None = None
        if all(len(r) == 1 and r.isascii() for r in ascii_map):
            self._bytes_table = "".join(ascii_map).encode("ascii") + bytes(range(128, 256))

    def _translation_for(self, c: str) -> str:
        if c in self.allowed:
            return c
        if c in _APOSTROPHES and self._keep_apostrophe:
            return "'"
        if c.isspace():
            return " " if c != "\n" else "\n"
        decomposed = unicodedata.normalize("NFKD", c)
        stripped = "".join(d for d in decomposed if not unicodedata.combining(d))
        if self.case == "lower":
            stripped = stripped.lower()
        elif self.case == "upper":
            stripped = stripped.upper()
        if stripped and all(d in self.allowed for d in stripped):
            return stripped
        return " "

    def clean(self, text: str) -> str:
        """The text reduced to the allowed characters, spaces and line breaks (spaces not collapsed)."""
        return self._clean(text)

    def _clean_ascii(self, text: str) -> str:
        assert self._bytes_table is not None
        data = text.encode("ascii").translate(self._bytes_table)
        if self._keep_apostrophe and b"'" in data:
            if self._simple_words:
                data = b"\n" + data + b"\n"
                while b" '" in data or b"\n'" in data:
                    data = data.replace(b" '", b" ").replace(b"\n'", b"\n")
                while b"' " in data or b"'\n" in data:
                    data = data.replace(b"' ", b" ").replace(b"'\n", b"\n")
                data = data[1:-1]
            else:
                return self._edge_apostrophe.sub("", data.decode("ascii"))
        return data.decode("ascii")

    def _clean(self, text: str) -> str:
        if self._bytes_table is not None and text.isascii():
            return self._clean_ascii(text)
        if self.case == "lower":
            text = text.lower()
        elif self.case == "upper":
            text = text.upper()
        if not text.isascii():
            new = set(_NON_ASCII.findall(text)) - self._known
            for c in new:
                self._table[ord(c)] = self._translation_for(c)
            self._known |= new
        text = text.translate(self._table)
        if self._keep_apostrophe and "'" in text:
            if self._simple_words:
                text = f"\n{text}\n"
                while " '" in text or "\n'" in text:
                    text = text.replace(" '", " ").replace("\n'", "\n")
                while "' " in text or "'\n" in text:
                    text = text.replace("' ", " ").replace("'\n", "\n")
                text = text[1:-1]
            else:
                text = self._edge_apostrophe.sub("", text)
        return text

    def __call__(self, text: str) -> str:
        """Normalize ``text`` (one or many lines). Line breaks are kept; each line's words are joined by
        single spaces, and lines that end up empty stay as empty lines."""
        return "\n".join(" ".join(line.split()) for line in self._clean(text).split("\n"))

    def split_lines(self, text: str) -> list[list[str]]:
        """The words of each non-empty line of ``text`` after normalization."""
        return [words for words in (line.split() for line in self._clean(text).split("\n")) if words]


def normalize_text(text: str, allowed_chars: str | Iterable[str] | None = None, case: CaseMode = "auto") -> str:
    """Normalize text for a character CTC vocabulary.

    Lowercases (or uppercases, following the case of ``allowed_chars``), maps accented letters to their bare
    letter when that is allowed, maps typographic apostrophes to ``'``, turns every other character that is
    not in ``allowed_chars`` into a word break, drops apostrophes that are not inside a word, and collapses
    runs of spaces. Line breaks are kept.

    >>> normalize_text("Hello, World! It’s 'quoted' — café.")
    "hello world it's quoted cafe"
    """
    return TextNormalizer(allowed_chars, case)(text)


def allowed_chars_from_file(path: str | Path) -> str:
    """The word characters of a character CTC vocabulary: a transformers ``vocab.json`` (token -> id), a
    pyctcdecode ``alphabet.json`` (``{"labels": [...]}``) or a plain text file with one label a line.

    Special tokens (padding/blank, ``<s>``, ``</s>``, ``<unk>``, the word delimiter ``|``) are left out. A model
    folder stands for its ``vocab.json`` (else its ``alphabet.json``).
    """
    p = Path(path)
    if p.is_dir():
        found = [p / name for name in ("vocab.json", "alphabet.json") if (p / name).is_file()]
        if not found:
            raise LanguageModelError(f"{p}: a folder without vocab.json or alphabet.json; expected a model folder")
        p = found[0]
    try:
        raw = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LanguageModelError(f"{p}: vocabulary file does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LanguageModelError(f"{p}: cannot read vocabulary file ({e})") from None
    labels: list[str]
    if p.suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise LanguageModelError(f"{p}: not valid JSON ({e})") from None
        if isinstance(data, dict) and "labels" in data:
            if data.get("is_bpe"):
                raise LanguageModelError(
                    f"{p}: a BPE alphabet (is_bpe: true) has no character set; expected a character alphabet"
                )
            labels = list(data["labels"])
        elif isinstance(data, dict):
            labels = list(data.keys())
        elif isinstance(data, list):
            labels = [str(x) for x in data]
        else:
            raise LanguageModelError(
                f"{p}: expected a token->id object or {{'labels': [...]}}, got {type(data).__name__}"
            )
    else:
        labels = raw.split("\n")
    chars = sorted({t for t in labels if isinstance(t, str) and t not in _SPECIAL_TOKENS and len(t) == 1})
    multi = [t for t in labels if isinstance(t, str) and t not in _SPECIAL_TOKENS and len(t) > 1]
    if multi and len(multi) > len(chars):
        raise LanguageModelError(
            f"{p}: expected a character vocabulary, got {len(multi)} multi-character tokens "
            f"(e.g. {multi[:3]!r}); word-piece vocabularies have no character set"
        )
    if not chars:
        raise LanguageModelError(f"{p}: no single-character labels found")
    return "".join(chars)
