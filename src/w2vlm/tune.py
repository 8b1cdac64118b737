"""Tuning the LM fusion weights (``alpha``, ``beta``; optionally beam width and ``unk_score_offset``).

The acoustic model runs once per utterance (its logits are cached on disk by :mod:`w2vlm.eval`); every
setting then re-decodes the cached logits with the LM on the decoder's native threads, all cores busy.
The search is a grid (every combination of the given values) or random (``num_random`` settings drawn
uniformly from the ranges the values span). The LM's current setting (its ``attrs.json``) is always
evaluated too, so the best setting found is never worse than it on the tuning set.

WER is the objective (ties broken by CER, then by closeness to the current setting). Tune on a development
set and report on a separate test set: the best setting of a set is an optimistic estimate on that set.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm import limits
from w2vlm.errors import LanguageModelError, W2vlmError
from w2vlm.fileio import atomic_path, atomic_write_json, read_json_object

logger = logging.getLogger("w2vlm.tune")

DEFAULT_ALPHAS = "0:2:0.25"
DEFAULT_BETAS = "0:4:0.5"


@dataclass(frozen=True)
class Setting:
    """One point of the search."""

    alpha: float
    beta: float
    beam_width: int = 100
    unk_score_offset: float = -10.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "beam_width": self.beam_width,
            "unk_score_offset": self.unk_score_offset,
        }


@dataclass
class Trial:
    """A setting with its corpus scores on the tuning set."""

    setting: Setting
    wer: float
    cer: float
    word_errors: int
    char_errors: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.setting.to_dict(),
            "wer": self.wer,
            "cer": self.cer,
            "word_errors": self.word_errors,
            "char_errors": self.char_errors,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class TuneReport:
    manifest: str
    model: str
    lm: str | None
    search: str  # "grid" or "random"
    trials: list[Trial]
    baseline: Trial  # the LM's current setting
    best: Trial
    greedy_wer: float
    greedy_cer: float
    num_utterances: int
    failed: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    baseline_added: bool = False  # the current setting was not among the searched ones and was added
    #: scores of the current and the best setting (and greedy) on a separate held-out manifest, if given
    heldout: dict[str, Any] | None = None

    def ranked(self) -> list[Trial]:
        return sorted(self.trials, key=lambda t: _rank_key(t, self.baseline.setting))

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "model": self.model,
            "lm": self.lm,
            "search": self.search,
            "num_utterances": self.num_utterances,
            "num_failed": len(self.failed),
            "failed": self.failed,
            "greedy": {"wer": self.greedy_wer, "cer": self.greedy_cer},
            "baseline": self.baseline.to_dict(),
            "best": self.best.to_dict(),
            "heldout": self.heldout,
            "trials": [t.to_dict() for t in self.ranked()],
            "timings_s": dict(self.timings),
        }


# ------------------------------------------------------------------------------------------------- spaces


def parse_values(spec: str | float | Sequence[float], name: str = "value") -> list[float]:
    """``"0:2:0.25"`` (start:stop:step, stop included), ``"0.5,1,1.5"``, ``"1"``, a number or a list."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return [float(spec)]
    if not isinstance(spec, str):
        return [float(v) for v in spec]
    text = spec.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise W2vlmError(f"{name}: {spec!r} needs start <= stop and a positive step")
            count = math.floor((stop - start) / step + 1e-9) + 1
            if count > limits.MAX_TUNE_VALUES:
                raise W2vlmError(
                    f"{name}: {spec!r} gives {count:,} values; at most {limits.MAX_TUNE_VALUES:,} "
                    "(w2vlm.limits.MAX_TUNE_VALUES): a larger step?"
                )
            return [round(start + i * step, 10) for i in range(count)]
        values = [float(p) for p in text.replace(" ", ",").split(",") if p]
    except ValueError:
        raise W2vlmError(
            f"{name}: expected 'start:stop:step', a comma-separated list or one number; got {spec!r}"
        ) from None
    if not values:
        raise W2vlmError(f"{name}: no values in {spec!r}")
    if any(not math.isfinite(v) for v in values):
        raise W2vlmError(f"{name}: values must be finite; got {spec!r}")
    return values


