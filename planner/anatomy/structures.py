"""A structure set: named binary masks on one image grid, each with a class and a colour.

Masks are stored cropped to their bounding box (a chest CT grid holds 37 M voxels; a hundred
full masks would not fit in memory), and expanded on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import InputError
from ..images import Image
from ..images.geometry import check_affine, spacing
from .registry import StructureClass, class_of, colour_of


@dataclass(frozen=True)
class Structure:
    """One named mask, cropped: ``mask`` covers ``[k0:k0+nk, j0:j0+nj, i0:i0+ni]`` of the grid."""

    name: str
    cls: StructureClass
    colour: tuple[int, int, int]
    offset: tuple[int, int, int]
    mask: np.ndarray
    source: str = ""

    @property
    def voxel_count(self) -> int:
        return int(np.count_nonzero(self.mask))

    def bbox(self) -> tuple[slice, slice, slice]:
        """Slices of the grid array covered by ``mask``."""
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.mask.shape))  # type: ignore[return-value]

    def full(self, shape: tuple[int, int, int]) -> np.ndarray:
        out = np.zeros(shape, dtype=bool)
        out[self.bbox()] = self.mask
        return out


class StructureSet:
    """Structures on one grid (the CT's): ``shape`` (nk, nj, ni) and ``affine`` (ijk -> LPS)."""

    def __init__(self, shape: tuple[int, int, int], affine: np.ndarray, frame_of_reference_uid: str = ""):
        self.shape = tuple(int(s) for s in shape)
        self.affine = check_affine(affine, "structure set grid")
        self.frame_of_reference_uid = frame_of_reference_uid
        self._items: dict[str, Structure] = {}
        self.empty: list[str] = []  # names given with no voxel on this grid

    @classmethod
    def for_image(cls, image: Image) -> "StructureSet":
        return cls(image.shape, image.affine, image.meta.frame_of_reference_uid)

    # --- building -------------------------------------------------------------------------
    def add(
        self,
        name: str,
        mask: np.ndarray,
        *,
        cls: StructureClass | str | None = None,
        colour: tuple[int, int, int] | None = None,
        source: str = "",
        replace: bool = False,
    ) -> Structure | None:
        """Add a full-grid boolean mask; returns the structure, or None if the mask is empty."""
        m = np.asarray(mask)
        if m.shape != self.shape:
            raise InputError(f"structure {name!r}: mask shape {m.shape} does not match the image grid {self.shape}")
        if name in self._items and not replace:
            raise InputError(f"structure {name!r} is given twice")
        m = m.astype(bool, copy=False)
        idx = [np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        if any(len(v) == 0 for v in idx):
            self.empty.append(name)
            return None
        lo = [int(v[0]) for v in idx]
        hi = [int(v[-1]) + 1 for v in idx]
        crop = np.ascontiguousarray(m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
        c = StructureClass.parse(cls) if cls is not None else class_of(name)
        s = Structure(name, c, colour or colour_of(c), (lo[0], lo[1], lo[2]), crop, source)
        self._items[name] = s
        return s

    # --- reading --------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> Structure:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"no structure {name!r}; have: {', '.join(sorted(self._items)) or 'none'}") from None

    def __iter__(self) -> Iterator[Structure]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def by_class(self, cls: StructureClass | str) -> list[Structure]:
        c = StructureClass.parse(cls)
        return [s for s in self._items.values() if s.cls == c]

    def mask(self, name: str) -> np.ndarray:
        """Full-grid boolean mask of one structure."""
        return self[name].full(self.shape)  # type: ignore[arg-type]

    def union(self, names: Iterable[str] = (), classes: Iterable[StructureClass | str] = ()) -> np.ndarray:
        """Full-grid union of the named structures and of every structure of the classes."""
        out = np.zeros(self.shape, dtype=bool)
        wanted = set(names)
        cl = {StructureClass.parse(c) for c in classes}
        for s in self._items.values():
            if s.name in wanted or s.cls in cl:
                out[s.bbox()] |= s.mask
        return out

    def voxel_volume_ml(self) -> float:
        return float(np.prod(spacing(self.affine))) / 1000.0

    def summary(self) -> list[dict[str, Any]]:
        v = self.voxel_volume_ml()
        return [
            {"name": s.name, "class": s.cls.value, "voxels": s.voxel_count, "volume_ml": round(s.voxel_count * v, 3),
             "source": s.source}
            for s in self._items.values()
        ]
