"""A site's own data through the command line: build-manifest with an exact split, then train on it.

The cohort is the generated demo cohort's raw files (DICOM folder, FHIR reports, label CSV), used as a
site would use its export; the run is shrunk to CPU seconds with ``--set``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.config import DemoCohortConfig
from medfusion.datasets.demo.cohort import DemoCohortResult, generate_demo_cohort

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "demo.yaml")


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


#: Shrinks configs/demo.yaml to CPU seconds (the data is the manifest above, not the demo cohort).
SMALL = [
    "training.epochs=2",
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
def trained(manifest: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Run:
    import mlflow

    project = tmp_path_factory.mktemp("project")
    args = ["train", "-c", DEMO, "--set", f"data.manifest={manifest[0]}", "--set", f"project_dir={project}"]
    for item in SMALL:
        args += ["--set", item]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_id = re.search(r"run ([0-9a-f]{32})", result.output)
    assert run_id is not None, result.output
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return Run(result.output, client.get_run(run_id[1]), client, project)


def test_the_run_logs_the_achieved_split_sizes(trained: Run, manifest: tuple[Path, str]) -> None:
    table = pd.read_parquet(manifest[0])
    n = table["patient_pseudonym"].nunique()
    params = trained.run.data.params
    for split in ("train", "val", "test"):
        patients = table.loc[table["split"] == split, "patient_pseudonym"].nunique()
        assert int(params[f"split.{split}.patients"]) == patients
        assert float(params[f"split.{split}.patient_fraction"]) == pytest.approx(patients / n, abs=1e-4)
