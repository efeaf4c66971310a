"""Trajectories as needle-sized tubes with entry and tip markers and depth marks every centimetre.

Markers are drawn unlit (flat colour), so that a person and a test find them by their colour.
"""

from __future__ import annotations

import numpy as np

from .case import ActualNeedle, NeedlePath
from .geometry import depth_marks
from .vtkutil import numpy_support, rgb01, vtk

CHOSEN = (255, 214, 0)  # the chosen needle: yellow
ALTERNATIVE = (255, 120, 0)  # alternatives: orange
ENTRY = (0, 240, 255)  # skin entry marker: cyan
TARGET = (255, 0, 255)  # the target marker: magenta, a colour no structure class uses
DEPTH_MARK = (25, 25, 25)  # rings every centimetre
ACTUAL = (125, 90, 255)  # the needle a check scan found: violet, a colour no structure class uses
ACTUAL_TEXT = (200, 185, 255)  # words about it: a lighter violet, readable on a dark background


def _flat(actor: "vtk.vtkActor", colour: tuple[int, int, int], opacity: float = 1.0) -> "vtk.vtkActor":
    p = actor.GetProperty()
    p.SetColor(*rgb01(colour))
    p.LightingOff()
    p.SetOpacity(opacity)
    return actor


def _actor(source: "vtk.vtkAlgorithm") -> "vtk.vtkActor":
    source.Update()
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(source.GetOutput())
    a = vtk.vtkActor()
    a.SetMapper(mapper)
    return a


def tube(entry: np.ndarray, target: np.ndarray, diameter_mm: float) -> "vtk.vtkPolyData":
    """A capped cylinder of the needle's outer diameter from entry to target."""
    line = vtk.vtkLineSource()
    line.SetPoint1(*[float(x) for x in entry])
    line.SetPoint2(*[float(x) for x in target])
    t = vtk.vtkTubeFilter()
    t.SetInputConnection(line.GetOutputPort())
    t.SetRadius(diameter_mm / 2.0)
    t.SetNumberOfSides(20)
    t.CappingOn()
    t.Update()
    return t.GetOutput()


def sphere_actor(centre: np.ndarray, radius_mm: float, colour: tuple[int, int, int]) -> "vtk.vtkActor":
    s = vtk.vtkSphereSource()
    s.SetCenter(*[float(x) for x in centre])
    s.SetRadius(radius_mm)
    s.SetThetaResolution(24)
    s.SetPhiResolution(16)
    return _flat(_actor(s), colour)


def ring_actor(centre: np.ndarray, normal: np.ndarray, inner_mm: float, outer_mm: float,
               colour: tuple[int, int, int]) -> "vtk.vtkActor":
    """A flat ring (annulus) around ``centre``, perpendicular to ``normal``."""
    disk = vtk.vtkDiskSource()
    disk.SetInnerRadius(inner_mm)
    disk.SetOuterRadius(outer_mm)
    disk.SetCircumferentialResolution(48)
    disk.SetCenter(*[float(x) for x in centre])
    disk.SetNormal(*[float(x) for x in normal])
    return _flat(_actor(disk), colour)


def needle_actors(path: NeedlePath, chosen: bool, marks: bool = True, min_diameter_mm: float = 0.0,
                  entry_marker: bool = True) -> list["vtk.vtkActor"]:
    """The tube, the skin entry marker and (for the chosen path) the depth marks every cm.

    ``min_diameter_mm`` widens the drawn tube in views where the true diameter would be below
    a pixel; the default draws the needle's own size.
    """
    d = max(path.diameter_mm, min_diameter_mm)
    out = []
    tm = vtk.vtkPolyDataMapper()
    tm.SetInputData(tube(path.entry, path.target, d))
    ta = vtk.vtkActor()
    ta.SetMapper(tm)
    out.append(_flat(ta, CHOSEN if chosen else ALTERNATIVE))
    if entry_marker:
        out.append(sphere_actor(path.entry, max(1.8, 1.2 * d), ENTRY if chosen else ALTERNATIVE))
    if chosen and marks:
        rings = depth_rings(path, d / 2.0 + 1.2)
        if rings is not None:
            out.append(_flat(rings, DEPTH_MARK))
    return out


def depth_rings(path: NeedlePath, radius_mm: float) -> "vtk.vtkActor | None":
    """Thin discs around the needle every centimetre from the skin, as one actor."""
    marks = depth_marks(path.entry, path.target)
    if not len(marks):
        return None
    c = vtk.vtkCylinderSource()
    c.SetRadius(radius_mm)
    c.SetHeight(0.8)
    c.SetResolution(20)
    c.Update()
    disc = c.GetOutput()
    local = numpy_support.vtk_to_numpy(disc.GetPoints().GetData()).astype(float)
    append = vtk.vtkAppendPolyData()
    for p in marks:
        m = _y_to(path.direction, p)  # vtkCylinderSource stands along y: turn y onto the needle
        rot = np.array([[m.GetElement(r, col) for col in range(3)] for r in range(3)])
        one = vtk.vtkPolyData()
        one.DeepCopy(disc)
        one.GetPoints().SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(local @ rot.T + p), deep=True))
        append.AddInputData(one)
    return _actor(append)


def _y_to(direction: np.ndarray, position: np.ndarray) -> "vtk.vtkMatrix4x4":
    y = np.asarray(direction, float) / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(y[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    x = np.cross(y, helper)
    x /= np.linalg.norm(x)
    z = np.cross(x, y)
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        m.SetElement(r, 0, x[r])
        m.SetElement(r, 1, y[r])
        m.SetElement(r, 2, z[r])
        m.SetElement(r, 3, float(position[r]))
    return m


def target_actor(point: np.ndarray, radius_mm: float = 2.5) -> "vtk.vtkActor":
    """The target marker: a magenta sphere at the target point."""
    return sphere_actor(point, radius_mm, TARGET)


def actual_needle_actors(actual: ActualNeedle, min_diameter_mm: float = 0.0) -> list["vtk.vtkActor"]:
    """The needle a check scan found: a green tube from its far end to its tip with a tip marker,
    and a thin pale-green extension to where its tip would be at the target's depth."""
    d = max(actual.diameter_mm, min_diameter_mm)
    out = []
    m = vtk.vtkPolyDataMapper()
    m.SetInputData(tube(actual.far_end, actual.tip, d))
    a = vtk.vtkActor()
    a.SetMapper(m)
    out.append(_flat(a, ACTUAL))
    out.append(sphere_actor(actual.tip, max(1.5, 0.9 * d), ACTUAL))
    if np.linalg.norm(actual.predicted_tip - actual.tip) > 0.5:
        m = vtk.vtkPolyDataMapper()
        m.SetInputData(tube(actual.tip, actual.predicted_tip, 0.45 * d))
        a = vtk.vtkActor()
        a.SetMapper(m)
        out.append(_flat(a, ACTUAL))
        out.append(sphere_actor(actual.predicted_tip, max(1.0, 0.6 * d), ACTUAL))
    return out
