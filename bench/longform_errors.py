"""Where a long file's extra errors come from (issue 30): bench/longform.py's long files, segment by segment.

    python bench/longform_errors.py                          # the 10-minute file of seed 0, the defaults
    python bench/longform_errors.py --minutes 60 --seed 1
    python bench/longform_errors.py --variants "default;vad_min_silence_s=0.3;oracle"
    python bench/longform_errors.py --model OUT   # another model (e.g. from w2vlm train), with the LM it has

Each utterance of the file's timeline (its start and end) is matched with the speech segments the VAD cut, and
put in one class:

* ``clean``: one segment holds it and no other utterance;
* ``merged``: its segment also holds (part of) another utterance (a gap shorter than the minimum silence);
* ``split``: two or more segments share it (a false silence, or a segment cut at ``max_segment_s``);
* ``missed``: no segment overlaps it, or the no-speech gate removed the segment's words.

Hypothesis words are given to the utterance nearest their middle (in file time), each utterance's errors are
counted (word-level edit distance) against its reference, and the same for the utterance transcribed on its own
(one by one, VAD off): the table gives, per class, the utterances, their reference words and both error counts.
The difference is where the extra errors are. Words farther than ``bench/longform_scoring.py``'s ``GAP_MARGIN_S`` from
every utterance are counted as gap words. Every variant is also decoded greedily (no LM, long file and one by
one), so that an LM effect across merged utterances shows as a beam/greedy difference.

For the clean utterances the extra errors are also given by where the segment starts and ends relative to the
utterance (``lead``: seconds of padding before it, negative when the segment starts inside it, i.e. the VAD's onset
came late; ``trail`` likewise after it).

``--variants``: ``;``-separated, each ``default``, ``oracle`` (cut at the timeline's utterance bounds, padded by
the default pad, at most half the gap: where the VAD's own boundaries are taken out; ``oracle,vad_pad_s=0`` cuts
each utterance's clip exactly as it was written; ``oracle,fill=zeros`` pads the clip with digital silence instead
of the file's gap audio, ``oracle,fill=own`` with the clip's own first/last 40 ms repeated: what the padding's
content does) or ``name=value,...``
EngineConfig VAD settings (``vad_threshold=0.15,vad_pad_s=0.3``); ``gaps=S`` in a variant also recognises the
audio between the VAD's segments (stretches of at least S seconds) as segments of their own, kept or dropped by
the no-speech gate: what the acoustic model makes of what the VAD left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import longform_data  # noqa: E402
import longform_scoring  # noqa: E402
from metrics import edit_distance as edits  # noqa: E402

CLASSES = ("clean", "merged", "split", "missed")


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    spec = spec.strip()
    if spec in ("default", "oracle"):
        return spec, {}
    changes: dict[str, Any] = {}
    for item in spec.split(",")[1 if spec.startswith("oracle,") else 0 :]:
        key, value = (x.strip() for x in item.split("="))
        changes[key] = value if key == "fill" else float(value)
    return spec, changes


class Run:
    def __init__(self, model: str | None = None) -> None:
        from w2vlm.engine.config import DecodeConfig
        from w2vlm.transcribe import TranscribeOptions, Transcriber

        self.tr = Transcriber(TranscribeOptions(model=model))
        self.engine = self.tr.engine
        self.beam = self.tr.options.decode_config(True)
        self.greedy = DecodeConfig(use_lm=False, greedy=True, timestamps="word")
        self.spf = self.engine.seconds_per_frame

    def parts(self, items: list[Any], config: Any) -> list[list[tuple[float, float | None, np.ndarray]]]:
        out = []
        for parts, _, error in self.engine.segment_log_probs(items, config=config):
            if error is not None:
                raise error
            out.append(parts)
        return out

    def decode(self, parts: list[tuple[float, float | None, np.ndarray]], decode: Any) -> list[Any]:
        """Per part: (transcript in file time words, no_speech_prob, kept by the gate)."""
        from w2vlm.engine.segments import no_speech_prob

        assert self.engine.decoding is not None
        done = self.engine.decoding.decode_parts(["x"] * len(parts), parts, decode, self.engine.decode_threads)
        out = []
        for t, offset, _, evidence in done:
            prob = no_speech_prob(evidence)
            kept = decode.no_speech_threshold is None or prob <= decode.no_speech_threshold
            words = [(w.word, w.start + offset, w.end + offset) for w in t.words]
            out.append((words, prob, kept))
        return out


def one_by_one(run: Run, audios: list[str]) -> dict[str, dict[str, str]]:
    parts = run.parts(audios, run.engine.config.with_(vad=False))
    flat = [p for ps in parts for p in ps]
    out: dict[str, dict[str, str]] = {a: {} for a in audios}
    for mode, dec in (("beam", run.beam), ("greedy", run.greedy)):
        got = run.decode(flat, dec)
        for a, (words, _, kept) in zip(audios, got):
            out[a][mode] = " ".join(w for w, _, _ in words) if kept else ""
    return out


def mirror_before(edge: np.ndarray, n: int) -> np.ndarray:
    """``n`` samples to put before a clip that starts with ``edge``: ``edge`` mirrored outwards again and again
    (every other copy reversed, so no jump where copies meet or where the clip starts)."""
    copies = [edge[::-1] if k % 2 == 0 else edge for k in range(-(-n // max(1, edge.size)))]
    return np.concatenate(copies[::-1])[edge.size * len(copies) - n :] if n else edge[:0]


def oracle_parts(
    run: Run, path: Path, timeline: list[dict[str, Any]], pad: float, fill: str = "file"
) -> list[tuple[float, float | None, np.ndarray]]:
    """Log-probabilities of the file cut at the timeline's utterance bounds, padded by ``pad`` seconds (at most
    half the gap) of the file's audio (``fill="file"``), digital zeros (``"zeros"``) or the clip's own first and
    last 40 ms repeated (``"own"``)."""
    import soundfile as sf

    if fill not in ("file", "zeros", "own"):
        raise ValueError(f"fill: file, zeros or own; got {fill!r}")
    audio, sr = sf.read(str(path), dtype="float32")
    edge = round(0.04 * sr)
    pieces, starts = [], []
    for i, u in enumerate(timeline):
        before = u["start"] - (timeline[i - 1]["end"] if i else 0.0)
        after = (timeline[i + 1]["start"] if i + 1 < len(timeline) else len(audio) / sr) - u["end"]
        a = u["start"] - min(pad, before / 2)
        b = u["end"] + min(pad, after / 2)
        s, e = round(u["start"] * sr), round(u["end"] * sr)
        lead, trail = audio[round(a * sr) : s], audio[e : round(b * sr)]
        clip = audio[s:e]
        if fill == "zeros":
            lead, trail = np.zeros_like(lead), np.zeros_like(trail)
        elif fill == "own":
            lead, trail = mirror_before(clip[:edge], lead.size), mirror_before(clip[-edge:][::-1], trail.size)[::-1]
        pieces.append({"array": np.concatenate([lead, clip, trail]), "sampling_rate": sr})
        starts.append((s - lead.size) / sr)
    parts = run.parts(pieces, run.engine.config.with_(vad=False))
    return [(s, 1.0, ps[0][2]) for s, ps in zip(starts, parts)]


def part_bounds(run: Run, parts: list[tuple[float, float | None, np.ndarray]], sr: int) -> list[tuple[int, int]]:
    """Each part's first and one-past-last sample in the file (at ``sr``), from its start and its frames."""
    return [(round(s * sr), round(s * sr) + round(lp.shape[0] * run.spf * sr)) for s, _, lp in parts]


