"""DICOM Segmentation (SEG) objects onto the CT grid, and what the DICOM structure importers share.

Each segment becomes one structure, placed by the SEG's own geometry (per-frame
PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence): the frames need not
line up with the CT's slices, cover all of them, or share its in-plane grid. Overlapping
segments stay separate structures. Fractional segments are thresholded at 0.5.

Finding a SEG or RTSTRUCT file in a folder (``locate``) is shared with :mod:`.rtstruct`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, brief
from ..images import Image
from ..images.resample import resample_to_grid
from .placing import Colour, extent_text, extents_overlap, grid_corners, on_ct_grid, structure_name, unique_name
from .structures import StructureSet

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_KINDS = {SEG_STORAGE: "seg", LABEL_MAP_SEG_STORAGE: "seg", RTSTRUCT_STORAGE: "rtstruct"}
_WORDS = {"seg": "DICOM SEG", "rtstruct": "DICOM RTSTRUCT"}



def add_structure(sset: StructureSet, name: str, on_ct: np.ndarray, colour: Colour | None, source: str) -> bool:
    """Add a full CT-grid mask with its colour; an empty one is listed in ``sset.empty``."""
    return sset.add(name, on_ct, colour=colour, source=source) is not None


def _sop_class_of(path: Path) -> str | None:
    """The SOP class UID of a DICOM file, or None if the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID"])
        meta = getattr(ds, "file_meta", None)
        uid = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    except (InvalidDicomError, OSError):
        return None
    except Exception as exc:  # a DICOM preamble, then a header pydicom cannot parse
        raise InputError(f"{path}: corrupt or truncated DICOM file ({type(exc).__name__}: {brief(exc)})") from None
    return str(uid) if uid else None


def find_dicom_structures(path: str | os.PathLike[str]) -> tuple[str, Path] | None:
    """Where a path holds a DICOM SEG or RTSTRUCT: ``("seg" | "rtstruct", file)``.

    A file is read as DICOM when it is not a NIfTI or NRRD file; a folder is searched
    recursively unless it holds NIfTI masks at its top (a TotalSegmentator folder).

    Returns
    -------
    None when the path holds no DICOM file at all (another importer may take it).

    Raises
    ------
    InputError
        A DICOM file of another kind, a folder of DICOM files without a SEG or RTSTRUCT, or a
        folder with more than one of them (the message lists them: name the one to use).
    """
    p = Path(path)
    low = p.name.lower()
    if p.is_file():
        if low.endswith((".nii", ".nii.gz", ".nrrd", ".nhdr")):
            return None
        uid = _sop_class_of(p)
        if uid is None:
            return None
        if uid not in _KINDS:
            raise InputError(f"{p}: a DICOM file of SOP class {brief(uid, 70)}, not a segmentation (SEG) or RT structure set")
        return _KINDS[uid], p
    if not p.is_dir() or any(f.name.endswith((".nii", ".nii.gz")) for f in p.iterdir()):
        return None
    found: list[tuple[str, Path]] = []
    n_dicom = 0
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames.sort()
        for name in sorted(filenames):
            uid = _sop_class_of(Path(dirpath) / name)
            n_dicom += uid is not None
            if uid in _KINDS:
                found.append((_KINDS[uid], Path(dirpath) / name))
    if not n_dicom:
        return None
    if not found:
        raise InputError(f"{p}: the folder holds {n_dicom} DICOM files but no segmentation (SEG) or RT structure set")
    if len(found) > 1:
        names = ", ".join(str(f) for _, f in found[:4]) + (" ..." if len(found) > 4 else "")
        raise InputError(f"{p}: the folder holds {len(found)} SEG/RTSTRUCT files ({names}); give the one to use")
    return found[0]


