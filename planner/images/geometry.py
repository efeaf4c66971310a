"""Pure geometry of voxel grids: affines, spacing, orientation codes.

Conventions (see ``shared/design/CONVENTIONS.md``): an affine is a 4x4 matrix mapping a voxel
index ``(i, j, k, 1)`` (column, row, slice) to DICOM patient coordinates LPS in millimetres.
Arrays are indexed ``[k, j, i]``; the affine always takes ``(i, j, k)``.

Nothing here reads files or knows about RAS: the RAS/LPS flip lives in the file readers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import GeometryError

#: Tolerance on |cos| between two affine columns for them to count as orthogonal.
ORTHOGONAL_TOL = 1e-4

_LPS_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))


def check_affine(affine: np.ndarray, what: str = "affine") -> np.ndarray:
    """Validate and return a float64 copy of a voxel-to-LPS affine.

    Parameters
    ----------
    affine : array_like, shape (4, 4)
        Maps ``(i, j, k, 1)`` to LPS millimetres.
    what : str
        Name used in error messages (e.g. the file it came from).

    Raises
    ------
    GeometryError
        If the matrix is not 4x4, not finite, has a last row other than ``[0, 0, 0, 1]``,
        a zero-length axis, or axes that are not orthogonal (a sheared grid).
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise GeometryError(f"{what}: affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{what}: affine contains NaN or infinite values")
    if not np.allclose(a[3], [0, 0, 0, 1], atol=1e-9):
        raise GeometryError(f"{what}: affine last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    lengths = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(lengths <= 1e-6):
        raise GeometryError(f"{what}: affine has a zero-length voxel axis (spacing {lengths.tolist()} mm)")
    unit = a[:3, :3] / lengths
    gram = unit.T @ unit
    off = np.abs(gram - np.eye(3)).max()
    if off > ORTHOGONAL_TOL:
        raise GeometryError(
            f"{what}: voxel axes are not orthogonal (largest |cos| between axes {off:.2g}, "
            f"allowed {ORTHOGONAL_TOL:g}); sheared grids must be resampled first"
        )
    return a.copy()


def spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along i, j, k (column, row, slice), shape (3,)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def direction(affine: np.ndarray) -> np.ndarray:
    """Unit vectors of the i, j, k axes in LPS, as the columns of a 3x3 matrix."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return a / np.linalg.norm(a, axis=0)


def axis_codes(affine: np.ndarray) -> str:
    """Patient direction each voxel axis (i, j, k) points to most, as three LPS letters.

    >>> axis_codes(np.diag([0.8, 0.8, 2.0, 1.0]))
    'LPS'
    >>> axis_codes(np.diag([-0.8, 0.8, -2.0, 1.0]))
    'RPI'
    """
    d = direction(affine)
    codes = []
    for axis in range(3):
        v = d[:, axis]
        m = int(np.argmax(np.abs(v)))
        codes.append(_LPS_LETTERS[m][0 if v[m] > 0 else 1])
    return "".join(codes)


def apply_affine(affine: np.ndarray, points: np.ndarray | Sequence[float]) -> np.ndarray:
    """Map points through a 4x4 affine; ``points`` has shape (..., 3)."""
    a = np.asarray(affine, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ a[:3, :3].T + a[:3, 3]


def flip_xy(affine: np.ndarray) -> np.ndarray:
    """Change the world frame between RAS and LPS (the same operation both ways).

    Only the file readers and writers of formats that store RAS call this.
    """
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)


def affine_from_dicom(
    row_cosine: Sequence[float],
    column_cosine: Sequence[float],
    pixel_spacing: Sequence[float],
    first_position: Sequence[float],
    slice_step: Sequence[float],
) -> np.ndarray:
    """Build the affine of a regular stack of DICOM slices.

    Parameters
    ----------
    row_cosine, column_cosine : (3,)
        ImageOrientationPatient[0:3] (direction of increasing column index i) and [3:6]
        (direction of increasing row index j).
    pixel_spacing : (2,)
        DICOM PixelSpacing: [spacing between rows (along j), spacing between columns (along i)].
    first_position : (3,)
        ImagePositionPatient of the slice with k = 0.
    slice_step : (3,)
        Vector in mm from one slice's position to the next one's.
    """
    a = np.eye(4)
    a[:3, 0] = np.asarray(row_cosine, float) * float(pixel_spacing[1])
    a[:3, 1] = np.asarray(column_cosine, float) * float(pixel_spacing[0])
    a[:3, 2] = np.asarray(slice_step, float)
    a[:3, 3] = np.asarray(first_position, float)
    return a
