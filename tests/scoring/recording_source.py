"""A folder source that records, in each worker process, its process id and CPU niceness when it
materializes a study. Importable by the pool's worker processes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medfusion.scoring.sources import FolderSource, StudyRef


@dataclass
class NicenessRecordingSource(FolderSource):
    record_dir: Path = Path()

    def materialize(self, ref: StudyRef, workdir: Path) -> list[Path]:
        (Path(self.record_dir) / f"{os.getpid()}-{ref.study_uid}").write_text(str(os.nice(0)))
        return super().materialize(ref, workdir)
