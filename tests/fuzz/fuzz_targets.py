"""The targets of tests/fuzz/fuzz.py: each one's seed inputs, the mutations applied to them, and what a case
runs (the harness, in fuzz.py, runs cases in child processes and reports crashes, hangs, memory and wrong
exceptions).

Targets: ``kenlm_binary`` (the native KenLM binary reader, then scoring and a short decode with the model),
``arpa`` (the ARPA reader, on the whole text and streamed in random chunks, which must give the same model or
error; then the same), ``ngram_binary`` (w2vlm's binary n-gram form, then the same), ``audio``
(:func:`w2vlm.audio.load_audio` on encoded bytes) and ``decoder`` (directed calls with random, often invalid,
arguments: widths, weights, hotwords, logits with NaN or inf, LM states of another model, streams).
"""

from __future__ import annotations

import io
import os
import random
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "kenlm"
TARGETS = ("kenlm_binary", "arpa", "ngram_binary", "audio", "decoder")

INTERESTING_INTS = [
    0,
    1,
    2,
    7,
    8,
    127,
    128,
    255,
    256,
    0x7FFF,
    0xFFFF,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**40,
    2**62,
    2**63,
    2**64 - 1,
]
INTERESTING_FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    1.5,
    1e30,
    -1e30,
    1e39,
    float("nan"),
    float("inf"),
    float("-inf"),
    4.6e18,
    3.4e38,
]
INTERESTING_TOKENS = [
    b"0",
    b"-0",
    b"1",
    b"-1",
    b"2",
    b"-inf",
    b"inf",
    b"nan",
    b"-99",
    b"1e39",
    b"99999999999",
    b"4611686018427387904",
    b"-2147483649",
    b"\xff\xfe",
    b"\xc3",
    b"\xe2\x82",
    b"<s>",
    b"</s>",
    b"<unk>",
    b"\\2-grams:",
    b"\\3-grams:",
    b"\\end\\",
    b"ngram 2=5",
    b"ngram 9=1",
    b"",
]

TINY_ARPA = b"""\\data\\
ngram 1=7
ngram 2=5
ngram 3=2

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.3
-0.5\t</s>
-0.5\ta\t-0.2
-0.7\tb\t-0.2
-0.9\tab\t-0.1
-1.2\tba\t-0.1

\\2-grams:
-0.3\t<s> a\t-0.1
-0.4\ta b\t-0.1
-0.2\tb </s>
-0.3\ta ab
-0.5\tab ba

\\3-grams:
-0.1\t<s> a b
-0.2\ta b </s>

\\end\\
"""


# ---- mutation --------------------------------------------------------------------------------------------------
def mutate(data: bytes, rng: random.Random, text: bool = False, hot_region: tuple[int, int] = (0, 0)) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if text and rng.random() < 0.5:
            b = bytearray(_mutate_lines(bytes(b), rng))
            continue
        if not b:
            b += bytes([rng.randrange(256)])
        lo, hi = (hot_region[0], min(hot_region[1], len(b))) if rng.random() < 0.6 else (0, len(b))
        pos = rng.randrange(lo, hi) if lo < hi else rng.randrange(len(b))
        op = rng.randrange(8)
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:
            size, fmt = rng.choice([(2, "<H"), (4, "<I"), (8, "<Q")])
            v = rng.choice(INTERESTING_INTS) % (1 << (8 * size))
            b[pos : pos + size] = struct.pack(fmt, v)[: len(b) - pos]
        elif op == 3:
            f = rng.choice(INTERESTING_FLOATS)
            b[pos : pos + 4] = struct.pack("<f", f if abs(f) < 3.4e38 or f != f else float("inf"))[: len(b) - pos]
        elif op == 4:
            del b[pos : pos + rng.randint(1, 64)]
        elif op == 5:
            n = rng.randint(1, 64)
            b[pos:pos] = b[pos : pos + n]
        elif op == 6:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            del b[rng.randrange(len(b) + 1) :]
    return bytes(b)


def _mutate_lines(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    op = rng.randrange(5)
    if op == 0:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif op == 1 and len(lines) > 1:
        del lines[i]
    elif op == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        fields = lines[i].replace(b"=", b"= ").split()
        if fields:
            fields[rng.randrange(len(fields))] = rng.choice(INTERESTING_TOKENS)
        sep = b"\t" if rng.random() < 0.5 else b" "
        lines[i] = sep.join(fields).replace(b"= ", b"=")
    return b"\n".join(lines)


# ---- targets ---------------------------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    seeds: Callable[[], list[bytes]]
    run: Callable[[bytes, random.Random], None]
    text: bool = False
    hot_region: tuple[int, int] = (0, 0)  # most mutations land here (the fields that size everything else)
    cache: list[bytes] = field(default_factory=list)

    def case(self, seed: int, index: int) -> bytes:
        if not self.cache:
            self.cache = self.seeds()
        rng = random.Random(f"{seed}:{self.name}:{index}")
        base = self.cache[rng.randrange(len(self.cache))]
        return mutate(base, rng, self.text, self.hot_region)


def _exercise_lm(lm: object) -> None:
    """Score, list and decode with a loaded LM: lookups read the tables a header described."""
    import numpy as np

    from w2vlm.decoder import BeamSearchDecoderCTC, LanguageModel
    from w2vlm.decoder.alphabet import Alphabet

    vocab = lm.vocab()[:50]
    state = lm.begin_sentence_state()
    for w in [*vocab[:12], "zzz", "a", "the"]:
        _, state = lm.base_score(state, w)
    lm.state_words(state)
    lm.score(" ".join(vocab[:8]))
    labels = ["", " ", *"abcdefghijklmnopqrstuvwxyz'"]
    dec = BeamSearchDecoderCTC(Alphabet.build_alphabet(labels), LanguageModel(lm, None))
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, len(labels))).astype(np.float32)
    dec.decode_beams(logits, beam_width=8)


