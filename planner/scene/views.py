"""The procedure-room views, rendered offscreen to PNG: planning slice, bull's-eye, progression,
3D overview, and the three orthogonal slices.

Every 2D view is a parallel projection of a plane of the CT with overlays drawn in a second
layer on top (needle, markers, structure outlines, labels), so the plane never hides the
needle lying in it. ``View.pixel_of`` maps LPS points to PNG pixels with VTK's own camera;
``View.canvas`` does it with the view's geometry alone (for checks that do not trust VTK).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..anatomy.registry import StructureClass
from ..errors import InputError
from . import geometry as G
from . import mesh_cache
from .geometry import LETTERS, orientation_letters  # noqa: F401 - their home was here
from ..images.reslice import mr_window
from .case import Case, NeedlePath, load_case
from .needles import ACTUAL, ACTUAL_TEXT, ALTERNATIVE, CHOSEN, ENTRY, actual_needle_actors, needle_actors, ring_actor, target_actor
from .riskmap import FORBIDDEN, UNREACHABLE, risk_actor
from .slices import PET_OPACITY, pet_slice_actor, slice_actor, suv_bar
from .surfaces import StructureLayer, build_meshes, legend_actor, structure_layer
from .volume import ct_image_data, set_interactive, volume_actor
from .vtkutil import capture, offscreen_window, rgb01, save_png, vtk, world_to_pixel

#: The views the report uses, and the file names ``render_views`` writes them to.
REPORT_VIEWS = ("planning_slice", "bullseye", "progression", "overview_3d")
SLICE_VIEWS = ("slice_axial", "slice_coronal", "slice_sagittal")
LABEL_COLOUR = (255, 255, 255)


class Scene:
    """One case ready to draw: the CT as VTK data and the structure meshes, built once, shared."""

    def __init__(self, case: Case):
        self.case = case
        self.pet_opacity = PET_OPACITY  # of the PET layer over the CT slices (when the case has a PET)

    @cached_property
    def pet(self) -> tuple["vtk.vtkImageData", "vtk.vtkMatrix4x4"] | None:
        """The PET in SUV on the CT's grid (no PET: 0) as VTK data placed like the CT; None without one."""
        if self.case.pet is None:
            return None
        v = np.nan_to_num(np.asarray(self.case.pet.voxels, np.float32), nan=0.0)
        return ct_image_data(self.case.pet.with_voxels(v))

    @cached_property
    def ct(self) -> tuple["vtk.vtkImageData", "vtk.vtkMatrix4x4"]:
        return ct_image_data(self.case.ct)

    @cached_property
    def meshes(self) -> dict[str, "vtk.vtkPolyData"]:
        """The structure surfaces; a case reopened from a plan folder keeps them there."""
        sset = self.case.structures
        if sset is None:
            return {}
        return mesh_cache.cached(self.case.folder, "fine", lambda: build_meshes(sset))

    @cached_property
    def coarse_meshes(self) -> dict[str, "vtk.vtkPolyData"]:
        """Low-detail meshes of the same structures, shown while the 3D view moves."""
        sset = self.case.structures
        if sset is None:
            return {}
        return mesh_cache.cached(self.case.folder, "coarse", lambda: build_meshes(
            sset, names=list(self.meshes), skip_redundant=False, coarse=True))

    def structure_layer(self, hide_classes: Sequence[StructureClass] = (), lod: bool = False) -> StructureLayer:
        """Actors of the structure surfaces; ``lod`` adds the coarse meshes for interaction."""
        if self.case.structures is None:
            return StructureLayer()
        layer = structure_layer(self.meshes, self.case.structures, target_name=self.case.target_label,
                                coarse=self.coarse_meshes if lod else None)
        for c in hide_classes:
            layer.set_class_visible(c, False)
        return layer

    @property
    def centre(self) -> np.ndarray:
        """Where views centre by default: the target, else the middle of the scan."""
        if self.case.target is not None:
            return np.asarray(self.case.target, float)
        return self.case.ct.corners().mean(axis=0)

    def default_window(self) -> str | tuple[float, float]:
        if (self.case.ct.meta.modality or "").upper() == "MR":
            return mr_window(self.case.ct)
        return "lung" if (self.case.plan or {}).get("procedure") == "lung-biopsy" else "soft-tissue"

    def acquisition_normal(self) -> np.ndarray | None:
        """The slice normal of an MR (its acquisition plane: slice views default to it); None on CT."""
        if (self.case.ct.meta.modality or "").upper() != "MR":
            return None
        return np.asarray(self.case.ct.direction[:, 2], float)


