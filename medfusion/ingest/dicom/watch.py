"""A per-context hook called whenever a DICOM reader starts on a file.

Inside :func:`watch_files`, every reader of :mod:`medfusion.ingest.dicom` reports each file it starts
on (scoring workers send it to a watchdog that bounds the wall time spent on one file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

_FILE_HOOK: ContextVar[Callable[[Path], None] | None] = ContextVar("medfusion_dicom_file_hook", default=None)


@contextmanager
def watch_files(callback: Callable[[Path], None]) -> Iterator[None]:
    """Call ``callback(path)`` whenever a reader of this module starts on a file, inside the block.

    Every header read and every decode of a file is one call
    (:func:`~medfusion.ingest.dicom.series.read_series` calls it once per slice for each). The callback
    runs in the reading thread and must be quick.
    """
    token = _FILE_HOOK.set(callback)
    try:
        yield
    finally:
        _FILE_HOOK.reset(token)


def report_start(path: Path) -> None:
    """Tell the callback of the enclosing :func:`watch_files` block (if any) that a read of ``path`` starts."""
    hook = _FILE_HOOK.get()
    if hook is not None:
        hook(path)
