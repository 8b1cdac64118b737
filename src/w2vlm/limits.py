"""Limits on what w2vlm accepts: the one place where their defaults live.

Every input size that costs memory or time in proportion to a number the caller (or a file) states is
bounded here, so that a damaged file or a hostile request is refused with a clear error
(a :class:`~w2vlm.errors.W2vlmError`) instead of exhausting the machine. The defaults are far above what
normal use reaches; change one by assigning the module attribute before the call that checks it, e.g.::

    import w2vlm.limits
    w2vlm.limits.MAX_BEAM_WIDTH = 20_000

Sizes read from language model files (n-gram counts, table sizes, offsets) need no setting: they are checked
against the length of the file itself.
"""

from __future__ import annotations

#: Largest ``beam_width`` (cost per frame grows with it: 100 is pyctcdecode's default, 1,000 is already slow).
MAX_BEAM_WIDTH = 4096
#: Largest ``num_threads`` for batch decoding.
MAX_THREADS = 1024
#: Largest number of hotword phrases in one call.
MAX_HOTWORDS = 100_000
#: Largest total size of the hotword phrases of one call, in characters.
MAX_HOTWORD_CHARS = 1_000_000
#: Largest magnitude of a fusion weight: ``alpha``, ``beta``, ``unk_score_offset``, hotword weights (values
#: beyond it only overflow the 32-bit floats the decoder keeps some scores in).
MAX_ABS_WEIGHT = 1e6
#: Largest language model file (ARPA, gzipped ARPA once decompressed, or KenLM binary), in bytes.
MAX_LM_FILE_BYTES = 64 * 1024**3
#: Longest audio :func:`w2vlm.audio.load_audio` decodes into memory, in seconds (``iter_audio_blocks`` streams
#: and has no limit).
MAX_AUDIO_DURATION_S = 6 * 3600.0
#: Longest audio the server accepts in one request, in seconds (``ServerSettings.max_audio_s``).
SERVER_MAX_AUDIO_DURATION_S = 2 * 3600.0
#: Longest ``prompt`` of a server request, in characters, and most hotwords taken from it.
SERVER_MAX_PROMPT_CHARS = 4000
SERVER_MAX_HOTWORDS = 200
#: Largest audio file read from a path, in bytes.
MAX_AUDIO_FILE_BYTES = 8 * 1024**3
#: Most channels an audio input may have.
MAX_AUDIO_CHANNELS = 64
#: Sampling rates accepted for audio inputs, in Hz (a header claiming 1 Hz would be upsampled 16,000-fold).
MIN_AUDIO_SAMPLE_RATE = 1000
MAX_AUDIO_SAMPLE_RATE = 768_000


def as_dict() -> dict[str, float | int]:
    """The current limits, by name (for logs and ``w2vlm serve``'s status)."""
    return {k: v for k, v in globals().items() if k.isupper() and isinstance(v, (int, float))}


#: Most values one alpha/beta/... range of ``w2vlm tune`` (or ``add-lm --dev``) may give ("0:2:0.001" gives 2,001),
#: and most settings one search may decode the dev set with (a grid's product, or ``--random N``).
MAX_TUNE_VALUES = 100_000
MAX_TUNE_SETTINGS = 10_000
#: Longest stretch ``w2vlm visualize`` shows or pads to, in seconds (its figures are of seconds, not hours).
MAX_VISUALIZE_S = 600.0
