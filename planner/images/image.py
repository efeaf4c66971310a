"""The one image type: voxels ``[k, j, i]`` + one 4x4 affine (i, j, k) -> LPS + metadata."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GeometryError
from . import geometry


@dataclass(frozen=True)
class ImageMeta:
    """What a report needs to know about where the voxels came from.

    Empty strings mean "not recorded by the source file" (NIfTI and NRRD carry no UIDs).
    ``corrections`` lists, in words, every irregularity of the source that the loader
    corrected (gantry tilt resampled, a missing slice interpolated, a duplicate dropped, ...)
    and every conversion of the values (a PET series in SUV, with its factors).
    """

    modality: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    study_date: str = ""
    acquisition_date: str = ""
    study_description: str = ""
    series_description: str = ""
    accession_number: str = ""
    manufacturer: str = ""
    patient_position: str = ""
    source: str = ""
    source_format: str = ""
    corrections: tuple[str, ...] = ()
    #: What the voxel values measure when the modality does not say it: "SUVbw" or "SUVlbm"
    #: (g/ml) for a PET series loaded in standardized uptake values; "" otherwise.
    units: str = ""

    def replace(self, **changes: Any) -> "ImageMeta":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["corrections"] = list(self.corrections)
        return d


#: Largest number of voxels any loader accepts (2**30, 2 GiB as int16). Checked before allocating.
MAX_VOXELS = 1 << 30


class Image:
    """A 3D scalar image in DICOM patient space.

    Parameters
    ----------
    voxels : ndarray, shape (nk, nj, ni)
        Indexed ``[k, j, i]`` (slice, row, column). Stored read-only; CT values are HU.
    affine : ndarray, shape (4, 4)
        Maps ``(i, j, k, 1)`` to LPS millimetres. Must be orthogonal (checked).
    meta : ImageMeta, optional

    Notes
    -----
    Spacing, origin and direction are derived from the affine; they are never stored apart.
    Operations that change the grid return a new ``Image`` with a recomputed affine.
    """

    __slots__ = ("_voxels", "_affine", "_meta", "_sha256")

    def __init__(self, voxels: np.ndarray, affine: np.ndarray, meta: ImageMeta | None = None):
        v = np.asarray(voxels)
        if v.ndim != 3:
            raise GeometryError(f"an image must be 3D [k, j, i], got an array of shape {v.shape}")
        if min(v.shape) < 1:
            raise GeometryError(f"an image needs at least one voxel on each axis, got shape {v.shape}")
        if not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating) or v.dtype == bool):
            raise GeometryError(f"unsupported voxel type {v.dtype}")
        if not v.flags.c_contiguous:
            v = np.ascontiguousarray(v)
        if v.flags.writeable:
            v = v.view()
            v.flags.writeable = False
        what = meta.source if meta is not None and meta.source else "image"
        self._affine = geometry.check_affine(affine, what)
        self._affine.flags.writeable = False
        self._voxels = v
        self._meta = meta if meta is not None else ImageMeta()
        self._sha256: str | None = None

    # --- data -----------------------------------------------------------------------------
    @property
    def voxels(self) -> np.ndarray:
        """Read-only voxel array, shape (nk, nj, ni)."""
        return self._voxels

    @property
    def affine(self) -> np.ndarray:
        """Read-only 4x4 affine mapping (i, j, k, 1) to LPS mm."""
        return self._affine

    @property
    def meta(self) -> ImageMeta:
        return self._meta

    # --- derived geometry -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (nk, nj, ni)."""
        return tuple(int(n) for n in self._voxels.shape)  # type: ignore[return-value]

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k (columns, rows, slices)."""
        nk, nj, ni = self.shape
        return ni, nj, nk

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k (column, row, slice), shape (3,)."""
        return geometry.spacing(self._affine)

    @property
    def direction(self) -> np.ndarray:
        """Unit vectors of the i, j, k axes in LPS, as columns of a 3x3 matrix."""
        return geometry.direction(self._affine)

    @property
    def origin(self) -> np.ndarray:
        """LPS position (mm) of the centre of voxel (0, 0, 0)."""
        return self._affine[:3, 3].copy()

    @property
    def orientation(self) -> str:
        """Three letters: the patient direction each of i, j, k points to (e.g. 'LPS')."""
        return geometry.axis_codes(self._affine)

    def ijk_to_lps(self, ijk: np.ndarray | list[float]) -> np.ndarray:
        """Voxel indices (..., 3) ordered (i, j, k) -> LPS mm (..., 3)."""
        return geometry.apply_affine(self._affine, ijk)

    def lps_to_ijk(self, lps: np.ndarray | list[float]) -> np.ndarray:
        """LPS mm (..., 3) -> continuous voxel indices (..., 3) ordered (i, j, k)."""
        return geometry.apply_affine(np.linalg.inv(self._affine), lps)

    def corners(self) -> np.ndarray:
        """LPS positions of the centres of the 8 corner voxels, shape (8, 3).

        Ordered by (i, j, k) in {0, n-1}^3 with i varying fastest.
        """
        ni, nj, nk = self.size_ijk
        idx = np.array([[i, j, k] for k in (0, nk - 1) for j in (0, nj - 1) for i in (0, ni - 1)], float)
        return self.ijk_to_lps(idx)

    def contains_lps(self, lps: np.ndarray | list[float]) -> bool:
        """Whether a point lies inside the grid (within half a voxel of the outer centres)."""
        ijk = self.lps_to_ijk(lps)
        size = np.array(self.size_ijk)
        return bool(np.all(ijk >= -0.5) and np.all(ijk <= size - 0.5))

    # --- identity -------------------------------------------------------------------------
    @property
    def sha256(self) -> str:
        """Hash of the voxel values, their type and shape, and the affine (rounded to 1e-4 mm).

        Two loads of the same scan give the same hash whatever the file format, as long as
        the voxel type is the same.
        """
        if self._sha256 is None:
            h = hashlib.sha256()
            h.update(b"planner.image/1\0")
            h.update(np.dtype(self._voxels.dtype).newbyteorder("<").str.encode())
            h.update(np.asarray(self.shape, dtype="<i8").tobytes())
            h.update(np.round(self._affine, 4).astype("<f8").tobytes() + b"\0")
            v = self._voxels.astype(self._voxels.dtype.newbyteorder("<"), copy=False)
            h.update(memoryview(np.ascontiguousarray(v)).cast("B"))
            self._sha256 = h.hexdigest()
        return self._sha256

    # --- new images -----------------------------------------------------------------------
    def with_voxels(self, voxels: np.ndarray, meta: ImageMeta | None = None) -> "Image":
        """A new image on the same grid with other voxel values (same shape required)."""
        v = np.asarray(voxels)
        if v.shape != self.shape:
            raise GeometryError(f"voxel shape {v.shape} does not match the grid {self.shape}")
        return Image(v, self._affine, meta if meta is not None else self._meta)

    def with_meta(self, **changes: Any) -> "Image":
        """The same voxels and grid with some metadata fields changed."""
        return Image(self._voxels, self._affine, self._meta.replace(**changes))

    def describe(self) -> dict[str, Any]:
        """Geometry and metadata as plain JSON-able values (used by ``planner info``)."""
        lo, hi = (float(self._voxels.min()), float(self._voxels.max()))
        return {
            "size_ijk": list(self.size_ijk),
            "array_shape_kji": list(self.shape),
            "spacing_mm_ijk": [round(float(s), 6) for s in self.spacing],
            "origin_lps_mm": [round(float(s), 4) for s in self.origin],
            "orientation": self.orientation,
            "direction_ijk_columns": np.round(self.direction, 6).tolist(),
            "affine": np.round(self._affine, 6).tolist(),
            "extent_lps_mm": {
                "min": np.round(self.corners().min(axis=0), 3).tolist(),
                "max": np.round(self.corners().max(axis=0), 3).tolist(),
            },
            "dtype": str(self._voxels.dtype),
            "value_range": [lo, hi],
            "sha256": self.sha256,
            **self._meta.to_dict(),
        }

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"Image(size_ijk={self.size_ijk}, spacing=({sp}) mm, orientation={self.orientation}, "
            f"modality={self._meta.modality or '?'}, dtype={self._voxels.dtype})"
        )


