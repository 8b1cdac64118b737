"""Evaluation of a CTC model with and without its n-gram LM: WER/CER, per-utterance errors, real-time factor.

A manifest lists audio files with their reference text:

* JSONL, one ``{"audio": "wav/1.wav", "text": "the reference"}`` a line (``audio`` may also be called
  ``audio_filepath``, ``path`` or ``file``; ``text`` may be ``sentence``, ``transcript``, ``transcription``
  or ``reference``; an optional ``id``);
* CSV (or TSV) with a header naming the same columns;
* a directory of audio files, each with a ``.txt`` of the same name holding its reference.

Other fields of a JSONL line (or other CSV columns), such as a speaker or a recording condition, are kept
with each utterance; :meth:`EvalReport.breakdown` (``w2vlm eval --by FIELD``) scores each of their values
apart. Relative audio paths are relative to the manifest's folder. A missing or unreadable audio file (or a missing
``.txt`` in a directory) is an error of that utterance only: it is recorded in the report and the others are
scored. A malformed manifest (bad JSON, no audio/text column) raises :class:`~w2vlm.errors.ManifestError`.

Logits are cached on disk (``npz`` per utterance) under a key made of the model's files (config, weights,
feature extractor settings), the dtype/quantization, the chunking settings and the audio file's content, so
decoding again with other LM settings (:mod:`w2vlm.tune`) never runs the acoustic model twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.engine.alignment import greedy_words
from w2vlm.engine.config import DecodeConfig
from w2vlm.errors import LanguageModelError, ManifestError, ModelError
from w2vlm.fileio import read_json_object
from w2vlm.logits_cache import AcousticSettings, collect_logits
from w2vlm.manifest import ManifestItem, read_manifest
from w2vlm.metrics import ErrorCounts, char_errors, normalize_text, word_errors

logger = logging.getLogger("w2vlm.eval")


ProgressFn = Callable[[str, int, int], None]


# ------------------------------------------------------------------------------------------------ decoding


def greedy_decode(logits: np.ndarray, labels: Sequence[str], is_bpe: bool = False) -> str:
    """Best-path CTC decoding: the argmax token per frame, repeats merged, blanks and special labels dropped
    (the engine's :func:`~w2vlm.engine.alignment.greedy_words`).

    ``labels`` are decoder labels (``""`` blank, ``" "`` word delimiter; BPE labels start words with ``▁``).
    """
    if logits.shape[0] == 0:
        return ""
    if logits.shape[1] != len(labels):
        raise ModelError(f"logits have {logits.shape[1]} columns but the alphabet has {len(labels)} labels")
    return greedy_words(np.asarray(logits), labels, is_bpe)[0]


def load_eval_decoder(model_dir: Path, lm: str | os.PathLike[str] | None, use_lm: bool) -> Any:
    """The beam-search decoder for ``model_dir``: its alphabet with the LM of ``lm`` (an ARPA file, a
    ``language_model/`` folder or a model folder holding one) or else the model's own ``language_model/``.
    Without ``use_lm`` the decoder has no LM."""
    from w2vlm.decoder import Alphabet, BeamSearchDecoderCTC

    if (model_dir / "alphabet.json").is_file():
        base = BeamSearchDecoderCTC.load_from_dir(model_dir) if use_lm and lm is None else None
        if base is not None:
            return base
        from w2vlm.decoder import load_alphabet_json

        alphabet = load_alphabet_json(model_dir / "alphabet.json")
    else:
        from w2vlm.processor_parts import load_tokenizer, tokenizer_labels

        alphabet = Alphabet.build_alphabet(tokenizer_labels(load_tokenizer(model_dir)))
    language_model = None
    if use_lm and lm is not None:
        language_model = load_language_model(lm)
    return BeamSearchDecoderCTC(alphabet, language_model)


def load_language_model(lm: str | os.PathLike[str]) -> Any:
    """An LM from an ARPA/KenLM file (with ``unigrams.txt``/``attrs.json`` beside it when present), a
    ``language_model/`` folder, or a model folder that has one."""
    from w2vlm.decoder import LanguageModel, load_unigrams
    from w2vlm.decoder.ngram_files import lm_file_of

    p = Path(lm).expanduser()
    folder = p / "language_model" if (p / "language_model").is_dir() else p
    if folder.is_dir() and (folder / "attrs.json").is_file():  # the hub layout (attrs, unigrams and one LM file)
        return LanguageModel.load_from_dir(folder)
    p = lm_file_of(p, "--lm")  # an LM file, or a folder of one (build-lm's, with unigrams.txt beside it)
    unigrams_file = p.parent / "unigrams.txt"
    unigrams = load_unigrams(unigrams_file) if unigrams_file.is_file() else None
    attrs: dict[str, Any] = {}
    attrs_file = p.parent / "attrs.json"
    if attrs_file.is_file():
        attrs = read_json_object(attrs_file, LanguageModelError)
        attrs = {k: v for k, v in attrs.items() if k in ("alpha", "beta", "unk_score_offset", "score_boundary")}
    return LanguageModel(p, unigrams, **attrs)


# ------------------------------------------------------------------------------------------------ evaluate


@dataclass
class Hypothesis:
    """One system's output for an utterance, with its errors against the (normalized) reference."""

    text: str
    words: ErrorCounts
    chars: ErrorCounts

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "wer": self.words.rate,
            "cer": self.chars.rate,
            "word_errors": self.words.to_dict(),
            "char_errors": self.chars.to_dict(),
        }


