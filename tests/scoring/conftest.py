"""Fixtures of the scoring tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scoring.orthanc_server import OrthancServer, running_orthanc


# --- Orthanc PACS (DICOMweb helper; logic in tests/scoring/orthanc_server.py) ----------------------
@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An empty Orthanc with DICOMweb and basic auth on loopback (skipped when not installed, failed
    when ``MEDFUSION_REQUIRE_SYSTEM_TESTS=1``); stopped at the end of the session."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


# --- Scoring jobs (scoring helper) -------------------------------------------------------------------
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from medfusion.data.studies import scan_dicom_folder
from medfusion.scoring.job import ScoreOptions, ScoreSummary, run_score
from tests.conftest import DemoProject


@dataclass(frozen=True)
class Cohort:
    """A folder of DICOM files and its reports folder."""

    dicom: Path
    reports: Path


@dataclass(frozen=True)
class ScoredJob:
    """A finished scoring job."""

    cohort: Cohort
    out: Path
    summary: ScoreSummary


def score_job(project: DemoProject, cohort: Cohort, out: Path, **options: object) -> ScoreSummary:
    """Score ``cohort`` with the demo champion (1 torch thread here; 2 workers unless told)."""
    torch.set_num_threads(1)
    settings: dict = {"workers": 2, "batch_size": 8, "part_size": 16, "tracking_uri": project.tracking_uri}
    settings.update(options)
    return run_score(
        ScoreOptions(source=str(cohort.dicom), reports=cohort.reports, model=project.model_uri, out_dir=out, **settings)
    )


def copy_cohort(cohort: Cohort, dest: Path, n_studies: int | None = None) -> Cohort:
    """Copy the files of the first ``n_studies`` studies (all when None), keeping their relative paths."""
    scan = scan_dicom_folder(cohort.dicom)
    uids = sorted(scan.studies)[:n_studies]
    for uid in uids:
        for path in scan.studies[uid].paths:
            target = dest / "dicom" / path.relative_to(cohort.dicom)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    shutil.copytree(cohort.reports, dest / "reports")
    return Cohort(dest / "dicom", dest / "reports")


@pytest.fixture(scope="session")
def demo_cohort(demo_project: DemoProject) -> Cohort:
    """The demo project's cohort (read-only)."""
    return Cohort(demo_project.cohort_dir / "dicom", demo_project.cohort_dir / "reports")


@pytest.fixture(scope="session")
def small_cohort(demo_cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """A copy of 12 demo studies (tests may copy it again to break files)."""
    return copy_cohort(demo_cohort, tmp_path_factory.mktemp("small_cohort"), 12)


@pytest.fixture(scope="session")
def scored_demo(demo_project: DemoProject, demo_cohort: Cohort, tmp_path_factory: pytest.TempPathFactory) -> ScoredJob:
    """The whole demo cohort scored by the local engine, with FHIR output."""
    out = tmp_path_factory.mktemp("scored_demo") / "out"
    return ScoredJob(demo_cohort, out, score_job(demo_project, demo_cohort, out, fhir=True))
