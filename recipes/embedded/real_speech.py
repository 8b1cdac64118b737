"""Manifests of the real (recorded) speech that can be had offline, for training and for real-speech dev sets.

Sources:

* Free Spoken Digit Dataset (FSDD; ``/work/shared/data/fsdd`` or ``--fsdd DIR``): 3 000 clips of single
  digits, 6 speakers, 8 kHz, named ``{digit}_{speaker}_{take}.wav``; CC BY-SA 4.0. Upstream convention:
  takes 0-4 of every speaker are the test set; they go to ``fsdd_dev`` and are never trained on.
  ``--unseen-speakers a,b`` holds out whole speakers: all their takes go to ``fsdd_unseen`` (a dev set of
  speakers the model never heard), none to ``fsdd_train`` or ``fsdd_dev``.
* Asterisk core sounds (Debian ``asterisk-core-sounds-en-wav``, 8 kHz, transcripts in
  ``asterisk-core-sounds-en``'s ``core-sounds-en.txt.gz``): IVR prompts of one female voice (Allison
  Smith); CC BY-SA 3.0. A deterministic ~15 % hash slice of the prompt names is the dev set.
* ``pocketsphinx-testdata`` (Debian): 5 LibriVox clips (Sense and Sensibility, read speech, 16 kHz) and 5
  spoken card names; BSD-2 (CMU). Dev only.

Writes into ``OUT`` (default ``.data/real``): ``fsdd_train.jsonl``, ``fsdd_dev.jsonl``,
``asterisk_train.jsonl``, ``asterisk_dev.jsonl``, ``pocketsphinx_dev.jsonl``, ``fsdd_unseen.jsonl``
(empty without ``--unseen-speakers``; absolute audio paths, texts
normalized to the model alphabet) and ``sources.json`` (counts, hours, licences). It checks that no dev
clip is in a training manifest (:func:`check_disjoint`).

Usage: ``python recipes/embedded/real_speech.py [--out .data/real] [--fsdd DIR] [--debs .data/debs]
[--unseen-speakers nicolas,theo]``
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
import wave
from collections.abc import Collection, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import fetch_packages, normalize

PACKAGES = ("asterisk-core-sounds-en", "asterisk-core-sounds-en-wav", "pocketsphinx-testdata")
ASTERISK_TEXT = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
ASTERISK_AUDIO = "usr/share/asterisk/sounds/en_US_f_Allison"
POCKETSPHINX = "usr/share/pocketsphinx/test/data"
FSDD_DEV_TAKES = range(5)  # upstream test split: takes 0-4 of every speaker
ASTERISK_DEV_PERCENT = 15

LICENCES = {
    "fsdd": "Free Spoken Digit Dataset (Jakobovski et al.), CC BY-SA 4.0",
    "asterisk": "Asterisk core sounds, English, recorded by Allison Smith (Digium), CC BY-SA 3.0 "
    "(Debian asterisk-core-sounds-en-wav 1.6.1)",
    "pocketsphinx": "pocketsphinx-testdata (CMU Sphinx test data; LibriVox recording of Sense and Sensibility "
    "and spoken card names), BSD-2-Clause (Debian pocketsphinx-testdata)",
}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


# ---------------------------------------------------------------- FSDD

_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def fsdd_split(name: str) -> tuple[str, str, int] | None:
    """(text, speaker, take) of an FSDD file name, None if it is not one."""
    m = _FSDD_NAME.match(name)
    if not m:
        return None
    return DIGITS[int(m.group(1))], m.group(2), int(m.group(3))


def fsdd_manifests(folder: Path, unseen: Collection[str] = ()) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, dev, unseen) records of FSDD: takes 0-4 of each speaker are dev, every take of a speaker in
    ``unseen`` is in the third list only."""
    train: list[dict] = []
    dev: list[dict] = []
    held: list[dict] = []
    for path in sorted(folder.glob("*.wav")):
        parsed = fsdd_split(path.name)
        if parsed is None:
            continue
        text, speaker, take = parsed
        rec = {"audio": str(path.resolve()), "text": text, "duration": round(wav_seconds(path), 3),
               "source": "fsdd", "speaker": speaker, "id": f"fsdd/{path.stem}"}  # fmt: skip
        (held if speaker in unseen else dev if take in FSDD_DEV_TAKES else train).append(rec)
    return train, dev, held


