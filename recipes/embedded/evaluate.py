"""Greedy vs beam-search + n-gram LM WER/CER of a CTC model on a manifest (held-out synthetic speech).

Usage::

    python recipes/embedded/evaluate.py --model src/w2vlm/assets/model --manifest .data/speech/test/manifest.jsonl
    python recipes/embedded/evaluate.py --model DIR --manifest DEV.jsonl --tune    # grid over alpha/beta

The LM is taken from ``--lm DIR`` (ARPA + unigrams.txt [+ attrs.json]) or from the model's
``language_model/`` folder. ``--tune`` searches alpha/beta on the given manifest (use the dev set) and
prints the best pair; ``--write-attrs`` stores it in the LM folder's ``attrs.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def compute_logits(model_dir: Path, manifest: Path, batch_seconds: float = 60.0) -> tuple[list, list[str]]:
    """Log-probabilities (frames x vocab, float32) and reference texts, in manifest order.

    The model input is made as in training (``w2vlm.features.model_inputs_for``: normalized waveform, or the
    log-mel features of a Wav2Vec2-BERT model), which is what the model's feature extractor gives."""
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    from w2vlm.features import model_inputs_for
    from w2vlm.train import Tokenizer, read_audio_int16, read_manifest

    model = AutoModelForCTC.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    inputs = model_inputs_for(model, AutoFeatureExtractor.from_pretrained(str(model_dir)))
    vocab = json.loads((model_dir / "vocab.json").read_text(encoding="utf-8"))
    tok = Tokenizer(vocab)
    items = read_manifest(manifest)
    audio = [read_audio_int16(u.audio).astype(np.float32) / 32768.0 for u in items]
    order = np.argsort([len(a) for a in audio])
    out: list = [None] * len(audio)
    batch: list[int] = []

    def run(idx: list[int]) -> None:
        lens = torch.tensor([len(audio[i]) for i in idx])
        x = torch.zeros(len(idx), int(lens.max()))
        for r, i in enumerate(idx):
            x[r, : len(audio[i])] = torch.from_numpy(audio[i])
        with torch.no_grad():
            values, mask = inputs(x, lens)
            lp = torch.log_softmax(model(values, attention_mask=mask).logits.float(), -1)
        for r, i in enumerate(idx):
            out[i] = lp[r, : inputs.frames(len(audio[i]))].numpy()

    for i in order:
        batch.append(int(i))
        if len(batch) * len(audio[int(i)]) > batch_seconds * 16000:
            run(batch)
            batch = []
    if batch:
        run(batch)
    return out, [tok.normalize(u.text) for u in items]


def greedy(logprobs: list, vocab: dict[str, int]) -> list[str]:
    from w2vlm.train import Tokenizer

    tok = Tokenizer(vocab)
    return [tok.greedy_decode(lp.argmax(-1).tolist()) for lp in logprobs]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--lm", type=Path, help="LM folder (default: MODEL/language_model)")
    ap.add_argument("--beam-width", type=int, default=100)
    ap.add_argument("--alpha", type=float)
    ap.add_argument("--beta", type=float)
    ap.add_argument("--tune", action="store_true", help="grid-search alpha/beta on this manifest")
    ap.add_argument("--write-attrs", action="store_true", help="store the tuned alpha/beta in attrs.json")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    from w2vlm.decoder import build_ctcdecoder, load_unigrams
    from w2vlm.metrics import error_rates
    from w2vlm.processor_parts import vocab_labels

    vocab = json.loads((args.model / "vocab.json").read_text(encoding="utf-8"))
    t0 = time.time()
    logprobs, refs = compute_logits(args.model, args.manifest)
    t_model = time.time() - t0
    g_hyps = greedy(logprobs, vocab)
    g_wer, g_cer = error_rates(refs, g_hyps)
    result: dict = {
        "manifest": str(args.manifest),
        "utterances": len(refs),
        "greedy": {"wer": g_wer, "cer": g_cer},
        "model_seconds": round(t_model, 1),
    }
    print(f"{len(refs)} utterances; greedy WER {100 * g_wer:.2f}%  CER {100 * g_cer:.2f}%")

    lm_dir = args.lm or (args.model / "language_model")
    arpas = sorted(lm_dir.glob("*.arpa")) + sorted(lm_dir.glob("*.bin")) + sorted(lm_dir.glob("*.binary"))
    if not arpas:
        print(f"no LM in {lm_dir}: greedy only")
    else:
        attrs_path = lm_dir / "attrs.json"
        attrs = json.loads(attrs_path.read_text()) if attrs_path.exists() else {}
        alpha = args.alpha if args.alpha is not None else attrs.get("alpha", 0.5)
        beta = args.beta if args.beta is not None else attrs.get("beta", 1.5)
        unigrams = load_unigrams(lm_dir / "unigrams.txt") if (lm_dir / "unigrams.txt").exists() else None
        decoder = build_ctcdecoder(vocab_labels(vocab), str(arpas[0]), unigrams, alpha=alpha, beta=beta)

        def lm_scores(a: float, b: float) -> tuple[float, float, list[str]]:
            decoder.reset_params(alpha=a, beta=b)
            hyps = decoder.decode_batch(None, logprobs, beam_width=args.beam_width)
            w, c = error_rates(refs, hyps)
            return w, c, hyps

        if args.tune:
            best = (float("inf"), alpha, beta)
            for a in (0.3, 0.5, 0.7, 1.0, 1.3):
                for b in (0.0, 1.0, 2.0, 3.0):
                    w, c, _ = lm_scores(a, b)
                    print(f"  alpha {a:.1f} beta {b:.1f}: WER {100 * w:.2f}%  CER {100 * c:.2f}%")
                    best = min(best, (w, a, b))
            _, alpha, beta = best
            print(f"best alpha {alpha} beta {beta}")
            if args.write_attrs:
                attrs.update({"alpha": alpha, "beta": beta})
                attrs.setdefault("unk_score_offset", -10.0)
                attrs.setdefault("score_boundary", True)
                attrs_path.write_text(json.dumps(attrs, indent=2) + "\n")
        t1 = time.time()
        l_wer, l_cer, l_hyps = lm_scores(alpha, beta)
        rel = (g_wer - l_wer) / g_wer if g_wer else 0.0
        result["lm"] = {
            "wer": l_wer,
            "cer": l_cer,
            "alpha": alpha,
            "beta": beta,
            "beam_width": args.beam_width,
            "decode_seconds": round(time.time() - t1, 1),
            "relative_wer_reduction": rel,
        }
        print(
            f"beam {args.beam_width} + LM (alpha {alpha}, beta {beta}): WER {100 * l_wer:.2f}%  "
            f"CER {100 * l_cer:.2f}%  ({100 * rel:.1f}% relative WER reduction)"
        )
        for ref, g, lm_hyp in list(zip(refs, g_hyps, l_hyps, strict=True))[:3]:
            print(f"  ref:    {ref}\n  greedy: {g}\n  lm:     {lm_hyp}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
