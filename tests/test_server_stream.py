"""Streaming transcriptions of the OpenAI-compatible server, in-process (FastAPI's TestClient): the settled
prefix of the beams, and an upload cut into speech segments streamed segment by segment (text, and verbose_json
for the web page). ``test_server.py`` streams over a live server."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from w2vlm.server import ServerSettings, create_app

MODEL_ID = "tiny-test"


def test_settled_prefix_of_streaming() -> None:
    from w2vlm.server import settled_prefix

    assert settled_prefix(["the cat sat", "the cat sad"]) == "the cat "
    assert settled_prefix(["the cat"]) == "the "  # "cat" may still become "cats"
    assert settled_prefix(["ab c", "ab"]) == ""
    assert settled_prefix([]) == "" and settled_prefix(["word"]) == ""


def _close(a: Any, b: Any) -> bool:
    """JSON values equal, floats to within a relative or an absolute 1e-5 (float32 rounding: a segment's
    ``avg_logprob`` near 0, a mean of the model's log-probabilities, moves by ~6e-8 between a segment run alone and
    in a batch with others on an AVX-512 CPU, 3e-6 of its value; a word's confidence by up to ~2e-6)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_streaming_sends_each_speech_segment_and_verbose_json_has_its_no_speech_prob() -> None:
    """With voice activity detection (an upload longer than 10 s), each speech segment's text is sent as soon
    as it is recognised; the deltas make the final text, which is the non-streamed transcript's."""
    import soundfile as sf
    from fastapi.testclient import TestClient

    import w2vlm
    from w2vlm.engine import silero

    if not silero.available():
        pytest.skip("the 'vad' extra is not installed")
    examples = Path(__file__).resolve().parents[1] / "examples"
    clips = [sf.read(examples / f"{n}.wav", dtype="float32")[0] for n in ("children", "cottages", "elizabeth")]
    gap = np.zeros(16000, np.float32)
    audio = np.concatenate([gap, *(x for clip in clips for x in (clip, gap)), gap])  # ~12 s
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    pipe = w2vlm.pipeline("automatic-speech-recognition")
    settings = ServerSettings(model_id=MODEL_ID)
    with TestClient(create_app(pipe, settings)) as client:
        form = {"model": MODEL_ID, "response_format": "verbose_json", "timestamp_granularities[]": "segment"}
        body = client.post("/v1/audio/transcriptions", data=form, files={"file": ("a.wav", data)}).json()
        with client.stream(
            "POST",
            "/v1/audio/transcriptions",
            data={"model": MODEL_ID, "stream": "true"},
            files={"file": ("a.wav", data)},
        ) as r:
            events = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
    segments = body["segments"]
    assert len(segments) == len(clips)
    assert all(0.0 <= s["no_speech_prob"] < 0.5 for s in segments)
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    assert len(deltas) == len(segments)  # one event a segment
    assert [d.strip() for d in deltas] == [s["text"].strip() for s in segments]
    assert events[-1] == {"type": "transcript.text.done", "text": body["text"]} and "".join(deltas) == body["text"]

    # include[]=logprobs streamed: each delta carries its words' entries, the done event all of them
    with (
        TestClient(create_app(pipe, settings)) as client,
        client.stream(
            "POST",
            "/v1/audio/transcriptions",
            data={"model": MODEL_ID, "stream": "true", "include[]": "logprobs"},
            files={"file": ("a.wav", data)},
        ) as r,
    ):
        scored = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
    *parts_lp, done_lp = scored
    assert [e["delta"] for e in parts_lp] == deltas
    assert all("".join(x["token"] for x in e["logprobs"]) == e["delta"] for e in parts_lp)
    assert done_lp["text"] == body["text"] and done_lp["logprobs"] == [x for e in parts_lp for x in e["logprobs"]]

    # verbose_json streamed (the web page): each delta carries its segment with words and confidences, and the
    # done event is the whole verbose_json body, equal to the one not streamed
    both = {**form, "timestamp_granularities[]": ["word", "segment"]}
    with TestClient(create_app(pipe, settings)) as client:
        full = client.post("/v1/audio/transcriptions", data=both, files={"file": ("a.wav", data)}).json()
        with client.stream(
            "POST", "/v1/audio/transcriptions", data={**both, "stream": "true"}, files={"file": ("a.wav", data)}
        ) as r:
            detailed = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
    parts = [e["segment"] for e in detailed if e["type"] == "transcript.text.delta"]
    assert [p["id"] for p in parts] == list(range(len(clips)))
    # the same up to float rounding: streamed segments run through the model one by one, not in one batch
    assert _close([{k: v for k, v in p.items() if k != "words"} for p in parts], full["segments"])
    assert _close([w for p in parts for w in p["words"]], full["words"])
    assert all(isinstance(w["confidence"], float) for w in full["words"])
    done = detailed[-1]
    assert done.pop("type") == "transcript.text.done" and done["text"] == full["text"]
    # the whole verbose_json body but its usage (OpenAI's done event has usage in tokens only, as the SDK types it)
    assert "usage" in full and "usage" not in done
    rest = {k: v for k, v in full.items() if k != "usage"}
    assert done == {**rest, "segments": done["segments"], "words": done["words"]}
    assert done["segments"] == [{k: v for k, v in p.items() if k != "words"} for p in parts]
