"""The check's images, drawn with PIL from ``check.json`` and the scans (no VTK needed).

- ``needles_plane.png``: the check scan, mapped into the planning CT's coordinates through the
  registration, on the plane that holds the planned line and best holds the actual needle (the
  plane through the planned line that passes closest, in the least-squares sense, to the
  needle's tip and skin puncture, the tip counting double: for a needle that entered at the
  planned entry it holds both lines; for a needle parallel to the plan it is the plane through
  the planned line and the tip). Drawn on it: the planned path (dashed, entry E and target T),
  the target's outline (the segmented lesion's cut when the plan has it, else a circle of its
  equivalent diameter), the actual needle (two solid rails either side of it, so that the metal
  shows between them; tip marked), its extension to the target's depth (dotted, the predicted
  tip marked), the redirect or new line of the correction when there is one, a scale bar,
  orientation letters and the deviation figures as a caption. Where the check scan does not
  reach (it is often only a slab of 10-20 slices), the planning CT fills in, dimmed.
- ``bullseye.png``: looking down the planned axis from the entry: the plane through the target
  perpendicular to it, the planned line as the centre cross, the target's outline (as above)
  and, when the hit is judged by the distance from the target's centre, the circle the
  predicted tip must fall in; the actual needle projected (its skin puncture to its tip, solid;
  on to the predicted tip, dotted), the current tip and the predicted tip marked, the miss in
  mm, a scale bar and the orientation letters (L/R, A/P, H/F).

Every drawing reads in black and white: lines have black borders, marks carry words. The PNG
carries its own geometry (text chunk ``planner:geometry``: the LPS point of pixel (0, 0), the
LPS directions of a step right and down, mm per pixel) so that anyone can map a position of
``check.json`` onto it (:func:`plane_from_png`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..images.reslice import WINDOWS, window
from ..report.images import _label
from ..scene import geometry as G

SIZE = 640  # pixels of the CT square
PLANNED = (255, 214, 0)  # the planned path: yellow, as the scene's chosen needle
ACTUAL = (125, 90, 255)  # the actual needle: violet, as the scene's (planner.scene.needles.ACTUAL)
ADVANCED = (200, 185, 255)  # its extension to the target's depth: a lighter violet, seen on dark lung too
TARGET = (255, 0, 255)  # the target: magenta, as the scene's target marker
CORRECTION = (0, 220, 255)  # the line of the correction (redirect, new trajectory): cyan
DIM = 0.42  # brightness of the planning CT where the check scan does not reach
GEOMETRY_KEY = "planner:geometry"


@dataclass
class Plane:
    """A square of pixels in LPS: pixel (col, row) centre = origin + col * px * right + row * px * down."""

    origin: np.ndarray
    right: np.ndarray
    down: np.ndarray
    px: float  # mm per pixel
    size: int = SIZE

    @classmethod
    def around(cls, frame: G.ViewFrame, centre: np.ndarray, half_mm: float, size: int = SIZE) -> "Plane":
        right, down = frame.right, -frame.up
        n = frame.dop
        c = np.asarray(centre, float)
        c = c - float((c - frame.focal) @ n) * n  # into the plane
        px = 2.0 * half_mm / size
        origin = c - (size / 2.0 - 0.5) * px * (right + down)
        return cls(origin, right, down, px, size)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.right, self.down)

    def pixel(self, p: Any) -> tuple[float, float]:
        v = np.asarray(p, float) - self.origin
        return float(v @ self.right / self.px), float(v @ self.down / self.px)

    def lps(self) -> np.ndarray:
        """The LPS point of every pixel centre, (size, size, 3) indexed [row, col]."""
        cc, rr = np.meshgrid(np.arange(self.size), np.arange(self.size))
        return self.origin + self.px * (cc[..., None] * self.right + rr[..., None] * self.down)

    def to_json(self) -> dict[str, Any]:
        return {"origin_lps": [round(float(x), 4) for x in self.origin],
                "right_lps": [round(float(x), 6) for x in self.right],
                "down_lps": [round(float(x), 6) for x in self.down], "mm_per_pixel": round(self.px, 6),
                "size": [self.size, self.size]}


def plane_from_png(png: Any) -> Plane:
    """The geometry a check image carries (a path, bytes or a PIL image)."""
    from PIL import Image as PILImage

    im = png if hasattr(png, "text") else PILImage.open(io.BytesIO(png) if isinstance(png, bytes) else png)
    g = json.loads(im.text[GEOMETRY_KEY])
    return Plane(np.array(g["origin_lps"]), np.array(g["right_lps"]), np.array(g["down_lps"]),
                 float(g["mm_per_pixel"]), int(g["size"][0]))


# --- sampling -------------------------------------------------------------------------------
def _sample(image: Any, lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear CT numbers of ``image`` at LPS points, and where the image covers them."""
    flat = lps.reshape(-1, 3)
    ijk = image.lps_to_ijk(flat)
    shape = np.array(image.shape[::-1], float)  # (ni, nj, nk)
    inside = np.all((ijk >= -0.5) & (ijk <= shape - 0.5), axis=1)
    vals = ndimage.map_coordinates(image.voxels, ijk[:, ::-1].T, order=1, mode="nearest", output=np.float32)
    return vals.reshape(lps.shape[:-1]), inside.reshape(lps.shape[:-1])


