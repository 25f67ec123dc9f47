"""One scored study -> one DICOM SR: a TID 1500 Measurement Report in a Comprehensive 3D SR.

Content tree (``dsrdump`` shows it)::

    Imaging Measurement Report (TID 1500)
      Language, Observer: device = the model (name, manufacturer medfusion, UID from the model id)
      Procedure reported: Plain chest X-ray (SCT 399208008)
      Imaging Measurements
        Measurement Group (TID 1501), one per label
          Tracking identifier: the label (UID from study, model and label)
          Finding: the label's code (:mod:`.codes`)
          Algorithm identification (TID 4019): model name, model version; parameters
              ``model_id=...``, ``medfusion_version=...``, ``status=UNVERIFIED``
          Source: every instance the study was scored from (IMAGE references)
          Probability (DCM 122157) = p, unit {probability} (UCUM)
          Threshold Value (DCM 122411) = t, unit {probability} (UCUM)
          <finding code> = Present (SCT 52101004) when p >= t, else Absent (SCT 272519000)

A clinician's review makes a second, VERIFIED SR of the same series (:class:`Verification`): the
reviewed labels with the clinician's Present/Absent, the clinician as observer and verifier, FINAL,
superseding the UNVERIFIED one (``PredecessorDocumentsSequence``).

The document is complete (``CompletionFlag`` COMPLETE), preliminary and ``UNVERIFIED``; its patient
and study modules are copied from the source study (:class:`~.source.SourceStudy`) and its
``CurrentRequestedProcedureEvidenceSequence`` lists the source instances. Series and SOP Instance
UIDs are derived from the study and the model (same study, same model: same UIDs), so a re-scored
study is the same object to the PACS.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.valuerep import DT

from medfusion.dicom_sr.codes import PRIVATE_SCHEME, PRIVATE_SCHEME_NAME, CodeMap, FindingCode
from medfusion.dicom_sr.source import SourceStudy
from medfusion.errors import MedfusionError
from medfusion.results import ResultRow

MANUFACTURER = "medfusion"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: Namespace of the name-based UUIDs behind the SR's UIDs.
UID_NAMESPACE = uuid.UUID("5d3c1f0e-2b7a-4c61-9a52-6f1d0e8b7c3a")
SERIES_NUMBER = 9901
SERIES_DESCRIPTION = "medfusion AI findings (UNVERIFIED)"
VERIFIED_SERIES_DESCRIPTION = "medfusion AI findings (VERIFIED)"
#: Concept names and values written (DICOM DCM and SNOMED CT codes).
PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")
THRESHOLD = hd.sr.CodedConcept("122411", "DCM", "Threshold Value")
PROBABILITY_UNIT = hd.sr.CodedConcept("{probability}", "UCUM", "probability")
PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
ABSENT = hd.sr.CodedConcept("272519000", "SCT", "Absent")
PROCEDURE = hd.sr.CodedConcept("399208008", "SCT", "Plain chest X-ray")


def concept(code: FindingCode) -> hd.sr.CodedConcept:
    """A :class:`~.codes.FindingCode` as a highdicom coded concept."""
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def derived_uid(*parts: str) -> str:
    """A UUID-derived ``2.25.<n>`` UID (PS3.5 B.2) from a name-based UUID of ``parts``: same parts, same UID."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, chr(31).join(parts)).int}"


def sr_uids(row: ResultRow) -> tuple[str, str]:
    """``(SeriesInstanceUID, SOPInstanceUID)`` of a study's SR, derived from the study and the model
    (name, version, id)."""
    p = row.provenance
    key = ("medfusion-sr", str(row.study_uid), p.model_name, p.model_version, p.model_id)
    return derived_uid(*key, "series"), derived_uid(*key, "instance")


@dataclass(frozen=True)
class Verification:
    """A clinician's review of a study's UNVERIFIED SR, turning it into a VERIFIED one.

    Attributes:
        observer: The verifying observer's name as signed (DICOM PN: ``Family^Given`` or free text).
        organization: The verifying organization (DICOM Type 1 there: not empty).
        verified_at: When the decisions were made (timezone-aware).
        decisions: Label -> present, for the labels the clinician reviewed (the others are left out).
        predecessor: The UNVERIFIED SR this one supersedes (``PredecessorDocumentsSequence``).
    """

    observer: str
    organization: str
    verified_at: dt.datetime
    decisions: Mapping[str, bool]
    predecessor: Dataset


