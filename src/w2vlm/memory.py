"""This process's resident memory, and the allocator: handing its free pages back to the system (training's
``--max-memory``, build-lm's budget) and keeping them for reuse while the engine runs (the commands); and the
native modules' report of objects still alive at exit."""

from __future__ import annotations

import os
import sys

#: glibc's ``mallopt`` settings for the engine's batch processes (the commands that transcribe or evaluate, the
#: Ray workers): blocks up to 32 MiB come from the heap instead of fresh ``mmap`` pages, and up to 64 MiB of free
#: memory stays in each arena (the most glibc's own adaptive thresholds go to, set from the start). glibc's
#: defaults hand the large short-lived buffers of features and the VAD back to the system on every free, and the
#: page faults of getting them again took ~1/6 of the CPU side's time. Not for a long-running server: each of its
#: many threads' arenas may keep that much.
ALLOCATOR_SETTINGS = {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 64 << 20}
_MALLOPT_PARAMS = {"M_TRIM_THRESHOLD": -1, "M_MMAP_THRESHOLD": -3}  # glibc's <malloc.h>


def silence_leak_report() -> None:
    """Turn off the native modules' report of their objects still alive when the process exits (nanobind's; on by
    default), for exits where objects are kept alive on purpose: the commands freeze theirs, and a call still
    running in a daemon thread when a script ends keeps its engine."""
    for name in ("w2vlm._core", "w2vlm._lmbuild"):
        module = sys.modules.get(name)
        if module is not None:
            module.set_leak_warnings(False)


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


def _process_library() -> object | None:
    """The C library's symbols as this process sees them (an ``LD_PRELOAD``-ed allocator's first), or None where
    there is no handle for the process itself (Windows)."""
    import ctypes

    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):
        return None


def release_free_memory() -> str | None:
    """Hand the allocator's free pages back to the system: all of jemalloc's arenas when the process runs under
    jemalloc (``LD_PRELOAD``; needed when its page decay is off), else glibc's ``malloc_trim``. Returns which
    allocator did it, or None when neither is there."""
    import ctypes

    process = _process_library()
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


def tune_allocator() -> bool:
    """Apply :data:`ALLOCATOR_SETTINGS` to glibc's allocator in this process (a process-wide setting: the
    commands call it; a program of its own may). Does nothing, and returns False, where the C library is not
    glibc, the process runs under another allocator (jemalloc, tcmalloc via ``LD_PRELOAD``) or the environment
    already sets glibc's allocator."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc" or _allocator_set_by_user():
        return False
    if "LD_PRELOAD" in os.environ and "malloc" in os.environ["LD_PRELOAD"]:  # jemalloc, tcmalloc, mimalloc
        return False
    process = _process_library()
    mallopt = getattr(process, "mallopt", None)
    if mallopt is None or getattr(process, "mallctl", None) is not None:  # no glibc, or jemalloc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(_MALLOPT_PARAMS[name], value) == 1 for name, value in ALLOCATOR_SETTINGS.items())


def _allocator_set_by_user() -> bool:
    """Whether the environment sets glibc's allocator: a ``MALLOC_*`` variable, or ``glibc.malloc.*`` tunables."""
    return any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc." in os.environ.get(
        "GLIBC_TUNABLES", ""
    )