# ---------------------------------------------------------------- Asterisk

# what the speaker says for the keypad symbols and a few spellings the prompts use
_ASTERISK_SUBS = (
    (re.compile(r"\*"), " star "),
    (re.compile(r"#"), " pound "),
    (re.compile(r"\be-?mail\b", re.IGNORECASE), " email "),
    (re.compile(r"\bvoice-?mail\b", re.IGNORECASE), " voicemail "),
)


def asterisk_text(raw: str) -> str | None:
    """The prompt's transcript in the model alphabet; None for a non-speech entry (``[beep tone]``) or
    one with text the alphabet cannot spell faithfully."""
    text = raw.strip()
    if not text or text.startswith("[") or re.search(r"\[[^]]*\]", text):
        return None
    for pattern, repl in _ASTERISK_SUBS:
        text = pattern.sub(repl, text)
    text = re.sub(r"(?<=[a-zA-Z])-(?=[a-zA-Z])", " ", text)  # Call-Forward -> call forward
    if re.search(r"[<>{}=@/\\|~^]", text):
        return None
    out = normalize(text)
    return out or None


def asterisk_is_dev(name: str) -> bool:
    """Whether a prompt (by its name, e.g. ``vm-intro``) is in the dev slice: a SHA-1 hash decides."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 100 < ASTERISK_DEV_PERCENT


def asterisk_manifests(root: Path) -> tuple[list[dict], list[dict], int]:
    """(train, dev, entries without usable audio or text) of the Asterisk prompts."""
    train: list[dict] = []
    dev: list[dict] = []
    dropped = 0
    audio_dir = root / ASTERISK_AUDIO
    with gzip.open(root / ASTERISK_TEXT, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    seen: set[str] = set()
    for line in lines:
        if not line.strip() or line.startswith(";") or ":" not in line:
            continue
        name, raw = line.split(":", 1)
        name = name.strip()
        if name in seen:
            continue
        seen.add(name)
        path = audio_dir / f"{name}.wav"
        text = asterisk_text(raw)
        if text is None or not path.is_file():
            dropped += 1
            continue
        rec = {"audio": str(path.resolve()), "text": text, "duration": round(wav_seconds(path), 3),
               "source": "asterisk", "speaker": "allison", "id": f"asterisk/{name}"}  # fmt: skip
        (dev if asterisk_is_dev(name) else train).append(rec)
    return train, dev, dropped


# ---------------------------------------------------------------- pocketsphinx-testdata

_SPHINX_LINE = re.compile(r"^(.*)\(([^()]+)\)\s*$")


def sphinx_transcripts(path: Path) -> dict[str, str]:
    """``<s> words </s> (fileid)`` lines -> {fileid: normalized words}."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _SPHINX_LINE.match(line.strip())
        if m:
            words = re.sub(r"</?s>", " ", m.group(1))
            out[m.group(2).strip()] = normalize(words)
    return out


def pocketsphinx_manifest(root: Path) -> list[dict]:
    base = root / POCKETSPHINX
    records = []
    for sub, trans in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for fileid, text in sorted(sphinx_transcripts(base / sub / trans).items()):
            path = base / sub / f"{fileid}.wav"
            records.append({"audio": str(path.resolve()), "text": text, "duration": round(wav_seconds(path), 3),
                            "source": f"pocketsphinx-{sub}", "id": f"pocketsphinx/{sub}/{fileid}"})  # fmt: skip
    return records


