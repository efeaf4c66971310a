"""The risk map on the skin: each candidate entry coloured by its score, ruled-out ones by why.

Scores are lower-is-better (the preset's weighted sum); colours run from green (best) through
yellow to red (worst feasible). Entries ruled out by a clearance rule (the needle would come
too close to a structure) are *forbidden*: dark purple. Entries ruled out by the approach side,
the angle to the skin or the craniocaudal angle are *unreachable*: grey.
"""

from __future__ import annotations

import numpy as np

from .case import RiskMap
from .vtkutil import numpy_support, points_array, vtk

FORBIDDEN = (110, 30, 120)
UNREACHABLE = (120, 120, 120)


def score_lookup(lo: float, hi: float) -> "vtk.vtkLookupTable":
    lut = vtk.vtkLookupTable()
    lut.SetTableRange(lo, hi if hi > lo else lo + 1.0)
    lut.SetHueRange(0.33, 0.0)  # green -> red
    lut.SetSaturationRange(0.9, 0.9)
    lut.SetValueRange(1.0, 1.0)
    lut.SetNumberOfTableValues(256)
    lut.Build()
    return lut


def categories(rm: RiskMap) -> np.ndarray:
    """0 feasible, 1 forbidden (a clearance rule), 2 unreachable (side or angles), per entry."""
    cat = np.where(np.isfinite(rm.score), 0, 2)
    forbidden = np.char.startswith(rm.reason.astype(str), "clearance:")
    cat[~np.isfinite(rm.score) & forbidden] = 1
    return cat


def risk_colours(rm: RiskMap, lut: "vtk.vtkLookupTable") -> np.ndarray:
    """uint8 RGB (n, 3) of each entry."""
    cat = categories(rm)
    out = np.empty((len(rm.score), 3), np.uint8)
    out[cat == 1] = FORBIDDEN
    out[cat == 2] = UNREACHABLE
    for i in np.flatnonzero(cat == 0):
        rgb = [0.0, 0.0, 0.0]
        lut.GetColor(float(rm.score[i]), rgb)
        out[i] = np.rint(np.array(rgb) * 255)
    return out


def risk_actor(rm: RiskMap, point_size: float = 4.0) -> tuple["vtk.vtkActor", "vtk.vtkScalarBarActor"]:
    """Points on the skin coloured by score or category, and the score colour bar."""
    ok = np.isfinite(rm.score)
    lo, hi = (float(np.min(rm.score[ok])), float(np.max(rm.score[ok]))) if ok.any() else (0.0, 1.0)
    lut = score_lookup(lo, hi)
    poly = vtk.vtkPolyData()
    poly.SetPoints(points_array(rm.entries))
    verts = vtk.vtkCellArray()
    n = len(rm.entries)
    offsets = numpy_support.numpy_to_vtkIdTypeArray(np.arange(n + 1, dtype=np.int64), deep=True)
    conn = numpy_support.numpy_to_vtkIdTypeArray(np.arange(n, dtype=np.int64), deep=True)
    verts.SetData(offsets, conn)
    poly.SetVerts(verts)
    colours = numpy_support.numpy_to_vtk(risk_colours(rm, lut), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    colours.SetName("colours")
    poly.GetPointData().SetScalars(colours)
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(poly)
    mapper.SetColorModeToDirectScalars()
    mapper.ScalarVisibilityOn()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetPointSize(point_size)
    actor.GetProperty().RenderPointsAsSpheresOn()
    actor.GetProperty().LightingOff()
    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(lut)
    bar.SetTitle("entry score\n(lower is safer)")
    bar.SetNumberOfLabels(3)
    bar.SetOrientationToVertical()
    bar.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    bar.GetPositionCoordinate().SetValue(0.02, 0.08)
    bar.SetWidth(0.08)
    bar.SetHeight(0.4)
    bar.SetLabelFormat("%.0f")
    for tp in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty()):
        tp.SetColor(1, 1, 1)
        tp.SetFontSize(12)
        tp.ShadowOff()
        tp.ItalicOff()
        tp.BoldOff()
    bar.UnconstrainedFontSizeOn()
    return actor, bar
