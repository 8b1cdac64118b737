"""The beam search decoder: pyctcdecode API, exactness against exhaustive references, errors, threads, streams."""

from __future__ import annotations

import itertools
import math
import pickle
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decoder_reference import ArpaReference, exhaustive_best
from w2vlm import limits
from w2vlm.decoder import (
    Alphabet,
    BeamSearchDecoderCTC,
    LanguageModel,
    OutputBeam,
    build_ctcdecoder,
    to_log_probs,
)
from w2vlm.errors import AlphabetError, DecoderInputError, LanguageModelError, W2vlmError

LABELS = ["", " ", "a", "b"]
WIDE = {"beam_width": 100_000, "beam_prune_logp": -1e6, "token_min_logp": -1e6}


@pytest.fixture(autouse=True, scope="module")
def _exhaustive_beams_allowed():
    """The exhaustive comparisons here need beams wider than w2vlm.limits.MAX_BEAM_WIDTH (tiny inputs, so
    cheap): raise the limit the documented way for this module only."""
    old = limits.MAX_BEAM_WIDTH
    limits.MAX_BEAM_WIDTH = WIDE["beam_width"]
    yield
    limits.MAX_BEAM_WIDTH = old


AB_ARPA = """\\data\\
ngram 1=8
ngram 2=6

\\1-grams:
-2.0\t<unk>\t0
-99\t<s>\t-0.5
-1.0\t</s>
-0.8\ta\t-0.3
-1.1\tb\t-0.2
-0.9\tab\t-0.4
-1.3\tba\t-0.1
-1.6\taa\t-0.2

\\2-grams:
-0.3\t<s> ab
-0.6\t<s> a
-0.4\tab ba
-0.5\tba </s>
-0.2\ta b
-0.7\tb </s>

\\end\\
"""

WORDS_LABELS = ["", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]
HELLO_ARPA = """\\data\\
ngram 1=7
ngram 2=5

\\1-grams:
-3.0\t<unk>\t0
-99\t<s>\t-0.3
-1.0\t</s>
-1.2\thello\t-0.2
-1.4\tworld\t-0.2
-2.5\tword\t-0.1
-1.8\tcold\t-0.1

\\2-grams:
-0.2\t<s> hello
-0.1\thello world
-0.3\tworld </s>
-1.5\thello word
-1.2\thello cold

\\end\\
"""


def emissions(text: str, labels: list[str], frames_per_char: int = 2, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Peaky CTC logits spelling ``text`` (blank between characters), optionally with noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for ch in text:
        for k in range(frames_per_char):
            r = np.full(len(labels), -10.0)
            r[labels.index(ch) if k == 0 else 0] = 0.0
            rows.append(r)
        blank = np.full(len(labels), -10.0)
        blank[0] = 0.0
        rows.append(blank)
    x = np.array(rows) + noise * rng.normal(size=(len(rows), len(labels)))
    return x.astype(np.float32)


@pytest.fixture
def ab_lm_path(tmp_path):
    p = tmp_path / "ab.arpa"
    p.write_text(AB_ARPA)
    return p


@pytest.fixture
def hello_decoder(tmp_path):
    p = tmp_path / "hello.arpa"
    p.write_text(HELLO_ARPA)
    return build_ctcdecoder(WORDS_LABELS, str(p))


# --------------------------------------------------------------------------------------------------
# Alphabet


def test_build_alphabet_normalises_tokenizer_vocab(caplog):
    with caplog.at_level("WARNING", logger="w2vlm.decoder"):
        a = Alphabet.build_alphabet(["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b"])
        assert not caplog.records  # a wav2vec2 vocabulary's <s> and </s> are no reason to warn
        Alphabet.build_alphabet(["<pad>", "|", "a", "ch"])
        assert "longer than one character" in caplog.text and "'ch'" in caplog.text
    assert a.labels == ["", "<s>", "</s>", "⁇", " ", "a", "b"]
    assert not a.is_bpe
    b = Alphabet.build_alphabet(["a", " ", "b"])
    assert b.labels == ["a", " ", "b", ""]  # blank appended as the last column
    bpe = Alphabet.build_alphabet(["<pad>", "##lo", "hel", "<unk>"])
    assert bpe.is_bpe and bpe.labels == ["", "lo", "▁hel", "▁⁇▁"]
    assert Alphabet.loads(a.dumps()) == a


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["a", "b", "a"], "duplicate"),
        ([], "empty"),
        ("abc", "list of strings"),
        (["a", 3], "must be strings"),
        (["▁a", " "], "Space token"),
    ],
)
def test_bad_alphabets(labels, message):
    with pytest.raises(AlphabetError, match=message):
        Alphabet.build_alphabet(labels)


