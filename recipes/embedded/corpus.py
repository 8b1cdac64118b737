"""Build the text corpus of the embedded model from freely licensed Debian packages.

Sources (fetched with ``apt-get download`` and unpacked with ``dpkg -x``; nothing is installed):

* ``r-cran-janeaustenr``: the six completed novels of Jane Austen (public-domain texts, package MIT).
* ``wordnet-base``: the glosses and example sentences of WordNet 3.0 (WordNet 3.0 licence, permissive).

Everything is normalized to the model vocabulary (lowercase ``a-z``, apostrophe, space; numbers spelled
out), split into sentences, and written as deterministic disjoint splits into ``OUT`` (default
``.data/corpus``):

* ``lm_train.txt``   text for the n-gram LM (everything except the dev/test sentences)
* ``speech_train.txt`` sentences to synthesize for acoustic training (never dev/test sentences)
* ``dev.txt`` / ``test.txt`` held-out Austen sentences, absent from ``lm_train.txt`` and ``speech_train.txt``

Usage: ``python recipes/embedded/corpus.py [--out .data/corpus] [--debs DIR]``
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import struct
import subprocess
import sys
import unicodedata
import zlib
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("r-cran-janeaustenr", "wordnet-base")
AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data"
WORDNET_DIR = "usr/share/wordnet"

# ---------------------------------------------------------------- fetching


def fetch_packages(debs: Path, packages: Iterable[str] = PACKAGES) -> Path:
    """``apt-get download`` the packages (if their .deb is missing) and ``dpkg -x`` them into ``debs/root``;
    return that root."""
    debs.mkdir(parents=True, exist_ok=True)
    root = debs / "root"
    for pkg in packages:
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
            found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            sys.exit(f"apt-get download {pkg} produced no .deb in {debs}")
        subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
    return root


# ---------------------------------------------------------------- R lazy-load database reader


class _XdrReader:
    """Just enough of R's XDR serialization format to read character vectors."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def raw(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def header(self) -> None:
        if self.raw(2) != b"X\n":
            raise ValueError("not an XDR R serialization stream (expected 'X\\n')")
        version = self.int()
        self.int()  # R version that wrote it
        self.int()  # minimal R version to read it
        if version == 3:
            n = self.int()
            self.raw(n)  # native encoding name

    def strings(self) -> list[str]:
        flags = self.int()
        sexptype = flags & 0xFF
        if sexptype != 16:  # STRSXP
            raise ValueError(f"expected a character vector (STRSXP=16), got SEXP type {sexptype}")
        n = self.int()
        out: list[str] = []
        for _ in range(n):
            cflags = self.int()
            if cflags & 0xFF != 9:  # CHARSXP
                raise ValueError(f"expected CHARSXP (9) in character vector, got {cflags & 0xFF}")
            length = self.int()
            out.append("" if length < 0 else self.raw(length).decode("utf-8", errors="replace"))
        return out


def read_austen(data_dir: Path) -> dict[str, list[str]]:
    """Return {novel name: lines} from janeaustenr's Rdata.rdb/.rdx lazy-load database."""
    index = gzip.decompress((data_dir / "Rdata.rdx").read_bytes())
    db = (data_dir / "Rdata.rdb").read_bytes()
    # The index is a list(variables = named list of c(offset, length), ...). Rather than decoding the
    # full list structure, pull the (offset, length) int pairs and the names in order.
    pairs = [
        struct.unpack_from(">ii", index, m.end()) for m in re.finditer(rb"\x00\x00\x00\x0d\x00\x00\x00\x02", index)
    ]
    names = [
        m.group(1).decode() for m in re.finditer(rb"\x00\x04\x00\x09\x00\x00\x00.([a-z]+)", index, flags=re.DOTALL)
    ]
    names = [n for n in names if n not in ("names", "variables", "references", "compressed")]
    if len(names) != len(pairs) or not names:
        raise ValueError(f"{data_dir}/Rdata.rdx: {len(names)} names vs {len(pairs)} offsets")
    novels: dict[str, list[str]] = {}
    for name, (offset, length) in zip(names, pairs, strict=True):
        blob = db[offset : offset + length]
        payload = zlib.decompress(blob[4:])
        reader = _XdrReader(payload)
        reader.header()
        novels[name] = reader.strings()
    return novels


