"""The streaming ARPA reader: the same model, warnings and errors however the text arrives.

An ARPA text is read four ways: whole (``from_arpa_bytes``), from a file in blocks (``from_arpa_file``), fed to
``ArpaParser`` in chunks of 1-7 bytes (with and without its size), and gzipped through ``load_ngram``. Random
files cover what the reader must handle along the way: CRLF line ends, a missing final newline, text before
``\\data\\`` and after ``\\end\\``, blank lines, n-grams whose contexts are missing (added while reading),
duplicates, positive probabilities, missing ``<unk>``/``<s>``/``</s>``; damaged versions must fail with the same
message on every path.
"""

from __future__ import annotations

import gzip
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoder_reference import ArpaReference
from w2vlm import _core
from w2vlm.decoder import load_ngram
from w2vlm.decoder.ngram_files import load_gzipped_arpa
from w2vlm.errors import LanguageModelError


def make_arpa(rng: random.Random, *, holes: bool, quirks: bool) -> tuple[str, bool]:
    """A random ARPA text, and whether it is well-formed: every n-gram's prefix and suffix in it (``holes``: not
    so, the reader adds the missing contexts)."""
    order = rng.randint(1, 4)
    words = [f"w{i}" for i in range(rng.randint(1, 7))]
    specials = ["<unk>", "<s>", "</s>"]
    if quirks:
        specials = [w for w in specials if rng.random() < 0.8]
    vocab = specials + words
    rng.shuffle(vocab)
    grams: list[list[tuple[tuple[str, ...], float, float | None]]] = []
    grams.append([((w,), rng.uniform(-3, 0.3 if quirks else -0.1), rng.uniform(-1, 0)) for w in vocab])
    for n in range(2, order + 1):
        layer = []
        for _ in range(rng.randint(0, 12)):
            g = tuple(rng.choice(vocab) for _ in range(n))
            backoff = None if n == order or rng.random() < 0.3 else rng.uniform(-1, 0)
            layer.append((g, rng.uniform(-2, -0.01), backoff))
        grams.append(layer)
    complete = True
    if not holes:
        # add the context (prefix) and the suffix of every n-gram, higher orders first
        for n in range(order, 1, -1):
            have = {g for g, _, _ in grams[n - 2]}
            for g, _, _ in list(grams[n - 1]):
                for sub in (g[:-1], g[1:]):
                    if sub not in have:
                        have.add(sub)
                        grams[n - 2].append((sub, rng.uniform(-2, -0.01), rng.uniform(-1, 0)))
    else:
        complete = False
    if not quirks:  # no duplicates
        grams = [list({g: (g, p, b) for g, p, b in layer}.values()) for layer in grams]
    nl = "\r\n" if quirks and rng.random() < 0.3 else "\n"
    lines = []
    if quirks and rng.random() < 0.3:
        lines += ["some text before the header", ""]
    lines += ["\\data\\"] + [f"ngram {i + 1}={len(g)}" for i, g in enumerate(grams)] + [""]
    for i, layer in enumerate(grams):
        lines.append(f"\\{i + 1}-grams:")
        for g, p, b in layer:
            sep = " " if quirks and rng.random() < 0.2 else "\t"
            lines.append(f"{p:.4f}{sep}{' '.join(g)}" + ("" if b is None else f"{sep}{b:.4f}"))
        if not quirks or rng.random() < 0.7:
            lines.append("")
    lines.append("\\end\\")
    if quirks and rng.random() < 0.2:
        lines.append("trailing text")
    text = nl.join(lines)
    if not quirks or rng.random() < 0.5:
        text += nl
    return text, complete


def fingerprint(lm) -> dict:
    """Everything a caller can observe: vocabulary, counts, warnings, and log10 p(word | state) with the next
    state for every word from every state reachable from the start and null states."""
    vocab = lm.vocab()
    words = [*vocab, "never-seen"]
    start = [lm.begin_sentence_state(), lm.null_state()]
    key = lambda s: tuple(s.__getstate__()[0]) + tuple(s.__getstate__()[1])  # noqa: E731
    seen = {key(s): s for s in start}
    todo = list(start)
    table = {}
    while todo:
        s = todo.pop()
        row = []
        for w in words:
            p, nxt = lm.base_score(s, w)
            row.append((p, key(nxt)))
            if key(nxt) not in seen:
                seen[key(nxt)] = nxt
                todo.append(nxt)
        table[key(s)] = row
    return {
        "order": lm.order,
        "vocab": vocab,
        "counts": list(lm.counts),
        "warnings": list(lm.warnings),
        "bos_eos": (lm.base_score(lm.null_state(), "<s>")[0], lm.base_score(lm.null_state(), "</s>")[0]),
        "scores": table,
    }