def test_alphabet_loads_errors():
    with pytest.raises(AlphabetError, match="not valid JSON"):
        Alphabet.loads("{")
    with pytest.raises(AlphabetError, match="exactly the keys"):
        Alphabet.loads('{"labels": []}')


def test_errors_are_value_errors():
    assert issubclass(DecoderInputError, ValueError) and issubclass(DecoderInputError, W2vlmError)
    assert issubclass(LanguageModelError, ValueError) and issubclass(AlphabetError, ValueError)


# --------------------------------------------------------------------------------------------------
# exactness against exhaustive enumeration


def random_log_probs(seed: int, frames: int, vocab: int, peak: float = 2.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(frames, vocab)) * peak
    return (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), frames=st.integers(1, 7))
def test_no_lm_wide_beam_equals_exhaustive_ctc(seed, frames):
    lp = random_log_probs(seed, frames, len(LABELS))
    best_text, best_acoustic, _, acoustic = exhaustive_best(lp.astype(np.float64), LABELS)
    beams = build_ctcdecoder(LABELS).decode_beams(lp, **WIDE)
    assert beams[0].text == best_text
    assert beams[0].logit_score == pytest.approx(best_acoustic, abs=1e-4)
    # every final beam's acoustic score is the exact total probability of its text
    for b in beams:
        assert b.logit_score == pytest.approx(acoustic[b.text], abs=1e-4)
    assert len({b.text for b in beams}) == len(beams) == len(acoustic)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), frames=st.integers(1, 7), use_unigrams=st.booleans())
def test_lm_wide_beam_equals_exhaustive(tmp_path_factory, seed, frames, use_unigrams):
    path = tmp_path_factory.mktemp("lm") / "ab.arpa"
    path.write_text(AB_ARPA)
    unigrams = ["a", "ab", "ba"] if use_unigrams else None
    lp = random_log_probs(seed, frames, len(LABELS))
    ref = ArpaReference(AB_ARPA)
    best_text, best_acoustic, best_total, _ = exhaustive_best(
        lp.astype(np.float64),
        LABELS,
        ref,
        alpha=0.5,
        beta=1.5,
        unk_offset=-10.0,
        unigrams=set(unigrams) if unigrams else None,
    )
    dec = build_ctcdecoder(LABELS, str(path), unigrams=unigrams, pyctcdecode_eos=False)
    top = dec.decode_beams(lp, **WIDE)[0]
    assert top.text == best_text
    assert top.logit_score == pytest.approx(best_acoustic, abs=1e-4)
    assert top.lm_score == pytest.approx(best_total, abs=1e-3)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 100_000), frames=st.integers(1, 7), weight=st.floats(0.5, 8.0))
def test_hotwords_wide_beam_equals_exhaustive(seed, frames, weight):
    lp = random_log_probs(seed, frames, len(LABELS))
    best_text, _, best_total, _ = exhaustive_best(lp.astype(np.float64), LABELS, hotwords={"ab": weight})
    top = build_ctcdecoder(LABELS).decode_beams(lp, hotwords=["ab"], hotword_weight=weight, **WIDE)[0]
    assert top.text == best_text
    assert top.lm_score == pytest.approx(best_total, abs=1e-3)


# --------------------------------------------------------------------------------------------------
# behaviour


