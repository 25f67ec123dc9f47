"""Local engine: one row per study, results equal Predictor.predict, dead letters, summary, re-runs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from medfusion.errors import MedfusionError
from medfusion.inference import STATUS, Predictor, StudyInput
from medfusion.ingest.dicom.studies import scan_dicom_folder
from medfusion.models.model import WEIGHTS_FILE
from medfusion.scoring import read_results, study_inputs
from medfusion.scoring.ledger import Ledger
from tests.support.demo import DemoProject
from tests.support.scoring import Cohort, ScoredJob, copy_cohort, score_job

LABELS = ["nodule", "cardiomegaly", "effusion", "fracture", "pneumonia"]


def test_one_row_per_study_with_valid_probabilities(scored_demo: ScoredJob, demo_project: DemoProject) -> None:
    results = read_results(scored_demo.out)
    scan = scan_dicom_folder(scored_demo.cohort.dicom)
    with Ledger(scored_demo.out) as ledger:
        failed = {r["study_uid"] for r in ledger.dead_letters() if r["study_uid"]}
    assert set(results["study_uid"]) == set(scan.studies) - failed
    assert len(results) == len(scan.studies) - 2 and results["study_uid"].is_unique
    for label in LABELS:
        probs = results[f"prob_{label}"].to_numpy()
        assert np.all((probs >= 0) & (probs <= 1))
        np.testing.assert_array_equal(results[f"decision_{label}"], probs >= results[f"threshold_{label}"])
    assert set(results["model_name"]) == {"medfusion"} and set(results["model_version"]) == {"1"}
    assert set(results["status"]) == {STATUS}
    assert pd.to_datetime(results["scored_at"], utc=True).notna().all()


def test_results_equal_predictor_on_the_manifest(scored_demo: ScoredJob, demo_project: DemoProject) -> None:
    """Same images and the same linked report as the data layer's manifest -> the same probabilities."""
    manifest = pd.read_parquet(demo_project.manifest_path)
    predictor = Predictor.from_dir(demo_project.model_dir, device="cpu", batch_size=16)
    predictions = predictor.predict([StudyInput(list(r.image_paths), r.report_text) for r in manifest.itertuples()])
    results = read_results(scored_demo.out).set_index("study_uid")
    assert set(manifest["study_uid"]) <= set(results.index)
    got = results.loc[manifest["study_uid"], [f"prob_{label}" for label in predictor.labels]].to_numpy()
    expected = np.stack([p.probabilities for p in predictions])  # (N, L)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_broken_demo_files_are_dead_lettered_with_file_and_reason(
    scored_demo: ScoredJob,
) -> None:
    with Ledger(scored_demo.out) as ledger:
        rows = ledger.dead_letters()
    by_reason = {r["reason"].split(":")[0]: r for r in rows}
    assert by_reason["no pixel data"]["stage"] == "decode" and by_reason["no pixel data"]["file"].endswith("NOPIXELS1")
    truncated = by_reason["truncated pixel data"]
    assert truncated["study_uid"] and truncated["file"].endswith("partial_transfer_0.dcm")
    not_dicom = [r for r in rows if r["stage"] == "discover"]
    assert len(not_dicom) == 1 and not_dicom[0]["study_uid"] is None and "not a DICOM file" in not_dicom[0]["reason"]


def test_summary_counts(scored_demo: ScoredJob, demo_project: DemoProject) -> None:
    saved = json.loads((scored_demo.out / "summary.json").read_text())
    assert saved["scored"] == saved["scored_this_run"] == len(read_results(scored_demo.out)) == 160
    assert saved["failed"] == 2 and saved["pending"] == 0 and saved["rejected_files"] == 1
    assert sum(n for reasons in saved["dead_letters"].values() for n in reasons.values()) == 3
    assert saved["report_rejections"] == [] and "reports" not in saved["dead_letters"]  # the demo reports are valid
    # provenance from independent sources: the registry's champion, and the id of the trained weights
    # (``<config name>-<first 16 hex of their SHA-256>``)
    uri = demo_project.tracking_uri
    registry = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = registry.get_model_version_by_alias(demo_project.config.tracking.registered_model, "champion")
    digest = hashlib.sha256((demo_project.model_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert saved["model"] == {
        "name": champion.name,
        "version": str(champion.version),
        "id": f"{demo_project.config.name}-{digest[:16]}",
        "uri": demo_project.model_uri,
    }
    assert saved["studies_per_s"] > 0


def test_study_inputs_give_back_paths_and_report(scored_demo: ScoredJob, demo_project: DemoProject) -> None:
    manifest = pd.read_parquet(demo_project.manifest_path).set_index("study_uid")
    uid = manifest.index[0]
    inputs = study_inputs(scored_demo.out, uid)
    assert sorted(inputs.image_paths) == sorted(manifest.loc[uid, "image_paths"])
    assert inputs.report_text == manifest.loc[uid, "report_text"]
    with pytest.raises(MedfusionError, match="not part of this scoring job"):
        study_inputs(scored_demo.out, "1.2.3")


def test_rerun_scores_nothing_and_another_model_is_refused(
    scored_demo: ScoredJob, demo_project: DemoProject, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(scored_demo.out, out)
    before = read_results(out)
    again = score_job(demo_project, scored_demo.cohort, out)
    assert again.scored_this_run == 0 and again.scored == 160
    pd.testing.assert_frame_equal(read_results(out), before)
    with pytest.raises(MedfusionError, match="another model"):
        _score_with_local_folder(demo_project, scored_demo.cohort, out)


def _score_with_local_folder(project: DemoProject, cohort: Cohort, out: Path) -> None:
    from medfusion.scoring.job import ScoreOptions, run_score

    run_score(
        ScoreOptions(
            source=str(cohort.dicom),
            reports=cohort.reports,
            model=str(project.model_dir),
            out_dir=out,
        )
    )


def test_unreadable_image_and_garbage_files_are_dead_lettered(
    demo_project: DemoProject, small_cohort: Cohort, tmp_path: Path
) -> None:
    cohort = copy_cohort(small_cohort, tmp_path / "broken")
    scan = scan_dicom_folder(cohort.dicom)
    victim_uid = sorted(scan.studies)[3]
    victim = scan.studies[victim_uid].paths[0]
    data = victim.read_bytes()
    victim.write_bytes(data[:-100])  # header intact, pixel data cut short
    (cohort.dicom / "notes.dcm").write_text("not an image")
    summary = score_job(demo_project, cohort, tmp_path / "out", workers=1)
    results = read_results(tmp_path / "out")
    assert victim_uid not in set(results["study_uid"]) and len(results) == len(scan.studies) - 1
    with Ledger(tmp_path / "out") as ledger:
        rows = {r["file"]: r for r in ledger.dead_letters()}
        assert ledger.get(victim_uid)[1] == "failed"
    assert rows[str(victim)]["study_uid"] == victim_uid and rows[str(victim)]["stage"] == "decode"
    assert rows[str(victim)]["reason"]
    assert rows[str(cohort.dicom / "notes.dcm")]["stage"] == "discover"
    assert summary.failed == 1 and summary.rejected_files == 1 and summary.scored == len(scan.studies) - 1
