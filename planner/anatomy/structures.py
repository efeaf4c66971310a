"""A structure set: named binary masks on one image grid, each with a class and a colour.

Masks are stored cropped to their bounding box (a chest CT grid holds 37 M voxels; a hundred
full masks would not fit in memory), and expanded on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import InputError, brief
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

    def overlaps(self, other: "Structure") -> bool:
        """Whether the two masks share a voxel."""
        lo = [max(a, b) for a, b in zip(self.offset, other.offset)]
        hi = [min(a + n, b + m) for a, n, b, m in zip(self.offset, self.mask.shape, other.offset, other.mask.shape)]
        if any(x >= y for x, y in zip(lo, hi)):
            return False
        a = self.mask[tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, self.offset))]
        b = other.mask[tuple(slice(l - o, h - o) for l, h, o in zip(lo, hi, other.offset))]
        return bool(np.any(a & b))


class StructureSet:
    """Structures on one grid (the CT's): ``shape`` (nk, nj, ni) and ``affine`` (ijk -> LPS)."""

    def __init__(self, shape: tuple[int, int, int], affine: np.ndarray, frame_of_reference_uid: str = ""):
        self.shape = tuple(int(s) for s in shape)
        self.affine = check_affine(affine, "structure set grid")
        self.frame_of_reference_uid = frame_of_reference_uid
        self._items: dict[str, Structure] = {}
        self.empty: list[str] = []  # names given with no voxel on this grid
        self.notes: list[str] = []  # what a user must know about these structures (e.g. what was not found)

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
            raise InputError(f"structure {brief(repr(name), 60)} is given twice")
        return self._put(name, (0, 0, 0), m, cls, colour, source)

    def add_cropped(self, name: str, offset: tuple[int, int, int], crop: np.ndarray, *,
                    cls: StructureClass | str | None = None, colour: tuple[int, int, int] | None = None,
                    source: str = "") -> Structure | None:
        """Add a mask given as a crop of the grid at ``offset`` (k0, j0, i0), without a full-grid
        copy; trimmed to its own bounding box. Returns the structure, or None if it is empty."""
        m = np.asarray(crop).astype(bool, copy=False)
        o = np.asarray(offset, int)
        if m.ndim != 3 or np.any(o < 0) or np.any(o + np.array(m.shape) > np.array(self.shape)):
            raise InputError(f"structure {name!r}: a crop of shape {m.shape} at {tuple(o)} is not inside the "
                             f"image grid {self.shape}")
        if name in self._items:
            raise InputError(f"structure {brief(repr(name), 60)} is given twice")
        return self._put(name, tuple(int(x) for x in o), m, cls, colour, source)

    def _put(self, name: str, offset: tuple[int, ...], crop: np.ndarray, cls: StructureClass | str | None,
             colour: tuple[int, int, int] | None, source: str) -> Structure | None:
        """Keep ``crop`` (placed at ``offset``) trimmed to its own bounding box; an empty one is
        listed in ``empty``."""
        m = np.asarray(crop).astype(bool, copy=False)
        idx = [np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        if any(len(v) == 0 for v in idx):
            self.empty.append(name)
            return None
        lo = [int(v[0]) for v in idx]
        hi = [int(v[-1]) + 1 for v in idx]
        tight = np.ascontiguousarray(m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
        c = StructureClass.parse(cls) if cls is not None else class_of(name)
        s = Structure(name, c, colour or colour_of(c), (offset[0] + lo[0], offset[1] + lo[1], offset[2] + lo[2]),
                      tight, source)
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

    def mask(self, name: str, region: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """Boolean mask of one structure on the whole grid, or on a box of it (``region``)."""
        return self.union(names=[name], region=region) if name in self else self[name].full(self.shape)  # type: ignore[arg-type]

    def union(
        self,
        names: Iterable[str] = (),
        classes: Iterable[StructureClass | str] = (),
        region: tuple[slice, slice, slice] | None = None,
    ) -> np.ndarray:
        """Union of the named structures and of every structure of the classes.

        On the whole grid, or only on ``region`` (three slices with steps of 1, [k, j, i]).
        """
        box = region or tuple(slice(0, n) for n in self.shape)
        lo = [b.start or 0 for b in box]
        hi = [min(b.stop if b.stop is not None else n, n) for b, n in zip(box, self.shape)]
        out = np.zeros(tuple(h - l for l, h in zip(lo, hi)), dtype=bool)
        wanted = set(names)
        cl = {StructureClass.parse(c) for c in classes}
        for s in self._items.values():
            if s.name not in wanted and s.cls not in cl:
                continue
            a = [max(o, l) for o, l in zip(s.offset, lo)]
            b = [min(o + m, h) for o, m, h in zip(s.offset, s.mask.shape, hi)]
            if any(x >= y for x, y in zip(a, b)):
                continue
            out[a[0] - lo[0]:b[0] - lo[0], a[1] - lo[1]:b[1] - lo[1], a[2] - lo[2]:b[2] - lo[2]] |= s.mask[
                a[0] - s.offset[0]:b[0] - s.offset[0], a[1] - s.offset[1]:b[1] - s.offset[1],
                a[2] - s.offset[2]:b[2] - s.offset[2]]
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
