"""The decoder as a drop-in for pyctcdecode: its attributes, its arithmetic, batch = single, fused LMs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_decoder import HELLO_ARPA, WORDS_LABELS, emissions
from w2vlm.decoder import Alphabet, BeamSearchDecoderCTC, LanguageModel, MultiLanguageModel, build_ctcdecoder
from w2vlm.errors import DecoderReleasedError, LanguageModelError, W2vlmError

UNIGRAMS = ["hello", "world", "cold", "word"]


@pytest.fixture(scope="module")
def hello_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("lm") / "hello.arpa"
    p.write_text(HELLO_ARPA)
    return str(p)


def _plain(beams):
    return [(b[0], list(b[-3]), b[-2], b[-1]) for b in beams]


def test_scores_are_pyctcdecodes_to_the_last_bit(hello_path):
    # reference: pyctcdecode 0.5.0 on the same float64 input, LM and parameters
    dec = build_ctcdecoder(WORDS_LABELS, hello_path, UNIGRAMS, alpha=0.7, beta=1.0)
    x = emissions("hello world cold word", WORDS_LABELS, noise=2.0, seed=7).astype(np.float64)
    top = dec.decode_beams(x)[0]
    assert top.text == "hello world cold word"
    assert top.text_frames == [("hello", (0, 13)), ("world", (18, 31)), ("cold", (36, 46)), ("word", (51, 61))]
    assert top.logit_score == -1.7957062788279283
    assert top.lm_score == -7.466563561322667


@settings(max_examples=20, deadline=None)
@given(
    seeds=st.lists(st.integers(0, 10_000), min_size=1, max_size=6),
    threads=st.integers(1, 4),
    wide=st.booleans(),
    prune_history=st.booleans(),
    multi=st.booleans(),
)
def test_decode_beams_batch_is_decode_beams_exactly(hello_path, seeds, threads, wide, prune_history, multi):
    lm = LanguageModel(hello_path, UNIGRAMS, alpha=0.6, beta=1.2)
    if multi:
        lm = MultiLanguageModel([lm, LanguageModel(hello_path, None, alpha=0.3, beta=0.5, score_boundary=False)])
    dec = BeamSearchDecoderCTC(Alphabet.build_alphabet(WORDS_LABELS), lm)
    xs = [
        emissions("hello world cold word"[: 5 + s % 17], WORDS_LABELS, noise=3.0, seed=s).astype(
            np.float64 if wide and i % 2 == 0 else np.float32
        )
        for i, s in enumerate(seeds)
    ]
    kw = {"beam_width": 24, "prune_history": prune_history}
    batch = dec.decode_beams_batch(None, xs, num_threads=threads, **kw)
    single = [dec.decode_beams(x, **kw) for x in xs]
    assert [_plain(b) for b in batch] == [_plain(b) for b in single]  # == on floats: the same bits
    assert dec.decode_batch(None, xs, num_threads=threads) == [dec.decode(x) for x in xs]


def test_model_container_and_reached_into_attributes(hello_path):
    kenlm = pytest.importorskip("kenlm")

    km = kenlm.Model(hello_path)
    dec = BeamSearchDecoderCTC(Alphabet.build_alphabet(WORDS_LABELS), LanguageModel(km, UNIGRAMS))
    lm = dec.model_container[dec._model_key]
    assert lm is dec.language_model is dec._language_model
    assert lm._kenlm_model is km and lm._kenlm_model.path.decode("utf-8") == hello_path
    assert lm._unigram_set == set(UNIGRAMS)
    native = LanguageModel(hello_path)
    assert native._kenlm_model.path == os.fsencode(hello_path) and "hello" in native._kenlm_model
    assert native._unigram_set == set(native.ngram.vocab()) - {"<unk>", "<s>", "</s>"}  # no unigrams: the LM's
    assert BeamSearchDecoderCTC._LANGUAGE_MODEL_SERIALIZED_DIRECTORY == "language_model"
    lm.alpha = 0.0  # as transformers sets parameters: read at the next decoding
    x = emissions("hello world", WORDS_LABELS, noise=1.0, seed=1)
    no_lm = build_ctcdecoder(WORDS_LABELS).decode_beams(x)[0]
    assert dec.decode_beams(x)[0].logit_score == no_lm.logit_score
    dec.cleanup()
    with pytest.raises(DecoderReleasedError) as err:
        dec.decode(x)
    assert isinstance(err.value, KeyError) and isinstance(err.value, W2vlmError)


def test_infinite_parameters_are_kept_and_used(hello_path):
    dec = build_ctcdecoder(WORDS_LABELS, hello_path, ["hello", "world"])
    dec.reset_params(alpha=math.inf, beta=-math.inf, unk_score_offset=math.inf, lm_score_boundary=False)
    assert (dec.language_model.alpha, dec.language_model.beta) == (math.inf, -math.inf)
    dec.reset_params(alpha=0.5, beta=1.0, unk_score_offset=-math.inf)
    assert dec.language_model.unk_score_offset == -math.inf
    x = emissions("hello cold world", WORDS_LABELS, noise=0.5, seed=3)
    # the emissions leave no other path: an unknown word costs -inf and still comes out, as in pyctcdecode
    top = dec.decode_beams(x)[0]
    assert top.text == "hello cold world" and top.lm_score == -math.inf
    with pytest.raises(LanguageModelError) as err:
        dec.reset_params(alpha="high")
    assert isinstance(err.value, ValueError)


def test_multi_language_model_is_the_mean_of_its_lms(hello_path):
    a = LanguageModel(hello_path, UNIGRAMS, alpha=0.2, beta=0.5, unk_score_offset=-4.0)
    b = LanguageModel(hello_path, UNIGRAMS, alpha=1.0, beta=2.5, unk_score_offset=-12.0)
    mean = LanguageModel(hello_path, UNIGRAMS, alpha=0.6, beta=1.5, unk_score_offset=-8.0)
    alphabet = Alphabet.build_alphabet(WORDS_LABELS)
    multi = BeamSearchDecoderCTC(alphabet, MultiLanguageModel([a, b]))
    ref = BeamSearchDecoderCTC(alphabet, mean)
    x = emissions("hello world cold word", WORDS_LABELS, noise=2.5, seed=11)
    got, want = multi.decode_beams(x, beam_width=8), ref.decode_beams(x, beam_width=8)
    assert [g.text for g in got] == [w.text for w in want]
    assert [g.lm_score for g in got] == pytest.approx([w.lm_score for w in want], rel=1e-9)
    assert multi.language_model.order == a.order
    assert multi.language_model.score_partial_token("hel") == 0.0
    assert multi.language_model.score_partial_token("xyzxyzxy") == pytest.approx(-8.0 * 8 / 6)
    state = got[0].last_lm_state
    assert isinstance(state, list) and len(state) == 2
    again = multi.decode_beams(x[:0], lm_start_state=state)[0]
    assert again.text == ""
    with pytest.raises(LanguageModelError):
        MultiLanguageModel([a])


def test_best_path_frames_option(hello_path):
    x = emissions("hello world", WORDS_LABELS, frames_per_char=3, noise=2.0, seed=5)
    last = build_ctcdecoder(WORDS_LABELS, hello_path).decode_beams(x)[0]
    best = build_ctcdecoder(WORDS_LABELS, hello_path, best_path_frames=True).decode_beams(x)[0]
    assert (last.text, last.logit_score, last.lm_score) == (best.text, best.logit_score, best.lm_score)
    assert [w for w, _ in last.text_frames] == [w for w, _ in best.text_frames]


def test_language_model_dir_needs_pyctcdecodes_three_files(hello_path, tmp_path):
    lm = LanguageModel(hello_path, UNIGRAMS)
    lm.save_to_dir(tmp_path)
    assert LanguageModel.load_from_dir(tmp_path)._unigram_set == lm._unigram_set
    (tmp_path / "unigrams.txt").unlink()
    with pytest.raises(LanguageModelError, match=r"unigrams\.txt"):
        LanguageModel.load_from_dir(tmp_path)


def test_a_decoder_pickles_as_pyctcdecodes_and_loads_its_lm_where_it_is_missing(hello_path, tmp_path):
    """``pool.map(decoder.decode, ...)`` needs the decoder pickled. As in pyctcdecode, the LM stays in the
    class-level ``model_container`` (a fork-based pool and copies in the process share it); a process that does
    not hold it (a spawn-based pool) loads it again from its file."""
    import copy
    import multiprocessing
    import pickle

    dec = build_ctcdecoder(WORDS_LABELS, hello_path, UNIGRAMS, alpha=0.7, beta=1.0)
    xs = [emissions(t, WORDS_LABELS, noise=2.0, seed=i) for i, t in enumerate(["hello world", "cold word", "word"])]
    want = [dec.decode(x) for x in xs]
    same = pickle.loads(pickle.dumps(dec))
    assert same.language_model is dec.language_model and [same.decode(x) for x in xs] == want
    assert copy.deepcopy(dec).decode(xs[0]) == want[0]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(dec.decode, xs) == want
    # elsewhere: the LM loaded from its recipe, with the same unigrams and parameters
    key = dec._model_key
    recipe = pickle.dumps(dec)
    held = BeamSearchDecoderCTC.model_container.pop(key)
    try:
        other = pickle.loads(recipe)
        assert other.language_model is not held and other.language_model.alpha == 0.7
        assert other.language_model.unigrams == held.unigrams and [other.decode(x) for x in xs] == want
    finally:
        BeamSearchDecoderCTC.model_container[key] = held
    fused = build_ctcdecoder(WORDS_LABELS)
    fused.model_container[fused._model_key] = MultiLanguageModel([LanguageModel(hello_path), LanguageModel(hello_path)])
    assert pickle.loads(pickle.dumps(fused.language_model)).language_models[1].path == held.path
    # an LM whose file is gone cannot be loaded again: named, at pickling
    gone = tmp_path / "gone.arpa"
    gone.write_text(Path(hello_path).read_text())
    orphan = build_ctcdecoder(WORDS_LABELS, str(gone))
    gone.unlink()
    with pytest.raises(LanguageModelError, match=r"cannot be pickled: it was not loaded from a file that still exists"):
        pickle.dumps(orphan)


def test_pyctcdecodes_modules_and_names_import_with_the_prefix_changed():
    from w2vlm.decoder import constants
    from w2vlm.decoder.decoder import LMState, WordFrames  # noqa: F401
    from w2vlm.decoder.language_model import AbstractLanguageModel, load_unigram_set_from_arpa
    from w2vlm.model import DEFAULT_MODEL_DIR

    # pyctcdecode 0.5.0's constants.py
    want = {
        "DEFAULT_ALPHA": 0.5,
        "DEFAULT_BETA": 1.5,
        "DEFAULT_UNK_LOGP_OFFSET": -10.0,
        "DEFAULT_BEAM_WIDTH": 100,
        "DEFAULT_HOTWORD_WEIGHT": 10.0,
        "DEFAULT_PRUNE_LOGP": -10.0,
        "DEFAULT_PRUNE_BEAMS": False,
        "DEFAULT_MIN_TOKEN_LOGP": -5.0,
        "DEFAULT_SCORE_LM_BOUNDARY": True,
        "AVG_TOKEN_LEN": 6,
        "MIN_TOKEN_CLIP_P": 1e-15,
        "LOG_BASE_CHANGE_FACTOR": 1.0 / math.log10(math.e),
    }
    assert {k: getattr(constants, k) for k in want} == want
    assert issubclass(LanguageModel, AbstractLanguageModel) and issubclass(MultiLanguageModel, AbstractLanguageModel)
    words = load_unigram_set_from_arpa(DEFAULT_MODEL_DIR / "language_model" / "lm.arpa")
    assert "children" in words and "<s>" not in words and len(words) > 30_000


def test_score_takes_pyctcdecodes_signature_too():
    """``lm.score(state, word, is_last_word)`` as pyctcdecode's LanguageModel (values from pyctcdecode 0.5.0 with
    kenlm on the embedded LM, no unigrams given, default parameters); ``lm.score(text)`` stays KenLM's."""
    from w2vlm.model import DEFAULT_MODEL_DIR

    lm = LanguageModel(str(DEFAULT_MODEL_DIR / "language_model" / "lm.arpa"))
    first, state = lm.score(lm.get_start_state(), "the")
    assert first == pytest.approx(0.5050322619689505, abs=1e-9)
    assert lm.score(state, "children", is_last_word=True)[0] == pytest.approx(-1.6321754263809876, abs=1e-9)
    assert lm.score(lm.get_start_state(), "zzzqq")[0] == pytest.approx(-17.290877640470676, abs=1e-9)
    assert lm.score("the children") == pytest.approx(-3.5847910046577454, abs=1e-6)
    fused = MultiLanguageModel([lm, lm])
    assert fused.score(fused.get_start_state(), "the")[0] == pytest.approx(first)
    with pytest.raises(LanguageModelError, match="expected a text"):
        lm.score(3)


