"""Shared pytest fixtures: synthetic audio, tiny random CTC checkpoints in the hub layout, small ARPA LMs.

Everything here is generated locally by the fixtures themselves; nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "dropin"))
from hf_fixtures import make_fake_hf_cache  # noqa: F401  the hub cache layout (one implementation)

# ----------------------------------------------------------------------------------------------------------
# audio


def make_sine(
    duration_s: float = 1.0,
    sampling_rate: int = 16000,
    freq: float = 440.0,
    channels: int = 1,
    amplitude: float = 0.5,
) -> np.ndarray:
    """A float32 sine; (samples,) for one channel, (samples, channels) otherwise (channel k at freq·(k+1))."""
    t = np.arange(round(duration_s * sampling_rate), dtype=np.float64) / sampling_rate
    cols = [amplitude * np.sin(2 * np.pi * freq * (k + 1) * t) for k in range(channels)]
    data = np.stack(cols, axis=1).astype(np.float32)
    return data[:, 0].copy() if channels == 1 else data


def write_audio_file(
    path: Path,
    data: np.ndarray,
    sampling_rate: int,
    codec: str | None = None,
    bit_rate: int | None = None,
    subtype: str | None = None,
) -> Path:
    """Write ``data`` ((samples,) or (samples, channels) float32) to ``path``.

    With ``codec=None`` soundfile picks the format from the suffix (wav, flac, ogg) and ``subtype`` (e.g.
    "FLOAT" for lossless float wav; default 16-bit PCM). Otherwise PyAV encodes it
    (``codec`` e.g. "libmp3lame", "aac", "libopus"; the container comes from the suffix).
    """
    path = Path(path)
    if codec is None:
        import soundfile as sf

        sf.write(str(path), data, sampling_rate, subtype=subtype)
        return path
    import av

    planar = data if data.ndim == 2 else data[:, None]
    channels = planar.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=sampling_rate)
        stream.layout = layout
        if bit_rate:
            stream.bit_rate = bit_rate
        fmt = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=sampling_rate)
        frame_size = 1024
        pts = 0
        for start in range(0, planar.shape[0], frame_size):
            block = np.ascontiguousarray(planar[start : start + frame_size].T.astype(np.float32))
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = sampling_rate
            frame.pts = pts
            pts += block.shape[1]
            for rframe in resampler.resample(frame):
                for packet in stream.encode(rframe):
                    container.mux(packet)
        for rframe in resampler.resample(None):
            for packet in stream.encode(rframe):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture
def sine_wav(tmp_path: Path) -> Path:
    """One second of a 440 Hz sine, mono 16 kHz wav."""
    return write_audio_file(tmp_path / "sine.wav", make_sine(1.0, 16000), 16000)


# ----------------------------------------------------------------------------------------------------------
# language models


def write_arpa(path: Path, sentences: Iterable[str], order: int = 2) -> Path:
    """Write a small ARPA LM estimated from ``sentences`` (absolute discounting, order 1..3).

    Good enough to give sensible decoder behaviour in tests; not meant as a quality LM.
    """
    if not 1 <= order <= 3:
        raise ValueError("order must be 1, 2 or 3")
    sents = [["<s>", *s.split(), "</s>"] for s in sentences]
    counts: list[Counter] = [Counter() for _ in range(order)]
    for words in sents:
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                if n == 1 and gram == ("<s>",):
                    continue
                counts[n - 1][gram] += 1
    discount = 0.5
    vocab = sorted({w for words in sents for w in words} | {"<unk>"})
    total_uni = sum(counts[0].values())
    probs: list[dict[tuple[str, ...], float]] = [{} for _ in range(order)]
    backoffs: list[dict[tuple[str, ...], float]] = [{} for _ in range(order)]
    # unigrams: discounted counts with the freed mass given to <unk>
    unk_mass = discount * len(counts[0]) / total_uni
    for w in vocab:
        if w == "<s>":
            probs[0][(w,)] = -99.0
        elif w == "<unk>":
            probs[0][(w,)] = math.log10(max(unk_mass, 1e-6))
        else:
            probs[0][(w,)] = math.log10((counts[0][(w,)] - discount) / total_uni)
    for n in range(2, order + 1):
        ctx_tot: Counter = Counter()
        ctx_types: Counter = Counter()
        for gram, c in counts[n - 1].items():
            ctx_tot[gram[:-1]] += c
            ctx_types[gram[:-1]] += 1
        for gram, c in counts[n - 1].items():
            probs[n - 1][gram] = math.log10((c - discount) / ctx_tot[gram[:-1]])
        for ctx, tot in ctx_tot.items():
            freed = discount * ctx_types[ctx] / tot
            seen_lower = sum(10 ** probs[n - 2].get(g[1:], -99.0) for g in counts[n - 1] if g[:-1] == ctx)
            denom = max(1e-9, 1.0 - seen_lower)
            backoffs[n - 2][ctx] = math.log10(max(freed / denom, 1e-9))
    lines = ["", "\\data\\"]
    lines += [f"ngram {n}={len(probs[n - 1])}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        for gram in sorted(probs[n - 1]):
            entry = f"{probs[n - 1][gram]:.6f}\t{' '.join(gram)}"
            if n < order:
                entry += f"\t{backoffs[n - 1].get(gram, 0.0):.6f}"
            lines.append(entry)
    lines += ["", "\\end\\", ""]
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


LM_SENTENCES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog",
    "the bird sang a song",
    "hello world",
    "the world is big",
]


@pytest.fixture
def small_arpa(tmp_path: Path) -> Path:
    """A bigram ARPA file over a dozen English words."""
    return write_arpa(tmp_path / "lm.arpa", LM_SENTENCES, order=2)


# ----------------------------------------------------------------------------------------------------------
# tiny CTC checkpoints

CHAR_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz'"]


def build_tiny_ctc_checkpoint(
    out_dir: Path,
    *,
    arch: str = "wav2vec2",
    vocab: list[str] | None = None,
    with_lm: bool = True,
    lm_sentences: Iterable[str] = LM_SENTENCES,
    feat_extract_norm: str = "group",
    num_hidden_layers: int = 1,
    do_normalize: bool = True,
    seed: int = 0,
    safetensors: bool = True,
) -> Path:
    """Write a random tiny CTC model in the hub layout (config, weights, feature extractor, tokenizer files).

    ``arch`` picks the transformers model family ("wav2vec2", "hubert", "wavlm", "data2vec-audio").
    With ``with_lm`` the folder also gets ``alphabet.json`` and ``language_model/`` (attrs.json, unigrams.txt
    and an ARPA file written by :func:`write_arpa`) and ``processor_class`` Wav2Vec2ProcessorWithLM, i.e. the
    layout that transformers' ``Wav2Vec2ProcessorWithLM.save_pretrained`` produces.
    ``num_hidden_layers=0`` with ``feat_extract_norm="layer"`` and ``do_normalize=False`` gives a model whose
    output frames depend only on nearby audio (no attention, no normalization over time).
    """
    import torch
    import transformers

    vocab = list(vocab or CHAR_VOCAB)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16, 16, 16, 16, 16, 16),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=feat_extract_norm == "layer",
        pad_token_id=0,
        ctc_loss_reduction="mean",
    )
    classes = {
        "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2ForCTC),
        "hubert": (transformers.HubertConfig, transformers.HubertForCTC),
        "wavlm": (transformers.WavLMConfig, transformers.WavLMForCTC),
        "data2vec-audio": (transformers.Data2VecAudioConfig, transformers.Data2VecAudioForCTC),
        "wav2vec2-conformer": (transformers.Wav2Vec2ConformerConfig, transformers.Wav2Vec2ConformerForCTC),
        "wav2vec2-bert": (transformers.Wav2Vec2BertConfig, transformers.Wav2Vec2BertForCTC),
    }
    if arch not in classes:
        raise ValueError(f"unknown arch {arch!r}")
    config_cls, model_cls = classes[arch]
    if arch == "data2vec-audio":
        common.pop("do_stable_layer_norm")
        common.pop("feat_extract_norm")
    if arch == "wavlm":
        common["num_buckets"] = 8
        common["max_bucket_distance"] = 16
    if arch == "wav2vec2-conformer":
        common["conv_depthwise_kernel_size"] = 3
    if arch == "wav2vec2-bert":  # log-mel input features, no convolutional front end
        common = {k: v for k, v in common.items() if not k.startswith(("conv_", "feat_", "do_stable", "num_conv"))}
        common.update(conv_depthwise_kernel_size=3, add_adapter=False)
    config = config_cls(**common)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # make the output layer peaky so that greedy and beam outputs are well defined (and, as on speech, the
    # model is confident of what it emits: its outputs pass the no-speech gate)
    with torch.no_grad():
        model.lm_head.weight.mul_(75.0)
    model.save_pretrained(str(out_dir))
    if not safetensors:  # the older pickle layout (transformers 5 always writes safetensors)
        (out_dir / "model.safetensors").unlink()
        torch.save(model.state_dict(), out_dir / "pytorch_model.bin")

    vocab_dict = {tok: i for i, tok in enumerate(vocab)}
    (out_dir / "vocab.json").write_text(json.dumps(vocab_dict, ensure_ascii=False), encoding="utf-8")
    tokenizer = transformers.Wav2Vec2CTCTokenizer(
        str(out_dir / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    tokenizer.save_pretrained(str(out_dir))
    if arch == "wav2vec2-bert":
        feature_extractor = transformers.SeamlessM4TFeatureExtractor()
    else:
        feature_extractor = transformers.Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16000,
            padding_value=0.0,
            do_normalize=do_normalize,
            return_attention_mask=feat_extract_norm == "layer",
        )
    feature_extractor.save_pretrained(str(out_dir))
    if with_lm:
        pre = json.loads((out_dir / "preprocessor_config.json").read_text())
        pre["processor_class"] = "Wav2Vec2ProcessorWithLM"
        (out_dir / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
        labels = []
        for tok in vocab:
            if tok == "<pad>":
                labels.append("")
            elif tok == "|":
                labels.append(" ")
            elif tok == "<unk>":
                labels.append("⁇")
            else:
                labels.append(tok)
        (out_dir / "alphabet.json").write_text(
            json.dumps({"labels": labels, "is_bpe": False}, ensure_ascii=False), encoding="utf-8"
        )
        lm_dir = out_dir / "language_model"
        lm_dir.mkdir(exist_ok=True)
        sents = list(lm_sentences)
        write_arpa(lm_dir / "lm.arpa", sents, order=2)
        words = sorted({w for s in sents for w in s.split()})
        (lm_dir / "unigrams.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
        (lm_dir / "attrs.json").write_text(
            json.dumps({"alpha": 0.5, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": True})
        )
    return out_dir


@pytest.fixture
def tiny_ctc_factory(tmp_path: Path) -> Callable[..., Path]:
    """Factory fixture: ``tiny_ctc_factory(name="m", **kwargs)`` builds a checkpoint under tmp_path."""

    def _make(name: str = "tiny", **kwargs) -> Path:
        return build_tiny_ctc_checkpoint(tmp_path / name, **kwargs)

    return _make


@pytest.fixture(scope="session")
def tiny_ctc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide tiny random Wav2Vec2ForCTC checkpoint with LM, in the hub layout (read-only use)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_ctc_checkpoint(tmp_path_factory.mktemp("tiny_ctc") / "model")


def model_weights(folder: Path) -> dict:
    """The tensors of ``folder/model.safetensors`` (a model folder in the hub layout)."""
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> Path:
    """Four tone-burst clips of short texts over the letters a-d (the training tests' manifest)."""
    from train_helpers import write_tiny_manifest

    return write_tiny_manifest(tmp_path)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """The example recordings (16 kHz), in a fixed order (the VAD tests')."""
    from vad_helpers import example_clips

    return example_clips()


@pytest.fixture(scope="module")
def silero() -> object:
    """The process's Silero VAD; skips the test when the 'vad' extra is not installed."""
    from vad_helpers import shared_silero

    return shared_silero()
