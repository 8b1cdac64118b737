"""build-lm's bounded-memory path: spilled counting runs against the in-memory reference estimator, wide keys,
gzip output, clean-up on failure, the memory option, and the native word reader."""

from __future__ import annotations

import gzip
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_support import Arpa, assert_closed, assert_normalized, make_corpus, ngram_counts, write_text
from w2vlm.errors import LanguageModelError
from w2vlm.lm import build_lm


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_corpus(tmp_path_factory.mktemp("lmcorpus"))


# ---------------------------------------------------------------------------------------------------------
# The bounded-memory path: spilled runs, wide keys, the in-memory reference estimator, clean-up.


def _numpy_reference_arpa(text: Path, out: Path, order: int, prune: list[int] | None) -> bytes:
    """The ARPA of the in-memory numpy estimator (the pre-spilling implementation, kept as a reference)."""
    from w2vlm.lm import read_corpus
    from w2vlm.lm.arpa import write_arpa
    from w2vlm.lm.kneser_ney import estimate_kneser_ney
    from w2vlm.lm.normalize import TextNormalizer

    model = estimate_kneser_ney(read_corpus([text], TextNormalizer()), order=order, prune=prune)
    write_arpa(model, out)
    return out.read_bytes()


@pytest.mark.parametrize(("order", "prune"), [(3, None), (4, [0, 1, 1]), (5, [0, 0, 1])])
def test_spilled_counting_gives_identical_arpa(corpus: dict, tmp_path: Path, order: int, prune: list | None) -> None:
    big = build_lm([corpus["train_path"]], tmp_path / "big.arpa", order=order, prune=prune, memory="1G")
    tiny = build_lm(
        [corpus["train_path"]], tmp_path / "tiny.arpa", order=order, prune=prune, memory="64K", threads=2,
        temp_dir=tmp_path / "spill",
    )  # fmt: skip
    assert big.spill_runs == 0
    assert tiny.spill_runs > 10 * (order - 1), "the tiny budget should force many runs"
    assert (tmp_path / "tiny.arpa").read_bytes() == (tmp_path / "big.arpa").read_bytes()
    assert tiny.ngram_counts == big.ngram_counts
    assert list((tmp_path / "spill").iterdir()) == [], "spill files left behind"
    ref = _numpy_reference_arpa(corpus["train_path"], tmp_path / "ref.arpa", order, prune)
    assert (tmp_path / "big.arpa").read_bytes() == ref


def test_wide_keys_and_gzip_output(tmp_path: Path) -> None:
    # 5000 word types: 13 bits a word, so 5-grams need 128-bit keys; order 11 needs more and falls back to the
    # in-memory estimator.
    rng = random.Random(3)
    words = [f"w{i}" for i in range(5000)]
    sents = [[rng.choice(words[: rng.choice([50, 5000])]) for _ in range(rng.randint(1, 14))] for _ in range(2000)]
    text = write_text(tmp_path / "t.txt", sents)
    for order in (5, 11):
        a = build_lm([text], tmp_path / f"a{order}.arpa.gz", order=order, normalize=False, memory="64K")
        b = build_lm([text], tmp_path / f"b{order}.arpa", order=order, normalize=False)
        with gzip.open(tmp_path / f"a{order}.arpa.gz", "rb") as f:
            assert f.read() == (tmp_path / f"b{order}.arpa").read_bytes()
        assert a.ngram_counts == b.ngram_counts
    counts: list[Counter] = [Counter() for _ in range(6)]
    for sent in sents:
        toks = ["<s>", *sent, "</s>"]
        for n in range(1, 6):
            counts[n].update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    arpa = Arpa(tmp_path / "b5.arpa")
    for n in range(2, 6):
        assert {g for g in arpa.prob if len(g) == n} == set(counts[n])
    assert_closed(arpa)


def test_spill_folder_removed_on_failure(corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import w2vlm.lm.scalable as scalable

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(scalable.ScalableModel, "write_arpa", boom)
    spill = tmp_path / "spill"
    with pytest.raises(KeyboardInterrupt):
        build_lm([corpus["train_path"]], tmp_path / "lm.arpa", order=3, memory="64K", temp_dir=spill)
    assert list(spill.iterdir()) == []
    assert not (tmp_path / "lm.arpa").exists()


def test_memory_option() -> None:
    from w2vlm.lm import parse_memory

    assert parse_memory("1G") == 1 << 30
    assert parse_memory("512m") == 512 << 20
    assert parse_memory("64KiB") == 64 << 10
    assert parse_memory(1 << 20) == 1 << 20
    assert parse_memory("10%") > 0
    for bad in ("lots", "1X", "12", "-1G"):
        with pytest.raises(LanguageModelError, match="memory"):
            parse_memory(bad)


def test_temp_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello world\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for bad in (blocker / "sub", blocker):
        with pytest.raises(LanguageModelError, match=rf"^temp folder {bad}: cannot create a folder"):
            build_lm(text, tmp_path / "lm.arpa", temp_dir=bad)


def test_counting_tables_get_what_the_process_does_not_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """--memory bounds the whole build while counting: the tables get the budget less what is resident (the corpus,
    the interpreter) and the threads' buffers; a process already over the budget still counts, in an eighth."""
    import w2vlm.lm.scalable as scalable

    monkeypatch.setattr(scalable, "resident_bytes", lambda: 300 << 20)
    assert scalable.counting_budget(1 << 30) == (1 << 30) - (300 << 20) - (32 << 20)
    monkeypatch.setattr(scalable, "resident_bytes", lambda: 2 << 30)
    assert scalable.counting_budget(1 << 30) == (1 << 30) // 8
    monkeypatch.setattr(scalable, "resident_bytes", lambda: None)
    assert scalable.counting_budget(1 << 30) == (1 << 30) - (32 << 20)


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None


if given is not None:

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        sents=st.lists(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=9), min_size=1, max_size=40),
        order=st.integers(1, 5),
        memory=st.sampled_from(["64K", "1G"]),
    )
    def test_counts_and_probabilities_match_brute_force(
        tmp_path_factory: pytest.TempPathFactory, sents: list[list[str]], order: int, memory: str
    ) -> None:
        d = tmp_path_factory.mktemp("prop")
        text = write_text(d / "t.txt", sents)
        stats = build_lm([text], d / "lm.arpa", order=order, memory=memory)
        arpa = Arpa(d / "lm.arpa")
        counts = ngram_counts(sents, order)
        for n in range(1, order + 1):
            assert {g for g in arpa.prob if len(g) == n} == set(counts[n]) | ({("<unk>",)} if n == 1 else set())
        assert stats.ngram_counts == [arpa.declared[n] for n in range(1, order + 1)]
        assert_closed(arpa)
        assert_normalized(arpa, per_order=10)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab'z \t\r\n\x0b\x0c\x1c\x1f\x85\xa0é\u2028\u3000")), max_size=60))
def test_native_word_reader_splits_as_str_split(text):
    # build-lm's native reader: the words of str.split(), line by line ('\n' only), empty lines dropped
    from w2vlm import _lmbuild
    from w2vlm.lm.corpus import _tokenize

    index = _lmbuild.WordIndex(["<unk>", "<s>", "</s>"])
    ids, lens = _tokenize(text, index)
    words = [w.decode("utf-8") for w in index.words()]
    lines = [line.split() for line in text.split("\n")]
    lines = [line for line in lines if line]
    assert [len(line) for line in lines] == lens.tolist()
    assert [words[i] for i in ids] == [w for line in lines for w in line]
    assert len(set(words)) == len(words)
