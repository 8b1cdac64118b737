"""Decoding defaults, in one place (pyctcdecode's values): the decoder, the engine's ``DecodeConfig``, the
processor and ``w2vlm eval`` all take them from here, and the default thread count. Importing it needs neither
the native core nor torch."""

import os

DEFAULT_BEAM_WIDTH = 100
DEFAULT_PRUNE_LOGP = -10.0
DEFAULT_MIN_TOKEN_LOGP = -5.0
DEFAULT_HOTWORD_WEIGHT = 10.0
#: ``prune_history`` of ``decode_beams`` / ``decode_beams_batch`` (``decode`` prunes: True, as in pyctcdecode)
DEFAULT_PRUNE_BEAMS = False
# language model fusion (also the LM's weights when its attrs.json does not give them): weight of the LM,
# bonus per word, offset for unknown words, score <s> / </s>
DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.5
DEFAULT_UNK_SCORE_OFFSET = -10.0
DEFAULT_SCORE_BOUNDARY = True


def available_cpus() -> int:
    """CPUs this process may run on: the default number of threads."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
