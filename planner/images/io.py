"""One entry point to read a scan from any supported source, and to write one."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .dicom import Progress, load_dicom
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
