"""Scoring jobs against the demo champion: cohorts copied for a test, and jobs run on them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.scoring.job import ScoreOptions, ScoreSummary, run_score
from tests.support.demo import DemoProject


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


def score_job(project: DemoProject, cohort: Cohort, out: Path, **options: Any) -> ScoreSummary:
    """Score ``cohort`` with the demo champion (1 torch thread here; 2 workers unless told).

    Args:
        project: The demo project (its champion and MLflow store).
        cohort: The studies.
        out: The job's output folder.
        **options: :class:`~medfusion.scoring.job.ScoreOptions` settings over the defaults (``source``: a
            :class:`~medfusion.scoring.sources.StudySource` over the cohort instead of its folder).
    """
    torch.set_num_threads(1)
    settings: dict[str, Any] = {
        "source": str(cohort.dicom),
        "workers": 2,
        "batch_size": 8,
        "part_size": 16,
        "tracking_uri": project.tracking_uri,
    }
    settings.update(options)
    return run_score(ScoreOptions(reports=cohort.reports, model=project.model_uri, out_dir=out, **settings))


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
