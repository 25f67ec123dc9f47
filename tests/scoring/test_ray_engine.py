"""--engine ray (Ray Data on a local Ray): the same results as the local engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfusion.scoring import read_results
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, ScoredJob, score_job


@pytest.mark.slow
def test_ray_engine_matches_local_engine(
    demo_project: DemoProject,
    small_cohort: Cohort,
    scored_demo: ScoredJob,
    tmp_path: Path,
) -> None:
    """12 studies on Ray vs the same files (copied) scored by the local engine in ``scored_demo``."""
    pytest.importorskip("ray")
    ray_run = score_job(demo_project, small_cohort, tmp_path / "ray", engine="ray", workers=1)
    b = read_results(tmp_path / "ray")
    a = read_results(scored_demo.out).set_index("study_uid").loc[b["study_uid"]].reset_index()
    assert ray_run.scored == len(b) == 12 and ray_run.failed == 0
    assert list(a["study_uid"]) == list(b["study_uid"])
    probs = [c for c in a.columns if c.startswith("prob_")]
    np.testing.assert_allclose(a[probs].to_numpy(), b[probs].to_numpy(), atol=1e-5)
    decisions = [c for c in a.columns if c.startswith("decision_")]
    assert (a[decisions].to_numpy() == b[decisions].to_numpy()).all()
