"""The PET images of a plan made with ``--pet``: the PET fused over the CT in the needle's plane,
and a PET maximum intensity projection with the target and the path.

* ``pet_fusion.png``: the plane that holds the chosen needle and is as near axial as the needle
  allows (the gantry-tilted planning plane). CT in a soft-tissue window, the PET over it in a hot
  colour map (black-red-yellow-white), opacity ``opacity`` where the SUV is at or above
  ``FUSION_FLOOR_SUV`` (ramping in from half of it, so background uptake does not veil the CT),
  scaled 0 to the lesion's SUVmax (the colour bar gives the SUV); the needle path, its biopsy core
  (the preset's throw, centred on the target) and the target.
* ``pet_mip.png``: the PET's maximum intensity projection onto the coronal plane (along the grid
  axis nearest anterior-posterior), in inverted grey as PET readers show it (black = most
  uptake), the patient's right on the viewer's left, head up; the target and the path projected.

Both are drawn from the SUV already on the CT grid (NaN outside the PET), with no new
interpolation of the PET beyond the trilinear sampling of the plane.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from scipy import ndimage

from ..images import Image
from ..images.reslice import WINDOWS, window

IMAGE_PX = 512
#: SUV at or above which the PET colours the fused image fully (at ``opacity``).
FUSION_FLOOR_SUV = 1.5
BAR_PX = 18


def _hot(x: np.ndarray) -> np.ndarray:
    """The hot colour map on [0, 1] -> RGB [0, 255] (black, red, yellow, white)."""
    x = np.clip(x, 0.0, 1.0)
    r = np.clip(x / 0.4, 0, 1)
    g = np.clip((x - 0.4) / 0.4, 0, 1)
    b = np.clip((x - 0.8) / 0.2, 0, 1)
    return np.stack([r, g, b], axis=-1) * 255.0


def _label(draw: Any, x: float, y: float, text: str, size: int = 14) -> None:
    box = draw.textbbox((x, y), text, font_size=size)
    draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), font_size=size)


def _colour_bar(draw: Any, x0: int, y0: int, height: int, top_suv: float, inverted: bool = False) -> None:
    """A vertical SUV bar: 0 at the bottom, ``top_suv`` at the top, with three ticks."""
    for row in range(height):
        v = 1.0 - row / max(height - 1, 1)
        c = (tuple(int(round(255 * (1 - v))) for _ in range(3)) if inverted else
             tuple(int(round(c)) for c in _hot(np.array([v]))[0]))
        draw.line([(x0, y0 + row), (x0 + BAR_PX, y0 + row)], fill=c)
    draw.rectangle([x0, y0, x0 + BAR_PX, y0 + height], outline=(255, 255, 255))
    for frac in (0.0, 0.5, 1.0):
        y = y0 + (1 - frac) * height
        _label(draw, x0 - 52, y - 8, f"{frac * top_suv:.1f}", 12)
    _label(draw, x0 - 6, y0 - 22, "SUV", 12)


def _png(im: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def fusion_image(ct: Image, suv: np.ndarray, entry: np.ndarray, target: np.ndarray, core: tuple[np.ndarray, np.ndarray],
                 top_suv: float, opacity: float = 0.6, caption: str = "") -> bytes:
    """``pet_fusion.png`` (see the module); ``suv`` on ``ct``'s grid; ``core`` (start, end) in LPS."""
    from PIL import Image as PILImage, ImageDraw

    entry, target = np.asarray(entry, float), np.asarray(target, float)
    u = target - entry
    length = float(np.linalg.norm(u))
    u = u / length if length > 0 else np.array([1.0, 0.0, 0.0])
    side = np.cross(u, [0.0, 0.0, 1.0])  # horizontal, across the needle: the plane is as axial as can be
    if np.linalg.norm(side) < 1e-6:  # a vertical (craniocaudal) needle: a coronal plane
        side = np.array([1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    # the plane holds u and side; screen right is the one nearer the patient's left-right axis
    # (the patient's left on the viewer's right, as an axial CT is shown), down the other one,
    # posterior (or inferior) toward the bottom
    right, down = (u, side) if abs(u[0]) >= abs(side[0]) else (side, u)
    right = right if right[0] >= 0 else -right
    flip = np.sign(down[1]) if abs(down[1]) >= abs(down[2]) else -np.sign(down[2])
    down = down * (flip if flip != 0 else 1.0)
    half = max(60.0, length / 2 + 40.0)
    centre = (entry + target) / 2
    px = 2.0 * half / IMAGE_PX
    origin = centre - half * right - half * down
    cc, rr = np.meshgrid(np.arange(IMAGE_PX), np.arange(IMAGE_PX))
    lps = origin + (cc[..., None] + 0.5) * px * right + (rr[..., None] + 0.5) * px * down
    ijk = ct.lps_to_ijk(lps.reshape(-1, 3))[:, ::-1].T
    vals = ndimage.map_coordinates(np.asarray(ct.voxels, np.float32), ijk, order=1, mode="constant", cval=-1024.0)
    level, width = WINDOWS["soft-tissue"]
    grey = window(vals.reshape(IMAGE_PX, IMAGE_PX), level, width).astype(float)
    s = ndimage.map_coordinates(np.nan_to_num(np.asarray(suv, np.float32), nan=0.0), ijk, order=1, mode="constant",
                                cval=0.0).reshape(IMAGE_PX, IMAGE_PX)
    alpha = opacity * np.clip((s - FUSION_FLOOR_SUV / 2) / (FUSION_FLOOR_SUV / 2), 0.0, 1.0)
    rgb = grey[..., None] * (1 - alpha[..., None]) + _hot(s / max(top_suv, 1e-6)) * alpha[..., None]
    im = PILImage.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)

    def screen(p: np.ndarray) -> tuple[float, float]:
        v = np.asarray(p, float) - origin
        return float(v @ right / px - 0.5), float(v @ down / px - 0.5)

    e, t = screen(entry), screen(target)
    draw.line([e, t], fill=(0, 0, 0), width=7)
    draw.line([e, t], fill=(255, 255, 255), width=3)
    c0, c1 = screen(core[0]), screen(core[1])
    draw.line([c0, c1], fill=(0, 0, 0), width=11)
    draw.line([c0, c1], fill=(0, 220, 255), width=6)
    draw.ellipse([e[0] - 9, e[1] - 9, e[0] + 9, e[1] + 9], outline=(255, 230, 0), width=3)
    _label(draw, e[0] + 12, e[1] - 22, "E")
    for dx, dy in ((-12, 0), (12, 0), (0, -12), (0, 12)):
        draw.line([t, (t[0] + dx, t[1] + dy)], fill=(0, 0, 0), width=5)
        draw.line([t, (t[0] + dx, t[1] + dy)], fill=(255, 230, 0), width=2)
    _label(draw, t[0] + 12, t[1] + 6, "T")
    _colour_bar(draw, IMAGE_PX - 30, 40, 180, top_suv)
    bar = 50.0 / px
    y0 = IMAGE_PX - 30
    draw.rectangle([IMAGE_PX - 20 - bar, y0, IMAGE_PX - 20, y0 + 6], fill=(255, 255, 255), outline=(0, 0, 0))
    _label(draw, IMAGE_PX - 20 - bar, y0 - 22, "50 mm")
    _label(draw, 6, 6, "PET over CT in the needle's plane; core cyan", 13)
    if caption:
        _label(draw, 6, IMAGE_PX - 26, caption, 13)
    return _png(im)


def mip_image(suv_image: Image, target: np.ndarray, entry: np.ndarray | None, top_suv: float) -> bytes:
    """``pet_mip.png`` (see the module); ``suv_image``: SUV (NaN outside the PET) with its grid."""
    from PIL import Image as PILImage, ImageDraw

    v = np.nan_to_num(np.asarray(suv_image.voxels, np.float32), nan=0.0)
    a = np.asarray(suv_image.affine, float)[:3, :3]
    dirs = a / np.linalg.norm(a, axis=0)  # column n: LPS direction of voxel axis n (i, j, k)
    ap_axis = int(np.argmax(np.abs(dirs[1])))  # the voxel axis nearest anterior-posterior (i=0, j=1, k=2)
    mip = v.max(axis=2 - ap_axis)  # the array is [k, j, i]
    rest = [n for n in (0, 1, 2) if n != ap_axis]  # voxel axes left, in (i, j, k) order
    col_axis = max(rest, key=lambda n: abs(dirs[0, n]))  # nearest the patient's left-right
    row_axis = next(n for n in rest if n != col_axis)
    # mip's axes are the remaining array axes [k, j, i] minus the projected one: reorder to (row, col)
    arr_axes = sorted(2 - n for n in (0, 1, 2) if n != ap_axis)  # the array axes kept, in mip's order
    img = np.moveaxis(mip, [arr_axes.index(2 - row_axis), arr_axes.index(2 - col_axis)], [0, 1])
    flip_rows = dirs[2, row_axis] > 0  # head up
    flip_cols = dirs[0, col_axis] < 0  # the patient's right on the viewer's left
    if flip_rows:
        img = img[::-1]
    if flip_cols:
        img = img[:, ::-1]
    sp = np.linalg.norm(a, axis=0)
    h_mm, w_mm = img.shape[0] * sp[row_axis], img.shape[1] * sp[col_axis]
    scale = IMAGE_PX / max(h_mm, w_mm)
    size = (max(1, int(round(w_mm * scale))), max(1, int(round(h_mm * scale))))
    grey = 255.0 - 255.0 * np.clip(img / max(top_suv, 1e-6), 0.0, 1.0)
    small = PILImage.fromarray(np.rint(grey).astype(np.uint8), "L").resize(size, PILImage.BILINEAR)
    im = PILImage.new("RGB", (IMAGE_PX + 80, IMAGE_PX), (255, 255, 255))
    im.paste(small.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(im)

    def screen(p: np.ndarray) -> tuple[float, float]:
        ijk = suv_image.lps_to_ijk(np.asarray(p, float)[None])[0]
        r, c = ijk[row_axis], ijk[col_axis]
        n_r, n_c = img.shape
        r = (n_r - 1 - r) if flip_rows else r
        c = (n_c - 1 - c) if flip_cols else c
        return float((c + 0.5) * sp[col_axis] * scale), float((r + 0.5) * sp[row_axis] * scale)

    t = screen(target)
    if entry is not None:
        e = screen(entry)
        draw.line([e, t], fill=(0, 120, 255), width=3)
        draw.ellipse([e[0] - 6, e[1] - 6, e[0] + 6, e[1] + 6], outline=(0, 120, 255), width=2)
    for dx, dy in ((-14, 0), (14, 0), (0, -14), (0, 14)):
        draw.line([t, (t[0] + dx, t[1] + dy)], fill=(230, 0, 0), width=3)
    _label(draw, t[0] + 10, t[1] + 6, "T")
    _colour_bar(draw, IMAGE_PX + 50, 40, 180, top_suv, inverted=True)
    _label(draw, 6, 6, "PET maximum intensity projection (coronal)", 13)
    _label(draw, 6, IMAGE_PX - 24, "R", 13)
    _label(draw, size[0] - 18, IMAGE_PX - 24, "L", 13)
    return _png(im)
