"""3D Slicer segmentation files (``.seg.nrrd``): read onto the CT grid, and write.

The format is an NRRD label map with segment metadata as key/value fields::

    Segment<N>_ID, Segment<N>_Name, Segment<N>_Color ("r g b", 0..1),
    Segment<N>_LabelValue, Segment<N>_Layer, Segment<N>_Extent ("i0 i1 j0 j1 k0 k1")
    Segmentation_MasterRepresentation:=Binary labelmap

A 3D array holds one layer; a 4D array (one axis of kind ``list``) holds several, so that
overlapping segments can each keep their voxels. Files written before Slicer 4.11 have no
LabelValue/Layer fields: there each segment owns one layer of a 4D array, with value 1.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError, brief
from ..images import Image, geometry
from ..images.image import check_voxel_count
from .dicom_seg import add_structure
from .placing import extent_text, extents_overlap, grid_corners, on_ct_grid, structure_name, unique_name
from .structures import StructureSet

_LPS_NAMES = {"left-posterior-superior", "lps"}
_RAS_NAMES = {"right-anterior-superior", "ras"}
_SEGMENT_FIELD = re.compile(r"^Segment(\d+)_(\w+)$")


def _read(p: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Layers (n_layers, nk, nj, ni), the affine (i, j, k, 1) -> LPS, and the header."""
    import nrrd

    sizes, spatial, affine, header = _geometry(p)
    try:
        data, _ = nrrd.read(str(p), index_order="C")  # C order: reversed file axes
    except Exception as exc:
        raise InputError(f"{p}: the voxel data cannot be read ({brief(exc)}); the file may be truncated") from None
    if len(sizes) == 4:
        list_axis = next(a for a in range(4) if a not in spatial)
        data = np.moveaxis(data, 3 - list_axis, 0)
    else:
        data = data[None]
    if not np.issubdtype(data.dtype, np.integer):
        raise InputError(f"{p}: segmentation voxels must be integers, the file holds {data.dtype}")
    return data, affine, header


def _geometry(p: Path) -> tuple[list[int], list[int], np.ndarray, dict[str, Any]]:
    """From the header alone: the file's sizes, its spatial axes, the affine and the header."""
    import nrrd

    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        header = nrrd.read_header(str(p))
    except Exception as exc:
        raise InputError(f"{p}: not a readable NRRD file ({brief(exc)})") from None
    sizes = [int(s) for s in header.get("sizes", [])]
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * len(sizes))]
    if len(sizes) not in (3, 4) or len(kinds) != len(sizes):
        raise InputError(f"{p}: a segmentation needs a 3D or 4D (layers) array, the file has sizes {brief(sizes, 60)}")
    spatial = [a for a, k in enumerate(kinds) if k in ("domain", "space")]
    if len(spatial) != 3:
        raise InputError(f"{p}: expected three spatial axes (kinds 'domain'), the file has kinds {brief(kinds, 80)}")
    check_voxel_count(tuple(sizes), str(p))
    space = str(header.get("space", "")).lower()
    if space not in _LPS_NAMES | _RAS_NAMES:
        raise InputError(f"{p}: NRRD space {brief(repr(header.get('space')), 60)} is not LPS or RAS; "
                         "patient positions are unknown")
    dirs, origin = header.get("space directions"), header.get("space origin")
    if dirs is None or origin is None:
        raise InputError(f"{p}: NRRD header lacks 'space directions' or 'space origin'")
    try:
        dirs = np.asarray(dirs, dtype=float)
        dirs = dirs[spatial] if dirs.shape[0] == len(sizes) else dirs  # drop the 'none' row of the list axis
        origin = np.asarray(origin, dtype=float).reshape(3)
    except (TypeError, ValueError):
        raise InputError(f"{p}: 'space directions' or 'space origin' is malformed") from None
    if dirs.shape != (3, 3) or not np.all(np.isfinite(dirs)):
        raise InputError(f"{p}: 'space directions' must give three finite 3-vectors, got {brief(dirs.tolist(), 100)}")
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = dirs.T, origin  # row n of 'space directions': step along file axis n
    affine = geometry.check_affine(affine, str(p))
    if space in _RAS_NAMES:
        affine = geometry.flip_xy(affine)
    return sizes, spatial, affine, dict(header)


def read_grid(path: str | os.PathLike[str]) -> Image:
    """The grid of a ``.seg.nrrd`` (its spatial shape (nk, nj, ni) and affine), from its header."""
    from ..images.image import ImageGrid

    sizes, spatial, affine, _ = _geometry(Path(path))
    return ImageGrid(tuple(sizes[a] for a in reversed(spatial)), affine)


