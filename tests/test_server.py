"""The OpenAI-compatible server: formats, errors, auth, bounded queue, concurrency, the openai client, CLI.

Every test talks HTTP to a real uvicorn server on 127.0.0.1 (an ephemeral port) serving a tiny random
checkpoint built by the conftest fixtures; expected transcripts come from w2vlm's pipeline on the same audio.
"""

from __future__ import annotations

import io
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
try:  # python-multipart: module python_multipart since 0.0.13, multipart before
    import python_multipart  # noqa: F401
except ImportError:
    pytest.importorskip("multipart", reason="needs python-multipart (pip install 'w2vlm[server]')")
pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from server_support import (  # noqa: E402
    API_KEY,
    MODEL_ID,
    LiveServer,
    assert_openai_error,
    auth,
    make_clips,
    noise,
    post,
    wav_bytes,
)
from w2vlm.server import ServerSettings, create_app  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tiny_ctc_dir: Path) -> Any:
    import w2vlm

    return w2vlm.pipeline("automatic-speech-recognition", model=str(tiny_ctc_dir), device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, bytes]]:
    return make_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def server(pipe: Any) -> Iterator[LiveServer]:
    settings = ServerSettings(
        model_id=MODEL_ID,
        api_key=API_KEY,
        max_upload_bytes=1_000_000,
        workers=2,
        max_queue=64,
        stream_chunk_s=1.0,
    )
    with LiveServer(create_app(pipe, settings)) as live:
        yield live


# ------------------------------------------------------------------------------------------------ formats


def test_json_and_text_match_the_pipeline(server: LiveServer, pipe: Any, clips: dict) -> None:
    for audio, data in clips.values():
        expected = pipe(audio)["text"]
        assert expected  # the tiny model does produce words on these clips
        r = post(server, data)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["text"] == expected
        assert body["usage"] == {"type": "duration", "seconds": int(np.ceil(audio.size / 16000))}
        r = post(server, data, response_format="text")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text == expected + "\n"