@dataclass
class UtteranceResult:
    id: str
    audio: str
    reference: str
    duration_s: float = 0.0
    cached: bool = False
    error: str | None = None
    hypotheses: dict[str, Hypothesis] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)  # the manifest's other fields (see ManifestItem)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "audio": self.audio,
            "reference": self.reference,
            "duration_s": round(self.duration_s, 3),
            "cached": self.cached,
            "error": self.error,
            **({"fields": self.fields} if self.fields else {}),
            **{name: hyp.to_dict() for name, hyp in self.hypotheses.items()},
        }


Totals = dict[str, dict[str, ErrorCounts]]  # system -> {"words": ..., "chars": ...}


def _new_totals(systems: Sequence[str]) -> Totals:
    return {s: {"words": ErrorCounts(), "chars": ErrorCounts()} for s in systems}


def _add_hypothesis(totals: Totals, system: str, hyp: Hypothesis) -> None:
    totals[system]["words"] = totals[system]["words"] + hyp.words
    totals[system]["chars"] = totals[system]["chars"] + hyp.chars


@dataclass(frozen=True)
class GroupBy:
    """How :meth:`EvalReport.breakdown` groups utterances: by the value of a manifest field, numbers
    optionally in bins of ``width`` (``"snr_db:10"``: 0-10, 10-20, ...)."""

    field: str
    width: float | None = None

    @classmethod
    def parse(cls, spec: str) -> GroupBy:
        """``"FIELD"`` or ``"FIELD:WIDTH"``; raises :class:`ManifestError` naming a malformed one."""
        name, sep, width = spec.partition(":")
        name = name.strip()
        if not name:
            raise ManifestError(f"--by {spec!r}: expected FIELD or FIELD:WIDTH (a manifest field)")
        if not sep:
            return cls(name)
        try:
            value = float(width)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise ManifestError(f"--by {spec!r}: the bin width {width.strip()!r} is not a positive number")
        return cls(name, value)

    @classmethod
    def of(cls, spec: GroupBy | str) -> GroupBy:
        """A :class:`GroupBy` as it is, or parsed from its ``"FIELD[:WIDTH]"`` spec."""
        return cls.parse(spec) if isinstance(spec, str) else spec

    def __str__(self) -> str:
        return self.field if self.width is None else f"{self.field}:{self.width:g}"

    def key(self, fields: dict[str, Any], utterance: str) -> tuple[int, float, str]:
        """(kind, number, label) of an utterance's group, in the order groups are listed: numbers (or bins)
        first by value, then strings, then utterances without the field ("(none)")."""
        value = fields.get(self.field)
        if value is None:
            return (2, 0.0, "(none)")
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.width is not None and isinstance(value, str):  # CSV columns are text
            with contextlib.suppress(ValueError):
                value, numeric = float(value), True
        if self.width is not None:
            if not numeric:
                raise ManifestError(
                    f"--by {self}: utterance {utterance} has {self.field}={value!r}, not a number to put in a bin"
                )
            low = (value // self.width) * self.width
            return (0, low, f"{low:g}-{low + self.width:g}")
        if numeric:
            return (0, float(value), f"{value:g}" if isinstance(value, float) else str(value))
        return (1, 0.0, str(value))


@dataclass
class GroupScore:
    """The scores of one group of a breakdown: its utterances, audio and error counts per system."""

    label: str
    utterances: int
    audio_seconds: float
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.label,
            "utterances": self.utterances,
            "audio_seconds": round(self.audio_seconds, 3),
            **{
                system: {"wer": t["words"].rate, "cer": t["chars"].rate, "words": t["words"].to_dict()}
                for system, t in self.totals.items()
            },
        }


