"""De-identification of DICOM datasets and flat records before they leave the process.

A subset of the DICOM PS3.15 Annex E **Basic Application Level Confidentiality Profile** covering
the attributes medfusion reads, writes or could pass on, with the **Retain UIDs** option (study,
series and instance UIDs are kept: they are the join keys of manifests, ledgers and FHIR outputs;
sites that must not reveal them remap them upstream) and the **Retain Device Identity** option
(modality, body part and view are kept; they are inputs of the model).

Actions (PS3.15 Table E.1-1 codes in brackets):

* ``hash`` [Z/D, pseudonymised]: replaced by :func:`medfusion.privacy.pseudonym`, so records of the
  same patient/accession stay linkable without the value in clear: PatientID, AccessionNumber, StudyID.
* ``remove`` [X]: deleted: names, birth data, other IDs, addresses, institution and staff, dates and
  times, free-text comments.

:func:`deidentify_dataset` applies it to a pydicom ``Dataset`` (also inside sequences) and marks the
result (PatientIdentityRemoved = YES, DeidentificationMethod). :func:`deidentify_record` applies the
same policy to a flat dict keyed by DICOM keywords or medfusion's snake_case names (exports, app
downloads, FHIR-bound rows).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydicom.dataset import Dataset

from medfusion.privacy import pseudonym

#: DICOM keyword -> pseudonym kind, for attributes replaced by their pseudonym.
HASHED: dict[str, str] = {
    "PatientID": "patient",
    "AccessionNumber": "acc",
    "StudyID": "studyid",
}
#: DICOM keywords removed (PS3.15 action X, or Z/D where we have no use for a dummy value).
REMOVED: tuple[str, ...] = (
    "PatientName",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientMotherBirthName",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "IssuerOfPatientID",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "MedicalRecordLocator",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "MilitaryRank",
    "BranchOfService",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "AcquisitionDateTime",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "RequestAttributesSequence",
)
#: Value of DeidentificationMethod written on de-identified datasets.
METHOD = "medfusion PS3.15 basic profile subset; retain UIDs, device"

#: snake_case names used in medfusion records/exports -> the DICOM keyword whose policy applies.
RECORD_ALIASES: dict[str, str] = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "birth_date": "PatientBirthDate",
    "accession_number": "AccessionNumber",
    "accession": "AccessionNumber",
    "study_id": "StudyID",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "institution_name": "InstitutionName",
    "referring_physician_name": "ReferringPhysicianName",
    "other_patient_ids": "OtherPatientIDs",
}


def deidentify_dataset(ds: Dataset) -> Dataset:
    """A de-identified copy of ``ds`` (the input is not modified).

    Private tags are removed too (PS3.15: they may hold anything). Pixel data is kept as is: burned-in
    annotations are out of scope (radiographs of the demo have none; see SECURITY.md).

    Returns:
        The copy, with PatientIdentityRemoved ``YES`` and DeidentificationMethod :data:`METHOD`.
    """
    out = copy.deepcopy(ds)
    _apply(out)
    out.remove_private_tags()
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = METHOD
    return out


def _apply(ds: Dataset) -> None:
    for keyword, kind in HASHED.items():
        value = ds.get(keyword)
        if value is not None and str(value).strip():
            hashed = pseudonym(str(value), kind=kind)
            # SH (16 chars) holds only the digest: prefix "<kind>-" to get the records' pseudonym back.
            setattr(ds, keyword, hashed.split("-", 1)[1] if ds[keyword].VR == "SH" else hashed)
    for keyword in REMOVED:
        if keyword in ds:
            delattr(ds, keyword)
    for element in list(ds):
        if element.VR == "SQ" and element.value is not None:
            for item in element.value:
                _apply(item)


def deidentify_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a flat record with the same policy applied to its identifying keys.

    Keys are DICOM keywords (``PatientID``) or medfusion snake_case names (``patient_id``,
    ``accession_number``, see :data:`RECORD_ALIASES`); other keys pass unchanged. Hashed keys keep
    their name and hold the pseudonym; removed keys are dropped.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        keyword = RECORD_ALIASES.get(key, key)
        if keyword in REMOVED:
            continue
        if keyword in HASHED and value is not None and str(value).strip():
            out[key] = pseudonym(str(value), kind=HASHED[keyword])
        else:
            out[key] = value
    return out
