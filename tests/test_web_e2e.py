"""End to end: the web page at ``/`` in headless Chromium (Playwright) against a server started by the test.

Needs the Python package ``playwright`` (``pip install playwright``; its browser download is not used) and a
Chromium binary: Debian's ``chromium`` package (``/usr/bin/chromium``), or the path in ``W2VLM_CHROMIUM``.
Skipped with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
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
pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")

from conftest import write_audio_file  # noqa: E402
from server_support import LiveServer, noise  # noqa: E402
from w2vlm.server import ServerSettings, create_app  # noqa: E402

API_KEY = "page-key"
LOW = 0.99  # a threshold that marks some of the tiny model's words as low-confidence and not others


def chromium_path() -> str | None:
    for candidate in (os.environ.get("W2VLM_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (shutil.which(candidate) or Path(candidate).is_file()):
            return shutil.which(candidate) or candidate
    return None


CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set W2VLM_CHROMIUM)"
)

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # recording: a fake microphone that plays a file, and no permission prompt
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


@pytest.fixture(scope="module")
def pipe(tiny_ctc_dir: Path) -> Any:
    import w2vlm

    return w2vlm.pipeline("automatic-speech-recognition", model=str(tiny_ctc_dir), device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    from w2vlm.audio import load_audio

    path = write_audio_file(tmp_path_factory.mktemp("web") / "speech.wav", noise(3.0, 2), 16000)
    return path, load_audio(path, 16000)


@pytest.fixture(scope="module")
def live(pipe: Any) -> Iterator[LiveServer]:
    settings = ServerSettings(model_id="tiny-web", api_key=API_KEY, low_confidence=LOW, workers=2)
    with LiveServer(create_app(pipe, settings)) as server:
        yield server


@pytest.fixture(scope="module")
def browser(clip: tuple[Path, np.ndarray]) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        args = [*BROWSER_ARGS, f"--use-file-for-fake-audio-capture={clip[0]}"]
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, live: LiveServer, init_script: str | None = None) -> Iterator[Any]:
    # the Clipboard API is granted, as a user who allowed it would; the fallback is tested by removing the API
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"], accept_downloads=True)
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/")
    page.wait_for_function("document.getElementById('model-name').textContent === 'tiny-web'")
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Any, live: LiveServer) -> Iterator[Any]:
    yield from open_page(browser, live)


def test_upload_transcribe_click_to_play(page: Any, pipe: Any, clip: tuple[Path, np.ndarray]) -> None:
    path, audio = clip
    expected = pipe(audio, return_timestamps="word")
    assert len(expected["chunks"]) >= 3

    assert page.locator("#key-row").is_visible()  # the server asks for a key: the page shows the field
    page.set_input_files("#file-input", str(path))
    assert page.locator("#source-name").text_content().startswith("speech.wav")
    # without the key: the server's error is shown, and nothing breaks
    page.click("#transcribe-button")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('error')")
    assert "401" in page.locator("#status").text_content()
    assert "error" in page.locator("#status").get_attribute("class")

    page.fill("#api-key", API_KEY)
    page.click("#transcribe-button")
    page.wait_for_selector("#transcript .word")
    assert page.locator("#status").text_content().startswith("done")

    words = page.locator("#transcript .word")
    assert words.count() == len(expected["chunks"])
    shown = page.eval_on_selector_all(
        "#transcript .word",
        """spans => spans.map(s => ({word: s.firstChild.textContent, start: Number(s.dataset.start),
                end: Number(s.dataset.end), confidence: Number(s.dataset.confidence),
                low: s.classList.contains('low')}))""",
    )
    assert [(w["word"], (w["start"], w["end"])) for w in shown] == [
        (c["text"], tuple(c["timestamp"])) for c in expected["chunks"]
    ]
    assert page.locator("#transcript").get_attribute("data-text") == expected["text"]
    # low-confidence words are marked, the others are not
    assert all(w["low"] == (w["confidence"] < LOW) for w in shown)
    assert any(w["low"] for w in shown) and not all(w["low"] for w in shown)
    assert page.locator("#timings tbody tr").count() == len(shown)
    assert page.locator("#threshold").text_content() == "99%"

    # clicking a word plays the audio from its start
    page.wait_for_function("document.getElementById('player').readyState >= 1")
    k = len(shown) // 2
    words.nth(k).click()
    page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {shown[k]['start']}) < 0.25")
    assert "current" in words.nth(k).get_attribute("class")


def test_record_in_the_browser_and_transcribe(page: Any, live: LiveServer) -> None:
    import httpx

    before = httpx.get(f"{live.url}/health").json()["served"]
    page.fill("#api-key", API_KEY)
    page.click("#record-button")
    page.wait_for_function("document.getElementById('record-button').textContent.includes('Stop')")
    page.wait_for_timeout(2000)
    page.click("#record-button")
    page.wait_for_function("document.getElementById('source-name').textContent.startsWith('recording.')")
    assert not page.locator("#transcribe-button").is_disabled()
    page.click("#transcribe-button")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60_000)
    meta = page.locator("#result-meta").text_content()
    seconds = float(meta.split(" s of audio")[0])
    assert 1.0 < seconds < 4.0  # about the 2 s recorded, decoded by the server from the browser's webm/opus
    assert httpx.get(f"{live.url}/health").json()["served"] == before + 1


# ------------------------------------------------------------------------------------- the finished page


def transcribe_on_page(page: Any) -> None:
    page.fill("#api-key", API_KEY)
    page.click("#transcribe-button")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')")


def server_response(live: LiveServer, path: Path, fmt: str) -> Any:
    import httpx

    data = {"model": "tiny-web", "response_format": fmt}
    if fmt == "verbose_json":
        data["timestamp_granularities[]"] = ["word", "segment"]
    r = httpx.post(
        f"{live.url}/v1/audio/transcriptions",
        files={"file": (path.name, path.read_bytes())},
        data=data,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json() if fmt == "verbose_json" else r.text


def test_no_player_and_no_result_before_a_file(page: Any, clip: tuple[Path, np.ndarray]) -> None:
    for hidden in ("#source-row", "#player", "#result-panel", "#copy-button", "#download-srt"):
        assert page.locator(hidden).is_hidden(), hidden
    assert page.locator("#transcribe-button").is_disabled()
    # the hidden attribute wins over every display rule of the style sheet
    assert page.evaluate("getComputedStyle(document.getElementById('source-row')).display") == "none"
    page.set_input_files("#file-input", str(clip[0]))
    assert page.locator("#player").is_visible()
    assert page.locator("#result-panel").is_hidden()  # a file alone is not a result


def test_an_error_or_a_new_file_replaces_the_transcript(page: Any, clip: tuple[Path, np.ndarray]) -> None:
    page.set_input_files("#file-input", str(clip[0]))
    transcribe_on_page(page)
    assert page.locator("#transcript .word").count() > 0
    assert page.locator("#result-panel").is_visible()

    page.fill("#api-key", "wrong-key")
    page.click("#transcribe-button")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('error')")
    assert "401" in page.locator("#status").text_content()
    assert page.locator("#result-panel").is_hidden()
    assert page.locator("#transcript .word").count() == 0
    assert page.locator("#timings tbody tr").count() == 0
    assert page.locator("#copy-button").is_hidden() and page.locator("#download-txt").is_hidden()

    transcribe_on_page(page)
    assert page.locator("#result-panel").is_visible() and page.locator("#transcript .word").count() > 0
    page.set_input_files("#file-input", str(clip[0]))  # a new file: the old transcript goes
    assert page.locator("#result-panel").is_hidden()
    assert page.locator("#transcript .word").count() == 0
    assert page.locator("#status").text_content() == "ready"


def test_favicon(page: Any, live: LiveServer) -> None:
    import httpx

    href = page.eval_on_selector("link[rel=icon]", "link => link.href")
    for url in (href, f"{live.url}/favicon.ico"):
        r = httpx.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/"), url
        assert b"<svg" in r.content
    # the browser can draw it
    size = page.evaluate(
        """async (url) => {
            const img = new Image();
            img.src = url;
            await img.decode();
            return [img.naturalWidth, img.naturalHeight];
        }""",
        href,
    )
    assert size[0] > 0 and size[1] > 0
    assert "/favicon.ico" not in httpx.get(f"{live.url}/openapi.json").json()["paths"]


def test_copy_to_the_clipboard(page: Any, clip: tuple[Path, np.ndarray]) -> None:
    page.set_input_files("#file-input", str(clip[0]))
    transcribe_on_page(page)
    text = page.locator("#transcript").get_attribute("data-text")
    assert text
    page.evaluate("navigator.clipboard.writeText('something else')")
    page.focus("#copy-button")
    page.keyboard.press("Enter")  # by keyboard
    page.wait_for_function("document.getElementById('copy-status').textContent !== ''")
    assert page.locator("#copy-status").is_visible()
    assert "copied" in page.locator("#copy-status").text_content().lower()
    assert page.evaluate("navigator.clipboard.readText()") == text


def test_copy_without_the_clipboard_api_selects_the_text(
    browser: Any, live: LiveServer, clip: tuple[Path, np.ndarray]
) -> None:
    no_api = "Object.defineProperty(Navigator.prototype, 'clipboard', {get: () => undefined});"
    for page in open_page(browser, live, no_api):
        assert page.evaluate("navigator.clipboard") is None
        page.set_input_files("#file-input", str(clip[0]))
        transcribe_on_page(page)
        text = page.locator("#transcript").get_attribute("data-text")
        page.click("#copy-button")
        page.wait_for_function("document.getElementById('copy-status').textContent !== ''")
        assert page.locator("#copy-text").is_visible()
        selected = page.evaluate(
            "(() => { const t = document.activeElement; return t.value.slice(t.selectionStart, t.selectionEnd); })()"
        )
        assert selected == text
        # a new result hides the selection box again
        page.set_input_files("#file-input", str(clip[0]))
        assert page.locator("#copy-text").is_hidden()


def test_downloads(page: Any, live: LiveServer, clip: tuple[Path, np.ndarray]) -> None:
    import httpx

    path = clip[0]
    page.set_input_files("#file-input", str(path))
    transcribe_on_page(page)
    text = page.locator("#transcript").get_attribute("data-text")
    expected = {
        "txt": server_response(live, path, "text"),
        "srt": server_response(live, path, "srt"),
        "vtt": server_response(live, path, "vtt"),
    }
    assert expected["txt"] == text + "\n"
    verbose = server_response(live, path, "verbose_json")
    assert verbose["text"] == text

    def download(ext: str) -> tuple[str, str]:
        with page.expect_download() as info:
            page.click(f"#download-{ext}")
        d = info.value
        return d.suggested_filename, Path(d.path()).read_text(encoding="utf-8")

    # a subtitle request the server refuses: its error is shown, the transcript stays, and nothing is cached
    page.fill("#api-key", "wrong-key")
    page.click("#download-srt")
    page.wait_for_function("document.getElementById('status').textContent.includes('401')")
    assert page.locator("#status").text_content().startswith("speech.srt: error 401")
    assert page.locator("#result-panel").is_visible() and not page.locator("#download-srt").is_disabled()
    page.fill("#api-key", API_KEY)

    served = httpx.get(f"{live.url}/health").json()["served"]
    for ext in ("txt", "srt", "vtt", "json"):
        for _ in range(2):  # a second click uses what the first fetched
            name, content = download(ext)
            assert name == f"speech.{ext}"
            if ext == "json":  # the streamed done event: the verbose_json body without its usage
                assert json.loads(content) == {k: v for k, v in verbose.items() if k != "usage"}
            else:
                assert content == expected[ext], ext
    # srt and vtt: one request each, the server's own cues; txt and json: none (the page's result)
    assert httpx.get(f"{live.url}/health").json()["served"] == served + 2

    # by keyboard: the buttons follow each other in the tab order
    page.focus("#copy-button")
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    assert order == ["download-txt", "download-srt", "download-vtt", "download-json"]
    with page.expect_download() as info:
        page.keyboard.press("Enter")
    assert info.value.suggested_filename == "speech.json"


def test_keyboard_file_choice_and_word_playback(page: Any, clip: tuple[Path, np.ndarray]) -> None:
    page.focus("body")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file-input"
    # the focused (visually hidden) input shows its focus on the visible button
    outline = page.evaluate("getComputedStyle(document.querySelector('label[for=file-input]')).outlineStyle")
    assert outline not in ("none", "")
    # Enter on a focused file input opens the browser's own chooser; headless Chromium opens it unreliably
    # (it needs user activation), so the file is given to the focused input directly
    page.set_input_files("#file-input", str(clip[0]))
    assert page.locator("#source-name").text_content().startswith("speech.wav")
    transcribe_on_page(page)
    page.wait_for_function("document.getElementById('player').readyState >= 1")
    words = page.locator("#transcript .word")
    k = words.count() // 2
    start = float(words.nth(k).get_attribute("data-start"))
    # one tab stop for the transcript: Tab from the last download button lands on the first word
    page.focus("#download-json")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    for _ in range(k):
        page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == str(k)
    page.keyboard.press("Enter")
    page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {start}) < 0.25")
    assert "current" in words.nth(k).get_attribute("class")


# ------------------------------------------------------------------------------------------------- streaming

# records, for each word span added to the transcript, what the status line said at that moment
WATCH_WORDS = """
window.addEventListener('DOMContentLoaded', () => {
  window.__wordsAdded = [];
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes)
      if (n.classList && n.classList.contains('word'))
        window.__wordsAdded.push(document.getElementById('status').textContent);
  }).observe(document.getElementById('transcript'), {childList: true});
});
"""


def test_a_long_upload_shows_each_speech_segment_as_it_is_recognised(browser: Any, tmp_path: Path) -> None:
    """Over 10 s (voice activity detection): the words of each segment appear while the rest is still being
    recognised, then the final result (the server's verbose_json) replaces them, the same words."""
    import httpx
    import soundfile as sf

    import w2vlm
    from w2vlm.engine import silero

    if not silero.available():
        pytest.skip("the 'vad' extra is not installed")
    examples = Path(__file__).resolve().parents[1] / "examples"
    clips = [sf.read(examples / f"{n}.wav", dtype="float32")[0] for n in ("children", "cottages", "elizabeth")]
    gap = np.zeros(16000, np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, np.concatenate([gap, *(x for c in clips for x in (c, gap)), gap]), 16000, subtype="PCM_16")
    pipe = w2vlm.pipeline("automatic-speech-recognition")
    # each segment after the first a little later, as on a slower machine or a longer file: this 13 s file is
    # recognised so fast that all its events could come in one network read, and the page would then show them
    # all at once (what is checked here is that the page shows each segment as it comes)
    stream_segments = pipe.engine.stream_segments

    def paced(*args: Any, **kwargs: Any) -> Any:
        for k, segment in enumerate(stream_segments(*args, **kwargs)):
            if k:
                time.sleep(0.3)
            yield segment

    pipe.engine.stream_segments = paced
    with LiveServer(create_app(pipe, ServerSettings(model_id="tiny-web"))) as live:
        for page in open_page(browser, live, WATCH_WORDS):
            page.set_input_files("#file-input", str(path))
            page.click("#transcribe-button")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')")
            live_words = [s for s in page.evaluate("window.__wordsAdded") if s.startswith("transcribing")]
            shown = page.eval_on_selector_all("#transcript .word", "spans => spans.map(s => s.firstChild.textContent)")
            downloaded = page.evaluate("document.getElementById('transcript').dataset.text")
        form = {
            "model": "tiny-web",
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"],
        }
        with open(path, "rb") as f:
            body = httpx.post(f"{live.url}/v1/audio/transcriptions", data=form, files={"file": f}, timeout=60).json()
    assert [w["word"] for w in body["words"]] == shown and downloaded == body["text"]
    # every word was shown before the end, segment by segment (a later segment's words arrive after the status
    # says how far recognition got), then once more in the final result. The last segment's words may come in
    # the same network read as the final result: the observer (called after the page's task) then sees "done"
    last = len(body["segments"][-1]["text"].split())
    assert len(body["segments"]) >= 2 and len(shown) - last <= len(live_words) <= len(shown)
    assert any("s recognised" in status for status in live_words)