# ---------------------------------------------------------------- normalization

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORD = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def spell_number(n: int) -> str:
    """Spell out 0 <= n < 10**9 in English words."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + spell_number(rest))
    for size, word in ((10**6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            tail = "" if rest == 0 else (" and " if rest < 100 else " ") + spell_number(rest)
            return spell_number(n // size) + " " + word + tail
    raise ValueError(n)


def spell_ordinal(n: int) -> str:
    words = spell_number(n).split()
    last = words[-1]
    if last in _ORD:
        words[-1] = _ORD[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


_ABBREV = {
    "mr": "mister",
    "mrs": "missus",
    "dr": "doctor",
    "st": "saint",
    "messrs": "messieurs",
    "no": "number",
    "etc": "et cetera",
    "e.g": "for example",
    "i.e": "that is",
    "vs": "versus",
}


def _number_sub(m: re.Match[str]) -> str:
    digits = m.group(1).replace(",", "")
    suffix = (m.group(2) or "").lower()
    if len(digits) > 9:
        return " "
    n = int(digits)
    if suffix in ("st", "nd", "rd", "th"):
        return " " + spell_ordinal(n) + " "
    if 1100 <= n <= 1999 and n % 100 != 0 and "," not in m.group(1):  # years read as "eighteen eleven"
        hi, lo = divmod(n, 100)
        return " " + spell_number(hi) + " " + (spell_number(lo) if lo >= 10 else "o " + spell_number(lo)) + " "
    return " " + spell_number(n) + " "


def normalize(text: str) -> str:
    """Map text to the model vocabulary: lowercase a-z, apostrophe and single spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = re.sub(r"£\s*([\d,]+)", r"\1 pounds", text)
    text = text.replace("&", " and ").replace("%", " percent ").replace("£", " pounds ")
    text = re.sub(r"(\d[\d,]*\d|\d)(st|nd|rd|th|ST|ND|RD|TH)?\b", _number_sub, text)
    text = text.lower()
    text = re.sub(r"\b(mr|mrs|dr|st|messrs|etc|vs|e\.g|i\.e)\.", lambda m: _ABBREV[m.group(1)], text)
    text = re.sub(r"[^a-z']+", " ", text)
    text = re.sub(r"\b(mr|mrs|dr)\b", lambda m: _ABBREV[m.group(1)], text)
    # apostrophes only inside words (it's, o'clock); quote marks around words are dropped
    text = re.sub(r"(?<![a-z])'+|'+(?![a-z])", " ", text)
    return " ".join(text.split())


# ---------------------------------------------------------------- sentence splitting

_ABBR_DOT = re.compile(r"\b(Mr|Mrs|Dr|St|Messrs|Col|Capt|Gen|Sir|Rev)\.", re.IGNORECASE)
_SENT_END = re.compile(r"(?<=[.!?])[\"'\u201d\u2019_)]*\s+(?=[\"'\u201c\u2018_(]*[A-Z])")


def split_sentences(paragraph: str) -> list[str]:
    protected = _ABBR_DOT.sub(lambda m: m.group(1) + "\x00", paragraph)
    parts = _SENT_END.split(protected)
    # very long sentences are split further at ; and :
    out: list[str] = []
    for part in parts:
        part = part.replace("\x00", ".")
        if len(part) > 300:
            out.extend(p for p in re.split(r"(?<=[;:])\s+", part) if p.strip())
        else:
            out.append(part)
    return out


