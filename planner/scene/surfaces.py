"""Structure surfaces: smooth, decimated meshes of the cropped masks, in LPS, coloured by class.

Each mask is contoured in its own crop (padded by one voxel so that every surface closes),
on a grid scaled by the voxel spacing, decimated (vertex clustering) and smoothed there, and its points are then
moved to LPS with the image affine (numpy), so the surface lands where the voxels are whatever
the scan's orientation; VTK's own direction-matrix support is not relied on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ..anatomy.registry import StructureClass, colour_of
from ..anatomy.structures import Structure, StructureSet
from .vtkutil import image_data, numpy_support, rgb01, vtk

#: Default opacity of each class in the 3D scene (what lies inside stays visible).
CLASS_OPACITY = {
    StructureClass.BODY: 0.12, StructureClass.LUNG: 0.15, StructureClass.LOBE: 0.18,
    StructureClass.FISSURE: 0.5, StructureClass.EMPHYSEMA: 0.6, StructureClass.AIRWAY: 0.7,
    StructureClass.ORGAN: 0.5, StructureClass.MUSCLE: 0.3, StructureClass.FLUID: 0.6,
    StructureClass.OTHER: 0.5,
}

#: Masks whose box holds more voxels than this are contoured on a coarser grid (block maximum):
#: a surface shown on a screen needs no finer than about 1-2 mm, and contouring, smoothing and
#: decimating a whole-body mask at full resolution takes a minute.
MAX_VOXELS = 1_500_000


def coarsening(shape: tuple[int, ...], spacing_kji: np.ndarray, max_voxels: int) -> np.ndarray:
    """Integer steps along (k, j, i) that bring ``shape`` under ``max_voxels``, finest axes first."""
    shape_a = np.asarray(shape, float)
    step = np.ones(3, int)
    sp = np.asarray(spacing_kji, float)
    while np.prod(np.ceil(shape_a / step)) > max_voxels:
        a = int(np.argmin(sp * step))  # coarsen the axis with the finest effective spacing
        step[a] += 1
    return step


def _block_any(mask: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Block maximum of a boolean array by ``step`` (k, j, i); the last partial block is padded."""
    if np.all(step == 1):
        return mask
    pad = [(0, (-n) % s) for n, s in zip(mask.shape, step)]
    m = np.pad(mask, pad)
    nk, nj, ni = (n // s for n, s in zip(m.shape, step))
    return m.reshape(nk, step[0], nj, step[1], ni, step[2]).any(axis=(1, 3, 5))


def mask_mesh(s: Structure, affine: np.ndarray, smooth_iterations: int = 12, target_triangles: int = 60_000,
              max_voxels: int = MAX_VOXELS) -> "vtk.vtkPolyData":
    """The surface of one cropped mask in LPS mm (points), with normals.

    Parameters
    ----------
    s : Structure
        Its ``mask`` covers ``[k0:k0+nk, j0:j0+nj, i0:i0+ni]`` of the grid of ``affine``.
    affine : (4, 4)
        The grid's (i, j, k, 1) -> LPS affine.
    """
    a = np.asarray(affine, float)
    sp = np.linalg.norm(a[:3, :3], axis=0)  # spacing along i, j, k
    step = coarsening(s.mask.shape, sp[::-1], max_voxels)
    mask = _block_any(s.mask, step)
    padded = np.pad(mask.astype(np.uint8), 1)
    cell = sp * step[::-1]  # spacing of this grid along i, j, k
    # index of padded voxel (0,0,0) on the full grid, in (i, j, k); coarse voxels sit at their pair's centre
    first = np.asarray(s.offset[::-1], float) + (step[::-1] - 1) / 2.0 - step[::-1]
    img = image_data(padded, cell, first * sp)
    fe = vtk.vtkFlyingEdges3D()
    fe.SetInputData(img)
    fe.SetValue(0, 0.5)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.Update()
    poly = fe.GetOutput()
    if poly.GetNumberOfCells() == 0:
        return poly
    out = poly
    n = out.GetNumberOfCells()
    if n > target_triangles:
        # Vertex clustering with bins sized for about ``target_triangles`` (triangles scale with
        # the area over the bin's square): a tenth of a second where quadric decimation of a
        # whole-body skin takes seconds. The smoothing that follows hides the bins.
        b = np.array(out.GetBounds()).reshape(3, 2)
        ext = np.maximum(b[:, 1] - b[:, 0], 1e-3)
        bin_mm = float(cell.min()) * np.sqrt(n / target_triangles)
        div = np.maximum(2, np.ceil(ext / bin_mm)).astype(int)
        cl = vtk.vtkQuadricClustering()
        cl.SetInputData(out)
        cl.SetNumberOfDivisions(*[int(d) for d in div])
        cl.AutoAdjustNumberOfDivisionsOff()
        cl.Update()
        out = cl.GetOutput()
    if smooth_iterations > 0:
        sm = vtk.vtkWindowedSincPolyDataFilter()
        sm.SetInputData(out)
        sm.SetNumberOfIterations(smooth_iterations)
        sm.SetPassBand(0.08)
        sm.BoundarySmoothingOff()
        sm.NonManifoldSmoothingOn()
        sm.NormalizeCoordinatesOn()
        sm.Update()
        out = sm.GetOutput()
    # Scaled-index space -> LPS: the affine's rotation and translation (spacing is already in).
    pts = numpy_support.vtk_to_numpy(out.GetPoints().GetData()).astype(float)
    rot = a[:3, :3] / sp
    lps = pts @ rot.T + a[:3, 3]
    final = vtk.vtkPolyData()
    final.SetPoints(_points(lps))
    final.SetPolys(out.GetPolys())
    nm = vtk.vtkPolyDataNormals()
    nm.SetInputData(final)
    nm.SplittingOff()
    nm.ConsistencyOn()
    nm.AutoOrientNormalsOff()
    nm.Update()
    return nm.GetOutput()


def _points(p: np.ndarray) -> "vtk.vtkPoints":
    pts = vtk.vtkPoints()
    pts.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(p), deep=True))
    return pts


