"""Put a trained model and an LM folder together in the hub layout (e.g. into ``src/w2vlm/assets/model``).

Usage::

    python recipes/embedded/package.py --model .data/models/embedded --lm .data/lm_embedded \
        --out src/w2vlm/assets/model [--alpha A --beta B]

Writes config.json, model.safetensors, preprocessor_config.json (``Wav2Vec2ProcessorWithLM``), tokenizer
files, vocab.json, alphabet.json and language_model/ (the ARPA file, unigrams.txt, attrs.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="model folder written by `w2vlm train`")
    ap.add_argument("--lm", type=Path, required=True, help="folder with one .arpa file and unigrams.txt")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=1.5)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoFeatureExtractor, AutoModelForCTC, Wav2Vec2CTCTokenizer

    from w2vlm.train import check_lm_dir, save_hub_layout

    model = AutoModelForCTC.from_pretrained(str(args.model), dtype=torch.float32)
    extractor = AutoFeatureExtractor.from_pretrained(str(args.model))
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(args.model))
    info_path = args.model / "training_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else None

    with tempfile.TemporaryDirectory() as tmp:
        lm = Path(tmp) / "language_model"
        lm.mkdir()
        for f in check_lm_dir(args.lm).iterdir():
            if f.name.endswith((".arpa", ".bin", ".binary")) or f.name == "unigrams.txt":
                shutil.copy2(f, lm / f.name)
        attrs = {"alpha": args.alpha, "beta": args.beta, "unk_score_offset": -10.0, "score_boundary": True}
        (lm / "attrs.json").write_text(json.dumps(attrs, indent=2) + "\n")
        save_hub_layout(model, extractor, tokenizer, args.out, lm_dir=lm, extra=info, language="en")
    sizes = {p.name: p.stat().st_size for p in sorted(args.out.rglob("*")) if p.is_file()}
    print(json.dumps(sizes, indent=1))


if __name__ == "__main__":
    main()