@dataclass
class Canvas:
    """Pixel geometry of a parallel view: ``mm_per_pixel`` and the frame at the image centre."""

    frame: G.ViewFrame
    size: tuple[int, int]
    mm_per_pixel: float

    def pixel(self, points: np.ndarray) -> np.ndarray:
        """LPS (n, 3) -> (col, row) of the PNG, row 0 at the top."""
        w, h = self.size
        s = self.frame.to_screen(np.atleast_2d(points)) / self.mm_per_pixel
        return np.c_[(w - 1) / 2.0 + s[:, 0], (h - 1) / 2.0 - s[:, 1]]

    def world(self, col: float, row: float) -> np.ndarray:
        """The LPS point in the view plane (through the focal point) under a pixel."""
        w, h = self.size
        f = self.frame
        return f.focal + (col - (w - 1) / 2.0) * self.mm_per_pixel * f.right + ((h - 1) / 2.0 - row) * self.mm_per_pixel * f.up


@dataclass
class View:
    """A rendered view: its window and renderers (base, overlay), and its canvas for 2D views."""

    name: str
    window: "vtk.vtkRenderWindow"
    base: "vtk.vtkRenderer"
    overlay: "vtk.vtkRenderer"
    canvas: Canvas | None = None
    info: dict[str, Any] = field(default_factory=dict)
    rgb: np.ndarray | None = None
    top: "vtk.vtkRenderer | None" = None

    def renderers(self) -> list["vtk.vtkRenderer"]:
        """Every renderer the view put into its window, bottom layer first."""
        return [r for r in (self.base, self.overlay, self.top) if r is not None]

    def render(self) -> np.ndarray:
        self.rgb = capture(self.window)
        return self.rgb

    def pixel_of(self, points: np.ndarray) -> np.ndarray:
        return world_to_pixel(self.base, points)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return save_png(self.rgb if self.rgb is not None else self.render(), path)

    def close(self) -> None:
        self.window.Finalize()


# --- building blocks ----------------------------------------------------------------------
def layered_window(size: tuple[int, int], background: tuple[float, float, float] = (0.0, 0.0, 0.0),
                   window: "vtk.vtkRenderWindow | None" = None, viewport: Sequence[float] = (0, 0, 1, 1)
                   ) -> tuple["vtk.vtkRenderWindow", "vtk.vtkRenderer", "vtk.vtkRenderer"]:
    """A window (offscreen unless given) with a base renderer and an overlay layer sharing its camera."""
    win = window if window is not None else offscreen_window(size)
    win.SetNumberOfLayers(max(2, win.GetNumberOfLayers()))
    base = vtk.vtkRenderer()
    base.SetBackground(*background)
    base.SetViewport(*viewport)
    over = vtk.vtkRenderer()
    over.SetLayer(1)
    over.SetViewport(*viewport)
    over.SetActiveCamera(base.GetActiveCamera())
    over.InteractiveOff()
    win.AddRenderer(base)
    win.AddRenderer(over)
    return win, base, over


def top_layer(win: "vtk.vtkRenderWindow", base: "vtk.vtkRenderer") -> "vtk.vtkRenderer":
    """A third layer above the overlay, sharing the camera: what no other overlay prop may hide."""
    win.SetNumberOfLayers(max(3, win.GetNumberOfLayers()))
    top = vtk.vtkRenderer()
    top.SetLayer(2)
    top.SetViewport(*base.GetViewport())
    top.SetActiveCamera(base.GetActiveCamera())
    top.InteractiveOff()
    win.AddRenderer(top)
    return top


def text_actor(text: str, x: float, y: float, size: int = 16, colour: Sequence[int] = LABEL_COLOUR,
               align: str = "left", valign: str = "top", bold: bool = False) -> "vtk.vtkTextActor":
    """A 2D text at normalised viewport position (x, y) (0, 0 bottom left)."""
    t = vtk.vtkTextActor()
    t.SetInput(text)
    t.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    t.SetPosition(x, y)
    p = t.GetTextProperty()
    p.SetFontSize(size)
    p.SetColor(*rgb01(colour))
    p.SetBold(bold)
    p.SetJustification({"left": 0, "center": 1, "right": 2}[align])
    p.SetVerticalJustification({"bottom": 0, "center": 1, "top": 2}[valign])
    p.SetBackgroundColor(0.0, 0.0, 0.0)
    p.SetBackgroundOpacity(0.55)
    return t


