"""The report and its key images as DICOM objects in the CT's study, so a PACS files them beside it.

- the PDF as an **Encapsulated PDF** (SOP class 1.2.840.10008.5.1.4.1.1.104.1, modality DOC);
- each report image as a **Secondary Capture** image (1.2.840.10008.5.1.4.1.1.7, RGB), built by
  highdicom from the CT's header.

Both copy the Patient and General Study modules from one header of the planning series (same
Study Instance UID), and each gets a new series. Neither claims a position in the CT's frame
of reference: the images are drawings with annotations, so they carry a patient orientation
(where known) but no Image Plane module, and the Frame of Reference module (conditional for
Secondary Capture, absent from Encapsulated PDF) is not written.

:func:`validate_iod` checks a dataset against the IOD: every mandatory module's required (type
1 and 2) attributes are present (tables of the DICOM standard shipped with highdicom) and the
type 1 attributes we rely on are not empty.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import __version__
from ..errors import InputError
from .anonymize import UidMap, anonymize_dataset
from ..atomic import atomic_path

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
PDF_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
MANUFACTURER = "planner"

PATIENT_MODULE = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                  "OtherPatientIDsSequence", "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
                  "DeidentificationMethodCodeSequence")
STUDY_MODULE = ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                "StudyDescription")
PATIENT_STUDY_MODULE = ("PatientAge", "PatientSize", "PatientWeight")
#: Type 1 attributes that must hold a value (presence alone is checked from the standard's tables).
TYPE1 = {
    ENCAPSULATED_PDF: ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                       "ConversionType", "BurnedInAnnotation", "MIMETypeOfEncapsulatedDocument", "EncapsulatedDocument"),
    SECONDARY_CAPTURE: ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                        "ConversionType", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
                        "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData"),
    SEGMENTATION: ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                   "FrameOfReferenceUID", "Manufacturer", "ManufacturerModelName", "DeviceSerialNumber",
                   "SoftwareVersions", "ContentDate", "ContentTime", "SegmentationType", "SegmentSequence",
                   "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "NumberOfFrames",
                   "PixelData"),
    COMPREHENSIVE_3D_SR: ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                          "ContentDate", "ContentTime", "ValueType", "ConceptNameCodeSequence", "ContentSequence",
                          "CompletionFlag", "VerificationFlag", "ContentTemplateSequence"),
}
#: Highdicom builds these to their IODs; the tables of mandatory modules it ships do not model
#: their conditional attributes (they would ask, e.g., a Derivation Image Sequence of the shared
#: functional groups, a Referenced SOP Sequence of every SR content item): for them only the
#: type 1 attributes above are checked here, and the tests run dciodvfy on them.
_BUILT_BY_HIGHDICOM = (SEGMENTATION, COMPREHENSIVE_3D_SR)


def reference_header(source: str | os.PathLike[str], series_uid: str) -> Any:
    """One header (no pixels) of the series ``series_uid`` under a DICOM file or folder."""
    import pydicom

    p = Path(source)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any unreadable file is simply not the header we look for
            continue
        if str(ds.get("SeriesInstanceUID", "")) == series_uid and "StudyInstanceUID" in ds:
            return ds
    raise InputError(f"{p}: no DICOM file of series {series_uid} found; the DICOM exports need the CT as DICOM")


def _copy(ref: Any, ds: Any, keywords: tuple[str, ...]) -> None:
    for kw in keywords:
        if kw in ref:
            ds[kw] = ref[kw]


def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def encapsulated_pdf(pdf: bytes, ref: Any, title: str, series_uid: str | None = None) -> Any:
    """An Encapsulated PDF dataset in the study of ``ref`` (a CT header)."""
    from pydicom.dataset import FileMetaDataset, Dataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    date, time = _now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    _copy(ref, ds, PATIENT_MODULE + STUDY_MODULE + PATIENT_STUDY_MODULE)
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if kw not in ds:
            setattr(ds, kw, "")  # type 2: present, empty when unknown
    # Encapsulated Document Series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDescription = "Needle plan report"
    # General Equipment, SC Equipment
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"  # workstation
    # Encapsulated Document
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"  # the report names the patient
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf
    ds.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def secondary_capture(rgb: np.ndarray, ref: Any, series_uid: str, number: int, title: str,
                      orientation: tuple[str, str] | None) -> Any:
    """A Secondary Capture RGB image in the study of ``ref`` (highdicom); ``orientation`` as (row, column) directions."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=series_uid,
        series_number=SC_SERIES_NUMBER, sop_instance_uid=generate_uid(), instance_number=number,
        manufacturer=MANUFACTURER, patient_orientation=orientation or ("L", "P"),
    )
    if orientation is None:
        sc.PatientOrientation = ""  # type 2: unknown for a rendered view
    if "Laterality" not in sc:
        sc.Laterality = ""  # type 2C of General Series: a rendered view of the whole plan is of no one side
    sc.SeriesDescription = "Needle plan images"
    sc.ImageComments = title[:10240]
    sc.BurnedInAnnotation = "YES"
    sc.SoftwareVersions = __version__
    return sc


