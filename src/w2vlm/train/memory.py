"""Resident memory: measuring it and handing the allocator's free pages back (``--max-memory``)."""

from __future__ import annotations

import logging

logger = logging.getLogger("w2vlm.train")


def resident_memory_gb() -> float | None:
    """This process's resident anonymous memory in GB (heap and the like; not memory-mapped files, which the
    system can reclaim), from ``/proc/self/status``; None where that is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return None


def release_free_memory() -> str | None:
    """Hand the allocator's free pages back to the system: all of jemalloc's arenas when the process runs under
    jemalloc (``LD_PRELOAD``; needed when its page decay is off), else glibc's ``malloc_trim``. Returns which
    allocator did it, or None when neither is there."""
    import ctypes

    try:
        process = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: no handle for the process itself (Windows)
        return None
    mallctl = getattr(process, "mallctl", None)
    if mallctl is not None:
        mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        all_arenas = 4096  # MALLCTL_ARENAS_ALL
        if mallctl(f"arena.{all_arenas}.purge".encode(), None, None, None, 0) == 0:
            return "jemalloc"
    malloc_trim = getattr(process, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim(0)
        return "glibc"
    return None


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