def _pixel_text(text: str, col: float, row: float, size: tuple[int, int], font: int, colour: Sequence[int],
                align: str = "left") -> "vtk.vtkTextActor":
    w, h = size
    return text_actor(text, col / w, 1.0 - row / h, font, colour, align=align, valign="center")


def _flat_actor(mapper: "vtk.vtkPolyDataMapper", colour: Sequence[int], width: float | None = None) -> "vtk.vtkActor":
    """An unlit actor of one colour (overlay lines and marks), ``width`` for lines."""
    a = vtk.vtkActor()
    a.SetMapper(mapper)
    a.GetProperty().SetColor(*rgb01(colour))
    if width is not None:
        a.GetProperty().SetLineWidth(width)
    a.GetProperty().LightingOff()
    return a


def _polydata_mapper(data: "vtk.vtkPolyData") -> "vtk.vtkPolyDataMapper":
    m = vtk.vtkPolyDataMapper()
    m.SetInputData(data)
    return m


def _polyline_actor(points: np.ndarray, colour: Sequence[int], width: float = 1.5) -> "vtk.vtkActor":
    src = vtk.vtkLineSource()
    pts = vtk.vtkPoints()
    for p in points:
        pts.InsertNextPoint(*[float(x) for x in p])
    src.SetPoints(pts)
    src.Update()
    return _flat_actor(_polydata_mapper(src.GetOutput()), colour, width)


def _add_letters(over: "vtk.vtkRenderer", f: G.ViewFrame, font: int) -> None:
    lt = orientation_letters(f)
    over.AddViewProp(text_actor(lt["left"], 0.01, 0.5, font, (255, 255, 120), "left", "center", True))
    over.AddViewProp(text_actor(lt["right"], 0.99, 0.5, font, (255, 255, 120), "right", "center", True))
    over.AddViewProp(text_actor(lt["top"], 0.5, 0.99, font, (255, 255, 120), "center", "top", True))
    over.AddViewProp(text_actor(lt["bottom"], 0.5, 0.01, font, (255, 255, 120), "center", "bottom", True))


def _parallel_camera(base: "vtk.vtkRenderer", f: G.ViewFrame, half_height_mm: float) -> None:
    cam = base.GetActiveCamera()
    cam.ParallelProjectionOn()
    cam.SetFocalPoint(*f.focal)
    cam.SetPosition(*(f.focal - 1000.0 * f.dop))
    cam.SetViewUp(*f.up)
    cam.SetParallelScale(half_height_mm)
    cam.SetClippingRange(1.0, 2000.0)


def _contours(scene: Scene, over: "vtk.vtkRenderer", plane: "vtk.vtkPlane",
              skip: Sequence[StructureClass] = (), width: float = 2.0) -> dict[str, "vtk.vtkActor"]:
    """Outlines of the structures in a plane, in class colours, by structure name.

    The cutters share ``plane``: moving it (scrolling a slice) re-cuts them at the next render.
    """
    drawn: dict[str, vtk.vtkActor] = {}
    sset = scene.case.structures
    if sset is None:
        return drawn
    for name, mesh in scene.meshes.items():
        s = sset[name]
        if s.cls in skip:
            continue
        cut = vtk.vtkCutter()
        cut.SetCutFunction(plane)
        cut.SetInputData(mesh)
        m = vtk.vtkPolyDataMapper()
        m.SetInputConnection(cut.GetOutputPort())
        m.ScalarVisibilityOff()
        a = _flat_actor(m, s.colour, width)
        over.AddActor(a)
        a.cutter = cut  # type: ignore[attr-defined]  # kept for the level of detail (see set_contour_detail)
        drawn[name] = a
    return drawn


def set_contour_detail(scene: Scene, contours: dict[str, "vtk.vtkActor"], coarse: bool) -> None:
    """Cut the coarse meshes while a slice scrolls, the fine ones when it stops."""
    meshes = scene.coarse_meshes if coarse else scene.meshes
    for name, actor in contours.items():
        mesh = meshes.get(name)
        if mesh is not None and actor.cutter.GetInput() is not mesh:  # type: ignore[attr-defined]
            actor.cutter.SetInputData(mesh)  # type: ignore[attr-defined]


