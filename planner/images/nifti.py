"""NIfTI reading and writing (nibabel). NIfTI stores RAS: the flip to LPS happens here only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, brief
from . import geometry
from .image import Image, ImageMeta, check_voxel_count
from .quiet import held_library_warnings


#: The most bytes deflate expands one compressed byte into (about 1032:1 at best).
_MAX_DEFLATE_RATIO = 1032


def _check_data_size(p: Path, img: "nib.Nifti1Image", shape: tuple[int, ...]) -> None:
    """Refuse a header that declares more voxel bytes than the file can hold, before nibabel
    allocates (and zero-fills) a buffer of the declared size."""
    need = int(np.prod(shape, dtype=np.int64)) * img.header.get_data_dtype().itemsize
    size = p.stat().st_size
    if p.name.lower().endswith(".gz"):
        if need > size * _MAX_DEFLATE_RATIO:
            raise InputError(f"{p}: the header declares {need:,} bytes of voxel data, more than a {size:,}-byte "
                             f"compressed file can hold; the file is truncated or its header corrupt")
    elif need + int(img.header.get_data_offset()) > size:
        raise InputError(f"{p}: the header declares {need:,} bytes of voxel data after offset "
                         f"{int(img.header.get_data_offset())}, the file holds {size:,} bytes; it is truncated "
                         f"or its header corrupt")


#: Forms of the NIfTI header, as the standard names the codes that select them.
_FORMS = {"sform": ("srow_x", "srow_y", "srow_z"), "qform": ("quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                                                             "qoffset_y", "qoffset_z")}


def _raw_header(p: Path) -> Any:
    """The header exactly as stored (nibabel's loader quietly "fixes" pixdim), or None if unreadable."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(p)) as f:
            block = f.read(540)
        for klass in (nib.Nifti1Header, nib.Nifti2Header):
            size = klass.sizeof_hdr
            if len(block) >= size and size in (int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")):
                return klass(binaryblock=block[:size], check=False)
    except Exception:
        return None
    return None


def _num(x: float) -> str:
    x = float(x)
    return "NaN" if np.isnan(x) else ("infinity" if x > 0 else "-infinity") if np.isinf(x) else f"{x:g}"


def _check_nifti_geometry(p: Path, h: Any) -> str:
    """Refuse a header whose geometry would have to be invented; returns the form used ('sform' or 'qform')."""
    sform_code, qform_code = int(h["sform_code"]), int(h["qform_code"])
    if sform_code == 0 and qform_code == 0:
        raise InputError(
            f"{p}: qform_code and sform_code are both 0, so the file does not say where its voxels lie in the "
            f"patient (a reader would have to guess, possibly mirrored); nothing was loaded")
    form = "sform" if sform_code != 0 else "qform"  # nibabel's and the standard's choice
    pixdim = np.asarray(h["pixdim"], dtype=np.float64)
    for axis in (1, 2, 3):
        v = pixdim[axis]
        if not np.isfinite(v):
            raise InputError(f"{p}: pixdim[{axis}] {_num(v)} is impossible: a voxel size must be a finite number; "
                             f"nothing was loaded")
        if v == 0:
            raise InputError(f"{p}: pixdim[{axis}] 0 is impossible: a voxel size of 0 mm; nothing was loaded")
        if v < 0 and form == "qform":
            raise InputError(f"{p}: pixdim[{axis}] {_num(v)} is negative, and the qform (the geometry used: "
                             f"sform_code 0) scales by it; nothing was loaded")
    if form == "qform" and not np.isfinite(pixdim[0]):
        raise InputError(f"{p}: pixdim[0] (qfac) {_num(pixdim[0])} is impossible: it must be 1 or -1; nothing was loaded")
    for name in _FORMS[form]:
        values = np.atleast_1d(np.asarray(h[name], dtype=np.float64))
        if not np.all(np.isfinite(values)):
            raise InputError(f"{p}: {name} [{', '.join(_num(v) for v in values)}] is not finite, and the {form} "
                             f"({form}_code {sform_code if form == 'sform' else qform_code}) is the geometry used; "
                             f"nothing was loaded")
    return form


def _check_nifti_affine(p: Path, affine: np.ndarray, form: str) -> None:
    a = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{p}: the {form} gives a voxel-to-patient matrix with NaN or infinite values; nothing was loaded")
    m = a[:3, :3]
    lengths = np.linalg.norm(m, axis=0)
    if np.any(lengths == 0) or abs(np.linalg.det(m)) <= 1e-9 * float(np.prod(lengths)):
        raise InputError(f"{p}: the {form} is singular (its voxel axes {'include a zero vector' if np.any(lengths == 0) else 'are not independent'}), "
                         f"so voxels have no distinct positions; nothing was loaded")


def load_nifti(path: str | os.PathLike[str]) -> Image:
    """Read a 3D NIfTI file into an LPS :class:`Image` (4D files with one volume are accepted).

    A file whose header does not define the geometry (qform_code and sform_code both 0, voxel
    sizes 0 or not finite, a singular matrix) is refused rather than placed on a guessed grid.
    """
    with held_library_warnings():
        return _load_nifti(path)


def _load_nifti(path: str | os.PathLike[str]) -> Image:
    import nibabel as nib

    p = Path(path)
    raw = _raw_header(p) if p.is_file() else None
    form = _check_nifti_geometry(p, raw) if raw is not None else "sform"
    try:
        img = nib.load(str(p))
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except Exception as exc:
        raise InputError(f"{p}: not a readable NIfTI file ({brief(exc)})") from None
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{p}: a 3D volume is needed, the file holds an array of shape {tuple(img.shape)}")
    check_voxel_count(shape, str(p))
    _check_data_size(p, img, shape)
    try:
        data = np.asanyarray(img.dataobj).reshape(shape)
    except Exception as exc:
        raise InputError(f"{p}: the voxel data cannot be read ({brief(exc)}); the file may be truncated") from None
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    elif data.dtype.kind == "f" and np.all(np.isfinite(data)) and np.array_equal(data, np.rint(data)) \
            and data.min() >= -32768 and data.max() <= 32767:
        data = data.astype(np.int16)  # integer-valued floats (scaled CT) kept compact and exact
    elif data.dtype.kind in "iu" and data.dtype.itemsize > 2 and data.size \
            and data.min() >= -32768 and data.max() <= 32767:
        data = data.astype(np.int16)
    # NIfTI arrays are [i, j, k]; ours are [k, j, i]. RAS -> LPS at this boundary.
    voxels = np.ascontiguousarray(data.transpose(2, 1, 0))
    _check_nifti_affine(p, img.affine, form)
    affine = geometry.flip_xy(img.affine)
    meta = ImageMeta(source=str(path), source_format="NIfTI")
    return Image(voxels, affine, meta)


def save_nifti(image: Image, path: str | os.PathLike[str]) -> None:
    """Write an :class:`Image` as NIfTI-1 (RAS affine in both sform and qform, millimetres)."""
    import nibabel as nib

    data = np.asarray(image.voxels).transpose(2, 1, 0)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    affine_ras = geometry.flip_xy(image.affine)
    img = nib.Nifti1Image(data, affine_ras)
    img.set_sform(affine_ras, code=1)
    img.set_qform(affine_ras, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def nifti_label_table(path: str | os.PathLike[str]) -> dict[int, str] | None:
    """Label names stored in a NIfTI header extension, as TotalSegmentator's multilabel output
    writes them (a Caret XML ``LabelTable``); None if the file carries none."""
    import xml.etree.ElementTree as ET

    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable NIfTI file ({exc})") from None
    for ext in getattr(img.header, "extensions", []):
        content = ext.get_content()
        if isinstance(content, bytes) and b"LabelTable" in content:
            try:
                root = ET.fromstring(content.decode("utf-8", "replace").strip().rstrip("\x00"))
            except ET.ParseError as exc:
                raise InputError(f"{path}: unreadable label table in the header extension ({exc})") from None
            table = {}
            for label in root.iter("Label"):
                key = label.get("Key")
                if key is not None and label.text:
                    table[int(key)] = label.text.strip()
            return table or None
    return None
