from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import write_audio_file  # noqa: E402
from w2vlm.decoder import build_ctcdecoder  # noqa: E402
from w2vlm.engine.config import ConfigError  # noqa: E402
from w2vlm.errors import AudioError, ModelError  # noqa: E402
from w2vlm.model import load_model  # noqa: E402
from w2vlm.pipeline import CTCLogitsRunner, ctc_align  # noqa: E402


def _noise(seconds: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(round(seconds * sr))).astype(np.float32)


@pytest.fixture(scope="module")
def local_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose frames depend only on nearby audio: chunked logits must equal whole-input logits."""
    from conftest import build_tiny_ctc_checkpoint

    return build_tiny_ctc_checkpoint(
        tmp_path_factory.mktemp("local") / "m",
        feat_extract_norm="layer",
        num_hidden_layers=0,
        do_normalize=False,
        with_lm=False,
    )


_RUNNERS: dict[Path, CTCLogitsRunner] = {}


def _runner(folder: Path) -> CTCLogitsRunner:
    if folder not in _RUNNERS:
        model = load_model(folder, device="cpu")
        fe = transformers.AutoFeatureExtractor.from_pretrained(str(folder))
        _RUNNERS[folder] = CTCLogitsRunner(model, fe)
    return _RUNNERS[folder]


def _whole_logits(runner: CTCLogitsRunner, audio: np.ndarray) -> np.ndarray:
    """The model's log-probabilities of the whole input, computed with transformers' own extractor."""
    inputs = runner.feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return torch.log_softmax(runner.model(inputs.input_values).logits[0], -1).numpy()


@pytest.mark.parametrize("seconds", [0.5, 3.0, 4.02, 5.0, 7.3])
@pytest.mark.parametrize(("chunk_s", "stride_s"), [(1.0, 0.2), (2.0, (0.3, 0.1)), (1.5, 0.5)])
def test_chunked_logits_equal_whole(local_model_dir: Path, seconds: float, chunk_s: float, stride_s) -> None:
    runner = _runner(local_model_dir)
    audio = _noise(seconds, seed=int(seconds * 10))
    whole = _whole_logits(runner, audio)
    (chunked,) = runner.compute_logits([audio], chunk_s, stride_s, batch_size=3)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=2e-4, rtol=1e-4)


def test_streamed_file_equals_array(local_model_dir: Path, tmp_path: Path) -> None:
    runner = _runner(local_model_dir)
    audio = _noise(6.1, seed=5)
    path = write_audio_file(tmp_path / "long.flac", audio, 16000)
    decoded = np.asarray(__import__("soundfile").read(str(path), dtype="float32")[0])
    whole = _whole_logits(runner, decoded)
    (streamed,) = runner.compute_logits([str(path)], 1.0, 0.25, batch_size=2)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=2e-4, rtol=1e-4)


def test_unchunked_equals_transformers(tiny_ctc_dir: Path) -> None:
    runner = _runner(tiny_ctc_dir)
    audio = _noise(1.3, seed=2)
    (ours,) = runner.compute_logits([audio])
    ref_model = transformers.Wav2Vec2ForCTC.from_pretrained(str(tiny_ctc_dir)).eval()
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(tiny_ctc_dir))
    with torch.no_grad():
        ref = ref_model(fe(audio, sampling_rate=16000, return_tensors="pt").input_values).logits[0]
    np.testing.assert_allclose(ours, torch.log_softmax(ref, -1).numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("folder_fixture", ["tiny_ctc_dir", "local_model_dir"])
def test_batch_equals_single(request, folder_fixture: str) -> None:
    runner = _runner(request.getfixturevalue(folder_fixture))
    items = [_noise(1.0, 1), _noise(1.0, 2), _noise(0.7, 3), _noise(2.5, 4)]
    single = [runner.compute_logits([x])[0] for x in items]
    batched = runner.compute_logits(items, batch_size=4)
    for a, b in zip(single, batched, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    chunked_single = [runner.compute_logits([x], 1.0, 0.2)[0] for x in items]
    chunked_batched = runner.compute_logits(items, 1.0, 0.2, batch_size=3)
    for a, b in zip(chunked_single, chunked_batched, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_auto_chunking_of_long_inputs(local_model_dir: Path) -> None:
    from w2vlm.engine import EngineConfig

    model = load_model(local_model_dir, device="cpu")
    config = EngineConfig(max_whole_s=2.0, window_s=1.0)
    runner = CTCLogitsRunner(model, transformers.AutoFeatureExtractor.from_pretrained(str(local_model_dir)), config)
    seen = []
    original = runner.engine.runner.forward

    def counting_forward(batch):
        seen.extend(p.samples for p in batch)
        return original(batch)

    runner.engine.runner.forward = counting_forward
    audio = _noise(3.5, seed=9)
    (logits,) = runner.compute_logits([audio])
    assert max(seen) <= 16000 + 320 and len(seen) > 3
    np.testing.assert_allclose(logits, _whole_logits(runner, audio), atol=2e-4, rtol=1e-4)


def test_bad_chunk_arguments(local_model_dir: Path) -> None:
    runner = _runner(local_model_dir)
    with pytest.raises(ValueError, match="strides together must be shorter than chunk_length_s"):
        runner.compute_logits([_noise(2.0)], 1.0, 0.5)
    with pytest.raises(ValueError, match="chunk_length_s: must be positive"):
        runner.compute_logits([_noise(2.0)], -1.0, 0.1)


def test_too_short_input(local_model_dir: Path) -> None:
    runner = _runner(local_model_dir)
    with pytest.raises(AudioError, match="too short"):
        runner.compute_logits([np.zeros(100, np.float32)])


def test_ctc_align_simple() -> None:
    # frames: blank, a, a, blank, b, b, blank -> a at [1, 3), b at [4, 6)
    vocab = 3
    path = [0, 1, 1, 0, 2, 2, 0]
    logp = np.full((len(path), vocab), -10.0)
    for f, tok in enumerate(path):
        logp[f, tok] = 0.0
    assert ctc_align(logp, [1, 2], blank=0) == [(1, 3), (4, 6)]
    # repeated token needs a blank between
    path = [1, 0, 1]
    logp = np.full((3, vocab), -10.0)
    for f, tok in enumerate(path):
        logp[f, tok] = 0.0
    assert ctc_align(logp, [1, 1], blank=0) == [(0, 1), (2, 3)]
    with pytest.raises(ValueError, match="cannot hold"):
        ctc_align(logp[:2], [1, 1], blank=0)


def test_pipeline_without_default_model(monkeypatch, tmp_path: Path) -> None:
    from w2vlm import model as model_mod
    from w2vlm.pipeline import pipeline

    monkeypatch.setattr(model_mod, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(ModelError, match="embedded default model is not installed"):
        pipeline("automatic-speech-recognition")
    with pytest.raises(ValueError, match="task: 'translation' is not supported"):
        pipeline("translation")


def test_public_names_are_lazy_and_callable() -> None:
    import subprocess
    import sys

    code = (
        "import sys, w2vlm; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
        "import w2vlm.pipeline; assert callable(w2vlm.pipeline); "
        "from w2vlm import pipeline, load_model, load_audio, Wav2Vec2ProcessorWithLM; "
        "assert callable(pipeline) and callable(load_model) and callable(load_audio); "
        "assert 'w2vlm._core' not in sys.modules, 'the native decoder is imported on use only'"
    )
    env = {**__import__("os").environ}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + ":" + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ------------------------------------------------------------------------------------------------------------
# end to end, with the LM decoder


@pytest.fixture(scope="module")
def asr(tiny_ctc_dir: Path):
    pytest.importorskip("w2vlm.decoder")
    from w2vlm.pipeline import pipeline

    return pipeline("automatic-speech-recognition", model=str(tiny_ctc_dir), device="cpu")


def test_pipeline_text_and_input_kinds(asr, tmp_path: Path) -> None:
    audio = _noise(1.5, seed=31)
    out = asr(audio)
    assert set(out) == {"text"} and isinstance(out["text"], str) and out["text"]
    assert asr.type == "ctc_with_lm"
    path = write_audio_file(tmp_path / "x.wav", audio, 16000, subtype="FLOAT")
    assert asr(str(path)) == out
    assert asr(str(path))["text"] == asr(path.read_bytes())["text"] == asr({"path": str(path)})["text"]
    x8k = _noise(1.0, seed=32, sr=8000)
    assert asr({"raw": x8k, "sampling_rate": 8000})["text"] == asr({"array": x8k, "sampling_rate": 8000})["text"]


def test_pipeline_matches_processor_decode(asr) -> None:
    audio = _noise(2.0, seed=33)
    (logits,) = asr.compute_logits([audio])
    expected = asr.processor.decode(logits, output_word_offsets=True)
    out = asr(audio, return_timestamps="word")
    assert out["text"] == expected.text
    ratio = 320 / 16000
    assert [c["text"] for c in out["chunks"]] == [w["word"] for w in expected.word_offsets]
    for chunk, word in zip(out["chunks"], expected.word_offsets, strict=True):
        assert chunk["timestamp"] == (
            pytest.approx(word["start_offset"] * ratio),
            pytest.approx(word["end_offset"] * ratio),
        )


def test_pipeline_char_timestamps(asr) -> None:
    audio = _noise(2.0, seed=34)
    words = asr(audio, return_timestamps="word")
    chars = asr(audio, return_timestamps="char")
    assert chars["text"] == words["text"]
    # as transformers' CTC character offsets: the word delimiter is a chunk " ", so the chunks spell the text
    assert "".join(c["text"] for c in chars["chunks"]) == words["text"]
    # every character lies inside its word, in order; a space spans the pause between two words
    spans = iter(chars["chunks"])
    previous = None
    for i, word in enumerate(words["chunks"]):
        start, end = word["timestamp"]
        if i:
            space = next(spans)
            assert space["text"] == " " and space["timestamp"] == (previous, start)
        for _ in word["text"]:
            ch = next(spans)
            assert start - 1e-9 <= ch["timestamp"][0] < ch["timestamp"][1] <= end + 1e-9
        previous = ch["timestamp"][1]


def test_pipeline_list_and_batch_equal_single(asr) -> None:
    items = [_noise(1.0, 41), _noise(1.6, 42), _noise(1.0, 43)]
    singles = [asr(x, return_timestamps="word") for x in items]
    assert asr(items, batch_size=3, return_timestamps="word") == singles
    assert asr(items, batch_size=2, return_timestamps="word") == singles


def test_pipeline_chunked_equals_decoding_stitched_logits(asr) -> None:
    audio = _noise(9.0, seed=44)
    out = asr(audio, chunk_length_s=2.0, stride_length_s=0.4, batch_size=4, return_timestamps="word")
    (stitched,) = asr.compute_logits([audio], 2.0, 0.4)
    assert stitched.shape[0] == asr.compute_logits([audio])[0].shape[0]
    whole = asr.processor.decode(stitched, output_word_offsets=True)
    assert out["text"] == whole.text
    assert [c["text"] for c in out["chunks"]] == [w["word"] for w in whole.word_offsets]
    assert out["chunks"][-1]["timestamp"][1] <= 9.0 + 1e-9


def test_pipeline_decoder_kwargs(asr) -> None:
    audio = _noise(1.5, seed=45)
    (logits,) = asr.compute_logits([audio])
    expected = asr.processor.decode(logits, beam_width=4, alpha=0.0, beta=0.0).text
    assert asr(audio, decoder_kwargs={"beam_width": 4, "alpha": 0.0, "beta": 0.0})["text"] == expected
    assert asr(audio)["text"] == asr.processor.decode(logits).text
    from w2vlm.errors import UnexpectedArgumentError, W2vlmError

    assert issubclass(UnexpectedArgumentError, TypeError) and issubclass(UnexpectedArgumentError, W2vlmError)
    with pytest.raises(TypeError, match=r"decoder_kwargs: unknown keys \['beam_size'\]"):
        asr(audio, decoder_kwargs={"beam_size": 3})


def test_pipeline_with_loaded_model_and_processor(tiny_ctc_dir: Path, asr) -> None:
    from w2vlm.pipeline import pipeline
    from w2vlm.processor import Wav2Vec2ProcessorWithLM

    model = load_model(tiny_ctc_dir, device="cpu")
    proc = Wav2Vec2ProcessorWithLM.from_pretrained(tiny_ctc_dir)
    pipe = pipeline("automatic-speech-recognition", model=model, processor=proc)
    audio = _noise(1.2, seed=46)
    assert pipe(audio)["text"] == asr(audio)["text"]
    pipe2 = pipeline(model=model)  # the processor comes from the folder named in the model's config
    assert pipe2(audio)["text"] == asr(audio)["text"]
    # the processor's parts as model cards pass them, and transformers' other arguments
    parts = {"tokenizer": proc.tokenizer, "feature_extractor": proc.feature_extractor, "decoder": proc.decoder}
    pipe3 = pipeline("automatic-speech-recognition", model=model, **parts)
    assert pipe3(audio)["text"] == asr(audio)["text"]
    greedy = build_ctcdecoder(proc.decoder.alphabet.labels)  # one part replaces the folder's own
    pipe4 = pipeline(model=str(tiny_ctc_dir), decoder=greedy, trust_remote_code=False, device_map="cpu")
    assert pipe4.processor.decoder is greedy and pipe4.model.device.type == "cpu"
    assert pipeline(model=str(tiny_ctc_dir), framework="pt", device_map="auto")(audio)["text"] == asr(audio)["text"]
    with pytest.raises(ConfigError, match="framework: w2vlm runs PyTorch models"):
        pipeline(model=str(tiny_ctc_dir), framework="tf")
    with pytest.raises(ConfigError, match="device_map: w2vlm runs the model on one device"):
        pipeline(model=str(tiny_ctc_dir), device_map={"": 0})
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['nonsense'\]"):
        pipeline(model=str(tiny_ctc_dir), nonsense=1)


def test_pipeline_int8(tiny_ctc_dir: Path) -> None:
    from w2vlm.pipeline import pipeline

    pipe = pipeline(model=tiny_ctc_dir, device="cpu", quantize="int8")
    assert isinstance(pipe(_noise(1.0, 47))["text"], str)


def test_pipeline_bad_inputs(asr, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioError, match=r"bad\.wav"):
        asr(str(bad))
    with pytest.raises(AudioError, match="allow_urls"):
        asr("https://example.invalid/x.wav")
    with pytest.raises(ValueError, match="return_timestamps"):
        asr(_noise(1.0), return_timestamps="sentence")
    with pytest.raises(ValueError, match="batch_size"):
        asr(_noise(1.0), batch_size=0)


def test_char_alignment_matches_decoder_char_frames(asr) -> None:
    from w2vlm.decoder import BeamSearchDecoderCTC
    from w2vlm.pipeline import char_spans_from_beam

    labels = list(asr.decoder.alphabet.labels)
    idx = {lab: i for i, lab in enumerate(labels)}
    rng = np.random.default_rng(0)
    rows = []
    for ch in "the cat sat on the mat":
        for tok in (idx[ch], idx[ch], idx[""]):
            row = rng.normal(0, 1.0, len(labels))
            row[tok] += 6.0
            rows.append(row)
    logits = np.asarray(rows, dtype=np.float32)
    # the alignment is the best path; the decoder gives pyctcdecode's spans (the path merged last) unless asked
    decoder = BeamSearchDecoderCTC(asr.decoder.alphabet, asr.decoder.language_model, best_path_frames=True)
    beam = decoder.decode_beams(logits)[0]
    assert beam.char_frames, "the decoder reports token frames"
    from_decoder = char_spans_from_beam(beam, logits, labels)
    from_alignment = char_spans_from_beam(tuple(beam), logits, labels)  # a plain tuple has no char_frames
    assert from_alignment == from_decoder
    assert "".join(ch for ch, _ in from_alignment) == beam.text.replace(" ", "")


def test_chunked_stream_with_decoder_kwargs_and_chars(asr) -> None:
    audio = _noise(7.0, seed=48)
    kwargs = {"beam_width": 8, "alpha": 1.5, "beta": 0.5, "hotwords": ["cat"]}
    out = asr(audio, chunk_length_s=1.5, stride_length_s=0.3, decoder_kwargs=kwargs, return_timestamps="char")
    (stitched,) = asr.compute_logits([audio], 1.5, 0.3)
    whole = asr.processor.decode(stitched, **kwargs)
    assert out["text"] == whole.text
    assert "".join(c["text"] for c in out["chunks"]) == whole.text
    # the per-call parameters did not stay in the decoder
    assert asr.decoder.language_model.alpha == 0.5 and asr.decoder.language_model.beta == 1.5


@pytest.mark.slow
def test_long_file_memory_is_bounded(asr, tmp_path: Path) -> None:
    """20 minutes of audio from a file: Python-side peak memory stays far below the decoded audio's size."""
    import tracemalloc

    import soundfile as sf

    path = tmp_path / "long.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=16000, channels=1, format="FLAC") as fh:
        for _ in range(20):
            fh.write((0.3 * rng.standard_normal(16000 * 60)).astype(np.float32))
    whole_bytes = 20 * 60 * 16000 * 4  # 76.8 MB as float32
    tracemalloc.start()
    try:
        out = asr(str(path), chunk_length_s=20.0, stride_length_s=2.0, batch_size=2, return_timestamps="word")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out["chunks"] and out["chunks"][-1]["timestamp"][1] <= 20 * 60 + 1e-6
    assert peak < whole_bytes / 3, f"peak {peak / 1e6:.1f} MB"


