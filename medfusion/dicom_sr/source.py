"""The source study's headers an SR needs, read where the study's files are (the scoring worker).

The pipeline strips identifiers from everything it keeps (:func:`medfusion.ingest.dicom.header.image_meta`);
a DICOM SR must carry them to attach to the right patient in the PACS. :func:`read_source_study`
reads them from the files a study was scored from, for the SR path only: a :class:`SourceStudy` is
held in memory until its SR is written and never logged or stored anywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from medfusion.errors import DicomReadError
from medfusion.ingest.dicom.guard import guard, pydicom_warnings
from medfusion.ingest.dicom.header import read_dataset
from medfusion.ingest.dicom.limits import byte_limit
from medfusion.privacy import remember_phi

#: Root attributes of the Patient, Clinical Trial Subject, General Study, Patient Study and Clinical
#: Trial Study modules (the Patient and Study IEs of the Comprehensive 3D SR IOD), copied to the SR.
PATIENT_STUDY_KEYWORDS = (
    # Patient
    "ReferencedPatientSequence", "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID",
    "IssuerOfPatientIDQualifiersSequence", "SourcePatientGroupIdentificationSequence",
    "GroupOfPatientsIdentificationSequence", "PatientBirthDate", "PatientBirthTime",
    "PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar",
    "PatientAlternativeCalendar", "PatientSex", "QualityControlSubject", "StrainDescription",
    "StrainNomenclature", "StrainStockSequence", "StrainAdditionalInformation", "StrainCodeSequence",
    "GeneticModificationsSequence", "OtherPatientNames", "OtherPatientIDsSequence",
    "ReferencedPatientPhotoSequence", "EthnicGroupCodeSequence", "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence", "PatientBreedDescription", "PatientBreedCodeSequence",
    "BreedRegistrationSequence", "ResponsiblePerson", "ResponsiblePersonRole", "ResponsibleOrganization",
    "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    # Clinical Trial Subject
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
    "IssuerOfClinicalTrialProtocolID", "OtherClinicalTrialProtocolIDsSequence", "ClinicalTrialSiteID",
    "ClinicalTrialSiteName", "IssuerOfClinicalTrialSiteID", "ClinicalTrialSubjectID",
    "IssuerOfClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "IssuerOfClinicalTrialSubjectReadingID", "ClinicalTrialProtocolEthicsCommitteeName",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
    # General Study
    "StudyDate", "StudyTime", "AccessionNumber", "IssuerOfAccessionNumberSequence", "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianName",
    "ConsultingPhysicianIdentificationSequence", "StudyDescription", "ProcedureCodeSequence",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "ReferencedStudySequence", "StudyInstanceUID", "StudyID",
    "RequestingService", "RequestingServiceCodeSequence", "ReasonForPerformedProcedureCodeSequence",
    # Patient Study
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "PatientAge", "PatientSize",
    "PatientSizeCodeSequence", "PatientBodyMassIndex", "MeasuredAPDimension", "MeasuredLateralDimension",
    "PatientWeight", "MedicalAlerts", "Allergies", "Occupation", "SmokingStatus", "AdditionalPatientHistory",
    "PregnancyStatus", "LastMenstrualDate", "PatientSexNeutered", "ReasonForVisit", "ReasonForVisitCodeSequence",
    "AdmissionID", "IssuerOfAdmissionIDSequence", "ServiceEpisodeID", "ServiceEpisodeDescription",
    "IssuerOfServiceEpisodeIDSequence", "PatientState",
    # Clinical Trial Study
    "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription", "LongitudinalTemporalOffsetFromEvent",
    "LongitudinalTemporalEventType", "ClinicalTrialTimePointTypeCodeSequence",
    "IssuerOfClinicalTrialTimePointID", "ConsentForClinicalTrialUseSequence",
)  # fmt: skip
#: Type 2 attributes of those modules the SR must carry, empty when the source lacks them.
TYPE2_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


@dataclass(frozen=True)
class SourceInstance:
    """One instance a study was scored from (an evidence reference of the SR).

    Attributes:
        series_uid: SeriesInstanceUID.
        sop_class_uid: SOPClassUID.
        sop_uid: SOPInstanceUID.
    """

    series_uid: str
    sop_class_uid: str
    sop_uid: str


@dataclass(frozen=True)
class SourceStudy:
    """What an SR copies from its source study (identifiers included: see the module docstring).

    Attributes:
        header: The patient and study module attributes (:data:`PATIENT_STUDY_KEYWORDS`) and
            ``SpecificCharacterSet`` of the study's first instance.
        instances: The instances the study was scored from, in file order.
    """

    header: Dataset
    instances: tuple[SourceInstance, ...]

    @property
    def study_uid(self) -> str:
        """StudyInstanceUID."""
        return str(self.header.StudyInstanceUID)

    def evidence(self) -> list[Dataset]:
        """One dataset per instance for :class:`highdicom.sr.Comprehensive3DSR` ``evidence``: the
        first carries the patient and study modules, every one its study, series and SOP UIDs."""
        datasets = []
        for i, instance in enumerate(self.instances):
            ds = Dataset()
            if i == 0:
                ds.update(self.header)
            ds.StudyInstanceUID = self.study_uid
            ds.SeriesInstanceUID = instance.series_uid
            ds.SOPClassUID = instance.sop_class_uid
            ds.SOPInstanceUID = instance.sop_uid
            datasets.append(ds)
        return datasets


def read_source_study(paths: Sequence[str | Path], *, max_bytes: int | None = None) -> SourceStudy:
    """Read the headers of a study's files (no pixel data) into a :class:`SourceStudy`.

    Args:
        paths: The files the study was scored from (one study).
        max_bytes: Refuse larger files (default :func:`~medfusion.ingest.dicom.limits.byte_limit`).

    Raises:
        DicomReadError: No file, a file that cannot be read, a UID missing, or files of several studies.
    """
    if not paths:
        raise DicomReadError(Path("."), "no source file to reference in the SR")
    limit = max_bytes or byte_limit()
    header: Dataset | None = None
    instances: list[SourceInstance] = []
    for item in paths:
        path = Path(item)
        with pydicom_warnings(path):
            ds = guard(path, lambda path=path: read_dataset(path, pixels=False, max_bytes=limit))
        uids = [str(ds.get(k) or "").strip() for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")]
        sop_uid = str(ds.get("SOPInstanceUID") or "").strip()
        if not all(uids) or not sop_uid:
            raise DicomReadError(path, "missing a UID an SR reference needs (study, series, SOP class or instance)")
        if header is None:
            header = _patient_study(ds)
        elif uids[0] != str(header.StudyInstanceUID):
            raise DicomReadError(path, "belongs to another study than the first file")
        instances.append(SourceInstance(uids[1], uids[2], sop_uid))
    assert header is not None
    return SourceStudy(header, tuple(instances))


def _patient_study(ds: Dataset) -> Dataset:
    """The patient and study module attributes of ``ds`` (type 2 ones empty when absent)."""
    header = Dataset()
    if "SpecificCharacterSet" in ds:
        header.SpecificCharacterSet = ds.SpecificCharacterSet
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in ds:
            header[keyword] = ds[keyword]
    for keyword in TYPE2_KEYWORDS:
        if keyword not in header:
            setattr(header, keyword, None)
    remember_phi(header.PatientID, str(header.PatientName or ""), header.AccessionNumber)
    return header


def source_from_sr(sr: Dataset) -> SourceStudy:
    """The source study of an SR medfusion wrote: its patient and study modules and evidence instances.

    This is what a VERIFIED SR is built from (the clinician reviews what the UNVERIFIED one says, about
    the instances it references), without reading the images again.

    Raises:
        DicomReadError: The SR lists no evidence instance.
    """
    instances = [
        SourceInstance(
            str(series.SeriesInstanceUID), str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID)
        )
        for study in sr.get("CurrentRequestedProcedureEvidenceSequence", [])
        for series in study.get("ReferencedSeriesSequence", [])
        for item in series.get("ReferencedSOPSequence", [])
    ]
    if not instances:
        raise DicomReadError(Path(str(sr.get("SOPInstanceUID", "SR"))), "the SR lists no evidence instance")
    return SourceStudy(_patient_study(sr), tuple(instances))
