"""FHIR R5 vocabulary of medfusion: code systems, codes and the small JSON fragments built from them.

Every resource medfusion reads or writes names its systems through this module, so that the
readers (:mod:`medfusion.fhir.read`) and the writers (:mod:`medfusion.fhir.write`) agree.

Imports: the standard library only.
"""

from __future__ import annotations

from typing import Any

LOINC_SYSTEM = "http://loinc.org"
#: LOINC "Diagnostic imaging study", the code of every DiagnosticReport we write.
IMAGING_REPORT_CODE = "18748-4"
IMAGING_REPORT_DISPLAY = "Diagnostic imaging study"
V2_0203_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
V2_0074_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DICOM_UID_SYSTEM = "urn:dicom:uid"
#: Identifier system for an accession number that is already pseudonymised (value ``acc-<hex>``).
ACCESSION_PSEUDONYM_SYSTEM = "urn:medfusion:accession-pseudonym"
#: A model as ``<name>/<version>`` (meta tags of results, Device identifiers of reviewed labels).
MODEL_SYSTEM = "urn:medfusion:model"
#: A finding label (``nodule``, ``effusion``...).
LABEL_SYSTEM = "urn:medfusion:label"
#: A reviewer's pseudonym (:func:`medfusion.privacy.pseudonym` ``kind="reviewer"``).
REVIEWER_SYSTEM = "urn:medfusion:reviewer"
STATUS_SYSTEM = "urn:medfusion:result-status"
#: Tag of every model output: not verified by a clinician.
UNVERIFIED_TAG = {"system": STATUS_SYSTEM, "code": "UNVERIFIED", "display": "not verified by a clinician"}

#: A model's id (``<config name>-<weights hash>``), the second identifier of its Device.
MODEL_ID_SYSTEM = "urn:medfusion:model-id"
V3_OBSERVATION_VALUE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
#: Codes the HL7 AI Transparency IG adds to ``v3-ObservationValue`` for ``meta.security``.
AI_TRANSPARENCY_SYSTEM = "http://hl7.org/fhir/uv/aitransparency/CodeSystem/AddedProvenanceCS"
#: ``meta.security`` of every model output: asserted by an AI (HL7 AI Transparency on FHIR).
AI_ASSERTED_LABEL = {
    "system": V3_OBSERVATION_VALUE_SYSTEM,
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
#: ``meta.security`` of reviewed labels: a clinician asserted what an AI reported.
CLINICIAN_ASSERTED_FROM_AI_LABEL = {
    "system": AI_TRANSPARENCY_SYSTEM,
    "code": "CLINAST_AIRPT",
    "display": "Clinician Asserted from AI Reported",
}
PROVENANCE_PARTICIPANT_SYSTEM = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"

#: Every R5 DiagnosticReport status; ``fhir.resources`` does not enforce the value set.
FHIR_STATUSES = frozenset(
    {
        "registered",
        "partial",
        "preliminary",
        "modified",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
#: Statuses whose report must not be used.
REJECTED_STATUSES = frozenset({"entered-in-error", "cancelled"})


def study_identifier(uid: str) -> dict[str, str]:
    """A StudyInstanceUID as an identifier: ``urn:dicom:uid`` / ``urn:oid:<uid>``."""
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}


def study_reference(uid: str) -> dict[str, Any]:
    """A logical reference to the ImagingStudy of ``uid`` (no server id needed)."""
    return {"type": "ImagingStudy", "identifier": study_identifier(uid)}


def radiology_category() -> list[dict[str, Any]]:
    """``category`` of a radiology DiagnosticReport (v2-0074 ``RAD``)."""
    return [{"coding": [{"system": V2_0074_SYSTEM, "code": "RAD", "display": "Radiology"}]}]


def imaging_report_code(text: str = IMAGING_REPORT_DISPLAY) -> dict[str, Any]:
    """``code`` of a DiagnosticReport: LOINC 18748-4 "Diagnostic imaging study", with ``text``."""
    return {
        "coding": [{"system": LOINC_SYSTEM, "code": IMAGING_REPORT_CODE, "display": IMAGING_REPORT_DISPLAY}],
        "text": text,
    }


def label_code(label: str) -> dict[str, Any]:
    """``code`` of a per-label Observation."""
    return {"coding": [{"system": LABEL_SYSTEM, "code": label, "display": label}], "text": label}


def interpretation(positive: bool) -> list[dict[str, Any]]:
    """``interpretation`` of a per-label Observation: ``POS`` or ``NEG``."""
    code, display = ("POS", "Positive") if positive else ("NEG", "Negative")
    return [{"coding": [{"system": INTERPRETATION_SYSTEM, "code": code, "display": display}]}]
