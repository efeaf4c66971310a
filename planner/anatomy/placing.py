"""Bringing masks from any source onto the CT grid, and naming them.

Shared by every structure importer (label maps, TotalSegmentator folders, DICOM SEG,
RTSTRUCT, Slicer segmentations).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..images import Image
from ..images.resample import resample_to_grid
from .registry import structure_table

Colour = tuple[int, int, int]


@lru_cache(maxsize=1)
def _canonical_names() -> dict[str, str]:
    return {name.lower(): name for name in structure_table()}


def structure_name(label: str) -> str:
    """The TotalSegmentator-style name for a label when one matches, else the label as given.

    The match ignores case and reads spaces as underscores: ``"Liver"`` -> ``"liver"``,
    ``"Spinal Cord"`` -> ``"spinal_cord"``, ``"GREEN"`` stays ``"GREEN"``.
    """
    text = str(label).strip()
    return _canonical_names().get(text.lower().replace(" ", "_"), text)


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... when already taken; records the result in ``taken``."""
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name}_{n}"
    taken.add(out)
    return out


def grid_corners(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """LPS centres of the 8 corner voxels of a grid ``shape`` (nk, nj, ni) on ``affine``, (8, 3)."""
    nk, nj, ni = shape
    idx = np.array([[i, j, k, 1.0] for k in (0, nk - 1) for j in (0, nj - 1) for i in (0, ni - 1)])
    return (idx @ np.asarray(affine, float).T)[:, :3]


def extents_overlap(corners: np.ndarray, ct: Image, tol_mm: float = 1.0) -> bool:
    """Whether the LPS bounding box of ``corners`` (n, 3) meets the CT's, with ``tol_mm`` slack."""
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    c = ct.corners()
    return bool(np.all(lo <= c.max(axis=0) + tol_mm) and np.all(hi >= c.min(axis=0) - tol_mm))


def extent_text(corners: np.ndarray) -> str:
    return f"LPS {np.round(corners.min(axis=0), 1).tolist()} .. {np.round(corners.max(axis=0), 1).tolist()} mm"


def on_ct_grid(mask: np.ndarray, mask_affine: np.ndarray, ct: Image) -> np.ndarray:
    """A boolean mask indexed [k, j, i] on ``mask_affine`` brought onto the CT grid.

    Exact on a shared lattice; otherwise linear interpolation thresholded at 0.5 (the rule
    :func:`planner.anatomy.importers.add_mask` follows). Returns shape ``ct.shape``.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.shape == ct.shape and np.allclose(mask_affine, ct.affine, atol=1e-4):
        return m
    r = resample_to_grid(m.astype(np.uint8), mask_affine, ct.shape, ct.affine, order=1, cval=0)
    return r.astype(bool) if r.dtype == np.uint8 else r >= 0.5
