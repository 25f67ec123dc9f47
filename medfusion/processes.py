"""The multiprocessing context of medfusion's worker processes (scoring workers, the header reader).

One context for all of them: on Linux a forkserver that has imported :mod:`medfusion.inference`, so
every worker forks from a clean process with torch, MONAI and the readers already imported (the
first user starts it; later ones fork in milliseconds); elsewhere ``spawn``.

A process forked (plain ``fork``) from one that had started the forkserver inherits the parent's
record of it; the standard library then fails in the child (``waitpid`` on a process that is not its
child: ``ECHILD``). The child forgets the inherited record at fork time and starts its own server.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import sys
import threading

#: Modules the forkserver imports before forking workers.
PRELOAD = ["medfusion.inference"]


def worker_context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """forkserver on Linux (workers fork from a server that has imported :data:`PRELOAD`), else spawn."""
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _forget_inherited_forkserver() -> None:
    """In a freshly forked child: drop the parent's forkserver record (the parent keeps its server)."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        return
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)  # the child's copy only: the server lives while the parent's copy is open
    server._forkserver_alive_fd = None
    server._forkserver_address = None
    server._forkserver_pid = None
    server._lock = threading.Lock()  # another thread may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_forkserver)


#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap and stay with the process once freed (see :func:`retain_freed_memory`).
RETAIN_BLOCKS_BELOW = 64 * 1024 * 1024
#: Free memory at the top of the heap the process keeps instead of giving back to the kernel.
RETAIN_FREE_HEAP = 128 * 1024 * 1024

_RETAINED = False


def retain_freed_memory() -> bool:
    """Keep the memory a decode frees for the next one (glibc; a no-op elsewhere). For worker processes.

    A worker reads one file after another, and each read allocates and frees the same few large
    buffers (the file's bytes, the compressed frame, the decoded array and its float copies: a few MB
    to tens of MB). glibc serves a block above its mmap threshold with a fresh ``mmap`` and unmaps it
    on ``free`` (the threshold adapts upward to blocks freed, but not past 32 MB), and gives free
    memory at the top of the heap back to the kernel above its trim threshold: every page of the next
    file's buffers is then faulted in again. In a scoring worker on lossless JPEG 2000 chest
    radiographs that was ~1,500 minor page faults a study, 3.2-6.6 ms of system time (a fault costs
    a few µs under a hypervisor) out of 18-21 ms of CPU a study; with this setting, 3 faults and
    0.5-0.7 ms. Blocks up to :data:`RETAIN_BLOCKS_BELOW` now come from the heap and up to
    :data:`RETAIN_FREE_HEAP` of free heap is kept, so the next file reuses the pages the last one
    touched.

    The cost: a worker's resident memory stays at its largest file's peak (bounded by the pixel and
    byte bounds of the reader) instead of dropping between files. Larger blocks (a whole CT series'
    volume) are still mapped and returned as before.

    Returns:
        True when the settings took effect (glibc), False where there is no ``mallopt``.
    """
    global _RETAINED
    if _RETAINED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _RETAINED = bool(mallopt(_M_MMAP_THRESHOLD, RETAIN_BLOCKS_BELOW)) and bool(
        mallopt(_M_TRIM_THRESHOLD, RETAIN_FREE_HEAP)
    )
    return _RETAINED