def austen_sentences(novels: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Return (novel, raw sentence) pairs, in book order."""
    result: list[tuple[str, str]] = []
    for name in sorted(novels):
        para: list[str] = []
        paragraphs: list[str] = []
        for line in [*novels[name], ""]:
            if not line.strip():
                if para:
                    paragraphs.append(" ".join(para))
                para = []
            else:
                para.append(line.strip())
        for p in paragraphs:
            if re.fullmatch(r"(CHAPTER|VOLUME|Chapter)\s+[\dIVXLC]+\.?|THE END|[A-Z\s]+", p.strip()):
                continue
            for s in split_sentences(p):
                result.append((name, s))
    return result


def wordnet_texts(wn_dir: Path) -> tuple[list[str], list[str]]:
    """Return (glosses, example sentences) from WordNet's data.* files."""
    glosses: list[str] = []
    examples: list[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(wn_dir / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue
                gloss = line.split(" | ", 1)[1].strip()
                for piece in re.split(r';\s*(?=")|;\s+', gloss):
                    piece = piece.strip()
                    if piece.startswith('"'):
                        ex = piece.strip('"').strip()
                        if ex:
                            examples.append(ex)
                    elif piece:
                        glosses.append(piece)
    return glosses, examples


# ---------------------------------------------------------------- splits


def _bucket(text: str) -> int:
    """A stable pseudo-random number in [0, 10000) for a normalized sentence."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:4], "big") % 10000


def build(out: Path, root: Path, n_dev: int, n_test: int, min_words: int, max_words: int) -> dict:
    novels = read_austen(root / AUSTEN_DATA)
    raw = austen_sentences(novels)
    glosses, examples = wordnet_texts(root / WORDNET_DIR)

    austen = [normalize(s) for _, s in raw]
    austen = [s for s in austen if s]
    # held-out candidates: Austen sentences of a speakable length, chosen by hash (deterministic);
    # dev/test are drawn from a 6% slice, everything in that slice is kept out of LM and speech text.
    heldout_pool = sorted(
        {s for s in austen if _bucket(s) < 600 and min_words <= len(s.split()) <= max_words},
        key=lambda s: (_bucket(s), s),
    )
    dev = heldout_pool[0::2][:n_dev]
    test = heldout_pool[1::2][:n_test]
    held = set(dev) | set(test)
    excluded = {s for s in austen if _bucket(s) < 600}  # whole slice, also the unused rest

    wn_gloss = [normalize(g) for g in glosses]
    wn_ex = [normalize(e) for e in examples]
    lm_austen = [s for s in austen if s not in excluded]
    lm_glosses = [g for g in wn_gloss if g and g not in held]
    lm_examples = [e for e in wn_ex if e and e not in held]
    lm_lines = lm_austen + lm_glosses + lm_examples

    def speakable(s: str) -> bool:
        return min_words <= len(s.split()) <= max_words and s not in held

    speech = sorted({s for s in austen if s not in excluded and speakable(s)})
    speech += sorted({e for e in wn_ex if speakable(e)} - set(speech))
    speech += sorted({g for g in wn_gloss if speakable(g) and len(g.split()) >= 4} - set(speech))
    # deterministic shuffle so that a prefix of the file is a mix of all sources
    speech.sort(key=lambda s: hashlib.sha1(("speech" + s).encode()).digest())

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "lm_train.txt": lm_lines,
        # the same LM text by source (lm_train.txt is their concatenation)
        "lm_austen.txt": lm_austen,
        "lm_wordnet_glosses.txt": lm_glosses,
        "lm_wordnet_examples.txt": lm_examples,
        "speech_train.txt": speech,
        "dev.txt": dev,
        "test.txt": test,
    }
    stats: dict = {}
    for name, lines in files.items():
        tmp = out / (name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(out / name)
        stats[name] = {"lines": len(lines), "words": sum(len(x.split()) for x in lines)}
    overlap = (set(dev) | set(test)) & (set(lm_lines) | set(speech))
    if overlap:
        raise RuntimeError(f"held-out sentences leaked into training text: {sorted(overlap)[:3]}")
    stats["sources"] = {
        "austen_sentences": len(austen),
        "wordnet_glosses": len(wn_gloss),
        "wordnet_examples": len(wn_ex),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".data/corpus"))
    ap.add_argument("--debs", type=Path, default=Path(".data/debs"), help="where .deb files are kept")
    ap.add_argument("--n-dev", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--min-words", type=int, default=4)
    ap.add_argument("--max-words", type=int, default=24)
    args = ap.parse_args(argv)
    root = fetch_packages(args.debs)
    stats = build(args.out, root, args.n_dev, args.n_test, args.min_words, args.max_words)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