def chunked(data: bytes, rng: random.Random, size: int | None, lo: int = 1, hi: int = 7):
    parser = _core.ArpaParser("x.arpa", size)
    i = 0
    while i < len(data):
        n = rng.randint(lo, hi)
        parser.feed(data[i : i + n])
        i += n
    return parser.finish()


def outcome(load, where=None):
    try:
        return fingerprint(load())
    except LanguageModelError as e:
        msg = str(e) if where is None else str(e).replace(f"{where}/", "")
        return ("error", msg.replace("x.arpa.gz", "x.arpa"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), holes=st.booleans(), quirks=st.booleans())
def test_every_path_reads_the_same_model(tmp_path, seed, holes, quirks):
    rng = random.Random(seed)
    text, complete = make_arpa(rng, holes=holes, quirks=quirks)
    data = text.encode()
    whole = fingerprint(_core.NGramLM.from_arpa_bytes(data, "x.arpa"))
    assert fingerprint(chunked(data, rng, len(data))) == whole
    assert fingerprint(chunked(data, rng, None)) == whole
    p = tmp_path / "x.arpa"
    p.write_bytes(data)
    assert fingerprint(_core.NGramLM.from_arpa_file(str(p))) == whole
    gz = tmp_path / "x.arpa.gz"
    gz.write_bytes(gzip.compress(data))
    assert fingerprint(load_ngram(gz)) == whole
    if complete and not quirks:
        # and it is the model the file describes (an independent dictionary-based reader)
        ref = ArpaReference(text)
        lm = _core.NGramLM.from_arpa_bytes(data, "x.arpa")
        for _ in range(20):
            sent = " ".join(rng.choice([*whole["vocab"][1:], "oov"]) for _ in range(rng.randint(0, 6)))
            assert lm.score(sent, True, True) == pytest.approx(ref.sentence_logp(sent.split()), abs=1e-4)