def _segments(header: dict[str, Any], n_layers: int, p: Path) -> list[dict[str, Any]]:
    """Segment records ``{"name", "colour", "value", "layer"}`` in file order."""
    fields: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        m = _SEGMENT_FIELD.match(str(key))
        if m:
            fields.setdefault(int(m.group(1)), {})[m.group(2)] = str(value)
    old_style = not any("LabelValue" in f for f in fields.values())
    out = []
    for n in sorted(fields):
        f = fields[n]
        what = f"{p}: Segment{n}"
        try:
            value = int(f.get("LabelValue", 1))
            layer = int(f.get("Layer", n if old_style and n_layers > 1 else 0))
        except ValueError:
            raise InputError(f"{what}: LabelValue {brief(repr(f.get('LabelValue')), 40)} or Layer "
                             f"{brief(repr(f.get('Layer')), 40)} is not an integer") from None
        if not 0 <= layer < n_layers:
            raise InputError(f"{what}: layer {layer} does not exist (the file has {n_layers})")
        colour = None
        if "Color" in f:
            try:
                rgb = [float(c) for c in f["Color"].split()]
            except ValueError:
                rgb = []
            if len(rgb) != 3 or not all(math.isfinite(c) for c in rgb):
                raise InputError(f"{what}: Color {brief(repr(f['Color']), 60)} is not three numbers 0..1")
            colour = tuple(int(round(min(max(c, 0.0), 1.0) * 255)) for c in rgb)
        out.append({"name": f.get("Name") or f.get("ID") or f"Segment_{n}", "colour": colour, "value": value, "layer": layer})
    if not out:
        raise InputError(f"{p}: no Segment<N>_ fields in the header; not a 3D Slicer segmentation (a label map needs a label table)")
    return out


def load_slicer_seg(path: str | os.PathLike[str], ct: Image, *, cache: bool = True,
                    ct_sha256: str | None = None) -> StructureSet:
    """Read a 3D Slicer ``.seg.nrrd`` onto the CT grid (see :func:`read_slicer_seg`); with
    ``cache``, a file read before onto the same CT comes from :mod:`.mask_cache` (same bytes,
    same voxels), and a file read now is kept there.

    ``ct`` may be a grid only (:class:`~planner.images.image.ImageGrid`, a CT not read yet) with
    ``ct_sha256`` the voxel hash a plan recorded of it: the cache is then only read (an entry's
    masks depend on the file's bytes and the grid, both checked; the hash names the entry)."""
    from ..images.image import ImageGrid

    grid_only = isinstance(ct, ImageGrid)
    if not cache or (grid_only and not ct_sha256):
        return read_slicer_seg(path, ct)
    from . import mask_cache

    try:
        sha = mask_cache.file_sha256(path)
    except OSError:
        return read_slicer_seg(path, ct)  # the reader says what is wrong with the path
    sset = mask_cache.cached_structures(sha, ct, str(Path(path)), ct_sha256=ct_sha256 if grid_only else None)
    if sset is None and grid_only:
        return read_slicer_seg(path, ct)
    if sset is None:
        sset = read_slicer_seg(path, ct)
        mask_cache.store_structures(sha, ct, sset)
    return sset


def read_slicer_seg(path: str | os.PathLike[str], ct: Image) -> StructureSet:
    """Read a 3D Slicer ``.seg.nrrd`` onto the CT grid.

    Parameters
    ----------
    path : path
        The ``.seg.nrrd`` file: 3D (one layer) or 4D (layers), LPS or RAS space, on any grid.
    ct : Image
        The CT; masks land on its grid, shape ``ct.shape`` (nk, nj, ni), in LPS.

    Returns
    -------
    StructureSet
        One structure per segment, named from Segment<N>_Name (a TotalSegmentator name when
        one matches), coloured from Segment<N>_Color.

    Raises
    ------
    InputError
        Unreadable file, no segment fields, or a grid that does not overlap the CT.
    """
    p = Path(path)
    layers, affine, header = _read(p)
    corners = grid_corners(layers.shape[1:], affine)
    if not extents_overlap(corners, ct):
        raise InputError(f"{p}: the segments ({extent_text(corners)}) do not overlap the CT ({extent_text(ct.corners())})")
    sset = StructureSet.for_image(ct)
    taken: set[str] = set()
    outside = []
    same_grid = layers.shape[1:] == ct.shape and np.allclose(affine, ct.affine, atol=1e-4)
    boxes: dict[int, list] = {}  # per layer, the bounding box of each label value (one pass per layer)
    for s in _segments(header, layers.shape[0], p):
        name = unique_name(structure_name(s["name"]), taken)
        layer = layers[s["layer"]]
        if same_grid and s["value"] >= 1 and np.issubdtype(layer.dtype, np.integer):
            # the common case (a plan's own structures): no full-grid mask per segment
            if s["layer"] not in boxes:
                boxes[s["layer"]] = ndimage.find_objects(np.maximum(layer, 0) if layer.min() < 0 else layer)
            found = boxes[s["layer"]]
            box = found[s["value"] - 1] if s["value"] <= len(found) else None
            if box is None:
                sset.empty.append(name)
            else:
                sset.add_cropped(name, tuple(b.start for b in box), layer[box] == s["value"], colour=s["colour"],
                                 source=str(p))
            continue
        mask = layers[s["layer"]] == s["value"]
        if not mask.any():
            sset.empty.append(name)
            continue
        on_ct = on_ct_grid(mask, affine, ct)
        if not add_structure(sset, name, on_ct, s["colour"], str(p)):
            outside.append(name)
    if outside and not len(sset):
        raise InputError(f"{p}: no segment has a voxel inside the CT")
    return sset


