"""A folder source whose worker process dies (``os._exit``) when it reaches one study: a hard crash,
as a segfaulting codec would cause. Importable by the pool's worker processes."""

from __future__ import annotations

import os
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
