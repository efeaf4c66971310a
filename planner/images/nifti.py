"""NIfTI reading and writing (nibabel). NIfTI stores RAS: the flip to LPS happens here only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, brief
from . import geometry
from .image import Image, ImageMeta, check_voxel_count


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


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


def load_nifti(path: str | os.PathLike[str]) -> Image:
    """Read a 3D NIfTI file into an LPS :class:`Image` (4D files with one volume are accepted)."""
    import nibabel as nib

    p = Path(path)
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
