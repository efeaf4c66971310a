"""De-identification of every output: ``plan.json`` copies, reports, markups and DICOM objects.

DICOM objects follow the PS3.15 Annex E Basic Application Level Confidentiality Profile for
the attributes our objects can carry (the table below: D/Z -> dummy or empty, X -> removed,
U -> replaced by a new UID, consistently within one report set); private elements are
removed; Patient Identity Removed is YES and the method is recorded with its code (DCM 113100).
Dates of the plan itself (when it was computed) are not patient data and are kept.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Any, Callable

UidMap = Callable[[str], str]

#: PS3.15 Table E.1-1 actions for the attributes our DICOM objects can hold (basic profile).
BASIC_PROFILE: dict[str, str] = {
    "PatientName": "Z", "PatientID": "Z", "PatientBirthDate": "Z", "PatientSex": "Z", "PatientAge": "X",
    "PatientSize": "X", "PatientWeight": "X", "PatientBirthTime": "X", "OtherPatientIDs": "X",
    "OtherPatientNames": "X", "OtherPatientIDsSequence": "X", "IssuerOfPatientID": "X", "PatientAddress": "X",
    "PatientMotherBirthName": "X", "PatientTelephoneNumbers": "X", "EthnicGroup": "X", "PatientComments": "X",
    "MedicalRecordLocator": "X", "AdditionalPatientHistory": "X", "Occupation": "X", "PatientReligiousPreference": "X",
    "StudyDate": "Z", "StudyTime": "Z", "SeriesDate": "X", "SeriesTime": "X", "AcquisitionDate": "X",
    "AcquisitionTime": "X", "AcquisitionDateTime": "Z", "ContentDate": "Z", "ContentTime": "Z",
    "AccessionNumber": "Z", "StudyID": "Z", "ReferringPhysicianName": "Z", "StudyDescription": "X",
    "SeriesDescription": "X", "PerformingPhysicianName": "X", "OperatorsName": "X", "NameOfPhysiciansReadingStudy": "X",
    "RequestingPhysician": "X", "InstitutionName": "X", "InstitutionAddress": "X", "InstitutionalDepartmentName": "X",
    "StationName": "X", "DeviceSerialNumber": "X", "RequestAttributesSequence": "X", "ReferencedStudySequence": "X",
    "ReferencedPatientSequence": "X", "AdmittingDiagnosesDescription": "X", "InstanceCreationDate": "X",
    "InstanceCreationTime": "X", "InstanceCreatorUID": "U",
    "StudyInstanceUID": "U", "SeriesInstanceUID": "U", "SOPInstanceUID": "U", "FrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U", "MediaStorageSOPInstanceUID": "U", "SynchronizationFrameOfReferenceUID": "U",
}
#: Attributes the profile allows to replace by a dummy (its "D" of "Z/D", "X/Z/D"), where an
#: object's IOD needs a value (type 1): DICOM SEG (Enhanced General Equipment: Device Serial
#: Number; Segmentation Image: Content Date and Time) and SR documents (SR Document General).
DUMMIES: dict[str, dict[str, str]] = {
    "1.2.840.10008.5.1.4.1.1.66.4": {"DeviceSerialNumber": "0", "ContentDate": "19000101", "ContentTime": "000000"},
    "1.2.840.10008.5.1.4.1.1.88.34": {"ContentDate": "19000101", "ContentTime": "000000"},
    "1.2.840.10008.5.1.4.1.1.88.33": {"ContentDate": "19000101", "ContentTime": "000000"},
}
METHOD = "DICOM PS3.15 E.1 Basic Application Confidentiality Profile"
PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")


def new_uid_map(salt: bytes | None = None) -> UidMap:
    """A function mapping each original UID to a new one, the same for the same UID (one map per run)."""
    from pydicom.uid import generate_uid

    s = salt if salt is not None else secrets.token_bytes(16)
    cache: dict[str, str] = {}

    def mapped(uid: str) -> str:
        if not uid:
            return uid
        if uid not in cache:
            digest = hashlib.sha256(s + uid.encode()).hexdigest()
            cache[uid] = str(generate_uid(prefix="2.25.", entropy_srcs=[digest]))
        return cache[uid]

    return mapped


def anonymize_dataset(ds: Any, uid_map: UidMap) -> Any:
    """Apply the basic profile to a pydicom Dataset in place (sequences too); returns it."""
    from pydicom.dataset import Dataset

    def walk(d: Dataset) -> None:
        d.remove_private_tags()
        for kw, action in BASIC_PROFILE.items():
            if kw not in d:
                continue
            if action == "X":
                delattr(d, kw)
            elif action == "Z":
                setattr(d, kw, "")
            elif action == "U":
                v = d.data_element(kw).value
                setattr(d, kw, [uid_map(str(u)) for u in v] if isinstance(v, (list, tuple)) or
                        type(v).__name__ == "MultiValue" else uid_map(str(v)))
        for elem in list(d):
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)

    walk(ds)
    for kw, dummy in DUMMIES.get(str(ds.get("SOPClassUID", "")), {}).items():
        if not ds.get(kw):
            setattr(ds, kw, dummy)
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = [code]
    return ds


def anonymize_plan(doc: dict[str, Any], uid_map: UidMap) -> dict[str, Any]:
    """A copy of a ``plan.json`` document without names, IDs, birth dates, paths or original UIDs.

    The voxel hash stays (it identifies the voxels, not the patient): ``planner review`` checks
    an anonymized plan by that hash alone.
    """
    import copy

    out = copy.deepcopy(doc)
    out["patient"] = {}
    out["study"] = {}
    im = out.setdefault("image", {})
    for key in ("series_instance_uid", "study_instance_uid", "frame_of_reference_uid"):
        if im.get(key):
            im[key] = uid_map(im[key])
    im["source"] = ""
    src = str(out.get("structures_source", ""))
    if src and src != "automatic segmentation":
        out["structures_source"] = "supplied structures (path removed)"
    out["anonymized"] = True
    out["deidentification"] = {
        "method": METHOD,
        "removed": ["patient name, ID, birth date, sex", "study date, accession number, descriptions",
                    "file paths"],
        "uids": "study, series and frame of reference UIDs replaced by new ones; planner review checks the voxel hash",
    }
    return out


def identifiers_of(meta: Any) -> list[str]:
    """The identifying strings of a CT's metadata that must not appear in de-identified outputs."""
    values = [meta.patient_name, meta.patient_id, meta.patient_birth_date, meta.accession_number,
              meta.study_instance_uid, meta.series_instance_uid]
    out = [str(v) for v in values if v and len(str(v)) >= 3]
    if meta.patient_name:
        out += [p for p in str(meta.patient_name).replace("^", " ").split() if len(p) >= 3]
    src = os.fspath(meta.source) if meta.source else ""
    return out + ([src] if src else [])
