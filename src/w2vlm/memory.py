"""This process's resident memory, and handing the allocator's free pages back to the system (training's
``--max-memory``, build-lm's budget)."""

from __future__ import annotations


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status``; None where that is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def resident_memory_gb() -> float | None:
    """This process's resident anonymous memory in GB (heap and the like; not memory-mapped files, which the
    system can reclaim), from ``/proc/self/status``; None where that is not available."""
    kb = _status_kb("RssAnon")
    return None if kb is None else kb * 1024 / 1e9


def resident_bytes() -> int | None:
    """All of this process's resident memory (what ``ps`` and ``time -v`` report: anonymous memory, libraries
    and mapped files) in bytes; None where that is not available."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


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
