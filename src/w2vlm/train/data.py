"""Training data: manifests, audio (one int16 buffer, optionally a memory-mapped cache), the character
tokenizer and length-bucketed batches."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import random
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.errors import AudioError, ManifestError, ModelError, W2vlmError
from w2vlm.features import FbankInputs, WaveformInputs
from w2vlm.train.config import SAMPLE_RATE

logger = logging.getLogger("w2vlm.train")


# ----------------------------------------------------------------------------------------------------------
# data


@dataclass
class Utterance:
    audio: Path
    text: str


def read_manifest(path: Path) -> list[Utterance]:
    """Read a manifest as ``w2vlm eval`` does (JSONL, CSV/TSV, or a folder of audio + ``.txt``); relative
    audio paths are resolved against the manifest's folder. Every utterance needs its text."""
    from w2vlm.manifest import read_manifest as read_any

    items = read_any(path)
    missing = [item for item in items if item.error]
    if missing:
        raise ManifestError(
            f"{path}: {len(missing)} of {len(items)} utterances have no usable text (first: {missing[0].error})"
        )
    return [Utterance(Path(item.audio), item.reference) for item in items]


def read_audio_int16(path: Path) -> np.ndarray:
    """16 kHz mono int16 samples of a file (16-bit PCM wav read directly, anything else via w2vlm.audio)."""
    if path.suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as w:
                if w.getsampwidth() == 2 and w.getframerate() == SAMPLE_RATE and w.getcomptype() == "NONE":
                    data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
                    channels = w.getnchannels()
                    if channels > 1:
                        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
                    return data
        except (wave.Error, EOFError):
            pass  # not a plain PCM wav: let the general loader try (and raise a proper AudioError)
    from w2vlm.audio import load_audio

    audio = load_audio(str(path), sampling_rate=SAMPLE_RATE)
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


