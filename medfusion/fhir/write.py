"""Every FHIR R5 resource medfusion writes, validated with ``fhir.resources``, and the files holding them.

- :func:`report_to_fhir`: a radiology report (:class:`~medfusion.ingest.records.Report`) as a
  DiagnosticReport (the demo cohort, OpenI).
- :func:`result_resources`: a model result (:class:`~medfusion.results.ResultRow`) as a
  ``preliminary`` DiagnosticReport, one Observation per label and a Provenance, tagged ``UNVERIFIED``,
  labelled ``AIAST`` and pointing at the model's :func:`model_device`, as HL7 AI Transparency on FHIR
  has it (batch scoring ``--fhir``, through :func:`result_ndjson_text`).
- :func:`reviewed_resources`: clinicians' reviewed labels (:class:`ReviewedLabel`) as ``final`` /
  ``amended`` DiagnosticReports and Observations labelled ``CLINAST_AIRPT`` (the review export).
- :func:`ndjson_text`, :func:`write_fhir_ndjson`, :func:`write_fhir_bundle`: serialisation.

Resource ids that must be stable across runs come from :func:`stable_id` only. Model results and
reviewed labels carry no patient data: no subject, no accession number, the study by its
StudyInstanceUID, reviewers by pseudonym.

Imports: ``fhir.resources``, :mod:`medfusion.fhir.codes`, :mod:`medfusion.results`,
:mod:`medfusion.ingest.records`, :mod:`medfusion.ingest.reports.sections`, :mod:`medfusion.privacy`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir.resources.bundle import Bundle, BundleEntry
from fhir.resources.device import Device
from fhir.resources.diagnosticreport import DiagnosticReport
from fhir.resources.observation import Observation
from fhir.resources.provenance import Provenance
from fhir.resources.resource import Resource

from medfusion.fhir.codes import (
    ACCESSION_PSEUDONYM_SYSTEM,
    AI_ASSERTED_LABEL,
    CLINICIAN_ASSERTED_FROM_AI_LABEL,
    DATA_OPERATION_SYSTEM,
    FHIR_STATUSES,
    MODEL_ID_SYSTEM,
    MODEL_SYSTEM,
    PROVENANCE_PARTICIPANT_SYSTEM,
    REVIEWER_SYSTEM,
    UNVERIFIED_TAG,
    V2_0203_SYSTEM,
    imaging_report_code,
    interpretation,
    label_code,
    radiology_category,
    study_reference,
)
from medfusion.ingest.records import Report, is_dicom_uid
from medfusion.ingest.reports.sections import split_sections
from medfusion.privacy import pseudonym
from medfusion.results import Provenance as ModelProvenance
from medfusion.results import ResultRow

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def stable_id(*parts: str) -> str:
    """A FHIR id that is the same on every run for the same parts: ``mf-<24 hex>`` (SHA-256).

    Args:
        parts: Non-identifying parts (a StudyInstanceUID, a model code, a label, a kind).
    """
    return "mf-" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------ reports


def report_to_fhir(
    report: Report,
    *,
    accession: str | None = None,
    study_uid: str | None = None,
    study_reference_to: str | None = None,
    patient_reference: str | None = None,
    resource_id: str | None = None,
    conclusion_codes: Sequence[str] = (),
) -> DiagnosticReport:
    """Build a valid FHIR R5 DiagnosticReport from a report.

    The resource has LOINC code 18748-4 "Diagnostic imaging study", category RAD, the full text as a
    base64 ``text/plain`` presentedForm and, when the report has one, its IMPRESSION as ``conclusion``.
    Its status is the report's when that is a FHIR DiagnosticReport status, else ``final``.

    Args:
        report: The report.
        accession: Accession number in clear, written as an ``ACSN`` identifier. When None and the
            report has an accession pseudonym, that pseudonym is written under
            :data:`~medfusion.fhir.codes.ACCESSION_PSEUDONYM_SYSTEM` so that reading the resource back
            gives it again.
        study_uid: StudyInstanceUID for ``study`` (an identifier reference ``urn:dicom:uid`` /
            ``urn:oid:<uid>``); default the report's own.
        study_reference_to: A literal ``study`` reference instead (``ImagingStudy/<id>`` of the same
            Bundle or NDJSON file), for reports that know their study only that way.
        patient_reference: ``subject`` reference (``Patient/<id>``), when wanted.
        resource_id: Resource id; default the report's id when that is a valid FHIR id.
        conclusion_codes: Texts of coded conclusions (``conclusionCode``), e.g. MeSH terms.

    Returns:
        The validated resource.

    Raises:
        ValueError: ``accession`` or ``study_uid`` contradict the report's own, or ``study_uid`` is
            not a DICOM UID, or ``resource_id`` is not a valid FHIR id, or both ``study_uid`` and
            ``study_reference_to`` are given.
    """
    acc = (accession or "").strip() or None
    if acc and report.accession_pseudonym and pseudonym(acc, kind="acc") != report.accession_pseudonym:
        raise ValueError("accession number does not match the report's accession pseudonym")
    uid = study_uid or report.study_uid
    if study_uid and report.study_uid and study_uid != report.study_uid:
        raise ValueError("study_uid does not match the report's study UID")
    if uid is not None and not is_dicom_uid(uid):
        raise ValueError("study_uid is not a valid DICOM UID")
    if uid is not None and study_reference_to is not None:
        raise ValueError("give the study as a UID or as a reference, not both")
    if resource_id is not None and not _FHIR_ID.match(resource_id):
        raise ValueError("resource_id is not a valid FHIR id ([A-Za-z0-9-.]{1,64})")
    rid = resource_id or (report.report_id if report.report_id and _FHIR_ID.match(report.report_id) else None)

    data: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": report.status if report.status in FHIR_STATUSES else "final",
        "category": radiology_category(),
        "code": imaging_report_code(),
        "presentedForm": [
            {"contentType": "text/plain", "data": base64.b64encode(report.text.encode("utf-8")).decode("ascii")}
        ],
    }
    if rid:
        data["id"] = rid
    if acc:
        acsn = {"coding": [{"system": V2_0203_SYSTEM, "code": "ACSN", "display": "Accession ID"}]}
        data["identifier"] = [{"type": acsn, "value": acc}]
    elif report.accession_pseudonym:
        data["identifier"] = [{"system": ACCESSION_PSEUDONYM_SYSTEM, "value": report.accession_pseudonym}]
    if uid:
        data["study"] = [study_reference(uid)]
    elif study_reference_to:
        data["study"] = [{"reference": study_reference_to}]
    if patient_reference:
        data["subject"] = {"reference": patient_reference}
    impression = (report.sections or split_sections(report.text)).get("IMPRESSION")
    if impression:
        data["conclusion"] = impression
    if conclusion_codes:
        data["conclusionCode"] = [{"text": text} for text in conclusion_codes]  # R5: CodeableConcept
    return DiagnosticReport.model_validate(data)


# ---------------------------------------------------------------------------------- model results


def _provenance_note(row: ResultRow) -> list[dict[str, str]]:
    p = row.provenance
    return [
        {
            "text": f"Generated by the model {p.model_name} version {p.model_version} (model id {p.model_id}) "
            "for research use. NOT VERIFIED BY A CLINICIAN."
        }
    ]


def device_id(provenance: ModelProvenance) -> str:
    """The id of the model's :func:`model_device` (the same on every run for the same model version)."""
    return stable_id("device", provenance.model_version_code, provenance.model_id)


