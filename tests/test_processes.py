"""The workers' multiprocessing context survives the ways real programs fork."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest

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


_FAULTS = """
import ctypes, ctypes.util, resource, sys
from medfusion.processes import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 40 * 1024 * 1024  # above the 32 MB where glibc's adaptive mmap threshold stops

def one_file():  # a worker's per-file pattern: allocate a large buffer, fill it, free it
    buf = libc.malloc(size)
    libc.memset(buf, 1, size)
    libc.free(buf)

for _ in range(3):  # warm-up: first touches of the heap are faults either way
    one_file()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    one_file()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
def test_retained_memory_serves_the_next_buffer_without_page_faults() -> None:
    """The mechanism behind the scoring workers' setting: a freed 40 MB buffer's pages are reused.

    Without it glibc maps each such buffer afresh and unmaps it on free: ~10,000 page faults a
    buffer with 4 KB pages (fewer where the kernel hands out huge pages for it). With it the pages
    stay with the process and the next buffer faults none.
    """
    faults = {
        mode: int(
            subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True).stdout
        )
        for mode in ("default", "retain")
    }
    assert faults["default"] > 20 * 10  # 20 buffers, each 10,240 pages (or 20 huge pages) faulted in
    assert faults["retain"] < 20