def damage(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    kind = rng.randrange(7)
    i = rng.randrange(len(lines))
    if kind == 0:
        del lines[i]
    elif kind == 1:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif kind == 2:
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    elif kind == 3:
        lines.insert(i, rng.choice([b"\\3-grams:", b"\\end\\", b"-1 zz", b"ngram 2=99999999", b"x", b"", b"\\data\\"]))
    elif kind == 4:
        return data[: rng.randrange(len(data) + 1)]
    elif kind == 5:
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + bytes([rng.choice([0, 9, 32, 10, 13, 0xFF, ord("\\")])]) + data[pos:]
    else:
        lines[i] = lines[i].replace(b"-", b"+", 1).replace(b"=", b"=1", 1)
    return b"\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), quirks=st.booleans(), hits=st.integers(1, 3))
def test_damaged_files_fail_alike_on_every_path(tmp_path, seed, quirks, hits):
    rng = random.Random(seed)
    data, _ = make_arpa(rng, holes=rng.random() < 0.5, quirks=quirks)
    data = data.encode()
    for _ in range(hits):
        data = damage(data, rng)
    whole = outcome(lambda: _core.NGramLM.from_arpa_bytes(data, "x.arpa"))
    assert outcome(lambda: chunked(data, rng, len(data))) == whole
    p = tmp_path / "x.arpa"
    p.write_bytes(data)
    assert outcome(lambda: _core.NGramLM.from_arpa_file(str(p)), tmp_path) == whole
    # without its size the reader cannot refuse a count up front: it fails later (the section is short), or not
    # at all where the bytes path refused only that count
    streamed = outcome(lambda: chunked(data, rng, None))
    gz = tmp_path / "x.arpa.gz"
    gz.write_bytes(gzip.compress(data))
    assert outcome(lambda: load_gzipped_arpa(gz), tmp_path) == streamed
    if not (isinstance(whole, tuple) and "holds at most" in whole[1]):
        assert streamed == whole


def test_chunk_boundaries_anywhere():
    text, _ = make_arpa(random.Random(7), holes=True, quirks=False)
    data = text.replace("\n", "\r\n").rstrip("\r\n").encode()  # CRLF, no final newline
    whole = fingerprint(_core.NGramLM.from_arpa_bytes(data, "x.arpa"))
    for cut in range(len(data) + 1):
        parser = _core.ArpaParser("x.arpa", len(data))
        parser.feed(data[:cut])
        parser.feed(b"")
        parser.feed(data[cut:])
        assert fingerprint(parser.finish()) == whole


def test_error_line_numbers_and_nul_bytes_across_chunks():
    good, _ = make_arpa(random.Random(3), holes=False, quirks=False)
    lines = good.split("\n")
    i = next(k for k, ln in enumerate(lines) if ln.startswith("\\1-grams:")) + 1
    lines[i] = "abc " + lines[i].split()[1]
    bad = "\n".join(lines).encode()
    for size in (1, 5, 1 << 20):
        with pytest.raises(LanguageModelError, match=rf"x\.arpa:{i + 1}: bad log10 probability 'abc'"):
            chunked(bad, random.Random(0), None, size, size)
    # a NUL byte anywhere wins over a damaged line, as when the whole text was checked first
    with pytest.raises(LanguageModelError, match="NUL bytes"):
        chunked(bad + b"\n\0", random.Random(0), None, 3, 3)
    with pytest.raises(LanguageModelError, match="NUL bytes"):
        _core.NGramLM.from_arpa_bytes(bad + b"\n\0", "x.arpa")


def test_parser_is_used_once():
    parser = _core.ArpaParser("x.arpa")
    parser.feed(b"\\data\\\nngram 1=1\n\n\\1-grams:\n-1\ta\n\n\\end\\\n")
    assert parser.finish().vocab_size == 4  # a, plus <unk>, <s>, </s> made up
    with pytest.raises(LanguageModelError, match="already finished"):
        parser.feed(b"x")
    with pytest.raises(LanguageModelError, match="already finished"):
        parser.finish()


def test_streamed_counts_grow_the_tables_and_are_still_checked():
    # without the size, a huge announced count is no reason to allocate: the table starts small, grows with the
    # lines read, and the count is checked at the end of the section
    uni = "".join(f"-1\tw{i}\n" for i in range(50))
    bi = "".join(f"-1\tw{i} w{j}\n" for i in range(50) for j in range(50))
    ok = f"\\data\\\nngram 1=50\nngram 2=2500\n\n\\1-grams:\n{uni}\n\\2-grams:\n{bi}\n\\end\\\n".encode()
    assert fingerprint(chunked(ok, random.Random(1), None, 1000, 5000)) == fingerprint(
        _core.NGramLM.from_arpa_bytes(ok, "x.arpa")
    )
    huge = ok.replace(b"ngram 2=2500", b"ngram 2=100000000000")
    with pytest.raises(LanguageModelError, match="announces 100000000000 2-grams but the section has 2500"):
        chunked(huge, random.Random(1), None, 1000, 5000)
    with pytest.raises(LanguageModelError, match="holds at most"):
        chunked(huge, random.Random(1), len(huge), 1000, 5000)


def test_file_of_several_blocks(tmp_path):
    # more than one 4 MiB block of the file reader, lines cut by the blocks' ends
    rng = random.Random(5)
    words = [f"word{i}" for i in range(3000)]
    uni = [f"{rng.uniform(-5, -1):.6f}\t{w}\t{rng.uniform(-1, 0):.6f}" for w in ["<unk>", "<s>", "</s>", *words]]
    bi = sorted({f"{rng.choice(words)} {rng.choice(words)}" for _ in range(250_000)})
    lines = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", "", "\\1-grams:", *uni, "", "\\2-grams:"]
    lines += [f"{rng.uniform(-3, -0.1):.6f}\t{g}" for g in bi] + ["", "\\end\\", ""]
    data = "\n".join(lines).encode()
    assert len(data) > 4 << 20
    p = tmp_path / "big.arpa"
    p.write_bytes(data)
    a = _core.NGramLM.from_arpa_file(str(p))
    b = _core.NGramLM.from_arpa_bytes(data, "big.arpa")
    assert (a.vocab(), list(a.counts), a.warnings) == (b.vocab(), list(b.counts), b.warnings)
    for g in bi[::97]:
        assert a.score(g, False, False) == b.score(g, False, False)
    for _ in range(200):
        s = " ".join(rng.choice(words) for _ in range(5))
        assert a.score(s) == b.score(s)


def test_tables_are_sized_by_the_counts_however_the_text_arrives():
    # 1.5 slots per n-gram (16-byte records with a backoff, 12 at the highest order), as KenLM's probing tables:
    # a stream that grew its tables ends at the size a file of known length reserves at once
    rng = random.Random(3)
    words = [f"w{i}" for i in range(200)]
    uni = [f"-2\t{w}\t-0.5" for w in ["<unk>", "<s>", "</s>", *words]]
    bi = sorted({f"{rng.choice(words)} {rng.choice(words)}" for _ in range(20_000)})
    tri = sorted({f"{g} {rng.choice(words)}" for g in bi for _ in range(2)})
    lines = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", f"ngram 3={len(tri)}", "", "\\1-grams:", *uni]
    lines += ["", "\\2-grams:", *(f"-1\t{g}\t-0.3" for g in bi), "", "\\3-grams:", *(f"-1\t{g}" for g in tri)]
    data = "\n".join([*lines, "", "\\end\\", ""]).encode()
    whole = _core.NGramLM.from_arpa_bytes(data, "x.arpa")
    streamed = chunked(data, random.Random(2), None, 1000, 5000)
    assert streamed.memory_bytes == whole.memory_bytes
    tables = 16 * (len(bi) * 3 // 2 + 1) + 12 * (len(tri) * 3 // 2 + 1)
    assert tables < whole.memory_bytes < tables + 100 * len(uni)
    assert fingerprint(streamed) == fingerprint(whole)
