"""Resident memory: measuring it and handing the allocator's free pages back (``--max-memory``)."""

from __future__ import annotations

import logging

from w2vlm.memory import release_free_memory, resident_memory_gb

__all__ = ["release_after_loading", "release_free_memory", "resident_memory_gb", "within_memory"]

logger = logging.getLogger("w2vlm.train")


def release_after_loading() -> None:
    """Decoding the audio (and writing an audio cache) frees several GB of arrays before the first step; an
    allocator that keeps free pages (jemalloc with decay off) would hold them for the whole run, crowding out
    the page cache that the memory-mapped audio lives in. Hand them back once and say how much that was."""
    held = resident_memory_gb()
    allocator = release_free_memory()
    after = resident_memory_gb()
    if held is not None and after is not None and held - after >= 0.05:
        logger.info("after loading the data: %s gave %.1f GB of free memory back (%.1f GB resident)",
                    allocator or "no known allocator", held - after, after)  # fmt: skip


def within_memory(limit_gb: float, stop_message: bool = True) -> bool:
    """False when resident memory stays over ``limit_gb`` even after the allocator gave its free pages back."""
    held = resident_memory_gb()
    if held is None or held <= limit_gb:
        return True
    allocator = release_free_memory()
    after = resident_memory_gb() or 0.0
    logger.info("resident memory %.1f GB over --max-memory %.1f GB: %s gave %.1f GB back",
                held, limit_gb, allocator or "no known allocator", held - after)  # fmt: skip
    if after <= limit_gb:
        return True
    if stop_message:
        logger.warning("resident memory still %.1f GB (--max-memory %.1f GB): stopping after saving a checkpoint; "
                       "run the same command with --resume to go on", after, limit_gb)  # fmt: skip
    return False
