"""Write structure sets the way TotalSegmentator does: one binary NIfTI per structure.

A user can open the folder in 3D Slicer (or any viewer), correct a mask and give the folder
back with ``--structures``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic
from ..images import Image, save_image
from .structures import StructureSet


def save_structures_folder(sset: StructureSet, folder: str | os.PathLike[str], include_empty: bool = True) -> list[Path]:
    """One ``<name>.nii.gz`` (uint8, 0/1, on the CT grid) per structure, plus ``structures.json``.

    ``structures.json`` lists each structure's class, colour, voxel count and volume, and the
    names that were looked for but found empty (written as empty masks when ``include_empty``,
    as TotalSegmentator does, so a folder always has the same files).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in sset:
        path = out / f"{s.name}.nii.gz"
        save_image(Image(s.full(sset.shape).astype(np.uint8), sset.affine), path)  # type: ignore[arg-type]
        written.append(path)
    if include_empty:
        for name in sset.empty:
            if name not in sset:
                path = out / f"{name}.nii.gz"
                save_image(Image(np.zeros(sset.shape, np.uint8), sset.affine), path)
                written.append(path)
    index = {
        "coordinate_system": "LPS",
        "structures": [
            {**row, "colour": list(sset[row["name"]].colour)} for row in sset.summary()
        ],
        "empty": sorted(set(sset.empty) - set(sset.names())),
    }
    write_json_atomic(index, out / "structures.json")
    written.append(out / "structures.json")
    return written
