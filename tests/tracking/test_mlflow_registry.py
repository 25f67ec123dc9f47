"""MLflow with a real sqlite store in a temp dir: tracked runs, pyfunc by alias in a fresh process,
gated promotion (first promotion, a worse challenger rejected, a better one promoted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import pytest

from medfusion.config import Config
from medfusion.ingest.manifest import manifest_hash, read_manifest
from medfusion.tracking.datasets import EVALUATION_SET, TRAINING_MANIFEST
from medfusion.tracking.promotion import CHALLENGER, CHAMPION, default_manifest_path, promote_challenger
from medfusion.tracking.store import connect, tracking_uri
from medfusion.workflow import TrainOutcome, train_and_register
from tests.support.demo import small_demo_config

pytestmark = pytest.mark.slow


def _config(project_dir: Path, **overrides: object) -> Config:
    """The small demo configuration on the full-size demo cohort (240 studies), with a stricter ECE gate."""
    cohort = {"n_studies": 240, "image_size": 128}
    return small_demo_config(project_dir, data__demo=cohort, promotion__max_ece=0.3, **overrides)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow_project")


@pytest.fixture(scope="module")
def text_only_run(project: Path) -> TrainOutcome:
    config = _config(project, fusion__name="text_only")
    return train_and_register(config)


def test_training_run_is_tracked(project: Path, text_only_run: TrainOutcome) -> None:
    config = _config(project)
    assert tracking_uri(config).startswith("sqlite:///") and (project / "mlflow.db").exists()
    client = connect(config)
    run = client.get_run(text_only_run.run_id)
    assert run.data.params["fusion.name"] == "text_only"
    assert len(run.data.tags["data_hash"]) == 64
    assert run.data.tags["git_commit"]
    assert 0.0 <= run.data.metrics["test_macro_auroc"] <= 1.0
    history = client.get_metric_history(text_only_run.run_id, "val_macro_auroc")
    assert sorted(m.step for m in history) == list(range(1, len(history) + 1)) and len(history) >= 2
    assert "val_calibrated_macro_auroc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(text_only_run.run_id, "plots")}
    assert {"plots/roc_curves.png", "plots/calibration.png", "plots/confusion_at_thresholds.png"} <= artifacts
    assert client.list_artifacts(text_only_run.run_id, "checkpoint")
    assert client.list_artifacts(text_only_run.run_id, "config")
    version = client.get_model_version_by_alias(config.tracking.registered_model, CHALLENGER)
    assert str(version.version) == text_only_run.version
    assert float(version.tags["test_macro_auroc"]) == pytest.approx(run.data.metrics["test_macro_auroc"], abs=1e-3)


def test_the_version_is_linked_to_its_logged_model_and_the_run_to_its_manifest(
    project: Path, text_only_run: TrainOutcome
) -> None:
    client = connect(_config(project))
    version = client.get_model_version("medfusion", text_only_run.version)
    model_id = text_only_run.model_id
    assert model_id.startswith("m-") and version.tags["logged_model_id"] == model_id
    logged = client.get_logged_model(model_id)
    assert logged.source_run_id == text_only_run.run_id
    assert len(version.tags["medfusion_source_sha256"]) == 64
    run = client.get_run(text_only_run.run_id)
    (inp,) = run.inputs.dataset_inputs
    tags = {t.key: t.value for t in inp.tags}
    assert inp.dataset.name == TRAINING_MANIFEST and tags["mlflow.data.context"] == "training"
    assert inp.dataset.digest == run.data.tags["data_hash"][:32]
    n = {s: int(run.data.params[f"data.n_{s}"]) for s in ("train", "val", "test")}
    assert json.loads(inp.dataset.profile)["num_rows"] == sum(n.values()) == int(tags["n_studies"])
    assert {tags[f"n_{s}"] for s in n} == {str(v) for v in n.values()}
    columns = {c["name"] for c in json.loads(inp.dataset.schema)["mlflow_colspec"]}
    assert columns == {"split", "n_images", "has_report", *(f"y_{label}" for label in _config(project).labels)}


@pytest.fixture(scope="module")
def promotions(project: Path, text_only_run: TrainOutcome) -> dict[str, Any]:
    """First promotion (no champion), then a worse challenger, then a better one."""
    config = _config(project)
    needs_approval = _config(project, promotion__require_approval=True)
    unapproved = promote_challenger(needs_approval)
    first = promote_challenger(needs_approval, approved_by="Dr. Reviewer")
    worse = train_and_register(_config(project, fusion__name="image_only", training__epochs=1))
    rejected = promote_challenger(config)
    better = train_and_register(_config(project, fusion__name="hybrid"))
    promoted = promote_challenger(config)
    return {
        "unapproved": unapproved,
        "first": first,
        "worse": worse,
        "rejected": rejected,
        "better": better,
        "promoted": promoted,
    }


def test_first_promotion_without_champion(promotions: dict[str, Any]) -> None:
    first = promotions["first"]
    assert first.promoted, first.failures
    assert first.champion is None


def test_required_approval_is_a_gate_and_is_recorded(project: Path, promotions: dict[str, Any]) -> None:
    unapproved, first = promotions["unapproved"], promotions["first"]
    assert not unapproved.promoted and len(unapproved.failures) == 1 and "approval" in unapproved.failures[0]
    client = connect(_config(project))
    refused = client.get_run(unapproved.run_id)
    assert refused.data.tags["decision"] == "rejected" and refused.data.tags["approved_by"] == ""
    evidence = client.get_run(first.run_id)
    assert evidence.data.tags["approved_by"] == "Dr. Reviewer" and evidence.data.tags["decision"] == "promoted"
    version = client.get_model_version("medfusion", first.challenger.version)
    assert version.tags["approved_by"] == "Dr. Reviewer" and version.tags["promoted_by_run"] == first.run_id
    assert evidence.data.tags["challenger_model_id"] == version.tags["logged_model_id"]
    gates = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=first.run_id, artifact_path="gates.json", tracking_uri=tracking_uri(_config(project))
            )
        ).read_text()
    )
    assert gates["approval"] == {"required": True, "approved_by": "Dr. Reviewer", "passed": True}
    assert gates["max_ece"]["value"] == pytest.approx(first.challenger.ece) and gates["max_ece"]["passed"]
    assert gates["above_chance"]["passed"] and "auroc_margin" not in gates
    (inp,) = evidence.inputs.dataset_inputs
    eval_set = read_manifest(_config(project).project_dir / "eval_set.parquet")
    assert inp.dataset.name == EVALUATION_SET and inp.dataset.digest == manifest_hash(eval_set)[:32]
    assert {t.key: t.value for t in inp.tags}["n_studies"] == str(len(eval_set))


def test_worse_challenger_is_rejected_with_evidence(
    project: Path, text_only_run: TrainOutcome, promotions: dict[str, Any]
) -> None:
    rejected = promotions["rejected"]
    assert not rejected.promoted
    assert any("macro AUROC" in f or "drops" in f for f in rejected.failures)
    client = connect(_config(project))
    evidence = client.get_run(rejected.run_id)
    assert evidence.data.tags["decision"] == "rejected"
    assert evidence.data.params["challenger_version"] == promotions["worse"].version
    assert evidence.data.params["champion_version"] == text_only_run.version


def test_better_challenger_is_promoted(project: Path, promotions: dict[str, Any]) -> None:
    promoted = promotions["promoted"]
    assert promoted.promoted, promoted.failures
    assert promoted.challenger.macro_auroc > promoted.champion.macro_auroc
    config = _config(project)
    champion = connect(config).get_model_version_by_alias(config.tracking.registered_model, CHAMPION)
    assert str(champion.version) == promotions["better"].version


def test_ci_gain_gate_rejects_a_copy_of_the_champion(project: Path, promotions: dict[str, Any]) -> None:
    """The champion's own model folder, registered again, is not measurably better: its gain is 0 [0, 0]."""
    from medfusion.tracking.pyfunc import log_pyfunc
    from medfusion.workflow import EXAMPLE_INPUT

    promoted = promotions["promoted"]
    assert promoted.gain is not None and promoted.gain.ci_low <= promoted.gain.macro_auroc <= promoted.gain.ci_high
    client = connect(_config(project))
    logged = client.get_run(promoted.run_id).data.metrics
    assert logged["gain_macro_auroc"] == pytest.approx(promoted.gain.macro_auroc)
    config = _config(project, promotion__require_ci_gain=True)
    name = config.tracking.registered_model
    with mlflow.start_run(run_name="champion-copy"):
        copy = log_pyfunc(
            promotions["better"].result.model_dir, labels=config.labels, registered_model=name,
            example_row=EXAMPLE_INPUT,
        )  # fmt: skip
    decision = promote_challenger(config, version=str(copy.registered_model_version))
    assert not decision.promoted
    assert decision.gain is not None and decision.gain.macro_auroc == 0 and decision.gain.ci_high == 0
    assert any("95 % CI lower bound +0.000 is not above 0" in f for f in decision.failures), decision.failures
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == promotions["better"].version
    assert client.get_run(decision.run_id).data.params["gate_require_ci_gain"] == "True"