@dataclass
class EvalReport:
    """What :func:`evaluate` measured. ``systems``: "greedy" and, with an LM, "lm" (beam search + LM)."""

    manifest: str
    model: str
    lm: str | None
    systems: list[str]
    decode_settings: dict[str, Any]
    normalize: bool
    utterances: list[UtteranceResult]
    totals: Totals
    timings: dict[str, float]
    audio_seconds: float
    computed_audio_seconds: float
    group_by: list[GroupBy] = field(default_factory=list)  # breakdowns to_dict includes

    @property
    def failed(self) -> list[UtteranceResult]:
        return [u for u in self.utterances if u.error is not None]

    def wer(self, system: str) -> float:
        return self.totals[system]["words"].rate

    def cer(self, system: str) -> float:
        return self.totals[system]["chars"].rate

    def breakdown(self, by: GroupBy | str) -> list[GroupScore]:
        """Scores per value of a manifest field (scored utterances only); the groups' counts add up to the
        totals. Utterances without the field form a group "(none)"."""
        group_by = GroupBy.of(by)
        groups: dict[tuple[int, float, str], GroupScore] = {}
        for u in self.utterances:
            if u.error is not None or not u.hypotheses:
                continue
            key = group_by.key(u.fields, u.id)
            g = groups.get(key)
            if g is None:
                g = groups[key] = GroupScore(key[2], 0, 0.0, _new_totals(self.systems))
            g.utterances += 1
            g.audio_seconds += u.duration_s
            for system, hyp in u.hypotheses.items():
                _add_hypothesis(g.totals, system, hyp)
        return [groups[k] for k in sorted(groups)]

    @property
    def rtf(self) -> dict[str, float | None]:
        """Processing seconds per audio second: acoustic model (utterances computed in this run), greedy and
        LM decoding, and acoustic + LM decoding."""
        audio = self.audio_seconds
        acoustic = (
            self.timings.get("acoustic", 0.0) / self.computed_audio_seconds if self.computed_audio_seconds else None
        )
        out: dict[str, float | None] = {"acoustic": acoustic}
        for system in self.systems:
            out[system] = self.timings.get(system, 0.0) / audio if audio else None
        if "lm" in self.systems and acoustic is not None and out["lm"] is not None:
            out["acoustic+lm"] = acoustic + out["lm"]  # type: ignore[operator]
        return out

    def to_dict(self) -> dict[str, Any]:
        summary = {}
        for system in self.systems:
            words, chars = self.totals[system]["words"], self.totals[system]["chars"]
            summary[system] = {"wer": words.rate, "cer": chars.rate, "words": words.to_dict(), "chars": chars.to_dict()}
        return {
            "manifest": self.manifest,
            "model": self.model,
            "lm": self.lm,
            "systems": self.systems,
            "decode_settings": self.decode_settings,
            "normalize": self.normalize,
            "num_utterances": len(self.utterances),
            "num_scored": len(self.utterances) - len(self.failed),
            "num_failed": len(self.failed),
            "audio_seconds": self.audio_seconds,
            "summary": summary,
            "rtf": self.rtf,
            "timings_s": dict(self.timings),
            **(
                {"breakdown": {str(g): [s.to_dict() for s in self.breakdown(g)] for g in self.group_by}}
                if self.group_by
                else {}
            ),
            "utterances": [u.to_dict() for u in self.utterances],
        }