def locate(path: str | os.PathLike[str], kind: str) -> Path:
    """The one SEG (``kind="seg"``) or RTSTRUCT (``"rtstruct"``) file at ``path`` (a file or folder)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    found = find_dicom_structures(p)
    if found is None:
        raise InputError(f"{p}: not a {_WORDS[kind]} file (no DICOM file found)")
    if found[0] != kind:
        raise InputError(f"{found[1]}: a {_WORDS[found[0]]}, not a {_WORDS[kind]}")
    return found[1]


# ---------------------------------------------------------------------------------------------
# DICOM SEG
# ---------------------------------------------------------------------------------------------
# (i, j, k, 1) -> (slice, row, column, 1): highdicom's volume index order.
_IJK_TO_SRC = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)


def _frame_geometry(seg: Any, file: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Per-frame segment number and affine (column, row, normal, 1) -> LPS.

    The normal axis of each frame's affine has the length of the frame stack's step (the median
    gap between distinct frame planes), so that a frame stands for a slab that thick.
    Returns the frame list (``{"segment", "affine"}``, one per frame) and the LPS corners of all
    frames, shape (4 * n_frames, 3).
    """
    shared = seg.get("SharedFunctionalGroupsSequence", [None])[0]
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])

    def lookup(groups: Any, seq: str, attr: str) -> Any:
        for g in (groups, shared):
            if g is not None and seq in g and len(g[seq].value) and attr in g[seq].value[0]:
                return g[seq].value[0].get(attr)
        return None

    rows, cols = int(seg.Rows), int(seg.Columns)
    frames, corners, heights = [], [], []
    for n, groups in enumerate(per_frame):
        ipp = lookup(groups, "PlanePositionSequence", "ImagePositionPatient")
        iop = lookup(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = lookup(groups, "PixelMeasuresSequence", "PixelSpacing")
        if ipp is None or iop is None or ps is None or len(iop) != 6 or len(ps) != 2:
            raise InputError(f"{file}: frame {n + 1} lacks its plane position, orientation or pixel spacing")
        r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        a = np.eye(4)
        a[:3, 0], a[:3, 1], a[:3, 2] = r * float(ps[1]), c * float(ps[0]), np.cross(r, c)
        a[:3, 3] = np.asarray(ipp, float)
        seg_no = lookup(groups, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        frames.append({"segment": int(seg_no) if seg_no is not None else None, "affine": a})
        corners.append(grid_corners((1, rows, cols), a))
        heights.append(float(a[:3, 3] @ a[:3, 2]))
    if not frames:
        raise InputError(f"{file}: the SEG has no per-frame functional groups (no frame positions)")
    gaps = np.diff(np.unique(np.round(heights, 3)))
    step = float(np.median(gaps)) if len(gaps) else 0.0
    if step <= 0:
        given = lookup(None, "PixelMeasuresSequence", "SpacingBetweenSlices") or lookup(
            None, "PixelMeasuresSequence", "SliceThickness")
        step = float(given) if given else 1.0
    for f in frames:
        f["affine"][:3, 2] *= step
    return frames, np.concatenate(corners)


def _segment_by_volume(seg: Any, number: int, fractional: bool) -> tuple[np.ndarray, np.ndarray]:
    """One segment as a volume on the SEG's regular frame stack: mask [k, j, i] and its affine."""
    vol = seg.get_volume(segment_numbers=[number], combine_segments=False, rescale_fractional=True)
    arr = np.asarray(vol.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    mask = arr >= 0.5 if fractional else arr > 0
    return mask, np.asarray(vol.affine, float) @ _IJK_TO_SRC


def _segment_by_frames(seg: Any, number: int, frames: list[dict[str, Any]], ct: Image, fractional: bool) -> np.ndarray:
    """One segment placed frame by frame on the CT grid (SEGs whose frames are not a regular stack)."""
    out = np.zeros(ct.shape, bool)
    max_value = float(seg.get("MaximumFractionalValue", 1) or 1)
    labelmap = str(seg.get("SegmentationType", "")) == "LABELMAP"
    size = np.array(ct.size_ijk)
    for n, f in enumerate(frames):
        if not labelmap and f["segment"] != number:
            continue
        stored = np.asarray(seg.get_stored_frame(n + 1))
        m = stored == number if labelmap else (stored >= 0.5 * max_value if fractional else stored > 0)
        if not m.any():
            continue
        # The frame as the middle of three planes, so that linear interpolation gives it a slab
        # one step thick; only the CT sub-box that slab can reach is resampled.
        slab = np.zeros((3, *m.shape), np.uint8)
        slab[1] = m
        affine = f["affine"].copy()
        affine[:3, 3] -= affine[:3, 2]
        ijk = ct.lps_to_ijk(grid_corners(slab.shape, affine))
        lo = np.clip(np.floor(ijk.min(axis=0)).astype(int) - 1, 0, size - 1)
        hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, size - 1)
        if np.any(ijk.max(axis=0) < -0.5) or np.any(ijk.min(axis=0) > size - 0.5):
            continue
        sub = ct.affine.copy()
        sub[:3, 3] = ct.ijk_to_lps(lo.astype(float))
        shape = (hi[2] - lo[2] + 1, hi[1] - lo[1] + 1, hi[0] - lo[0] + 1)
        r = resample_to_grid(slab, affine, shape, sub, order=1, cval=0)
        out[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] |= r.astype(bool) if r.dtype == np.uint8 else r >= 0.5
    return out


def _colour(desc: Any) -> Colour | None:
    lab = desc.get("RecommendedDisplayCIELabValue")
    if lab is None:
        return None
    from highdicom.color import CIELabColor

    try:
        return tuple(int(v) for v in CIELabColor.from_dicom_value(list(lab)).to_rgb(clip=True))  # type: ignore[return-value]
    except (ValueError, TypeError):
        return None


def load_dicom_seg(path: str | os.PathLike[str], ct: Image) -> StructureSet:
    """Read a DICOM SEG (a file, or a folder holding exactly one) onto the CT grid.

    Parameters
    ----------
    path : path
        The SEG file (Segmentation Storage or Label Map Segmentation Storage), or a folder.
    ct : Image
        The CT; masks land on its grid, shape ``ct.shape`` (nk, nj, ni), in LPS.

    Returns
    -------
    StructureSet
        One structure per segment, named from SegmentLabel (a TotalSegmentator name when one
        matches), coloured from RecommendedDisplayCIELabValue when given. Segments with no voxel
        on the CT grid are listed in ``empty``.

    Raises
    ------
    InputError
        Unreadable file, a frame of reference other than the CT's, or masks that do not overlap
        the CT (the message says when the SEG references another series).
    """
    file = locate(path, "seg")
    try:
        import highdicom as hd

        seg = hd.seg.segread(str(file))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{file}: not a readable DICOM SEG ({type(exc).__name__}: {brief(exc)})") from None
    try:
        fr, ct_fr = str(seg.get("FrameOfReferenceUID", "") or ""), ct.meta.frame_of_reference_uid
        refs = {brief(s.get("SeriesInstanceUID", ""), 70) for s in seg.get("ReferencedSeriesSequence", [])} - {""}
        frames, corners = _frame_geometry(seg, file)
    except InputError:
        raise
    except Exception as exc:  # values pydicom cannot convert, attributes missing
        raise InputError(f"{file}: the SEG's header cannot be read ({type(exc).__name__}: {brief(exc)})") from None
    if fr and ct_fr and fr != ct_fr:
        raise InputError(f"{file}: frame of reference {brief(fr, 70)} differs from the CT's {ct_fr}; "
                         "the SEG belongs to another scan")
    ct_series = ct.meta.series_instance_uid
    other_series = bool(refs and ct_series and ct_series not in refs)
    if not extents_overlap(corners, ct):
        why = f"references series {sorted(refs)[0]}, not the CT's {ct_series}, and its" if other_series else "its"
        raise InputError(
            f"{file}: the SEG {why} masks ({extent_text(corners)}) do not overlap the CT ({extent_text(ct.corners())})"
        )
    fractional = str(seg.get("SegmentationType", "")) == "FRACTIONAL"
    try:
        geometry = seg.get_volume_geometry()
    except Exception as exc:
        raise InputError(f"{file}: the SEG's frame geometry cannot be read ({type(exc).__name__}: {brief(exc)})") from None
    sset = StructureSet.for_image(ct)
    taken: set[str] = set()
    outside: list[str] = []
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        label = str(desc.get("SegmentLabel", "") or f"segment_{number}")
        name = unique_name(structure_name(label), taken)
        try:
            if geometry is not None:
                mask, affine = _segment_by_volume(seg, number, fractional)
                has_voxels = bool(mask.any())
                on_ct = on_ct_grid(mask, affine, ct) if has_voxels else None
            else:
                on_ct = _segment_by_frames(seg, number, frames, ct, fractional)
                has_voxels = any(f["segment"] in (number, None) for f in frames)
        except Exception as exc:  # highdicom on a corrupt file: sqlite, numpy, pydicom errors alike
            raise InputError(f"{file}: segment {number} ({brief(repr(label), 70)}) cannot be decoded "
                             f"({type(exc).__name__}: {brief(exc)})") from None
        if on_ct is None or not on_ct.any():
            sset.empty.append(name)
            if has_voxels:
                outside.append(name)
            continue
        add_structure(sset, name, on_ct, _colour(desc), str(file))
    if outside and not len(sset):
        why = f" (it references series {sorted(refs)[0]}, not the CT's {ct_series})" if other_series else ""
        raise InputError(f"{file}: no segment has a voxel inside the CT{why}")
    return sset
