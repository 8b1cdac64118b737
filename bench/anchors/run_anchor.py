"""Run one anchor decoder over benchmark emissions; meant for bench/.venv-anchors' python.

Reads the emissions .npz written by bench/emissions.py and a JSON job file, decodes every utterance once per
hotword list, single-threaded, and writes a JSON result: per hotword list the texts, the top beam's scores
and the decode time (the LM load is timed separately). Only this venv's packages are imported here, never
w2vlm.

Job file: {"tool": "pyctcdecode" | "ctc-beam-decoder" | "flashlight-text", "emissions": path, "lm": path,
"hotword_sets": {"0": [...], "100": [...]}, "beam_width": 100, "beam_prune_logp": -10.0,
"token_min_logp": -5.0, "alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "hotword_weight": 10.0,
"repeats": 1, "utterances": null | int, "unigrams": null | path of a word list, one a line}

Usage: python run_anchor.py JOB.json OUT.json
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def load_emissions(path: str, limit: int | None) -> tuple[list[str], list[np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        data = z["logits"]
        offsets = z["offsets"]
        labels = [str(s) for s in z["labels"]]
    n = len(offsets) - 1 if limit is None else min(limit, len(offsets) - 1)
    return labels, [np.ascontiguousarray(data[offsets[i] : offsets[i + 1]]) for i in range(n)]


def job_unigrams(job: dict[str, Any]) -> list[str] | None:
    """The job's unigram list (None: each decoder takes the ARPA's own, by its own rule)."""
    path = job.get("unigrams")
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return [w for w in (line.strip() for line in f) if w]


def arpa_unigrams(path: str) -> list[str]:
    """Words of the ARPA's unigram section (no <s>, </s>, <unk>)."""
    words: list[str] = []
    inside = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
                continue
            if inside:
                if line.startswith("\\"):
                    break
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1] not in ("<s>", "</s>", "<unk>"):
                    words.append(parts[1])
    return words


class PyCTCDecode:
    name = "pyctcdecode"

    def __init__(self, labels: list[str], job: dict[str, Any]) -> None:
        from pyctcdecode import build_ctcdecoder

        self.job = job
        self.decoder = build_ctcdecoder(
            labels,
            kenlm_model_path=job["lm"],
            unigrams=job_unigrams(job),
            alpha=job["alpha"],
            beta=job["beta"],
            unk_score_offset=job["unk_score_offset"],
            lm_score_boundary=True,
        )

    def decode(self, logits: np.ndarray, hotwords: list[str]) -> tuple[str, float, float]:
        # decode() is decode_beams(prune_history=True)[0][0]; calling that directly also gives the scores.
        beams = self.decoder.decode_beams(
            logits,
            beam_width=self.job["beam_width"],
            beam_prune_logp=self.job["beam_prune_logp"],
            token_min_logp=self.job["token_min_logp"],
            prune_history=True,
            hotwords=hotwords or None,
            hotword_weight=self.job["hotword_weight"],
        )
        text, _state, _frames, logit_score, lm_score = beams[0]
        return text, float(logit_score), float(lm_score)


class CTCBeamDecoder:
    name = "ctc-beam-decoder"

    def __init__(self, labels: list[str], job: dict[str, Any]) -> None:
        from ctc_beam_decoder import build_ctcdecoder

        self.job = job
        self.decoder = build_ctcdecoder(
            labels,
            kenlm_model_path=job["lm"],
            unigrams=job_unigrams(job),
            alpha=job["alpha"],
            beta=job["beta"],
            unk_score_offset=job["unk_score_offset"],
            lm_score_boundary=True,
        )

    def decode(self, logits: np.ndarray, hotwords: list[str]) -> tuple[str, float, float]:
        beams = self.decoder.decode_beams(
            logits,
            beam_width=self.job["beam_width"],
            beam_prune_logp=self.job["beam_prune_logp"],
            token_min_logp=self.job["token_min_logp"],
            prune_history=True,  # what its decode() (and pyctcdecode's) uses
            hotwords=hotwords or None,
            hotword_weight=self.job["hotword_weight"],
        )
        if not beams:
            return "", 0.0, 0.0
        text, _state, _frames, logit_score, lm_score = beams[0]
        return text, float(logit_score), float(lm_score)