class ImageGrid(Image):
    """The grid of an image whose voxels are not read (yet): its shape, affine and metadata.

    Enough to place surfaces, needles and a camera in patient space; anything that needs the
    voxels (a slice, a hash, a volume rendering) raises :class:`GeometryError` instead of
    drawing a blank scan.
    """

    __slots__ = ("_shape",)

    def __init__(self, shape: tuple[int, int, int], affine: np.ndarray, meta: ImageMeta | None = None):
        super().__init__(np.zeros((1, 1, 1), np.int16), affine, meta)
        self._shape = tuple(int(n) for n in shape)
        if len(self._shape) != 3 or min(self._shape) < 1:
            raise GeometryError(f"an image grid needs three positive sizes, got {shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def _no_voxels(self) -> GeometryError:
        return GeometryError(f"the voxels of {self._meta.source or 'this image'} are not read yet (a grid only)")

    @property
    def voxels(self) -> np.ndarray:
        raise self._no_voxels()

    @property
    def sha256(self) -> str:
        raise self._no_voxels()

    def with_voxels(self, voxels: np.ndarray, meta: ImageMeta | None = None) -> "Image":
        raise self._no_voxels()

    def with_meta(self, **changes: Any) -> "Image":
        return ImageGrid(self._shape, self._affine, self._meta.replace(**changes))

    def describe(self) -> dict[str, Any]:
        raise self._no_voxels()


def check_voxel_count(shape: tuple[int, ...], what: str) -> None:
    """Refuse grids too large to be a real scan, before any memory is allocated."""
    n = 1
    for s in shape:
        if s < 1:
            raise GeometryError(f"{what}: dimension {s} in {tuple(shape)} is not positive")
        n *= int(s)
    if n > MAX_VOXELS:
        raise GeometryError(
            f"{what}: the header declares {' x '.join(str(s) for s in shape)} = {n:,} voxels, "
            f"more than the {MAX_VOXELS:,} this program accepts; the header is probably corrupt"
        )

