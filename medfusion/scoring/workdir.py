"""Where a scoring job's workers put a study's retrieved files: ``OUT/.work``, owned by the job.

A source that writes (DICOMweb retrieval) materializes each study into a folder of its own, which the
worker deletes when the study is done. A worker killed mid-study (a codec crash, the per-file time
bound, ``kill -9`` of the whole job, the out-of-memory killer) deletes nothing, and the files it had
retrieved are patient data. So every study folder lies inside the job's work folder,
``OUT/.work`` (mode 0700), which belongs to the job through the output folder's lock
(:class:`~medfusion.scoring.lock.OutputLock`):

- the job removes it when it ends, however it ends short of being killed;
- a job started on the same output folder (the resume of a killed job) removes what a killed run
  left there before its workers start, under the same lock, so no running job's files are touched.

Inside it each worker process makes one private folder, once (:func:`study_workdir`), so a folder
source, which writes nothing, costs no folder creation and removal per study. A Ray worker on another
node, where the output folder is not mounted, falls back to a private folder in its own temporary
directory.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: The job's work folder, inside its output folder.
WORK_DIR = ".work"

_PRIVATE: dict[tuple[int, str | None], Path] = {}  # (pid, work root) -> this process's folder in it


@contextlib.contextmanager
def job_workdir(out_dir: Path) -> Iterator[Path]:
    """The job's work folder, empty and private (0700) for the ``with`` block, removed after it.

    Call it with the output folder locked: what an earlier, killed run left is removed first.

    Args:
        out_dir: The job's (locked) output folder.

    Yields:
        ``out_dir / WORK_DIR``.
    """
    work = Path(out_dir) / WORK_DIR
    if work.exists() or work.is_symlink():
        left = sum(1 for p in work.rglob("*") if p.is_file()) if work.is_dir() and not work.is_symlink() else 0
        _remove(work)
        log.warning("removed the work folder of an interrupted run (%d file(s) it had retrieved)", left)
    work.mkdir(mode=0o700)
    try:
        yield work
    finally:
        _remove(work)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def study_workdir(work_root: str | None) -> Path:
    """A fresh path for one study's files, not created: a source that writes creates it.

    Args:
        work_root: The job's work folder (:func:`job_workdir`); None, or a folder this machine does
            not have (a Ray worker on another node), means the system's temporary directory.

    Returns:
        ``PRIVATE/study-<random>``, where ``PRIVATE`` is this process's private (0700) folder inside
        ``work_root``, made at the first call (again if the folder went) and removed when the process
        exits normally.
    """
    key = (os.getpid(), work_root)
    if key not in _PRIVATE or not _PRIVATE[key].is_dir():  # a long-lived (Ray) worker outlives a job's folder
        try:
            private = tempfile.mkdtemp(prefix="medfusion-work-", dir=work_root)
        except FileNotFoundError:  # the job's folder is not on this node
            private = tempfile.mkdtemp(prefix="medfusion-work-")
        _PRIVATE[key] = Path(private)
        multiprocessing.util.Finalize(None, shutil.rmtree, (private, True), exitpriority=0)
    return _PRIVATE[key] / f"study-{uuid.uuid4().hex}"
