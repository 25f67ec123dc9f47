"""The DICOM header as rows for a panel, with identifiers masked unless the user may see them.

Masked (PS3.15 Annex E, Basic Application Level Confidentiality Profile, the attributes a reader
may meet on an image): every person name (VR PN), date, time and date-time (DA, TM, DT), the
patient's and study's identifiers and demographics (:data:`IDENTIFYING`), every private element, and
the contents of sequences (shown as an item count only). Values are shown, never logged: reading
goes through the project's bounded, redacted header reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from medfusion.ingest.dicom.guard import guard, pydicom_warnings
from medfusion.ingest.dicom.header import read_dataset
from medfusion.ingest.dicom.limits import byte_limit
from medfusion.privacy import remember_phi

#: What a masked value shows.
MASK = "•••• (masked)"
#: Value representations that are always identifying (person names, dates, times).
IDENTIFYING_VRS = frozenset({"PN", "DA", "TM", "DT"})
#: Identifying attributes of PS3.15 Table E.1-1 that are not PN/DA/TM/DT (IDs, demographics, places).
IDENTIFYING = frozenset(
    {
        "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
        "PatientBirthName", "PatientMotherBirthName", "PatientAge", "PatientSex", "PatientSize", "PatientWeight",
        "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "CountryOfResidence",
        "RegionOfResidence", "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "EthnicGroup",
        "Occupation", "PatientReligiousPreference", "PatientComments", "AdditionalPatientHistory",
        "PregnancyStatus", "MedicalAlerts", "Allergies", "SmokingStatus", "PatientInsurancePlanCodeSequence",
        "AccessionNumber", "StudyID", "AdmissionID", "ServiceEpisodeID", "RequestAttributesSequence",
        "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
        "DeviceSerialNumber", "DetectorID", "PlateID", "CassetteID", "GantryID", "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers", "StudyDescription", "SeriesDescription", "RequestedProcedureID",
        "RequestedProcedureDescription", "PerformedProcedureStepID", "PerformedProcedureStepDescription",
        "ScheduledProcedureStepID", "FillerOrderNumberImagingServiceRequest",
        "PlacerOrderNumberImagingServiceRequest", "ImageComments", "ProtocolName", "DerivationDescription",
        "AcquisitionComments", "TextComments", "ContentCreatorName", "OperatorsName", "PerformingPhysicianName",
        "ReasonForStudy", "RequestingPhysician", "RequestingService", "CurrentPatientLocation",
        "PatientInstitutionResidence", "ResponsiblePerson", "ResponsibleOrganization",
        "IssuerOfAccessionNumberSequence",
    }
)  # fmt: skip
#: Longest value shown (longer ones are cut).
MAX_VALUE_CHARS = 120


@dataclass(frozen=True)
class HeaderRow:
    """One element of the header as shown.

    Attributes:
        tag: ``(gggg,eeee)``.
        name: Keyword (or ``Private``/``Unknown``).
        vr: Value representation.
        value: The value as text, or :data:`MASK`.
        masked: Whether the value is hidden.
    """

    tag: str
    name: str
    vr: str
    value: str
    masked: bool


def is_identifying(keyword: str, vr: str, private: bool) -> bool:
    """Whether an element's value identifies (or may identify) the patient or the study."""
    return private or vr in IDENTIFYING_VRS or keyword in IDENTIFYING


def header_rows(ds: Dataset, *, may_see_identifiers: bool) -> list[HeaderRow]:
    """The dataset's top-level elements (pixel data left out), identifying values masked unless allowed.

    Args:
        ds: The dataset (file meta included when it has one).
        may_see_identifiers: The user's role allows identifiers (``User.may_see_identifiers``).
    """
    rows = []
    meta = getattr(ds, "file_meta", None)
    for dataset in (meta, ds):
        if dataset is None:
            continue
        for elem in dataset:
            if elem.tag.group == 0x7FE0 or elem.keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                continue
            keyword = elem.keyword or ("Private" if elem.tag.is_private else "Unknown")
            vr = str(elem.VR)
            value = f"[sequence: {len(elem.value or [])} item(s)]" if vr == "SQ" else _text(elem.value)
            masked = is_identifying(elem.keyword or "", vr, elem.tag.is_private) and not may_see_identifiers
            if masked and vr != "SQ":
                value = MASK if value else ""
            if not masked and vr != "SQ" and is_identifying(elem.keyword or "", vr, elem.tag.is_private):
                remember_phi(value)  # shown to an allowed user: still never in a log line
            rows.append(HeaderRow(f"({elem.tag.group:04X},{elem.tag.element:04X})", keyword, vr, value, masked))
    return rows


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return f"[{len(value)} bytes]"
    text = str(value) if value is not None else ""
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def read_header(path: str | Path) -> Dataset:
    """A file's header without pixel data (bounded, pydicom warnings redacted).

    Raises:
        DicomReadError: The file cannot be read.
    """
    path = Path(path)
    with pydicom_warnings(path):
        return guard(path, lambda: read_dataset(path, pixels=False, max_bytes=byte_limit()))
