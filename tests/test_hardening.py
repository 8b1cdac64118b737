"""Regressions for untrusted input (issue 31): every case here crashed, hung, allocated far more memory than the
input justifies, returned a silent empty result or raised a non-w2vlm error before. Files are tiny and built
here."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from w2vlm import _core, limits
from w2vlm.decoder import build_ctcdecoder, load_ngram
from w2vlm.errors import AudioError, DecoderInputError, LanguageModelError, W2vlmError

DATA = Path(__file__).parent / "data" / "kenlm"
LABELS = ["", " ", "a", "b"]
MAGIC = b"mmap lm http://kheafield.com/code format version 5\n\0\0"


def kenlm_header(counts: list[int], multiplier: float = 1.5, model_type: int = 0, tail: bytes = b"") -> bytes:
    """A KenLM binary (format 5) header: magic, sanity values, fixed parameters, counts; then `tail`."""
    head = MAGIC.ljust(56, b"\0") + struct.pack("<fffIIIQ", 0.0, 1.0, -0.5, 1, 2**32 - 1, 0, 1)
    search_version = 1 if model_type >= 2 else 0
    head += struct.pack("<B3xfiB3xI", len(counts), multiplier, model_type, 1, search_version)
    head += b"".join(struct.pack("<Q", c) for c in counts)
    return head.ljust((len(head) + 7) // 8 * 8, b"\0") + tail


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def arpa(sections: dict[int, list[str]], counts: dict[int, int] | None = None) -> bytes:
    counts = counts or {n: len(lines) for n, lines in sections.items()}
    out = ["\\data\\", *(f"ngram {n}={c}" for n, c in counts.items()), ""]
    for n, lines in sections.items():
        out += [f"\\{n}-grams:", *lines, ""]
    return ("\n".join([*out, "\\end\\", ""])).encode()


UNI = ["-1.0\t<unk>", "-99\t<s>\t-0.3", "-0.5\t</s>", "-0.5\ta\t-0.2", "-0.7\tb\t-0.2", "-0.9\tab\t-0.1"]
BI = ["-0.3\t<s> a", "-0.4\ta b", "-0.2\tb </s>", "-0.3\ta ab"]


# ---- KenLM binary reader -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("multiplier", "message"),
    [
        (float(2**62), "probing multiplier"),  # buckets * 12 wrapped to 0: the bounds check passed, probes read out
        (1e30, "probing multiplier"),  # float -> integer conversion out of range (UB)
        (float("nan"), "probing multiplier"),
        (1000.0, "more than the file's"),  # a legal multiplier, tables that cannot fit the file
    ],
)
def test_probing_multiplier_cannot_overflow_table_sizes(tmp_path, multiplier, message):
    path = write(tmp_path, "m.bin", kenlm_header([2**30, 5], multiplier, tail=b"\0" * 64))
    assert len(Path(path).read_bytes()) < 200
    with pytest.raises(LanguageModelError, match=message):
        _core.KenlmBinaryLM.from_file(path)


@pytest.mark.parametrize("model_type", [2, 3, 4, 5])
def test_trie_counts_beyond_the_file_are_refused(tmp_path, model_type):
    path = write(tmp_path, "t.bin", kenlm_header([3, 2**39, 2**39], model_type=model_type, tail=b"\0" * 120))
    with pytest.raises(LanguageModelError, match=r"truncated|more than a file|quantization|vocabulary"):
        _core.KenlmBinaryLM.from_file(path)


def _probing_unigram_offset(data: bytes) -> int:
    order = data[88]
    n1 = struct.unpack_from("<Q", data, 108)[0]
    multiplier = struct.unpack_from("<f", data, 92)[0]
    header = (108 + 8 * order + 7) // 8 * 8
    buckets = max(n1 + 1, int(np.float32(multiplier) * np.float32(n1)))
    return header + 8 + 12 * buckets


def test_nan_probability_in_a_binary_is_refused_at_load(tmp_path):
    data = bytearray((DATA / "tri.probing.bin").read_bytes())
    off = _probing_unigram_offset(bytes(data)) + 8 * 3  # the third unigram's probability
    struct.pack_into("<I", data, off, 0x7FC00000)
    with pytest.raises(LanguageModelError, match=r"1-gram record \(at byte \d+\) has log10 probability -?nan"):
        _core.KenlmBinaryLM.from_file(write(tmp_path, "nan.bin", bytes(data)))


def test_non_utf8_vocabulary_is_escaped_not_a_decode_error(tmp_path):
    # a vocabulary string whose bytes are changed no longer matches its hash: the message quotes them escaped
    data = bytearray((DATA / "tri.probing.bin").read_bytes())
    at = data.rindex(b"\0the\0") + 1
    data[at : at + 3] = b"\xe2\x82\xff"  # a 3-byte sequence cut mid-character
    with pytest.raises(LanguageModelError, match=r"\\xe2\\x82\\xff"):
        _core.KenlmBinaryLM.from_file(write(tmp_path, "utf.bin", bytes(data)))


# ---- ARPA reader ---------------------------------------------------------------------------------------------
def test_arpa_sections_beyond_the_declared_order(tmp_path):
    text = arpa({1: UNI, 2: BI}, counts={1: len(UNI)})
    with pytest.raises(LanguageModelError, match=r"declares 1 orders\), got '\\2-grams:'"):
        _core.NGramLM.from_arpa_bytes(text, "x.arpa")


@pytest.mark.parametrize(
    "count_line",
    ["ngram 1=20000000", "ngram 1=4611686018427387904", "ngram 1=99999999999999999999999"],
)
def test_arpa_counts_the_file_cannot_hold(count_line):
    text = f"\\data\\\n{count_line}\n\n\\1-grams:\n-1\ta\n\n\\end\\\n".encode()
    assert len(text) < 80
    with pytest.raises(LanguageModelError, match=r"holds at most|bad n-gram count"):
        _core.NGramLM.from_arpa_bytes(text, "x.arpa")


def test_arpa_messages_escape_non_utf8_bytes():
    # a word cut mid-character, and bytes that are not UTF-8: LanguageModelError with \xNN, no UnicodeDecodeError
    bad = b"\\data\\\nngram 1=2\n\n\\1-grams:\n-1\t\xc3\n-1\t\xc3\n\n\\end\\\n"
    with pytest.raises(LanguageModelError, match=r"duplicate unigram '\\xc3'"):
        _core.NGramLM.from_arpa_bytes(bad, "x.arpa")
    with pytest.raises(LanguageModelError, match=r"bad log10 probability '\\xff\\xfe'"):
        _core.NGramLM.from_arpa_bytes(b"\\data\\\nngram 1=1\n\n\\1-grams:\n\xff\xfe\ta\n\n\\end\\\n", "x.arpa")


def test_non_utf8_vocabulary_words_are_readable(tmp_path):
    lm = _core.NGramLM.from_arpa_bytes(arpa({1: [*UNI, "-1\tcaf\xe9"]}).replace(b"caf\xc3\xa9", b"caf\xe9"), "x")
    assert "caf\\xe9" in lm.vocab()


def test_minus_inf_probabilities_with_alpha_zero_still_decode(tmp_path):
    path = write(tmp_path, "inf.arpa", arpa({1: [*UNI[:3], "-inf\ta\t-0.2", "-inf\tb", "-inf\tab"], 2: BI}))
    for alpha in (0.0, 0.5):
        dec = build_ctcdecoder(LABELS, path, alpha=alpha)
        lp = np.log(np.full((6, 4), 0.25, dtype=np.float32))
        beams = dec.decode_beams(lp)
        assert beams, f"alpha={alpha}: no beams"
        stream = dec.stream()
        stream.feed(lp)
        assert isinstance(stream.partial().text, str)


# ---- states from outside -------------------------------------------------------------------------------------
def test_start_state_of_a_higher_order_model_is_refused(tmp_path):
    big = load_ngram(DATA / "five.arpa")
    state = big.begin_sentence_state()
    for w in ["the", "sitting", "was", "altogether"]:  # a 5-gram of the model
        state = big.base_score(state, w)[1]
    assert state.length > 1
    small = write(tmp_path, "uni.arpa", arpa({1: UNI}))
    dec = build_ctcdecoder(LABELS, small)
    lp = np.log(np.full((4, 4), 0.25, dtype=np.float32))
    with pytest.raises(DecoderInputError, match="context words"):
        dec.decode_beams(lp, lm_start_state=state)
    with pytest.raises(DecoderInputError, match="context words"):
        dec.stream(lm_start_state=state)
    lm = load_ngram(small)
    with pytest.raises(DecoderInputError, match="context words"):
        lm.base_score(state, "a")
    with pytest.raises(DecoderInputError, match="context words"):
        lm.state_words(state)


def test_state_with_foreign_word_ids_is_refused(tmp_path):
    lm_path = write(tmp_path, "bi.arpa", arpa({1: UNI, 2: BI}))
    lm = load_ngram(lm_path)
    forged = _core.LMState.__new__(_core.LMState)
    forged.__setstate__(([10**6], [0.0]))
    with pytest.raises(DecoderInputError, match="word id 1000000"):
        lm.state_words(forged)
    with pytest.raises(DecoderInputError, match="word id 1000000"):
        build_ctcdecoder(LABELS, lm_path).decode_beams(np.zeros((2, 4), np.float32), lm_start_state=forged)
    nan_backoff = _core.LMState.__new__(_core.LMState)
    nan_backoff.__setstate__(([1], [float("nan")]))
    with pytest.raises(DecoderInputError, match="non-finite backoff"):
        lm.base_score(nan_backoff, "a")


# ---- decoder arguments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"beam_width": 2**31},
        {"beam_width": limits.MAX_BEAM_WIDTH + 1},
        {"hotwords": ["ab"], "hotword_weight": 1e39},
        {"hotwords": [("ab", 1e39)]},
        {"hotwords": [("ab", -1e39)]},
        {"hotword_weight": float("inf"), "hotwords": ["a"]},
        {"beam_prune_logp": 5.0},
    ],
)
def test_decoder_arguments_out_of_range(kwargs):
    dec = build_ctcdecoder(LABELS)
    lp = np.log(np.full((3, 4), 0.25, dtype=np.float32))
    with pytest.raises(DecoderInputError):
        dec.decode_beams(lp, **kwargs)


def test_num_threads_out_of_range():
    dec = build_ctcdecoder(LABELS)
    lp = np.log(np.full((3, 4), 0.25, dtype=np.float32))
    for n in (2**31, limits.MAX_THREADS + 1):
        with pytest.raises(DecoderInputError, match="num_threads"):
            dec.decode_batch(None, [lp], num_threads=n)


def test_native_automaton_refuses_weights_infinite_as_float():
    with pytest.raises(DecoderInputError, match="must be finite"):
        _core.HotwordAutomaton([("a b", 3e38)])  # finite weight, infinite weight x 2 words


def test_hotword_count_and_size_limits(monkeypatch):
    dec = build_ctcdecoder(LABELS)
    lp = np.log(np.full((3, 4), 0.25, dtype=np.float32))
    monkeypatch.setattr(limits, "MAX_HOTWORDS", 3)
    with pytest.raises(DecoderInputError, match="MAX_HOTWORDS"):
        dec.decode_beams(lp, hotwords=["a", "b", "ab", "ba"])
    monkeypatch.setattr(limits, "MAX_HOTWORDS", 100)
    monkeypatch.setattr(limits, "MAX_HOTWORD_CHARS", 5)
    with pytest.raises(DecoderInputError, match="MAX_HOTWORD_CHARS"):
        dec.decode_beams(lp, hotwords=["abab", "baba"])


def test_many_cjk_hotwords_take_memory_linear_in_their_size():
    # 10,000 three-character phrases over 9,000 distinct characters: the dense states x characters table took
    # 790 MB; the automaton now holds one edge per trie edge
    rng = np.random.default_rng(0)
    phrases = ["".join(chr(0x4E00 + int(c)) for c in rng.integers(0, 9000, 3)) for _ in range(10_000)]
    code = textwrap.dedent(
        f"""
        import resource, sys
        from w2vlm import _core
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        a = _core.HotwordAutomaton([(p, 2.0) for p in {phrases!r}])
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(a.num_states, grown)
        """
    )
    out = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, check=True).stdout.split()
    states, grown_kb = int(out[0]), int(out[1])
    assert states > 30_000
    assert grown_kb < 64 * 1024, f"{grown_kb} KiB for the automaton"


@pytest.mark.parametrize("seed", range(12))
def test_sparse_hotword_automaton_equals_exhaustive_search(monkeypatch, seed):
    # overlapping phrases (prefixes and suffixes of each other) exercise the failure links
    from decoder_reference import exhaustive_best

    monkeypatch.setattr(limits, "MAX_BEAM_WIDTH", 100_000)
    hot = {"ab": 2.0, "b": 1.5, "bab": 3.0, "aa": -1.0}
    rng = np.random.default_rng(seed)
    lp = np.log(rng.dirichlet(np.ones(4) * 0.5, size=5)).astype(np.float32)
    best_text, _, best_total, _ = exhaustive_best(lp.astype(np.float64), LABELS, hotwords=hot)
    top = build_ctcdecoder(LABELS).decode_beams(
        lp, beam_width=100_000, beam_prune_logp=-1e6, token_min_logp=-1e6, hotwords=list(hot.items())
    )[0]
    assert top.text == best_text
    assert top.lm_score == pytest.approx(best_total, abs=1e-3)


def test_every_result_is_a_w2vlm_error_subclass():
    for cls in (AudioError, DecoderInputError, LanguageModelError):
        assert issubclass(cls, W2vlmError)


# ---- audio ---------------------------------------------------------------------------------------------------
def wav_bytes(samples: np.ndarray, rate: int, fmt: int = 3, claim_rate: int | None = None) -> bytes:
    """A WAV file (format 3 = float32, 1 = PCM16) of (frames, channels) samples."""
    channels = samples.shape[1]
    raw = samples.astype(np.float32 if fmt == 3 else np.int16).tobytes()
    width = 4 if fmt == 3 else 2
    rate = claim_rate or rate
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * width * channels, width * channels, 8 * width)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", len(raw)) + raw
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_claiming_one_hertz_is_refused():
    pcm = (np.sin(np.arange(2000)) * 1000).astype(np.int16).reshape(-1, 1)
    with pytest.raises(AudioError, match="sampling rate is 1 Hz"):
        load_audio_bytes(wav_bytes(pcm, 1, fmt=1))


def test_too_many_channels_are_refused():
    with pytest.raises(AudioError, match="channels"):
        load_audio_bytes(wav_bytes(np.zeros((800, limits.MAX_AUDIO_CHANNELS + 1)), 16000, fmt=1))


def test_duration_limit_is_checked_before_resampling():
    x = np.zeros((16000 * 3, 1))
    from w2vlm.audio import load_audio

    with pytest.raises(AudioError, match="at most 2 s"):
        load_audio(wav_bytes(x, 16000, fmt=1), max_duration_s=2)
    with pytest.raises(AudioError, match="at most 2 s"):
        load_audio(wav_bytes(x, 8000, fmt=1), 16000, max_duration_s=2)  # 6 s at 8 kHz, refused before resampling
    assert load_audio(wav_bytes(x, 16000, fmt=1), max_duration_s=4).shape == (48000,)


def test_many_channel_float_wav_through_pyav_does_not_crash():
    # libsndfile refuses a 25-channel float WAV; PyAV 18.1 crashed converting planar frames of > 8 channels
    rng = np.random.default_rng(1)
    x = (rng.random((1600, 25), dtype=np.float32) - 0.5).astype(np.float32)
    code = textwrap.dedent(
        f"""
        import numpy as np
        from w2vlm.audio import load_audio
        from w2vlm.errors import AudioError
        try:
            out = load_audio(bytes.fromhex({wav_bytes(x, 16000).hex()!r}))
            print("ok", out.shape[0], float(np.abs(out).max()))
        except AudioError as e:
            print("AudioError", e)
        """
    )
    done = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"died with {done.returncode}: {done.stderr[-2000:]}"
    kind, *rest = done.stdout.split()
    if kind == "ok":
        assert int(rest[0]) == 1600
        assert math.isclose(float(rest[1]), float(np.abs(x.mean(axis=1)).max()), rel_tol=1e-3)


def load_audio_bytes(data: bytes) -> np.ndarray:
    from w2vlm.audio import load_audio

    return load_audio(io.BytesIO(data))
