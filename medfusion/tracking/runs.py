"""What every training run logs to MLflow: context (config, data hash, code version, packages),
per-epoch metrics, final metrics, plots and the checkpoint. Nothing patient-identifying is logged:
the manifest itself stays on disk, only its hash goes to MLflow.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import yaml

from medfusion.config import Config
from medfusion.privacy import pseudonym
from medfusion.results import decide
from medfusion.tracking.plots import calibration_figure, confusion_figure, roc_figure

log = logging.getLogger(__name__)

#: Where a run's test-split predictions go among its MLflow artifacts.
TEST_PREDICTIONS_ARTIFACT = "predictions/test_predictions.parquet"

TRACKED_PACKAGES = (
    "medfusion",
    "torch",
    "monai",
    "transformers",
    "tokenizers",
    "pydicom",
    "fhir.resources",
    "mlflow",
    "numpy",
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit(path: Path | None = None) -> str:
    """Commit of the source tree (with ``-dirty`` when it has uncommitted changes), or ``unknown``."""
    cwd = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's behaviour."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def log_run_context(
    config: Config,
    data_hash: str,
    n_studies: dict[str, int],
    split_sizes: dict[str, dict[str, float]] | None = None,
) -> None:
    """Log the resolved config, params, data hash, git commit and package versions to the active run.

    Args:
        config: The run's configuration.
        data_hash: The manifest's hash.
        n_studies: Studies per split.
        split_sizes: Achieved split sizes (:func:`medfusion.ingest.manifest.split_sizes`), logged as
            ``split.<split>.patients`` and ``split.<split>.patient_fraction``.
    """
    resolved = config.model_dump(mode="json")
    mlflow.log_params({k: str(v)[:6000] for k, v in flatten(resolved).items()})
    mlflow.log_params({f"data.n_{split}": n for split, n in n_studies.items()})
    for split, sizes in (split_sizes or {}).items():
        mlflow.log_params({f"split.{split}.patients": int(sizes["patients"])})
        mlflow.log_params({f"split.{split}.patient_fraction": sizes["patient_fraction"]})
    mlflow.set_tags({"data_hash": data_hash, "git_commit": git_commit(), "fusion": config.fusion.name})
    mlflow.log_text(yaml.safe_dump(resolved, sort_keys=False), "config/resolved_config.yaml")
    mlflow.log_dict(package_versions(), "environment/package_versions.json")


class MlflowEpochLogger:
    """Training callback: per-epoch metrics to the active MLflow run (step = epoch)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
        mlflow.log_metrics(finite, step=epoch)

    def on_train_end(self, result: Any) -> None:
        """Nothing to do: final results are logged by :func:`log_training_result`."""


def log_stacking(config: Config, result: Any) -> None:
    """The stacking weights per label and their validation evidence (``model_card/stacking.json``, metrics).

    Metrics: ``stack_w_<candidate>_<label>`` (the chosen weight), ``stack_val_auroc_<candidate>_<label>``
    (candidate ``fused``/``image``/``text`` alone, and ``stacked``) and ``test_auroc_candidate_<candidate>``
    (test macro AUROC of each candidate alone: what the fallback changed), ``stack_val_loss_<candidate>_<label>``
    (the validation score the choice compared; candidates also ``stacked`` and ``minimum``) and
    ``stack_val_loss_se_<label>`` (the standard error of the one-standard-error rule).
    """
    stacking = getattr(result, "stacking", None)
    if stacking is None:
        return
    labels = tuple(config.labels)
    weights = stacking.by_label(labels)
    metrics = {f"stack_w_{c}_{n}": w for n, row in weights.items() for c, w in row.items()}
    for c, values in stacking.val_auroc.items():
        metrics.update({f"stack_val_auroc_{c}_{n}": v for n, v in zip(labels, values, strict=True) if v is not None})
    metrics.update({f"test_auroc_candidate_{c}": v for c, v in result.candidate_test_auroc.items() if np.isfinite(v)})
    mlflow.log_metrics(metrics)
    for c, values in stacking.val_loss.items():
        metrics.update({f"stack_val_loss_{c}_{n}": v for n, v in zip(labels, values, strict=True) if v is not None})
    metrics.update(
        {f"stack_val_loss_se_{n}": v for n, v in zip(labels, stacking.val_loss_se, strict=False) if v is not None}
    )
    evidence = {
        "weights": weights,
        "prior": stacking.prior,
        "rule": "one-standard-error: the sparsest grid point within one SE of the minimum validation score",
        "val_auroc": stacking.val_auroc,
        "val_loss": stacking.val_loss,
        "val_loss_se": stacking.val_loss_se,
    }
    mlflow.log_dict(evidence, "model_card/stacking.json")