def grid_settings(
    alphas: Sequence[float],
    betas: Sequence[float],
    beam_widths: Sequence[int] = (100,),
    unk_score_offsets: Sequence[float] = (-10.0,),
) -> list[Setting]:
    """Every combination of the values (at most :data:`w2vlm.limits.MAX_TUNE_SETTINGS` of them)."""
    sizes = {
        "alpha": len(alphas),
        "beta": len(betas),
        "beam width": len(beam_widths),
        "unk offset": len(unk_score_offsets),
    }
    total = math.prod(sizes.values())
    if total > limits.MAX_TUNE_SETTINGS:
        shape = " x ".join(f"{n:,} ({k})" for k, n in sizes.items() if n > 1)
        raise W2vlmError(
            f"grid search: {shape} = {total:,} settings; at most {limits.MAX_TUNE_SETTINGS:,} "
            "(w2vlm.limits.MAX_TUNE_SETTINGS): fewer values, or --random N"
        )
    return [
        Setting(float(a), float(b), int(w), float(u))
        for w in beam_widths
        for u in unk_score_offsets
        for a in alphas
        for b in betas
    ]


def random_settings(
    count: int,
    alphas: Sequence[float],
    betas: Sequence[float],
    beam_widths: Sequence[int] = (100,),
    unk_score_offsets: Sequence[float] = (-10.0,),
    seed: int = 0,
) -> list[Setting]:
    """``count`` settings with alpha, beta (and unk_score_offset, when given a range) drawn uniformly from
    [min, max] of the given values; beam widths drawn from the list."""
    if not 1 <= count <= limits.MAX_TUNE_SETTINGS:
        raise W2vlmError(
            f"random search: the number of settings must be between 1 and {limits.MAX_TUNE_SETTINGS:,} "
            f"(w2vlm.limits.MAX_TUNE_SETTINGS); got {count}"
        )
    rng = random.Random(seed)

    def draw(values: Sequence[float]) -> float:
        lo, hi = min(values), max(values)
        return round(rng.uniform(lo, hi), 4) if hi > lo else float(lo)

    return [
        Setting(draw(alphas), draw(betas), int(rng.choice(list(beam_widths))), draw(unk_score_offsets))
        for _ in range(count)
    ]


def _rank_key(trial: Trial, baseline: Setting) -> tuple[float, ...]:
    s = trial.setting
    distance = abs(s.alpha - baseline.alpha) + abs(s.beta - baseline.beta)
    distance += abs(s.unk_score_offset - baseline.unk_score_offset) / 10.0
    return (trial.word_errors, trial.char_errors, s.beam_width, distance)


# ------------------------------------------------------------------------------------------------- search


def search(
    decoder: Any,
    logits_list: Sequence[np.ndarray],
    references: Sequence[str],
    settings: Sequence[Setting],
    *,
    beam_prune_logp: float = -10.0,
    token_min_logp: float = -5.0,
    num_threads: int | None = None,
    normalize: bool = True,
    progress: Any = None,
) -> list[Trial]:
    """Decode all utterances with each setting (on ``num_threads`` native threads, default all CPUs) and
    score them against ``references``."""
    from w2vlm.decoder.decoder import to_log_probs
    from w2vlm.engine.config import DecodeConfig
    from w2vlm.eval import decode_lm
    from w2vlm.metrics import corpus_errors, normalize_text

    if decoder.language_model is None:
        raise LanguageModelError("tuning needs a decoder with a language model")
    norm = normalize_text if normalize else (lambda t: " ".join(t.split()))
    refs = [norm(r) for r in references]
    # log-softmax once instead of once per setting
    vocab = len(decoder.alphabet)
    log_probs = [to_log_probs(x, vocab) for x in logits_list]
    trials = []
    for n, setting in enumerate(settings):
        if progress:
            progress("tune", n, len(settings))
        t0 = time.perf_counter()
        hyps = decode_lm(
            decoder,
            log_probs,
            DecodeConfig(
                beam_width=setting.beam_width,
                beam_prune_logp=beam_prune_logp,
                token_min_logp=token_min_logp,
                alpha=setting.alpha,
                beta=setting.beta,
                unk_score_offset=setting.unk_score_offset,
            ),
            num_threads,
        )
        seconds = time.perf_counter() - t0
        words, chars = corpus_errors(refs, [norm(h) for h in hyps])
        trials.append(Trial(setting, words.rate, chars.rate, words.errors, chars.errors, seconds))
        logger.debug("%s: WER %.4f CER %.4f (%.2f s)", setting, words.rate, chars.rate, seconds)
    if progress:
        progress("tune", len(settings), len(settings))
    return trials


