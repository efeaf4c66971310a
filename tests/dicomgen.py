"""Generators of test DICOM series with known landmarks in patient space.

A "world phantom" is defined analytically in LPS mm: a soft-tissue box holding three bright
spheres at asymmetric landmark positions. Series are made by sampling it at the true voxel
centres of any acquisition geometry (orientation, tilt, gaps), so a loader that places the
voxels correctly finds the landmarks back at their LPS positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from planner.images import Image
from planner.testing.dicom_write import write_ct_slices

#: LPS positions (mm) of the three sphere centres: asymmetric along every axis.
LANDMARKS = np.array([[-30.0, 12.0, 22.0], [26.0, -20.0, -14.0], [4.0, 31.0, 36.0]])
SPHERE_RADIUS = 7.0


def world_hu(points: np.ndarray) -> np.ndarray:
    """HU of the world phantom at LPS points (..., 3): smooth-edged spheres in a tissue box."""
    p = np.asarray(points, float)
    inside = np.all(np.abs(p) <= 70.0, axis=-1)
    hu = np.where(inside, 40.0, -1000.0)
    for c in LANDMARKS:
        r = np.linalg.norm(p - c, axis=-1)
        w = np.clip((SPHERE_RADIUS - r) / 1.5 + 0.5, 0.0, 1.0)  # 1.5 mm soft edge
        hu = hu + w * 960.0
    return np.rint(hu)


def find_landmarks(image: Image) -> np.ndarray:
    """LPS centroids of the bright spheres in a loaded image, ordered like ``LANDMARKS``."""
    v = image.voxels.astype(np.float64)
    weights = np.clip(v - 40.0, 0.0, None)
    labels, n = ndimage.label(v > 500)
    found = []
    for lab in range(1, n + 1):
        region = ndimage.binary_dilation(labels == lab, iterations=2)
        kji = np.array(ndimage.center_of_mass(weights * region))
        found.append(image.ijk_to_lps(kji[::-1]))
    found_arr = np.array(found).reshape(-1, 3)
    order = [int(np.argmin(np.linalg.norm(found_arr - c, axis=1))) for c in LANDMARKS]
    return found_arr[order]


@dataclass
class Acquisition:
    """Geometry of a synthetic acquisition (DICOM conventions)."""

    row_cosine: Sequence[float] = (1.0, 0.0, 0.0)
    column_cosine: Sequence[float] = (0.0, 1.0, 0.0)
    rows: int = 72
    columns: int = 80
    pixel_spacing: tuple[float, float] = (1.6, 1.5)  # [row spacing, column spacing]
    n_slices: int = 50
    step: float = 2.5
    tilt_deg: float = 0.0  # gantry tilt: each slice shifted along the column direction

    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_cosine, float), np.asarray(self.column_cosine, float))

    def slice_positions(self, s_values: np.ndarray | None = None) -> np.ndarray:
        """IPP of each slice so that the stack is centred on the origin."""
        r = np.asarray(self.row_cosine, float)
        c = np.asarray(self.column_cosine, float)
        n = self.normal()
        s = np.arange(self.n_slices) * self.step if s_values is None else np.asarray(s_values, float)
        s = s - (self.n_slices - 1) * self.step / 2.0
        corner = -(self.columns - 1) * self.pixel_spacing[1] / 2.0 * r - (self.rows - 1) * self.pixel_spacing[0] / 2.0 * c
        shift = np.tan(np.radians(self.tilt_deg)) * s
        return corner + s[:, None] * n + shift[:, None] * c

    def sample(self, positions: np.ndarray) -> np.ndarray:
        """Pixels (n, rows, columns) of the world phantom at the true voxel centres."""
        r = np.asarray(self.row_cosine, float)
        c = np.asarray(self.column_cosine, float)
        jj, ii = np.meshgrid(np.arange(self.rows), np.arange(self.columns), indexing="ij")
        inplane = ii[..., None] * self.pixel_spacing[1] * r + jj[..., None] * self.pixel_spacing[0] * c
        return np.stack([world_hu(p + inplane) for p in positions]).astype(np.int16)


def write_acquisition(
    folder: Path,
    acq: Acquisition,
    *,
    s_values: np.ndarray | None = None,
    transfer_syntax: str = "explicit",
    seed: str = "test",
    shuffle_names: bool = True,
    extra: dict | None = None,
) -> list[Path]:
    """Sample and write a series; file names are shuffled so that only positions can sort it."""
    pos = acq.slice_positions(s_values)
    pix = acq.sample(pos)
    n = len(pos)
    names = [f"IM{k:04d}.dcm" for k in range(n)]
    if shuffle_names:
        perm = np.random.default_rng(1).permutation(n)
        names = [names[p] for p in perm]
    # InstanceNumber deliberately runs against the spatial order.
    return write_ct_slices(
        folder, pix, pos, acq.row_cosine, acq.column_cosine, acq.pixel_spacing,
        transfer_syntax=transfer_syntax, uid_seed=seed, file_names=names,
        instance_numbers=list(range(n, 0, -1)), extra=extra,
    )


def rotation(axis: Sequence[float], deg: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


ORIENTATIONS = {
    "axial-HFS": ((1, 0, 0), (0, 1, 0)),
    "axial-FFS": ((-1, 0, 0), (0, 1, 0)),
    "axial-HFP": ((-1, 0, 0), (0, -1, 0)),
    "axial-FFP": ((1, 0, 0), (0, -1, 0)),
    "decubitus-HFDL": ((0, -1, 0), (1, 0, 0)),
    "decubitus-HFDR": ((0, 1, 0), (-1, 0, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "oblique": (
        tuple(rotation((1, 0.3, 0), 23) @ rotation((0, 0, 1), 11) @ np.array([1.0, 0, 0])),
        tuple(rotation((1, 0.3, 0), 23) @ rotation((0, 0, 1), 11) @ np.array([0, 1.0, 0])),
    ),
}


def transcode_with_gdcm(src: Path, dst: Path, syntax: str) -> None:
    """Re-encode a DICOM file with GDCM (used for the JPEG lossless syntaxes pydicom cannot write)."""
    import gdcm

    ts = {
        "jpeg-lossless-14": gdcm.TransferSyntax.JPEGLosslessProcess14,
        "jpeg-lossless-sv1": gdcm.TransferSyntax.JPEGLosslessProcess14_1,
    }[syntax]
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {src}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(ts))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot transcode {src} to {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {dst}")


def write_enhanced_ct(folder: Path, acq: Acquisition, *, seed: str = "enh", frame_order: Sequence[int] | None = None) -> Path:
    """One Enhanced CT Image Storage file holding every slice as a frame (frames shuffled)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pos = acq.slice_positions()
    pix = acq.sample(pos)
    n = len(pos)
    order = list(frame_order) if frame_order is not None else list(np.random.default_rng(2).permutation(n))
    folder.mkdir(parents=True, exist_ok=True)
    sop = generate_uid(entropy_srcs=[seed, "sop"])
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    fm.MediaStorageSOPInstanceUID = sop
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID = fm.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = "Test^Enhanced", "ENH-1"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[seed, "for"])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = acq.rows, acq.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = [f"{x:.8g}" for x in (*acq.row_cosine, *acq.column_cosine)]
    pm = Dataset()
    pm.PixelSpacing = list(acq.pixel_spacing)
    pm.SliceThickness = acq.step
    pvt = Dataset()
    pvt.RescaleIntercept, pvt.RescaleSlope, pvt.RescaleType = "0", "1", "HU"
    shared.PlaneOrientationSequence = Seq([po])
    shared.PixelMeasuresSequence = Seq([pm])
    shared.PixelValueTransformationSequence = Seq([pvt])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    per = []
    for f, k in enumerate(order):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [f"{x:.6g}" for x in pos[k]]
        item.PlanePositionSequence = Seq([pp])
        fc = Dataset()
        fc.InStackPositionNumber = f + 1
        item.FrameContentSequence = Seq([fc])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Seq(per)
    ds.PixelData = np.ascontiguousarray(pix[order]).astype("<i2").tobytes()
    path = folder / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
