"""A site's own data through the command line: build-manifest with an exact split, then train on it.

The cohort is the generated demo cohort's raw files (DICOM folder, FHIR reports, label CSV), used as a
site would use its export; the run is shrunk to CPU seconds with ``--set``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.config import DemoCohortConfig
from medfusion.datasets.demo.cohort import DemoCohortResult, generate_demo_cohort

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "medfusion" / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> DemoCohortResult:
    """48 generated studies: ``dicom/``, ``reports/``, ``labels.csv`` (read-only)."""
    root = tmp_path_factory.mktemp("own") / "cohort"
    return generate_demo_cohort(root, DemoCohortConfig(n_studies=48, image_size=64, broken_files=0), progress=False)


@pytest.fixture(scope="module")
def manifest(cohort: DemoCohortResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The exact, stratified split's manifest built by ``medfusion build-manifest``, and its output."""
    out = tmp_path_factory.mktemp("manifest") / "manifest.parquet"
    args = ["build-manifest", "--dicom", str(cohort.root / "dicom"), "--reports", str(cohort.root / "reports")]
    args += ["--labels", str(cohort.root / "labels.csv"), "--out", str(out), "-c", DEMO]
    args += ["--set", "training.split=exact", "--set", "training.split_stratify=true", "--set", "training.seed=5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_build_manifest_exact_split_and_its_achieved_sizes(manifest: tuple[Path, str]) -> None:
    path, output = manifest
    table = pd.read_parquet(path)
    patients = table.groupby("split")["patient_pseudonym"].nunique()
    n = int(table["patient_pseudonym"].nunique())
    asked = {"train": 0.6, "val": 0.2, "test": 0.2}
    for split, fraction in asked.items():
        assert abs(patients[split] - fraction * n) < 1
        shown = re.search(rf"{split} (\d+) patients \(([\d.]+) %, (\d+) studies\)", output)
        assert shown is not None, output
        assert int(shown[1]) == patients[split]
        assert float(shown[2]) == pytest.approx(100 * patients[split] / n, abs=0.05)
        assert int(shown[3]) == int((table["split"] == split).sum())
    assert "splits (exact)" in output
    assert (table.groupby("patient_pseudonym")["split"].nunique() == 1).all()


#: Shrinks medfusion/configs/demo.yaml to CPU seconds (the data is the manifest above, not the demo cohort).
SMALL = [
    "training.epochs=1",
    "data.image_size=[32, 32]",
    "training.batch_size=8",
    "text_encoder.tiny={vocab_size: 300}",
]


@dataclass(frozen=True)
class Run:
    """A finished ``medfusion train`` on the manifest: its printed summary and MLflow run."""

    output: str
    run: Any
    client: Any
    project: Path


@pytest.fixture(scope="module")
def own_run(manifest: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Run:
    import mlflow

    project = tmp_path_factory.mktemp("project")
    args = ["train", "-c", DEMO, "--set", f"data.manifest={manifest[0]}", "--set", f"project_dir={project}"]
    for item in [*SMALL, "training.threads=2"]:
        args += ["--set", item]
    args += ["--threads", "1"]  # wins over the config
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_id = re.search(r"run ([0-9a-f]{32})", result.output)
    assert run_id is not None, result.output
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return Run(result.output, client.get_run(run_id[1]), client, project)


def test_the_run_logs_the_achieved_split_sizes(own_run: Run, manifest: tuple[Path, str]) -> None:
    table = pd.read_parquet(manifest[0])
    n = table["patient_pseudonym"].nunique()
    params = own_run.run.data.params
    for split in ("train", "val", "test"):
        patients = table.loc[table["split"] == split, "patient_pseudonym"].nunique()
        assert int(params[f"split.{split}.patients"]) == patients
        assert float(params[f"split.{split}.patient_fraction"]) == pytest.approx(patients / n, abs=1e-4)


def test_threads_flag_reaches_the_run(own_run: Run) -> None:
    assert own_run.run.data.params["training.threads"] == "1"


def test_test_predictions_are_a_parquet_artifact_without_identifiers(
    own_run: Run, manifest: tuple[Path, str], tmp_path: Path
) -> None:
    from medfusion.metrics import evaluate
    from medfusion.privacy import pseudonym
    from medfusion.tracking.runs import TEST_PREDICTIONS_ARTIFACT

    local = own_run.client.download_artifacts(own_run.run.info.run_id, TEST_PREDICTIONS_ARTIFACT, str(tmp_path))
    table = pd.read_parquet(local)
    labels = ["nodule", "cardiomegaly", "effusion", "fracture", "pneumonia"]
    assert list(table.columns) == ["study_pseudonym"] + [
        f"{kind}_{label}" for label in labels for kind in ("prob", "decision", "y")
    ]
    source = pd.read_parquet(manifest[0])
    test = source[source["split"] == "test"]
    assert len(table) == len(test)
    # keyed by study pseudonym: joins back to the manifest, and no UID or patient key is in the file
    by_key = {pseudonym(uid, kind="study"): uid for uid in test["study_uid"]}
    assert set(table["study_pseudonym"]) == set(by_key)
    cells = set(map(str, table.to_numpy().ravel()))
    for column in ("study_uid", "patient_pseudonym", "accession_pseudonym"):
        assert not cells & set(map(str, source[column].dropna())), column
    targets = test.set_index("study_uid").loc[[by_key[k] for k in table["study_pseudonym"]]]
    for label in labels:
        np.testing.assert_array_equal(table[f"y_{label}"].to_numpy(), targets[f"y_{label}"].to_numpy())
    # the run's test metrics come back from the file alone (no re-scoring)
    probs = table[[f"prob_{label}" for label in labels]].to_numpy()
    ys = table[[f"y_{label}" for label in labels]].to_numpy()
    metrics = own_run.run.data.metrics
    recomputed = evaluate(probs, ys, labels, [float(p) for p in _thresholds(own_run, tmp_path, labels)]).metrics
    assert recomputed["macro_auroc"] == pytest.approx(metrics["test_macro_auroc"], abs=1e-9)
    assert recomputed["ece"] == pytest.approx(metrics["test_ece"], abs=1e-9)
    for label in labels:
        if f"test_f1_{label}" in metrics:
            assert recomputed[f"f1_{label}"] == pytest.approx(metrics[f"test_f1_{label}"], abs=1e-9)


def _thresholds(own_run: Run, tmp_path: Path, labels: list[str]) -> list[float]:
    import json

    path = own_run.client.download_artifacts(own_run.run.info.run_id, "model_card/thresholds.json", str(tmp_path))
    values = json.loads(Path(path).read_text())
    return [values[label] for label in labels]


def test_summary_prints_per_label_metrics(own_run: Run) -> None:
    metrics = own_run.run.data.metrics
    rows = {}
    for line in own_run.output.splitlines():
        cells = line.split()
        if len(cells) == 6 and cells[0] in {"nodule", "cardiomegaly", "effusion", "fracture", "pneumonia"}:
            rows[cells[0]] = cells[1:]
    assert set(rows) == {"nodule", "cardiomegaly", "effusion", "fracture", "pneumonia"}, own_run.output
    assert "AUROC" in own_run.output and "AUPRC" in own_run.output and "ECE" in own_run.output
    for label, (auroc, auprc, f1, _threshold, ece) in rows.items():
        for name, shown in (("auroc", auroc), ("auprc", auprc), ("f1", f1), ("ece", ece)):
            key = f"test_{name}_{label}"
            if key in metrics:
                assert float(shown) == pytest.approx(metrics[key], abs=5e-4 + 1e-9), (label, name)  # half a digit
            else:
                assert shown == "-"
    assert "test predictions: artifact predictions/test_predictions.parquet" in own_run.output


def test_train_registers_a_challenger_by_default(own_run: Run) -> None:
    versions = own_run.client.search_model_versions("name='medfusion'")
    assert [v.run_id for v in versions] == [own_run.run.info.run_id]
    assert "registered medfusion v1 as @challenger" in own_run.output