def test_clean_emissions_decode_with_frames(hello_decoder):
    x = emissions("hello world", WORDS_LABELS)
    assert hello_decoder.decode(x) == "hello world"
    beam = hello_decoder.decode_beams(x)[0]
    assert isinstance(beam, OutputBeam) and isinstance(beam, tuple) and len(beam) == 5
    text, _state, frames, logit, lm = beam
    assert text == beam.text and frames == beam.text_frames
    assert [w for w, _ in frames] == ["hello", "world"]
    # each character is one frame followed by two blanks: "h" at frame 0, "o" at frame 12, " " at 15, "w" at 18
    assert frames[0][1] == (0, 13)
    assert frames[1][1][0] == 18
    starts_ends = [se for _, se in frames]
    assert all(s < e for s, e in starts_ends)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(starts_ends))
    assert starts_ends[-1][1] <= len(x)
    chars = "".join(c for c, _ in beam.char_frames)
    assert chars == "hello world"
    assert beam.char_frames[0][1][0] == frames[0][1][0] and beam.char_frames[-1][1][1] == frames[-1][1][1]
    assert logit <= 0 and math.isfinite(lm)
    assert pickle.loads(pickle.dumps(beam)).char_frames == beam.char_frames


def test_lm_resolves_acoustic_confusion(hello_decoder):
    # the model hesitates between "wor ld" -> "world", "word" and "cold" for the second word
    x = emissions("hello world", WORDS_LABELS, noise=0.0)
    i_w = x.shape[0] - 15  # frame of 'w'
    x[i_w, WORDS_LABELS.index("w")] = -0.9
    x[i_w, WORDS_LABELS.index("c")] = -0.5
    greedy = build_ctcdecoder(WORDS_LABELS).decode(x)
    assert greedy == "hello corld"
    assert hello_decoder.decode(x) == "hello world"


def test_hotword_changes_result_and_phrase_weights():
    x = emissions("ab ab", LABELS)
    # make the second word ambiguous between "ab" and "bb" (its "a" is at frame 9)
    i = 9
    x[i, LABELS.index("a")] = -0.4
    x[i, LABELS.index("b")] = -0.3
    dec = build_ctcdecoder(LABELS)
    assert dec.decode(x) == "ab bb"
    assert dec.decode(x, hotwords=["ab"], hotword_weight=2.0) == "ab ab"
    assert dec.decode(x, hotwords=[("ab", 2.0)], hotword_weight=0.0) == "ab ab"
    assert dec.decode(x, hotwords={"ab": 2.0}) == "ab ab"
    # a two-word phrase gets credit only when completed in order
    assert dec.decode(x, hotwords=["ab ab"], hotword_weight=1.0) == "ab ab"
    with pytest.raises(DecoderInputError, match="hotword weight"):
        dec.decode(x, hotwords=[("ab", "much")])
    with pytest.raises(DecoderInputError, match="hotwords must be"):
        dec.decode(x, hotwords=[3])


def test_thousand_hotwords_do_not_change_unrelated_result(hello_decoder):
    x = emissions("hello world", WORDS_LABELS)
    rng = np.random.default_rng(1)
    hot = ["".join(rng.choice(list("xyzq"), size=6)) for _ in range(1000)]
    assert hello_decoder.decode(x, hotwords=hot) == "hello world"


def test_probabilities_and_logits_give_same_result(hello_decoder):
    x = emissions("hello world", WORDS_LABELS, noise=1.0, seed=3)
    probs = np.exp(to_log_probs(x, len(WORDS_LABELS)).astype(np.float64))
    assert hello_decoder.decode(probs) == hello_decoder.decode(x)
    assert hello_decoder.decode(x.astype(np.float64)) == hello_decoder.decode(x)


