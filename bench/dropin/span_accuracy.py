"""Which word spans are closer to the truth: pyctcdecode's (the path merged last) or the more probable path's?

Emissions are the test suite's peaky CTC logits (tests/test_decoder.py ``emissions``) with Gaussian noise, so the
frame of every character is known. Over utterances decoded right by both settings, prints the mean of
|start error| + |end error| per word and the share of words whose span is exact, for
``best_path_frames=False`` (default, pyctcdecode's) and ``True``.

    python bench/dropin/span_accuracy.py
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_decoder import HELLO_ARPA, WORDS_LABELS, emissions
from w2vlm.decoder import build_ctcdecoder


def main() -> None:
    d = tempfile.mkdtemp()
    p = os.path.join(d, "h.arpa")
    Path(p).write_text(HELLO_ARPA)
    rng = np.random.default_rng(0)
    words = ["hello", "world", "cold", "word"]
    decs = {
        k: build_ctcdecoder(WORDS_LABELS, p, words, best_path_frames=(k == "best path"))
        for k in ("last merged", "best path")
    }
    err: dict[str, list[int]] = {k: [] for k in decs}
    differ = n = 0
    for seed in range(300):
        ws = list(rng.choice(words, size=rng.integers(2, 6)))
        text, fpc = " ".join(ws), 2
        x = emissions(text, WORDS_LABELS, frames_per_char=fpc, noise=3.0, seed=seed)
        truth, pos = [], 0
        for w in ws:
            truth.append((pos * (fpc + 1), (pos + len(w) - 1) * (fpc + 1) + 1))
            pos += len(w) + 1
        got = {k: dec.decode_beams(x)[0] for k, dec in decs.items()}
        if any(g.text != text for g in got.values()):
            continue
        n += 1
        differ += got["last merged"].text_frames != got["best path"].text_frames
        for k, g in got.items():
            err[k] += [abs(s - ts) + abs(e - te) for (_, (s, e)), (ts, te) in zip(g.text_frames, truth)]
    print(f"{n} utterances decoded right by both; spans differ in {differ}")
    for k, v in err.items():
        a = np.array(v)
        print(f"{k:12s} mean |start|+|end| error {a.mean():.3f} frames, exact word spans {np.mean(a == 0):.1%}")


if __name__ == "__main__":
    main()
