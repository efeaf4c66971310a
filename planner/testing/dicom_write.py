"""Write CT volumes as real DICOM series (CT Image Storage, one file per slice).

Used to build the embedded demo cases and the test series. Compression goes through pydicom's
encoders: RLE Lossless (pylibjpeg-rle or pydicom's own), JPEG-LS Lossless (pyjpegls), JPEG 2000
Lossless (pylibjpeg-openjpeg) and Deflated Explicit VR Little Endian.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..images.image import Image, ImageMeta

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

#: Short names for the transfer syntaxes this writer can produce.
TRANSFER_SYNTAXES = {
    "implicit": "1.2.840.10008.1.2",
    "explicit": "1.2.840.10008.1.2.1",
    "deflate": "1.2.840.10008.1.2.1.99",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
}


def _uid(seed: str | None) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[seed]) if seed else generate_uid()


def write_ct_slices(
    folder: str | os.PathLike[str],
    pixels: np.ndarray,
    positions: np.ndarray,
    row_cosine: Sequence[float],
    column_cosine: Sequence[float],
    pixel_spacing: Sequence[float],
    *,
    meta: ImageMeta | None = None,
    transfer_syntax: str = "explicit",
    uid_seed: str | None = None,
    slice_thickness: float | None = None,
    file_names: Sequence[str] | None = None,
    instance_numbers: Sequence[int] | None = None,
    unsigned: bool = True,
    extra: dict[str, object] | None = None,
) -> list[Path]:
    """Write one CT series (or MR, when ``meta.modality`` is "MR"), one file per slice.

    Parameters
    ----------
    folder : path
        Created if needed.
    pixels : ndarray, shape (n, rows, columns)
        Hounsfield units (integers).
    positions : ndarray, shape (n, 3)
        ImagePositionPatient of each slice, LPS mm.
    row_cosine, column_cosine : (3,)
        ImageOrientationPatient.
    pixel_spacing : (2,)
        [row spacing, column spacing] mm (DICOM order).
    meta : ImageMeta, optional
        Patient and study identifiers; UIDs missing from it are generated (deterministically
        from ``uid_seed`` when given).
    transfer_syntax : str
        A key of :data:`TRANSFER_SYNTAXES` or a UID.
    unsigned : bool
        Store as unsigned with RescaleIntercept -1024 (as many scanners do), else signed with 0.
    extra : dict, optional
        More top-level attributes by keyword (e.g. ``{"GantryDetectorTilt": 12.0}``).

    Returns
    -------
    list of Path
        The files written, in slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID

    pix = np.asarray(pixels)
    pos = np.asarray(positions, dtype=float)
    if pix.ndim != 3 or pos.shape != (pix.shape[0], 3):
        raise InputError(f"pixels {pix.shape} and positions {pos.shape} do not describe one stack of slices")
    ts = UID(TRANSFER_SYNTAXES.get(transfer_syntax, transfer_syntax))
    meta = meta or ImageMeta()
    seed = uid_seed
    study_uid = meta.study_instance_uid or _uid(seed and seed + "/study")
    series_uid = meta.series_instance_uid or _uid(seed and seed + "/series")
    frame_uid = meta.frame_of_reference_uid or _uid(seed and seed + "/frame")
    date = meta.acquisition_date or meta.study_date or _dt.date.today().strftime("%Y%m%d")
    intercept = -1024 if unsigned else 0
    if unsigned:
        stored = np.clip(np.rint(pix) - intercept, 0, 65535).astype(np.uint16)
    else:
        stored = np.clip(np.rint(pix), -32768, 32767).astype(np.int16)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    normal = np.cross(np.asarray(row_cosine, float), np.asarray(column_cosine, float))
    if slice_thickness is None:
        steps = np.abs(np.diff(pos @ normal)) if len(pos) > 1 else np.array([1.0])
        slice_thickness = float(np.median(steps)) if len(steps) else 1.0

    is_mr = (meta.modality or "CT") == "MR"
    sop_class = MR_IMAGE_STORAGE if is_mr else CT_IMAGE_STORAGE
    paths: list[Path] = []
    for k in range(pix.shape[0]):
        sop_uid = _uid(seed and f"{seed}/sop/{k}")
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = sop_class
        fm.MediaStorageSOPInstanceUID = sop_uid
        fm.TransferSyntaxUID = UID(TRANSFER_SYNTAXES["explicit"])
        fm.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.PatientName = meta.patient_name or "Demo^Phantom"
        ds.PatientID = meta.patient_id or "DEMO-0001"
        ds.PatientBirthDate = meta.patient_birth_date
        ds.PatientSex = meta.patient_sex or "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = meta.study_date or date
        ds.SeriesDate = date
        ds.AcquisitionDate = date
        ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = meta.accession_number
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = meta.study_description
        ds.SeriesDescription = meta.series_description
        ds.Manufacturer = meta.manufacturer or "planner synthetic phantom"
        ds.Modality = meta.modality or "CT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(instance_numbers[k]) if instance_numbers is not None else k + 1
        ds.PatientPosition = meta.patient_position or "HFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER" if is_mr else "AXIAL"]
        ds.ImagePositionPatient = [f"{x:.6g}" for x in pos[k]]
        ds.ImageOrientationPatient = [f"{x:.8g}" for x in (*row_cosine, *column_cosine)]
        ds.PixelSpacing = [f"{x:.8g}" for x in pixel_spacing]
        ds.SliceThickness = f"{slice_thickness:.6g}"
        ds.SliceLocation = f"{float(pos[k] @ normal):.6g}"
        if is_mr:
            ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "NONE", "2D"
            ds.MagneticFieldStrength = "1.5"
        else:
            ds.KVP = "120"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(pix.shape[1]), int(pix.shape[2])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0 if unsigned else 1
        ds.RescaleIntercept = str(intercept)
        ds.RescaleSlope = "1"
        ds.RescaleType = "US" if is_mr else "HU"  # MR: unspecified units
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        arr = stored[k]
        ds.PixelData = arr.tobytes()
        if ts in (TRANSFER_SYNTAXES["implicit"], TRANSFER_SYNTAXES["explicit"], TRANSFER_SYNTAXES["deflate"]):
            fm.TransferSyntaxUID = ts
        else:
            ds.compress(ts, arr, generate_instance_uid=False)  # keep the seeded UID
        name = file_names[k] if file_names is not None else f"IM{k + 1:05d}.dcm"
        path = out / name
        implicit = ts == TRANSFER_SYNTAXES["implicit"]
        ds.save_as(path, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
        paths.append(path)
    return paths


def write_image_as_dicom(
    image: Image,
    folder: str | os.PathLike[str],
    *,
    transfer_syntax: str = "explicit",
    uid_seed: str | None = None,
    meta: ImageMeta | None = None,
) -> list[Path]:
    """Write an :class:`Image` as a CT series that loads back at the same LPS positions.

    If the image's k axis points against row x column, the loaded array comes back with k
    reversed (and an affine to match): the same voxels at the same places.
    """
    a = image.affine
    sp = image.spacing
    row = a[:3, 0] / sp[0]
    col = a[:3, 1] / sp[1]
    nk = image.shape[0]
    positions = np.array([a[:3, 3] + k * a[:3, 2] for k in range(nk)])
    return write_ct_slices(
        folder, image.voxels, positions, row, col, (sp[1], sp[0]),
        meta=meta or image.meta, transfer_syntax=transfer_syntax, uid_seed=uid_seed, slice_thickness=float(sp[2]),
    )
