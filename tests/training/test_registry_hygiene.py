"""Ablation runs are tracked but not registered unless asked (``--register``): the registry holds candidates."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import mlflow
import pytest
from typer.testing import CliRunner

from medfusion.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _ablation() -> ModuleType:
    """``benchmarks/ablation.py`` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("ablation_benchmark", ROOT / "benchmarks" / "ablation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablation_registers_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    small = [
        f"project_dir={tmp_path}",
        "data.demo={n_studies: 48, image_size: 32, broken_files: 0}",
        "data.image_size=[32, 32]",
        "training.epochs=1",
        "text_encoder.tiny={vocab_size: 200}",
    ]
    args = ["--config", str(ROOT / "medfusion" / "configs" / "demo.yaml"), "--fusions", "late", "--seeds", "0"]
    for item in small:
        args += ["--set", item]
    ablation = _ablation()
    assert ablation.main(args) == 0
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.search_registered_models() == []
    experiment = client.get_experiment_by_name("medfusion-demo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    assert runs[0].data.tags["purpose"] == "ablation" and runs[0].data.tags["registered"] == "false"
    assert "test_macro_auroc" in runs[0].data.metrics

    assert ablation.main([*args, "--register"]) == 0
    versions = client.search_model_versions("name='medfusion'")
    assert len(versions) == 1
    assert client.get_model_version_by_alias("medfusion", "challenger").version == versions[0].version
    assert "late" in capsys.readouterr().out


def test_train_has_a_no_register_switch() -> None:
    help_text = " ".join(CliRunner().invoke(app, ["train", "--help"]).output.split())
    assert "--register" in help_text and "--no-register" in help_text