def test_wav2vec2_bert_runner(tiny_ctc_factory) -> None:
    """A log-mel input model: same frame rate as wav2vec2, frame-level attention masks when batching."""
    folder = tiny_ctc_factory("w2v-bert", arch="wav2vec2-bert", with_lm=False)
    runner = _runner(folder)
    assert runner.ratio == 320
    items = [_noise(1.0, 61), _noise(1.7, 62)]
    singles = [runner.compute_logits([x])[0] for x in items]
    assert [s.shape[0] for s in singles] == [49, 84]
    batched = runner.compute_logits(items, batch_size=2)
    for a, b in zip(singles, batched, strict=True):
        assert a.shape == b.shape
        assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.9
    (chunked,) = runner.compute_logits([_noise(5.0, 63)], 1.0, 0.2)
    assert chunked.shape[0] == runner.compute_logits([_noise(5.0, 63)])[0].shape[0]


def test_streamed_ffmpeg_file(local_model_dir: Path, tmp_path: Path) -> None:
    """A file only ffmpeg reads (AAC in m4a) is streamed through PyAV when chunking."""
    from w2vlm.audio import load_audio

    runner = _runner(local_model_dir)
    path = write_audio_file(tmp_path / "speech.m4a", _noise(4.5, seed=71), 16000, codec="aac")
    whole = _whole_logits(runner, load_audio(path))
    (streamed,) = runner.compute_logits([str(path)], 1.0, 0.2)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=2e-4, rtol=1e-4)


def test_a_generator_of_inputs_gives_an_iterator_of_results(tiny_ctc_dir: Path, monkeypatch) -> None:
    """As transformers' pipeline: ``asr(x for x in ...)`` yields one result per input, in order, the same as the
    list; the inputs are taken a group at a time (not all read first)."""
    import w2vlm.pipeline as pipeline_module
    from w2vlm.pipeline import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(tiny_ctc_dir), device="cpu")
    items = [_noise(0.5 + 0.1 * i, seed=i) for i in range(5)]
    expected = asr(items)
    monkeypatch.setattr(pipeline_module, "STREAM_GROUP", 2)
    taken = []

    def source():
        for i, x in enumerate(items):
            taken.append(i)
            yield x

    results = asr(source())
    assert not isinstance(results, list) and taken == []  # nothing read until results are asked for
    first = next(results)
    assert first == expected[0] and taken == [0, 1]  # one group of two read for the first result
    assert [first, *results] == expected
