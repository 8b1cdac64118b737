"""w2vlm's native reader of KenLM binary files: scores equal to the ARPA's and KenLM's, decoding equal to the ARPA's,
loud errors on bad files. The binaries under tests/data/kenlm were made by KenLM's build_binary (see its README)."""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from w2vlm import _core
from w2vlm.decoder import Alphabet, BeamSearchDecoderCTC, LanguageModel, load_ngram
from w2vlm.errors import LanguageModelError

DATA = Path(__file__).parent / "data" / "kenlm"

# file -> (ARPA it was built from, KenLM model type name, quantized)
BINARIES = {
    "tri.probing.bin": ("tri.arpa", "probing hash tables", False),
    "tri.rest.bin": ("tri.arpa", "probing hash tables with rest costs", False),
    "tri.trie.bin": ("tri.arpa", "trie", False),
    "tri.trie-q8b8.bin": ("tri.arpa", "trie with quantization", True),
    "tri.trie-a255.bin": ("tri.arpa", "trie with array-compressed pointers", False),
    "five.probing.bin": ("five.arpa", "probing hash tables", False),
    "five.trie-q12-a255.bin": ("five.arpa", "trie with quantization and array-compressed pointers", True),
    "four_pruned.trie-q10b6-a22.bin": (
        "four_pruned.arpa",
        "trie with quantization and array-compressed pointers",
        True,
    ),
}
EXACT = [b for b, (_, _, q) in BINARIES.items() if not q]
LABELS = ["", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]


def arpa_ngrams(path: Path, order: int) -> list[list[str]]:
    out: list[list[str]] = []
    section = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("\\"):
            section = int(line[1:-7]) if line.endswith("-grams:") else 0
            continue
        if section == order and line.strip():
            out.append(line.split("\t")[1].split())
    return out


def sample_sentences(arpa: Path, n: int, seed: int) -> list[str]:
    """Random word strings: pieces of the model's highest-order n-grams (to reach long contexts), random
    vocabulary words and a few out-of-vocabulary ones."""
    rng = random.Random(seed)
    lm = load_ngram(arpa)
    grams = [g for g in arpa_ngrams(arpa, lm.order) if "<s>" not in g and "</s>" not in g]
    vocab = [w for w in lm.vocab() if w not in ("<s>", "</s>", "<unk>")]
    out = []
    for _ in range(n):
        words: list[str] = []
        while len(words) < rng.randint(1, 14):
            r = rng.random()
            if r < 0.5 and grams:
                words += rng.choice(grams)
            elif r < 0.95:
                words.append(rng.choice(vocab))
            else:
                words.append("qqzx")
        out.append(" ".join(words))
    return out


@pytest.mark.parametrize("name", list(BINARIES))
def test_loads_natively_with_the_arpa_vocabulary(name):
    arpa_name, type_name, quantized = BINARIES[name]
    lm = _core.KenlmBinaryLM.from_file(str(DATA / name))
    arpa = load_ngram(DATA / arpa_name)
    assert lm.model_type_name == type_name
    assert lm.order == arpa.order
    assert (lm.prob_bits > 0) == quantized
    assert sorted(lm.vocab()) == sorted(arpa.vocab())
    assert lm.vocab()[0] == "<unk>"
    for w in ("<s>", "</s>", "the"):
        assert w in lm
    assert "qqzx" not in lm and "" not in lm


@pytest.mark.parametrize("name", EXACT)
def test_scores_equal_the_arpa(name):
    arpa_path = DATA / BINARIES[name][0]
    binary, arpa = load_ngram(DATA / name), load_ngram(arpa_path)
    assert isinstance(binary, _core.KenlmBinaryLM)
    worst = 0.0
    for s in sample_sentences(arpa_path, 150, seed=1):
        for bos, eos in ((True, True), (False, False), (True, False), (False, True)):
            worst = max(worst, abs(binary.score(s, bos, eos) - arpa.score(s, bos, eos)))
    assert worst < 1e-4