def tune(
    manifest: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    *,
    lm: str | os.PathLike[str] | None = None,
    alphas: str | Sequence[float] = DEFAULT_ALPHAS,
    betas: str | Sequence[float] = DEFAULT_BETAS,
    beam_widths: Sequence[int] | None = None,
    unk_score_offsets: str | Sequence[float] | None = None,
    num_random: int | None = None,
    seed: int = 0,
    beam_prune_logp: float = -10.0,
    token_min_logp: float = -5.0,
    num_threads: int | None = None,
    acoustic: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    normalize: bool = True,
    heldout: str | os.PathLike[str] | None = None,
    progress: Any = None,
) -> TuneReport:
    """Search LM fusion settings on a manifest; see the module docstring.

    ``beam_widths`` default to ``[100]``; ``unk_score_offsets`` to the LM's current value. With
    ``num_random`` the search is random instead of a grid. ``heldout``: a second manifest on which the
    current and the best setting are scored after the search (``report.heldout``); its failed files are
    listed in ``report.failed`` too, with ``"set": "heldout"``.
    """
    from w2vlm.eval import greedy_decode, load_eval_decoder
    from w2vlm.logits_cache import collect_logits
    from w2vlm.manifest import read_manifest
    from w2vlm.metrics import corpus_errors, normalize_text
    from w2vlm.model import resolve_model_path

    timings: dict[str, float] = {}
    items = read_manifest(manifest)
    heldout_items = read_manifest(heldout) if heldout is not None else None
    model_dir = resolve_model_path(model)
    decoder = load_eval_decoder(model_dir, lm, True)
    language_model = decoder.language_model
    if language_model is None:
        raise LanguageModelError(
            f"{model_dir}: no language model to tune (no language_model/ folder); pass one with --lm"
        )
    current = language_model.serializable_attrs
    a_values = parse_values(alphas, "alpha")
    b_values = parse_values(betas, "beta")
    widths = [int(w) for w in (beam_widths or [100])]
    if any(w < 1 for w in widths):
        raise W2vlmError(f"beam width: must be >= 1; got {widths}")
    unk_values = (
        parse_values(unk_score_offsets, "unk_score_offset")
        if unk_score_offsets is not None
        else [float(current["unk_score_offset"])]
    )
    if num_random is not None:
        settings = random_settings(num_random, a_values, b_values, widths, unk_values, seed)
        kind = "random"
    else:
        settings = grid_settings(a_values, b_values, widths, unk_values)
        kind = "grid"
    baseline_setting = Setting(
        float(current["alpha"]),
        float(current["beta"]),
        100 if 100 in widths else widths[0],
        float(current["unk_score_offset"]),
    )
    baseline_added = baseline_setting not in settings
    if baseline_added:
        settings.append(baseline_setting)

    norm = normalize_text if normalize else (lambda t: " ".join(t.split()))
    labels = decoder.alphabet.labels

    def load_set(path: Any, set_items: list[Any], name: str) -> tuple[list[np.ndarray], list[str], list, Any, Any]:
        t0 = time.perf_counter()
        results = collect_logits(
            set_items,
            model_dir,
            acoustic,
            cache_dir=cache_dir,
            use_cache=use_cache,
            progress=progress,
            timings=timings,
        )
        timings[f"logits_{name}"] = time.perf_counter() - t0
        ok = [r for r in results if r.logits is not None]
        failed = [
            {"set": name, "id": r.item.id, "audio": str(r.item.audio), "error": str(r.error)}
            for r in results
            if r.error is not None
        ]
        if not ok:
            raise W2vlmError(f"{path}: no utterance could be read ({len(failed)} failed), nothing to score")
        logits = [r.logits for r in ok]
        refs = [r.item.reference for r in ok]
        greedy = [norm(greedy_decode(x, labels, decoder.alphabet.is_bpe)) for x in logits]  # type: ignore[arg-type]
        g_words, g_chars = corpus_errors([norm(r) for r in refs], greedy)
        return logits, refs, failed, g_words, g_chars  # type: ignore[return-value]

    logits_list, references, failed, g_words, g_chars = load_set(manifest, items, "tune")

    t0 = time.perf_counter()
    trials = search(
        decoder,
        logits_list,  # type: ignore[arg-type]
        references,
        settings,
        beam_prune_logp=beam_prune_logp,
        token_min_logp=token_min_logp,
        num_threads=num_threads,
        normalize=normalize,
        progress=progress,
    )
    timings["search"] = time.perf_counter() - t0
    baseline = next(t for t in trials if t.setting == baseline_setting)
    best = min(trials, key=lambda t: _rank_key(t, baseline_setting))
    heldout_scores = None
    if heldout is not None and heldout_items is not None:
        h_logits, h_refs, h_failed, h_words, h_chars = load_set(heldout, heldout_items, "heldout")
        failed += h_failed
        pair = [baseline_setting] if best.setting == baseline_setting else [baseline_setting, best.setting]
        h_trials = search(
            decoder,
            h_logits,
            h_refs,
            pair,
            beam_prune_logp=beam_prune_logp,
            token_min_logp=token_min_logp,
            num_threads=num_threads,
            normalize=normalize,
        )
        heldout_scores = {
            "manifest": str(heldout),
            "num_utterances": len(h_logits),
            "num_failed": len(h_failed),
            "greedy": {"wer": h_words.rate, "cer": h_chars.rate},
            "current": h_trials[0].to_dict(),
            "best": h_trials[-1].to_dict(),
        }
    # leave the decoder's LM as it was loaded
    language_model.reset_params(
        alpha=current["alpha"], beta=current["beta"], unk_score_offset=current["unk_score_offset"]
    )
    return TuneReport(
        manifest=str(manifest),
        model=str(model_dir),
        lm=str(language_model.path) if language_model.path is not None else None,
        search=kind,
        trials=trials,
        baseline=baseline,
        best=best,
        greedy_wer=g_words.rate,
        greedy_cer=g_chars.rate,
        num_utterances=len(logits_list),
        failed=failed,
        timings=timings,
        baseline_added=baseline_added,
        heldout=heldout_scores,
    )