def test_zero_frames_decode_to_empty(hello_decoder):
    empty = np.zeros((0, len(WORDS_LABELS)), dtype=np.float32)
    assert hello_decoder.decode(empty) == ""
    assert hello_decoder.decode_beams(empty)[0].text == ""
    assert hello_decoder.decode_batch(None, [empty]) == [""]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda v: np.zeros((3,)), "1 dimensions"),
        (lambda v: np.zeros((2, 3, v)), "3 dimensions"),
        (lambda v: np.zeros((3, v + 1)), "vocabulary is size"),
        (lambda v: np.where(np.eye(3, v) > 0, np.nan, 0.0), "NaN at frame 0"),
        (lambda v: np.where(np.eye(3, v) > 0, np.inf, 0.0), r"\+inf at frame 0"),
        (lambda v: np.full((3, v), -np.inf), "-inf in every column"),
        (lambda v: np.array([["a"] * v]), "numeric"),
    ],
)
def test_bad_logits(hello_decoder, make, message):
    # one call's logits are named as such; a batch's by their place in the list
    with pytest.raises(DecoderInputError, match=f"^logits: .*{message}"):
        hello_decoder.decode(make(len(WORDS_LABELS)))
    with pytest.raises(ValueError, match=r"^logits: "):
        hello_decoder.decode_beams(make(len(WORDS_LABELS)))
    with pytest.raises(DecoderInputError, match=r"^logits_list\[1\]: "):
        hello_decoder.decode_batch(None, [np.zeros((2, len(WORDS_LABELS)), np.float32), make(len(WORDS_LABELS))])


def test_bad_parameters(hello_decoder):
    x = emissions("hello", WORDS_LABELS)
    with pytest.raises(DecoderInputError, match="beam_width"):
        hello_decoder.decode(x, beam_width=0)
    with pytest.raises(DecoderInputError, match="token_min_logp"):
        hello_decoder.decode(x, token_min_logp=float("nan"))
    with pytest.raises(DecoderInputError, match="num_threads"):
        hello_decoder.decode_batch(None, [x], num_threads=0)
    with pytest.raises(DecoderInputError, match=r"logits_list\[1\]"):
        hello_decoder.decode_batch(None, [x, x[:, :3]])
    with pytest.raises(DecoderInputError, match="lm_start_state"):
        hello_decoder.decode(x, lm_start_state="nope")


def test_batch_equals_single_and_threads_agree(hello_decoder):
    xs = [
        emissions(t, WORDS_LABELS, noise=1.5, seed=i)
        for i, t in enumerate(["hello world", "world", "hello", "cold"] * 3)
    ]
    single = [hello_decoder.decode(x) for x in xs]
    assert hello_decoder.decode_batch(None, xs, num_threads=1) == single
    assert hello_decoder.decode_batch(None, xs, num_threads=3) == single
    beams = hello_decoder.decode_beams_batch(None, xs, num_threads=2)
    assert [b[0].text for b in beams] == [hello_decoder.decode_beams(x)[0].text for x in xs]
    assert len(beams[0][0]) == 4  # pyctcdecode's (text, frames, logit_score, lm_score)
    assert beams[0][0].char_frames


def test_concurrent_python_threads_share_one_decoder(hello_decoder):
    xs = [emissions("hello world", WORDS_LABELS, noise=1.0, seed=i) for i in range(8)]
    expected = [hello_decoder.decode(x) for x in xs]
    results: dict[int, str] = {}

    def work(i: int) -> None:
        results[i] = hello_decoder.decode(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(8)] == expected


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 60), max_size=6))
def test_stream_equals_whole(tmp_path_factory, seed, cuts):
    p = tmp_path_factory.mktemp("lm") / "hello.arpa"
    p.write_text(HELLO_ARPA)
    dec = build_ctcdecoder(WORDS_LABELS, str(p))
    x = emissions("hello world hello cold", WORDS_LABELS, noise=2.0, seed=seed)
    whole = dec.decode_beams(x)
    stream = dec.stream(prune_history=False)  # decode_beams' setting
    default = dec.stream()  # decode()'s setting
    bounds = sorted({0, len(x), *[c % (len(x) + 1) for c in cuts]})
    for a, b in itertools.pairwise(bounds):
        stream.feed(x[a:b])
        default.feed(x[a:b])
        assert isinstance(stream.partial().text, str)
    assert stream.frames_seen == len(x)
    streamed = stream.finalize()
    assert [b.text for b in streamed] == [b.text for b in whole]
    assert [b.lm_score for b in streamed] == pytest.approx([b.lm_score for b in whole])
    assert [b.text_frames for b in streamed] == [b.text_frames for b in whole]
    assert default.finalize()[0].text == dec.decode(x)