@pytest.mark.parametrize("name", list(BINARIES))
def test_scores_and_states_equal_kenlm(name):
    kenlm = pytest.importorskip("kenlm")
    arpa_path = DATA / BINARIES[name][0]
    lm = _core.KenlmBinaryLM.from_file(str(DATA / name))
    km = kenlm.Model(str(DATA / name))
    for s in sample_sentences(arpa_path, 80, seed=2):
        assert lm.score(s) == pytest.approx(km.score(s), abs=1e-4)
        assert lm.score(s, False, False) == pytest.approx(km.score(s, bos=False, eos=False), abs=1e-4)
        # word by word: the same float, and states that lead to the same scores
        state, kstate = lm.begin_sentence_state(), kenlm.State()
        km.BeginSentenceWrite(kstate)
        for w in [*s.split(), "</s>"]:
            p, state = lm.base_score(state, w)
            nxt = kenlm.State()
            assert p == km.BaseScore(kstate, w, nxt), (s, w)
            kstate = nxt


def emissions(text: str, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for ch in text:
        for k in range(2):
            r = np.full(len(LABELS), -8.0)
            r[LABELS.index(ch) if k == 0 else 0] = 0.0
            rows.append(r)
        rows.append(np.where(np.arange(len(LABELS)) == 0, 0.0, -8.0))
    x = np.array(rows) + noise * rng.normal(size=(len(rows), len(LABELS)))
    return x.astype(np.float32)


def decode_all(lm: LanguageModel, xs: list[np.ndarray]) -> list[list[tuple[str, float, float]]]:
    decoder = BeamSearchDecoderCTC(Alphabet.build_alphabet(LABELS), lm)
    return [[(b.text, b.logit_score, b.lm_score) for b in decoder.decode_beams(x, beam_width=32)] for x in xs]


def assert_same_beams(a, b, tol):
    for beams_a, beams_b in zip(a, b, strict=True):
        assert [t for t, _, _ in beams_a] == [t for t, _, _ in beams_b]
        assert [s for _, s, _ in beams_a] == pytest.approx([s for _, s, _ in beams_b], abs=tol)
        assert [s for _, _, s in beams_a] == pytest.approx([s for _, _, s in beams_b], abs=tol)


@pytest.mark.parametrize("name", ["tri.probing.bin", "tri.trie-a255.bin", "five.probing.bin"])
def test_decoding_with_binary_equals_arpa(name):
    arpa_path = DATA / BINARIES[name][0]
    texts = [t for t in sample_sentences(arpa_path, 12, seed=3) if set(t) <= set("abcdefghijklmnopqrstuvwxyz' ")]
    xs = [emissions(t, noise=1.5, seed=i) for i, t in enumerate(texts)]
    via_bin = LanguageModel(str(DATA / name))
    assert via_bin.backend == "native-binary"
    via_arpa = LanguageModel(str(arpa_path))
    assert via_bin.unigrams == via_arpa.unigrams
    assert_same_beams(decode_all(via_bin, xs), decode_all(via_arpa, xs), 1e-4)
    # threads share the native binary LM: the same results
    alphabet = Alphabet.build_alphabet(LABELS)
    batch_bin = BeamSearchDecoderCTC(alphabet, via_bin).decode_batch(None, xs, num_threads=2)
    assert batch_bin == BeamSearchDecoderCTC(alphabet, via_arpa).decode_batch(None, xs, num_threads=2)
    unigrams = via_arpa.unigrams[::2]  # an explicit (partial) unigram list: OOV words get the offset
    assert_same_beams(
        decode_all(LanguageModel(str(DATA / name), unigrams), xs),
        decode_all(LanguageModel(str(arpa_path), unigrams), xs),
        1e-4,
    )


def test_quantized_binary_decodes_like_kenlm_on_the_same_file():
    kenlm = pytest.importorskip("kenlm")
    from w2vlm.decoder.language_model import kenlm_backend

    name = "tri.trie-q8b8.bin"
    texts = sample_sentences(DATA / "tri.arpa", 8, seed=4)
    xs = [emissions(t, noise=1.5, seed=i) for i, t in enumerate(texts) if set(t) <= set(LABELS[1:])]
    unigrams = LanguageModel(str(DATA / name)).unigrams
    native = LanguageModel(str(DATA / name), unigrams)
    served = LanguageModel(kenlm_backend(kenlm.Model(str(DATA / name))), unigrams)
    assert (native.backend, served.backend) == ("native-binary", "kenlm")
    assert_same_beams(decode_all(native, xs), decode_all(served, xs), 1e-4)
    # a kenlm.Model of a binary is read natively too
    assert LanguageModel(kenlm.Model(str(DATA / name))).backend == "native-binary"


def test_language_model_scores_and_saves_binary(tmp_path):
    lm = LanguageModel(str(DATA / "tri.trie.bin"))
    assert lm.score("the") == pytest.approx(LanguageModel(str(DATA / "tri.arpa")).score("the"), abs=1e-5)
    lm.save_to_dir(tmp_path / "lm")
    back = LanguageModel.load_from_dir(tmp_path / "lm")
    assert back.backend == "native-binary" and back.unigrams == lm.unigrams


# ---- bad files ----------------------------------------------------------------------------------------------
def patched(tmp_path: Path, offset: int, data: bytes, source: str = "tri.trie.bin") -> str:
    p = tmp_path / f"bad_{offset}.bin"
    shutil.copy(DATA / source, p)
    with open(p, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return str(p)


def truncated(tmp_path: Path, keep: int, source: str = "tri.probing.bin") -> str:
    p = tmp_path / f"cut_{keep}.bin"
    p.write_bytes((DATA / source).read_bytes()[:keep])
    return str(p)


def size_of(name: str) -> int:
    return (DATA / name).stat().st_size


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: str(DATA / "tri.arpa"), "not a KenLM binary file"),
        (lambda t: str(t / "missing.bin"), "cannot open the language model file"),
        (lambda t: str(t), "is a directory"),
        (lambda t: truncated(t, 0), "not a KenLM binary file"),
        (lambda t: truncated(t, 40), "not a KenLM binary file|truncated"),
        (lambda t: truncated(t, size_of("tri.probing.bin") // 2), r"truncated KenLM binary file: the .* needs bytes"),
        (lambda t: truncated(t, size_of("tri.probing.bin") - 3), "vocabulary strings|truncated"),
        (lambda t: patched(t, 0, b"mmap lm http://kheafield.com/code incomplete\n"), "did not finish building"),
        (lambda t: patched(t, 49, b"4"), "unsupported KenLM binary format version 4"),
        (lambda t: patched(t, 56, struct.pack(">fffIIIQ", 0.0, 1.0, -0.5, 1, 2**32 - 1, 0, 1)), "big-endian"),
        (lambda t: patched(t, 56 + 12, struct.pack("<I", 7)), "test values do not match"),
        (lambda t: patched(t, 88, b"\x0c"), "order 12; supported orders are 2..10"),
        (lambda t: patched(t, 96, struct.pack("<i", 9)), "unknown KenLM model type 9"),
        (lambda t: patched(t, 104, struct.pack("<I", 3)), "version 3 but this reader supports version 1"),
        (lambda t: patched(t, 100, b"\x00"), "no vocabulary strings"),
        (lambda t: patched(t, 136 + 8 + 8 * 5, b"\xff" * 8), "does not match the file's hashed vocabulary"),
        (lambda t: patched(t, 136, struct.pack("<I", 7), "tri.probing.bin"), "probing vocabulary has version 7"),
        (lambda t: patched(t, 136, struct.pack("<Q", 10**6)), "sorted vocabulary holds 1000000 words"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(LanguageModelError, match=message) as e:
        _core.KenlmBinaryLM.from_file(path)
    assert str(Path(path)) in str(e.value)


def test_quantization_header_is_checked(tmp_path):
    # the quantization header sits right after the sorted vocabulary of a quantized trie
    offset = 136 + 8 + 8 * 1074
    with pytest.raises(LanguageModelError, match="quantization tables have version 9"):
        _core.KenlmBinaryLM.from_file(patched(tmp_path, offset, b"\x09", "tri.trie-q8b8.bin"))
    with pytest.raises(LanguageModelError, match="probability bits"):
        _core.KenlmBinaryLM.from_file(patched(tmp_path, offset + 1, b"\x1f", "tri.trie-q8b8.bin"))


def test_binary_without_vocabulary_falls_back_to_kenlm_or_raises(tmp_path):
    path = patched(tmp_path, 100, b"\x00")
    try:
        import kenlm  # noqa: F401
    except ImportError:
        with pytest.raises(LanguageModelError, match="no vocabulary strings"):
            load_ngram(path)
    else:
        lm = LanguageModel(path)
        assert lm.backend == "kenlm"
    with pytest.raises(LanguageModelError, match="binary_backend must be"):
        load_ngram(path, binary_backend="fast")