# --------------------------------------------------------------------------------------------------- output


def write_attrs(target: str | os.PathLike[str], setting: Setting, *, include_unk: bool = True) -> Path:
    """Store alpha, beta (and unk_score_offset) in ``language_model/attrs.json`` of a model folder (or of a
    ``language_model/`` folder given directly), keeping its other keys; written atomically."""
    from w2vlm.decoder.language_model import LM_SUFFIXES

    folder = Path(target).expanduser()
    if not folder.is_dir():
        what = "a file" if folder.exists() else "no such folder"
        raise LanguageModelError(f"{folder}: {what} (expected a model folder with language_model/)")
    lm_dir = folder / "language_model"
    if not lm_dir.is_dir():
        if any(p.name.lower().endswith(LM_SUFFIXES) for p in folder.iterdir()):
            lm_dir = folder  # a language_model/ folder itself
        else:
            raise LanguageModelError(f"{folder}: has no language_model/ folder to write attrs.json into")
    path = lm_dir / "attrs.json"
    attrs: dict[str, Any] = {}
    if path.is_file():
        attrs = read_json_object(path, LanguageModelError)
    attrs["alpha"] = setting.alpha
    attrs["beta"] = setting.beta
    if include_unk:
        attrs["unk_score_offset"] = setting.unk_score_offset
    attrs.setdefault("unk_score_offset", setting.unk_score_offset)
    attrs.setdefault("score_boundary", True)
    atomic_write_json(path, attrs, indent=None)
    logger.info("wrote %s: %s", path, attrs)
    return path


