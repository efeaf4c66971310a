"""Structure sets from files: TotalSegmentator folders, label maps with a label table.

Every mask is brought onto the CT's grid with the right geometry (exactly when the grids share
a lattice, by linear interpolation and a 0.5 threshold otherwise). Masks whose frame of
reference differs from the CT's, or that do not overlap it, are refused.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, brief
from ..images import Image
from ..images.io import source_kind
from ..images.nifti import load_nifti, nifti_label_table
from ..images.nrrd_io import load_nrrd
from .placing import extent_text, extents_overlap, on_ct_grid
from .structures import StructureSet


def add_mask(sset: StructureSet, ct: Image, name: str, mask: np.ndarray, mask_affine: np.ndarray, source: str) -> None:
    """Bring one mask (indexed [k, j, i] on ``mask_affine``) onto the CT grid and add it."""
    m = np.asarray(mask).astype(bool, copy=False)
    if not m.any():
        sset.empty.append(name)
        return
    on_ct = on_ct_grid(m, mask_affine, ct)
    if not on_ct.any():
        raise InputError(f"{source}: structure {name!r} lies entirely outside the CT")
    sset.add(name, on_ct, source=source)


def _check_grid(image: Image, ct: Image, path: Path) -> None:
    fr, ct_fr = image.meta.frame_of_reference_uid, ct.meta.frame_of_reference_uid
    if fr and ct_fr and fr != ct_fr:
        raise InputError(f"{path}: frame of reference {fr} differs from the CT's {ct_fr}")
    if not extents_overlap(image.corners(), ct):
        raise InputError(
            f"{path}: the masks ({extent_text(image.corners())}) do not overlap the CT ({extent_text(ct.corners())})"
        )


def _load_grid_file(path: Path) -> Image:
    kind = source_kind(path)
    if kind == "nifti":
        return load_nifti(path)
    if kind == "nrrd":
        return load_nrrd(path)
    raise InputError(f"{path}: not a NIfTI or NRRD label map")


def load_totalsegmentator_folder(folder: str | os.PathLike[str], ct: Image, progress=None) -> StructureSet:
    """A folder with one binary NIfTI per structure, named ``<structure>.nii.gz`` (TotalSegmentator)."""
    root = Path(folder)
    files = sorted(p for p in root.iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not files:
        raise InputError(f"{root}: no NIfTI mask in the folder (expected TotalSegmentator's <name>.nii.gz files)")
    sset = StructureSet.for_image(ct)
    checked = False
    for n, f in enumerate(files):
        if progress is not None:
            progress(n, len(files), "reading masks")
        name = f.name[: -len(".nii.gz")] if f.name.endswith(".nii.gz") else f.name[: -len(".nii")]
        img = load_nifti(f)
        if not checked:
            _check_grid(img, ct, f)
            checked = True
        add_mask(sset, ct, name, img.voxels > 0, img.affine, str(f))
    if progress is not None:
        progress(len(files), len(files), "reading masks")
    return sset


def read_label_table(path: str | os.PathLike[str]) -> dict[int, str]:
    """A label table file: JSON (``{"1": "liver"}`` or ``{"labels": {...}}``), or text lines
    ``value name [r g b a]`` (3D Slicer colour table, TSV or space separated; '#' comments)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{p}: cannot read the label table ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: the label table is not UTF-8 text ({brief(exc)})") from None
    table: dict[int, str] = {}
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: not valid JSON ({brief(exc)})") from None
        except RecursionError:
            raise InputError(f"{p}: not a label table (JSON nested too deeply)") from None
        data = data.get("labels", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise InputError(f"{p}: expected an object mapping label values to names")
        for k, v in data.items():
            name = v.get("name") if isinstance(v, dict) else v
            try:
                table[int(k)] = str(name)
            except ValueError:
                raise InputError(f"{p}: label value {brief(repr(k), 40)} is not an integer") from None
    else:
        dialect = "excel-tab" if "\t" in text else None
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        rows = csv.reader(lines, dialect) if dialect else (line.split() for line in lines)
        for row in rows:
            if len(row) < 2:
                continue
            try:
                table[int(row[0])] = row[1].strip()
            except ValueError:
                continue  # a header line
    table.pop(0, None)
    if not table:
        raise InputError(f"{p}: no label found in the label table")
    return table


def _sidecar_table(path: Path) -> dict[int, str] | None:
    base = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    for suffix in (".json", ".tsv", ".txt", ".ctbl"):
        cand = path.with_name(base + suffix)
        if cand.exists():
            return read_label_table(cand)
    return None


def load_label_map(
    path: str | os.PathLike[str], ct: Image, label_table: dict[int, str] | str | os.PathLike[str] | None = None
) -> StructureSet:
    """A multilabel NIfTI or NRRD whose values name structures through a label table.

    The table is taken from ``label_table`` (a dict or a file), else from the NIfTI header
    extension TotalSegmentator writes, else from a sidecar file with the same base name
    (``.json``, ``.tsv``, ``.txt``, ``.ctbl``). Without any, the map is refused: guessing
    would put names on the wrong structures.
    """
    p = Path(path)
    img = _load_grid_file(p)
    if isinstance(label_table, (str, os.PathLike)):
        table = read_label_table(label_table)
    elif isinstance(label_table, dict):
        table = {int(k): str(v) for k, v in label_table.items()}
    else:
        table = (nifti_label_table(p) if source_kind(p) == "nifti" else None) or _sidecar_table(p)
    if not table:
        raise InputError(
            f"{p}: a label map needs a label table (value -> name): none in the file and no sidecar "
            f"{p.name.split('.')[0]}.json/.tsv/.txt beside it"
        )
    _check_grid(img, ct, p)
    values = np.unique(img.voxels)
    unknown = sorted(int(v) for v in values if v != 0 and int(v) not in table)
    if unknown:
        raise InputError(f"{p}: label values {unknown[:10]} are not in the label table")
    sset = StructureSet.for_image(ct)
    for value, name in sorted(table.items()):
        if value in values:
            if name in sset.names():
                raise InputError(f"{p}: the label table gives the name {brief(repr(name), 60)} to more than one "
                                 "value found in the map")
            add_mask(sset, ct, name, img.voxels == value, img.affine, str(p))
        else:
            sset.empty.append(name)
    return sset


def load_structures(path: str | os.PathLike[str], ct: Image, label_table=None, progress=None) -> StructureSet:
    """Any supported structure source: a TotalSegmentator folder, a label map file, a 3D Slicer
    ``.seg.nrrd``, or a DICOM SEG or RTSTRUCT (a file, or a folder holding exactly one)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.name.lower().endswith(".seg.nrrd"):
        from .slicer_seg import load_slicer_seg

        return load_slicer_seg(p, ct)
    from .dicom_seg import find_dicom_structures, load_dicom_seg

    found = find_dicom_structures(p)  # None when the path holds no DICOM file
    if found is not None:
        from .rtstruct import load_rtstruct

        return (load_dicom_seg if found[0] == "seg" else load_rtstruct)(found[1], ct)
    if p.is_dir():
        return load_totalsegmentator_folder(p, ct, progress)
    if source_kind(p) in ("nifti", "nrrd"):
        return load_label_map(p, ct, label_table)
    raise InputError(
        f"{p}: unsupported structure source (expected a TotalSegmentator folder, a label map, a .seg.nrrd, "
        f"or a DICOM SEG or RTSTRUCT)"
    )