def log_training_result(config: Config, result: Any) -> None:
    """Final metrics, thresholds, plots and the checkpoint of a finished training run."""
    mlflow.log_metrics({f"val_calibrated_{k}": float(v) for k, v in result.val_metrics.items() if np.isfinite(v)})
    mlflow.log_metrics({f"test_{k}": float(v) for k, v in result.test_metrics.items() if np.isfinite(v)})
    ci = result.test_ci  # 95 % patient-level bootstrap interval of each test metric
    mlflow.log_metrics({f"test_{k}_ci_low": low for k, (low, _) in ci.items() if k in result.test_metrics})
    mlflow.log_metrics({f"test_{k}_ci_high": high for k, (_, high) in ci.items() if k in result.test_metrics})
    mlflow.log_metrics({"best_epoch": result.best_epoch, "train_seconds": result.train_seconds})
    calibration = result.calibration.by_label(config.labels)  # label -> {"scale", "bias"}
    mlflow.log_metrics({f"calib_{k}_{n}": v for n, params in calibration.items() for k, v in params.items()})
    mlflow.log_dict(calibration, "model_card/calibration.json")
    if result.data_cache is not None:
        mlflow.log_metrics({k: v for k, v in result.data_cache.as_metrics().items() if np.isfinite(v)})
    mlflow.log_dict(dict(zip(config.labels, map(float, result.thresholds), strict=True)), "model_card/thresholds.json")
    log_stacking(config, result)
    probs, targets = result.test_probabilities, result.test_targets
    for name, fig in (
        ("roc_curves.png", roc_figure(probs, targets, config.labels)),
        ("calibration.png", calibration_figure(probs, targets, config.labels)),
        ("confusion_at_thresholds.png", confusion_figure(probs, targets, config.labels, list(result.thresholds))),
    ):
        mlflow.log_figure(fig, f"plots/{name}")
        plt.close(fig)
    if len(result.test_probabilities):
        log_test_predictions(result)
    checkpoint = Path(result.model_dir) / "model.safetensors"
    if checkpoint.exists():
        mlflow.log_artifact(str(checkpoint), "checkpoint")


def test_predictions_table(result: Any) -> pd.DataFrame:
    """The test split's per-study predictions, free of identifiers.

    Columns: ``study_pseudonym`` (the StudyInstanceUID pseudonymised with the site salt, ``kind="study"``:
    the same study gets the same key in every run of the site), then per label ``prob_<label>``
    (calibrated probability), ``decision_<label>`` (``prob >= threshold``) and ``y_<label>``
    (target: 1, 0, NaN = unknown). Rows in test-record order.

    Args:
        result: A :class:`~medfusion.training.engine.TrainResult`.

    Raises:
        ValueError: The result's study UIDs do not match its test rows.
    """
    probs, targets, labels = result.test_probabilities, result.test_targets, list(result.labels)
    uids = list(result.test_study_uids)
    if len(uids) != len(probs):
        raise ValueError(f"{len(uids)} test study UIDs for {len(probs)} test rows")
    table: dict[str, Any] = {"study_pseudonym": [pseudonym(uid, kind="study") for uid in uids]}
    for j, label in enumerate(labels):
        table[f"prob_{label}"] = np.asarray(probs[:, j], dtype=np.float64)
        table[f"decision_{label}"] = decide(np.asarray(probs[:, j]), result.thresholds[j]).astype(bool)
        table[f"y_{label}"] = np.asarray(targets[:, j], dtype=np.float64)
    return pd.DataFrame(table)


def log_test_predictions(result: Any) -> None:
    """Log :func:`test_predictions_table` as the Parquet artifact :data:`TEST_PREDICTIONS_ARTIFACT`."""
    folder, name = TEST_PREDICTIONS_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        test_predictions_table(result).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), folder)
