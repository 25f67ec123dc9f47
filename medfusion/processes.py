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
