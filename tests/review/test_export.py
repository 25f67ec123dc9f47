"""Export of reviewed labels: a label CSV build-manifest reads, and validated FHIR R5 without PHI."""

from __future__ import annotations

import json

from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.observation import Observation

from medfusion.data.cohort import read_label_file
from medfusion.review.export import export_csv, export_fhir
from medfusion.review.store import Decision, ReviewStore, Shown

LABELS = ["nodule", "effusion", "fracture"]


def _store(tmp_path) -> ReviewStore:
    store = ReviewStore(tmp_path / "review.sqlite")
    common = {"reviewer": "dr.alice", "model_name": "medfusion", "model_version": "4"}
    store.record_many([
        Decision("1.1", "nodule", "agree", shown=Shown(0.9, 0.5), **common),
        Decision("1.1", "effusion", "agree", shown=Shown(0.1, 0.3), **common),
        Decision("1.2", "nodule", "agree", shown=Shown(0.7, 0.5), **common),
    ])
    # second thought on 1.2: not a nodule after all; latest decision wins
    store.record(Decision("1.2", "nodule", "corrected", shown=Shown(0.7, 0.5), corrected_value=False, **common))
    store.record(Decision("1.2", "fracture", "disagree", shown=Shown(0.2, 0.6), **common))
    return store


def test_csv_is_a_label_file_for_build_manifest(tmp_path) -> None:
    path = export_csv(_store(tmp_path), LABELS, tmp_path / "labels.csv")
    rows, rejected = read_label_file(path, LABELS)
    assert rejected == []
    assert rows["1.1"]["nodule"] == 1.0 and rows["1.1"]["effusion"] == 0.0
    assert rows["1.2"]["nodule"] == 0.0 and rows["1.2"]["fracture"] == 1.0
    assert rows["1.2"]["effusion"] != rows["1.2"]["effusion"]  # NaN: not reviewed


def test_fhir_is_valid_r5_with_statuses_and_no_reviewer_name(tmp_path) -> None:
    path = export_fhir(_store(tmp_path), tmp_path / "reviewed.ndjson")
    text = path.read_text()
    assert "dr.alice" not in text
    resources = [json.loads(line) for line in text.splitlines()]
    reports = [DiagnosticReport.model_validate(r) for r in resources if r["resourceType"] == "DiagnosticReport"]
    observations = [Observation.model_validate(r) for r in resources if r["resourceType"] == "Observation"]
    assert {r.status for r in reports} == {"final", "amended"}
    by_key = {(r.id, o.code.text): o for r in reports for o in observations if f"Observation/{o.id}" in [x.reference for x in r.result]}
    assert len(by_key) == len(observations) == 4
    status = {(o.code.text, o.valueBoolean): o.status for o in observations}
    assert status == {("nodule", True): "final", ("effusion", False): "final", ("nodule", False): "amended", ("fracture", True): "amended"}
    reviewer = observations[0].performer[0].identifier.value
    assert reviewer.startswith("reviewer-") and all(o.performer[0].identifier.value == reviewer for o in observations)
    assert observations[0].device.identifier.value == "medfusion/4"
    assert reports[0].study[0].identifier.value in {"urn:oid:1.1", "urn:oid:1.2"}
