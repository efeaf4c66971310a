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
    actor = _resliced(data, matrix, plane)
    set_window(actor, window)
    actor.GetProperty().SetInterpolationTypeToLinear()
    return actor


def _resliced(data: "vtk.vtkImageData", matrix: "vtk.vtkMatrix4x4", plane: "vtk.vtkPlane") -> "vtk.vtkImageSlice":
    """``data`` (placed in LPS by ``matrix``) cut by ``plane``, resampled to the screen's pixels."""
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


#: PET over CT: SUV at or above which the PET colours a slice fully (at the layer's opacity); it
#: ramps in from half of it, so background uptake does not veil the CT.
PET_FLOOR_SUV = 1.5
#: The PET layer's opacity when a view opens; the viewer's key steps through PET_OPACITIES.
PET_OPACITY = 0.6
PET_OPACITIES = (0.6, 0.3, 0.9, 0.0)


def pet_lookup_table(top_suv: float) -> "vtk.vtkLookupTable":
    """The hot colour map (black, red, yellow, white) over SUV 0 .. ``top_suv``, transparent
    below half of :data:`PET_FLOOR_SUV`, opaque from it."""
    lut = vtk.vtkLookupTable()
    n = 256
    lut.SetNumberOfTableValues(n)
    top = max(float(top_suv), 1e-3)
    lut.SetTableRange(0.0, top)
    for i in range(n):
        x = i / (n - 1)
        suv = x * top
        r, g, b = min(1.0, x / 0.4), min(1.0, max(0.0, (x - 0.4) / 0.4)), min(1.0, max(0.0, (x - 0.8) / 0.2))
        a = min(1.0, max(0.0, (suv - PET_FLOOR_SUV / 2) / (PET_FLOOR_SUV / 2)))
        lut.SetTableValue(i, r, g, b, a)
    lut.SetUseBelowRangeColor(True)
    lut.SetBelowRangeColor(0.0, 0.0, 0.0, 0.0)
    lut.Build()
    return lut


def pet_slice_actor(data: "vtk.vtkImageData", matrix: "vtk.vtkMatrix4x4", plane: "vtk.vtkPlane", top_suv: float,
                    opacity: float = PET_OPACITY) -> "vtk.vtkImageSlice":
    """The PET (SUV on the CT's grid) cut by the very ``plane`` of a CT slice (so it follows
    the slice when it moves), in the hot map, at ``opacity``, to be stacked over the CT slice."""
    actor = _resliced(data, matrix, plane)
    prop = actor.GetProperty()
    prop.SetLookupTable(pet_lookup_table(top_suv))
    prop.UseLookupTableScalarRangeOn()
    prop.SetInterpolationTypeToLinear()
    prop.SetOpacity(float(opacity))
    prop.SetLayerNumber(1)
    return actor


def suv_bar(top_suv: float, font: int) -> "vtk.vtkScalarBarActor":
    """The SUV colour bar of the PET layer (the hot map, opaque), at the right edge of a view."""
    lut = pet_lookup_table(top_suv)
    shown = vtk.vtkLookupTable()
    shown.DeepCopy(lut)
    for i in range(shown.GetNumberOfTableValues()):
        r, g, b, _ = shown.GetTableValue(i)
        shown.SetTableValue(i, r, g, b, 1.0)
    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(shown)
    bar.SetTitle("SUV")
    bar.SetNumberOfLabels(3)
    bar.SetLabelFormat("%.1f")
    bar.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    bar.GetPositionCoordinate().SetValue(0.90, 0.30)
    bar.SetWidth(0.07)
    bar.SetHeight(0.45)
    for tp in (bar.GetTitleTextProperty(), bar.GetLabelTextProperty()):
        tp.SetFontSize(font)
        tp.SetColor(1.0, 1.0, 1.0)
        tp.ShadowOn()
    bar.UnconstrainedFontSizeOn()
    return bar
