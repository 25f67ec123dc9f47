"""The one result schema: decisions, record columns, provenance, reading rows back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfusion import __version__
from medfusion.errors import MedfusionError
from medfusion.results import STATUS, Provenance, ResultRow, decide, labels_of, result_columns

LABELS = ("nodule", "effusion", "fracture")
PROVENANCE = Provenance("medfusion", "3", "hybrid-0123abcd")


def _row(**changes: object) -> ResultRow:
    values: dict[str, object] = {
        "labels": LABELS,
        "probabilities": [0.9, 0.3, 0.2],
        "thresholds": [0.5, 0.3, 0.25],
        "provenance": PROVENANCE,
        "study_uid": "1.2.3",
        "scored_at": "2025-01-02T03:04:05+00:00",
    }
    values.update(changes)
    return ResultRow(**values)  # type: ignore[arg-type]


def test_decide_is_at_or_above_the_threshold_and_never_nan() -> None:
    probs = np.array([[0.2, 0.5, 0.8000001, np.nan], [0.3, 0.49999, 0.8, 1.0]])  # (2, 4)
    thresholds = np.array([0.3, 0.5, 0.8, 0.0])  # (4,)
    np.testing.assert_array_equal(decide(probs, thresholds), [[False, True, True, False], [True, False, True, True]])
    assert decide(0.5, 0.5).item() is True


def test_record_has_the_schema_columns_in_order_with_provenance() -> None:
    record = _row().to_record()
    assert list(record) == [name for name, _ in result_columns(LABELS)]
    assert [record[f"decision_{label}"] for label in LABELS] == [True, True, False]  # 0.3 >= 0.3 is positive
    assert [record[f"threshold_{label}"] for label in LABELS] == [0.5, 0.3, 0.25]
    assert record["model_name"] == "medfusion" and record["model_version"] == "3"
    assert record["model_id"] == "hybrid-0123abcd" and record["medfusion_version"] == __version__
    assert record["status"] == STATUS == "UNVERIFIED"
    kinds = dict(result_columns(LABELS))
    assert {name for name, kind in kinds.items() if kind == "boolean"} == {f"decision_{label}" for label in LABELS}


def test_pyfunc_records_have_no_study_uid_and_an_error_column() -> None:
    failed = _row(study_uid=None, probabilities=[math.nan] * 3, error="not a DICOM file")
    record = failed.to_record(with_error=True)
    assert list(record) == [name for name, _ in result_columns(LABELS, study_uid=False, error=True)]
    assert record["error"] == "not a DICOM file" and not any(record[f"decision_{label}"] for label in LABELS)
    assert record["status"] == STATUS and record["model_id"] == "hybrid-0123abcd"
    assert _row(study_uid=None).to_record(with_error=True)["error"] == ""


def test_from_record_reads_a_row_back() -> None:
    row = _row()
    back = ResultRow.from_record(row.to_record(), labels_of(list(row.to_record())))
    assert back.labels == LABELS and back.study_uid == "1.2.3" and back.scored_at == row.scored_at
    assert back.provenance == PROVENANCE
    np.testing.assert_array_equal(back.probabilities, row.probabilities)
    np.testing.assert_array_equal(back.decisions, [True, True, False])


def test_from_record_names_missing_columns() -> None:
    record = _row().to_record()
    del record["model_id"], record["threshold_effusion"]
    with pytest.raises(MedfusionError, match="threshold_effusion, model_id"):
        ResultRow.from_record(record, LABELS)


def test_labels_and_values_must_agree() -> None:
    with pytest.raises(ValueError, match="3 labels but 2 probabilities"):
        _row(probabilities=[0.1, 0.2])