def test_champion_scores_new_studies_in_a_fresh_process(project: Path, promotions: dict[str, Any]) -> None:
    config = _config(project)
    name = config.tracking.registered_model
    manifest = default_manifest_path(config)
    script = f"""
import json, mlflow, pandas as pd
from medfusion.ingest.manifest import read_manifest
df = read_manifest({str(manifest)!r}).head(3)
rows = pd.DataFrame({{"image_paths": [list(p) for p in df["image_paths"]], "report_text": list(df["report_text"])}})
rows.loc[1, "report_text"] = ""          # missing report
rows.at[2, "image_paths"] = []           # missing image
out = mlflow.pyfunc.load_model("models:/{name}@champion").predict(rows)
print(json.dumps(out.to_dict(orient="records")))
"""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(config)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=project, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    champion = mlflow.MlflowClient(tracking_uri(config)).get_model_version_by_alias(name, CHAMPION)
    assert len(rows) == 3
    for row in rows:
        assert row["error"] == ""
        assert row["model_version"] == str(champion.version)
        for label in config.labels:
            assert 0.0 <= row[f"prob_{label}"] <= 1.0
            assert isinstance(row[f"decision_{label}"], bool)
            assert row[f"decision_{label}"] == (row[f"prob_{label}"] >= row[f"threshold_{label}"])
        assert row["status"] == "UNVERIFIED" and row["model_id"] and row["model_name"] == name