def plot_wer(report: TuneReport, path: str | os.PathLike[str]) -> Path:
    """A PNG of WER over alpha × beta: a heatmap for a grid (the best over beam widths/unk offsets in each
    cell), a scatter plot coloured by WER for a random search. The best setting is starred, the LM's
    current one circled."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise W2vlmError("the WER plot needs matplotlib: pip install 'w2vlm[eval]'") from None

    out = Path(path).expanduser()
    best, base = report.best.setting, report.baseline.setting
    fig = Figure(figsize=(7.5, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # an added current setting off the grid would leave holes in the heatmap: it is named in the title only
    shown = [t for t in report.trials if not (report.baseline_added and t is report.baseline)]
    alphas = sorted({t.setting.alpha for t in shown})
    betas = sorted({t.setting.beta for t in shown})
    if report.search == "grid" and len(alphas) * len(betas) <= 400:
        grid = np.full((len(alphas), len(betas)), np.nan)
        for t in shown:
            i, j = alphas.index(t.setting.alpha), betas.index(t.setting.beta)
            grid[i, j] = np.nanmin([grid[i, j], 100 * t.wer])
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis_r")
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        if len(alphas) * len(betas) <= 150:
            lo, hi = np.nanmin(grid), np.nanmax(grid)
            for i in range(len(alphas)):
                for j in range(len(betas)):
                    if np.isfinite(grid[i, j]):
                        dark = hi > lo and (grid[i, j] - lo) / (hi - lo) > 0.6
                        ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7,
                                color="white" if dark else "black")  # fmt: skip

        def pos(s: Setting) -> tuple[float, float] | None:
            if s.alpha not in alphas or s.beta not in betas:
                return None
            return betas.index(s.beta), alphas.index(s.alpha)

    else:
        xs = [t.setting.beta for t in report.trials]
        ys = [t.setting.alpha for t in report.trials]
        image = ax.scatter(xs, ys, c=[100 * t.wer for t in report.trials], cmap="viridis_r", s=40)

        def pos(s: Setting) -> tuple[float, float] | None:
            return s.beta, s.alpha

    fig.colorbar(image, ax=ax, label="WER %")
    at = pos(best)
    if at is not None:
        ax.scatter([at[0]], [at[1]], marker="*", s=260, facecolor="red", edgecolor="white", label="best", zorder=3)
    at = pos(base)
    if at is not None:
        ax.scatter([at[0]], [at[1]], marker="o", s=170, facecolor="none", edgecolor="red", linewidth=2,
                   label="current", zorder=3)  # fmt: skip
    ax.set_xlabel("beta (word insertion bonus)")
    ax.set_ylabel("alpha (LM weight)")
    ax.set_title(
        f"WER over alpha × beta ({report.num_utterances} utterances; best {100 * report.best.wer:.2f}%, "
        f"current (α={base.alpha:g}, β={base.beta:g}) {100 * report.baseline.wer:.2f}%, "
        f"greedy {100 * report.greedy_wer:.2f}%)",
        fontsize=9,
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def results_table(report: TuneReport, top: int = 10) -> Any:
    """A rich table of the ``top`` settings, plus the current one if it is not among them."""
    from rich.table import Table

    table = Table(
        title=f"{report.search} search: {len(report.trials)} settings on {report.num_utterances} utterances "
        f"(greedy WER {100 * report.greedy_wer:.2f}%)",
        title_justify="left",
    )
    for col in ("rank", "alpha", "beta", "beam", "unk offset", "WER %", "CER %", "ms"):
        table.add_column(col, justify="right")
    ranked = report.ranked()
    shown = ranked[:top]
    if report.baseline not in shown:
        shown.append(report.baseline)
    for trial in shown:
        s = trial.setting
        mark = " (current)" if trial is report.baseline else ""
        table.add_row(
            f"{ranked.index(trial) + 1}{mark}",
            f"{s.alpha:g}",
            f"{s.beta:g}",
            str(s.beam_width),
            f"{s.unk_score_offset:g}",
            f"{100 * trial.wer:.2f}",
            f"{100 * trial.cer:.2f}",
            f"{1000 * trial.seconds:.1f}",
        )
    return table
