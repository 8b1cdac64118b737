"""Transcript writers: txt/json/srt/vtt/tsv contents, segmentation, atomic writes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from w2vlm.errors import W2vlmError
from w2vlm.fileio import atomic_write_text
from w2vlm.results import (
    CUE_LINE_WIDTH,
    CUE_LINES,
    CUE_MAX_S,
    Alternative,
    Segment,
    Transcript,
    Word,
    held_cues,
    segment_words,
)
from w2vlm.writers import (
    FORMATS,
    CueStyle,
    expand_formats,
    render,
    srt_time,
    vtt_time,
    write_transcript,
)


def _transcript(word_timestamps: bool = False, alternatives: int = 1) -> Transcript:
    words = [
        Word("hello", 0.10, 0.42, 0.91),
        Word("world", 0.50, 0.90, 0.55),
        # a pause of 2 s starts a new segment
        Word("again", 2.90, 3.30, None),
    ]
    alts = [Alternative("hello world again", -10.0, -12.5), Alternative("hello word again", -11.0, -14.0)]
    segments = segment_words(words)
    segments[0].speech_prob, segments[0].no_speech_prob = 0.93, 0.04
    return Transcript(
        audio="a.wav",
        text="hello world again",
        duration=3.5,
        words=words,
        alternatives=alts[:alternatives],
        word_timestamps=word_timestamps,
        model="m",
        segments=segments,
    )


def test_clock_formats() -> None:
    assert srt_time(0) == "00:00:00,000"
    assert srt_time(3723.4567) == "01:02:03,457"
    assert vtt_time(61.05) == "00:01:01.050"
    assert srt_time(-0.2) == "00:00:00,000"


def test_segments_split_on_pause_length_and_width() -> None:
    t = _transcript()
    segs = t.cues()
    assert [s.text for s in segs] == ["hello world", "again"]
    assert (segs[0].start, segs[0].end) == (0.10, 0.90)
    # a long run of words without pauses: no segment longer than the limits
    words = [Word(f"w{i:03d}", 0.3 * i, 0.3 * i + 0.25) for i in range(100)]
    segs = segment_words(words)
    assert sum(len(s.words) for s in segs) == 100
    assert all(s.end - s.start <= CUE_MAX_S + 1e-9 for s in segs)
    assert all(len(s.text) <= CUE_LINE_WIDTH * CUE_LINES for s in segs)
    # cues are parts of segments: one long segment gives several cues, each with the segment's probabilities
    long = Transcript(
        "a.wav",
        " ".join(w.word for w in words),
        30.0,
        words,
        segments=[segment_words(words, max_s=1e9, max_chars=10**6)[0]],
    )
    long.segments[0].speech_prob = 0.8
    cues = long.cues(max_s=3.0, max_chars=30)
    assert len(cues) > 10 and all(c.end - c.start <= 3.0 and len(c.text) <= 30 for c in cues)
    assert all(c.speech_prob == 0.8 for c in cues) and sum(len(c.words) for c in cues) == 100
    # no words: the text as one segment over the duration; empty text: no segment
    assert [(s.start, s.end, s.text) for s in segment_words([], "hi there", 2.0)] == [(0.0, 2.0, "hi there")]
    assert segment_words([], "", 2.0) == []


def test_txt() -> None:
    assert render(_transcript(), "txt") == "hello world again\n"


def test_json_fields() -> None:
    plain = json.loads(render(_transcript(), "json"))
    assert plain["text"] == "hello world again"
    assert plain["audio"] == "a.wav" and plain["duration"] == 3.5 and plain["model"] == "m"
    assert [s["text"] for s in plain["segments"]] == ["hello world", "again"]
    first = plain["segments"][0]
    assert (first["speech_prob"], first["no_speech_prob"], first["confidence"]) == (0.93, 0.04, 0.73)
    assert plain["segments"][1]["confidence"] is None
    assert "words" not in plain and "alternatives" not in plain
    full = json.loads(render(_transcript(word_timestamps=True, alternatives=2), "json"))
    assert full["words"][0] == {"word": "hello", "start": 0.1, "end": 0.42, "confidence": 0.91}
    assert full["words"][2]["confidence"] is None
    assert [a["text"] for a in full["alternatives"]] == ["hello world again", "hello word again"]
    assert full["alternatives"][1]["lm_score"] == -14.0


def test_srt_segments_and_words() -> None:
    srt = render(_transcript(), "srt")
    blocks = srt.strip().split("\n\n")
    # each cue stays on screen for at least CUE_MIN_S (1 s) where the next cue and the input's end allow
    assert blocks[0] == "1\n00:00:00,100 --> 00:00:01,100\nhello world"
    assert blocks[1] == "2\n00:00:02,900 --> 00:00:03,500\nagain"
    # word timestamps do not make one-word cues
    assert render(_transcript(word_timestamps=True), "srt") == srt


def test_cue_style_limits_duration_and_wraps_lines() -> None:
    words = [Word(f"word{i:02d}", 0.4 * i, 0.4 * i + 0.3) for i in range(40)]
    t = Transcript("a.wav", " ".join(w.word for w in words), 16.0, words, segments=segment_words(words, max_s=1e9))
    style = CueStyle(max_s=4.0, line_width=20, lines=2)
    blocks = render(t, "srt", style).strip().split("\n\n")
    assert len(blocks) >= 4
    for block in blocks:
        lines = block.split("\n")
        assert 3 <= len(lines) <= 4 and all(len(line) <= 20 for line in lines[2:])
    vtt = render(t, "vtt", style)
    assert max(len(line) for line in vtt.splitlines() if "-->" not in line) <= 20
    timed = render(Transcript(**{**t.__dict__, "word_timestamps": True}), "vtt", style)
    assert "word00 <00:00:00.400>word01" in timed
    with pytest.raises(W2vlmError, match="positive"):
        CueStyle(max_s=0)


def test_vtt() -> None:
    vtt = render(_transcript(), "vtt")
    assert vtt.startswith("WEBVTT\n\n")
    assert "00:00:00.100 --> 00:00:01.100\nhello world\n" in vtt
    timed = render(_transcript(word_timestamps=True), "vtt")
    assert "hello <00:00:00.500>world" in timed
    # every cue timing line is well formed
    for line in timed.splitlines():
        if "-->" in line:
            assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", line)


def test_cues_stay_on_screen_long_enough_to_be_read() -> None:
    """A cue ended with its last word: a one-word cue could show for 20 ms. Subtitles keep each for CUE_MIN_S
    where the next cue leaves room (never over it, nor past a known end of the input); tsv keeps word times."""
    cues = [Segment(34.556, 34.576, "a"), Segment(34.9, 35.0, "b"), Segment(40.0, 40.2, "c"), Segment(50.0, 50.1, "d")]
    held = held_cues(cues, 1.0, duration=50.5)
    assert [(c.start, c.end) for c in held] == [(34.556, 34.9), (34.9, 35.9), (40.0, 41.0), (50.0, 50.5)]
    assert held_cues(cues[3:], 1.0)[0].end == 51.0  # the input's end unknown
    assert cues[0].end == 34.576  # only copies change
    assert held_cues([Segment(1.0, 3.0, "long")], 1.0)[0].end == 3.0
    rows = render(_transcript(), "tsv").splitlines()
    assert rows[1] == "100\t900\thello world"


def test_tsv() -> None:
    rows = render(_transcript(), "tsv").splitlines()
    assert rows == ["start\tend\ttext", "100\t900\thello world", "2900\t3300\tagain"]
    rows = render(_transcript(word_timestamps=True), "tsv").splitlines()
    assert rows[0] == "start\tend\tword\tconfidence"
    assert rows[1] == "100\t420\thello\t0.9100"
    assert rows[3] == "2900\t3300\tagain\t"


def test_empty_transcript_renders_in_every_format() -> None:
    t = Transcript(audio="silence.wav", text="", duration=1.0)
    assert render(t, "txt") == "\n"
    assert json.loads(render(t, "json"))["segments"] == []
    assert render(t, "srt") == ""
    assert render(t, "vtt").startswith("WEBVTT")
    assert render(t, "tsv") == "start\tend\ttext\n"


def test_expand_formats() -> None:
    assert expand_formats("all") == list(FORMATS)
    assert expand_formats(["srt", "txt", "srt"]) == ["srt", "txt"]
    with pytest.raises(W2vlmError, match="docx"):
        expand_formats("docx")
    with pytest.raises(W2vlmError, match="docx"):
        render(_transcript(), "docx")


def test_write_transcript_all_formats(tmp_path: Path) -> None:
    written = write_transcript(_transcript(), tmp_path / "out" / "a", FORMATS)
    assert sorted(p.name for p in written) == sorted(f"a.{f}" for f in FORMATS)
    assert (tmp_path / "out" / "a.txt").read_text(encoding="utf-8") == "hello world again\n"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old\n", encoding="utf-8")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new\n")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with pytest.raises(W2vlmError, match="could not write the txt output"):
        write_transcript(_transcript(), tmp_path / "a", ["txt"])


def test_cues_are_even_not_a_stray_word() -> None:
    # 12 words of 7 characters: 95 characters do not fit one 84-character cue; greedy cutting would leave one
    # word alone in the second cue, even cutting gives two cues of six words
    words = [Word(f"word{i:03d}", 0.5 * i, 0.5 * i + 0.4) for i in range(12)]
    cues = segment_words(words)
    assert [len(c.words) for c in cues] == [6, 6]
    assert all(len(c.text) <= CUE_LINE_WIDTH * CUE_LINES for c in cues)
    # random words: every cue within the limits (or a lone word), words kept in order, no more cues than needed
    import random

    rng = random.Random(7)
    for _ in range(200):
        t, words = 0.0, []
        for i in range(rng.randint(1, 40)):
            t += rng.uniform(0.0, 0.5)
            words.append(Word("w" * rng.randint(1, 30) + str(i), t, t + rng.uniform(0.05, 1.5)))
            t = words[-1].end
        cues = segment_words(words, max_s=5.0, max_chars=40)
        assert [w for c in cues for w in c.words] == words
        assert all(len(c.words) == 1 or (c.end - c.start <= 5.0 and len(c.text) <= 40) for c in cues)


def test_segments_and_subtitle_writers() -> None:
    words = [
        Word("one", 0.0, 0.3, 0.9),
        Word("two", 0.4, 0.7, 0.8),
        Word("three", 2.0, 2.4, 0.2),  # after a pause: a new cue
        Word("four", 2.5, 3661.5, None),
    ]
    transcript = Transcript("upload", "one two three four", 3661.5, words)
    segs = transcript.cues()  # the same cues as the command line's writers
    assert [s.text for s in segs] == ["one two", "three", "four"]  # "four" makes the cue too long
    assert render(transcript, "srt").splitlines()[:3] == ["1", "00:00:00,000 --> 00:00:01,000", "one two"]
    assert "01:01:01.500" in render(transcript, "vtt")
    empty = Transcript("upload", "", 0.0)
    assert empty.cues() == [] and render(empty, "srt").strip() == ""
