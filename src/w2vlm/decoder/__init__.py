"""w2vlm's CTC beam search decoder: a drop-in replacement for pyctcdecode on a native core.

>>> from w2vlm.decoder import build_ctcdecoder
>>> decoder = build_ctcdecoder(labels, kenlm_model_path="lm.arpa")
>>> text = decoder.decode(logits)
"""

from __future__ import annotations

from w2vlm._core import LMState, NGramLM
from w2vlm.decoder.alphabet import Alphabet, verify_alphabet_coverage
from w2vlm.decoder.beams import OutputBeam, OutputBeamMPSafe
from w2vlm.decoder.decoder import BeamSearchDecoderCTC, DecoderStream, build_ctcdecoder, load_alphabet_json
from w2vlm.decoder.language_model import LanguageModel, MultiLanguageModel
from w2vlm.decoder.logits import to_log_probs
from w2vlm.decoder.ngram_files import load_kenlm_binary, load_ngram, load_unigrams, save_ngram_binary

__all__ = [
    "Alphabet",
    "BeamSearchDecoderCTC",
    "DecoderStream",
    "LMState",
    "LanguageModel",
    "MultiLanguageModel",
    "NGramLM",
    "OutputBeam",
    "OutputBeamMPSafe",
    "build_ctcdecoder",
    "load_alphabet_json",
    "load_kenlm_binary",
    "load_ngram",
    "load_unigrams",
    "save_ngram_binary",
    "to_log_probs",
    "verify_alphabet_coverage",
]
