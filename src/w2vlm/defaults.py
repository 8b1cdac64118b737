"""Decoding defaults, in one place (pyctcdecode's values): the decoder, the engine's ``DecodeConfig``, the
processor and ``w2vlm eval`` all take them from here. A module of constants only, so that importing it needs
neither the native core nor torch."""

DEFAULT_BEAM_WIDTH = 100
DEFAULT_PRUNE_LOGP = -10.0
DEFAULT_MIN_TOKEN_LOGP = -5.0
DEFAULT_HOTWORD_WEIGHT = 10.0
