"""Quiet recordings with voice activity detection: the same speech at lower and lower levels.

    python bench/quiet.py                        # the 2-minute file of bench/longform.py, seed 0
    python bench/quiet.py --minutes 10 --levels=-30,-45,-60

Takes ``bench/longform.py``'s long file (held-out synthetic utterances joined with 0.3-2 s gaps; made when missing),
scales it so that its loudest 32 ms frame is at each of ``--levels`` dBFS (the file as made is the first row), and
transcribes each with the engine's defaults (VAD on for inputs over 10 s) and with the VAD off, printing WER against
the utterances' references, the segments the VAD found and the words of each. Silero's network is level-sensitive,
so without its row gain (``w2vlm.engine.silero.LEVEL_DBFS``) a quiet recording loses whole utterances with the VAD
on; the VAD-off column shows what the model itself makes of the level.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import longform_data  # noqa: E402
import longform_scoring  # noqa: E402


def loudest_frame(audio: np.ndarray, frame: int = 512) -> float:
    """RMS of the loudest 32 ms frame (16 kHz)."""
    frames = audio[: audio.size // frame * frame].reshape(-1, frame).astype(np.float64)
    return float(np.sqrt((frames**2).mean(axis=1)).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the long file (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--levels",
        default="-30,-40,-45,-50,-55",
        help="loudest-frame levels, dBFS, comma-separated (written --levels=-30,-45: the value starts with a minus)",
    )
    ap.add_argument("--data", type=Path, default=longform_data.DATA)
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args(argv)
    try:
        levels: list[float | None] = [None, *(float(x) for x in args.levels.split(",") if x.strip())]
    except ValueError:
        ap.error(f"--levels: expected dBFS numbers separated by commas; got {args.levels!r}")

    import soundfile as sf

    from w2vlm.transcribe import TranscribeOptions, Transcriber

    manifest = longform_data.test_manifest(None)
    path = longform_data.long_file(args.data, manifest, longform_data.read_manifest(manifest), args.minutes, args.seed)
    timeline = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["utterances"]
    refs = [u["text"] for u in timeline]
    audio, rate = sf.read(str(path), dtype="float32")
    peak = loudest_frame(audio)
    tr = Transcriber(TranscribeOptions())
    decode = tr.options.decode_config(False)
    configs = {"default": tr.engine.config, "off": dataclasses.replace(tr.engine.config, vad=False)}
    print(f"{path.name}: {len(refs)} utterances, loudest frame {20 * np.log10(peak):.1f} dBFS")
    print(f"{'level':>12}  {'WER default':>11}  {'segments':>8}  {'words':>5}  {'WER VAD off':>11}")
    rows = []
    for level in levels:
        scaled = audio if level is None else (audio * (10 ** (level / 20) / peak)).astype(np.float32)
        row: dict[str, Any] = {"level_dbfs": level}
        item = {"array": scaled, "sampling_rate": rate}
        for name, config in configs.items():
            transcript = next(iter(tr.engine.transcribe([item], decode, config=config)))
            rates = longform_scoring.error_rates(refs, transcript.text)
            row[name] = {"wer": rates["wer"], "segments": len(transcript.segments), "words": len(transcript.words)}
        rows.append(row)
        d, off = row["default"], row["off"]
        label = "as made" if level is None else f"{level:g} dBFS"
        print(f"{label:>12}  {100 * d['wer']:10.1f}%  {d['segments']:8d}  {d['words']:5d}  {100 * off['wer']:10.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"file": str(path), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
