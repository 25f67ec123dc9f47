"""Pointing MLflow at a store is this process's business: neither the store nor the experiment leaks
into the environment, where a child process (a scoring worker, the review server, a user's script)
would pick up an experiment id of another store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from medfusion.tracking.store import connect
from tests.support.synthetic import fast_config


def test_connect_leaves_no_store_or_experiment_for_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    config = fast_config().model_copy(update={"project_dir": tmp_path / "a"})
    connect(config)
    with mlflow.start_run() as run:
        assert run.info.experiment_id != "0"  # the config's experiment, in this process
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ and "MLFLOW_TRACKING_URI" not in os.environ
    other = f"sqlite:///{tmp_path / 'other.db'}"  # a child using its own store, with the parent's environment
    script = f"import mlflow; mlflow.set_tracking_uri({other!r}); mlflow.start_run(); mlflow.end_run(); print('ok')"
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ))
    assert child.returncode == 0 and child.stdout.strip().endswith("ok"), child.stderr[-2000:]