def _path(case: Case, rank: int) -> NeedlePath:
    for p in case.paths:
        if p.rank == rank:
            return p
    raise InputError(f"no trajectory of rank {rank} in this plan (ranks: {[p.rank for p in case.paths] or 'none'})")


def _font(size: tuple[int, int], scale: float = 1.0) -> int:
    return max(10, int(round(min(size) / 38 * scale)))


Host = tuple["vtk.vtkRenderWindow", tuple[float, float, float, float]]


def _viewport_size(host: Host | None, size: tuple[int, int]) -> tuple[int, int]:
    if host is None:
        return size
    w, h = host[0].GetSize()
    vp = host[1]
    return max(1, int(round((vp[2] - vp[0]) * w))), max(1, int(round((vp[3] - vp[1]) * h)))


def _slice_base(scene: Scene, name: str, f: G.ViewFrame, size: tuple[int, int], half_height_mm: float,
                window: str | None, host: Host | None = None, contour_width: float = 2.0) -> View:
    size = _viewport_size(host, size)
    win, base, over = layered_window(size, window=host[0] if host else None,
                                     viewport=host[1] if host else (0, 0, 1, 1))
    data, matrix = scene.ct
    ct_slice = slice_actor(data, matrix, f.focal, f.dop, window or scene.default_window())
    plane = ct_slice.GetMapper().GetSlicePlane()
    pet_slice = None
    if scene.pet is not None:  # the PET over the CT, stacked, cut by the same plane
        pet_data, pet_matrix = scene.pet
        pet_slice = pet_slice_actor(pet_data, pet_matrix, plane, scene.case.pet_top_suv, scene.pet_opacity)
        stack = vtk.vtkImageStack()
        stack.AddImage(ct_slice)
        stack.AddImage(pet_slice)
        stack.SetActiveLayer(0)
        base.AddViewProp(stack)
        over.AddViewProp(suv_bar(scene.case.pet_top_suv, _font(size, 0.8)))
    else:
        base.AddViewProp(ct_slice)
    _parallel_camera(base, f, half_height_mm)
    canvas = Canvas(f, size, 2.0 * half_height_mm / size[1])
    view = View(name, win, base, over, canvas)
    view.info.update(ct_slice=ct_slice, plane=plane, pet_slice=pet_slice,
                     contours=_contours(scene, over, plane, skip=(StructureClass.LOBE,), width=contour_width))
    return view


def _label_structures(view: View, scene: Scene, path: NeedlePath, font: int, n: int = 3) -> list[str]:
    """Label the structures closest to the needle (from the plan's clearances) with leader lines."""
    sset = scene.case.structures
    assert view.canvas is not None
    if sset is None:
        return []
    # Closest first; on ties the smaller (more specific) structure: ribs_right before bone.
    ranked = sorted((kv for kv in path.clearance_mm.items() if kv[0] in sset),
                    key=lambda kv: (round(kv[1], 1), sset[kv[0]].voxel_count))
    found = G.closest_points(sset, path.entry, path.target, [k for k, _ in ranked][: 3 * n])
    names: list[str] = []
    for k, _ in ranked:
        if k in found and len(names) < n and not any(
                np.linalg.norm(found[k][0] - found[o][0]) < 1.0 and sset[k].cls == sset[o].cls for o in names):
            names.append(k)
    c = view.canvas
    labelled = []
    used_rows: list[float] = []
    for name in names:
        if name not in found:
            continue
        on_struct, on_needle, dist = found[name]
        ps, pn = c.pixel(np.array([on_struct, on_needle]))
        away = ps - pn
        if np.linalg.norm(away) < 1e-3:
            away = np.array([0.0, -1.0])
        away = away / np.linalg.norm(away)
        anchor = ps + max(70.0, 4.0 * font) * away
        w, h = c.size
        anchor = np.clip(anchor, [60, 0.12 * h], [w - 60, 0.88 * h])
        while any(abs(anchor[1] - r) < font * 1.6 for r in used_rows):
            anchor[1] += font * 1.6
        used_rows.append(float(anchor[1]))
        colour = sset[name].colour
        # The leader line lies in the view plane, so it draws on top of everything.
        p_struct = c.world(*ps)
        view.overlay.AddActor(_polyline_actor(np.array([p_struct, c.world(*anchor)]), colour, 1.5))
        dot = vtk.vtkRegularPolygonSource()
        dot.SetCenter(*p_struct)
        dot.SetNormal(*c.frame.dop)
        dot.SetRadius(1.3 * c.mm_per_pixel * 2)
        dot.SetNumberOfSides(16)
        dot.Update()
        view.overlay.AddActor(_flat_actor(_polydata_mapper(dot.GetOutput()), colour))
        align = "left" if away[0] >= 0 else "right"
        view.overlay.AddViewProp(_pixel_text(f"{name} {path.clearance_mm[name]:.1f} mm", anchor[0], anchor[1],
                                            c.size, font, LABEL_COLOUR, align))
        labelled.append(name)
    return labelled


