"""What the model is given of each input: its speech segments (voice activity detection, for long inputs) or
its windows (the whole input when short; overlapping windows, stitched afterwards, when long).

:class:`InputReader` decides per input, reads it (a long local file block by block, never whole) and yields
``(start sample, audio, right context, is_last, speech probability)`` units; the engine's reading workers
run one reader for all inputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from w2vlm.engine.config import DEFAULT_MAX_SEGMENT_S, EngineConfig
from w2vlm.engine.model_runner import MIN_WINDOW_SAMPLES
from w2vlm.engine.windows import chunk_sizes, cut_windows
from w2vlm.errors import AudioError

logger = logging.getLogger("w2vlm.engine")

#: Seconds read at a time from a long file cut into speech segments.
READ_BLOCK_S = 30.0


class InputInfo:
    """What reading one input found: its length in samples, whether it was cut into speech segments, and the
    seconds the voice activity detector took (wall clock, and CPU of the reading thread)."""

    def __init__(self) -> None:
        self.samples = 0
        self.segmented = False
        self.vad_seconds = 0.0
        self.vad_cpu_seconds = 0.0


class InputReader:
    """Inputs → units for the model, at ``sampling_rate`` with ``ratio`` samples per output frame.
    ``model_max_segment_s``: the longest speech segment the model was made for, when it says (its config's
    ``max_segment_s``)."""

    def __init__(self, sampling_rate: int, ratio: int, model_max_segment_s: float | None = None) -> None:
        self.sampling_rate = sampling_rate
        self.ratio = ratio
        self.model_max_segment_s = model_max_segment_s
        self._warned = False

    def vad_params(self, config: EngineConfig) -> Any:
        """The voice activity detector's settings for ``config``."""
        from w2vlm.engine.vad import VadParams

        longest = config.max_segment_s or self.model_max_segment_s or DEFAULT_MAX_SEGMENT_S
        return VadParams(
            config.vad_threshold, config.vad_min_speech_s, config.vad_min_silence_s, config.vad_pad_s, longest
        )

    def vad_model(self) -> Any:
        """The loaded voice activity detector (raises :class:`~w2vlm.engine.silero.VadUnavailable` without the
        ``vad`` extra)."""
        from w2vlm.engine.silero import SileroVad

        return SileroVad.shared()

    def uses_vad(self, duration_s: float, config: EngineConfig) -> bool:
        """Whether an input of ``duration_s`` seconds is cut into speech segments under ``config``."""
        if config.vad is not None:
            return config.vad
        if config.chunk_length_s is not None or duration_s <= config.vad_above_s:
            return False
        from w2vlm.engine.silero import available

        if available():
            return True
        if not self._warned:
            self._warned = True
            logger.warning(
                "voice activity detection is off: the 'vad' extra is not installed (pip install 'w2vlm[vad]'); "
                "long inputs are cut into fixed windows"
            )
        return False

    def units(
        self, item: Any, name: str, config: EngineConfig, allow_urls: bool = False, info: InputInfo | None = None
    ) -> Iterator[tuple[int, np.ndarray, int, bool, float | None]]:
        """One input's units: ``(start, audio, right context, is_last, speech probability)`` — its speech
        segments (with their probability) when it uses voice activity detection, else its windows (probability
        None). A speech segment's right context is the audio past a forced cut it shares with the next segment
        (:data:`~w2vlm.engine.vad.CUT_OVERLAP_S`; 0 for one that ends in silence). ``info`` is filled in as the
        input is read."""
        from w2vlm.audio import audio_duration, iter_audio_blocks, load_audio

        info = info if info is not None else InputInfo()
        sr = self.sampling_rate
        duration = audio_duration(item) if is_local_file(item) else None
        audio = None
        if duration is None:
            audio = load_audio(item, sr, allow_urls=allow_urls, label=name)
            duration = audio.size / sr
        if not self.uses_vad(duration, config):
            for start, window, right, last in self.windows(item, name, config, allow_urls, audio):
                info.samples = max(info.samples, start + window.size)
                yield start, window, right, last, None
            return
        from w2vlm.engine.vad import SpeechFinder

        info.segmented = True
        finder = SpeechFinder(self.vad_model(), sr, self.vad_params(config))
        blocks: Any = [audio] if audio is not None else iter_audio_blocks(item, sr, block_s=READ_BLOCK_S)
        try:
            for speech in finder.segments(blocks):
                if speech.audio.size >= MIN_WINDOW_SAMPLES:
                    yield speech.start, speech.audio, speech.right, False, speech.speech_prob
        finally:
            info.samples = finder.samples
            info.vad_seconds = finder.seconds_vad
            info.vad_cpu_seconds = finder.cpu_seconds_vad

    def windows(
        self,
        item: Any,
        name: str,
        config: EngineConfig,
        allow_urls: bool = False,
        audio: np.ndarray | None = None,
    ) -> Iterator[tuple[int, np.ndarray, int, bool]]:
        """``(start, audio, right context, is_last)`` windows of one input (the whole input when short);
        ``audio``: the input already loaded."""
        from w2vlm.audio import audio_duration, iter_audio_blocks, load_audio

        sr = self.sampling_rate
        chunk_s = config.chunk_length_s
        local = audio is None and is_local_file(item)
        duration = audio_duration(item) if local else None
        if chunk_s is None and duration is not None and duration > config.max_whole_s:
            chunk_s = config.window_s
        if chunk_s is not None and local:
            blocks: Any = iter_audio_blocks(item, sr, block_s=max(float(chunk_s), 1.0))
        else:
            if audio is None:
                audio = load_audio(item, sr, allow_urls=allow_urls, label=name)
            if chunk_s is None and audio.size > config.max_whole_s * sr:
                chunk_s = config.window_s
            if chunk_s is None:
                if audio.size < MIN_WINDOW_SAMPLES:
                    raise AudioError(
                        f"{name}: audio is too short ({audio.size} samples at {sr} Hz); the model needs at least "
                        f"{MIN_WINDOW_SAMPLES} samples"
                    )
                yield 0, audio, 0, True
                return
            blocks = [audio]
        chunk, left, right = chunk_sizes(float(chunk_s), config.stride_length_s, sr, self.ratio)
        yield from cut_windows(blocks, chunk, left, right, self.ratio, name)


def is_local_file(item: Any) -> bool:
    """Whether ``item`` names a file on this machine (not a URL)."""
    from w2vlm.audio import is_url

    if not isinstance(item, (str, os.PathLike)) or is_url(os.fspath(item)):
        return False
    try:
        return Path(item).expanduser().is_file()
    except (OSError, ValueError):
        return False


__all__ = ["READ_BLOCK_S", "InputInfo", "InputReader", "is_local_file"]
