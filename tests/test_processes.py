"""The workers' multiprocessing context survives the ways real programs fork."""

from __future__ import annotations

import multiprocessing
import os

from medfusion.processes import worker_context


def _start_a_worker() -> None:
    worker = worker_context().Process(target=os.getpid)
    worker.start()
    worker.join(300)
    if worker.exitcode != 0:
        raise SystemExit(f"worker exit code {worker.exitcode}")


def test_a_plain_fork_of_a_process_with_a_forkserver_can_start_workers() -> None:
    """A child forked after its parent started the forkserver used to fail (``ECHILD``) at its first
    worker: it inherited the parent's server record and ``waitpid`` refuses a sibling."""
    _start_a_worker()  # the parent's forkserver is running from here on
    child = multiprocessing.get_context("fork").Process(target=_start_a_worker)
    child.start()
    child.join(600)
    assert child.exitcode == 0
    _start_a_worker()  # and the parent's server still serves the parent
