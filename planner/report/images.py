"""The report's images: the scene's views when the plan folder has them, else needle-path planes.

The scene (``planner.scene``) writes ``images/planning_slice.png``, ``bullseye.png``,
``progression.png`` and ``overview_3d.png`` into the plan folder; :func:`report_images`
returns those that exist, in that order. When none exists it draws, with PIL, an axial,
coronal and sagittal plane through the target with the avoided structures outlined and the
chosen needle path projected onto the plane (``images/path_<plane>.png``).

Drawings work in black and white too: the needle is a white line with a black border, the
entry a ring marked E, the target a cross marked T; structures are outlined, and the legend
names them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..anatomy.registry import StructureClass, colour_of
from ..anatomy.structures import Structure, StructureSet
from ..images import Image
from ..images.reslice import WINDOWS, mr_window, plane_axes, window
from ..atomic import write_bytes_atomic

SCENE_IMAGES = ("planning_slice", "bullseye", "progression", "overview_3d")
SCENE_TITLES = {
    "planning_slice": "Planning slice",
    "bullseye": "Bull's-eye view along the needle",
    "progression": "Needle progression",
    "overview_3d": "3D overview",
    "probe_plane": "Ultrasound probe plane: the probe on top, its marker end towards the needle's entry",
    "pet_fusion": "PET (SUV, hot colours) over the CT in the needle's plane: the biopsy core in cyan, T the target",
    "pet_mip": "PET maximum intensity projection (coronal; darker = more uptake): T the target, the path in blue",
}
PATH_PLANES = ("axial", "coronal", "sagittal")
PLANNER_IMAGES = ("probe_plane", "pet_fusion", "pet_mip")  # written by the planner itself (ultrasound, PET)
OUTLINED = (StructureClass.BONE, StructureClass.VESSEL, StructureClass.AIRWAY, StructureClass.ORGAN,
            StructureClass.NERVE, StructureClass.TARGET, StructureClass.FISSURE)
_LETTERS = {  # screen right, screen down -> the patient direction on the left/top edges and right/bottom
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}
IMAGE_PX = 512


def report_images(plan_dir: str | os.PathLike[str], ct: Image | None = None, structures: StructureSet | None = None,
                  doc: dict[str, Any] | None = None, extra: Sequence[Structure] = ()) -> dict[str, Path]:
    """Name -> PNG path of the images a report shows, in display order.

    The scene's images when at least one exists in ``plan_dir/images``; otherwise the
    needle-path planes, drawn now when ``ct`` and ``doc`` are given (an empty mapping if not);
    ``extra`` structures (a lesion grown from a seed) are outlined with the set's.
    """
    folder = Path(plan_dir) / "images"
    planned = {n: folder / f"{n}.png" for n in PLANNER_IMAGES if (folder / f"{n}.png").is_file()}
    scene = {n: folder / f"{n}.png" for n in SCENE_IMAGES if (folder / f"{n}.png").is_file()}
    if scene:
        return {**scene, **planned}
    if ct is None or doc is None:
        paths = {f"path_{p}": folder / f"path_{p}.png" for p in PATH_PLANES if (folder / f"path_{p}.png").is_file()}
        return {**paths, **planned}
    return {**write_path_images(folder, ct, structures, doc, extra), **planned}


def image_title(name: str) -> str:
    if name in SCENE_TITLES:
        return SCENE_TITLES[name]
    if name.startswith("path_"):
        return f"{name[5:].capitalize()} plane through the target, needle #1 projected"
    return name.replace("_", " ")


def _class_labels(structures: StructureSet | None, classes: Sequence[StructureClass],
                  extra: Sequence[Structure] = ()) -> np.ndarray | None:
    """A uint8 volume: the 1-based index in ``classes`` of each voxel's structure class (0 none)."""
    if structures is None or len(structures) == 0:
        return None
    lab = np.zeros(structures.shape, np.uint8)
    for s in [*structures, *extra]:
        if s.cls in classes:
            lab[s.bbox()][s.mask] = classes.index(s.cls) + 1
    return lab if lab.any() else None


def _window_for(doc: dict[str, Any], ct: Image | None = None) -> tuple[float, float]:
    if ct is not None and (ct.meta.modality or "").upper() == "MR":  # no fixed scale: the MR's own percentiles
        return mr_window(ct)
    return WINDOWS["lung" if doc.get("procedure") == "lung-biopsy" else "soft-tissue"]