def decode_lm(
    decoder: Any,
    logits_list: Sequence[np.ndarray],
    config: DecodeConfig | None = None,
    num_threads: int | None = None,
) -> list[str]:
    """Beam search + LM transcripts of many utterances on ``num_threads`` native threads (longest first, so
    that the threads finish together), decoded as ``config`` says (the engine's configuration; its
    ``alpha``/``beta``/``unk_score_offset`` apply to this call only, the shared LM is not changed).

    With the default configuration the search is the one of ``decode_beams`` (no history pruning), so the
    transcripts are the pipeline's and ``w2vlm transcribe``'s; only the best beam is built.
    """
    kwargs = (config or DecodeConfig()).search_kwargs() | {"n_best": 1}
    if decoder.language_model is None:
        for key in ("alpha", "beta", "unk_score_offset", "score_boundary"):
            kwargs.pop(key)
    options = decoder.options(**kwargs)
    order = sorted(range(len(logits_list)), key=lambda i: -logits_list[i].shape[0])
    beams = decoder.decode_beams_with(options, [logits_list[i] for i in order], num_threads)
    out = [""] * len(logits_list)
    for i, best in zip(order, beams, strict=True):
        out[i] = best[0].text if best else ""
    return out


def evaluate(
    manifest: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    *,
    lm: str | os.PathLike[str] | None = None,
    use_lm: bool = True,
    decode: DecodeConfig | None = None,
    num_threads: int | None = None,
    acoustic: AcousticSettings | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    normalize: bool = True,
    progress: ProgressFn | None = None,
    group_by: Sequence[GroupBy | str] = (),
) -> EvalReport:
    """Greedy and beam search + LM WER/CER of a model on a manifest (see the module docstring).

    ``model``: a model folder in the hub layout, a hub id, or None for the embedded default model.
    ``lm``: an LM to use instead of the model's ``language_model/``; ``use_lm=False`` scores greedy only.
    ``group_by``: manifest fields (``"FIELD"`` or ``"FIELD:BIN_WIDTH"``) to break the scores down by (the
    report's ``to_dict`` includes them; :meth:`EvalReport.breakdown` computes any); checked against the
    manifest before the model runs.
    """
    from w2vlm.model import resolve_model_path

    decode = decode or DecodeConfig()
    timings: dict[str, float] = {}
    items = read_manifest(manifest)
    groups = check_group_by(items, group_by, manifest)
    model_dir = resolve_model_path(model)
    decoder = load_eval_decoder(model_dir, lm, use_lm)
    labels = decoder.alphabet.labels
    has_lm = decoder.language_model is not None
    if use_lm and not has_lm:
        logger.warning("%s has no language model (and no --lm was given): scoring greedy decoding only", model_dir)

    results = collect_logits(
        items, model_dir, acoustic, cache_dir=cache_dir, use_cache=use_cache, progress=progress, timings=timings
    )
    ok = [r for r in results if r.logits is not None]
    for r in ok:
        if r.logits.shape[1] != len(labels):  # type: ignore[union-attr]
            raise ModelError(
                f"{model_dir}: the model outputs {r.logits.shape[1]} tokens per frame but the decoder's "  # type: ignore[union-attr]
                f"alphabet has {len(labels)} labels"
            )
    timings["acoustic"] = sum(r.seconds for r in ok if not r.cached)
    computed_audio = sum(r.duration_s for r in ok if not r.cached)

    systems = ["greedy"] + (["lm"] if has_lm else [])
    texts: dict[str, list[str]] = {}
    t0 = time.perf_counter()
    texts["greedy"] = [greedy_decode(r.logits, labels, decoder.alphabet.is_bpe) for r in ok]  # type: ignore[arg-type]
    timings["greedy"] = time.perf_counter() - t0
    if has_lm:
        if progress:
            progress("lm", 0, 1)
        t0 = time.perf_counter()
        texts["lm"] = decode_lm(decoder, [r.logits for r in ok], decode, num_threads)  # type: ignore[misc]
        timings["lm"] = time.perf_counter() - t0
        if progress:
            progress("lm", 1, 1)

    norm = normalize_text if normalize else (lambda t: " ".join(t.split()))
    totals = _new_totals(systems)
    utterances: list[UtteranceResult] = []
    position = {id(r): i for i, r in enumerate(ok)}
    for r in results:
        u = UtteranceResult(
            id=r.item.id,
            audio=str(r.item.audio),
            reference=r.item.reference,
            duration_s=r.duration_s,
            cached=r.cached,
            error=r.error,
            fields=dict(r.item.fields),
        )
        if r.logits is not None:
            ref = norm(r.item.reference)
            for system in systems:
                hyp = texts[system][position[id(r)]]
                h = Hypothesis(hyp, word_errors(ref, norm(hyp)), char_errors(ref, norm(hyp)))
                u.hypotheses[system] = h
                _add_hypothesis(totals, system, h)
        utterances.append(u)

    # the weights in effect: this run's where given, else the LM's own
    lm_params = dict(decoder.language_model.serializable_attrs) if has_lm else {}
    search = decode.search_kwargs()
    settings: dict[str, Any] = {k: search[k] for k in ("beam_width", "beam_prune_logp", "token_min_logp")}
    settings["num_threads"] = num_threads
    for name in ("alpha", "beta", "unk_score_offset"):
        if has_lm and getattr(decode, name) is not None:
            lm_params[name] = getattr(decode, name)
    settings.update(lm_params)
    lm_name = None
    if has_lm:
        path = decoder.language_model.path
        lm_name = str(path) if path is not None else str(lm)
    return EvalReport(
        manifest=str(manifest),
        model=str(model_dir),
        lm=lm_name,
        systems=systems,
        decode_settings=settings,
        normalize=normalize,
        utterances=utterances,
        totals=totals,
        timings=timings,
        audio_seconds=sum(r.duration_s for r in ok),
        computed_audio_seconds=computed_audio,
        group_by=groups,
    )