def _kenlm_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(DATA.glob("*.bin"))]


def _exercise_lm_file(data: bytes, suffix: str, load: Callable[[str], object]) -> None:
    """`data` written to a file named *suffix, loaded by `load(path)`, then exercised."""
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        lm = load(f.name)
    _exercise_lm(lm)


def _run_kenlm(data: bytes, rng: random.Random) -> None:
    from w2vlm import _core

    _exercise_lm_file(data, ".bin", _core.KenlmBinaryLM.from_file)


def _arpa_seeds() -> list[bytes]:
    return [TINY_ARPA, TINY_ARPA.replace(b"-0.5\ta\t-0.2", b"-inf\ta\t-0.2"), (DATA / "four_pruned.arpa").read_bytes()]


def _stream_arpa(data: bytes, rng: random.Random) -> object:
    """The streaming reader on `data` cut into random chunks, its size not given (tables grow as lines come):
    the model, or the LanguageModelError."""
    from w2vlm import _core
    from w2vlm.errors import LanguageModelError

    try:
        parser = _core.ArpaParser("fuzz.arpa")
        i = 0
        while i < len(data):
            n = rng.choice((1, 2, 7, 64, 4096))
            parser.feed(data[i : i + n])
            i += n
        return parser.finish()
    except LanguageModelError as e:
        return e


def _run_arpa(data: bytes, rng: random.Random) -> None:
    from w2vlm import _core
    from w2vlm.errors import LanguageModelError

    streamed = _stream_arpa(data, rng)
    try:
        lm = _core.NGramLM.from_arpa_bytes(data, "fuzz.arpa")
    except LanguageModelError as e:
        # the same error, except where only the known size could refuse a count (the stream finds out later)
        if "holds at most" not in str(e) and str(streamed) != str(e):
            raise AssertionError(f"whole text: {e}; streamed in chunks: {streamed}") from None
        raise
    if isinstance(streamed, Exception):
        raise AssertionError(f"the whole text loads, streamed in chunks it fails: {streamed}")
    if (streamed.vocab(), streamed.warnings, list(streamed.counts)) != (lm.vocab(), lm.warnings, list(lm.counts)):
        raise AssertionError("the whole text and the streamed chunks give different models")
    _exercise_lm(lm)
    _exercise_lm(streamed)


def _ngram_binary_seeds() -> list[bytes]:
    """w2vlm's binary form of the ARPA seeds (orders 2 and 4)."""
    from w2vlm import _core

    out = []
    for i, text in enumerate(_arpa_seeds()):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, f"seed{i}.w2vlm")
            _core.NGramLM.from_arpa_bytes(text, "seed.arpa").save_binary(path)
            with open(path, "rb") as f:
                out.append(f.read())
    return out


def _run_ngram_binary(data: bytes, rng: random.Random) -> None:
    from w2vlm import _core

    _exercise_lm_file(data, ".w2vlm", _core.NGramLM.from_binary_file)


def _audio_seeds() -> list[bytes]:
    import numpy as np
    import soundfile as sf

    t = np.arange(1600) / 16000.0
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = []
    for fmt, subtype, x, sr in [
        ("WAV", "PCM_16", tone, 16000),
        ("WAV", "FLOAT", np.stack([tone, -tone], axis=1), 8000),
        ("FLAC", "PCM_16", tone, 16000),
        ("OGG", "VORBIS", tone, 16000),
        ("MP3", "MPEG_LAYER_III", tone, 16000),
    ]:
        buf = io.BytesIO()
        try:
            sf.write(buf, x, sr, format=fmt, subtype=subtype)
        except (sf.LibsndfileError, ValueError, TypeError, RuntimeError):
            continue  # a libsndfile without this format
        out.append(buf.getvalue())
    return out


def _run_audio(data: bytes, rng: random.Random) -> None:
    from w2vlm.audio import load_audio

    load_audio(data, 16000, max_duration_s=600.0)


_DECODER_CACHE: dict[str, object] = {}


def _decoder_seeds() -> list[bytes]:
    return [bytes(range(256)), b"\0" * 64, bytes(random.Random(1).randrange(256) for _ in range(256))]


