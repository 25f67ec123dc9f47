"""The multiprocessing context of medfusion's worker processes (scoring workers, the header reader).

One context for all of them: on Linux a forkserver that has imported :mod:`medfusion.inference`, so
every worker forks from a clean process with torch, MONAI and the readers already imported (the
first user starts it; later ones fork in milliseconds); elsewhere ``spawn``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import sys

#: Modules the forkserver imports before forking workers.
PRELOAD = ["medfusion.inference"]


def worker_context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """forkserver on Linux (workers fork from a server that has imported :data:`PRELOAD`), else spawn."""
    if sys.platform.startswith("linux"):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")