def check_group_by(
    items: Sequence[ManifestItem], group_by: Sequence[GroupBy | str], manifest: str | os.PathLike[str]
) -> list[GroupBy]:
    """Parse ``group_by`` and check each field against the manifest: some utterance has it, and binned
    ones are numbers. Raises :class:`ManifestError` naming the field and the fields there are."""
    out = [GroupBy.of(g) for g in group_by]
    present: dict[str, None] = {}
    for item in items:
        present.update(dict.fromkeys(item.fields))
    for g in out:
        if g.field not in present:
            have = ", ".join(present) if present else "none besides audio and text"
            raise ManifestError(f"--by {g}: no utterance of {manifest} has a field {g.field!r} (fields: {have})")
        for item in items:
            g.key(item.fields, item.id)  # a binned field with a value that is not a number is named now
    return out


# -------------------------------------------------------------------------------------------------- output


SYSTEM_NAMES = {"greedy": "greedy", "lm": "beam + LM"}


def summary_table(report: EvalReport) -> Any:
    """A rich table: WER, CER and edit counts per system, side by side."""
    from rich.table import Table

    n_ok = len(report.utterances) - len(report.failed)
    table = Table(title=f"{n_ok} utterances, {report.audio_seconds / 60:.1f} min of audio", title_justify="left")
    for col in ("system", "WER %", "CER %", "sub", "del", "ins", "ref words", "RTF"):
        table.add_column(col, justify="left" if col == "system" else "right")
    rtf = report.rtf
    for system in report.systems:
        words, chars = report.totals[system]["words"], report.totals[system]["chars"]
        value = rtf.get(system)
        table.add_row(
            SYSTEM_NAMES.get(system, system),
            f"{100 * words.rate:.2f}",
            f"{100 * chars.rate:.2f}",
            str(words.substitutions),
            str(words.deletions),
            str(words.insertions),
            str(words.reference_length),
            "-" if value is None else f"{value:.3g}",  # greedy decoding: 1e-4 and less
        )
    return table


def breakdown_table(report: EvalReport, by: GroupBy | str) -> Any:
    """A rich table: utterances, audio minutes, WER and CER per system for each group of a breakdown."""
    from rich.table import Table

    group_by = GroupBy.of(by)
    table = Table(title=f"by {group_by}", title_justify="left")
    table.add_column(group_by.field)
    for col in ("utts", "min"):
        table.add_column(col, justify="right")
    for system in report.systems:
        name = SYSTEM_NAMES.get(system, system)
        table.add_column(f"{name} WER %", justify="right")
        table.add_column(f"{name} CER %", justify="right")
    for g in report.breakdown(group_by):
        cells = [g.label, str(g.utterances), f"{g.audio_seconds / 60:.1f}"]
        for system in report.systems:
            cells += [f"{100 * g.totals[system]['words'].rate:.2f}", f"{100 * g.totals[system]['chars'].rate:.2f}"]
        table.add_row(*cells)
    return table


def worst_utterances(report: EvalReport, count: int, system: str | None = None) -> list[UtteranceResult]:
    """The ``count`` scored utterances with the most word errors (of the LM system when there is one)."""
    system = system or report.systems[-1]
    scored = [u for u in report.utterances if system in u.hypotheses]
    scored.sort(key=lambda u: (-u.hypotheses[system].words.errors, u.id))
    return scored[:count]