# --- the views ------------------------------------------------------------------------------
def _needle_slice(scene: Scene, name: str, frame_of: Callable[[np.ndarray, np.ndarray], G.ViewFrame],
                  half_of: Callable[[Any], float], size: tuple[int, int], rank: int, window: str | None,
                  host: Host | None, font_scale: float, **needle: Any) -> tuple[View, Any, G.ViewFrame, int]:
    """What the three needle views share: the CT plane of ``frame_of(entry, target)`` around the
    trajectory ``rank``, the needle and the target drawn on it. Returns (view, path, frame, font)."""
    path = _path(scene.case, rank)
    f = frame_of(path.entry, path.target)
    view = _slice_base(scene, name, f, size, half_of(path), window, host)
    font = _font(view.canvas.size, font_scale)  # type: ignore[union-attr]
    for a in needle_actors(path, chosen=True, **needle):
        view.overlay.AddActor(a)
    view.overlay.AddActor(target_actor(path.target))
    _add_actual(view, scene.case, path.rank, font)
    return view, path, f, font


def _add_actual(view: View, case: Case, rank: int, font: int) -> None:
    """The needle of the case's check scan beside the planned one, and the deviation in words
    along the bottom of the view; only in views of the trajectory the check was compared with."""
    actual = case.actual
    if actual is None or actual.trajectory_rank != rank:
        return
    props = actual_needle_actors(actual)
    for a in props:
        view.overlay.AddActor(a)
    caption = text_actor(actual.caption(), 0.01, 0.06, max(9, font - 2), ACTUAL_TEXT, valign="bottom")
    view.overlay.AddViewProp(caption)
    view.info.update(actual=actual, actual_props=props, actual_caption=caption)


def _craniocaudal_words(ang: G.NeedleAngles) -> str:
    return f"{abs(ang.craniocaudal_deg):.1f}\u00b0 {'cranial' if ang.craniocaudal_deg > 0 else 'caudal'}"


def planning_slice(scene: Scene, size: tuple[int, int] = (800, 600), rank: int = 1, window: str | None = None,
                   host: Host | None = None, font_scale: float = 1.0) -> View:
    """The CT in the plane of the needle closest to axial, with the needle, its angles and depth.

    Seen from the feet with anterior up (radiological), like an axial slice tilted by the
    gantry angle the CT operator sets. The nearest structures are labelled with their clearance.
    """
    acq = scene.acquisition_normal()
    frame_of = G.planning_frame if acq is None else (lambda e, t: G.acquisition_frame(e, t, acq))
    view, path, f, font = _needle_slice(scene, "planning_slice", frame_of,
                                        lambda p: max(1.0 * p.length_mm, 80.0), size, rank, window, host, font_scale)
    over = view.overlay
    ang = G.needle_angles(path.entry, path.target)
    ref = np.array([0.0, 0.0, 1.0]) if acq is None else acq
    tilt = float(np.degrees(np.arccos(np.clip(abs(float(f.dop @ ref)), 0, 1))))
    lines = [
        f"Planning slice, #{path.rank}" + (" (chosen)" if path.rank == 1 else " (alternative)"),
        f"from vertical (AP): {ang.from_vertical_deg:.1f}\u00b0",
        f"craniocaudal: {_craniocaudal_words(ang)}",
        f"plane tilt from axial: {tilt:.1f}\u00b0" if acq is None else
        f"plane tilt from the MR's slices: {tilt:.1f}\u00b0",
        f"depth to target: {ang.depth_mm:.1f} mm",
        f"needle {path.gauge} {path.needle_length_mm:g} mm",
    ]
    pos = path.info.get("patient_position")
    if pos:
        lines.append(f"patient {pos.replace('_', ' ')}")
    over.AddViewProp(text_actor("\n".join(lines), 0.01, 0.99, font, LABEL_COLOUR))
    _add_letters(over, f, font)
    view.info["labelled"] = _label_structures(view, scene, path, font)
    view.info.update(angles=ang, path=path, tilt_deg=tilt)
    return view


