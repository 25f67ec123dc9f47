"""The stacking weights and their validation evidence go to MLflow with the run (a real sqlite store)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np

from medfusion.config import Config
from medfusion.models.calibration import Calibration
from medfusion.models.stacking import fit_stacking
from medfusion.tracking.runs import log_stacking
from medfusion.tracking.store import use_store
from medfusion.training.engine import TrainResult

LABELS = ["a", "b"]


def test_stacking_weights_and_evidence_are_logged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((120, 2)) < 0.4).astype(float)
    text = y * 2 + rng.normal(size=y.shape)
    image = rng.normal(size=y.shape)
    everyone = {m: np.ones(120, dtype=bool) for m in ("image", "text")}
    stacking = fit_stacking(0.5 * (text + image), {"image": image, "text": text}, everyone, y, LABELS)
    result = TrainResult(
        model_dir=tmp_path, best_epoch=1, history=[], val_metrics={}, test_metrics={}, thresholds=[0.5, 0.5],
        calibration=Calibration.identity(2), train_seconds=0.0, test_probabilities=np.zeros((0, 2)),
        test_targets=np.zeros((0, 2)), labels=LABELS, stacking=stacking,
        candidate_test_auroc_by_label={"fused": (0.7,), "image": (0.5,), "text": (0.8,), "stacked": (0.8,)},
    )  # fmt: skip
    use_store(f"sqlite:///{tmp_path / 'mlflow.db'}")  # this process only; the environment is left alone
    config = Config(name="t", labels=LABELS)
    experiment_id = mlflow.MlflowClient().create_experiment(f"stacking-{tmp_path.name}")  # of this store
    with mlflow.start_run(experiment_id=experiment_id) as run:
        log_stacking(config, result)
    logged = mlflow.get_run(run.info.run_id).data.metrics
    weights = stacking.by_label(tuple(LABELS))
    for label in LABELS:
        for candidate in ("fused", "image", "text"):
            assert logged[f"stack_w_{candidate}_{label}"] == weights[label][candidate]
        assert logged[f"stack_val_auroc_text_{label}"] > logged[f"stack_val_auroc_image_{label}"]
    assert weights["a"]["image"] == 0.0 and weights["b"]["image"] == 0.0
    assert logged["test_auroc_candidate_fused"] == 0.7 and logged["test_auroc_candidate_stacked"] == 0.8
    evidence = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/model_card/stacking.json")
    assert evidence["weights"] == weights and set(evidence["val_auroc"]) == {"fused", "image", "text", "stacked"}
