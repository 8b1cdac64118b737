"""w2vlm's binary form of an n-gram LM: the same model back, and a clear error for anything else."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest

from w2vlm import _core
from w2vlm.decoder import BeamSearchDecoderCTC, LanguageModel, build_ctcdecoder, load_ngram, save_ngram_binary
from w2vlm.decoder.alphabet import Alphabet
from w2vlm.decoder.ngram_files import convert_to_binary, lm_file_kind
from w2vlm.errors import LanguageModelError
from w2vlm.lm import build_lm

DATA = Path(__file__).parent / "data" / "kenlm"
HEADER = 56  # the fixed part: magic, six u32, two u64


def same_model(a: _core.NGramLM, b: _core.NGramLM, seed: int = 0) -> None:
    assert (a.order, a.vocab(), list(a.counts), a.memory_bytes) == (b.order, b.vocab(), list(b.counts), b.memory_bytes)
    rng = random.Random(seed)
    words = [*a.vocab(), "not-a-word"]
    for _ in range(3000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 7)))
        assert a.score(text) == b.score(text), text
        assert a.score(text, False, False) == b.score(text, False, False), text


@pytest.mark.parametrize("name", ["tri.arpa", "five.arpa", "four_pruned.arpa"])
def test_round_trip_gives_the_same_model(tmp_path, name):
    src = DATA / name
    target = tmp_path / "lm.w2vlm"
    arpa = convert_to_binary(src, target)
    assert lm_file_kind(target) == "w2vlm"
    same_model(arpa, load_ngram(target))


@pytest.mark.parametrize("order", [1, 2, 4])
def test_round_trip_of_built_models(tmp_path, order):
    rng = random.Random(order)
    words = [f"w{i}" for i in range(40)]
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(400)))
    build_lm(text, tmp_path / "lm.arpa", order=order, allowed_chars="w0123456789")
    arpa = load_ngram(tmp_path / "lm.arpa")
    save_ngram_binary(arpa, tmp_path / "any-name.bin")  # the magic decides, not the name
    assert lm_file_kind(tmp_path / "any-name.bin") == "w2vlm"
    same_model(arpa, load_ngram(tmp_path / "any-name.bin"), seed=order)


def test_missing_contexts_and_made_up_specials_survive(tmp_path):
    # a trigram whose contexts are missing (added while reading) and no <unk>/<s>/</s> in the file
    text = b"\\data\\\nngram 1=3\nngram 2=1\nngram 3=1\n\n\\1-grams:\n-1\ta\t-0.5\n-1.5\tb\n-2\tc\n\n"
    text += b"\\2-grams:\n-0.3\ta b\n\n\\3-grams:\n-0.1\tc a b\n\n\\end\\\n"
    arpa = _core.NGramLM.from_arpa_bytes(text, "holes.arpa")
    arpa.save_binary(str(tmp_path / "holes.w2vlm"))
    same_model(arpa, _core.NGramLM.from_binary_file(str(tmp_path / "holes.w2vlm")))


def test_decoders_read_it_like_any_lm_file(tmp_path):
    convert_to_binary(DATA / "tri.arpa", tmp_path / "lm.w2vlm")
    labels = ["", " ", *"abcdefghijklmnopqrstuvwxyz'"]
    logits = np.random.default_rng(0).normal(size=(40, len(labels))).astype(np.float32)
    a = build_ctcdecoder(labels, str(DATA / "tri.arpa")).decode_beams(logits, beam_width=16)
    b = build_ctcdecoder(labels, str(tmp_path / "lm.w2vlm")).decode_beams(logits, beam_width=16)
    assert [(x.text, x.logit_score, x.lm_score) for x in a] == [(x.text, x.logit_score, x.lm_score) for x in b]
    # a language_model/ folder may hold it as its one LM file
    folder = tmp_path / "language_model"
    folder.mkdir()
    (tmp_path / "lm.w2vlm").rename(folder / "lm.w2vlm")
    (folder / "unigrams.txt").write_text("\n".join(_core.NGramLM.from_arpa_file(str(DATA / "tri.arpa")).vocab()))
    (folder / "attrs.json").write_text('{"alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": true}')
    lm = LanguageModel.load_from_dir(folder)
    c = BeamSearchDecoderCTC(Alphabet.build_alphabet(labels), lm).decode_beams(logits, beam_width=16)
    assert [x.text for x in c] == [x.text for x in a]


def test_the_file_is_written_atomically(tmp_path):
    target = tmp_path / "lm.w2vlm"
    target.write_bytes(b"old")
    with pytest.raises(LanguageModelError, match="only a model read from an ARPA file"):
        save_ngram_binary(object(), target)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    save_ngram_binary(load_ngram(DATA / "tri.arpa"), target)
    assert [p.name for p in tmp_path.iterdir()] == ["lm.w2vlm"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("bin") / "five.w2vlm"
    convert_to_binary(DATA / "five.arpa", path)
    return path.read_bytes()


def load_bytes(tmp_path: Path, data: bytes) -> _core.NGramLM:
    p = tmp_path / "x.w2vlm"
    p.write_bytes(data)
    return _core.NGramLM.from_binary_file(str(p))


def test_cut_short_anywhere_is_refused(tmp_path, good):
    cuts = sorted({*range(0, 200), *random.Random(0).sample(range(len(good)), 200), len(good) - 1})
    for n in cuts:
        with pytest.raises(LanguageModelError, match=r"x\.w2vlm: .*\(w2vlm binary n-gram file\)"):
            load_bytes(tmp_path, good[:n])
    with pytest.raises(LanguageModelError, match="bytes after the last table"):
        load_bytes(tmp_path, good + b"\0" * 8)


def test_damaged_fields_are_named(tmp_path, good):
    def patched(offset: int, fmt: str, value: object) -> bytes:
        b = bytearray(good)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    cases = [
        (patched(0, "5s", b"W2VLM"), "wrong magic string"),
        (patched(16, "<I", 2), "format version 2, this w2vlm reads version 1"),
        (patched(20, "<I", 0x04030201), "other byte order"),
        (patched(24, "<I", 0), "order 0, expected 1 to 10"),
        (patched(24, "<I", 11), "order 11, expected 1 to 10"),
        (patched(28, "<I", 0), "vocabulary is empty"),
        (patched(32, "<I", 10**6), "<s> id 1000000"),
        (patched(48, "<Q", 1), "reserved field"),
        (patched(40, "<Q", 1 << 60), "ends inside the words"),
    ]
    order = struct.unpack_from("<I", good, 24)[0]
    tables = HEADER + 8 * order
    cases.append((patched(tables, "<Q", 1 << 62), "capacity .* is larger than the file"))
    cases.append((patched(tables + 8, "<Q", 12345), "2-gram table holds .* records but its header says 12345"))
    for data, message in cases:
        with pytest.raises(LanguageModelError, match=message):
            load_bytes(tmp_path, data)


def test_bad_weights_words_and_full_tables_are_refused(tmp_path, good):
    order, vocab = struct.unpack_from("<II", good, 24)
    uni = HEADER + 8 * order + 16 * (order - 1)
    b = bytearray(good)
    struct.pack_into("<f", b, uni + 4, float("nan"))
    with pytest.raises(LanguageModelError, match="record 1 of the 1-grams has log10 probability nan"):
        load_bytes(tmp_path, bytes(b))
    # a duplicate word, and a word 0 that is not <unk>
    words = uni + 8 * vocab
    b = bytearray(good)
    b[words : words + 5] = b"<UNK>"
    with pytest.raises(LanguageModelError, match="word 0 is '<UNK>', expected <unk>"):
        load_bytes(tmp_path, bytes(b))
    names = good[words:].split(b"\0")[:vocab]
    i, j = next((i, j) for i in range(1, vocab) for j in range(i + 1, vocab) if len(names[i]) == len(names[j]))
    at = words + sum(len(w) + 1 for w in names[:j])
    b = bytearray(good)
    b[at : at + len(names[j])] = names[i]
    with pytest.raises(LanguageModelError, match=f"the word '{names[i].decode()}' appears twice \\(ids {i} and {j}\\)"):
        load_bytes(tmp_path, bytes(b))
    # a highest-order table whose every slot holds a key: probes would never end, so the count check refuses it
    capacity, records = struct.unpack_from("<QQ", good, HEADER + 8 * order + 16 * (order - 2))
    slots = capacity + capacity // 2 + 1
    start = len(good) - 12 * slots
    b = bytearray(good)
    for i in range(slots):
        if struct.unpack_from("<Q", b, start + 12 * i)[0] == 0:
            struct.pack_into("<Qf", b, start + 12 * i, 0xDEADBEEF + i, -1.0)
    with pytest.raises(
        LanguageModelError, match=f"{order}-gram table holds {slots} records but its header says {records}"
    ):
        load_bytes(tmp_path, bytes(b))


def test_not_found_and_directories(tmp_path):
    with pytest.raises(LanguageModelError, match="cannot open the file"):
        _core.NGramLM.from_binary_file(str(tmp_path / "missing.w2vlm"))
    with pytest.raises(LanguageModelError, match="cannot create the file"):
        load_ngram(DATA / "tri.arpa").save_binary(str(tmp_path / "no" / "such" / "dir" / "x.w2vlm"))


def test_convert_lm_command(tmp_path):
    from typer.testing import CliRunner

    from w2vlm.cli import app

    arpa = tmp_path / "tri.arpa.gz"
    import gzip

    arpa.write_bytes(gzip.compress((DATA / "tri.arpa").read_bytes()))
    res = CliRunner().invoke(app, ["convert-lm", str(arpa)])
    assert res.exit_code == 0, res.output
    assert f"wrote {tmp_path / 'tri.w2vlm'} (3-gram," in res.output
    same_model(load_ngram(DATA / "tri.arpa"), load_ngram(tmp_path / "tri.w2vlm"))
    (tmp_path / "bad.arpa").write_text("\\data\\\nngram 1=x\n")
    res = CliRunner().invoke(app, ["convert-lm", str(tmp_path / "bad.arpa"), "-o", str(tmp_path / "out.w2vlm")])
    assert res.exit_code == 1 and "bad.arpa" in res.output and not (tmp_path / "out.w2vlm").exists()
    res = CliRunner().invoke(app, ["convert-lm", str(DATA / "tri.probing.bin"), "-o", str(tmp_path / "k.w2vlm")])
    assert res.exit_code == 1 and "a KenLM binary cannot be converted" in res.output
