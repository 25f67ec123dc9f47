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
    crash_uid: str = ""

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        if ref.study_uid == self.crash_uid:
            os._exit(70)  # no exception, no cleanup: the process is gone
        return super().materialize(ref, workdir)


@dataclass
class HangingSource(FolderSource):
    hang_uid: str = ""

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        if ref.study_uid == self.hang_uid:
            time.sleep(3600)  # a stalled read: only the per-file time bound ends it
        return super().materialize(ref, workdir)
