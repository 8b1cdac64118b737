"""Transcript writers for the command line: txt, json, srt, vtt and tsv.

A :class:`~w2vlm.results.Transcript` holds what one audio file produced (text, words with times and
confidences, n-best alternatives). :func:`render` turns it into the text of one format;
:func:`write_transcript` writes the requested formats next to each other as ``<stem>.<ext>``, each one
atomically (a temporary name in the same folder, then a rename), so an interrupted run never leaves a
half-written file under the final name.

The json output lists the transcript's segments (stretches of speech, with their speech and no-speech
probabilities and mean word confidence). Subtitle cues (srt/vtt) and tsv rows are parts of segments
(:meth:`w2vlm.results.Transcript.cues`) no longer than a :class:`CueStyle` allows, their text wrapped into lines
of at most ``line_width`` characters.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2vlm.errors import W2vlmError
from w2vlm.fileio import atomic_write_text
from w2vlm.results import CUE_LINE_WIDTH, CUE_LINES, CUE_MAX_S, CUE_MIN_S, Segment, Transcript, held_cues

#: Formats a transcript can be written in, in the order "all" writes them.
FORMATS = ("txt", "json", "srt", "vtt", "tsv")


@dataclass(frozen=True)
class CueStyle:
    """How long a subtitle cue may be: ``max_s`` seconds, ``lines`` lines of ``line_width`` characters; srt
    and vtt keep each on screen for at least ``min_s`` seconds where the next cue leaves room."""

    max_s: float = CUE_MAX_S
    line_width: int = CUE_LINE_WIDTH
    lines: int = CUE_LINES
    min_s: float = CUE_MIN_S

    def __post_init__(self) -> None:
        if not self.max_s > 0:
            raise W2vlmError(f"max cue duration: must be positive; got {self.max_s}")
        if self.line_width < 1 or self.lines < 1:
            raise W2vlmError(
                f"cue lines: need at least 1 line of at least 1 character; got {self.lines}x{self.line_width}"
            )

    def cues(self, t: Transcript) -> list[Segment]:
        return t.cues(self.max_s, self.line_width * self.lines)

    def shown(self, t: Transcript) -> list[Segment]:
        """The cues as subtitles show them (:func:`~w2vlm.results.held_cues`)."""
        return held_cues(self.cues(t), self.min_s, t.duration)

    def wrap(self, text: str) -> str:
        lines = textwrap.wrap(text, self.line_width, break_long_words=False, break_on_hyphens=False)
        if len(lines) > self.lines:  # a cue made of words too long to fit: the rest on the last line
            lines = [*lines[: self.lines - 1], " ".join(lines[self.lines - 1 :])]
        return "\n".join(lines)


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


def segment_line(segment: Segment) -> str:
    """``[MM:SS.mmm --> MM:SS.mmm] text`` (hours when needed): one segment as ``--verbose`` prints it."""
    return f"[{_clock(segment.start, '.', False)} --> {_clock(segment.end, '.', False)}] {segment.text}"


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def to_txt(t: Transcript, style: CueStyle) -> str:
    return t.text + "\n"


def segment_record(s: Segment) -> dict[str, Any]:
    """A segment as a JSON object (without its words)."""
    return {
        "start": _round(s.start),
        "end": _round(s.end),
        "text": s.text,
        "speech_prob": _round(s.speech_prob, 4),
        "no_speech_prob": _round(s.no_speech_prob, 4),
        "confidence": _round(s.confidence, 4),
    }


def to_json(t: Transcript, style: CueStyle) -> str:
    data: dict[str, Any] = {"audio": t.audio, "text": t.text, "duration": _round(t.duration)}
    if t.model is not None:
        data["model"] = t.model
    if t.language is not None:
        data["language"] = t.language
    data["segments"] = [segment_record(s) for s in t.segments]
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


def to_srt(t: Transcript, style: CueStyle) -> str:
    """SubRip cues (see :class:`CueStyle`)."""
    cues = style.shown(t)
    blocks = [
        f"{i}\n{srt_time(c.start)} --> {srt_time(c.end)}\n{style.wrap(c.text)}\n" for i, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript, style: CueStyle) -> str:
    """WebVTT cues (see :class:`CueStyle`); with word timestamps each later word carries an inline ``<time>``
    tag."""
    out = ["WEBVTT", ""]
    for cue in style.shown(t):
        text = style.wrap(cue.text)
        if t.word_timestamps and cue.words and len(cue.words) == len(cue.text.split(" ")):
            tagged = iter([cue.words[0].word] + [f"<{vtt_time(w.start)}>{w.word}" for w in cue.words[1:]])
            # the same line breaks, with the tags in front of the words
            text = "\n".join(" ".join(next(tagged) for _ in line.split(" ")) for line in text.split("\n"))
        out += [f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}", text, ""]
    return "\n".join(out)


def to_tsv(t: Transcript, style: CueStyle) -> str:
    """Tab-separated rows with times in integer milliseconds (as whisper writes them): one row per segment
    (start, end, text), or per word with word timestamps (start, end, word, confidence)."""
    if t.word_timestamps:
        rows = ["start\tend\tword\tconfidence"]
        for w in t.words:
            conf = "" if w.confidence is None else f"{w.confidence:.4f}"
            rows.append(f"{_ms(w.start)}\t{_ms(w.end)}\t{_clean(w.word)}\t{conf}")
    else:
        rows = ["start\tend\ttext"]
        rows += [f"{_ms(c.start)}\t{_ms(c.end)}\t{_clean(c.text)}" for c in style.cues(t)]
    return "\n".join(rows) + "\n"


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ")


_RENDERERS = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}


def render(transcript: Transcript, fmt: str, style: CueStyle | None = None) -> str:
    """The transcript as the text of one format (``txt``, ``json``, ``srt``, ``vtt`` or ``tsv``); ``style``:
    the subtitle cues' limits (default :class:`CueStyle`)."""
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise W2vlmError(f"output format: {fmt!r} is not one of {', '.join(FORMATS)}") from None
    return renderer(transcript, style or CueStyle())


def expand_formats(fmt: str | Iterable[str]) -> list[str]:
    """``"all"`` → every format; a name, a comma-separated list (``"srt,vtt"``) or a list of names → the
    validated formats in the order given, each once."""
    names = [fmt] if isinstance(fmt, str) else list(fmt)
    names = [part.strip() for name in names for part in name.split(",")]
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


def write_transcript(
    transcript: Transcript, base: Path, formats: Iterable[str], style: CueStyle | None = None
) -> list[Path]:
    """Write the transcript as ``base.<ext>`` for each format (atomically); returns the paths written."""
    written = []
    for fmt, path in output_paths(Path(base), formats).items():
        try:
            atomic_write_text(path, render(transcript, fmt, style))
        except OSError as exc:
            raise W2vlmError(f"{path}: could not write the {fmt} output ({exc.strerror or exc})") from exc
        written.append(path)
    return written