def test_lm_start_state_continues_context(hello_decoder):
    first = hello_decoder.decode_beams(emissions("hello", WORDS_LABELS))[0]
    assert first.last_lm_state is not None
    second = hello_decoder.decode_beams(emissions("world", WORDS_LABELS), lm_start_state=first.last_lm_state)[0]
    fresh = hello_decoder.decode_beams(emissions("world", WORDS_LABELS))[0]
    assert second.text == fresh.text == "world"
    assert second.lm_score > fresh.lm_score  # p(world | hello) > p(world | <s>)


def test_reset_params_and_eos_modes(hello_decoder):
    x = emissions("hello world ", WORDS_LABELS)
    base = hello_decoder.decode_beams(x)[0].lm_score
    hello_decoder.reset_params(alpha=1.0, beta=0.0)
    assert hello_decoder.decode_beams(x)[0].lm_score != base
    hello_decoder.reset_params(alpha=0.5, beta=1.5)
    assert hello_decoder.decode_beams(x)[0].lm_score == pytest.approx(base)
    # a trailing delimiter: pyctcdecode's end scoring adds an unknown-word penalty that the corrected one does not
    hello_decoder.pyctcdecode_eos = False
    fixed = hello_decoder.decode_beams(x)[0]
    hello_decoder.pyctcdecode_eos = True
    assert fixed.text == "hello world" and fixed.lm_score > base
    with pytest.raises(LanguageModelError):
        hello_decoder.reset_params(alpha="x")


def test_save_and_load_dir_roundtrip(tmp_path, hello_decoder):
    out = tmp_path / "decoder"
    hello_decoder.save_to_dir(out)
    assert sorted(p.name for p in out.iterdir()) == ["alphabet.json", "language_model"]
    back = BeamSearchDecoderCTC.load_from_dir(out)
    x = emissions("hello cold", WORDS_LABELS, noise=1.0)
    assert back.decode_beams(x)[0].lm_score == pytest.approx(hello_decoder.decode_beams(x)[0].lm_score)
    assert back.alphabet == hello_decoder.alphabet
    no_lm = tmp_path / "nolm"
    build_ctcdecoder(LABELS).save_to_dir(no_lm)
    assert BeamSearchDecoderCTC.load_from_dir(no_lm).language_model is None
    with pytest.raises(AlphabetError, match=r"no alphabet\.json"):
        BeamSearchDecoderCTC.load_from_dir(tmp_path)
    (no_lm / "alphabet.json").write_text('{"labels": ["a", "a"], "is_bpe": false}')
    with pytest.raises(AlphabetError, match="duplicate"):
        BeamSearchDecoderCTC.load_from_dir(no_lm)


def test_bpe_vocabulary_words_and_frames():
    labels = ["", "▁he", "llo", "▁wor", "ld", "▁⁇▁"]
    dec = build_ctcdecoder(labels)
    assert dec.alphabet.is_bpe
    seq = ["▁he", "llo", "▁wor", "ld"]
    rows = []
    for tok in seq:
        r = np.full(len(labels), -10.0)
        r[labels.index(tok)] = 0.0
        rows.append(r)
        b = np.full(len(labels), -10.0)
        b[0] = 0.0
        rows.append(b)
    x = np.array(rows, dtype=np.float32)
    beam = dec.decode_beams(x)[0]
    assert beam.text == "hello world"
    assert beam.text_frames == [("hello", (0, 3)), ("world", (4, 7))]