def _layers_for(sset: StructureSet) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Greedy layering: each structure goes in the first layer where it overlaps nothing.

    Returns the layers (each shape ``sset.shape``, label values 1, 2, ... per layer) and, per
    structure in order, its (layer, label value).
    """
    layers: list[np.ndarray] = []
    counts: list[int] = []
    where: list[tuple[int, int]] = []
    for s in sset:
        box = s.bbox()
        li = next((n for n, layer in enumerate(layers) if not layer[box][s.mask].any()), len(layers))
        if li == len(layers):
            layers.append(np.zeros(sset.shape, np.uint8))
            counts.append(0)
        counts[li] += 1
        if counts[li] > np.iinfo(layers[li].dtype).max:
            layers[li] = layers[li].astype(np.uint16)
        layers[li][box][s.mask] = counts[li]
        where.append((li, counts[li]))
    return layers, where


def save_slicer_seg(sset: StructureSet, path: str | os.PathLike[str]) -> None:
    """Write a structure set as a 3D Slicer ``.seg.nrrd`` on its own grid (gzip, LPS), atomically.

    Structures that do not overlap share a layer; overlapping ones go to further layers
    (a 4D file whose first file axis, of kind ``list``, indexes the layers). Each segment
    keeps its name, colour and class (as a tag); empty structures are not written.

    Parameters
    ----------
    sset : StructureSet
        Masks on the grid ``sset.shape`` (nk, nj, ni) with ``sset.affine`` (i, j, k, 1) -> LPS.
    path : path
        The file to write; should end in ``.seg.nrrd``.
    """
    import nrrd

    p = Path(path)
    layers, where = _layers_for(sset)
    if not layers:  # a file 3D Slicer and the planner would read as no segmentation at all
        raise InputError(f"{p}: no structure to write (every one is empty); nothing was written")
    dtype = np.uint16 if any(layer.dtype == np.uint16 for layer in layers) else np.uint8
    dirs = np.asarray(sset.affine, float)[:3, :3].T  # row n: the step along file axis n (i, j, k)
    header: dict[str, Any] = {
        "space": "left-posterior-superior",
        "space origin": np.asarray(sset.affine, float)[:3, 3],
        "encoding": "gzip",
    }
    if len(layers) == 1:
        data = layers[0].astype(dtype, copy=False)
        header.update({"kinds": ["domain"] * 3, "space directions": dirs})
    else:
        data = np.stack([layer.astype(dtype, copy=False) for layer in layers], axis=-1)  # [k, j, i, layer]
        header.update({"kinds": ["list", "domain", "domain", "domain"],
                       "space directions": np.vstack([np.full(3, np.nan), dirs])})
    for n, (s, (layer, value)) in enumerate(zip(sset, where)):
        (k0, j0, i0), (nk, nj, ni) = s.offset, s.mask.shape
        header.update({
            f"Segment{n}_ID": s.name,
            f"Segment{n}_Name": s.name,
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Color": " ".join(f"{c / 255:.6g}" for c in s.colour),
            f"Segment{n}_ColorAutoGenerated": "0",
            f"Segment{n}_LabelValue": str(value),
            f"Segment{n}_Layer": str(layer),
            f"Segment{n}_Extent": f"{i0} {i0 + ni - 1} {j0} {j0 + nj - 1} {k0} {k0 + nk - 1}",
            f"Segment{n}_Tags": f"planner.class:{s.cls.value}|",
        })
    header.update({
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    })
    from ..atomic import atomic_path

    try:
        with atomic_path(p, ".seg.nrrd") as tmp:
            nrrd.write(str(tmp), np.ascontiguousarray(data), header, compression_level=1, index_order="C")
    except OSError as exc:
        raise InputError(f"{p}: cannot write the segmentation ({exc.strerror})") from None
