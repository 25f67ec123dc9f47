"""Export of reviewed labels: a label CSV build-manifest reads, and validated FHIR R5 without PHI."""

from __future__ import annotations

import json

from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.observation import Observation

from medfusion.ingest.label_file import read_label_file
from medfusion.review.export import export_csv, export_fhir
from medfusion.review.store import Decision, ReviewStore, Shown

LABELS = ["nodule", "effusion", "fracture"]


def _store(tmp_path) -> ReviewStore:
    store = ReviewStore(tmp_path / "review.sqlite")
    common = {"reviewer": "dr.alice", "model_name": "medfusion", "model_version": "4"}
    store.record_many(
        [
            Decision("1.1", "nodule", "agree", shown=Shown(0.9, 0.5), **common),
            Decision("1.1", "effusion", "agree", shown=Shown(0.1, 0.3), **common),
            Decision("1.2", "nodule", "agree", shown=Shown(0.7, 0.5), **common),
        ]
    )
    # second thought on 1.2: not a nodule after all; latest decision wins
    store.record(Decision("1.2", "nodule", "corrected", shown=Shown(0.7, 0.5), corrected_value=False, **common))
    store.record(Decision("1.2", "fracture", "disagree", shown=Shown(0.2, 0.6), **common))
    return store


def test_csv_is_a_label_file_for_build_manifest(tmp_path) -> None:
    path = export_csv(_store(tmp_path), LABELS, tmp_path / "labels.csv")
    labels = read_label_file(path, LABELS)
    rows, rejected = labels.rows, labels.rejected
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
    by_key = {
        (r.id, o.code.text): o
        for r in reports
        for o in observations
        if f"Observation/{o.id}" in [x.reference for x in r.result]
    }
    assert len(by_key) == len(observations) == 4
    status = {(o.code.text, o.valueBoolean): o.status for o in observations}
    assert status == {
        ("nodule", True): "final",
        ("effusion", False): "final",
        ("nodule", False): "amended",
        ("fracture", True): "amended",
    }
    reviewer = observations[0].performer[0].identifier.value
    assert reviewer.startswith("reviewer-") and all(o.performer[0].identifier.value == reviewer for o in observations)
    assert observations[0].device.identifier.value == "medfusion/4"
    assert reports[0].study[0].identifier.value in {"urn:oid:1.1", "urn:oid:1.2"}


COMMENT = "Patient John Smith MRN 12345"


def _commented_store(tmp_path) -> ReviewStore:
    store = ReviewStore(tmp_path / "commented.sqlite")
    common = {"reviewer": "dr.alice", "model_name": "medfusion", "model_version": "4"}
    store.record_many(
        [
            Decision("1.1", "nodule", "agree", shown=Shown(0.9, 0.5), comment=COMMENT, **common),
            Decision("1.1", "effusion", "agree", shown=Shown(0.1, 0.3), comment=COMMENT, **common),
            Decision("1.2", "fracture", "disagree", shown=Shown(0.2, 0.6), comment="rib fracture on PA", **common),
        ]
    )
    return store


def test_comments_stay_out_of_every_export_by_default(tmp_path) -> None:
    store = _commented_store(tmp_path)
    csv = export_csv(store, LABELS, tmp_path / "labels.csv").read_text()
    ndjson = export_fhir(store, tmp_path / "reviewed.ndjson").read_text()
    assert csv.splitlines()[0] == "study_uid,nodule,effusion,fracture"
    for text in (csv, ndjson):
        assert "Smith" not in text and "12345" not in text and "rib fracture on PA" not in text
    notes = [n["text"] for r in map(json.loads, ndjson.splitlines()) for n in r.get("note", [])]
    assert len(notes) == 3 and all(n.startswith("Reviewed by a clinician") for n in notes)


def test_comments_are_exported_when_asked(tmp_path) -> None:
    store = _commented_store(tmp_path)
    path = export_csv(store, LABELS, tmp_path / "labels.csv", include_comments=True)
    labels = read_label_file(path, LABELS)
    rows, rejected = labels.rows, labels.rejected  # still a label file for build-manifest
    assert rejected == [] and rows["1.1"]["nodule"] == 1.0
    table = {line.split(",")[0]: line for line in path.read_text().splitlines()}
    assert table["study_uid"] == "study_uid,nodule,effusion,fracture,comment"
    assert table["1.1"] == f"1.1,1,0,,{COMMENT}"  # one comment saved with two labels appears once
    assert table["1.2"] == "1.2,,,1,rib fracture on PA"
    resources = [
        json.loads(line)
        for line in export_fhir(store, tmp_path / "r.ndjson", include_comments=True).read_text().splitlines()
    ]
    observations = {(r["code"]["text"], r["id"]): r for r in resources if r["resourceType"] == "Observation"}
    assert len(observations) == 3
    for obs in map(Observation.model_validate, observations.values()):
        assert len(obs.note) == 2 and obs.note[1].text in {COMMENT, "rib fracture on PA"}
