"""pyctcdecode's ``constants`` module under its names, so that ``from pyctcdecode.constants import ...`` keeps
working with the import prefix changed. The values are w2vlm's own defaults (:mod:`w2vlm.defaults`, the same
numbers as pyctcdecode's)."""

from w2vlm.decoder.language_model import AVG_TOKEN_LEN, LOG_BASE_CHANGE_FACTOR
from w2vlm.decoder.logits import MIN_TOKEN_CLIP_P
from w2vlm.defaults import (
    DEFAULT_ALPHA,
    DEFAULT_BEAM_WIDTH,
    DEFAULT_BETA,
    DEFAULT_HOTWORD_WEIGHT,
    DEFAULT_MIN_TOKEN_LOGP,
    DEFAULT_PRUNE_BEAMS,
    DEFAULT_PRUNE_LOGP,
)
from w2vlm.defaults import DEFAULT_SCORE_BOUNDARY as DEFAULT_SCORE_LM_BOUNDARY
from w2vlm.defaults import DEFAULT_UNK_SCORE_OFFSET as DEFAULT_UNK_LOGP_OFFSET

__all__ = [
    "AVG_TOKEN_LEN",
    "DEFAULT_ALPHA",
    "DEFAULT_BEAM_WIDTH",
    "DEFAULT_BETA",
    "DEFAULT_HOTWORD_WEIGHT",
    "DEFAULT_MIN_TOKEN_LOGP",
    "DEFAULT_PRUNE_BEAMS",
    "DEFAULT_PRUNE_LOGP",
    "DEFAULT_SCORE_LM_BOUNDARY",
    "DEFAULT_UNK_LOGP_OFFSET",
    "LOG_BASE_CHANGE_FACTOR",
    "MIN_TOKEN_CLIP_P",
]