def gap_parts(
    run: Run, path: Path, parts: list[tuple[float, float | None, np.ndarray]], min_s: float, max_s: float = 20.0
) -> list[tuple[float, float | None, np.ndarray]]:
    """The audio between the VAD's segments (at least ``min_s`` long, in pieces of at most ``max_s``) as parts of
    their own: what the acoustic model and its no-speech gate make of the audio the VAD left out."""
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32")
    bounds = part_bounds(run, parts, sr)
    spans, prev = [], 0
    for a, b in [*bounds, (audio.size, audio.size)]:
        lo, hi = prev, a
        while hi - lo >= min_s * sr:
            n = min(hi - lo, round(max_s * sr))
            if hi - lo - n < min_s * sr:
                n = hi - lo
            spans.append((lo, lo + n))
            lo += n
        prev = max(prev, b)
    if not spans:
        return []
    pieces = [{"array": audio[a:b], "sampling_rate": sr} for a, b in spans]
    got = run.parts(pieces, run.engine.config.with_(vad=False))
    return [(a / sr, 0.0, ps[0][2]) for (a, _), ps in zip(spans, got)]


def assign(timeline: list[dict[str, Any]], words: list[tuple[str, float, float]]) -> tuple[list[list[str]], int]:
    """Hypothesis words per utterance (nearest middle), and the words in gaps."""
    per: list[list[str]] = [[] for _ in timeline]
    gap = 0
    starts = np.array([u["start"] for u in timeline])
    ends = np.array([u["end"] for u in timeline])
    for w, a, b in words:
        mid = (a + b) / 2
        dist = np.maximum(starts - mid, 0) + np.maximum(mid - ends, 0)
        i = int(np.argmin(dist))
        if dist[i] > longform_scoring.GAP_MARGIN_S:
            gap += 1
        per[i].append(w)
    return per, gap


