"""Transcript writers for the command line: txt, json, srt, vtt and tsv.

A :class:`Transcript` holds what one audio file produced (text, words with times and confidences, n-best
alternatives). :func:`render` turns it into the text of one format; :func:`write_transcript` writes the
requested formats next to each other as ``<stem>.<ext>``, each one atomically (a temporary name in the same
folder, then a rename), so an interrupted run never leaves a half-written file under the final name.

Subtitle cues (srt/vtt) and tsv rows group words into segments: a new segment starts after a pause of
:data:`SEGMENT_PAUSE_S`, or when the segment would pass :data:`SEGMENT_MAX_S` seconds or
:data:`SEGMENT_MAX_CHARS` characters.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2vlm.errors import W2vlmError

#: Formats a transcript can be written in, in the order "all" writes them.
FORMATS = ("txt", "json", "srt", "vtt", "tsv")

SEGMENT_PAUSE_S = 0.8
SEGMENT_MAX_S = 7.0
SEGMENT_MAX_CHARS = 84


@dataclass
class Word:
    """One word with its start and end in seconds and its confidence in [0, 1] (None when unknown)."""

    word: str
    start: float
    end: float
    confidence: float | None = None


@dataclass
class Alternative:
    """One of the n best hypotheses: its text and scores (acoustic, and acoustic + LM + word bonus)."""

    text: str
    logit_score: float | None = None
    lm_score: float | None = None


@dataclass
class Segment:
    """Consecutive words shown together (a subtitle cue, a tsv row)."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    """The transcription of one audio file.

    ``words`` always carries the decoder's word times (they place the subtitle cues);
    ``word_timestamps`` says whether the writers should show them per word.
    """

    audio: str
    text: str
    duration: float
    words: list[Word] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    word_timestamps: bool = False
    model: str | None = None

    def segments(self) -> list[Segment]:
        return segment_words(self.words, self.text, self.duration)


def segment_words(words: Sequence[Word], text: str = "", duration: float = 0.0) -> list[Segment]:
    """Group words into segments (pauses, length and duration limits); a text without word times becomes
    one segment over the whole duration."""
    if not words:
        return [Segment(0.0, duration, text)] if text.strip() else []
    segments: list[Segment] = []
    current: list[Word] = []
    chars = 0
    for w in words:
        if current:
            pause = w.start - current[-1].end
            too_long = w.end - current[0].start > SEGMENT_MAX_S
            too_wide = chars + 1 + len(w.word) > SEGMENT_MAX_CHARS
            if pause >= SEGMENT_PAUSE_S or too_long or too_wide:
                segments.append(_segment(current))
                current, chars = [], 0
        chars += len(w.word) + (1 if current else 0)
        current.append(w)
    segments.append(_segment(current))
    return segments


def _segment(words: list[Word]) -> Segment:
    return Segment(words[0].start, words[-1].end, " ".join(w.word for w in words), list(words))


# ---------------------------------------------------------------------------------------------- formats


def _clock(seconds: float, sep: str, hours: bool = True) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    if hours or h:
        return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
    return f"{m:02d}:{s:02d}{sep}{ms:03d}"


def srt_time(seconds: float) -> str:
    """``HH:MM:SS,mmm`` as SubRip wants it."""
    return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
    """``HH:MM:SS.mmm`` as WebVTT wants it."""
    return _clock(seconds, ".")


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def to_txt(t: Transcript) -> str:
    return t.text + "\n"


def to_json(t: Transcript) -> str:
    data: dict[str, Any] = {"audio": t.audio, "text": t.text, "duration": _round(t.duration)}
    if t.model is not None:
        data["model"] = t.model
    data["segments"] = [{"start": _round(s.start), "end": _round(s.end), "text": s.text} for s in t.segments()]
    if t.word_timestamps:
        data["words"] = [
            {"word": w.word, "start": _round(w.start), "end": _round(w.end), "confidence": _round(w.confidence, 4)}
            for w in t.words
        ]
    if len(t.alternatives) > 1:
        data["alternatives"] = [
            {"text": a.text, "logit_score": _round(a.logit_score, 4), "lm_score": _round(a.lm_score, 4)}
            for a in t.alternatives
        ]
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def to_srt(t: Transcript) -> str:
    """SubRip cues: one per segment, or one per word with word timestamps."""
    cues = [(w.start, w.end, w.word) for w in t.words] if t.word_timestamps else _cues(t)
    blocks = [f"{i}\n{srt_time(s)} --> {srt_time(e)}\n{text}\n" for i, (s, e, text) in enumerate(cues, start=1)]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    """WebVTT cues, one per segment; with word timestamps each later word carries an inline ``<time>`` tag."""
    out = ["WEBVTT", ""]
    for seg in t.segments():
        if t.word_timestamps and seg.words:
            parts = [seg.words[0].word] + [f"<{vtt_time(w.start)}>{w.word}" for w in seg.words[1:]]
            text = " ".join(parts)
        else:
            text = seg.text
        out += [f"{vtt_time(seg.start)} --> {vtt_time(seg.end)}", text, ""]
    return "\n".join(out)


def to_tsv(t: Transcript) -> str:
    """Tab-separated rows with times in integer milliseconds (as whisper writes them): one row per segment
    (start, end, text), or per word with word timestamps (start, end, word, confidence)."""
    if t.word_timestamps:
        rows = ["start\tend\tword\tconfidence"]
        for w in t.words:
            conf = "" if w.confidence is None else f"{w.confidence:.4f}"
            rows.append(f"{_ms(w.start)}\t{_ms(w.end)}\t{_clean(w.word)}\t{conf}")
    else:
        rows = ["start\tend\ttext"]
        rows += [f"{_ms(s)}\t{_ms(e)}\t{_clean(text)}" for s, e, text in _cues(t)]
    return "\n".join(rows) + "\n"


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


def _cues(t: Transcript) -> list[tuple[float, float, str]]:
    return [(s.start, s.end, s.text) for s in t.segments()]


_RENDERERS = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}


def render(transcript: Transcript, fmt: str) -> str:
    """The transcript as the text of one format (``txt``, ``json``, ``srt``, ``vtt`` or ``tsv``)."""
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise W2vlmError(f"output format: {fmt!r} is not one of {', '.join(FORMATS)}") from None
    return renderer(transcript)


def expand_formats(fmt: str | Iterable[str]) -> list[str]:
    """``"all"`` → every format; a name or a list of names → validated list (duplicates removed)."""
    names = [fmt] if isinstance(fmt, str) else list(fmt)
    out: list[str] = []
    for name in names:
        for part in FORMATS if name == "all" else (name,):
            if part not in FORMATS:
                raise W2vlmError(f"output format: {part!r} is not one of {', '.join(FORMATS)} or all")
            if part not in out:
                out.append(part)
    return out


# ---------------------------------------------------------------------------------------------- files


def output_paths(base: Path, formats: Iterable[str]) -> dict[str, Path]:
    """``{format: base.<format>}`` where ``base`` is the output folder joined with the input's stem."""
    return {fmt: base.with_name(base.name + "." + fmt) for fmt in formats}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_transcript(transcript: Transcript, base: Path, formats: Iterable[str]) -> list[Path]:
    """Write the transcript as ``base.<ext>`` for each format (atomically); returns the paths written."""
    written = []
    for fmt, path in output_paths(Path(base), formats).items():
        try:
            atomic_write_text(path, render(transcript, fmt))
        except OSError as exc:
            raise W2vlmError(f"{path}: could not write the {fmt} output ({exc.strerror or exc})") from exc
        written.append(path)
    return written