def model_device(provenance: ModelProvenance) -> Device:
    """The model that scored, as a FHIR Device (HL7 AI Transparency on FHIR: the AI is a Device).

    Identified by ``<name>/<version>`` (:data:`~medfusion.fhir.codes.MODEL_SYSTEM`) and by the model id
    (:data:`~medfusion.fhir.codes.MODEL_ID_SYSTEM`); its versions are the model's and medfusion's.

    Args:
        provenance: The model of a result.

    Returns:
        The validated resource, id :func:`device_id`.
    """
    p = provenance
    return Device.model_validate(
        {
            "resourceType": "Device",
            "id": device_id(p),
            "meta": {"security": [AI_ASSERTED_LABEL]},
            "identifier": [
                {"system": MODEL_SYSTEM, "value": p.model_version_code},
                {"system": MODEL_ID_SYSTEM, "value": p.model_id},
            ],
            "displayName": f"medfusion model {p.model_name} v{p.model_version}",
            "name": [{"value": p.model_name, "type": "user-friendly-name"}],
            "version": [
                {"type": {"text": "model version"}, "value": p.model_version},
                {"type": {"text": "medfusion version"}, "value": p.medfusion_version},
            ],
            "manufacturer": "medfusion",
            "status": "active",
            "note": [{"text": "Machine-learning model for research use; its outputs are not verified by a clinician."}],
        }
    )


