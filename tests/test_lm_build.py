"""Tests of w2vlm.lm (build-lm): modified Kneser-Ney estimation, ARPA output, pruning, vocabulary limit,
normalization, input validation, CLI.

The ARPA files are read back with a small reader written here, independent of the package, and compared with
a plain-Python reference implementation of interpolated modified Kneser-Ney.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from lm_support import (
    Arpa,
    assert_closed,
    assert_normalized,
    contexts_to_check,
    make_corpus,
    ngram_counts,
    predictable,
    write_text,
)
from w2vlm.errors import LanguageModelError
from w2vlm.lm import allowed_chars_from_file, build_lm, normalize_text, unigrams_from_arpa


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_corpus(tmp_path_factory.mktemp("lmcorpus"))


# ---------------------------------------------------------------------------------------------------------
# A reference interpolated modified Kneser-Ney, written plainly with dicts.


def reference_kn(sentences: list[list[str]], order: int):  # type: ignore[no-untyped-def]
    counts = ngram_counts(sentences, order)
    adj: list[dict] = [{} for _ in range(order + 1)]
    adj[order] = dict(counts[order])
    for n in range(1, order):
        left = Counter(g[1:] for g in counts[n + 1])
        adj[n] = {g: (c if g[0] == "<s>" else left[g]) for g, c in counts[n].items()}
    del adj[1][("<s>",)]
    disc = {}
    for n in range(1, order + 1):
        t = Counter(min(c, 5) for c in adj[n].values())
        y = t[1] / (t[1] + 2 * t[2])
        disc[n] = (0.0, 1 - 2 * y * t[2] / t[1], 2 - 3 * y * t[3] / t[2], 3 - 4 * y * t[4] / t[3])
    vocab = sorted({w for s in sentences for w in s} | {"</s>", "<unk>"})
    ctx_total: list[Counter] = [Counter() for _ in range(order + 1)]
    ctx_disc: list[Counter] = [Counter() for _ in range(order + 1)]
    for n in range(1, order + 1):
        for g, a in adj[n].items():
            ctx_total[n][g[:-1]] += a
            ctx_disc[n][g[:-1]] += disc[n][min(a, 3)]

    def prob(word: str, context: tuple[str, ...]) -> float:
        n = len(context) + 1
        if n == 1:
            total = ctx_total[1][()]
            a = adj[1].get((word,), 0)
            return max(a - disc[1][min(a, 3)], 0) / total + ctx_disc[1][()] / total / len(vocab)
        lower = prob(word, context[1:])
        total = ctx_total[n][context]
        if total == 0:
            return lower
        a = adj[n].get((*context, word), 0)
        return max(a - disc[n][min(a, 3)], 0) / total + ctx_disc[n][context] / total * lower

    return prob, vocab, disc, counts


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [2, 3, 4])
def test_matches_reference_kneser_ney_and_is_normalized(corpus: dict, order: int) -> None:
    out = corpus["dir"] / f"kn{order}.arpa"
    stats = build_lm([corpus["train_path"]], out, order=order)
    arpa = Arpa(out)
    assert arpa.order == order
    assert stats.ngram_counts == [arpa.declared[n] for n in range(1, order + 1)]
    assert arpa.prob[("<s>",)] == -99
    assert ("</s>",) in arpa.prob and ("<unk>",) in arpa.prob
    assert_closed(arpa)
    assert_normalized(arpa)

    ref, vocab, disc, counts = reference_kn(corpus["train"], order)
    assert sorted(predictable(arpa)) == vocab
    for n in range(1, order + 1):
        assert stats.discounts[n - 1] == pytest.approx(disc[n][1:], rel=1e-9)
        # Unpruned: every n-gram of the text is in the model.
        assert arpa.declared[n] == len(counts[n]) + (1 if n == 1 else 0)  # + <unk>
    rng = random.Random(order)
    for ctx in contexts_to_check(arpa, 25):
        ctx = ctx[-(order - 1) :] if order > 1 else ()
        for w in [*rng.sample(vocab, 40), "</s>", "<unk>"]:
            got = arpa.log10p(w, ctx)
            want = math.log10(ref(w, ctx))
            assert got == pytest.approx(want, abs=5e-5), f"p({w} | {ctx}): ARPA {got}, reference {want}"


def test_heldout_perplexity_beats_add_one(corpus: dict) -> None:
    order = 3
    out = corpus["dir"] / "ppl.arpa"
    stats = build_lm([corpus["train_path"]], out, order=order, heldout_files=[corpus["held_path"]])
    arpa = Arpa(out)
    logp, n = 0.0, 0
    for s in corpus["held"]:
        lp, k = arpa.sentence_log10(s)
        logp += lp
        n += k
    kn_ppl = 10 ** (-logp / n)
    assert stats.heldout_perplexity == pytest.approx(kn_ppl, rel=1e-4)

    # Add-one smoothing of the same order on the same training text.
    vocab = {w for s in corpus["train"] for w in s} | {"</s>", "<unk>"}
    ngram: Counter = Counter()
    ctx: Counter = Counter()
    for s in corpus["train"]:
        toks = ["<s>", *s, "</s>"]
        for i in range(1, len(toks)):
            h = tuple(toks[max(0, i - order + 1) : i])
            ngram[(*h, toks[i])] += 1
            ctx[h] += 1
    logp_add1 = 0.0
    for s in corpus["held"]:
        toks = ["<s>", *[w if w in vocab else "<unk>" for w in s], "</s>"]
        for i in range(1, len(toks)):
            h = tuple(toks[max(0, i - order + 1) : i])
            logp_add1 += math.log10((ngram[(*h, toks[i])] + 1) / (ctx[h] + len(vocab)))
    add1_ppl = 10 ** (-logp_add1 / n)
    assert kn_ppl < 0.9 * add1_ppl, f"KN perplexity {kn_ppl:.2f} vs add-one {add1_ppl:.2f}"


def test_pruning_drops_rare_ngrams_and_stays_normalized(corpus: dict) -> None:
    full = build_lm([corpus["train_path"]], corpus["dir"] / "full.arpa", order=3)
    out = corpus["dir"] / "pruned.arpa"
    stats = build_lm([corpus["train_path"]], out, order=3, prune=[0, 1, 1], heldout_files=[corpus["held_path"]])
    arpa = Arpa(out)
    _, _, _, counts = reference_kn(corpus["train"], 3)
    trigrams = [g for g in arpa.prob if len(g) == 3]
    assert all(counts[3][g] >= 2 for g in trigrams)
    assert len(trigrams) == sum(1 for c in counts[3].values() if c >= 2)
    # Bigrams seen once survive only as prefix or suffix of a kept trigram.
    needed = {g[:2] for g in trigrams} | {g[1:] for g in trigrams}
    for g in (g for g in arpa.prob if len(g) == 2):
        assert counts[2][g] >= 2 or g in needed, f"{g} seen {counts[2][g]} times kept without need"
    assert stats.ngram_counts[1] < full.ngram_counts[1] and stats.ngram_counts[2] < full.ngram_counts[2]
    assert stats.ngram_counts[0] == full.ngram_counts[0]
    assert_closed(arpa)
    assert_normalized(arpa)
    assert stats.heldout_perplexity is not None and math.isfinite(stats.heldout_perplexity)

    # lmplz form "0 0 1": only the top order pruned; the last value repeats for higher orders.
    s2 = build_lm([corpus["train_path"]], corpus["dir"] / "p001.arpa", order=4, prune=[0, 0, 1])
    a2 = Arpa(corpus["dir"] / "p001.arpa")
    assert s2.ngram_counts[1] == full.ngram_counts[1]
    assert_closed(a2)
    assert_normalized(a2, per_order=30)

    # Decreasing thresholds: bigrams seen <= 3 times go, except those a kept trigram needs as prefix/suffix.
    s3 = build_lm([corpus["train_path"]], corpus["dir"] / "p031.arpa", order=3, prune=[0, 3, 1])
    a3 = Arpa(corpus["dir"] / "p031.arpa")
    assert s3.ngram_counts[2] == stats.ngram_counts[2] and s3.ngram_counts[1] < stats.ngram_counts[1]
    assert any(counts[2][g] <= 3 for g in a3.prob if len(g) == 2)
    assert_closed(a3)
    assert_normalized(a3)

    with pytest.raises(LanguageModelError, match="unigram threshold"):
        build_lm([corpus["train_path"]], corpus["dir"] / "bad.arpa", order=3, prune=[1, 1, 1])


def test_vocab_limit_maps_rare_words_to_unk(corpus: dict) -> None:
    out = corpus["dir"] / "vl" / "lm.arpa.gz"
    stats = build_lm([corpus["train_path"]], out, order=3, vocab_limit=40)
    assert out.exists() and out.read_bytes()[:2] == b"\x1f\x8b"
    arpa = Arpa(out)
    freq = Counter(w for s in corpus["train"] for w in s)
    top = sorted(freq, key=lambda w: (-freq[w], w))[:40]
    assert sorted(predictable(arpa)) == sorted([*top, "</s>", "<unk>"])
    assert stats.vocab_size == 43
    assert stats.num_unk == sum(c for w, c in freq.items() if w not in set(top))
    unigrams = (out.parent / "unigrams.txt").read_text(encoding="utf-8").split()
    assert unigrams == top  # most frequent first, no <s>, </s>, <unk>
    assert any("<unk>" in g for g in arpa.prob if len(g) == 3)
    assert_closed(arpa)
    assert_normalized(arpa)


def test_unigrams_file_and_gzip_input(tmp_path: Path) -> None:
    text = "The cat sat.\nThe dog, the CAT!\n\n   \nA dog's life\n"
    src = tmp_path / "in.txt.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.write(text)
    stats = build_lm([src], tmp_path / "lm.arpa", order=2)
    assert stats.num_sentences == 3 and stats.num_words == 10
    words = (tmp_path / "unigrams.txt").read_text(encoding="utf-8").split("\n")
    assert words[:2] == ["the", "cat"] and "dog's" in words
    assert Arpa(tmp_path / "lm.arpa").declared[1] == 7 + 3
    assert sorted(unigrams_from_arpa(tmp_path / "lm.arpa")) == sorted(w for w in words if w)
    with pytest.raises(LanguageModelError, match=r"no \\data\\ header"):
        unigrams_from_arpa(src)


def test_degenerate_corpora_stay_valid(tmp_path: Path) -> None:
    one = write_text(tmp_path / "one.txt", [["hello"]])
    for order, prune in ((1, None), (3, None), (3, [0, 1])):
        out = tmp_path / f"o{order}{prune}.arpa"
        stats = build_lm([one], out, order=order, prune=prune)
        arpa = Arpa(out)
        assert stats.ngram_counts[0] == 4 and arpa.order == order
        assert_closed(arpa)
        assert_normalized(arpa)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "does not exist"),
        ("empty.txt", b"", "is empty"),
        ("blank.txt", b"\n   \n\t\n", "only whitespace"),
        ("junk.bin", bytes(range(256)) * 50, "binary"),
        ("latin1.txt", "caf\xe9 na\xefve\n".encode("latin-1") * 10, "not valid UTF-8"),
        ("digits.txt", b"123 456 !!!\n--- 789\n", "no words left after normalization"),
        ("bad.gz", b"not gzip at all", "not gzip"),
    ],
)
def test_bad_input_files_raise(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    good = write_text(tmp_path / "good.txt", [["hello", "world"]])
    with pytest.raises(LanguageModelError, match=message) as e:
        build_lm([good, path], tmp_path / "out.arpa")
    assert name in str(e.value)
    assert not (tmp_path / "out.arpa").exists()


def test_bad_options_raise(tmp_path: Path) -> None:
    good = write_text(tmp_path / "good.txt", [["hello", "world"]])
    with pytest.raises(LanguageModelError, match="order"):
        build_lm([good], tmp_path / "o.arpa", order=0)
    with pytest.raises(LanguageModelError, match="vocab_limit"):
        build_lm([good], tmp_path / "o.arpa", vocab_limit=0)
    with pytest.raises(LanguageModelError, match="at least one"):
        build_lm([], tmp_path / "o.arpa")


def test_normalize_text() -> None:
    assert normalize_text("Hello, World! It’s 'quoted' — café.") == "hello world it's quoted cafe"
    assert normalize_text("Line one.\nLINE  two;\n\n3 4") == "line one\nline two\n\n"
    assert normalize_text("rock'n'roll 'tis dogs' ''") == "rock'n'roll tis dogs"
    assert normalize_text("e-mail ﬁsh Ærø") == "e mail fish r"
    assert normalize_text("Déjà vu", allowed_chars="abcdefghijklmnopqrstuvwxyzàé") == "déjà vu"
    # An uppercase vocabulary (e.g. wav2vec2-base-960h) uppercases.
    assert normalize_text("it's fine", allowed_chars="ABCDEFGHIJKLMNOPQRSTUVWXYZ'") == "IT'S FINE"
    # Without the apostrophe it is a word break.
    assert normalize_text("it's", allowed_chars="abcdefghijklmnopqrstuvwxyz") == "it s"


def test_allowed_chars_from_vocab_files(tmp_path: Path) -> None:
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "'": 5} | {c: 6 + i for i, c in enumerate(letters)}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    assert allowed_chars_from_file(tmp_path / "vocab.json") == "'" + "".join(letters)
    (tmp_path / "alphabet.json").write_text(
        json.dumps({"labels": ["", " ", "a", "b", "'", "⁇"], "is_bpe": False}), encoding="utf-8"
    )
    assert allowed_chars_from_file(tmp_path / "alphabet.json") == "'ab"
    assert allowed_chars_from_file(tmp_path) == "'" + "".join(letters)  # a model folder: its vocab.json
    (tmp_path / "vocab.json").unlink()
    assert allowed_chars_from_file(tmp_path) == "'ab"  # else its alphabet.json
    (tmp_path / "empty").mkdir()
    with pytest.raises(LanguageModelError, match=r"a folder without vocab\.json or alphabet\.json"):
        allowed_chars_from_file(tmp_path / "empty")
    (tmp_path / "bpe.json").write_text(json.dumps({"labels": ["", "▁a", "b"], "is_bpe": True}), encoding="utf-8")
    with pytest.raises(LanguageModelError, match="BPE"):
        allowed_chars_from_file(tmp_path / "bpe.json")
    text = write_text(tmp_path / "t.txt", [["Hello", "there,", "A-B"]])
    build_lm([text], tmp_path / "lm.arpa", order=2, allowed_chars=tmp_path / "alphabet.json")
    assert set(Arpa(tmp_path / "lm.arpa").vocab) == {"<s>", "</s>", "<unk>", "a", "b"}


def test_cli_build_lm(corpus: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from w2vlm.cli import app

    runner = CliRunner()
    out = tmp_path / "cli" / "lm.arpa"
    res = runner.invoke(
        app,
        [
            "build-lm",
            str(corpus["train_path"]),
            "-o",
            str(out),
            "--order",
            "3",
            "--prune",
            "0 0 1",
            "--heldout",
            str(corpus["held_path"]),
            "--memory",
            "64K",
            "-T",
            str(tmp_path / "spill"),
            "--binary",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "held-out perplexity" in res.output
    assert "spilled" in res.output and list((tmp_path / "spill").iterdir()) == []
    arpa = Arpa(out)
    assert arpa.order == 3 and (out.parent / "unigrams.txt").exists()
    # --binary: lm.w2vlm beside it, the same model
    from w2vlm.decoder import load_ngram

    a, b = load_ngram(out), load_ngram(out.parent / "lm.w2vlm")
    assert (a.vocab(), list(a.counts)) == (b.vocab(), list(b.counts)) and f"{out.parent / 'lm.w2vlm'}" in res.output
    assert all(a.score(w) == b.score(w) for w in ("the a", "a the of", "zz the"))
    res = runner.invoke(app, ["build-lm", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "x.arpa")])
    assert res.exit_code == 1
    assert "does not exist" in res.output


def test_kenlm_scores_match(corpus: dict) -> None:
    kenlm = pytest.importorskip("kenlm")
    for prune, name in ((None, "k.arpa"), ([0, 1, 1], "kp.arpa")):
        out = corpus["dir"] / name
        build_lm([corpus["train_path"]], out, order=3, prune=prune)
        model = kenlm.Model(str(out))
        arpa = Arpa(out)
        for s in corpus["held"][:100]:
            mine, _ = arpa.sentence_log10(s)
            assert model.score(" ".join(s), bos=True, eos=True) == pytest.approx(mine, abs=1e-3)


def test_an_lm_folder_gives_its_one_lm_file(corpus: dict, tmp_path: Path) -> None:
    """build-lm's folder as --lm (transcribe, eval, tune, train): its one LM file, or with convert-lm's binary
    beside the ARPA, the binary; anything else is named."""
    from w2vlm.decoder.ngram_files import convert_to_binary, find_lm_file, lm_file_of

    folder = tmp_path / "lm"
    build_lm([corpus["train_path"]], folder / "lm.arpa", order=2)
    assert find_lm_file(folder) == folder / "lm.arpa"
    convert_to_binary(folder / "lm.arpa", folder / "lm.w2vlm")
    assert find_lm_file(folder) == folder / "lm.w2vlm" == lm_file_of(folder)
    assert lm_file_of(folder / "lm.arpa") == folder / "lm.arpa"
    (folder / "other.arpa").write_text((folder / "lm.arpa").read_text())
    with pytest.raises(LanguageModelError, match=r"found \['lm.arpa', 'lm.w2vlm', 'other.arpa'\]"):
        lm_file_of(folder)
    with pytest.raises(LanguageModelError, match=r"--lm: .*missing.arpa: no such language model file"):
        lm_file_of(tmp_path / "missing.arpa", "--lm")