class Flashlight:
    """flashlight-text's lexicon decoder with its KenLM wrapper, set up as torchaudio's ctc_decoder does.

    The lexicon is the unigram list (the job's, else the ARPA's unigram section), so words outside it
    cannot be produced; the LM weight is alpha * ln 10 (flashlight's KenLM scores are log10, like
    pyctcdecode's before its ln 10 factor) and the word score is beta. It has no hotword API.
    """

    name = "flashlight-text"

    def __init__(self, labels: list[str], job: dict[str, Any]) -> None:
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
        )
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.job = job
        tokens = ["-" if t == "" else ("|" if t == " " else t) for t in labels]
        self.tokens = tokens
        token_dict = Dictionary(tokens)
        blank = tokens.index("-")
        sil = tokens.index("|")
        words = job_unigrams(job) or arpa_unigrams(job["lm"])
        known = set(tokens)
        lexicon: dict[str, list[list[str]]] = {}
        for w in words:
            if all(c in known for c in w):
                lexicon[w] = [[*list(w), "|"]]
        word_dict = Dictionary([*lexicon, "<unk>"])
        word_dict.set_default_index(word_dict.get_index("<unk>"))
        self.word_dict = word_dict
        lm = KenLM(job["lm"], word_dict)
        trie = Trie(len(tokens), sil)
        start = lm.start(False)
        for word, spellings in lexicon.items():
            widx = word_dict.get_index(word)
            _, score = lm.score(start, widx)
            for spelling in spellings:
                trie.insert([token_dict.get_index(t) for t in spelling], widx, score)
        trie.smear(SmearingMode.MAX)
        opts = LexiconDecoderOptions(
            beam_size=job["beam_width"],
            beam_size_token=len(tokens),
            beam_threshold=job.get("flashlight_beam_threshold", 50.0),
            lm_weight=job["alpha"] * math.log(10.0),
            word_score=job["beta"],
            unk_score=-math.inf,
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        unk = word_dict.get_index("<unk>")
        self.decoder = LexiconDecoder(opts, trie, lm, sil, blank, unk, [], False)
        self._keep = (lm, trie, token_dict)

    def decode(self, logits: np.ndarray, hotwords: list[str]) -> tuple[str, float, float]:
        if hotwords:
            raise ValueError("flashlight-text has no hotword API")
        # flashlight wants log-probabilities; a model's raw logits are log-softmaxed first (as torchaudio's
        # users do), and that is part of the timed work here as it is for the other decoders.
        x = logits.astype(np.float32)
        m = x.max(axis=1, keepdims=True)
        x = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
        x = np.ascontiguousarray(x, dtype=np.float32)
        t, n = x.shape
        results = self.decoder.decode(x.ctypes.data, t, n)
        if not results:
            return "", 0.0, 0.0
        best = results[0]
        words = [self.word_dict.get_entry(i) for i in best.words if i >= 0]
        return " ".join(words), float(best.emittingModelScore), float(best.score)


TOOLS = {"pyctcdecode": PyCTCDecode, "ctc-beam-decoder": CTCBeamDecoder, "flashlight-text": Flashlight}
DISTS = {
    "pyctcdecode": "pyctcdecode",
    "ctc-beam-decoder": "ctc-beam-decoder",
    "flashlight-text": "flashlight-text",
}


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out_path = Path(sys.argv[2])
    tool = job["tool"]
    labels, logits = load_emissions(job["emissions"], job.get("utterances"))
    frames = sum(x.shape[0] for x in logits)
    result: dict[str, Any] = {
        "tool": tool,
        "version": importlib.metadata.version(DISTS[tool]),
        "frames": frames,
        "utterances": len(logits),
        "runs": {},
    }
    t0 = time.perf_counter()
    dec = TOOLS[tool](labels, job)
    result["load_s"] = time.perf_counter() - t0
    if logits:
        dec.decode(logits[0], [])  # warm-up, not timed (w2vlm gets the same)
    for key, hotwords in job["hotword_sets"].items():
        if hotwords and tool == "flashlight-text":
            result["runs"][key] = {"unsupported": "no hotword API"}
            continue
        best = math.inf
        texts: list[str] = []
        scores: list[tuple[float, float]] = []
        for rep in range(max(1, int(job.get("repeats", 1)))):
            gc.collect()
            rep_texts: list[str] = []
            rep_scores: list[tuple[float, float]] = []
            t0 = time.perf_counter()
            for x in logits:
                text, logit_score, lm_score = dec.decode(x, hotwords)
                rep_texts.append(text)
                rep_scores.append((logit_score, lm_score))
            elapsed = time.perf_counter() - t0
            best = min(best, elapsed)
            if rep == 0:
                texts, scores = rep_texts, rep_scores
        result["runs"][key] = {
            "hotwords": len(hotwords),
            "decode_s": best,
            "frames_per_s": frames / best if best > 0 else math.inf,
            "texts": texts,
            "scores": scores,
        }
        print(f"{tool}: {len(hotwords)} hotwords: {frames / best:,.0f} frames/s", file=sys.stderr, flush=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
