"""Local stand-ins for the hub repositories and dataset that transformers' Wav2Vec2ProcessorWithLM and
ASR-pipeline LM tests read, laid out as an offline huggingface_hub cache (nothing is downloaded).

The originals are not available offline, so the stand-ins are rebuilt from what the tests state about them:
the 16-token vocabulary of the tests (``| <pad> <unk> <s> </s> a … k``), a language model whose known words are
``<s>`` and ``</s>`` (the words the tests expect in transcripts), a tiny random ``Wav2Vec2ForCTC`` over the same
vocabulary, the feature-extractor configs of ``facebook/w2v-bert-2.0`` (SeamlessM4T) and
``openai/whisper-large-v3`` (Whisper), and a synthetic ``hf-internal-testing/librispeech_asr_dummy``. Scores
and transcripts of the stand-in LM differ from the hub's, so tests that assert the hub LM's exact transcripts
or scores can fail for any processor; compare processors on the same fixtures.

Needs numpy, torch and transformers (no w2vlm, no pyctcdecode): the same builder serves both processors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

VOCAB = ["|", "<pad>", "<unk>", "<s>", "</s>", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
DECODER_REPO = "hf-internal-testing/ngram-beam-search-decoder"
PROCESSOR_REPO = "hf-internal-testing/processor_with_lm"
W2V_BERT_REPO = "facebook/w2v-bert-2.0"
WHISPER_REPO = "openai/whisper-large-v3"
LIBRISPEECH_DUMMY = "hf-internal-testing/librispeech_asr_dummy"
#: rows of the synthetic librispeech_asr_dummy split (the tests index row 40)
DATASET_ROWS = 73

# A 2-gram ARPA model over the words the tests' transcripts consist of; other words are unknown.
_ARPA = """\\data\\
ngram 1=3
ngram 2=4

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.30103
-2.0\t<unk>

\\2-grams:
-0.5\t<s> </s>
-0.5\t<s> <s>
-0.5\t</s> <s>
-0.5\t</s> </s>

\\end\\
"""
_ATTRS = {"alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": True}


def _labels() -> list[str]:
    mapping = {"|": " ", "<pad>": "", "<unk>": "⁇"}
    return [mapping.get(token, token) for token in VOCAB]


def write_decoder_files(folder: Path) -> None:
    """``alphabet.json`` + ``language_model/`` (attrs, unigrams, ARPA) in the layout pyctcdecode saves."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alphabet.json").write_text(json.dumps({"labels": _labels(), "is_bpe": False}), encoding="utf-8")
    lm = folder / "language_model"
    lm.mkdir(exist_ok=True)
    (lm / "attrs.json").write_text(json.dumps(_ATTRS), encoding="utf-8")
    (lm / "unigrams.txt").write_text("<s>\n</s>\n", encoding="utf-8")
    (lm / "2gram.arpa").write_text(_ARPA, encoding="utf-8")


def write_processor_repo(folder: Path) -> None:
    """A tiny random Wav2Vec2ForCTC with tokenizer, feature extractor and decoder files (the hub layout)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(str(folder))
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    extractor.save_pretrained(str(folder))
    config_file = folder / "preprocessor_config.json"
    data = json.loads(config_file.read_text(encoding="utf-8"))
    data["processor_class"] = "Wav2Vec2ProcessorWithLM"
    config_file.write_text(json.dumps(data, indent=2), encoding="utf-8")
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16, 16, 16, 16, 16, 16),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=VOCAB.index("<pad>"),
        do_stable_layer_norm=False,
        feat_extract_norm="group",
    )
    Wav2Vec2ForCTC(config).save_pretrained(str(folder))
    write_decoder_files(folder)


def write_feature_extractor_repo(folder: Path, kind: str) -> None:
    """Only the preprocessor config of a model (what ``AutoFeatureExtractor.from_pretrained`` reads)."""
    from transformers import SeamlessM4TFeatureExtractor, WhisperFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor() if kind == "seamless" else WhisperFeatureExtractor(feature_size=128)
    folder.mkdir(parents=True, exist_ok=True)
    extractor.save_pretrained(str(folder))


def _cache_repo(cache: Path, repo_id: str, src: Path) -> Path:
    """Lay ``src`` out as huggingface_hub's cache does (blobs, snapshots/<commit>, refs/main)."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        rel = file.relative_to(src)
        target = snap / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path(*[".."] * (len(rel.parts) + 1), "blobs", blob.name))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snap


def build_pyctcdecode_cache(cache: Path) -> None:
    """pyctcdecode's ``load_from_hf_hub`` keeps its own cache (``~/.cache/pyctcdecode``) of only the decoder
    files (``alphabet.json``, ``language_model/``) of a repository: lay both LM repositories out there too."""
    with tempfile.TemporaryDirectory() as tmp:
        for repo_id in (DECODER_REPO, PROCESSOR_REPO):
            src = Path(tmp) / repo_id.replace("/", "--")
            write_decoder_files(src)
            _cache_repo(cache, repo_id, src)


def build_hub_cache(cache: Path) -> dict[str, Path]:
    """Write every stand-in repository into the offline cache ``cache``; returns repo id -> snapshot folder."""
    builders = {
        DECODER_REPO: write_decoder_files,
        PROCESSOR_REPO: write_processor_repo,
        W2V_BERT_REPO: lambda f: write_feature_extractor_repo(f, "seamless"),
        WHISPER_REPO: lambda f: write_feature_extractor_repo(f, "whisper"),
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repo_id, build in builders.items():
            src = Path(tmp) / repo_id.replace("/", "--")
            build(src)
            out[repo_id] = _cache_repo(cache, repo_id, src)
            shutil.rmtree(src)
    return out
