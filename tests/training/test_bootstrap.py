"""Patient-level bootstrap intervals of the test metrics: exact per resample, honest coverage, in MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from scipy.stats import norm

from medfusion.metrics import bootstrap_ci, bootstrap_metrics, bootstrap_weights, evaluate
from medfusion.tracking.runs import log_training_result
from medfusion.tracking.store import use_store
from medfusion.training.engine import patients
from tests.support.synthetic import fast_config, train_quietly

LABELS = ["a", "b", "c"]


def test_each_resample_equals_evaluate_on_the_resampled_studies() -> None:
    """Weights are copies: every metric of every resample equals :func:`evaluate` on the duplicated set."""
    rng = np.random.default_rng(0)
    probs = np.round(rng.random((60, 3)), 2)  # rounded: ties between scores
    targets = (rng.random((60, 3)) < 0.3).astype(float)
    targets[rng.random((60, 3)) < 0.1] = np.nan
    weights = bootstrap_weights(rng.integers(0, 25, 60), 6, rng)
    draws = bootstrap_metrics(probs, targets, LABELS, weights, [0.4, 0.5, 0.6])
    for b in range(6):
        copies = np.repeat(np.arange(60), weights[b].astype(int))
        expected = evaluate(probs[copies], targets[copies], LABELS, [0.4, 0.5, 0.6]).metrics
        assert set(draws) == set(expected)
        for name, value in expected.items():
            assert draws[name][b] == pytest.approx(value, abs=1e-12), name


def test_a_patients_studies_are_resampled_together() -> None:
    groups = np.array(["p1", "p1", "p1", "p2", "p3", "p3", "p4"])
    weights = bootstrap_weights(groups, 500, np.random.default_rng(1))
    assert weights.shape == (500, 7)
    for patient in ("p1", "p3"):
        studies = weights[:, groups == patient]
        assert (studies == studies[:, :1]).all()  # all of a patient's studies, or none, every time
    first = weights[:, [0, 3, 4, 6]]  # one study per patient: the patient's draw count
    assert (first.sum(1) == 4).all()  # 4 patients drawn out of 4, with replacement
    assert (weights[:, 0] == 0).mean() == pytest.approx((3 / 4) ** 4, abs=0.05)  # P(p1 never drawn)
    again = bootstrap_weights(groups, 500, np.random.default_rng(1))
    assert np.array_equal(weights, again)  # seeded


def _binormal(rng: np.random.Generator, n_patients: int, per_patient: int, d: float, noise: float):
    """Patients with a label and a latent score ~ N(d * label, 1); each study adds N(0, noise^2)."""
    label = (rng.random(n_patients) < 0.5).astype(float)
    label[:2] = [0, 1]  # both classes in every data set
    latent = rng.normal(d * label, 1.0)
    groups = np.repeat(np.arange(n_patients), per_patient)
    scores = latent[groups] + rng.normal(0, noise, len(groups))
    probs = 1 / (1 + np.exp(-scores))
    return probs[:, None], label[groups][:, None], groups


def _coverage(per_patient: int, noise: float, by_patient: bool, reps: int = 200) -> float:
    d = 1.0
    truth = float(norm.cdf(d / np.sqrt(2 * (1 + noise**2))))  # P(score_pos > score_neg), studies of 2 patients
    rng = np.random.default_rng(7)
    hits = 0
    for rep in range(reps):
        probs, targets, groups = _binormal(rng, 60, per_patient, d, noise)
        ci = bootstrap_ci(probs, targets, ["x"], groups if by_patient else None, n_boot=400, seed=rep)
        low, high = ci["auroc_x"]
        hits += low <= truth <= high
    return hits / reps


def test_interval_covers_the_true_auroc_at_the_expected_rate() -> None:
    """One study per patient: the 95 % interval covers the population AUROC in about 95 % of data sets."""
    assert 0.89 <= _coverage(per_patient=1, noise=0.0, by_patient=True) <= 0.99


def test_patient_resampling_keeps_coverage_where_study_resampling_loses_it() -> None:
    """Four near-identical studies per patient: resampling studies treats them as independent and
    gives intervals far too narrow; resampling patients keeps the coverage."""
    assert 0.88 <= _coverage(per_patient=4, noise=0.2, by_patient=True) <= 0.99
    assert _coverage(per_patient=4, noise=0.2, by_patient=False) <= 0.82


def test_interval_is_seeded_and_surrounds_the_estimate() -> None:
    probs, targets, groups = _binormal(np.random.default_rng(3), 80, 2, 1.5, 0.3)
    point = evaluate(probs, targets, ["x"]).metrics
    ci = bootstrap_ci(probs, targets, ["x"], groups, seed=5)
    assert ci == bootstrap_ci(probs, targets, ["x"], groups, seed=5)
    assert ci != bootstrap_ci(probs, targets, ["x"], groups, seed=6)
    assert set(ci) == set(point)
    for name in ("auroc_x", "macro_auroc", "auprc_x", "f1_x", "ece"):
        low, high = ci[name]
        assert low <= point[name] <= high and high - low > 0.01, name
    assert bootstrap_ci(np.zeros((0, 1)), np.zeros((0, 1)), ["x"]) == {}


def test_training_logs_each_test_metrics_interval_to_mlflow(synthetic_records: dict, tmp_path: Path) -> None:
    records = {split: [dict(r) for r in rows] for split, rows in synthetic_records.items()}
    for i, record in enumerate(records["test"]):  # two studies per patient
        record["meta"] = {**record["meta"], "patient_pseudonym": f"pat-{i // 2}"}
    assert patients(records["test"])[:3] == ["pat-0", "pat-0", "pat-1"]
    assert patients([{"meta": {"study_uid": "1.2"}}, {}]) == ["study:1.2", "study:1"]
    config = fast_config("text_only", epochs=1)
    result = train_quietly(config, records, tmp_path / "run")
    assert result.test_ci and set(result.test_ci) <= set(result.test_metrics)
    expected = bootstrap_ci(
        result.test_probabilities, result.test_targets, config.labels, patients(records["test"]),
        result.thresholds, seed=config.training.seed,
    )  # fmt: skip
    assert result.test_ci == expected  # patient-level, seeded with training.seed
    use_store(f"sqlite:///{tmp_path / 'mlflow.db'}")  # this process only: the environment is left alone
    experiment_id = mlflow.MlflowClient().create_experiment(f"bootstrap-{tmp_path.name}")  # of this store
    with mlflow.start_run(experiment_id=experiment_id) as run:
        log_training_result(config, result)
    metrics = mlflow.get_run(run.info.run_id).data.metrics
    low, high = result.test_ci["macro_auroc"]
    assert metrics["test_macro_auroc_ci_low"] == pytest.approx(low)
    assert metrics["test_macro_auroc_ci_high"] == pytest.approx(high)
    assert low <= metrics["test_macro_auroc"] <= high
    for name in result.test_ci:
        assert f"test_{name}_ci_low" in metrics and f"test_{name}_ci_high" in metrics
    for j, label in enumerate(config.labels):  # the per-label calibration, as metrics and as the card's block
        assert metrics[f"calib_scale_{label}"] == pytest.approx(result.calibration.scale[j])
        assert metrics[f"calib_bias_{label}"] == pytest.approx(result.calibration.bias[j])
    assert "temperature" not in metrics
    logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/model_card/calibration.json")
    assert logged == result.calibration.by_label(config.labels)
