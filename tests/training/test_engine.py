"""Training engine on a small synthetic DICOM cohort: results, reproducibility, early stopping, fusions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medfusion.errors import MedfusionError
from medfusion.models.model import load_model_dir
from medfusion.training.engine import (
    TrainResult,
    drop_singleton_batch,
    masked_bce,
    modality_dropout,
    pos_weights,
    train,
    warmup_cosine,
)
from tests.support.synthetic import LABELS, Recorder, fast_config, train_quietly


def test_train_result_and_model_folder(trained: tuple[TrainResult, Recorder]) -> None:
    result, recorder = trained
    assert 1 <= result.best_epoch <= len(result.history) <= 8
    assert [e for e, _ in recorder.epochs] == list(range(1, len(result.history) + 1))
    assert recorder.result is result
    first = result.history[0]
    for key in ("train_loss", "val_loss", "lr", "epoch_seconds", "val_macro_auroc", "val_auroc_spot", "val_ece"):
        assert math.isfinite(first[key]), key
    assert result.test_probabilities.shape == (32, 3) and result.test_targets.shape == (32, 3)
    assert np.all((result.test_probabilities >= 0) & (result.test_probabilities <= 1))
    assert len(result.thresholds) == 3 and result.calibration.n_labels == 3
    assert result.test_metrics["macro_auroc"] > 0.6
    assert [r.reason for r in result.rejected] == ["not a DICOM file (no DICM preamble and no valid dataset)"]
    assert (result.model_dir.parent / "checkpoints" / "best.safetensors").is_file()
    assert (result.model_dir.parent / "text_encoder" / "tokenizer.json").is_file()  # vocabulary from train reports
    loaded = load_model_dir(result.model_dir, "cpu")
    assert loaded.labels == LABELS and loaded.calibration == result.calibration
    assert loaded.thresholds.tolist() == pytest.approx(result.thresholds)


def test_same_seed_same_results(trained: tuple[TrainResult, Recorder], synthetic_records: dict, tmp_path: Path) -> None:
    first, _ = trained
    again = train(fast_config("hybrid"), synthetic_records, tmp_path, progress=False)
    strip = lambda h: {k: v for k, v in h.items() if k != "epoch_seconds"}  # noqa: E731
    assert [strip(h) for h in again.history] == [strip(h) for h in first.history]
    assert again.val_metrics == first.val_metrics
    np.testing.assert_array_equal(again.test_probabilities, first.test_probabilities)


@pytest.mark.slow
def test_early_stopping(synthetic_records: dict, tmp_path: Path) -> None:
    # A learning rate this small cannot move the validation AUROC: patience 1 stops after epoch 2.
    result = train(
        fast_config("late", lr=1e-12, epochs=6, early_stopping_patience=1), synthetic_records, tmp_path, progress=False
    )
    assert result.stopped_early
    assert len(result.history) == 2 and result.best_epoch == 1


def test_training_needs_train_and_val(synthetic_records: dict, tmp_path: Path) -> None:
    with pytest.raises(MedfusionError, match="no val studies"):
        train(fast_config(), {"train": synthetic_records["train"]}, tmp_path)


def test_batchnorm_encoder_trains_when_one_study_is_left_over(synthetic_records: dict, tmp_path: Path) -> None:
    """9 train studies in batches of 4 leave a batch of one, which BatchNorm (ResNet) cannot train on:
    it is dropped, while validation and test still score every study (5 each, also 1 over a batch)."""
    records = {"train": synthetic_records["train"][:9], "val": synthetic_records["val"][:5],
               "test": synthetic_records["test"][:5]}  # fmt: skip
    config = fast_config("late", epochs=1, batch_size=4)
    config = config.model_copy(update={"image_encoder": config.image_encoder.model_copy(update={"name": "resnet18"})})
    result = train_quietly(config, records, tmp_path)
    assert result.test_probabilities.shape == (5, len(LABELS))
    assert math.isfinite(result.history[0]["train_loss"]) and math.isfinite(result.history[0]["val_loss"])


#: (training studies, batch size, whether the trailing batch is dropped)
SINGLETON_CASES = [
    (9, 4, True),
    (17, 16, True),
    (5, 4, True),
    (10, 4, False),
    (8, 4, False),
    (1, 4, False),
    (4, 1, False),
]


@pytest.mark.parametrize("n, batch_size, drop", SINGLETON_CASES)
def test_only_a_trailing_batch_of_one_is_dropped(n: int, batch_size: int, drop: bool) -> None:
    assert drop_singleton_batch(n, batch_size) is drop


# (fusion, label that must be learned)
FUSIONS = [
    ("image_only", "spot"),
    ("text_only", "word"),
    ("late", None),
    ("concat", None),
    ("gated", None),
    ("hybrid", None),
]


@pytest.mark.slow
@pytest.mark.parametrize("fusion, label", FUSIONS)
def test_each_fusion_trains_and_beats_chance(
    synthetic_records: dict, tmp_path: Path, fusion: str, label: str | None
) -> None:
    result = train(fast_config(fusion), synthetic_records, tmp_path, progress=False)
    metrics = result.test_metrics
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    if label is not None:
        assert metrics[f"auroc_{label}"] > 0.8, metrics
    else:
        assert metrics["macro_auroc"] > 0.7, metrics


# ------------------------------------------------------------------------------------------ pieces


def test_masked_bce_ignores_unknown_labels() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    known = torch.nn.functional.binary_cross_entropy_with_logits(logits[~targets.isnan()], targets[~targets.isnan()])
    assert masked_bce(logits, targets, None) == pytest.approx(float(known))
    weighted = masked_bce(logits, targets, torch.tensor([3.0, 1.0]))
    assert weighted > masked_bce(logits, targets, None)


def test_pos_weight_is_negatives_over_positives() -> None:
    records: list[dict[str, Any]] = [
        {"label": np.array(v, dtype=np.float32)} for v in ([1, 0], [0, 0], [0, np.nan], [0, 0])
    ]
    w = pos_weights(records, ["a", "b"])
    assert w.tolist() == [3.0, 1.0]  # b has no positive: 1.0 (and a warning)


def test_modality_dropout_hides_at_most_one_modality() -> None:
    n = 4000
    batch = {"image_present": torch.ones(n, dtype=torch.bool), "text_present": torch.ones(n, dtype=torch.bool)}
    batch["text_present"][:1000] = False
    out = modality_dropout(batch, 0.3, torch.Generator().manual_seed(0))
    assert torch.all(out["image_present"] | out["text_present"])  # never both hidden
    assert torch.all(out["image_present"][:1000])  # image-only samples keep their only modality
    hidden = (~out["image_present"][1000:] | ~out["text_present"][1000:]).float().mean()
    assert 0.25 < hidden < 0.35


def test_warmup_then_cosine() -> None:
    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5, abs=0.02) and f(99) < 0.01