def test_language_model_from_kenlm_like_object(tmp_path):
    p = tmp_path / "hello.arpa"
    p.write_text(HELLO_ARPA)

    class FakeKenlmModel:  # the two attributes pyctcdecode users' kenlm.Model carries that w2vlm reads
        path = str(p).encode()

        def BaseScore(self, *args):  # pragma: no cover - never called
            raise AssertionError

    lm = LanguageModel(FakeKenlmModel(), alpha=0.5)
    dec = BeamSearchDecoderCTC(Alphabet.build_alphabet(WORDS_LABELS), lm)
    assert dec.decode(emissions("hello world", WORDS_LABELS)) == "hello world"


def test_word_confidences_range_order_and_pickling(hello_decoder):
    x = emissions("hello world cold", WORDS_LABELS, noise=0.3, seed=2)
    # make "cold" acoustically doubtful: its "c" competes with "g" (no such word in the LM)
    i_c = next(i for i in range(len(x)) if x[i, WORDS_LABELS.index("c")] > -1 and i > 30)
    x[i_c, WORDS_LABELS.index("g")] = x[i_c, WORDS_LABELS.index("c")] - 0.2
    beams = hello_decoder.decode_beams(x)
    top = beams[0]
    conf = top.word_confidences
    assert len(conf) == len(top.text_frames) == 3
    assert all(0.0 <= c <= 1.0 for c in conf)
    assert conf[0] > 0.9  # "hello": clear acoustics, likely under the LM
    assert conf[2] < conf[0]
    for b in beams:
        assert len(b.word_confidences) == len(b.text_frames)
    words = top.words
    assert [w["word"] for w in words] == top.text.split()
    assert words[0]["confidence"] == conf[0] and words[0]["start"] == top.text_frames[0][1][0]
    back = pickle.loads(pickle.dumps(top))
    assert back.word_confidences == conf
    batch = hello_decoder.decode_beams_batch(None, [x])[0][0]
    assert batch.word_confidences == pytest.approx(conf)
    no_lm = build_ctcdecoder(WORDS_LABELS).decode_beams(x)[0]
    assert all(0.0 <= c <= 1.0 for c in no_lm.word_confidences)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 50), gc_min=st.sampled_from([16, 64, 512]))
def test_garbage_collection_keeps_results_identical(tmp_path_factory, seed, chunk, gc_min):
    from w2vlm import _core

    p = tmp_path_factory.mktemp("lm") / "hello.arpa"
    p.write_text(HELLO_ARPA)
    dec = build_ctcdecoder(WORDS_LABELS, str(p))
    x = to_log_probs(
        emissions("hello world cold hello word world " * 3, WORDS_LABELS, noise=2.5, seed=seed), len(WORDS_LABELS)
    )
    for prune_history in (False, True):
        o_whole = dec._options(100, -10.0, -5.0, prune_history, None, 10.0)
        o_whole.gc_min_nodes = 1 << 30
        whole = _core.decode(dec._native_alphabet, dec.native_lm(), o_whole, x)
        o_gc = dec._options(100, -10.0, -5.0, prune_history, ["cold world"], 0.0)
        o_gc.gc_min_nodes = gc_min
        search = _core.BeamSearch(dec._native_alphabet, dec.native_lm(), o_gc)
        for a in range(0, len(x), chunk):
            search.advance(dec._native_alphabet, np.ascontiguousarray(x[a : a + chunk]))
        streamed = search.finalize()
        assert [h.text for h in streamed] == [h.text for h in whole]
        assert [h.score for h in streamed] == pytest.approx([h.score for h in whole], abs=1e-9)
        assert [h.words for h in streamed] == [h.words for h in whole]
        assert [h.tokens for h in streamed] == [h.tokens for h in whole]


def test_batch_normalises_natively_like_python(hello_decoder):
    xs = [emissions("hello world", WORDS_LABELS, noise=1.0, seed=s) for s in range(4)]
    probs = [np.exp(to_log_probs(x, len(WORDS_LABELS))) for x in xs]
    masked = xs[0].copy()
    masked[:, 5] = -np.inf  # a column the model never emits
    single = [hello_decoder.decode(x) for x in [*xs, *probs, masked]]
    assert hello_decoder.decode_batch(None, [*xs, *probs, masked], num_threads=2) == single