def _run_decoder(data: bytes, rng: random.Random) -> None:
    import numpy as np

    from w2vlm import _core
    from w2vlm.decoder import build_ctcdecoder, load_ngram

    r = random.Random(data)
    if not _DECODER_CACHE:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "tiny.arpa"
            p.write_bytes(TINY_ARPA)
            labels = ["", " ", "a", "b", "'"]
            _DECODER_CACHE["plain"] = build_ctcdecoder(labels)
            _DECODER_CACHE["lm"] = build_ctcdecoder(labels, str(p), unigrams=["a", "b", "ab", "ba"])
            _DECODER_CACHE["lm0"] = build_ctcdecoder(labels, str(p), alpha=0.0)
        _DECODER_CACHE["binary"] = build_ctcdecoder(["", " ", *"abcdefghijklmnopqrstuvwxyz'"])
        big = load_ngram(DATA / "five.arpa")
        st = big.begin_sentence_state()
        for w in ["the", "sitting", "was", "altogether"]:
            st = big.base_score(st, w)[1]
        _DECODER_CACHE["foreign_state"] = st
    dec = _DECODER_CACHE[r.choice(["plain", "lm", "lm0"])]
    vocab = len(dec.alphabet)  # type: ignore[attr-defined]

    def pick(*options: object) -> object:
        return r.choice(options)

    frames = int(pick(0, 1, 3, 20, r.randrange(60)))
    cols = vocab if r.random() < 0.9 else int(pick(vocab - 1, vocab + 1))
    logits = np.asarray([[r.gauss(0, 3) for _ in range(cols)] for _ in range(frames)], dtype=np.float32)
    if frames and r.random() < 0.3:
        logits.reshape(-1)[r.randrange(logits.size)] = pick(np.nan, np.inf, -np.inf, 1e39, -1e39)
    if frames and r.random() < 0.1:
        logits[r.randrange(frames)] = -np.inf
    hot_words = ["a", "ab", "b a", "ba ab", "\u4e00\u4e8c", "'", " ", "a" * 300]
    kwargs: dict[str, object] = {
        "beam_width": pick(1, 2, 16, 100, 0, -1, 2**31, 2**63, 1.5, "8", True, 5000),
        "beam_prune_logp": pick(-10.0, -1e6, 0.0, 5.0, float("nan"), float("-inf")),
        "token_min_logp": pick(-5.0, -1e6, 0.0, float("inf")),
    }
    if r.random() < 0.5:
        kwargs["hotwords"] = pick(
            [r.choice(hot_words) for _ in range(r.randrange(5))],
            [(r.choice(hot_words), pick(1.0, -5.0, 1e39, 3e38, float("nan"), 0)) for _ in range(3)],
            {"ab": 2.0},
            "ab",
            [1, 2],
        )
        kwargs["hotword_weight"] = pick(10.0, 0.0, -3.0, 1e39, float("inf"), "x")
    mode = r.randrange(5)
    if mode == 0:
        state = pick(None, _DECODER_CACHE["foreign_state"], "state", _core.LMState())
        dec.decode_beams(logits, lm_start_state=state, **kwargs)  # type: ignore[attr-defined]
    elif mode == 1:
        dec.decode(logits, **kwargs)  # type: ignore[attr-defined]
    elif mode == 2:
        threads = pick(None, 1, 2, 0, -1, 2**31, 2**40)
        dec.decode_batch(None, [logits, logits[: frames // 2]], num_threads=threads, **kwargs)  # type: ignore[attr-defined]
    elif mode == 3:
        threads = pick(None, 1, 2, 0, 2**31)
        dec.decode_beams_batch(None, [logits], num_threads=threads, **kwargs)  # type: ignore[attr-defined]
    else:
        stream = dec.stream(**kwargs)  # type: ignore[attr-defined]
        for chunk in np.array_split(logits, 3) if frames else [logits]:
            stream.feed(chunk)
            stream.partial()
        stream.finalize()


def _run_selftest(data: bytes, rng: random.Random) -> None:
    """Misbehaves on purpose (for the harness's own test): a segfault, a hang, a wrong exception type."""
    import ctypes

    kind = zlib.crc32(data) % 16
    if kind == 0:
        ctypes.string_at(0)  # SIGSEGV
    elif kind == 1:
        time.sleep(3600)
    elif kind == 2:
        raise TypeError("not a W2vlmError")


TARGET_TABLE = {
    "kenlm_binary": Target("kenlm_binary", _kenlm_seeds, _run_kenlm, hot_region=(56, 400)),
    "arpa": Target("arpa", _arpa_seeds, _run_arpa, text=True),
    "ngram_binary": Target("ngram_binary", _ngram_binary_seeds, _run_ngram_binary, hot_region=(0, 160)),
    "audio": Target("audio", _audio_seeds, _run_audio, hot_region=(0, 64)),
    "decoder": Target("decoder", _decoder_seeds, _run_decoder),
    "selftest": Target("selftest", _decoder_seeds, _run_selftest),
}


# ---- child: run cases, announce each before it starts --------------------------------------------------------------