def build_sr(
    row: ResultRow, source: SourceStudy, codes: CodeMap | None = None, verification: Verification | None = None
) -> hd.sr.Comprehensive3DSR:
    """The SR of one scored study: the model's findings (UNVERIFIED), or a clinician's (VERIFIED).

    Args:
        row: The study's result (probabilities, thresholds, provenance).
        source: Its source headers (patient/study modules, instances scored).
        codes: Finding codes (default :class:`~.codes.CodeMap` ()).
        verification: A clinician's review: the SR then holds a measurement group per reviewed label
            with the clinician's Present/Absent (the model's probability and threshold kept), the
            clinician as person observer next to the model, ``VerificationFlag`` VERIFIED with the
            observer, organization and time, ``PreliminaryFlag`` FINAL, and a reference to the
            UNVERIFIED SR it supersedes; its SOP Instance UID is derived from that SR, the observer
            and the time (each verification is a new object).

    Raises:
        MedfusionError: The row is not a scored study (no UID, an error, a non-finite probability), its
            study UID is not a valid DICOM UID (it also names the SR file), it belongs to another
            study than ``source``, or a verified label is not one of the row's, or none is, or the
            verifying observer or organization is empty.
    """
    codes = codes or CodeMap()
    if row.study_uid is None or row.error is not None:
        raise MedfusionError(f"study {row.study_uid}: no SR for a study that was not scored ({row.error})")
    if not _UID.fullmatch(row.study_uid) or len(row.study_uid) > 64:
        raise MedfusionError("the study's StudyInstanceUID is not a valid DICOM UID (digits and dots, 64 at most)")
    if row.study_uid != source.study_uid:
        raise MedfusionError(f"study {row.study_uid}: the source headers are of study {source.study_uid}")
    if not all(math.isfinite(float(v)) for v in (*row.probabilities, *row.thresholds)):
        raise MedfusionError(f"study {row.study_uid}: a probability or threshold is not finite")
    if verification is not None and (not verification.decisions or set(verification.decisions) - set(row.labels)):
        raise MedfusionError(f"study {row.study_uid}: verified labels must be some of the model's {list(row.labels)}")
    if verification is not None and not (verification.observer.strip() and verification.organization.strip()):
        raise MedfusionError("a verified SR needs the verifying observer's name and organization (DICOM Type 1)")
    p = row.provenance
    series_uid, sop_uid = sr_uids(row)
    if verification is not None:
        sop_uid = derived_uid(
            str(verification.predecessor.SOPInstanceUID),
            "verified",
            verification.verified_at.isoformat(),
            verification.observer,
        )
    device_uid = derived_uid("medfusion-model", p.model_id)
    algorithm = hd.sr.AlgorithmIdentification(
        name=p.model_name,
        version=p.model_version,
        parameters=[f"model_id={p.model_id}", f"medfusion_version={p.medfusion_version}", f"status={p.status}"],
        manufacturer=MANUFACTURER,
    )
    sources = [hd.sr.SourceImageForMeasurementGroup(i.sop_class_uid, i.sop_uid) for i in source.instances]
    groups = []
    for label, prob, threshold, positive in zip(
        row.labels, row.probabilities, row.thresholds, row.decisions, strict=True
    ):
        if verification is not None:
            if label not in verification.decisions:
                continue
            positive = verification.decisions[label]
        finding = concept(codes[label])
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(sop_uid, label), identifier=label),
                finding_type=finding,
                algorithm_id=algorithm,
                measurements=[
                    hd.sr.Measurement(name=PROBABILITY, value=float(prob), unit=PROBABILITY_UNIT),
                    hd.sr.Measurement(name=THRESHOLD, value=float(threshold), unit=PROBABILITY_UNIT),
                ],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=finding, value=PRESENT if positive else ABSENT)
                ],
                source_images=sources,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid, name=p.model_name, manufacturer_name=MANUFACTURER, model_name=p.model_version_code
        ),
    )
    person = None
    if verification is not None:
        person = hd.sr.ObserverContext(
            observer_type=dcm_codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=verification.observer, organization_name=verification.organization or None
            ),
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=person, observer_device_context=observer),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    schemes = []
    if codes.private_labels(row.labels):
        schemes.append(CodingSchemeIdentificationItem(designator=PRIVATE_SCHEME, name=PRIVATE_SCHEME_NAME))
    verified = verification is not None
    sr = hd.sr.Comprehensive3DSR(
        evidence=source.evidence(),
        content=report[0],
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=2 if verified else 1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=verified,
        is_verified=verified,
        verifying_observer_name=verification.observer if verification else None,
        verifying_organization=verification.organization if verification else None,
        previous_versions=[verification.predecessor] if verification else None,
        series_description=VERIFIED_SERIES_DESCRIPTION if verified else SERIES_DESCRIPTION,
        coding_schemes=schemes or None,
    )
    if verification is not None:  # highdicom stamps the build time; the verification happened at the decision
        sr.VerifyingObserverSequence[0].VerificationDateTime = DT(verification.verified_at)
    return sr


def write_sr(sr: Dataset, path: Path) -> None:
    """Write an SR as a DICOM Part-10 file (the caller makes it durable)."""
    sr.save_as(path, enforce_file_format=True)
