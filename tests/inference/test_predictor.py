"""Predictor: a saved model folder scores studies with missing parts and bad files, batch by batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medfusion.inference import STATUS, Predictor, StudyInput
from tests.support.synthetic import LABELS


def _studies(records: dict) -> list[StudyInput]:
    test = records["test"]
    broken = str(next(r for r in records["train"] if r["image"] and r["image"][0].endswith("broken.dcm"))["image"][0])
    return [
        StudyInput(image_paths=test[0]["image"], report_text=test[0]["report"]),
        StudyInput(image_paths=test[1]["image"], report_text=""),  # no report
        StudyInput(image_paths=[], report_text=test[2]["report"]),  # no image
        StudyInput(image_paths=[broken], report_text=test[3]["report"]),  # unreadable file
        StudyInput(),  # nothing at all
        StudyInput(image_paths=test[5]["image"], report_text=test[5]["report"]),
    ]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor.from_dir(tiny_model_dir, device="cpu", batch_size=4)


def test_predictions_for_every_kind_of_input(predictor: Predictor, synthetic_records: dict) -> None:
    predictions = predictor.predict(_studies(synthetic_records))
    assert len(predictions) == 6 and predictor.labels == LABELS
    good = [p for i, p in enumerate(predictions) if i != 3]
    for p in good:
        assert p.error is None
        assert p.probabilities.shape == (3,) and np.all(np.isfinite(p.probabilities))
        np.testing.assert_array_equal(p.decisions, p.probabilities >= p.thresholds)
        assert p.provenance["status"] == STATUS and p.provenance["model_id"].startswith("synthetic-")
    bad = predictions[3]
    assert "not a DICOM file" in bad.error and np.all(np.isnan(bad.probabilities)) and not bad.decisions.any()
    assert [p.image_present for p in good] == [True, True, False, False, True]
    assert [p.text_present for p in good] == [True, False, True, False, True]
    # absent modalities get no weight; the joint (cross-attention) slot only with both
    assert predictions[1].modality_weights["text"] == 0 and predictions[2].modality_weights["image"] == 0
    assert predictions[1].modality_weights["joint"] == 0


def test_attention_maps_cover_real_tokens_only(predictor: Predictor, synthetic_records: dict) -> None:
    first, no_report = predictor.predict(_studies(synthetic_records)[:2])
    heads, t, n = first.attentions.shape
    assert heads == 2 and n == 16 and first.image_grid == (4, 4)
    assert len(first.tokens) == t and first.tokens[0] == "[CLS]" and first.tokens[-1] == "[SEP]"
    assert np.allclose(first.attentions.sum(-1), 1.0, atol=1e-5)
    assert no_report.attentions is None and no_report.tokens is None


def test_batching_does_not_change_results(predictor: Predictor, synthetic_records: dict) -> None:
    studies = _studies(synthetic_records)
    batched = predictor.predict(studies)
    for study, expected in zip(studies, batched, strict=True):
        [alone] = predictor.predict([study])
        np.testing.assert_allclose(alone.probabilities, expected.probabilities, atol=1e-5)


def test_probabilities_are_calibrated_logits(predictor: Predictor, synthetic_records: dict) -> None:
    study = _studies(synthetic_records)[0]
    [p] = predictor.predict([study])
    loaded = predictor.loaded
    sample = predictor.preprocess(study)
    batch = predictor.collate([sample])
    with torch.no_grad():
        logits = loaded.model(batch).logits[0].double()
    scale, bias = (torch.tensor(v, dtype=torch.float64) for v in (loaded.calibration.scale, loaded.calibration.bias))
    expected = torch.sigmoid(scale * logits + bias).numpy()
    np.testing.assert_allclose(p.probabilities, expected, atol=1e-6)
    assert predictor.predict([]) == []