def result_resources(row: ResultRow) -> list[Resource]:
    """The DiagnosticReport, per-label Observations and Provenance of one model result.

    Follows HL7 AI Transparency on FHIR: every resource carries the ``AIAST`` security label; the
    Observations name the model's :func:`model_device` in ``device`` and are ``derivedFrom`` the
    ImagingStudy; a Provenance records the Device as author of the report and Observations, from the
    ImagingStudy, at the scoring time. The Device itself is written once per file
    (:func:`result_ndjson_text`). Every resource is ``preliminary``, tagged ``UNVERIFIED`` and with the
    model (``<name>/<version>``, display the model id) in ``meta.tag``; report and Observations carry a
    note saying who made them and that they are not verified. Observations hold the probability
    (``valueQuantity``), the decision (``interpretation`` POS/NEG, :attr:`ResultRow.decisions`) and the
    threshold (``referenceRange``).

    Args:
        row: A scored study (``study_uid`` set, no ``error``).

    Returns:
        ``[DiagnosticReport, Observation x L, Provenance]``, validated.

    Raises:
        ValueError: The row has no study UID or holds an error.
    """
    if row.study_uid is None or row.error:
        raise ValueError("only scored studies (with a study UID and no error) become FHIR results")
    uid, model = row.study_uid, row.provenance.model_version_code
    meta = {
        "security": [AI_ASSERTED_LABEL],
        "tag": [UNVERIFIED_TAG, {"system": MODEL_SYSTEM, "code": model, "display": row.provenance.model_id}],
    }
    device = {"reference": f"Device/{device_id(row.provenance)}", "display": model}
    note = _provenance_note(row)
    observations = [
        Observation.model_validate(
            {
                "resourceType": "Observation",
                "id": stable_id(uid, model, label),
                "meta": meta,
                "status": "preliminary",
                "code": label_code(label),
                "valueQuantity": {"value": round(float(p), 6), "unit": "probability"},
                "interpretation": interpretation(bool(positive)),
                "referenceRange": [{"text": f"decision threshold {float(t):.6g}"}],
                "device": device,
                "derivedFrom": [study_reference(uid)],
                "note": note,
            }
        )
        for label, p, t, positive in zip(row.labels, row.probabilities, row.thresholds, row.decisions, strict=True)
    ]
    found = [label for label, positive in zip(row.labels, row.decisions, strict=True) if positive]
    report = DiagnosticReport.model_validate(
        {
            "resourceType": "DiagnosticReport",
            "id": stable_id(uid, model),
            "meta": meta,
            "status": "preliminary",
            "category": radiology_category(),
            "code": imaging_report_code("Diagnostic imaging study (model output, unverified)"),
            "study": [study_reference(uid)],
            "result": [{"reference": f"Observation/{o.id}"} for o in observations],
            "conclusion": "Model flags: " + (", ".join(found) if found else "none") + ". Not verified by a clinician.",
            "note": note,
        }
    )
    provenance = Provenance.model_validate(
        {
            "resourceType": "Provenance",
            "id": stable_id(uid, model, "provenance"),
            "meta": {"security": [AI_ASSERTED_LABEL]},
            "target": [{"reference": f"{r.get_resource_type()}/{r.id}"} for r in (report, *observations)],
            "recorded": row.scored_at,
            "activity": {"coding": [{"system": DATA_OPERATION_SYSTEM, "code": "CREATE", "display": "create"}]},
            "agent": [
                {
                    "type": {"coding": [{"system": PROVENANCE_PARTICIPANT_SYSTEM, "code": "author"}]},
                    "who": device,
                }
            ],
            "entity": [{"role": "source", "what": study_reference(uid)}],
        }
    )
    return [report, *observations, provenance]


def result_ndjson_text(rows: Iterable[ResultRow]) -> str:
    """Model results as NDJSON: each model's Device once, then each row's :func:`result_resources`."""
    rows = list(rows)
    devices = {device_id(row.provenance): model_device(row.provenance) for row in rows}
    return ndjson_text([*devices.values(), *(r for row in rows for r in result_resources(row))])


# --------------------------------------------------------------------------------- reviewed labels


@dataclass(frozen=True)
class ReviewedLabel:
    """A clinician's current decision on one label of one study, as exported.

    Attributes:
        study_uid: StudyInstanceUID.
        label: Label name.
        value: The reviewed value (present or absent).
        decision: ``agree`` (status ``final``), ``disagree`` or ``corrected`` (status ``amended``).
        reviewer: Reviewer's pseudonym (never the login name).
        decided_at: When it was decided (ISO 8601 with time zone).
        model_name: The model that scored.
        model_version: Its version.
        probability: The model probability the reviewer saw.
        threshold: The threshold the reviewer saw.
        comment: The reviewer's comment to export, or None (not exported).
    """

    study_uid: str
    label: str
    value: bool
    decision: str
    reviewer: str
    decided_at: str
    model_name: str
    model_version: str
    probability: float
    threshold: float
    comment: str | None = None

    @property
    def status(self) -> str:
        """``final`` when the reviewer agreed with the model, else ``amended``."""
        return "final" if self.decision == "agree" else "amended"