#: Orientation (row direction, column direction) of the needle-path drawings (see images.py).
PATH_ORIENTATION = {"path_axial": ("L", "P"), "path_coronal": ("L", "F"), "path_sagittal": ("P", "F")}


def write_dicom(pdf_path: str | os.PathLike[str], images: Mapping[str, str | os.PathLike[str]], ref: Any,
                out_dir: str | os.PathLike[str], title: str, uid_map: UidMap | None = None) -> list[Path]:
    """Write ``report.dcm`` (Encapsulated PDF) and ``sc_<name>.dcm`` per image into ``out_dir``.

    With ``uid_map`` the objects are de-identified (basic profile) before they are written.
    Each object is checked with :func:`validate_iod` before it is written.
    """
    from PIL import Image as PILImage
    from pydicom.uid import generate_uid

    from .images import image_title

    out = Path(out_dir)
    written = []
    objs: list[tuple[str, Any]] = [("report.dcm", encapsulated_pdf(Path(pdf_path).read_bytes(), ref, title))]
    sc_series = generate_uid()
    for n, (name, p) in enumerate(images.items(), start=1):
        rgb = np.asarray(PILImage.open(p).convert("RGB"))
        objs.append((f"sc_{name}.dcm", secondary_capture(rgb, ref, sc_series, n, image_title(name),
                                                         PATH_ORIENTATION.get(name))))
    written += save_datasets(objs, out, uid_map)
    return written


def save_datasets(objs: Any, out_dir: str | os.PathLike[str], uid_map: Any = None) -> list[Path]:
    """Write ``(file name, dataset)`` pairs into ``out_dir``: each de-identified first when
    ``uid_map`` is given, checked against its IOD (a failing check is a bug: AssertionError),
    and saved atomically as a DICOM file. Returns the paths written."""
    out = Path(out_dir)
    written = []
    for fname, ds in objs:
        if uid_map is not None:
            anonymize_dataset(ds, uid_map)
        problems = validate_iod(ds)
        if problems:
            raise AssertionError(f"{fname}: not a valid DICOM object: {'; '.join(problems)}")
        with atomic_path(out / fname, ".dcm") as tmp:
            ds.save_as(str(tmp), enforce_file_format=True)
        written.append(out / fname)
    return written


def validate_iod(ds: Any) -> list[str]:
    """Problems of a dataset against its IOD (empty when none found).

    Checks the presence of every required attribute of every mandatory module of the IOD
    (highdicom's tables of the standard), that type 1 attributes we rely on hold a value, and
    the values this project fixes (modality, MIME type, photometric interpretation).
    """
    problems: list[str] = []
    sop = str(ds.get("SOPClassUID", ""))
    try:
        from highdicom._standard_utils import check_required_attributes, get_iod_module_map, get_sop_class_iod_map
    except ImportError:  # highdicom moved its private tables: the checks below still run (tested)
        check_required_attributes = None  # type: ignore[assignment]
    if check_required_attributes is not None and sop not in _BUILT_BY_HIGHDICOM:
        iod = get_sop_class_iod_map().get(sop)
        if iod is None:
            return [f"unknown SOP class {sop!r}"]
        for module in get_iod_module_map()[iod]:
            if module["usage"] != "M":
                continue
            try:
                check_required_attributes(ds, module["key"], recursive=True)
            except AttributeError as exc:
                problems.append(f"module {module['key']}: {exc}")
    for kw in TYPE1.get(sop, ()):
        if kw not in ds or ds[kw].value in (None, "", b"") or (hasattr(ds[kw].value, "__len__") and len(ds[kw].value) == 0):
            problems.append(f"type 1 attribute {kw} is missing or empty")
    if sop == ENCAPSULATED_PDF:
        if ds.get("Modality") != "DOC":
            problems.append(f"Modality {ds.get('Modality')!r}: an encapsulated PDF's is 'DOC'")
        if ds.get("MIMETypeOfEncapsulatedDocument") != "application/pdf":
            problems.append("MIMETypeOfEncapsulatedDocument must be 'application/pdf'")
        doc = bytes(ds.get("EncapsulatedDocument", b""))
        if not doc.startswith(b"%PDF-"):
            problems.append("EncapsulatedDocument does not start with %PDF-")
    if sop == SECONDARY_CAPTURE and ds.get("PhotometricInterpretation") not in ("RGB", "MONOCHROME2"):
        problems.append(f"PhotometricInterpretation {ds.get('PhotometricInterpretation')!r}")
    return problems
