"""Fixtures of the scoring tests: Orthanc, and the demo cohort scored by the demo champion (helpers:
:mod:`tests.support.scoring`, :mod:`tests.scoring.orthanc_server`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scoring.orthanc_server import OrthancServer, running_orthanc
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, ScoredJob, copy_cohort, score_job


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An empty Orthanc with DICOMweb and basic auth on loopback (skipped when not installed, failed
    when ``MEDFUSION_REQUIRE_SYSTEM_TESTS=1``); stopped at the end of the session."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


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
