"""Folder sources whose worker process dies (``os._exit``) when it reaches one study, a hard crash as
a segfaulting codec would cause, or never comes back from it, as a stuck network mount would.
Importable by the pool's worker processes."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from medfusion.scoring.sources import FolderSource, StudyRef


@dataclass
class CrashingSource(FolderSource):
    """Dies on ``crash_uid``; with ``record_workdir``, first copies the study into its work folder (as a
    DICOMweb retrieval does) and appends that folder's path to the ``record_workdir`` file."""

    crash_uid: str = ""
    record_workdir: str = ""

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        if ref.study_uid == self.crash_uid:
            if self.record_workdir:
                workdir.mkdir()
                for i, path in enumerate(ref.locator):
                    (workdir / f"{i}.dcm").write_bytes(Path(path).read_bytes())
                with open(self.record_workdir, "a") as log:
                    log.write(f"{workdir}\n")
            os._exit(70)  # no exception, no cleanup: the process is gone
        return super().materialize(ref, workdir)


@dataclass
class HangingSource(FolderSource):
    hang_uid: str = ""

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        if ref.study_uid == self.hang_uid:
            time.sleep(3600)  # a stalled read: only the per-file time bound ends it
        return super().materialize(ref, workdir)