class Tokenizer:
    """Character encoder/decoder over a CTC vocabulary (``<pad>`` blank, ``|`` word delimiter)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self.id_to_token = {i: t for t, i in vocab.items()}
        for needed in ("<pad>", "|"):
            if needed not in vocab:
                raise ModelError(f"vocab.json: token {needed!r} is missing (needed as CTC blank / delimiter)")
        self.blank = vocab["<pad>"]
        self.delimiter = vocab["|"]
        self.unk = vocab.get("<unk>")
        self.lowercase = not any(len(t) == 1 and t.isupper() for t in vocab)

    def normalize(self, text: str) -> str:
        text = text.lower() if self.lowercase else text
        return " ".join(text.split())

    def encode(self, text: str) -> list[int] | None:
        """Token ids of a text; None if it holds a character the vocabulary lacks and there is no <unk>."""
        ids: list[int] = []
        for ch in self.normalize(text):
            if ch == " ":
                ids.append(self.delimiter)
            elif ch in self.vocab:
                ids.append(self.vocab[ch])
            elif self.unk is not None:
                ids.append(self.unk)
            else:
                return None
        return ids

    def greedy_decode(self, ids: Sequence[int]) -> str:
        out: list[str] = []
        prev = -1
        for i in ids:
            if i != prev and i != self.blank:
                tok = self.id_to_token.get(int(i), "")
                out.append(" " if int(i) == self.delimiter else ("" if tok.startswith("<") else tok))
            prev = i
        return " ".join("".join(out).split())


def initial_samples(items: Sequence[Utterance]) -> int:
    """How many int16 samples to reserve for a manifest's audio: what its files hold as 16-bit mono 16 kHz wav
    (bytes on disk / 2), at most the machine's memory (pages never written cost nothing; the buffer grows when
    more is needed, and growing copies it, so a close estimate matters)."""
    total = 0
    for item in items:
        with contextlib.suppress(OSError):  # unreadable files are reported when read
            total += os.stat(item.audio).st_size
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform
        memory = total
    return max(1, min(total, memory) // 2)


def read_clips(items: Sequence[Utterance], workers: int) -> Iterator[tuple[Utterance, np.ndarray | Exception]]:
    """Each utterance with its int16 samples, in manifest order, decoded by a thread pool; a clip that cannot
    be read (missing, unreadable, undecodable) comes as the exception saying why."""

    def read(item: Utterance) -> np.ndarray | Exception:
        try:
            return read_audio_int16(item.audio)
        except (OSError, W2vlmError) as exc:
            return exc

    chunk = 256  # clips read ahead at most: bounds memory when reading outpaces copying
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for begin in range(0, len(items), chunk):
            part = items[begin : begin + chunk]
            yield from zip(part, pool.map(read, part), strict=True)


class AudioCache:
    """A manifest's decoded audio kept on disk: every clip's 16 kHz int16 samples one after another in
    ``<name>.int16``, and ``<name>.json`` with each clip's length (or why it could not be read).

    ``<name>`` is the manifest's file name, a hash of its absolute path, and a key hashing every audio file's
    path, size and modification time: a changed, added or removed file makes a new cache, and the superseded
    one of the same manifest is deleted. The samples are written under a temporary name and renamed, the index
    last, so a cache interrupted while being made is never used. Opening memory-maps the samples (copy on
    write): they live in the page cache, which the system can reclaim under memory pressure and read again,
    rather than in the training process's own memory, and a second run starts without decoding anything.
    """

    VERSION = 1

    def __init__(self, folder: Path, manifest: Path, items: Sequence[Utterance]) -> None:
        self.folder = Path(folder)
        self.manifest = Path(manifest)
        self.items = items
        self.prefix = f"{self.manifest.name}-{hashlib.sha256(os.path.abspath(manifest).encode()).hexdigest()[:8]}-"
        key = hashlib.sha256(f"w2vlm audio cache {self.VERSION} {SAMPLE_RATE}\n".encode())
        for item in items:
            try:
                st = os.stat(item.audio)
                stamp = f"{st.st_size} {st.st_mtime_ns}"
            except OSError:
                stamp = "unreadable"
            key.update(f"{os.path.abspath(item.audio)}\t{stamp}\n".encode())
        self.key = key.hexdigest()[:16]
        self.data_path = self.folder / f"{self.prefix}{self.key}.int16"
        self.index_path = self.folder / f"{self.prefix}{self.key}.json"

    def open_or_build(self, workers: int = 8) -> tuple[np.ndarray, list[tuple[int, int] | str]]:
        """The samples (memory-mapped) and, per utterance in manifest order, its ``(offset, length)`` in them
        or the reason it could not be read. Builds the cache first when there is no usable one."""
        opened = self._open()
        if opened is None:
            self._build(workers)
            opened = self._open()
            if opened is None:  # just written: only a concurrent writer or a vanishing disk gets here
                raise ManifestError(f"{self.index_path}: audio cache unreadable right after it was written")
        return opened

    def _open(self) -> tuple[np.ndarray, list[tuple[int, int] | str]] | None:
        try:
            index = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            logger.warning("%s: damaged audio cache index (%s); making it again", self.index_path, exc)
            return None
        entries: list[tuple[int, int] | str] = []
        total = 0
        try:
            if index["version"] != self.VERSION or index["key"] != self.key:
                raise ValueError(f"version {index['version']}, key {index['key']}: not this manifest's")
            errors = index["errors"]
            for i, n in enumerate(index["lengths"]):
                if n < 0:
                    entries.append(str(errors[str(i)]))
                else:
                    entries.append((total, int(n)))
                    total += int(n)
            if len(entries) != len(self.items):
                raise ValueError(f"{len(entries)} clips; the manifest has {len(self.items)}")
            size = self.data_path.stat().st_size
            if size != 2 * total:
                raise ValueError(f"{self.data_path.name} holds {size} bytes; the index expects {2 * total}")
        except (KeyError, TypeError, ValueError, OSError) as exc:
            logger.warning("%s: unusable audio cache (%s); making it again", self.index_path, exc)
            return None
        if total == 0:
            return np.zeros(0, dtype=np.int16), entries
        return np.memmap(self.data_path, dtype="<i2", mode="c", shape=(total,)), entries

    def _build(self, workers: int) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ManifestError(f"audio cache folder {self.folder}: cannot create it ({exc})") from exc
        for stale in self.folder.glob(f"{self.prefix}*"):  # this manifest's older cache, or a broken one
            with contextlib.suppress(OSError):
                stale.unlink()
                logger.info("removed superseded audio cache file %s", stale)
        tmp = self.data_path.with_name(f"{self.data_path.name}.{os.getpid()}.tmp")
        lengths: list[int] = []
        errors: dict[str, str] = {}
        t0 = time.time()
        try:
            with open(tmp, "wb") as f:
                for i, (_item, samples) in enumerate(read_clips(self.items, workers)):
                    if isinstance(samples, Exception):
                        lengths.append(-1)
                        errors[str(i)] = str(samples)
                    else:
                        f.write(np.ascontiguousarray(samples, dtype="<i2").tobytes())
                        lengths.append(len(samples))
            index = {"version": self.VERSION, "key": self.key, "manifest": os.path.abspath(self.manifest),
                     "lengths": lengths, "errors": errors}  # fmt: skip
            os.replace(tmp, self.data_path)
            tmp_index = self.index_path.with_name(f"{self.index_path.name}.{os.getpid()}.tmp")
            tmp_index.write_text(json.dumps(index))
            os.replace(tmp_index, self.index_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ManifestError(f"audio cache {self.data_path}: cannot write it ({exc})") from exc
        hours = sum(n for n in lengths if n > 0) / SAMPLE_RATE / 3600
        logger.info("%s: audio cache of %d clips (%.2f h) written to %s in %.0f s", self.manifest, len(lengths),
                    hours, self.data_path, time.time() - t0)  # fmt: skip


class AudioStore:
    """All utterances of a manifest as one int16 buffer with offsets, plus their label ids."""

    def __init__(self, audio: Any, offsets: np.ndarray, lengths: np.ndarray, labels: list[list[int]],
                 texts: list[str]) -> None:  # fmt: skip
        self.audio = audio  # torch int16 tensor (CPU or device)
        self.offsets = offsets
        self.lengths = lengths
        self.labels = labels
        self.texts = texts

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def hours(self) -> float:
        return float(self.lengths.sum()) / SAMPLE_RATE / 3600

    @classmethod
    def load(
        cls,
        manifest: Path,
        tokenizer: Tokenizer,
        frames_for: Callable[[int], int],
        max_duration_s: float,
        device: Any,
        workers: int = 8,
        cache_dir: Path | None = None,
    ) -> AudioStore:
        """Read a manifest's audio and labels. With ``cache_dir`` the decoded audio comes from (or first goes
        into) an :class:`AudioCache` file there and is memory-mapped instead of copied into process memory."""
        import torch

        items = read_manifest(manifest)
        kept_lengths: list[int] = []
        kept_offsets: list[int] = []
        labels: list[list[int]] = []
        texts: list[str] = []
        skipped = {
            "unreadable audio": 0,
            "too long": 0,
            "unknown characters": 0,
            "too short for its text": 0,
            "empty": 0,
        }
        first_unreadable = ""

        def keep(item: Utterance, samples: np.ndarray | Exception) -> bool:
            """Whether a clip is trained on; counts why not (and names the first unreadable file)."""
            nonlocal first_unreadable
            ids = tokenizer.encode(item.text)
            if isinstance(samples, Exception):
                skipped["unreadable audio"] += 1
                first_unreadable = first_unreadable or f"{item.audio}: {samples}"
            elif ids is None:
                skipped["unknown characters"] += 1
            elif len(samples) > max_duration_s * SAMPLE_RATE:
                skipped["too long"] += 1
            elif len(samples) < 400 or not ids:
                skipped["empty"] += 1
            elif frames_for(len(samples)) < len(ids) + sum(a == b for a, b in itertools.pairwise(ids)):
                skipped["too short for its text"] += 1
            else:
                kept_lengths.append(len(samples))
                labels.append(ids)
                texts.append(tokenizer.normalize(item.text))
                return True
            return False

        if cache_dir is not None:
            # Clips stay where the cache file has them (skipped ones included): nothing is copied.
            flat_np, entries = AudioCache(cache_dir, manifest, items).open_or_build(workers)
            for item, entry in zip(items, entries, strict=True):
                if isinstance(entry, str):
                    keep(item, AudioError(entry))
                elif keep(item, flat_np[entry[0] : entry[0] + entry[1]]):
                    kept_offsets.append(entry[0])
        else:
            # Each kept clip is copied into one flat buffer as soon as it is read, and freed: peak memory is
            # the audio once plus the clips in flight, even under an allocator that keeps freed pages (jemalloc
            # with decay off). The buffer's first size: initial_samples.
            flat_np = np.empty(initial_samples(items), dtype=np.int16)
            used = 0
            for item, samples in read_clips(items, workers):
                if keep(item, samples):
                    assert not isinstance(samples, Exception)
                    if used + len(samples) > len(flat_np):  # grow (rare: non-wav or resampled files)
                        grown = np.empty(max(len(flat_np) * 3 // 2, used + len(samples)), dtype=np.int16)
                        grown[:used] = flat_np[:used]
                        flat_np = grown
                    flat_np[used : used + len(samples)] = samples
                    kept_offsets.append(used)
                    used += len(samples)
            flat_np = flat_np[:used]  # a view: the unwritten tail was never paged in
        for why, n in skipped.items():
            if n:
                logger.warning("%s: skipped %d of %d utterances (%s)", manifest, n, len(items), why)
        if first_unreadable:
            logger.warning("%s: the first unreadable one: %s", manifest, first_unreadable)
        if not kept_lengths:
            first = f"; first unreadable: {first_unreadable}" if first_unreadable else ""
            raise ManifestError(f"{manifest}: no usable utterance (skipped: {skipped}){first}")
        lengths = np.array(kept_lengths, dtype=np.int64)
        offsets = np.array(kept_offsets, dtype=np.int64)
        flat = torch.from_numpy(flat_np)
        try:
            flat = flat.to(device)
        except RuntimeError as exc:  # not enough device memory: keep it in host memory
            logger.warning("audio stays in host memory (%s)", exc)
        store = cls(flat, offsets, lengths, labels, texts)
        logger.info("%s: %d utterances, %.2f h of audio", manifest, len(store), store.hours)
        return store

    def batches(self, batch_seconds: float, max_batch_size: int, rng: random.Random | None,
                multiple: int = 1, reserve: int = 0) -> list[list[int]]:  # fmt: skip
        """Index batches of similar length; at most batch_seconds of padded audio each. Shuffled if rng.
        ``reserve`` samples are counted with every clip (the edges ``collate`` may put around it: see
        :func:`edge_reserve`), so that a batch stays within the budget whatever edges it gets.

        With ``multiple`` > 1 every clip's length is rounded up to a multiple of that many samples and a batch
        holds clips of one rounded length only, as many as the budget allows: batches then come in a few
        repeating shapes (``collate`` pads to the same multiple), so a CPU reuses the kernels it made for a
        shape (oneDNN builds one per shape) instead of building new ones at nearly every step."""
        budget = batch_seconds * SAMPLE_RATE
        lengths = self.lengths + max(int(reserve), 0)
        out: list[list[int]] = []
        if multiple > 1:
            padded = -(-lengths // multiple) * multiple
            for width in np.unique(padded):
                members = np.flatnonzero(padded == width).tolist()
                if rng is not None:
                    rng.shuffle(members)
                size = max(1, min(max_batch_size, int(budget // int(width))))
                out.extend(members[i : i + size] for i in range(0, len(members), size))
            if rng is not None:
                rng.shuffle(out)
            return out
        order = np.argsort(lengths, kind="stable")
        if rng is not None:  # jitter the sort so that batches differ from epoch to epoch
            noise = np.array([rng.random() for _ in range(len(order))]) * 0.1 * SAMPLE_RATE
            order = np.argsort(lengths + noise, kind="stable")
        cur: list[int] = []
        cur_max = 0
        for idx in order:
            n = int(lengths[idx])
            if cur and (max(cur_max, n) * (len(cur) + 1) > budget or len(cur) >= max_batch_size):
                out.append(cur)
                cur, cur_max = [], 0
            cur.append(int(idx))
            cur_max = max(cur_max, n)
        if cur:
            out.append(cur)
        if rng is not None:
            rng.shuffle(out)
        return out

    def collate(self, idx: Sequence[int], device: Any, inputs: WaveformInputs | FbankInputs,
                extra: int = 0, multiple: int = 1, edges: Edges | None = None) -> tuple[Any, Any, Any]:  # fmt: skip
        """(model input, attention mask, padded labels with -100) on ``device``.

        ``extra`` samples of padding are added past the longest row (to train the padded frames); the width
        is then rounded up to a multiple of ``multiple`` samples. ``edges`` (from :func:`draw_edges`) puts another
        background before and after each clip.
        """
        import torch

        dev = self.audio.device
        clip = torch.as_tensor(self.lengths[list(idx)], device=dev)
        starts = torch.as_tensor(self.offsets[list(idx)], device=dev)
        lead = torch.zeros_like(clip) if edges is None else torch.as_tensor(edges.lead, device=dev)
        lens = clip + (0 if edges is None else lead + torch.as_tensor(edges.trail, device=dev))
        step = max(int(multiple), 1)
        width = -(-(int(lens.max()) + max(int(extra), 0)) // step) * step
        pos = torch.arange(width, device=dev)
        mask = pos[None, :] < lens[:, None]
        inside = pos[None, :] - lead[:, None]  # position in the clip
        in_clip = (inside >= 0) & (inside < clip[:, None])
        gather = (starts[:, None] + inside.clamp(min=0)).clamp_(max=self.audio.numel() - 1)
        x = self.audio[gather].float().mul_(1.0 / 32768.0) * in_clip
        if edges is not None:  # noise drawn for the edges' samples only
            at = (mask & ~in_clip).nonzero(as_tuple=True)
            gen = torch.Generator().manual_seed(edges.seed)
            level = torch.as_tensor(edges.level, dtype=x.dtype, device=dev)[at[0]]
            x[at] = torch.randn(at[0].numel(), generator=gen).to(dev) * level
        x, mask = inputs(x.to(device, non_blocking=True), lens.to(device))
        max_lab = max(len(self.labels[i]) for i in idx)
        labels = torch.full((len(idx), max_lab), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            labels[row, : len(self.labels[i])] = torch.as_tensor(self.labels[i])
        return x, mask, labels.to(device, non_blocking=True)


#: Longest background put before or after a clip (seconds), and the levels of a noise background (dBFS)
EDGE_MAX_S = 0.3
EDGE_LEVELS_DBFS = (-90.0, -50.0)


@dataclass(frozen=True)
class Edges:
    """Another background at the edges of each clip of a batch: samples ``lead`` before it and ``trail`` after
    it, of Gaussian noise of standard deviation ``level`` (0: digital silence), drawn with ``seed``."""

    lead: list[int]
    trail: list[int]
    level: list[float]
    seed: int


def draw_edges(rows: int, prob: float, rng: random.Random) -> Edges | None:
    """Edges for a batch of ``rows`` clips: each clip, with probability ``prob``, gets up to ``EDGE_MAX_S`` of a
    background unlike its own on each side — digital silence (a third of them) or noise at a level between
    ``EDGE_LEVELS_DBFS`` — as a voice activity detector's segment of a long recording has, where the clips were
    recorded apart or the gaps between them were edited to silence. A model trained without them is thrown by
    such edges (issue 30: 0.2 s of digital silence around a noisy clip, 1.37x its errors). None when no clip
    of the batch gets any."""
    if prob <= 0:
        return None
    most = int(EDGE_MAX_S * SAMPLE_RATE)
    lead, trail, level = [0] * rows, [0] * rows, [0.0] * rows
    for r in range(rows):
        if rng.random() < prob:
            lead[r], trail[r] = rng.randint(0, most), rng.randint(0, most)
            if rng.random() >= 1 / 3:
                level[r] = 10 ** (rng.uniform(*EDGE_LEVELS_DBFS) / 20)
    if not any(lead) and not any(trail):
        return None
    return Edges(lead, trail, level, rng.getrandbits(31))


def edge_reserve(prob: float) -> int:
    """Samples that :func:`draw_edges` may add to a clip at ``prob``: both edges at their longest, or 0."""
    return 2 * int(EDGE_MAX_S * SAMPLE_RATE) if prob > 0 else 0


def iter_manifest_texts(path: Path) -> Iterator[str]:
    """The texts of a manifest (for building an LM or a vocabulary)."""
    for utt in read_manifest(path):
        yield utt.text
