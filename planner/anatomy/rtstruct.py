"""DICOM RT Structure Sets (RTSTRUCT) rasterised onto the CT grid.

Each ROI's CLOSED_PLANAR contours (ContourData, LPS mm) are mapped to continuous CT indices;
a contour must lie in one CT slice plane (every point rounds to the same k) and is filled in
that slice. Several contours of one ROI on one slice combine by exclusive or, so an inner
contour cuts a hole, as the DICOM standard intends. Contours are not interpolated between
slices: one contour per CT slice is what planning systems write.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InputError, brief
from ..images import Image
from .dicom_seg import add_structure, locate
from .placing import structure_name, unique_name
from .structures import StructureSet

#: Largest distance (CT slice steps) a contour point may lie from its slice plane.
PLANE_TOL = 0.5


def _floats(value: Any, what: str) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} holds a value that is not a number") from None
    if not np.all(np.isfinite(out)):
        raise InputError(f"{what}: ContourData holds a value that is not finite")
    return out


def _int(value: Any, what: str) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what}: {brief(repr(value), 40)} is not an integer") from None


def _rgb(colour: Any) -> tuple[int, int, int] | None:
    """ROIDisplayColor as three 0-255 integers; None when absent or malformed (colour is cosmetic)."""
    try:
        rgb = tuple(int(v) for v in colour)
    except (TypeError, ValueError, OverflowError):
        return None
    return rgb[:3] if len(rgb) >= 3 and all(0 <= v <= 255 for v in rgb[:3]) else None  # type: ignore[return-value]


def rasterise_contours(
    contours: list[np.ndarray], ct: Image, what: str
) -> tuple[np.ndarray, int]:
    """Fill closed planar contours on the CT grid.

    Parameters
    ----------
    contours : list of ndarray, each shape (n, 3)
        Polygon vertices in LPS mm, each polygon in one CT slice plane.
    ct : Image
        The grid, shape ``ct.shape`` (nk, nj, ni).
    what : str
        Names the file and ROI in messages.

    Returns
    -------
    mask : ndarray of bool, shape ``ct.shape``
        Pixels whose centres lie inside an odd number of the slice's contours.
    n_outside : int
        Contours whose plane lies outside the CT's slices (not filled).

    Raises
    ------
    InputError
        A contour with fewer than 3 points, or whose plane is not a CT slice plane.
    """
    from skimage.draw import polygon

    nk, nj, ni = ct.shape
    mask = np.zeros(ct.shape, bool)
    n_outside = 0
    for n, pts in enumerate(contours):
        if len(pts) < 3:
            raise InputError(f"{what}: contour {n + 1} has {len(pts)} points; a closed contour needs 3 or more")
        ijk = ct.lps_to_ijk(pts)
        k0 = int(np.rint(np.median(ijk[:, 2])))
        off = np.abs(ijk[:, 2] - k0).max()
        if off > PLANE_TOL:
            z = np.round(pts.mean(axis=0), 1).tolist()
            raise InputError(
                f"{what}: contour {n + 1} (around LPS {z} mm) spans CT slice indices "
                f"{ijk[:, 2].min():.2f} to {ijk[:, 2].max():.2f}; its plane is not a CT slice plane "
                f"(contours must be drawn on this CT's slices)"
            )
        if k0 < 0 or k0 >= nk:
            n_outside += 1
            continue
        rr, cc = polygon(ijk[:, 1], ijk[:, 0], shape=(nj, ni))
        mask[k0, rr, cc] ^= True
    return mask, n_outside


def _check_frame(ds: Any, ct: Image, file: str) -> None:
    ct_fr = ct.meta.frame_of_reference_uid
    frames = {str(f.get("FrameOfReferenceUID", "")) for f in ds.get("ReferencedFrameOfReferenceSequence", [])}
    frames |= {str(r.get("ReferencedFrameOfReferenceUID", "")) for r in ds.get("StructureSetROISequence", [])}
    frames.discard("")
    if ct_fr and frames and ct_fr not in frames:
        raise InputError(
            f"{file}: frame of reference {brief(sorted(frames)[0], 70)} differs from the CT's {ct_fr}; "
            f"the structure set belongs to another scan"
        )


def load_rtstruct(path: str | os.PathLike[str], ct: Image) -> StructureSet:
    """Read a DICOM RTSTRUCT (a file, or a folder holding exactly one) onto the CT grid.

    Parameters
    ----------
    path : path
        The RT Structure Set Storage file, or a folder.
    ct : Image
        The CT; masks land on its grid, shape ``ct.shape`` (nk, nj, ni), in LPS.

    Returns
    -------
    StructureSet
        One structure per ROI, named from ROIName (a TotalSegmentator name when one matches),
        coloured from ROIDisplayColor. ROIs without a closed contour on the CT's slices are
        listed in ``empty``.

    Raises
    ------
    InputError
        Unreadable file, a frame of reference other than the CT's, a contour not in a CT slice
        plane, or no contour at all within the CT's slices.
    """
    import pydicom

    file = locate(path, "rtstruct")
    try:
        ds = pydicom.dcmread(str(file))
        ds.walk(lambda d, e: None)  # converts every value now: a corrupt one fails here
    except Exception as exc:
        raise InputError(f"{file}: not a readable DICOM file ({type(exc).__name__}: {brief(exc)})") from None
    _check_frame(ds, ct, str(file))
    labels: dict[int, str] = {}
    for roi in ds.get("StructureSetROISequence", []):
        if "ROINumber" in roi:
            number = _int(roi.ROINumber, f"{file}: ROINumber")
            labels[number] = str(roi.get("ROIName", "") or f"roi_{number}")
    items = list(ds.get("ROIContourSequence", []))
    if not items:
        raise InputError(f"{file}: the RT structure set has no ROIContourSequence (no contours)")
    sset = StructureSet.for_image(ct)
    taken: set[str] = set()
    n_contours = n_outside = 0
    for item in items:
        number = _int(item.get("ReferencedROINumber", 0), f"{file}: ReferencedROINumber")
        label = labels.get(number, f"roi_{number}")
        name = unique_name(structure_name(label), taken)
        what = f"{file}: ROI {brief(repr(label), 60)}"
        contours = []
        for c in item.get("ContourSequence", []):
            if str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
                continue  # points and open polylines enclose no volume
            data = _floats(c.get("ContourData", []), what)
            if data.size % 3:
                raise InputError(f"{what}: ContourData holds {data.size} numbers, not x, y, z triplets")
            contours.append(data.reshape(-1, 3))
        mask, out = rasterise_contours(contours, ct, what)
        n_contours += len(contours)
        n_outside += out
        add_structure(sset, name, mask, _rgb(item.get("ROIDisplayColor")), str(file))
    seen = {_int(item.get("ReferencedROINumber", 0), f"{file}: ReferencedROINumber") for item in items}
    sset.empty.extend(unique_name(structure_name(lab), taken) for num, lab in labels.items() if num not in seen)
    if n_contours and not len(sset):
        raise InputError(
            f"{file}: none of its {n_contours} contours encloses a voxel of the CT "
            f"({n_outside} lie outside the CT's slices)"
        )
    return sset