# ---------------------------------------------------------------- checks / output

TRAIN_SETS = ("fsdd_train", "asterisk_train")
DEV_SETS = ("fsdd_dev", "asterisk_dev", "pocketsphinx_dev")
UNSEEN_SET = "fsdd_unseen"  # whole FSDD speakers held out (--unseen-speakers); not in the GPU kit


def check_disjoint(train: Iterable[dict], dev: Iterable[dict], unseen: Collection[str] = ()) -> None:
    """Raise ValueError if a dev clip (by id or audio path) is among the training records, or an FSDD take
    0-4, a take of a speaker in ``unseen`` or an Asterisk dev prompt is."""
    dev = list(dev)
    dev_keys = {r["id"] for r in dev} | {str(Path(r["audio"]).resolve()) for r in dev}
    for r in train:
        rid = r.get("id", "")
        if rid in dev_keys or str(Path(r["audio"]).resolve()) in dev_keys:
            raise ValueError(f"dev clip in training data: {rid or r['audio']}")
        parsed = fsdd_split(Path(r["audio"]).name) if rid.startswith("fsdd/") else None
        if parsed and parsed[2] in FSDD_DEV_TAKES:
            raise ValueError(f"FSDD take {parsed[2]} (test split) in training data: {rid}")
        if parsed and parsed[1] in unseen:
            raise ValueError(f"FSDD speaker {parsed[1]} is held out (unseen speakers): {rid}")
        if rid.startswith("asterisk/") and asterisk_is_dev(rid.split("/", 1)[1]):
            raise ValueError(f"Asterisk dev prompt in training data: {rid}")
        if rid.startswith("pocketsphinx/"):
            raise ValueError(f"pocketsphinx-testdata clip in training data: {rid}")


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build(out: Path, fsdd: Path, debs: Path, unseen: Collection[str] = ()) -> dict:
    root = fetch_packages(debs, PACKAGES)
    sets: dict[str, list[dict]] = {}
    sets["fsdd_train"], sets["fsdd_dev"], sets[UNSEEN_SET] = fsdd_manifests(fsdd, unseen)
    sets["asterisk_train"], sets["asterisk_dev"], dropped = asterisk_manifests(root)
    sets["pocketsphinx_dev"] = pocketsphinx_manifest(root)
    if not sets["fsdd_train"] or not sets["asterisk_train"]:
        sys.exit(f"no FSDD clips in {fsdd} or no Asterisk prompts under {root}")
    dev = [r for s in (*DEV_SETS, UNSEEN_SET) for r in sets[s]]
    check_disjoint([r for s in TRAIN_SETS for r in sets[s]], dev, unseen)
    out.mkdir(parents=True, exist_ok=True)
    stats: dict = {"sets": {}, "licences": LICENCES, "asterisk_dropped": dropped, "unseen_speakers": sorted(unseen)}
    for name, records in sets.items():
        write_jsonl(out / f"{name}.jsonl", records)
        stats["sets"][name] = {"utterances": len(records),
                               "hours": round(sum(r["duration"] for r in records) / 3600, 4)}  # fmt: skip
    (out / "sources.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".data/real"))
    ap.add_argument("--fsdd", type=Path, default=Path("/work/shared/data/fsdd"))
    ap.add_argument("--debs", type=Path, default=Path(".data/debs"))
    ap.add_argument("--unseen-speakers", default="", help="comma-separated FSDD speakers held out entirely")
    args = ap.parse_args(argv)
    unseen = {s.strip() for s in args.unseen_speakers.split(",") if s.strip()}
    stats = build(args.out, args.fsdd, args.debs, unseen)
    for name, s in stats["sets"].items():
        print(f"{name:<18} {s['utterances']:>5} utterances {s['hours'] * 60:6.1f} min")
    print(f"asterisk entries without usable text or audio: {stats['asterisk_dropped']}; -> {args.out}")


if __name__ == "__main__":
    main()
