"""Pool tasks of several studies: how many a task carries (from the worker CPU per study measured so
far, within the window), and that a worker that dies or is stopped inside a multi-study task loses no
study: the crashing or stalled study is dead-lettered, its task-mates are scored."""

from __future__ import annotations

from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest

from medfusion.scoring import engine_local, read_results
from medfusion.scoring.ledger import Ledger
from medfusion.scoring.sources import FolderSource
from medfusion.scoring.tasks import TASK_CPU_S, TaskSize
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, score_job

from .crashing_source import CrashingSource, HangingSource

#: Studies per forward pass in the jobs below: window 2 * 16 + 2 * 2 = 36, tasks of at most 36 // 8 = 4.
BATCH = 16


def test_a_task_carries_one_study_until_the_cost_is_known() -> None:
    assert TaskSize(8).studies == 1


@pytest.mark.parametrize(
    ("cpu_ms", "most", "expected"),
    [
        (5.0, 32, 10),  # 50 ms of work in ten cheap studies
        (5.0, 8, 8),  # ... but never more than the window leaves each worker two tasks of
        (20.0, 32, 2),  # round(2.5)
        (30.0, 32, 2),
        (40.0, 32, 1),
        (1000.0, 32, 1),  # a costly study goes alone
        (0.0, 6, 6),  # free studies (all rejected at once): the largest task
    ],
)
def test_a_task_carries_about_the_target_cpu_time(cpu_ms: float, most: int, expected: int) -> None:
    size = TaskSize(most)
    for _ in range(3):
        size.record(cpu_ms / 1000)
    assert TASK_CPU_S == 0.05
    assert size.studies == expected


def test_tasks_shrink_when_the_studies_get_costlier() -> None:
    size = TaskSize(16)
    for _ in range(200):
        size.record(0.004)  # radiographs: 12 per task
    assert size.studies == 12
    for _ in range(20):
        size.record(0.5)  # then CT series
    assert size.studies == 1


@pytest.mark.parametrize(("window", "workers", "most"), [(68, 2, 8), (36, 2, 4), (20, 2, 2), (12, 2, 1), (10, 4, 1)])
def test_the_largest_task_leaves_each_worker_two_in_the_window(window: int, workers: int, most: int) -> None:
    assert TaskSize.for_window(window, workers).most == most


class RecordingPool(ProcessPoolExecutor):
    """The job's real process pool, noting the studies of each task submitted to it."""

    tasks: ClassVar[list[list[str]]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        if fn is engine_local._work:
            RecordingPool.tasks.append([ref.study_uid for ref, _ in args[0]])
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def recorded_tasks(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    RecordingPool.tasks = []
    monkeypatch.setattr(engine_local, "ProcessPoolExecutor", RecordingPool)
    return RecordingPool.tasks


def _late_study(cohort: Cohort) -> str:
    """A study two thirds down the job's order (discovery order), past the first window of one-study tasks."""
    refs = list(FolderSource(cohort.dicom).discover())
    return refs[2 * len(refs) // 3].study_uid


def _carried_with_others(tasks: list[list[str]], uid: str) -> bool:
    return any(uid in task and len(task) > 1 for task in tasks)


def test_a_crash_inside_a_task_of_several_studies_loses_none_of_them(
    demo_project: DemoProject, demo_cohort: Cohort, tmp_path: Path, recorded_tasks: list[list[str]]
) -> None:
    crash_uid = _late_study(demo_cohort)
    source = CrashingSource(demo_cohort.dicom, crash_uid=crash_uid)
    summary = score_job(demo_project, demo_cohort, tmp_path / "out", source=source, batch_size=BATCH, max_attempts=2)

    assert _carried_with_others(recorded_tasks, crash_uid)  # the case under test happened
    assert max(map(len, recorded_tasks)) <= 4 and len(recorded_tasks) < summary.discovered
    with Ledger(tmp_path / "out") as ledger:
        assert ledger.get(crash_uid)[1:3] == ("failed", 2)
        rows = {r["study_uid"]: r for r in ledger.dead_letters() if r["study_uid"]}
    assert rows[crash_uid]["stage"] == "worker-crash"
    assert {r["stage"] for uid, r in rows.items() if uid != crash_uid} <= {"decode"}  # the cohort's broken files
    task_mates = {uid for task in recorded_tasks if crash_uid in task for uid in task} - set(rows)
    results = read_results(tmp_path / "out")
    assert task_mates and task_mates <= set(results["study_uid"])  # rescored, each once
    assert results["study_uid"].is_unique and summary.pending == 0
    assert summary.scored + summary.failed == summary.discovered


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_stop_inside_a_task_of_several_studies_loses_none_of_them(
    demo_project: DemoProject, demo_cohort: Cohort, tmp_path: Path, recorded_tasks: list[list[str]]
) -> None:
    hang_uid = _late_study(demo_cohort)
    source = HangingSource(demo_cohort.dicom, file_timeout_s=None, hang_uid=hang_uid)
    summary = score_job(
        demo_project, demo_cohort, tmp_path / "out", source=source, batch_size=BATCH, file_timeout_s=3.0
    )

    assert _carried_with_others(recorded_tasks, hang_uid)
    with Ledger(tmp_path / "out") as ledger:
        rows = {r["study_uid"]: r for r in ledger.dead_letters() if r["study_uid"]}
    assert rows[hang_uid]["stage"] == "materialize"
    assert rows[hang_uid]["reason"].startswith("materialize exceeded 3 s on one file")
    assert {r["stage"] for uid, r in rows.items() if uid != hang_uid} <= {"decode"}
    task_mates = {uid for task in recorded_tasks if hang_uid in task for uid in task} - set(rows)
    results = read_results(tmp_path / "out")
    assert task_mates and task_mates <= set(results["study_uid"])
    assert results["study_uid"].is_unique and summary.pending == 0
    assert summary.scored + summary.failed == summary.discovered