def classify(timeline: list[dict[str, Any]], segs: list[tuple[float, float, bool]]) -> list[dict[str, Any]]:
    """Per utterance: its class and the facts behind it. ``segs``: (start, end, kept) in file time."""
    out = []
    for i, u in enumerate(timeline):
        over = [(a, b, k) for a, b, k in segs if min(b, u["end"]) - max(a, u["start"]) > 0.02]
        kept = [s for s in over if s[2]]
        info: dict[str, Any] = {"segments": len(over)}
        if not kept:
            info["class"] = "missed"
        elif len(kept) > 1:
            info["class"] = "split"
            info["cut_at"] = [round(b - u["start"], 2) for a, b, _ in kept[:-1]]
        else:
            a, b, _ = kept[0]
            others = [j for j, v in enumerate(timeline) if j != i and min(b, v["end"]) - max(a, v["start"]) > 0.02]
            info["class"] = "merged" if others else "clean"
            info["lead"] = round(u["start"] - a, 3)  # padding before the utterance (negative: its start is cut)
            info["trail"] = round(b - u["end"], 3)
            info["merged_with"] = len(others)
        out.append(info)
    return out


def extended_parts(
    run: Run,
    path: Path,
    parts: list[tuple[float, float | None, np.ndarray]],
    extend_s: float,
    frames: int = 5,
    level: float = 0.5,
) -> tuple[list[tuple[float, float | None, np.ndarray]], int]:
    """The VAD's parts, each whose first or last ``frames`` frames hold a non-blank token above ``level`` (the model
    still hears speech where the segment was cut) cut again up to ``extend_s`` further on that side (at most half
    way to the neighbouring segment) and computed again; and how many were."""
    import soundfile as sf

    from w2vlm.engine.segments import frame_evidence

    assert run.engine.decoding is not None
    blank = run.engine.decoding.blank
    audio, sr = sf.read(str(path), dtype="float32")
    bounds = part_bounds(run, parts, sr)
    pieces, where = [], []
    for i, ((a, b), (_, prob, lp)) in enumerate(zip(bounds, parts)):
        ev = frame_evidence(lp, blank)  # NaN on blank frames, which no comparison passes
        head = bool((ev[:frames] > level).any())
        tail = bool((ev[max(0, ev.size - frames) :] > level).any())
        if not (head or tail):
            continue
        lo = bounds[i - 1][1] if i else 0
        hi = bounds[i + 1][0] if i + 1 < len(bounds) else audio.size
        a2 = max(a - round(extend_s * sr), a - (a - lo) // 2) if head else a
        b2 = min(b + round(extend_s * sr), b + (hi - b) // 2) if tail else b
        pieces.append({"array": audio[a2:b2], "sampling_rate": sr})
        where.append((i, a2, prob))
    if not pieces:
        return parts, 0
    got = run.parts(pieces, run.engine.config.with_(vad=False))
    out = list(parts)
    for (i, a2, prob), ps in zip(where, got):
        out[i] = (a2 / sr, prob, ps[0][2])
    return out, len(pieces)


def analyse(
    run: Run,
    name: str,
    path: Path,
    info: dict[str, Any],
    refs: dict[str, dict[str, str]],
    changes: dict[str, Any],
    show: int,
) -> dict[str, Any]:
    timeline = info["utterances"]
    if name.split(",")[0] == "oracle":
        pad = changes.get("vad_pad_s", run.engine.config.vad_pad_s)
        parts = oracle_parts(run, path, timeline, pad, changes.get("fill", "file"))
    else:
        gaps = changes.pop("gaps", None)
        extend = changes.pop("extend", None)
        edge_frames = int(changes.pop("edge_frames", 5))
        edge_level = changes.pop("edge_level", 0.5)
        (parts,) = run.parts([str(path)], run.engine.config.with_(vad=True, **changes))
        if gaps:
            parts = sorted(parts + gap_parts(run, path, parts, gaps), key=lambda p: p[0])
        if extend:
            parts, count = extended_parts(run, path, parts, extend, edge_frames, edge_level)
            print(f"  {name}: {count} of {len(parts)} segments extended", flush=True)
    segs_time = [(s, s + lp.shape[0] * run.spf) for s, _, lp in parts]
    result: dict[str, Any] = {"variant": name, "segments": len(parts)}
    classes = None
    for mode, dec in (("beam", run.beam), ("greedy", run.greedy)):
        got = run.decode(parts, dec)
        segs = [(a, b, kept) for (a, b), (_, _, kept) in zip(segs_time, got)]
        if classes is None:
            classes = classify(timeline, segs)
            result["gated"] = sum(1 for _, _, k in segs if not k)
            result["gated_words"] = sum(len(w) for w, _, k in got if not k)
        words = [w for ws, _, kept in got if kept for w in ws]
        per, gap = assign(timeline, words)
        ref_words = 0
        tot_long = tot_one = 0
        table: dict[str, Counter] = defaultdict(Counter)
        rows = []
        for u, c, hyp in zip(timeline, classes, per):
            ref = u["text"].split()
            e_long = edits(ref, hyp)
            e_one = edits(ref, refs[u["audio"]][mode].split())
            ref_words += len(ref)
            tot_long += e_long
            tot_one += e_one
            t = table[c["class"]]
            t["utterances"] += 1
            t["ref_words"] += len(ref)
            t["errors_long"] += e_long
            t["errors_one"] += e_one
            t["worse"] += e_long > e_one
            t["better"] += e_long < e_one
            rows.append((e_long - e_one, u, c, " ".join(hyp), refs[u["audio"]][mode]))
        hyp_all = " ".join(w for w, _, _ in words)
        rates = longform_scoring.error_rates([u["text"] for u in timeline], hyp_all)
        one_all = " ".join(refs[u["audio"]][mode] for u in timeline)
        one_rates = longform_scoring.error_rates([u["text"] for u in timeline], one_all)
        result[mode] = {
            "wer": rates["wer"],
            "one_by_one_wer": one_rates["wer"],
            "ratio": rates["wer"] / one_rates["wer"] if one_rates["wer"] else None,
            "ref_words": ref_words,
            "errors_long_per_utt": tot_long,
            "errors_one_per_utt": tot_one,
            "gap_words": gap,
            "classes": {k: dict(v) for k, v in table.items()},
        }
        if mode == "beam":
            rows.sort(key=lambda r: -r[0])
            result["worst"] = [
                {
                    "extra": d,
                    "id": u["id"],
                    "start": round(u["start"], 2),
                    "end": round(u["end"], 2),
                    **c,
                    "ref": u["text"],
                    "long": h,
                    "one": o,
                }
                for d, u, c, h, o in rows[:show]
                if d > 0
            ]
            result["utterances"] = [
                {"id": u["id"], "extra": d, "class": c["class"], "lead": c.get("lead"), "trail": c.get("trail")}
                for d, u, c, _, _ in rows
            ]
            extra_by_class = Counter()
            for d, _, c, _, _ in rows:
                extra_by_class[c["class"]] += d
            result["extra_by_class"] = dict(extra_by_class)
            # where the lead/trail padding of clean utterances lies
            leads = [c["lead"] for c in classes if c["class"] == "clean"]
            trails = [c["trail"] for c in classes if c["class"] == "clean"]
            if leads:
                result["clean_lead_s"] = [round(float(np.percentile(leads, q)), 3) for q in (0, 10, 50)]
                result["clean_trail_s"] = [round(float(np.percentile(trails, q)), 3) for q in (0, 10, 50)]
            result["class_counts"] = dict(Counter(c["class"] for c in classes))
            gaps = [timeline[i + 1]["start"] - timeline[i]["end"] for i in range(len(timeline) - 1)]
            merged_gaps = [
                g for i, g in enumerate(gaps) if classes[i]["class"] == "merged" and classes[i + 1]["class"] == "merged"
            ]
            result["merged_gap_s"] = [round(g, 2) for g in sorted(merged_gaps)][:40]
    return result


def print_result(r: dict[str, Any]) -> None:
    print(f"\n== {r['variant']}: {r['segments']} segments, {r['gated']} gated ({r['gated_words']} words)")
    for mode in ("beam", "greedy"):
        m = r[mode]
        print(
            f"  {mode:>6}: WER {100 * m['wer']:.2f}% vs one by one {100 * m['one_by_one_wer']:.2f}% "
            f"(ratio {m['ratio']:.3f}); per-utterance errors {m['errors_long_per_utt']} vs {m['errors_one_per_utt']} "
            f"of {m['ref_words']} words; gap words {m['gap_words']}"
        )
        print(
            f"    {'class':>7} {'utts':>5} {'words':>6} {'err long':>9} {'err 1by1':>9} {'extra':>6} "
            f"{'worse':>6} {'better':>6}"
        )
        for c in CLASSES:
            t = m["classes"].get(c)
            if not t:
                continue
            print(
                f"    {c:>7} {t['utterances']:>5} {t['ref_words']:>6} {t['errors_long']:>9} {t['errors_one']:>9} "
                f"{t['errors_long'] - t['errors_one']:>6} {t['worse']:>6} {t['better']:>6}"
            )
    rows = [u for u in r.get("utterances", []) if u["class"] == "clean"]
    bins = ((-99, -0.3), (-0.3, -0.1), (-0.1, 0.0), (0.0, 0.1), (0.1, 99))
    for side in ("lead", "trail"):
        cells = []
        for lo, hi in bins:
            sel = [u["extra"] for u in rows if lo <= u[side] < hi]
            label = f"<{hi:g}" if lo < -9 else (f">={lo:g}" if hi > 9 else f"[{lo:g},{hi:g})")
            cells.append(f"{label}: {len(sel)} utts {sum(sel):+d}")
        if rows:
            print(f"  clean, extra errors by {side} (s): " + "; ".join(cells))
    if "clean_lead_s" in r:
        print(f"  clean utterances: padding before (min, p10, median) {r['clean_lead_s']}, after {r['clean_trail_s']}")
    if r.get("merged_gap_s"):
        print(f"  gaps inside merged segments (s): {r['merged_gap_s']}")
    for w in r.get("worst", []):
        extra = {k: w[k] for k in ("lead", "trail", "merged_with", "cut_at") if k in w}
        print(f"  +{w['extra']} {w['class']} {w['id']} [{w['start']}-{w['end']}] {extra}")
        print(f"      ref : {w['ref']}")
        print(f"      long: {w['long']}")
        print(f"      1by1: {w['one']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=longform_data.DATA)
    ap.add_argument("--model", default=None, help="model folder (default: the embedded model, with its LM)")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--show", type=int, default=10, help="utterances with the most extra errors to print")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    manifest = longform_data.test_manifest(None)
    utterances = longform_data.read_manifest(manifest)
    path = longform_data.long_file(args.data, manifest, utterances, args.minutes, args.seed)
    info = json.loads(path.with_suffix(".json").read_text())
    run = Run(args.model)
    audios = list(dict.fromkeys(u["audio"] for u in info["utterances"]))
    refs = one_by_one(run, audios)
    results = []
    for spec in args.variants.split(";"):
        name, changes = parse_variant(spec)
        r = analyse(run, name, path, info, refs, changes, args.show)
        print_result(r)
        results.append(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