def bullseye(scene: Scene, size: tuple[int, int] = (800, 600), rank: int = 1, window: str | None = None,
             host: Host | None = None, font_scale: float = 1.0) -> View:
    """Looking down the needle: the entry ring over the target dot, on the CT plane at the target."""
    view, path, f, font = _needle_slice(scene, "bullseye", G.bullseye_frame, lambda p: 40.0, size, rank, window,
                                        host, font_scale, marks=False, entry_marker=False)
    over = view.overlay
    over.AddActor(ring_actor(path.entry, f.dop, 4.0, 5.5, ENTRY))
    ang = G.needle_angles(path.entry, path.target)
    over.AddViewProp(text_actor(
        f"Bull's-eye, trajectory #{path.rank}\n"
        "down the needle from the skin:\nentry (cyan ring) over target (magenta)\n"
        f"CT plane at the target, {ang.depth_mm:.1f} mm deep\n"
        f"{ang.from_vertical_deg:.1f}\u00b0 from vertical, {_craniocaudal_words(ang)}", 0.01, 0.99, font,
        LABEL_COLOUR))
    _add_letters(over, f, font)
    view.info.update(angles=ang, path=path)
    return view


def progression(scene: Scene, size: tuple[int, int] = (800, 600), rank: int = 1, window: str | None = None,
                host: Host | None = None, font_scale: float = 1.0) -> View:
    """Perpendicular to the needle and to the planning slice: the whole path, with cm marks."""
    view, path, f, font = _needle_slice(scene, "progression", G.progression_frame,
                                        lambda p: max(0.75 * p.length_mm, 50.0), size, rank, window, host, font_scale)
    over = view.overlay
    c = view.canvas
    assert c is not None
    marks = G.depth_marks(path.entry, path.target)
    px = c.pixel(np.vstack([path.entry, path.target, marks])) if len(marks) else c.pixel(np.array([path.entry, path.target]))
    along = px[1] - px[0]
    normal = np.array([-along[1], along[0]]) / max(np.linalg.norm(along), 1e-9)
    for i, p in enumerate(px[2:], start=1):
        q = p + 14 * normal
        over.AddViewProp(_pixel_text(f"{i}", q[0], q[1], c.size, max(9, font - 4), (230, 230, 230), "center"))
    ang = G.needle_angles(path.entry, path.target)
    over.AddViewProp(text_actor(
        f"Progression, trajectory #{path.rank}\nthe whole path, marks every cm from the skin\n"
        f"depth {ang.depth_mm:.1f} mm, needle {path.gauge} {path.needle_length_mm:g} mm", 0.01, 0.99, font,
        LABEL_COLOUR))
    _add_letters(over, f, font)
    view.info.update(angles=ang, path=path)
    return view


def orthogonal_view(scene: Scene, plane: str, size: tuple[int, int] = (800, 600), point: Sequence[float] | None = None,
                    window: str | None = None, show_paths: bool = True, host: Host | None = None,
                    font_scale: float = 1.0) -> View:
    """An axial, coronal or sagittal slice through ``point`` (default: the target) with outlines."""
    p = np.asarray(point, float) if point is not None else scene.centre
    corners = scene.case.ct.corners()
    n = G.STANDARD[plane][0]
    mid = corners.mean(axis=0)
    f = G.standard_frame(plane, mid + float((p - mid) @ n) * np.asarray(n))  # the scan's middle, in the plane of p
    ext = f.to_screen(corners)
    half_w = max(abs(ext[:, 0]).max(), 1.0)
    half_h = max(abs(ext[:, 1]).max(), 1.0)
    size = _viewport_size(host, size)
    aspect = size[0] / size[1]
    view = _slice_base(scene, f"slice_{plane}", f, size, 1.02 * max(half_h, half_w / aspect), window, host, 1.5)
    over = view.overlay
    font = _font(size, font_scale)
    if show_paths and scene.case.chosen is not None:
        for a in needle_actors(scene.case.chosen, chosen=True, marks=False):
            over.AddActor(a)
    if scene.case.target is not None:
        over.AddActor(target_actor(scene.case.target))
    coord = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
    title = text_actor(f"{plane} at {'xyz'[coord]} = {p[coord]:.1f} mm (LPS)", 0.01, 0.99, font, LABEL_COLOUR)
    over.AddViewProp(title)
    view.info.update(title=title, plane_name=plane, coord=coord)
    _add_letters(over, f, font)
    return view