def write_path_images(folder: Path, ct: Image, structures: StructureSet | None, doc: dict[str, Any],
                      extra: Sequence[Structure] = ()) -> dict[str, Path]:
    """Draw ``path_axial.png``, ``path_coronal.png`` and ``path_sagittal.png`` into ``folder``."""
    target = np.asarray(doc["target"]["point"], float)
    trajs = doc.get("trajectories", [])
    entry = np.asarray(trajs[0]["entry"], float) if trajs else None
    classes = list(OUTLINED)
    labels = _class_labels(structures, classes, extra)
    # The field of view: the path with 40 mm around it, at least 120 mm across.
    pts = target[None] if entry is None else np.vstack([target, entry])
    half = max(60.0, float(np.ptp(pts, axis=0).max()) / 2 + 40.0)
    centre = pts.mean(axis=0)
    level, width = _window_for(doc, ct)
    out: dict[str, Path] = {}
    for plane in PATH_PLANES:
        png = _draw_plane(ct, labels, classes, plane, target, entry, centre, half, level, width)  # type: ignore[arg-type]
        out[f"path_{plane}"] = write_bytes_atomic(png, folder / f"path_{plane}.png")
    return out


def _draw_plane(ct: Image, labels: np.ndarray | None, classes: list[StructureClass], plane: str, target: np.ndarray,
                entry: np.ndarray | None, centre: np.ndarray, half: float, level: float, width: float) -> bytes:
    from PIL import Image as PILImage, ImageDraw

    right, down = plane_axes(plane)  # type: ignore[arg-type]
    normal = np.cross(right, down)
    # The plane holds the target; the view is centred on the path's middle, projected onto it.
    c = centre - float(np.dot(centre - target, normal)) * normal
    px = 2.0 * half / IMAGE_PX
    origin = c - half * right - half * down
    cc, rr = np.meshgrid(np.arange(IMAGE_PX), np.arange(IMAGE_PX))
    lps = origin + (cc[..., None] + 0.5) * px * right + (rr[..., None] + 0.5) * px * down
    ijk = ct.lps_to_ijk(lps.reshape(-1, 3))[:, ::-1].T
    vals = ndimage.map_coordinates(ct.voxels, ijk, order=1, mode="constant", cval=float(ct.voxels.min()))
    grey = window(vals.reshape(IMAGE_PX, IMAGE_PX), level, width)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    present: list[StructureClass] = []
    if labels is not None:
        lab = ndimage.map_coordinates(labels, ijk, order=0, mode="constant", cval=0).reshape(IMAGE_PX, IMAGE_PX)
        for n, cls in enumerate(classes, start=1):
            m = lab == n
            if not m.any():
                continue
            edge = m & ~ndimage.binary_erosion(m)
            edge = ndimage.binary_dilation(edge)
            rgb[edge] = colour_of(cls)
            present.append(cls)
    im = PILImage.fromarray(rgb.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)

    def screen(p: np.ndarray) -> tuple[float, float]:
        v = p - origin
        return float(np.dot(v, right) / px - 0.5), float(np.dot(v, down) / px - 0.5)

    tx, ty = screen(target)
    if entry is not None:
        ex, ey = screen(entry)
        draw.line([(ex, ey), (tx, ty)], fill=(0, 0, 0), width=7)
        draw.line([(ex, ey), (tx, ty)], fill=(255, 255, 255), width=3)
        draw.ellipse([ex - 9, ey - 9, ex + 9, ey + 9], outline=(0, 0, 0), width=5)
        draw.ellipse([ex - 9, ey - 9, ex + 9, ey + 9], outline=(255, 230, 0), width=2)
        _label(draw, ex + 12, ey - 22, "E")
        off = abs(float(np.dot(entry - target, normal)))
        if off >= 1.0:
            _label(draw, 8, IMAGE_PX - 58, f"entry {off:.0f} mm out of plane (projected)")
    for dx, dy in ((-12, 0), (12, 0), (0, -12), (0, 12)):
        draw.line([(tx, ty), (tx + dx, ty + dy)], fill=(0, 0, 0), width=5)
        draw.line([(tx, ty), (tx + dx, ty + dy)], fill=(255, 230, 0), width=2)
    _label(draw, tx + 12, ty + 6, "T")
    left, rgt, top, bottom = _LETTERS[plane]
    _label(draw, 6, IMAGE_PX / 2 - 8, left)
    _label(draw, IMAGE_PX - 20, IMAGE_PX / 2 - 8, rgt)
    _label(draw, IMAGE_PX / 2 - 5, 6, top)
    _label(draw, IMAGE_PX / 2 - 5, IMAGE_PX - 24, bottom)
    bar = 50.0 / px  # a 5 cm scale bar
    y0 = IMAGE_PX - 30
    draw.rectangle([IMAGE_PX - 20 - bar, y0, IMAGE_PX - 20, y0 + 6], fill=(255, 255, 255), outline=(0, 0, 0))
    _label(draw, IMAGE_PX - 20 - bar, y0 - 22, "50 mm")
    for n, cls in enumerate(present):
        y = 6 + 18 * n
        draw.rectangle([IMAGE_PX - 110, y + 3, IMAGE_PX - 98, y + 13], fill=colour_of(cls), outline=(0, 0, 0))
        _label(draw, IMAGE_PX - 94, y, cls.value)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _label(draw: Any, x: float, y: float, text: str, size: int = 14) -> None:
    """Text readable on any background and in black and white: white on a black box."""
    box = draw.textbbox((x, y), text, font_size=size)
    draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), font_size=size)