def test_labels_that_do_not_fit_the_lms_words_are_warned_about(hello_path, caplog):
    """pyctcdecode reads the unigrams from the ARPA file when none are given and warns when the labels cannot
    spell them (upper-case labels with a lower-case LM decoded in silence)."""
    with caplog.at_level("WARNING", logger="w2vlm.decoder"):
        build_ctcdecoder([label.upper() for label in WORDS_LABELS], hello_path)
    assert "Unigrams and labels don't seem to agree" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="w2vlm.decoder"):
        build_ctcdecoder(WORDS_LABELS, hello_path)
    assert "don't seem to agree" not in caplog.text


def test_unigrams_may_be_a_path(hello_path, tmp_path):
    """A string for ``unigrams`` is the path of a unigrams.txt (pyctcdecode took its characters: a mistyped
    path gave a decoder with a vocabulary of letters, silently)."""
    words = tmp_path / "unigrams.txt"
    words.write_text("\n".join(UNIGRAMS) + "\n")
    assert build_ctcdecoder(WORDS_LABELS, hello_path, str(words)).language_model.unigrams == sorted(UNIGRAMS)
    assert LanguageModel(hello_path, words).unigrams == sorted(UNIGRAMS)
    with pytest.raises(LanguageModelError, match=r"typo\.txt: unigrams file not found"):
        build_ctcdecoder(WORDS_LABELS, hello_path, str(tmp_path / "typo.txt"))