def _reviewer(reviewed: ReviewedLabel) -> dict[str, Any]:
    return {"type": "Practitioner", "identifier": {"system": REVIEWER_SYSTEM, "value": reviewed.reviewer}}


def _reviewed_observation(reviewed: ReviewedLabel) -> Observation:
    notes = [
        {
            "text": f"Reviewed by a clinician ({reviewed.decision}); model probability {reviewed.probability:.3f}"
            f" at threshold {reviewed.threshold:.3f}."
        }
    ]
    if reviewed.comment:
        notes.append({"text": reviewed.comment})
    return Observation.model_validate(
        {
            "resourceType": "Observation",
            "id": stable_id("reviewed", reviewed.study_uid, reviewed.label),
            "meta": {"security": [CLINICIAN_ASSERTED_FROM_AI_LABEL]},
            "status": reviewed.status,
            "code": label_code(reviewed.label),
            "valueBoolean": reviewed.value,
            "interpretation": interpretation(reviewed.value),
            "issued": reviewed.decided_at,
            "performer": [_reviewer(reviewed)],
            "device": {
                "type": "Device",
                "identifier": {"system": MODEL_SYSTEM, "value": f"{reviewed.model_name}/{reviewed.model_version}"},
                "display": f"medfusion model {reviewed.model_name} v{reviewed.model_version}",
            },
            "note": notes,
        }
    )


def reviewed_resources(reviewed: Iterable[ReviewedLabel]) -> list[Resource]:
    """Reviewed labels as FHIR: per study (by UID), its DiagnosticReport then its Observations by label.

    A report is ``amended`` when any of its labels is, else ``final``; its conclusion lists the
    labels reviewed as present.

    Returns:
        Validated resources.
    """
    by_study: dict[str, list[ReviewedLabel]] = defaultdict(list)
    for item in reviewed:
        by_study[item.study_uid].append(item)
    resources: list[Resource] = []
    for uid in sorted(by_study):
        items = sorted(by_study[uid], key=lambda r: r.label)
        observations = [_reviewed_observation(r) for r in items]
        positives = [r.label for r in items if r.value]
        report = DiagnosticReport.model_validate(
            {
                "resourceType": "DiagnosticReport",
                "id": stable_id("reviewed", uid),
                "meta": {"security": [CLINICIAN_ASSERTED_FROM_AI_LABEL]},
                "status": "amended" if any(r.status == "amended" for r in items) else "final",
                "category": radiology_category(),
                "code": imaging_report_code("medfusion reviewed findings"),
                "study": [study_reference(uid)],
                "issued": max(r.decided_at for r in items),
                "resultsInterpreter": [_reviewer(r) for r in {r.reviewer: r for r in items}.values()],
                "result": [{"reference": f"Observation/{o.id}"} for o in observations],
                "conclusion": ("Positive: " + ", ".join(positives)) if positives else "No reviewed finding positive.",
            }
        )
        resources += [report, *observations]
    return resources


# ------------------------------------------------------------------------------------------- files


def ndjson_text(resources: Iterable[Resource]) -> str:
    """Resources as NDJSON: one compact JSON resource per line (empty fields left out)."""
    return "".join(r.model_dump_json() + "\n" for r in resources)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_fhir_ndjson(resources: Iterable[Resource], path: str | Path) -> Path:
    """Write FHIR resources as NDJSON (:func:`ndjson_text`).

    Args:
        resources: Validated ``fhir.resources`` resources (DiagnosticReport, ImagingStudy...).
        path: Output file (folders are created; the file is replaced atomically).

    Returns:
        The path written.
    """
    path = Path(path)
    _write_atomic(path, ndjson_text(resources))
    return path


def write_fhir_bundle(resources: Iterable[Resource], path: str | Path) -> Path:
    """Write FHIR resources as one ``collection`` Bundle (pretty-printed JSON).

    Args:
        resources: Validated ``fhir.resources`` resources.
        path: Output file (folders are created; the file is replaced atomically).

    Returns:
        The path written.
    """
    path = Path(path)
    bundle = Bundle(type="collection", entry=[BundleEntry(resource=r) for r in resources] or None)
    _write_atomic(path, bundle.model_dump_json(indent=2) + "\n")
    return path
