"""CTC alphabets: the labels of the model's output columns, normalised the way pyctcdecode does it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Sequence

from w2vlm.errors import AlphabetError

logger = logging.getLogger("w2vlm.decoder")

BPE_TOKEN = "▁"
UNK_TOKEN = "⁇"
UNK_BPE_TOKEN = "▁⁇▁"

_SPECIAL_TOKEN = re.compile(r"^[<\[].+[>\]]$")
#: a CTC vocabulary's pad token (the blank) and unknown token, as transformers' tokenizers spell them
BLANK_TOKEN_RE = re.compile(r"^[<\[]pad[>\]]$", flags=re.IGNORECASE)
UNK_TOKEN_RE = re.compile(r"^[<\[]unk[>\]]$", flags=re.IGNORECASE)


def _is_bpe(labels: Sequence[str]) -> bool:
    return any(s.startswith("##") or s.startswith(BPE_TOKEN) for s in labels)


def normalize_regular_labels(labels: Sequence[str]) -> list[str]:
    """Labels of a character alphabet in decoder form: "|" becomes the delimiter " ", a pad label or "_" the
    blank "" (appended when there is none), an unknown label "⁇"."""
    out = list(labels)
    if "|" in out and " " not in out:
        out[out.index("|")] = " "
    for i, label in enumerate(out):
        if BLANK_TOKEN_RE.match(label):
            out[i] = ""
    if "_" in out and "" not in out:
        out[out.index("_")] = ""
    if "" not in out:
        logger.info("CTC blank '' not found in the labels: appending it as the last column")
        out.append("")
    for i, label in enumerate(out):
        if UNK_TOKEN_RE.match(label):
            out[i] = UNK_TOKEN
    # a character vocabulary's special tokens (wav2vec2's <s> and </s>) are expected; other long labels are not
    longer = [c for c in out if len(c) > 1 and not _SPECIAL_TOKEN.match(c)]
    if longer:
        logger.warning("Found labels longer than one character in a non-BPE alphabet: %s", longer[:10])
    if " " not in out:
        logger.warning("The alphabet has no word delimiter (' ' or '|'): words cannot be separated")
    return out


def _convert_bpe_style(token: str) -> str:
    if token.startswith("##"):
        return token[2:]
    if _SPECIAL_TOKEN.match(token) or token in ("", BPE_TOKEN, UNK_BPE_TOKEN):
        return token
    return BPE_TOKEN + token


def normalize_bpe_labels(labels: Sequence[str]) -> list[str]:
    """Labels of a BPE alphabet in decoder form: "##x" pieces become "x" and other pieces "▁x", a pad label the
    blank "" (appended when there is none), an unknown label "▁⁇▁"."""
    out = list(labels)
    if any(s.startswith("##") for s in labels):
        out = [_convert_bpe_style(c) for c in out]
    for i, label in enumerate(out):
        if BLANK_TOKEN_RE.match(label):
            out[i] = ""
    if "" not in out:
        logger.info("CTC blank '' not found in the labels: appending it as the last column")
        out.append("")
    for i, label in enumerate(out):
        if UNK_TOKEN_RE.match(label):
            out[i] = UNK_BPE_TOKEN
    if UNK_BPE_TOKEN not in out:
        logger.warning("BPE alphabet has no unknown token %s", UNK_BPE_TOKEN)
    return out


def _verify(labels: Sequence[str], is_bpe: bool) -> None:
    if not isinstance(labels, Sequence) or isinstance(labels, str):
        raise AlphabetError(f"labels must be a list of strings, got {type(labels).__name__}")
    bad = [x for x in labels if not isinstance(x, str)]
    if bad:
        raise AlphabetError(f"labels must be strings, got {type(bad[0]).__name__} ({bad[0]!r})")
    if len(labels) == 0:
        raise AlphabetError("labels are empty: the alphabet needs one label per output column of the model")
    seen: dict[str, int] = {}
    dups = []
    for i, x in enumerate(labels):
        if x in seen:
            dups.append(f"{x!r} at {seen[x]} and {i}")
        else:
            seen[x] = i
    if dups:
        raise AlphabetError("Alphabet contains duplicate entries: " + ", ".join(dups[:5]))
    if is_bpe and any(" " in s for s in labels):
        raise AlphabetError("Space token ' ' found in the labels although they look like BPE ('▁' or '##').")


class Alphabet:
    """The labels of a CTC model's output columns, in decoder form.

    ``""`` is the CTC blank, ``" "`` the word delimiter, ``"⁇"`` the unknown token; BPE alphabets mark word
    starts with ``"▁"``. Use :meth:`build_alphabet` to normalise labels as they come from a tokenizer.
    """

    def __init__(self, labels: list[str], is_bpe: bool) -> None:
        self._labels = list(labels)
        self._is_bpe = bool(is_bpe)

    @property
    def is_bpe(self) -> bool:
        return self._is_bpe

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:
        return f"Alphabet(labels={self._labels!r}, is_bpe={self._is_bpe})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and other._labels == self._labels and other._is_bpe == self._is_bpe

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def build_alphabet(cls, labels: Sequence[str]) -> Alphabet:
        """Normalise raw labels (e.g. a tokenizer vocabulary in id order) into an alphabet."""
        _verify(labels, False)
        is_bpe = _is_bpe(labels)
        _verify(labels, is_bpe)
        normalized = normalize_bpe_labels(labels) if is_bpe else normalize_regular_labels(labels)
        _verify(normalized, is_bpe)
        return cls(normalized, is_bpe)

    def dumps(self) -> str:
        """Serialise as the ``alphabet.json`` of the hub layout."""
        return json.dumps({"labels": self._labels, "is_bpe": self._is_bpe})

    @classmethod
    def loads(cls, s: str) -> Alphabet:
        """Parse an ``alphabet.json`` text."""
        try:
            data = json.loads(s)
        except json.JSONDecodeError as e:
            raise AlphabetError(f"alphabet.json is not valid JSON: {e}") from None
        if not isinstance(data, dict) or set(data) != {"labels", "is_bpe"}:
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise AlphabetError(f"alphabet.json must have exactly the keys 'labels' and 'is_bpe', found {found}")
        _verify(data["labels"], bool(data["is_bpe"]))
        return cls(data["labels"], data["is_bpe"])


def verify_alphabet_coverage(alphabet: Alphabet, unigrams: Collection[str]) -> None:
    """Warn when the unigrams use characters the alphabet cannot produce."""
    label_chars = set("".join(alphabet.labels).replace(BPE_TOKEN, ""))
    chars = set("".join(unigrams))
    if chars and len(chars - label_chars) / len(chars) > 0.2:
        logger.warning(
            "Unigrams and labels don't seem to agree: characters %s of the unigrams are not in the alphabet",
            "".join(sorted(chars - label_chars)[:20]),
        )
