"""CT reslices: the three orthogonal planes and any oblique plane, with window/level presets.

Each slice is a ``vtkImageSlice`` cut by a ``vtkImageResliceMapper`` along a plane given in
world (LPS) coordinates; the image's placement in LPS comes from the prop's user matrix.
"""

from __future__ import annotations

from typing import Sequence


from ..images.reslice import WINDOWS
from .vtkutil import vtk

#: Window presets (level, width) of the slice views: lung, mediastinum, bone (and soft tissue).
SLICE_WINDOWS = {name: WINDOWS[name] for name in ("lung", "mediastinum", "bone", "soft-tissue")}



def slice_actor(data: "vtk.vtkImageData", matrix: "vtk.vtkMatrix4x4", origin: Sequence[float],
                normal: Sequence[float], window: str = "lung") -> "vtk.vtkImageSlice":
    """The CT cut by the plane through ``origin`` (LPS mm) with ``normal``, windowed."""
    plane = vtk.vtkPlane()
    plane.SetOrigin(*[float(x) for x in origin])
    plane.SetNormal(*[float(x) for x in normal])
    mapper = vtk.vtkImageResliceMapper()
    mapper.SetInputData(data)
    mapper.SetSlicePlane(plane)
    mapper.SliceFacesCameraOff()
    mapper.SliceAtFocalPointOff()
    mapper.AutoAdjustImageQualityOff()
    mapper.ResampleToScreenPixelsOn()
    actor = vtk.vtkImageSlice()
    actor.SetMapper(mapper)
    actor.SetUserMatrix(matrix)
    set_window(actor, window)
    actor.GetProperty().SetInterpolationTypeToLinear()
    return actor


def set_window(actor: "vtk.vtkImageSlice", window: str | tuple[float, float]) -> None:
    """Apply a window preset name or a (level, width) pair in HU."""
    if isinstance(window, str):
        if window not in SLICE_WINDOWS:
            raise ValueError(f"unknown window {window!r}; allowed: {', '.join(SLICE_WINDOWS)}")
        level, width = SLICE_WINDOWS[window]
    else:
        level, width = window
    actor.GetProperty().SetColorLevel(float(level))
    actor.GetProperty().SetColorWindow(float(width))