def plan_props(case: Case, selected: int = 1, alternatives: bool = True, risk_map: bool = True
               ) -> tuple[list["vtk.vtkProp"], list["vtk.vtkProp"], list["vtk.vtkProp"]]:
    """What the plan adds to the 3D scene: (overlay props, base props, top props).

    Overlay: the alternative trajectories, drawn over the anatomy. Top: the ``selected``
    trajectory in the chosen colour with its depth marks, and the target marker, drawn over
    everything else so that an alternative seen in front of it never hides it. Base: the risk
    map points on the skin (hidden by what lies in front of them) and its colour bar.
    """
    over: list[vtk.vtkProp] = []
    base: list[vtk.vtkProp] = []
    top: list[vtk.vtkProp] = []
    for p in case.paths:
        if p.rank == selected:
            top.extend(needle_actors(p, chosen=True, min_diameter_mm=2.0))
        elif alternatives:
            over.extend(needle_actors(p, chosen=False, min_diameter_mm=2.0))
    if case.target is not None:
        top.append(target_actor(case.target, 4.0))
    if case.actual is not None:
        top.extend(actual_needle_actors(case.actual, min_diameter_mm=2.0))
    if risk_map and case.risk_map is not None and len(case.risk_map.entries):
        pts, bar = risk_actor(case.risk_map, point_size=3.0)
        base.append(pts)
        over.append(bar)
    return over, base, top


def replace_plan_props(view: View, case: Case, selected: int = 1, alternatives: bool = True,
                       risk_map: bool = True) -> None:
    """Swap the plan's props of a 3D overview (trajectories, target, check needle, risk map) for
    those of ``case`` now, keeping the volume and the surfaces: after another trajectory is
    selected, the target moved, a re-plan or a new check scan."""
    layers = {"plan_over": view.overlay, "plan_base": view.base, "plan_top": view.top}
    for key, renderer in layers.items():
        for prop in view.info[key]:
            renderer.RemoveViewProp(prop)
    props = plan_props(case, selected, alternatives, risk_map)
    for (key, renderer), new in zip(layers.items(), props):
        for prop in new:
            renderer.AddViewProp(prop)
        view.info[key] = new