def test_verbose_json_words_and_segments(server: LiveServer, pipe: Any, clips: dict) -> None:
    audio, data = clips["b"]
    expected = pipe(audio, return_timestamps="word")
    r = post(server, data, response_format="verbose_json", **{"timestamp_granularities[]": ["word", "segment"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == expected["text"]
    assert body["duration"] == pytest.approx(audio.size / 16000)
    words = body["words"]
    assert [(w["word"], (w["start"], w["end"])) for w in words] == [
        (c["text"], tuple(c["timestamp"])) for c in expected["chunks"]
    ]
    assert all(0.0 <= w["confidence"] <= 1.0 for w in words)
    segments = body["segments"]
    # as OpenAI's: each segment's text begins with a space, and the texts joined as they are give the transcript
    assert all(s["text"].startswith(" ") and not s["text"].startswith("  ") for s in segments)
    assert "".join(s["text"] for s in segments).strip() == expected["text"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    for seg in segments:
        assert seg["start"] <= seg["end"]
        assert seg["tokens"] and all(isinstance(t, int) for t in seg["tokens"])
        assert seg["avg_logprob"] <= 0.0
    # default granularity is segment; words only when asked
    r = post(server, data, response_format="verbose_json")
    assert "segments" in r.json() and "words" not in r.json()
    r = post(server, data, response_format="verbose_json", **{"timestamp_granularities[]": "word"})
    assert "words" in r.json() and "segments" not in r.json()


def test_logprobs_as_openai_includes_them(server: LiveServer, clips: dict) -> None:
    """``include[]=logprobs`` (gpt-4o-transcribe's): with response_format json, one entry a word: its token text
    (after a space but the first), the log of its confidence (verbose_json's), its UTF-8 bytes."""
    _, data = clips["b"]
    body = post(server, data, **{"include[]": "logprobs"}).json()
    entries = body["logprobs"]
    assert list(body) == ["text", "logprobs", "usage"]
    assert "".join(e["token"] for e in entries) == body["text"]
    assert not entries[0]["token"].startswith(" ") and all(e["token"].startswith(" ") for e in entries[1:])
    assert all(e["bytes"] == list(e["token"].encode()) and e["logprob"] <= 0.0 for e in entries)
    words = post(server, data, response_format="verbose_json", **{"timestamp_granularities[]": "word"}).json()
    confidences = [w["confidence"] for w in words["words"]]
    assert [e["logprob"] for e in entries] == pytest.approx([math.log(max(c, 1e-6)) for c in confidences], abs=1e-5)
    assert "logprobs" not in post(server, data).json()  # only when asked for
    assert_openai_error(post(server, data, response_format="verbose_json", **{"include[]": "logprobs"}), 400, "include")
    assert_openai_error(post(server, data, **{"include[]": "tokens"}), 400, "include")


def test_chunking_strategy_sets_the_requests_voice_activity_detection(server: LiveServer, clips: dict) -> None:
    """OpenAI's ``chunking_strategy``: ``auto`` cuts even a short upload at speech (white noise: none, so no words;
    the server's default leaves a 3 s upload whole), ``server_vad`` objects set the VAD's fields, as JSON or as
    ``chunking_strategy[field]`` form fields (what the SDKs send); anything else is a named 400."""
    from w2vlm.engine.silero import available

    if not available():
        pytest.skip("needs the vad extra")
    _, data = clips["b"]
    assert post(server, data).json()["text"]  # whole: the tiny model's words for the noise
    assert post(server, data, chunking_strategy="auto").json()["text"] == ""
    as_json = post(server, data, chunking_strategy=json.dumps({"type": "server_vad", "threshold": 0.5}))
    fields = post(server, data, **{"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "0.5"})
    assert as_json.status_code == fields.status_code == 200 and as_json.json() == fields.json()
    assert as_json.json()["text"] == ""
    for bad in (
        "bogus",
        '{"type": "semantic"}',
        '{"type": "server_vad", "threshold": 2}',
        '{"type": "server_vad", "x": 1}',
    ):
        assert_openai_error(post(server, data, chunking_strategy=bad), 400, "chunking_strategy")


def test_srt_and_vtt(server: LiveServer, pipe: Any, clips: dict) -> None:
    audio, data = clips["b"]
    text = pipe(audio)["text"]
    srt = post(server, data, response_format="srt").text
    vtt = post(server, data, response_format="vtt").text
    assert srt.startswith("1\n00:00:")
    assert " --> " in srt
    assert vtt.startswith("WEBVTT\n\n00:00:")
    cue_lines = [ln for ln in srt.splitlines() if ln and not ln.isdigit() and "-->" not in ln]
    assert " ".join(cue_lines) == text
    cue_lines = [ln for ln in vtt.splitlines()[1:] if ln and "-->" not in ln]
    assert " ".join(cue_lines) == text


def test_prompt_is_used_as_hotwords(server: LiveServer, pipe: Any, clips: dict) -> None:
    from w2vlm.server import Transcriber

    tr = Transcriber(pipe)
    assert tr.hotwords_from_prompt("Hello World") == ["hello", "world"]
    assert tr.hotwords_from_prompt("Big Cat, hello-world;\nBIRD!") == ["big cat", "hello world", "bird"]
    assert tr.hotwords_from_prompt("") == [] and tr.hotwords_from_prompt("123 !!") == []
    audio, data = clips["a"]
    plain = pipe(audio)["text"]
    with_hotword = pipe(audio, decoder_kwargs={"hotwords": ["duvyuot"]})["text"]
    assert with_hotword != plain  # the hotword (close to a word of this clip) changes its transcript ...
    r = post(server, data, prompt="Duvyuot")
    assert r.status_code == 200, r.text
    assert r.json()["text"] == with_hotword  # ... and the server passes the prompt on as that hotword


def _stream(server: LiveServer, data: bytes) -> Any:
    """A streamed transcription request for a wav upload (a context manager giving the response)."""
    return httpx.stream(
        "POST",
        f"{server.url}/v1/audio/transcriptions",
        data={"model": MODEL_ID, "stream": "true"},
        files={"file": ("long.wav", data, "audio/wav")},
        headers=auth(),
        timeout=60,
    )


def test_streaming_events(server: LiveServer, pipe: Any, tmp_path: Path) -> None:
    audio = noise(4.0, 7)
    data = wav_bytes(audio, tmp_path, "long.wav")
    from w2vlm.audio import load_audio

    expected = pipe(load_audio(data, 16000), chunk_length_s=1.0)["text"]
    with _stream(server, data) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert events[-1] == {"type": "transcript.text.done", "text": expected}
    assert len(deltas) >= 2  # words arrive while the 1 s windows are decoded
    assert "".join(d["delta"] for d in deltas) == expected
    # a client that leaves after the first event frees its place
    with _stream(server, data) as r:
        assert next(line for line in r.iter_lines() if line.startswith("data: "))
    _wait_for(server, "in_flight", 0)
    _wait_for(server, "decoding", 0)
    for fmt in ("srt", "vtt"):  # subtitles are not streamed: a 400, not plain-text events
        r = post(server, data, response_format=fmt, stream="true")
        assert_openai_error(r, 400, "stream")


# ----------------------------------------------------------------------------------------- other routes


def test_health_models_page(server: LiveServer) -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL_ID and health["auth"] is True
    models = httpx.get(f"{server.url}/v1/models", headers=auth()).json()
    assert models["object"] == "list"
    # OpenAI's transcription models are aliases: code written for them runs as it is
    assert [m["id"] for m in models["data"]] == [MODEL_ID, "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]
    assert httpx.get(f"{server.url}/v1/models/{MODEL_ID}", headers=auth()).json()["id"] == MODEL_ID
    assert httpx.get(f"{server.url}/v1/models/GPT-4o-Transcribe", headers=auth()).status_code == 200
    # OpenAI's request id headers (the SDK's request_id), a fresh id each response
    ids = [httpx.get(f"{server.url}/health").headers for _ in range(2)]
    assert all(h["x-request-id"].startswith("req_") and int(h["openai-processing-ms"]) >= 0 for h in ids)
    assert ids[0]["x-request-id"] != ids[1]["x-request-id"]
    # no translation (a named 404), and no Swagger page (it loads its scripts from a CDN: not offline)
    err = assert_openai_error(
        httpx.post(f"{server.url}/v1/audio/translations", headers=auth(), data={"model": MODEL_ID}), 404
    )
    assert err["code"] == "unsupported_endpoint" and "translation is not supported" in err["message"]
    assert_openai_error(httpx.get(f"{server.url}/docs"), 404)
    assert_openai_error(httpx.get(f"{server.url}/v1/models/nope", headers=auth()), 404, "model")
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="file-input"' in page.text and 'id="record-button"' in page.text
    for name in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/web/{name}").status_code == 200
    # HEAD (uptime checkers, load balancers): the headers of GET, no body, through the real server
    for path in ("/", "/health", "/web/app.js", "/favicon.ico"):
        head, get = httpx.head(f"{server.url}{path}"), httpx.get(f"{server.url}{path}")
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
    assert_openai_error(httpx.get(f"{server.url}/web/../server.py"), 404)
    assert_openai_error(httpx.get(f"{server.url}/no/such/route"), 404)
    assert_openai_error(httpx.get(f"{server.url}/v1/audio/transcriptions"), 405)


def test_auth(server: LiveServer, clips: dict) -> None:
    _, data = clips["c"]
    err = assert_openai_error(post(server, data, headers={}), 401)
    assert err["code"] == "invalid_api_key"
    assert_openai_error(post(server, data, headers={"Authorization": "Bearer wrong"}), 401)
    assert_openai_error(post(server, data, headers={"Authorization": f"Basic {API_KEY}"}), 401)
    assert_openai_error(httpx.get(f"{server.url}/v1/models"), 401)
    assert httpx.get(f"{server.url}/health").status_code == 200  # health needs no key
    assert post(server, data, model="whisper-1").status_code == 200  # the alias works


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server: LiveServer, pipe: Any, clips: dict) -> None:
    audio, data = clips["c"]
    cases = [
        (post(server, None, files={"notes": ("n.txt", b"x", "text/plain")}), 400, "file"),
        (post(server, None), 400, None),  # not even multipart
        (post(server, b""), 400, "file"),
        (post(server, b"this is not audio at all" * 50), 400, "file"),
        (post(server, data[:60]), 400, "file"),  # a truncated wav header
        (post(server, None, files={"other": ("x.wav", data, "audio/wav")}, file="text"), 400, "file"),
        (post(server, data, model=None), 400, "model"),
        (post(server, data, model="gpt-9-transcribe"), 404, "model"),
        (post(server, data, response_format="xml"), 400, "response_format"),
        (post(server, data, **{"timestamp_granularities[]": "char"}), 400, "timestamp_granularities"),
        (post(server, data, **{"timestamp_granularities[]": "word"}), 400, "timestamp_granularities"),
        (post(server, data, stream="maybe"), 400, "stream"),
        (post(server, data, temperature="hot"), 400, "temperature"),
        (post(server, data, temperature="2"), 400, "temperature"),
        (post(server, data, language="english language"), 400, "language"),
        (post(server, data, prompt="x" * 5000), 400, "prompt"),
    ]
    for response, status, param in cases:
        assert_openai_error(response, status, param)
    bad_audio = cases[3][0].json()["error"]
    assert bad_audio["code"] == "invalid_audio" and "clip.wav" in bad_audio["message"]
    assert cases[2][0].json()["error"]["code"] == "invalid_audio"  # empty
    # streamed: an upload that cannot be read is refused before the stream starts (it was a 200 with an error
    # event), and its message names the upload, not the temporary file the server read it from
    for bad in (b"this is not audio at all" * 50, data[:60]):
        err = assert_openai_error(post(server, bad, stream="true"), 400, "file")
        assert err["code"] == "invalid_audio" and "clip.wav" in err["message"] and "w2vlm-upload" not in err["message"]
    # not multipart at all
    r = httpx.post(f"{server.url}/v1/audio/transcriptions", json={"model": MODEL_ID}, headers=auth())
    assert_openai_error(r, 400)
    # too large: announced by Content-Length, and sent chunked without one
    big = b"\0" * 1_200_000
    err = assert_openai_error(post(server, big), 413, "file")
    assert err["code"] == "file_too_large"

    def chunked() -> Iterator[bytes]:
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="model"\r\n\r\n' + MODEL_ID.encode() + b"\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 100_000
        yield b"\r\n--xyz--\r\n"

    r = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        content=chunked(),
        headers={**auth(), "Content-Type": "multipart/form-data; boundary=xyz"},
        timeout=60,
    )
    assert_openai_error(r, 413, "file")
    # the server is still fine
    r = post(server, data)
    assert r.status_code == 200 and r.json()["text"] == pipe(audio)["text"]
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["in_flight"] == 0 and health["decoding"] == 0


def test_uploads_are_read_from_a_temporary_file_that_goes_away(pipe: Any, clips: dict, tmp_path: Path) -> None:
    """An upload is written to a temporary file and read block by block (a 60-minute opus upload had been
    decoded whole in memory: 0.4 -> 1.8 GB); the file is gone after the request, streamed or not, and one
    longer than the server's limit by its header is refused before it is read."""
    import tempfile

    audio, data = clips["c"]
    before = set(Path(tempfile.gettempdir()).glob("w2vlm-upload-*"))
    settings = ServerSettings(model_id=MODEL_ID, max_audio_s=1.0)
    with LiveServer(create_app(pipe, ServerSettings(model_id=MODEL_ID))) as live:
        assert post(live, data, headers={}).json()["text"] == pipe(audio)["text"]
        with httpx.stream(
            "POST",
            f"{live.url}/v1/audio/transcriptions",
            data={"model": MODEL_ID, "stream": "true"},
            files={"file": ("clip.wav", data, "audio/wav")},
            timeout=60,
        ) as r:
            assert r.status_code == 200 and "transcript.text.done" in r.read().decode()
    assert set(Path(tempfile.gettempdir()).glob("w2vlm-upload-*")) == before
    seconds = audio.size / 16000
    with LiveServer(create_app(pipe, settings)) as live:
        err = assert_openai_error(post(live, data, headers={}), 400, "file")
        assert f"its header says it is {seconds:.1f} s long; this server takes at most 1 s" in err["message"]


def test_language_is_checked_against_the_served_language(pipe: Any, clips: dict) -> None:
    settings = ServerSettings(model_id=MODEL_ID, language="en")
    with LiveServer(create_app(pipe, settings)) as live:
        _, data = clips["c"]
        ok = post(live, data, headers={}, language="en", response_format="verbose_json")
        assert ok.status_code == 200 and ok.json()["language"] == "english"  # as OpenAI names it
        err = assert_openai_error(post(live, data, headers={}, language="de"), 400, "language")
        assert err["code"] == "unsupported_language"


# ------------------------------------------------------------------------------------------ load and queue


def _health(live: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{live.url}/health", timeout=10).json()


def _wait_for(live: LiveServer, key: str, value: int) -> None:
    deadline = time.time() + 20
    while _health(live)[key] != value:
        assert time.time() < deadline, f"{key} never reached {value}: {_health(live)}"
        time.sleep(0.02)


def test_full_queue_gets_503_then_recovers(pipe: Any, clips: dict) -> None:
    _, data = clips["c"]
    settings = ServerSettings(model_id=MODEL_ID, workers=1, max_queue=0)
    with LiveServer(create_app(pipe, settings)) as live:
        # a client that announces a body and sends only part of it holds the one place in the server
        slow = socket.create_connection(("127.0.0.1", live.port))
        try:
            head = (
                "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n"
            )
            slow.sendall(head.encode() + b"--xyz\r\n")
            _wait_for(live, "in_flight", 1)
            r = post(live, data, headers={})
            err = assert_openai_error(r, 503)
            assert err["type"] == "server_error" and err["code"] == "server_busy"
            assert r.headers["retry-after"] == "1"
            assert _health(live)["rejected"] == 1
        finally:
            slow.close()
        _wait_for(live, "in_flight", 0)
        assert post(live, data, headers={}).status_code == 200


def test_stalled_upload_times_out_and_frees_its_place(pipe: Any, clips: dict) -> None:
    settings = ServerSettings(model_id=MODEL_ID, workers=1, max_queue=0, upload_timeout_s=0.5)
    with LiveServer(create_app(pipe, settings)) as live:
        slow = socket.create_connection(("127.0.0.1", live.port))
        try:
            head = (
                "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n"
            )
            slow.sendall(head.encode() + b"--xyz\r\n")
            slow.settimeout(20)
            reply = b""
            while b"\r\n\r\n" not in reply:
                reply += slow.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408")
        finally:
            slow.close()
        _wait_for(live, "in_flight", 0)
        assert post(live, clips["c"][1], headers={}).status_code == 200


def test_50_concurrent_requests_all_succeed(server: LiveServer, pipe: Any, clips: dict) -> None:
    expected = {name: pipe(audio)["text"] for name, (audio, _) in clips.items()}
    names = [list(clips)[i % len(clips)] for i in range(50)]
    barrier = threading.Barrier(50, timeout=30)

    def one(name: str) -> tuple[str, int, str]:
        with httpx.Client(timeout=120) as client:
            barrier.wait()  # all 50 are sent at once
            r = client.post(
                f"{server.url}/v1/audio/transcriptions",
                data={"model": MODEL_ID},
                files={"file": (f"{name}.wav", clips[name][1], "audio/wav")},
                headers=auth(),
            )
        return name, r.status_code, r.json().get("text", r.text) if r.status_code == 200 else r.text

    before = _health(server)["served"]
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, names))
    failures = [(n, s, t) for n, s, t in results if s != 200 or t != expected[n]]
    assert failures == []
    health = _health(server)
    assert health["served"] - before == 50 and health["in_flight"] == 0


# ----------------------------------------------------------------------------------------- openai client


def test_official_openai_client(server: LiveServer, pipe: Any, clips: dict) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)
    audio, data = clips["b"]
    expected = pipe(audio, return_timestamps="word")

    assert [m.id for m in client.models.list()][:2] == [MODEL_ID, "whisper-1"]
    t = client.audio.transcriptions.create(model=MODEL_ID, file=("b.wav", data, "audio/wav"))
    assert t.text == expected["text"]
    v = client.audio.transcriptions.create(
        model="whisper-1",
        file=io.BytesIO(data),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
        temperature=0.0,
    )
    assert v.text == expected["text"] and v.language == "english"  # as OpenAI names the language
    assert [(w.word, w.start, w.end) for w in v.words] == [(c["text"], *c["timestamp"]) for c in expected["chunks"]]
    assert v.segments and v.segments[0].start == expected["chunks"][0]["timestamp"][0]
    text = client.audio.transcriptions.create(model=MODEL_ID, file=("b.wav", data), response_format="text")
    assert text.strip() == expected["text"]
    srt = client.audio.transcriptions.create(model=MODEL_ID, file=("b.wav", data), response_format="srt")
    assert srt.startswith("1\n")
    events = list(client.audio.transcriptions.create(model=MODEL_ID, file=("b.wav", data), stream=True))
    assert events[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta") == events[-1].text
    # chunking_strategy, as the SDK sends it (auto, and a server_vad object)
    for strategy in ("auto", {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300}):
        chunked = client.audio.transcriptions.create(model=MODEL_ID, file=("b.wav", data), chunking_strategy=strategy)
        assert chunked.text == ""  # noise: no speech segments
    # include=["logprobs"] (gpt-4o-transcribe's), typed by the SDK, plain and streamed
    lp = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("b.wav", data), include=["logprobs"])
    assert lp.text == expected["text"] and "".join(x.token for x in lp.logprobs) == lp.text
    assert all(x.logprob <= 0.0 and bytes(int(b) for b in x.bytes).decode() == x.token for x in lp.logprobs)
    streamed = list(
        client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("b.wav", data), include=["logprobs"], stream=True
        )
    )
    assert [x.token for x in streamed[-1].logprobs] == [x.token for x in lp.logprobs]
    assert [x.token for e in streamed[:-1] for x in e.logprobs] == [x.token for x in lp.logprobs]

    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(model=MODEL_ID, file=("x.wav", b"garbage" * 100))
    assert bad.value.status_code == 400 and "x.wav" in str(bad.value)
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="no-such-model", file=("b.wav", data))
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.audio.transcriptions.create(model=MODEL_ID, file=("b.wav", data))
    # and the async client, a few requests at once
    import asyncio

    async def several() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
        try:
            results = await asyncio.gather(
                *[aclient.audio.transcriptions.create(model=MODEL_ID, file=("b.wav", data)) for _ in range(5)]
            )
        finally:
            await aclient.close()
        return [r.text for r in results]

    assert asyncio.run(several()) == [expected["text"]] * 5
