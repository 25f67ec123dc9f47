"""FHIR resources as JSON for reader tests, built and validated with fhir.resources."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fhir.resources.bundle import Bundle
from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.imagingstudy import ImagingStudy

TEXT = "HISTORY: cough\nFINDINGS: Small left effusion.\nIMPRESSION: Left pleural effusion."
ACSN_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}


def diagnostic_report(
    rid: str,
    text: str | None = TEXT,
    *,
    status: str = "final",
    accession: str | None = None,
    study: list[dict[str, Any]] | None = None,
    conclusion: str | None = None,
    narrative: str | None = None,
) -> dict[str, Any]:
    """A DiagnosticReport as JSON, built and validated with fhir.resources."""
    data: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4"}]},
    }
    if text is not None:
        data["presentedForm"] = [{"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}]
    if accession:
        data["identifier"] = [{"type": ACSN_TYPE, "value": accession}]
    if study:
        data["study"] = study
    if conclusion:
        data["conclusion"] = conclusion
    if narrative:
        data["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{narrative}</div>'}
    return json.loads(DiagnosticReport.model_validate(data).model_dump_json())


def imaging_study(sid: str, uid: str) -> dict[str, Any]:
    """An ImagingStudy as JSON carrying its StudyInstanceUID."""
    study = ImagingStudy.model_validate(
        {
            "resourceType": "ImagingStudy",
            "id": sid,
            "status": "available",
            "subject": {"reference": "Patient/p1"},
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        }
    )
    return json.loads(study.model_dump_json())


def uid_ref(uid: str) -> dict[str, Any]:
    return {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}}


def bundle(*resources: dict[str, Any], full_urls: list[str] | None = None) -> dict[str, Any]:
    entries = [{"resource": r} for r in resources]
    for entry, url in zip(entries, full_urls or [], strict=False):
        entry["fullUrl"] = url
    doc = Bundle.model_validate({"resourceType": "Bundle", "type": "collection", "entry": entries})
    return json.loads(doc.model_dump_json())


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_ndjson(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
