"""Drawing a :class:`~w2vlm.visualize.Visualization`: :func:`render_png` with matplotlib (``pip install
'w2vlm[eval]'``) and :func:`render_terminal`, a compact rich rendering that fits the terminal's width."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.errors import W2vlmError
from w2vlm.fileio import atomic_path
from w2vlm.visualize import DEFAULT_LOW_CONFIDENCE, TimedWord, Visualization

logger = logging.getLogger("w2vlm.visualize")


# ------------------------------------------------------------------------------------------------ PNG


def render_png(vis: Visualization, path: str | os.PathLike, *, low_confidence: float = DEFAULT_LOW_CONFIDENCE) -> Path:
    """Draw waveform, masks, posteriorgram and greedy/LM words into a PNG file (written atomically)."""
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import ListedColormap, Normalize
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError:
        raise W2vlmError("the PNG needs matplotlib: pip install 'w2vlm[eval]'") from None

    out = Path(path).expanduser()
    if out.suffix.lower() != ".png":
        raise W2vlmError(f"{out}: the output must be a .png file")
    sr = vis.sampling_rate
    t_end = vis.padded_seconds
    fig = Figure(figsize=(max(9.0, min(24.0, 4.0 + 1.6 * vis.duration_s)), 10.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [1.2, 1.0, 2.6, 1.3]}, squeeze=True)
    ax_wave, ax_mask, ax_post, ax_words = axes

    # waveform (drawn as a min/max envelope so long inputs stay cheap), the padding shaded
    env_t, env_lo, env_hi = _envelope(vis.audio, sr, 4000)
    ax_wave.fill_between(env_t, env_lo, env_hi, color="#2b6cb0", linewidth=0.4)
    ax_wave.axvspan(vis.duration_s, t_end, color="#e2e8f0", label="padding in a batch")
    ax_wave.set_ylabel("waveform")
    ax_wave.set_xlim(0, t_end)
    ax_wave.legend(loc="upper right", fontsize=8, frameon=False)
    where = f" ({vis.offset_s:.2f}-{vis.offset_s + vis.duration_s:.2f} s of the file)" if vis.offset_s else ""
    ax_wave.set_title(f"{vis.source}{where} - model: {vis.model_name}", fontsize=10, loc="left")

    # masks: one row per (view, level)
    rows, names = [], []
    for m in vis.masks:
        rows.append(_stretch(m.samples.astype(np.float32), m.samples.size / sr, t_end, 2000))
        names.append(f"{m.name}: samples")
        fm = m.frames.astype(np.float32) if m.passed_to_model else np.full(m.frames.size, 0.5, np.float32)
        rows.append(_stretch(fm, m.frames.size * vis.frame_seconds, t_end, 2000))
        names.append(f"{m.name}: frames" + ("" if m.passed_to_model else " (no mask)"))
    mask_cmap = ListedColormap(["#fed7d7", "#cbd5e0", "#2f855a"])
    ax_mask.imshow(
        np.vstack(rows),
        aspect="auto",
        cmap=mask_cmap,
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(0, t_end, len(rows) - 0.5, -0.5),
    )
    ax_mask.set_yticks(range(len(rows)), names, fontsize=7)
    note = (
        f"padded: {vis.masks[1].attended_frames}/{vis.masks[1].frames.size} frames attended"
        if vis.masks[1].passed_to_model
        else "this model gets no attention mask: padding is attended"
    )
    ax_mask.set_title(
        f"attention / padding mask (green = attended, red = masked, grey = no mask given)\n{note}; "
        f"posteriors change by at most {vis.padding_max_diff:.2g} when padded",
        fontsize=8,
        loc="left",
    )

    # posteriorgram: tokens that ever reach 1 % probability, blank first
    used = [i for i in range(vis.probs.shape[1]) if vis.probs[:, i].max() >= 0.01 or i == vis.blank]
    used.sort(key=lambda i: (i != vis.blank, vis.labels[i]))
    ax_post.imshow(
        vis.probs[:, used].T,
        aspect="auto",
        cmap="magma",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(0, vis.num_frames * vis.frame_seconds, len(used) - 0.5, -0.5),
    )
    names_post = ["| (space)" if vis.labels[i] == "|" else vis.labels[i] for i in used]
    ax_post.set_yticks(range(len(used)), names_post, fontsize=6 if len(used) > 30 else 7)
    ax_post.set_ylabel("CTC posteriors")
    ax_post.set_title(
        f"posteriorgram: {vis.num_frames} frames of {1000 * vis.frame_seconds:.0f} ms, {len(used)} of "
        f"{len(vis.labels)} tokens shown (those reaching 1 %)",
        fontsize=8,
        loc="left",
    )

    # words
    cmap = colormaps["RdYlGn"]
    norm = Normalize(0.0, 1.0)
    rows_words = [("greedy", vis.greedy)] + ([("beam + LM", vis.lm)] if vis.lm is not None else [])
    for row, (_, words) in enumerate(rows_words):
        for w in words:
            width = max(w.end - w.start, vis.frame_seconds)
            ax_words.add_patch(
                Rectangle(
                    (w.start, row - 0.4),
                    width,
                    0.8,
                    facecolor=cmap(norm(w.confidence)),
                    edgecolor="#c53030" if w.confidence < low_confidence else "#4a5568",
                    linewidth=1.4 if w.confidence < low_confidence else 0.5,
                )
            )
            ax_words.text(
                w.start + width / 2,
                row,
                w.word,
                ha="center",
                va="center",
                fontsize=7,
                rotation=90 if width < 0.06 * len(w.word) else 0,
                clip_on=True,
            )
    ax_words.set_ylim(len(rows_words) - 0.5, -0.5)
    ax_words.set_yticks(range(len(rows_words)), [name for name, _ in rows_words], fontsize=8)
    ax_words.set_xlabel("time (s)")
    title = f"words, coloured by confidence (outlined red below {low_confidence:g})"
    if vis.lm_settings:
        title += f"; LM alpha {vis.lm_settings.get('alpha'):g}, beta {vis.lm_settings.get('beta'):g}"
    ax_words.set_title(title, fontsize=8, loc="left")
    from matplotlib.cm import ScalarMappable

    # attached to all panels (not just the words) so that the shared time axes stay aligned
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=list(axes),
        label="word confidence",
        shrink=0.2,
        anchor=(0.0, 0.0),
        pad=0.01,
        aspect=10,
    )

    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def _envelope(audio: np.ndarray, sr: int, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = audio.size
    bins = max(1, min(bins, n))
    edges = np.linspace(0, n, bins + 1).astype(int)
    lo = np.minimum.reduceat(audio, edges[:-1])
    hi = np.maximum.reduceat(audio, edges[:-1])
    t = edges[:-1] / sr
    return t, lo, hi


def _stretch(values: np.ndarray, span_s: float, total_s: float, width: int) -> np.ndarray:
    """``values`` evenly covering [0, span_s), sampled at ``width`` points over [0, total_s); NaN after."""
    t = (np.arange(width) + 0.5) * total_s / width
    idx = np.floor(t / span_s * values.size).astype(int) if span_s > 0 else np.zeros(width, int)
    out = np.full(width, np.nan, np.float32)
    ok = idx < values.size
    out[ok] = values[idx[ok]]
    return out


# ------------------------------------------------------------------------------------------------ terminal

_BLOCKS = " ▁▂▃▄▅▆▇█"


def render_terminal(
    vis: Visualization,
    console: Any = None,
    *,
    width: int | None = None,
    low_confidence: float = DEFAULT_LOW_CONFIDENCE,
) -> None:
    """Print a compact rendering: one character column per time slice, rows for the waveform's level, the
    masks, the posteriorgram's best non-blank token, and greedy and LM words placed at their start times."""
    from rich.console import Console
    from rich.markup import escape
    from rich.text import Text

    console = console or Console()
    label_w = 8
    cols = max(20, (width or console.width) - label_w - 1)
    total = vis.padded_seconds
    per_col = total / cols
    sr = vis.sampling_rate

    def row(name: str, body: Text) -> None:
        line = Text(f"{name:<{label_w}}", style="bold")
        line.append_text(body)
        console.print(line, no_wrap=True, overflow="crop", highlight=False)

    where = f", {vis.offset_s:.2f}-{vis.offset_s + vis.duration_s:.2f} s of the file" if vis.offset_s else ""
    console.print(
        f"[bold]{escape(vis.source)}[/]  {vis.duration_s:.2f} s{where}, model: {escape(vis.model_name)}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"{vis.num_frames} frames of {1000 * vis.frame_seconds:.0f} ms; one column = {1000 * per_col:.0f} ms",
        highlight=False,
    )

    # waveform level (peak per column, on a log scale so quiet speech is visible)
    wave = Text()
    for c in range(cols):
        a, b = round(c * per_col * sr), round((c + 1) * per_col * sr)
        if a >= vis.audio.size:
            wave.append("·", style="grey50")
            continue
        peak = float(np.abs(vis.audio[a : max(b, a + 1)]).max())
        level = 0 if peak <= 1e-4 else min(8, max(1, round(8 * (1 + np.log10(peak) / 4))))
        wave.append(_BLOCKS[level], style="blue")
    row("wave", wave)

    for m in vis.masks:
        text = Text()
        frames_s = m.frames.size * vis.frame_seconds
        for c in range(cols):
            t = (c + 0.5) * per_col
            if t >= frames_s:
                text.append(" ")
                continue
            f = min(m.frames.size - 1, int(t / vis.frame_seconds))
            real = t < vis.duration_s
            if not m.passed_to_model:
                text.append("█" if real else "▒", style="green" if real else "yellow")
            else:
                text.append("█" if m.frames[f] else "░", style="green" if m.frames[f] else "red")
        row("mask" if m is vis.masks[0] else "padded", text)
    padded = vis.masks[1]
    if padded.passed_to_model:
        console.print(
            f"{'':<{label_w}}[green]█[/] attended  [red]░[/] masked: {padded.attended_frames}/{padded.frames.size} "
            f"frames attended when padded to {vis.padded_seconds:.2f} s",
            highlight=False,
        )
        console.print(
            f"{'':<{label_w}}posteriors change by at most {vis.padding_max_diff:.2g} when padded"
            + ("" if not vis.padding_changes_output else " [red](the output changes)[/]"),
            highlight=False,
        )
    else:
        console.print(
            f"{'':<{label_w}}[yellow]▒[/] padding the model attends to (it takes no attention mask)",
            highlight=False,
        )
        console.print(
            f"{'':<{label_w}}posteriors change by up to {vis.padding_max_diff:.2g} when padded; padded greedy: "
            f"{escape(vis.padded_greedy_text)!r}",
            highlight=False,
            soft_wrap=True,
        )

    # posteriorgram: best non-blank token of each column, brighter = more probable; '·' where blank wins
    post = Text()
    probs = vis.probs
    for c in range(cols):
        a = int(c * per_col / vis.frame_seconds)
        b = max(a + 1, int((c + 1) * per_col / vis.frame_seconds))
        if a >= probs.shape[0]:
            post.append(" ")
            continue
        chunk = probs[a : min(b, probs.shape[0])].copy()
        blank_p = float(chunk[:, vis.blank].max())
        chunk[:, vis.blank] = -1
        flat = int(chunk.argmax())
        token, p = flat % chunk.shape[1], float(chunk.max())
        if p < 0.3 and blank_p > p:
            post.append("·", style="grey42")
        else:
            label = vis.labels[token]
            ch = "␣" if label == "|" else (label[-1] if label else "?")
            post.append(ch, style=_prob_style(p))
    row("ctc", post)

    for name, words in (("greedy", vis.greedy), ("LM", vis.lm)):
        if words is None:
            continue
        row(name, _place_words(words, cols, per_col, low_confidence))
    if vis.lm is not None:
        console.print(f"[bold]LM[/]      {escape(vis.lm_text or '')}", highlight=False, soft_wrap=True)
    console.print(f"[bold]greedy[/]  {escape(vis.greedy_text)}", highlight=False, soft_wrap=True)
    shown = vis.lm if vis.lm is not None else vis.greedy
    doubtful = [w for w in shown if w.confidence < low_confidence]
    if doubtful:
        console.print(
            f"low confidence (< {low_confidence:g}): "
            + ", ".join(f"{escape(w.word)} {w.start:.2f}s ({w.confidence:.2f})" for w in doubtful),
            highlight=False,
            soft_wrap=True,
        )


def _prob_style(p: float) -> str:
    if p >= 0.8:
        return "bold bright_white"
    if p >= 0.5:
        return "white"
    return "grey62"


def _confidence_style(c: float, low: float) -> str:
    if c < low:
        return "bold red"
    if c < 0.8:
        return "yellow"
    return "green"


def _place_words(words: Sequence[TimedWord], cols: int, per_col: float, low: float) -> Any:
    """Words written from the column of their start time, pushed right (with a space) when they would
    overlap the previous word, cut at the right edge."""
    from rich.text import Text

    text = Text()
    pos = 0
    for w in words:
        col = max(pos + (1 if pos else 0), int(w.start / per_col))
        if col >= cols:
            break
        text.append(" " * (col - pos))
        piece = w.word[: cols - col]
        text.append(piece, style=_confidence_style(w.confidence, low))
        pos = col + len(piece)
    return text
