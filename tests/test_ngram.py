"""The native n-gram LM: ARPA parsing, backoff scoring against an independent reference, loud errors."""

from __future__ import annotations

import gzip
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoder_reference import ArpaReference
from w2vlm.decoder import LanguageModel, load_ngram
from w2vlm.errors import LanguageModelError

TINY = """\\data\\
ngram 1=6
ngram 2=4
ngram 3=1

\\1-grams:
-1.5\t<unk>\t0
-99\t<s>\t-0.3
-1.0\t</s>
-0.5\thello\t-0.2
-0.6\tworld\t-0.25
-0.9\tword\t-0.1

\\2-grams:
-0.2\t<s> hello\t-0.05
-0.1\thello world\t-0.4
-0.3\tworld </s>
-0.5\thello word

\\3-grams:
-0.01\t<s> hello world

\\end\\
"""


def random_arpa(seed: int, vocab_size: int = 8, order: int = 3) -> str:
    """A random but well-formed ARPA (every n-gram's prefix and suffix present)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab_size)]
    grams: list[dict[tuple[str, ...], tuple[float, float | None]]] = []
    uni = {("<unk>",): (-2.0, 0.0), ("<s>",): (-99.0, rng.uniform(-1, 0)), ("</s>",): (-1.2, None)}
    for w in words:
        uni[(w,)] = (rng.uniform(-3, -0.5), rng.uniform(-1, 0))
    grams.append(uni)
    starts = ["<s>", *words]
    ends = [*words, "</s>"]
    for n in range(2, order + 1):
        layer: dict[tuple[str, ...], tuple[float, float | None]] = {}
        for _ in range(vocab_size * 3):
            prev = rng.choice(list(grams[-1].keys()))
            if prev[-1] == "</s>" or (len(prev) == 1 and prev[0] not in starts):
                continue
            g = (*prev, rng.choice(ends))
            if g[1:] not in grams[n - 2] and n > 2:
                continue
            layer[g] = (rng.uniform(-2, -0.01), None if n == order or g[-1] == "</s>" else rng.uniform(-1, 0))
        grams.append(layer)
    lines = ["\\data\\"] + [f"ngram {i + 1}={len(g)}" for i, g in enumerate(grams)] + [""]
    for i, g in enumerate(grams):
        lines.append(f"\\{i + 1}-grams:")
        for k, (p, b) in g.items():
            lines.append(f"{p:.4f}\t{' '.join(k)}" + ("" if b is None else f"\t{b:.4f}"))
        lines.append("")
    lines.append("\\end\\")
    return "\n".join(lines) + "\n"


def test_tiny_scores_match_hand_computed(tmp_path):
    p = tmp_path / "tiny.arpa"
    p.write_text(TINY)
    lm = load_ngram(p)
    assert lm.order == 3
    assert list(lm.counts) == [6, 4, 1]
    # <s> hello world </s>: trigram hit for world; </s> backs off from "hello world" (-0.4) to "world </s>"
    assert lm.score("hello world", True, True) == pytest.approx(-0.2 + -0.01 + (-0.4 + -0.3), abs=1e-6)
    assert lm.score("hello world", True, True) == pytest.approx(
        ArpaReference(TINY).sentence_logp(["hello", "world"]), abs=1e-6
    )
    # "word world": p(world|word) backs off: bo(word) + p(world)
    assert lm.score("word world", False, False) == pytest.approx(-0.9 + (-0.1 + -0.6), abs=1e-6)
    # OOV is <unk>
    assert lm.score("zzz", False, False) == pytest.approx(-1.5, abs=1e-6)
    assert "hello" in lm and "zzz" not in lm and "<unk>" not in lm


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_random_arpa_scores_equal_reference(tmp_path_factory, seed, data):
    text = random_arpa(seed)
    p = tmp_path_factory.mktemp("arpa") / "r.arpa"
    p.write_text(text)
    lm = load_ngram(p)
    ref = ArpaReference(text)
    vocab = [f"w{i}" for i in range(8)] + ["oov"]
    words = data.draw(st.lists(st.sampled_from(vocab), max_size=8))
    bos = data.draw(st.booleans())
    eos = data.draw(st.booleans())
    expected = ref.sentence_logp(words, bos=bos, eos=eos) if bos else _no_bos(ref, words, eos)
    assert lm.score(" ".join(words), bos, eos) == pytest.approx(expected, abs=1e-4)


def _no_bos(ref: ArpaReference, words: list[str], eos: bool) -> float:
    ctx: tuple[str, ...] = ()
    total = 0.0
    for w in [*words, "</s>"] if eos else words:
        total += ref.logp(ctx, w)
        ctx = (*ctx, w)
    return total


def test_base_score_state_continues(tmp_path):
    p = tmp_path / "tiny.arpa"
    p.write_text(TINY)
    lm = load_ngram(p)
    s0 = lm.begin_sentence_state()
    p1, s1 = lm.base_score(s0, "hello")
    p2, s2 = lm.base_score(s1, "world")
    assert p1 + p2 == pytest.approx(-0.21, abs=1e-6)
    assert lm.base_score(s2, "</s>")[0] == pytest.approx(-0.7, abs=1e-6)
    assert lm.state_words(s2) == ["world", "hello"]


def test_gzip_arpa(tmp_path):
    p = tmp_path / "tiny.arpa.gz"
    with gzip.open(p, "wt") as f:
        f.write(TINY)
    assert load_ngram(p).score("hello world", True, True) == pytest.approx(-0.91, abs=1e-6)


def test_missing_unk_and_positive_probs_are_warned(tmp_path, caplog):
    text = TINY.replace("-1.5\t<unk>\t0\n", "").replace("ngram 1=6", "ngram 1=5").replace("-0.01\t<s>", "0.5\t<s>")
    p = tmp_path / "w.arpa"
    p.write_text(text)
    with caplog.at_level("WARNING", logger="w2vlm.decoder"):
        lm = load_ngram(p)
    assert lm.score("zzz", False, False) == pytest.approx(-100.0)
    joined = " ".join(lm.warnings)
    assert "<unk>" in joined and "positive" in joined
    assert "<unk>" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("hello there\n", "no '\\data\\' header"),
        ("\\data\\\nngram 1=x\n", "bad n-gram count"),
        ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\ta\n", "announces 2 1-grams"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\ta\n\n", "missing '\\end\\'"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\nabc\ta\n\n\\end\\\n", "bad log10 probability"),
        ("\\data\\\nngram 1=1\n\n\\1-grams:\n-1\ta b c d\n\n\\end\\\n", "needs 2 or 3 fields"),
        (
            "\\data\\\nngram 1=1\nngram 2=1\n\n\\1-grams:\n-1\ta\n\n\\2-grams:\n-1\ta q\n\n\\end\\\n",
            "not among the unigrams",
        ),
        ("\\data\\\nngram 1=1\nngram 2=1\n\n\\1-grams:\n-1\ta\n\n\\end\\\n", "before the 2-grams"),
        ("\\data\\\nngram 1=1\n\n\\2-grams:\n-1\ta\n\n\\end\\\n", "expected '\\1-grams:'"),
    ],
)
def test_malformed_arpa_errors_name_file_and_line(tmp_path, content, message):
    p = tmp_path / "bad.arpa"
    p.write_text(content)
    with pytest.raises(LanguageModelError) as e:
        load_ngram(p)
    assert message in str(e.value)
    assert str(p) in str(e.value)


def test_error_line_numbers(tmp_path):
    p = tmp_path / "bad.arpa"
    p.write_text(TINY.replace("-0.5\thello word", "-0.5\thello nope"))
    with pytest.raises(LanguageModelError, match=r"bad\.arpa:18: word 'nope'"):
        load_ngram(p)


def test_missing_binary_and_junk_files(tmp_path):
    with pytest.raises(LanguageModelError, match="not found"):
        load_ngram(tmp_path / "nope.arpa")
    junk = tmp_path / "junk.arpa"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(LanguageModelError, match="NUL bytes"):
        load_ngram(junk)
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\0" + b"\0" * 100)
    with pytest.raises(
        LanguageModelError,
        match=r"KenLM (could not load this file|binary language models need)|unrecognised KenLM binary header",
    ):
        load_ngram(binary)
    bad_gz = tmp_path / "x.arpa.gz"
    bad_gz.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(LanguageModelError, match="decompress"):
        load_ngram(bad_gz)
    with pytest.raises(LanguageModelError, match="is a directory"):
        load_ngram(tmp_path)


def test_language_model_params_and_dir_roundtrip(tmp_path):
    p = tmp_path / "tiny.arpa"
    p.write_text(TINY)
    lm = LanguageModel(str(p), ["hello", "world", "notinlm"], alpha=0.7, beta=2.0)
    assert lm.unigrams == ["hello", "world"]
    assert lm.order == 3
    lm.reset_params(alpha=0.3, score_boundary=False)
    assert (lm.alpha, lm.beta, lm.score_boundary) == (0.3, 2.0, False)
    with pytest.raises(LanguageModelError, match="alpha must be a number"):
        lm.reset_params(alpha="high")
    with pytest.raises(LanguageModelError, match="unknown language model parameters"):
        lm.reset_params(gamma=1.0)
    with pytest.raises(LanguageModelError, match="score_boundary must be a bool"):
        LanguageModel(str(p), score_boundary="yes")
    with pytest.raises(LanguageModelError, match="score_boundary must be a bool"):
        lm.reset_params(score_boundary=1)  # pyctcdecode's reset_params takes bools only
    assert LanguageModel(str(p), score_boundary=-7.0).score_boundary == -7.0  # kept as given, used as a truth value
    out = tmp_path / "saved"
    lm.save_to_dir(out)
    assert sorted(x.name for x in out.iterdir()) == ["attrs.json", "tiny.arpa", "unigrams.txt"]
    back = LanguageModel.load_from_dir(out)
    assert back.serializable_attrs == lm.serializable_attrs
    assert back.unigrams == ["hello", "world"]
    (out / "second.arpa").write_text(TINY)
    with pytest.raises(LanguageModelError, match="one language model file"):
        LanguageModel.load_from_dir(out)
    (out / "second.arpa").unlink()
    (out / "attrs.json").write_text('{"alpha": 1, "bogus": 2}')
    with pytest.raises(LanguageModelError, match="unknown keys"):
        LanguageModel.load_from_dir(out)
    with pytest.raises(LanguageModelError, match="must be a path"):
        LanguageModel(42)


@pytest.fixture
def kenlm_module():
    return pytest.importorskip("kenlm")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_native_scores_equal_kenlm(tmp_path_factory, seed, data):
    km = pytest.importorskip("kenlm")
    text = random_arpa(seed)
    p = tmp_path_factory.mktemp("arpa") / "r.arpa"
    p.write_text(text)
    native = load_ngram(p)
    model = km.Model(str(p))
    vocab = [f"w{i}" for i in range(8)] + ["oov"]
    words = data.draw(st.lists(st.sampled_from(vocab), max_size=10))
    sentence = " ".join(words)
    for bos, eos in ((True, True), (False, False), (True, False)):
        assert native.score(sentence, bos, eos) == pytest.approx(model.score(sentence, bos=bos, eos=eos), abs=1e-4)


def test_kenlm_backend_decodes_like_native(tmp_path, kenlm_module):
    from test_decoder import HELLO_ARPA, WORDS_LABELS, emissions
    from w2vlm.decoder import Alphabet, BeamSearchDecoderCTC
    from w2vlm.decoder.language_model import kenlm_backend

    p = tmp_path / "hello.arpa"
    p.write_text(HELLO_ARPA)
    alphabet = Alphabet.build_alphabet(WORDS_LABELS)
    via_kenlm = LanguageModel(kenlm_backend(kenlm_module.Model(str(p))), ["hello", "world", "word", "cold"])
    assert via_kenlm.backend == "kenlm"
    native = LanguageModel(str(p), ["hello", "world", "word", "cold"])
    assert native.backend == "native"
    d1 = BeamSearchDecoderCTC(alphabet, via_kenlm)
    d2 = BeamSearchDecoderCTC(alphabet, native)
    xs = [emissions("hello world cold word", WORDS_LABELS, noise=2.0, seed=i) for i in range(6)]
    for x in xs:
        b1, b2 = d1.decode_beams(x), d2.decode_beams(x)
        assert [b.text for b in b1] == [b.text for b in b2]
        assert [b.lm_score for b in b1] == pytest.approx([b.lm_score for b in b2], abs=1e-3)
    assert d1.decode_batch(None, xs, num_threads=2) == d2.decode_batch(None, xs, num_threads=2)
    # a kenlm.Model of an ARPA file is read natively
    assert LanguageModel(kenlm_module.Model(str(p))).backend == "native"
