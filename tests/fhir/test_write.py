"""FHIR writers: model results and reviewed labels from one package, stable ids, reports with codes/references."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from fhir.resources import get_fhir_model_class
from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.imagingstudy import ImagingStudy
from fhir.resources.observation import Observation

from medfusion.fhir.codes import study_identifier
from medfusion.fhir.read import read_fhir_reports
from medfusion.fhir.write import (
    ReviewedLabel,
    ndjson_text,
    report_to_fhir,
    result_ndjson_text,
    result_resources,
    reviewed_resources,
    stable_id,
    write_fhir_ndjson,
)
from medfusion.ingest.records import Report
from medfusion.results import Provenance, ResultRow

UID = "1.2.826.0.1.3680043.8.498.7"
LABELS = ("nodule", "effusion", "fracture")


def _result(**changes: object) -> ResultRow:
    values: dict[str, object] = {
        "labels": LABELS,
        "probabilities": [0.91, 0.3, 0.1],
        "thresholds": [0.5, 0.3, 0.4],
        "provenance": Provenance("medfusion", "7", "hybrid-feedbeef"),
        "study_uid": UID,
    }
    values.update(changes)
    return ResultRow(**values)  # type: ignore[arg-type]


def _reviewed(label: str, decision: str, value: bool, **changes: object) -> ReviewedLabel:
    values: dict[str, object] = {
        "study_uid": UID,
        "label": label,
        "value": value,
        "decision": decision,
        "reviewer": "reviewer-0a1b",
        "decided_at": "2025-03-04T05:06:07.123+00:00",
        "model_name": "medfusion",
        "model_version": "7",
        "probability": 0.91,
        "threshold": 0.5,
    }
    values.update(changes)
    return ReviewedLabel(**values)  # type: ignore[arg-type]


def test_stable_id_is_deterministic_and_separates_parts() -> None:
    assert stable_id(UID, "m/1") == stable_id(UID, "m/1")
    assert re.fullmatch(r"mf-[0-9a-f]{24}", stable_id(UID))
    assert stable_id("ab", "c") != stable_id("a", "bc") != stable_id("abc")


def test_result_resources_carry_decisions_and_provenance() -> None:
    report, *observations, _ = result_resources(_result())
    again = DiagnosticReport.model_validate_json(report.model_dump_json())
    assert again.status == "preliminary" and again.id == stable_id(UID, "medfusion/7")
    assert [(t.code, t.display) for t in again.meta.tag][1] == ("medfusion/7", "hybrid-feedbeef")
    assert again.meta.tag[0].code == "UNVERIFIED"
    assert "(model id hybrid-feedbeef)" in again.note[0].text
    assert again.conclusion == "Model flags: nodule, effusion. Not verified by a clinician."  # 0.3 >= 0.3 counts
    assert again.study[0].identifier.value == f"urn:oid:{UID}"
    assert [r.reference for r in again.result] == [f"Observation/{stable_id(UID, 'medfusion/7', x)}" for x in LABELS]
    parsed = [Observation.model_validate_json(o.model_dump_json()) for o in observations]
    calls = [o.interpretation[0].coding[0].code for o in parsed]
    assert calls == ["POS", "POS", "NEG"]
    assert [float(o.valueQuantity.value) for o in observations] == [0.91, 0.3, 0.1]
    for line in ndjson_text([report, *observations]).splitlines():
        assert not {"subject", "identifier", "issued", "effectiveDateTime"} & set(json.loads(line))


def _parsed(ndjson: str) -> list[dict]:
    """Each line validated by fhir.resources as its own resource type, then as plain JSON."""
    lines = ndjson.splitlines()
    for line in lines:
        get_fhir_model_class(json.loads(line)["resourceType"]).model_validate_json(line)
    return [json.loads(line) for line in lines]


def test_results_follow_hl7_ai_transparency_device_provenance_security_label() -> None:
    other_uid = "1.2.826.0.1.3680043.8.498.8"
    rows = [_result(), _result(study_uid=other_uid), _result(provenance=Provenance("medfusion", "8", "late-0ddba11"))]
    resources = _parsed(result_ndjson_text(rows))
    by_ref = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    assert len(by_ref) == len(resources)  # unique ids
    devices = [r for r in resources if r["resourceType"] == "Device"]
    assert len(devices) == 2  # one per model version, not one per study
    assert {tuple(i["value"] for i in d["identifier"]) for d in devices} == {
        ("medfusion/7", "hybrid-feedbeef"),
        ("medfusion/8", "late-0ddba11"),
    }
    for resource in resources:
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "AIAST"}.items() <= (
            resource["meta"]["security"][0].items()
        )
    provenances = [r for r in resources if r["resourceType"] == "Provenance"]
    assert len(provenances) == 3
    for prov in provenances:
        targets = [by_ref[t["reference"]] for t in prov["target"]]  # every target is in the same file
        report = targets[0]
        assert report["resourceType"] == "DiagnosticReport" and len(targets) == 1 + len(LABELS)
        assert [f"Observation/{o['id']}" for o in targets[1:]] == [r["reference"] for r in report["result"]]
        device = by_ref[prov["agent"][0]["who"]["reference"]]
        assert device["resourceType"] == "Device"
        assert prov["agent"][0]["type"]["coding"][0]["code"] == "author"
        assert prov["entity"][0]["what"]["identifier"] == report["study"][0]["identifier"]
        for observation in targets[1:]:
            assert observation["device"]["reference"] == prov["agent"][0]["who"]["reference"]
            assert observation["derivedFrom"][0]["identifier"] == report["study"][0]["identifier"]
        model_tag = report["meta"]["tag"][1]["code"]
        assert device["identifier"][0]["value"] == model_tag  # the report's model is the Device that authored it
    assert {p["entity"][0]["what"]["identifier"]["value"] for p in provenances} == {
        f"urn:oid:{UID}",
        f"urn:oid:{other_uid}",
    }


def test_result_resources_refuse_unscored_rows() -> None:
    with pytest.raises(ValueError, match="scored studies"):
        result_resources(_result(study_uid=None))
    with pytest.raises(ValueError, match="scored studies"):
        result_resources(_result(probabilities=[np.nan] * 3, error="broken file"))


def test_reviewed_resources_status_ids_and_comments() -> None:
    resources = reviewed_resources(
        [
            _reviewed("nodule", "agree", True),
            _reviewed("effusion", "corrected", False, comment="small, not an effusion"),
            _reviewed("nodule", "agree", False, study_uid="1.2.3"),
        ]
    )
    kinds = [(r.get_resource_type(), getattr(r, "study", None) and r.study[0].identifier.value) for r in resources]
    assert kinds == [
        ("DiagnosticReport", "urn:oid:1.2.3"),
        ("Observation", None),
        ("DiagnosticReport", f"urn:oid:{UID}"),
        ("Observation", None),
        ("Observation", None),
    ]
    first, second = resources[0], resources[2]
    assert (first.status, second.status) == ("final", "amended")
    assert second.id == stable_id("reviewed", UID) != stable_id(UID, "medfusion/7")  # never a model result's id
    assert second.conclusion == "Positive: nodule"
    effusion, nodule = resources[3], resources[4]
    assert (effusion.code.text, effusion.status, effusion.valueBoolean) == ("effusion", "amended", False)
    assert [n.text for n in effusion.note][1:] == ["small, not an effusion"] and len(nodule.note) == 1
    assert nodule.performer[0].identifier.value == "reviewer-0a1b"
    assert len({r.id for r in resources}) == len(resources)
    for resource in resources:  # a clinician asserted what the AI reported (HL7 AI Transparency on FHIR)
        assert [(c.system, c.code) for c in resource.meta.security] == [
            ("http://hl7.org/fhir/uv/aitransparency/CodeSystem/AddedProvenanceCS", "CLINAST_AIRPT")
        ]


def test_report_to_fhir_with_conclusion_codes_and_a_study_reference(tmp_path: Path) -> None:
    report = Report(text="FINDINGS: clear.\nIMPRESSION: normal", report_id="r1")
    coded = report_to_fhir(report, study_uid=UID, conclusion_codes=("normal", "Lung/hyperdistention"))
    assert [c.text for c in coded.conclusionCode] == ["normal", "Lung/hyperdistention"]
    linked = report_to_fhir(Report(text="x", report_id="r2"), study_reference_to="ImagingStudy/s1")
    study = ImagingStudy.model_validate(
        {
            "resourceType": "ImagingStudy",
            "id": "s1",
            "status": "available",
            "identifier": [study_identifier(UID)],
            "subject": {"reference": "Group/research"},
        }
    )
    batch = read_fhir_reports(write_fhir_ndjson([study, coded, linked], tmp_path / "out.ndjson"))
    assert batch.rejected == [] and [(r.report_id, r.study_uid) for r in batch.reports] == [("r1", UID), ("r2", UID)]
    with pytest.raises(ValueError, match="not both"):
        report_to_fhir(Report(text="x"), study_uid=UID, study_reference_to="ImagingStudy/s1")