def redundant(sset: StructureSet) -> set[str]:
    """Names of structures whose voxels all lie in a larger structure of the same class.

    Their surfaces would coincide with the larger one's (e.g. ``ribs_left`` inside ``bone``),
    so the 3D scene draws the larger one only.
    """
    items = sorted(sset, key=lambda s: -s.voxel_count)
    out: set[str] = set()
    for i, small in enumerate(items):
        for big in items[:i]:
            if big.cls != small.cls or big.name in out:
                continue
            lo = np.array(small.offset) - np.array(big.offset)
            hi = lo + np.array(small.mask.shape)
            if np.any(lo < 0) or np.any(hi > np.array(big.mask.shape)):
                continue
            sub = big.mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            if not np.any(small.mask & ~sub):
                out.add(small.name)
                break
    return out


@dataclass
class StructureLayer:
    """The structure surfaces of a scene, with per-class visibility and opacity.

    ``actors`` maps a structure name to its actor; ``classes`` a name to its class.
    """

    actors: dict[str, "vtk.vtkActor"] = field(default_factory=dict)
    classes: dict[str, StructureClass] = field(default_factory=dict)
    fine: dict[str, "vtk.vtkPolyData"] = field(default_factory=dict)
    coarse: dict[str, "vtk.vtkPolyData"] = field(default_factory=dict)

    def set_coarse(self, coarse: bool) -> None:
        """Level of detail: the coarse meshes while the view moves, the fine ones when still."""
        for name, a in self.actors.items():
            mesh = self.coarse.get(name) if coarse else self.fine.get(name)
            if mesh is not None and a.GetMapper().GetInput() is not mesh:
                a.GetMapper().SetInputData(mesh)

    def add_to(self, renderer: "vtk.vtkRenderer") -> None:
        for a in self.actors.values():
            renderer.AddActor(a)

    def set_class_visible(self, cls: StructureClass | str, visible: bool) -> None:
        c = StructureClass.parse(cls)
        for name, a in self.actors.items():
            if self.classes[name] == c:
                a.SetVisibility(bool(visible))

    def set_class_opacity(self, cls: StructureClass | str, opacity: float) -> None:
        c = StructureClass.parse(cls)
        for name, a in self.actors.items():
            if self.classes[name] == c:
                a.GetProperty().SetOpacity(float(np.clip(opacity, 0.0, 1.0)))

    def present_classes(self) -> list[StructureClass]:
        seen: list[StructureClass] = []
        for c in self.classes.values():
            if c not in seen:
                seen.append(c)
        return seen


