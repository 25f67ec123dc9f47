"""The decoding workers run at a lower CPU priority than the main process's inference (the serial stage)."""

from __future__ import annotations

import os
from pathlib import Path

from medfusion.scoring.engine_local import WORKER_NICE
from tests.scoring.recording_source import NicenessRecordingSource
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, score_job


def test_workers_run_niced_and_the_main_process_keeps_its_priority(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    record = tmp_path / "niceness"
    record.mkdir()
    main_nice = os.nice(0)
    summary = score_job(
        demo_project,
        small_cohort,
        tmp_path / "out",
        source=NicenessRecordingSource(small_cohort.dicom, record_dir=record),
        batch_size=4,
        part_size=4,
    )
    seen = {path.name.split("-", 1)[0]: int(path.read_text()) for path in record.iterdir()}
    assert summary.scored > 0 and len(list(record.iterdir())) >= summary.scored
    assert str(os.getpid()) not in seen  # studies are materialized in the workers only
    assert WORKER_NICE > 0 and set(seen.values()) == {min(main_nice + WORKER_NICE, 19)}
    assert os.nice(0) == main_nice  # the job left this process's priority as it was