def check_plane_grey(plane: Plane, planning: Any, check: Any, check_to_planning: np.ndarray,
                     level: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """The plane's grey values (uint8): the check scan where it reaches, the planning CT dimmed
    elsewhere; and the mask of the pixels the check scan covers."""
    pts = plane.lps()
    to_check = np.linalg.inv(np.asarray(check_to_planning, float))
    in_check = pts @ to_check[:3, :3].T + to_check[:3, 3]
    hu_check, covered = _sample(check, in_check)
    hu_plan, in_plan = _sample(planning, pts)
    grey = np.where(covered, window(hu_check, level, width),
                    np.rint(DIM * window(hu_plan, level, width) * in_plan)).astype(np.uint8)
    return grey, covered


def structure_outline(plane: Plane, structure: Any, affine: np.ndarray) -> np.ndarray:
    """The pixels on the edge of a structure's cut by the plane (its mask sampled at the pixel
    centres, nearest voxel), two pixels wide; all False where the plane misses it."""
    pts = plane.lps().reshape(-1, 3)
    ijk = np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(np.asarray(affine, float)).T
    kji = np.rint(ijk[:, 2::-1]).astype(int) - np.asarray(structure.offset, int)
    shape = np.asarray(structure.mask.shape)
    ok = np.all((kji >= 0) & (kji < shape), axis=1)
    inside = np.zeros(len(pts), bool)
    inside[ok] = structure.mask[tuple(kji[ok].T)]
    inside = inside.reshape(plane.size, plane.size)
    if not inside.any():
        return inside
    return ndimage.binary_dilation(inside & ~ndimage.binary_erosion(inside))


def _paint(im: Any, mask: np.ndarray, colour: Sequence[int]) -> None:
    """Paint the pixels of ``mask`` in ``colour`` with a black rim outside (reads in black and white)."""
    from PIL import Image as PILImage

    if not mask.any():
        return
    rgb = np.asarray(im).copy()
    rim = ndimage.binary_dilation(mask, iterations=1) & ~mask
    rgb[rim] = 0
    rgb[mask] = colour
    im.paste(PILImage.fromarray(rgb, "RGB"))


def _hit_by_sphere(doc: dict[str, Any]) -> bool:
    """Whether ``target_hit`` was decided by a sphere about the target (its centre within
    ``hit_tolerance_mm``), not on a structure's voxels (``hit_by`` names it)."""
    return str(doc["deviation"].get("hit_by", "sphere")) == "sphere"


def _window_of(procedure: str | None) -> tuple[float, float]:
    return WINDOWS["lung" if procedure == "lung-biopsy" else "soft-tissue"]


# --- drawing helpers --------------------------------------------------------------------------
def _dashed(draw: Any, a: Sequence[float], b: Sequence[float], colour: Sequence[int], width: int, dash: float,
            gap: float, border: bool = True) -> None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    length = float(np.linalg.norm(b - a))
    if length < 1e-6:
        return
    d = (b - a) / length
    s = 0.0
    pieces = []
    while s < length:
        e = min(s + dash, length)
        pieces.append((tuple(a + s * d), tuple(a + e * d)))
        s = e + gap
    if border:
        for p, q in pieces:
            draw.line([p, q], fill=(0, 0, 0), width=width + 4)
    for p, q in pieces:
        draw.line([p, q], fill=tuple(colour), width=width)


def _line(draw: Any, a: Sequence[float], b: Sequence[float], colour: Sequence[int], width: int) -> None:
    draw.line([tuple(a), tuple(b)], fill=(0, 0, 0), width=width + 4)
    draw.line([tuple(a), tuple(b)], fill=tuple(colour), width=width)


def _ring(draw: Any, c: Sequence[float], r: float, colour: Sequence[int], width: int = 2) -> None:
    x, y = c
    draw.ellipse([x - r, y - r, x + r, y + r], outline=(0, 0, 0), width=width + 3)
    draw.ellipse([x - r, y - r, x + r, y + r], outline=tuple(colour), width=width)


def _cross(draw: Any, c: Sequence[float], r: float, colour: Sequence[int], diagonal: bool = False) -> None:
    x, y = c
    arms = ((-r, -r, r, r), (-r, r, r, -r)) if diagonal else ((-r, 0, r, 0), (0, -r, 0, r))
    for dx0, dy0, dx1, dy1 in arms:
        draw.line([(x + dx0, y + dy0), (x + dx1, y + dy1)], fill=(0, 0, 0), width=6)
    for dx0, dy0, dx1, dy1 in arms:
        draw.line([(x + dx0, y + dy0), (x + dx1, y + dy1)], fill=tuple(colour), width=2)


def _dashed_circle(draw: Any, c: Sequence[float], r: float, colour: Sequence[int], n: int = 36) -> None:
    x, y = c
    for k in range(0, n, 2):
        a0, a1 = 360.0 * k / n, 360.0 * (k + 1) / n
        draw.arc([x - r, y - r, x + r, y + r], a0, a1, fill=(0, 0, 0), width=5)
        draw.arc([x - r, y - r, x + r, y + r], a0, a1, fill=tuple(colour), width=2)


def _rails(draw: Any, a: Sequence[float], b: Sequence[float], colour: Sequence[int], half_gap: float,
           width: int = 2) -> None:
    """The needle as two solid lines either side of its axis, ``half_gap`` pixels from it, with black
    borders outside: the metal in the CT stays visible between them."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    if np.linalg.norm(d) < 1e-6:
        return
    nrm = np.array([-d[1], d[0]]) / np.linalg.norm(d)
    for s in (1, -1):
        off = s * nrm * (half_gap + width / 2.0)
        out = s * nrm * (half_gap + width + 1.0)
        draw.line([tuple(a + out), tuple(b + out)], fill=(0, 0, 0), width=2)
        draw.line([tuple(a + off), tuple(b + off)], fill=tuple(colour), width=width)
    draw.line([tuple(b + nrm * (half_gap + width)), tuple(b - nrm * (half_gap + width))], fill=tuple(colour),
              width=width)  # the tip's end closed


def _clip_segment(a: np.ndarray, b: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The part of the pixel segment a-b inside the image (Liang-Barsky), or None."""
    lo, hi = -0.5, size - 0.5
    d = b - a
    t0, t1 = 0.0, 1.0
    for p, q in ((-d[0], a[0] - lo), (d[0], hi - a[0]), (-d[1], a[1] - lo), (d[1], hi - a[1])):
        if abs(p) < 1e-12:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
    if t0 > t1:
        return None
    return a + t0 * d, a + t1 * d


def _scale_bar(draw: Any, plane: Plane) -> float:
    fov = plane.px * plane.size
    # the shortest round length of at least an eighth of the field (the longest for a huge field)
    bars = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
    bar_mm = next((b for b in bars if b >= fov / 8.0), bars[-1])
    bar = bar_mm / plane.px
    y0 = plane.size - 30
    x1 = plane.size - 20
    draw.rectangle([x1 - bar, y0, x1, y0 + 6], fill=(255, 255, 255), outline=(0, 0, 0))
    tick = 5.0 if bar_mm <= 50.0 else bar_mm / 10.0  # ticks every 5 mm (every tenth on long bars)
    for k in range(1, int(round(bar_mm / tick))):
        x = x1 - bar + k * tick / plane.px
        draw.line([(x, y0), (x, y0 + 6)], fill=(0, 0, 0), width=1)
    _label(draw, x1 - bar, y0 - 24, f"{bar_mm:g} mm", size=16)
    return bar_mm


def _letters(draw: Any, plane: Plane) -> dict[str, str]:
    f = G.ViewFrame(plane.origin, plane.normal, -plane.down)
    lt = G.orientation_letters(f, G.HEAD_FOOT)
    s = plane.size
    _label(draw, 6, s / 2 - 10, lt["left"], size=20)
    box = draw.textbbox((0, 0), lt["right"], font_size=20)
    _label(draw, s - 8 - (box[2] - box[0]), s / 2 - 10, lt["right"], size=20)
    box = draw.textbbox((0, 0), lt["top"], font_size=20)
    _label(draw, s / 2 - (box[2] - box[0]) / 2, 6, lt["top"], size=20)
    box = draw.textbbox((0, 0), lt["bottom"], font_size=20)
    _label(draw, s / 2 - (box[2] - box[0]) / 2, s - 30, lt["bottom"], size=20)
    return lt


def _label_away(draw: Any, at: Sequence[float], away: Sequence[float], text: str, size: int = 16,
                dist: float = 16.0) -> None:
    """A label beside the point ``at``, on the side ``away`` points to (pixels), never over the point."""
    v = np.asarray(away, float)
    v = v / np.linalg.norm(v) if np.linalg.norm(v) > 1e-6 else np.array([0.7, -0.7])
    box = draw.textbbox((0, 0), text, font_size=size)
    w, h = box[2] - box[0], box[3] - box[1]
    x = at[0] + dist * v[0] - (w if v[0] < -0.3 else w / 2 if abs(v[0]) <= 0.3 else 0)
    y = at[1] + dist * v[1] - (h + 6 if v[1] < -0.3 else h / 2 if abs(v[1]) <= 0.3 else -2)
    _label(draw, x, y, text, size=size)


def _legend(draw: Any, x: float, y: float, items: list[tuple[str, Sequence[int], str]]) -> None:
    """Legend rows: a short sample of each line style and its words."""
    for n, (style, colour, words) in enumerate(items):
        yy = y + 22 * n
        draw.rectangle([x - 3, yy - 2, x + 40, yy + 18], fill=(0, 0, 0))
        if style == "dashed":
            _dashed(draw, (x, yy + 8), (x + 36, yy + 8), colour, 3, 8, 5, border=False)
        elif style == "dotted":
            _dashed(draw, (x, yy + 8), (x + 36, yy + 8), colour, 3, 3, 4, border=False)
        elif style == "dim":
            draw.rectangle([x, yy + 2, x + 36, yy + 14], fill=tuple(colour), outline=(255, 255, 255))
        else:
            draw.line([(x, yy + 8), (x + 36, yy + 8)], fill=tuple(colour), width=5)
        _label(draw, x + 46, yy, words, size=15)


def _caption(im: Any, lines: list[tuple[str, bool]]) -> Any:
    """The image with a white strip under it holding ``lines`` (text, bold) in black, wrapped to its width."""
    from PIL import Image as PILImage, ImageDraw, ImageFont

    rows: list[tuple[str, Any, int]] = []
    for text, bold in lines:
        size = 20 if bold else 16
        font = _font(size, bold) or ImageFont.load_default(size)
        words, line = text.split(), ""
        for word in words:
            trial = f"{line} {word}".strip()
            if line and font.getlength(trial) > im.width - 16:
                rows.append((line, font, size))
                line = word
            else:
                line = trial
        rows.append((line, font, size))
    height = 10 + sum(size + 6 for _, _, size in rows)
    out = PILImage.new("RGB", (im.width, im.height + height), (255, 255, 255))
    out.paste(im, (0, 0))
    draw = ImageDraw.Draw(out)
    y = im.height + 6
    for text, font, size in rows:
        draw.text((8, y), text, fill=(0, 0, 0), font=font)
        y += size + 6
    return out


def _font(size: int, bold: bool) -> Any:
    """DejaVu Sans (bold) when the system has it, else None (PIL's own font)."""
    from PIL import ImageFont

    from ..report.fonts import _find

    path = _find("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    return ImageFont.truetype(str(path), size) if path is not None else None


def _png(im: Any, plane: Plane) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(GEOMETRY_KEY, json.dumps(plane.to_json()))
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


# --- the needle figures ---------------------------------------------------------------------
@dataclass
class CheckGeometry:
    """What the figures draw, from ``check.json`` (planning CT's LPS, mm)."""

    entry: np.ndarray  # planned
    target: np.ndarray
    tip: np.ndarray
    u: np.ndarray  # actual direction, hub -> tip
    puncture: np.ndarray  # where the actual needle crosses the skin
    predicted: np.ndarray
    diameter_mm: float | None  # the target's
    tolerance_mm: float
    pivot: np.ndarray | None = None  # redirect: where the tip is withdrawn to
    new_entry: np.ndarray | None = None  # new trajectory: its entry
    new_target: np.ndarray | None = None

    @classmethod
    def of(cls, doc: dict[str, Any], diameter_mm: float | None) -> "CheckGeometry":
        e, t = np.asarray(doc["plan"]["entry"], float), np.asarray(doc["plan"]["target"], float)
        n = doc["needle"]
        tip = np.asarray(n["tip_lps"], float)
        u = np.asarray(n["direction_lps"], float)
        u = u / np.linalg.norm(u)
        if n.get("entry_lps") is not None:
            punct = np.asarray(n["entry_lps"], float)
        else:  # the point of the needle's line nearest the planned entry
            punct = tip + float((e - tip) @ u) * u
        dev = doc["deviation"]
        cor = doc.get("correction", {})
        pivot = None
        if cor.get("withdraw_to_mm") is not None:
            pivot = punct + float(cor["withdraw_to_mm"]) * u
        nt = cor.get("new_trajectory") or {}
        return cls(e, t, tip, u, punct, np.asarray(dev["predicted_tip_lps"], float), diameter_mm,
                   float(dev.get("hit_tolerance_mm", 2.0)), pivot,
                   np.asarray(nt["entry"], float) if nt.get("entry") else None,
                   np.asarray(nt["target"], float) if nt.get("target") else None)

    @property
    def w(self) -> np.ndarray:
        return (self.target - self.entry) / np.linalg.norm(self.target - self.entry)


def needles_frame(g: CheckGeometry) -> tuple[G.ViewFrame, float]:
    """The plane through the planned line that best holds the actual needle, seen the radiological
    way (from the feet, the front or the patient's left, whichever it is closest to); and the
    distance (mm) of the needle's tip from it."""
    w = g.w
    rs, wts = [], []
    for q, weight in ((g.tip, 2.0), (g.puncture, 1.0)):
        r = (q - g.entry) - float((q - g.entry) @ w) * w
        rs.append(r)
        wts.append(weight)
    if max(float(np.linalg.norm(r)) for r in rs) < 1.0:  # the needle lies on the planned line
        n = G.planning_plane_normal(g.entry, g.target)
    else:
        # a basis of the plane across the planned line, and the best normal in it
        b1 = np.cross(w, G.X if abs(w[0]) < 0.9 else G.Y)
        b1 /= np.linalg.norm(b1)
        b2 = np.cross(w, b1)
        m = sum(wt * np.outer([r @ b1, r @ b2], [r @ b1, r @ b2]) for r, wt in zip(rs, wts))
        vals, vecs = np.linalg.eigh(m)
        c = vecs[:, 0]  # the smallest spread: the plane's normal
        n = c[0] * b1 + c[1] * b2
        n /= np.linalg.norm(n)
    # look at it from the side a radiologist would
    ax = int(np.argmax(np.abs(n)))
    if ax == 2:
        dop, up = (n if n[2] > 0 else -n), -G.Y  # from the feet, anterior up
    elif ax == 1:
        dop, up = (n if n[1] > 0 else -n), G.Z  # from the front, head up
    else:
        dop, up = (n if n[0] < 0 else -n), G.Z  # from the patient's left, head up
    f = G.frame(g.target, dop, up, G.X)
    return f, abs(float((g.tip - g.target) @ f.dop))


def draw_needles_plane(doc: dict[str, Any], planning: Any, check: Any, check_to_planning: np.ndarray,
                       diameter_mm: float | None, procedure: str | None, number: int | None = None,
                       target_structure: Any = None) -> tuple[bytes, Plane]:
    """``needles_plane.png`` (bytes) and its geometry; see the module."""
    from PIL import Image as PILImage, ImageDraw

    g = CheckGeometry.of(doc, diameter_mm)
    f, tip_off = needles_frame(g)
    pts = [g.entry, g.target, g.tip, g.puncture, g.predicted]
    if g.pivot is not None:
        pts.append(g.pivot)
    scr = f.to_screen(np.array(pts))
    lo, hi = scr.min(0), scr.max(0)
    half = max(45.0, float(np.max(hi - lo)) / 2.0 + 22.0)
    mid = (lo + hi) / 2.0
    centre = f.focal + mid[0] * f.right + mid[1] * f.up
    plane = Plane.around(f, centre, half)
    level, width = _window_of(procedure)
    grey, covered = check_plane_grey(plane, planning, check, check_to_planning, level, width)
    im = PILImage.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    s = plane.size

    def px(p: np.ndarray) -> np.ndarray:
        return np.array(plane.pixel(p))

    # the actual needle, from the hub end (or the image's edge) to the tip
    hub = np.asarray(doc["needle"].get("hub_end_lps", g.puncture), float)
    start = hub if float((g.tip - hub) @ g.u) > float((g.tip - g.puncture) @ g.u) else g.puncture
    seg = _clip_segment(px(start), px(g.tip), s)
    outline = structure_outline(plane, target_structure, planning.affine) if target_structure is not None else None
    if outline is not None:
        _paint(im, outline, TARGET)
    draw = ImageDraw.Draw(im)
    # the rails clear the metal and its bloom: the needle's radius plus 1.2 mm, at least 4 pixels
    rail_gap = max(4.0, (0.5 * float(doc["needle"].get("diameter_mm", 1.5)) + 1.2) / plane.px)
    if seg is not None:
        _rails(draw, seg[0], seg[1], ACTUAL, rail_gap, 3)
    # the target's outline: the segmented structure's cut, else a circle of its equivalent diameter
    t = px(g.target)
    if (outline is None or not outline.any()) and g.diameter_mm:
        _ring(draw, t, 0.5 * g.diameter_mm / plane.px, TARGET, 2)
    # the plan: dashed, entry ring and target cross
    e = px(g.entry)
    _dashed(draw, e, t, PLANNED, 3, 14, 9)
    _ring(draw, e, 9, PLANNED, 2)
    side = np.array([-(t - e)[1], (t - e)[0]])  # across the plan, away from the tip
    if float(side @ (np.array(plane.pixel(g.tip)) - e)) > 0:
        side = -side
    _label_away(draw, e, side, "E", 18, 16)
    _cross(draw, t, 12, PLANNED)
    # the correction's line: redirect from the pivot, or the new trajectory (projected)
    note = []
    if g.pivot is not None:
        pv = px(g.pivot)
        _dashed(draw, pv, t, CORRECTION, 3, 6, 6)
        _ring(draw, pv, 6, CORRECTION, 2)
        _label(draw, pv[0] + 10, pv[1] + 8, "pivot", size=15)
    elif g.new_entry is not None and g.new_target is not None:
        _dashed(draw, px(g.new_entry), px(g.new_target), CORRECTION, 3, 6, 6)
        _ring(draw, px(g.new_entry), 7, CORRECTION, 2)
        _label(draw, px(g.new_entry)[0] + 10, px(g.new_entry)[1] + 8, "new entry", size=15)
        off = abs(float((g.new_entry - g.target) @ f.dop))
        if off >= 1.0:
            note.append(f"new entry {off:.0f} mm out of this plane (projected)")
    # the extension to the target's depth, and the predicted tip
    p = px(g.tip)
    q = px(g.predicted)
    _dashed(draw, p, q, ADVANCED, 3, 3, 5)
    _cross(draw, q, 9, ADVANCED, diagonal=True)
    # labels away from the lines: the tip's across the needle, away from the plan; the predicted
    # tip's and the target's away from each other
    along = (q - p) if np.linalg.norm(q - p) > 1 else (t - e)
    across = np.array([-along[1], along[0]])
    if float(across @ (p - t)) < 0:
        across = -across
    _label_away(draw, q, (q - t) if np.linalg.norm(q - t) > 2 else across, "if advanced", 15, 14)
    _label_away(draw, t, (t - q) if np.linalg.norm(q - t) > 2 else -across, "T", 18, 20)
    _ring(draw, p, 7, ACTUAL, 3)
    _label_away(draw, p, across, "tip", 16, 16)
    if tip_off >= 1.0:
        note.append(f"tip {tip_off:.1f} mm out of this plane")
    _letters(draw, plane)
    _scale_bar(draw, plane)
    legend = [("dashed", PLANNED, "planned path (E entry, T target)"),
              ("solid", ACTUAL, f"actual needle{f' (check {number:02d})' if number else ''}"),
              ("dotted", ADVANCED, "advanced along its axis"),
              ("solid", TARGET, f"target outline ({target_structure.name})" if outline is not None and outline.any()
               else "target outline (equivalent diameter)")]
    if g.pivot is not None or g.new_entry is not None:
        legend.append(("dashed", CORRECTION, "the correction's new line"))
    if not covered.all():
        legend.append(("dim", (int(110 * DIM), int(110 * DIM), int(110 * DIM)),
                       "dimmed: planning CT (check scan does not reach)"))
    _legend(draw, 44, 40, legend)
    for n_, text in enumerate(note):
        _label(draw, 8, s - 60 - 22 * n_, text, size=15)
    dev = doc["deviation"]
    verdict = "HIT" if dev["target_hit"] else "MISSED"
    out = _caption(im, [
        (f"Predicted miss {dev['predicted_miss_mm']:.1f} mm: target {verdict}", True),
        (f"angle {dev['angle_deg']:.1f}° from the plan, tip {dev['lateral_offset_mm']:.1f} mm off the planned "
         f"line, {dev.get('depth_reached_mm', 0):.1f} mm deep ({dev.get('remaining_mm', 0):.1f} mm to go)", False),
    ])
    return _png(out, plane), plane


def draw_bullseye(doc: dict[str, Any], planning: Any, check: Any, check_to_planning: np.ndarray,
                  diameter_mm: float | None, procedure: str | None, target_structure: Any = None
                  ) -> tuple[bytes, Plane]:
    """``bullseye.png`` (bytes) and its geometry; see the module."""
    from PIL import Image as PILImage, ImageDraw

    g = CheckGeometry.of(doc, diameter_mm)
    f = G.bullseye_frame(g.entry, g.target)
    w = f.dop

    def onto(p: np.ndarray) -> np.ndarray:  # projected along the planned axis onto the target's plane
        return p - float((p - g.target) @ w) * w

    tip_p, pred_p, punct_p = onto(g.tip), onto(g.predicted), onto(g.puncture)
    r_target = 0.5 * g.diameter_mm if g.diameter_mm else 0.0
    sphere = _hit_by_sphere(doc)
    reach = max(r_target, g.tolerance_mm if sphere else 0.0, float(np.linalg.norm(pred_p - g.target)),
                float(np.linalg.norm(tip_p - g.target)))
    half = max(18.0, 1.8 * reach + 8.0)  # room for the labels and the legend around the marks
    plane = Plane.around(f, g.target, half)
    level, width = _window_of(procedure)
    grey, covered = check_plane_grey(plane, planning, check, check_to_planning, level, width)
    im = PILImage.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    s = plane.size

    def px(p: np.ndarray) -> np.ndarray:
        return np.array(plane.pixel(p))

    c = px(g.target)
    outline = structure_outline(plane, target_structure, planning.affine) if target_structure is not None else None
    drawn_outline = outline is not None and bool(outline.any())
    if drawn_outline:
        _paint(im, outline, TARGET)
    # the actual needle seen down the planned axis: puncture -> tip (solid), on to the predicted tip
    seg = _clip_segment(px(punct_p), px(tip_p), s)
    draw = ImageDraw.Draw(im)
    if seg is not None and np.linalg.norm(seg[1] - seg[0]) > 1:
        _line(draw, seg[0], seg[1], ACTUAL, 4)
    seg = _clip_segment(px(tip_p), px(pred_p), s)
    if seg is not None:
        _dashed(draw, seg[0], seg[1], ADVANCED, 3, 4, 5)
    if r_target and not drawn_outline:
        _ring(draw, c, r_target / plane.px, TARGET, 3)
    if sphere:
        _dashed_circle(draw, c, g.tolerance_mm / plane.px, (255, 255, 255))
    # the miss, as a line from the centre to the predicted tip, under the marks
    q = px(pred_p)
    miss = float(doc["deviation"]["predicted_miss_mm"])
    if np.linalg.norm(q - c) > 3:
        _dashed(draw, c, q, (255, 255, 255), 1, 4, 3, border=False)
    _cross(draw, q, 11, ADVANCED, diagonal=True)
    p = px(tip_p)
    _ring(draw, p, 8, ACTUAL, 3)
    _cross(draw, c, 14, PLANNED)  # the plan's centre on top: it is what everything is measured from
    remaining = float(doc["deviation"].get("remaining_mm", 0.0))
    depth_words = (f"{remaining:.1f} mm short" if remaining > 0.05 else
                   f"{-remaining:.1f} mm past" if remaining < -0.05 else "at depth")
    # the predicted tip's label away from the centre, the tip's beside it (across), off the centre
    v = (q - c) if np.linalg.norm(q - c) > 2 else np.array([0.0, -1.0])
    v = v / np.linalg.norm(v)
    side = np.array([-v[1], v[0]])
    if float(side @ (p - c)) < 0:
        side = -side
    _label_away(draw, q, v, f"if advanced: miss {miss:.1f} mm", 16, 18)
    _label_away(draw, p, side, f"tip now ({depth_words})", 16, 26)
    _letters(draw, plane)
    _scale_bar(draw, plane)
    if drawn_outline:
        target_words = f"target: {target_structure.name} at this depth"
    else:
        target_words = f"target ({g.diameter_mm:.1f} mm)" if g.diameter_mm else "target point"
    legend = [("solid", PLANNED, "planned line (centre)"), ("solid", TARGET, target_words)]
    if sphere:
        legend.append(("dashed", (255, 255, 255), f"hit if inside ({g.tolerance_mm:.1f} mm)"))
    legend += [("solid", ACTUAL, "actual needle, skin to tip"), ("dotted", ADVANCED, "advanced to target depth")]
    if not covered.all():
        legend.append(("dim", (int(110 * DIM),) * 3, "dimmed: planning CT"))
    _legend(draw, 44, s - 44 - 22 * len(legend), legend)
    dev = doc["deviation"]
    verdict = "HIT" if dev["target_hit"] else "MISSED"
    out = _caption(im, [
        (f"Down the planned axis: predicted miss {miss:.1f} mm, target {verdict}", True),
        (f"plane through the target, across the plan; needle tip {dev['lateral_offset_mm']:.1f} mm off the "
         "planned line" + ("" if sphere else f"; a hit: the predicted tip at least {g.tolerance_mm:.1f} mm inside "
                           f"{doc['deviation'].get('hit_by')}"), False),
    ])
    return _png(out, plane), plane
