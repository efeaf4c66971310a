"""One entry point to read a scan from any supported source, and to write one."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..errors import InputError
from .dicom import Progress, _list_files, load_dicom
from .image import Image
from .nifti import load_nifti, save_nifti
from .nrrd_io import load_nrrd, save_nrrd


def source_kind(path: str | os.PathLike[str]) -> str:
    """'nifti', 'nrrd' or 'dicom' (a folder, or any other file) for a path."""
    name = Path(path).name.lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    if name.endswith(".nrrd") or name.endswith(".nhdr"):
        return "nrrd"
    return "dicom"


#: Scans kept loaded in this process (see :func:`keep_loaded`), the most recent last.
_KEPT: "OrderedDict[tuple[Any, ...], tuple[Any, Image]]" = OrderedDict()
_KEEP = 0
_KEPT_LOCK = threading.Lock()


def keep_loaded(n: int) -> None:
    """Keep the last ``n`` scans :func:`load_image` loaded in this process (0, the default: none),
    and give the same :class:`Image` again while their files are unchanged: a cohort worker
    planning several targets on one CT reads it once. An image is immutable (its voxels are
    read-only), so sharing it is safe; a scan is reused only when every one of its files has the
    same size, modification time and inode as when it was read. Memory: ``n`` scans more."""
    global _KEEP
    with _KEPT_LOCK:
        _KEEP = max(0, int(n))
        while len(_KEPT) > _KEEP:
            _KEPT.popitem(last=False)


def _files_signature(p: Path) -> tuple[Any, ...] | None:
    """What says a scan's files are the ones read before (None when it cannot be told)."""
    try:
        return tuple((str(f.relative_to(p)) if f != p else f.name, st.st_size, st.st_mtime_ns, st.st_ino)
                     for f in _list_files(p) for st in (f.stat(),))
    except OSError:
        return None


def load_image(
    path: str | os.PathLike[str],
    series_uid: str | None = None,
    modality: str | None = "CT",
    progress: Progress | None = None,
    echo: int | None = None,
    phase: int | None = None,
) -> Image:
    """Load a scan: a DICOM folder (searched recursively) or file, a NIfTI or an NRRD file.

    ``modality`` is enforced for DICOM; NIfTI and NRRD record none, so the image's
    ``meta.modality`` is set to it and the fact is noted in ``meta.corrections``.
    ``echo`` and ``phase`` choose the sub-volume of a DICOM series with several images per
    slice position (the EchoNumbers value; the phase number ``planner info`` lists); without
    them the first is loaded and the corrections say so.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if not _KEEP:
        return _load_image(p, series_uid, modality, progress, echo, phase)
    key = (str(p.resolve()), series_uid, modality, echo, phase)
    sig = _files_signature(p)
    with _KEPT_LOCK:
        kept = _KEPT.get(key)
        if kept is not None and sig is not None and kept[0] == sig:
            _KEPT.move_to_end(key)
            return kept[1]
        _KEPT.pop(key, None)
        while _KEPT and len(_KEPT) >= _KEEP:  # freed before the new scan is read: n scans at most
            _KEPT.popitem(last=False)
    image = _load_image(p, series_uid, modality, progress, echo, phase)
    if sig is not None and sig == _files_signature(p):  # not changed while it was read
        with _KEPT_LOCK:
            if _KEEP:
                _KEPT[key] = (sig, image)
                while len(_KEPT) > _KEEP:
                    _KEPT.popitem(last=False)
    return image


def _load_image(p: Path, series_uid: str | None, modality: str | None, progress: Progress | None,
                echo: int | None, phase: int | None) -> Image:
    kind = source_kind(p)
    if kind == "dicom":
        return load_dicom(p, series_uid=series_uid, modality=modality, progress=progress, echo=echo, phase=phase)
    if series_uid:
        raise InputError(f"{p}: --series applies to DICOM input only")
    for option, value in (("--echo", echo), ("--phase", phase)):
        if value is not None:
            fmt = "NIfTI" if kind == "nifti" else "NRRD"
            raise InputError(f"{p}: {option} applies to DICOM input only (a {fmt} file holds one volume)")
    image = load_nifti(p) if kind == "nifti" else load_nrrd(p)
    if modality:
        image = image.with_meta(
            modality=modality,
            corrections=image.meta.corrections
            + (f"modality not recorded in {image.meta.source_format} files; taken as {modality}",),
        )
    return image


def save_image(image: Image, path: str | os.PathLike[str]) -> None:
    """Write NIfTI (``.nii``/``.nii.gz``) or NRRD (``.nrrd``) with the exact geometry, atomically."""
    p = Path(path)
    kind = source_kind(p)
    if kind not in ("nifti", "nrrd"):
        raise InputError(f"{p}: output must end in .nii, .nii.gz or .nrrd")
    from ..atomic import atomic_path

    suffix = ".nii.gz" if p.name.lower().endswith(".nii.gz") else p.suffix
    with atomic_path(p, suffix) as tmp:
        (save_nifti if kind == "nifti" else save_nrrd)(image, tmp)