def overview_3d(scene: Scene, size: tuple[int, int] = (800, 600), volume: str | None = "bone",
                risk_map: bool = True, alternatives: bool = True, host: Host | None = None,
                font_scale: float = 0.9, selected: int = 1, lod: bool = False) -> View:
    """The 3D scene: volume rendering, structure surfaces, every trajectory, risk map, legend."""
    case = scene.case
    size = _viewport_size(host, size)
    win, base, over = layered_window(size, background=(0.08, 0.09, 0.12), window=host[0] if host else None,
                                     viewport=host[1] if host else (0, 0, 1, 1))
    hide = [StructureClass.BONE] if volume == "bone" else []
    layer = scene.structure_layer(hide_classes=hide, lod=lod)
    layer.add_to(base)
    vol = None
    if volume:
        data, matrix = scene.ct
        vol = volume_actor(data, matrix, volume)
        base.AddVolume(vol)
    font = _font(size, font_scale)
    chosen = case.chosen
    top = top_layer(win, base)
    dyn_over, dyn_base, dyn_top = plan_props(case, selected, alternatives, risk_map)
    for layer_props, renderer in ((dyn_over, over), (dyn_base, base), (dyn_top, top)):
        for prop in layer_props:
            renderer.AddViewProp(prop)
    extra: list[tuple[str, tuple[int, int, int]]] = []
    if chosen is not None:
        extra.append(("chosen needle", CHOSEN))
        if len(case.paths) > 1 and alternatives:
            extra.append(("alternatives", ALTERNATIVE))
    if case.actual is not None:
        extra.append((f"actual needle (check {case.actual.number:02d})", ACTUAL))
    if risk_map and case.risk_map is not None and len(case.risk_map.entries):
        extra += [("forbidden entry", FORBIDDEN), ("unreachable entry", UNREACHABLE)]
    shown = [c for c in layer.present_classes() if c not in hide]
    if volume == "bone":
        extra.append(("bone (volume)", (242, 230, 204)))
    legend = None
    if shown or extra:
        n = len(shown) + len(extra)
        hgt = min(0.9, 0.045 * n + 0.02)
        legend = legend_actor(shown, extra, position=(0.79, 0.97 - hgt), size=(0.2, hgt), font_size=font)
        over.AddViewProp(legend)
    title = case.title or "scene"
    if chosen is not None:
        title += f" - 3D overview, {len(case.paths)} trajectories (chosen in yellow)"
    over.AddViewProp(text_actor(title, 0.01, 0.99, font, LABEL_COLOUR))
    actual_caption = None
    if case.actual is not None:
        actual_caption = text_actor(case.actual.caption(), 0.01, 0.01, font, ACTUAL_TEXT, valign="bottom")
        over.AddViewProp(actual_caption)
    # Camera: looking at the target from the side of the chosen entry, superior up.
    focal = scene.centre
    if chosen is not None:
        side = G.progression_frame(chosen.entry, chosen.target).dop
        dop = 0.8 * side + 0.6 * chosen.direction
        dop /= np.linalg.norm(dop)
    else:
        dop = np.array([0.25, 1.0, -0.15])
        dop /= np.linalg.norm(dop)
    f = G.frame(focal, dop, (0, 0, 1), (0, -1, 0))
    ext = np.ptp(case.ct.corners(), axis=0)
    radius = 0.5 * float(np.linalg.norm(ext))
    cam = base.GetActiveCamera()
    cam.SetViewAngle(30.0)
    dist = 0.85 * radius / np.tan(np.radians(15.0))
    cam.SetFocalPoint(*focal)
    cam.SetPosition(*(focal - dist * f.dop))
    cam.SetViewUp(*f.up)
    cam.SetClippingRange(max(1.0, dist - 2.5 * radius), dist + 2.5 * radius)
    set_interactive(win, False)
    view = View("overview_3d", win, base, over, None, top=top)
    view.info.update(frame=f, layer=layer, volume=vol, legend=legend, plan_over=dyn_over, plan_base=dyn_base,
                     plan_top=dyn_top, radius=radius, actual_caption=actual_caption)
    return view


def render_views(
    source: Case | Scene | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    size: tuple[int, int] = (800, 600),
    names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Render the procedure-room views offscreen to ``out_dir/images/<name>.png``.

    Parameters
    ----------
    source : a plan folder (``plan.json``, its CT, ``structures.seg.nrrd``, ``risk_map.npz``),
        a :class:`Case` or a :class:`Scene` (reuse one to render several times without
        rebuilding the surfaces).
    out_dir : the folder whose ``images/`` receives the PNGs (the plan folder, for a report).
    size : (width, height) pixels.
    names : which views; by default ``planning_slice``, ``bullseye``, ``progression`` and
        ``overview_3d`` when the case has a trajectory, plus ``slice_axial``, ``slice_coronal``
        and ``slice_sagittal`` always. Views needing a trajectory are skipped without one.

    Returns
    -------
    dict name -> Path of each PNG written.
    """
    if isinstance(source, Scene):
        scene = source
    elif isinstance(source, Case):
        scene = Scene(source)
    else:
        scene = Scene(load_case(source))
    wanted = list(names) if names is not None else list(REPORT_VIEWS) + list(SLICE_VIEWS)
    unknown = [n for n in wanted if n not in REPORT_VIEWS + SLICE_VIEWS]
    if unknown:
        raise InputError(f"unknown views {unknown}; allowed: {', '.join(REPORT_VIEWS + SLICE_VIEWS)}")
    images = Path(out_dir) / "images"
    out: dict[str, Path] = {}
    for name in wanted:
        needs_path = name in ("planning_slice", "bullseye", "progression")
        if needs_path and scene.case.chosen is None:
            continue
        view = build_view(scene, name, size)
        try:
            out[name] = view.save(images / f"{name}.png")
        finally:
            view.close()
    return out


def build_view(scene: Scene, name: str, size: tuple[int, int] = (800, 600)) -> View:
    """One view by name (see ``render_views``), not yet rendered."""
    if name == "planning_slice":
        return planning_slice(scene, size)
    if name == "bullseye":
        return bullseye(scene, size)
    if name == "progression":
        return progression(scene, size)
    if name == "overview_3d":
        return overview_3d(scene, size)
    if name.startswith("slice_"):
        return orthogonal_view(scene, name[len("slice_"):], size)
    raise InputError(f"unknown view {name!r}")