def surface_actor(mesh: "vtk.vtkPolyData", colour: tuple[int, int, int], opacity: float = 1.0) -> "vtk.vtkActor":
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(mesh)
    mapper.ScalarVisibilityOff()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    prop = actor.GetProperty()
    prop.SetColor(*rgb01(colour))
    prop.SetOpacity(opacity)
    prop.SetSpecular(0.0)  # no white highlights: the shade keeps the class colour's hue
    prop.SetDiffuse(0.75)
    prop.SetAmbient(0.25)
    return actor


def structure_layer(meshes: dict[str, "vtk.vtkPolyData"], sset: StructureSet,
                    opacity: dict[StructureClass, float] | None = None,
                    target_name: str = "", coarse: dict[str, "vtk.vtkPolyData"] | None = None) -> StructureLayer:
    """Actors for the meshes (name -> LPS polydata) of ``sset``, coloured by class.

    ``coarse`` (name -> LPS polydata) are the low-detail meshes used while the view moves.
    """
    op = dict(CLASS_OPACITY)
    op.update(opacity or {})
    layer = StructureLayer(fine=dict(meshes), coarse=dict(coarse or {}))
    for name, mesh in meshes.items():
        s = sset[name]
        o = 1.0 if (s.cls == StructureClass.TARGET or name == target_name) else op.get(s.cls, 1.0)
        actor = surface_actor(mesh, s.colour, o)
        if o < 1.0:
            actor.GetProperty().BackfaceCullingOn()  # no inner sheet doubling the translucent surface
        layer.actors[name] = actor
        layer.classes[name] = s.cls
    return layer


#: Low-detail meshes, for interaction: contoured on at most this many voxels, few triangles.
COARSE = {"max_voxels": 100_000, "smooth_iterations": 4, "target_triangles": 2_500}


def build_meshes(sset: StructureSet, names: Iterable[str] | None = None, skip_redundant: bool = True,
                 coarse: bool = False) -> dict[str, "vtk.vtkPolyData"]:
    """Meshes of the structures (all, or ``names``), largest first; redundant ones skipped.

    ``coarse`` builds the low-detail meshes shown while the view moves (see ``COARSE``).
    """
    skip = redundant(sset) if skip_redundant else set()
    wanted = set(names) if names is not None else None
    out: dict[str, vtk.vtkPolyData] = {}
    for s in sset:
        if s.name in skip or (wanted is not None and s.name not in wanted):
            continue
        mesh = mask_mesh(s, sset.affine, **(COARSE if coarse else {}))  # type: ignore[arg-type]
        if mesh.GetNumberOfCells():
            out[s.name] = mesh
    return out


def legend_actor(classes: list[StructureClass], extra: list[tuple[str, tuple[int, int, int]]] = (),  # type: ignore[assignment]
                 position: tuple[float, float] = (0.80, 0.55), size: tuple[float, float] = (0.19, 0.43),
                 font_size: int = 14) -> "vtk.vtkLegendBoxActor":
    """A legend of class colours (and extra name/colour rows), in normalised viewport coordinates."""
    rows = [(c.value, colour_of(c)) for c in classes] + list(extra)
    leg = vtk.vtkLegendBoxActor()
    leg.SetNumberOfEntries(len(rows))
    square = vtk.vtkCubeSource()
    square.SetXLength(1.0)
    square.SetYLength(1.0)
    square.SetZLength(0.0)
    square.Update()
    for i, (name, colour) in enumerate(rows):
        leg.SetEntry(i, square.GetOutput(), name, rgb01(colour))
    leg.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    leg.GetPositionCoordinate().SetValue(*position)
    leg.GetPosition2Coordinate().SetCoordinateSystemToNormalizedViewport()
    leg.GetPosition2Coordinate().SetValue(*size)
    leg.UseBackgroundOn()
    leg.SetBackgroundColor(0.0, 0.0, 0.0)
    leg.SetBackgroundOpacity(0.6)
    leg.BorderOff()
    tp = leg.GetEntryTextProperty()
    tp.SetFontSize(font_size)
    tp.SetColor(1.0, 1.0, 1.0)
    tp.ShadowOff()
    return leg
