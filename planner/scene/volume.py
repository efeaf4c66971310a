"""The CT as a volume rendering, with presets, and as vtkImageData placed in LPS.

The image data holds the voxels with their spacing and origin 0; the prop's user matrix carries
the affine's rotation and translation, so voxel (i, j, k) lands at ``affine @ (i, j, k, 1)``.

Level of detail: the CPU ray caster (``vtkFixedPointVolumeRayCastMapper``, the fastest on a
machine without a GPU) adjusts its image and ray sample distances to the render window's desired
update rate: an interactor asks for its interactive rate (coarse, >= 10 frames/s) while the
mouse moves and for the still rate (full quality) when it stops. :func:`set_interactive` does
the same without an interactor.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..images import Image
from .vtkutil import image_data, rigid_part, vtk, vtk_matrix


@dataclass(frozen=True)
class VolumePreset:
    """Transfer functions over HU: colour points (hu, r, g, b 0-1) and opacity points (hu, a)."""

    name: str
    colour: tuple[tuple[float, float, float, float], ...]
    opacity: tuple[tuple[float, float], ...]
    shade: bool = True


VOLUME_PRESETS = {
    "bone": VolumePreset(
        "bone",
        ((150, 0.55, 0.25, 0.15), (300, 0.85, 0.65, 0.45), (700, 0.95, 0.9, 0.8), (1500, 1.0, 1.0, 0.95)),
        ((150, 0.0), (250, 0.1), (500, 0.55), (1200, 0.85)),
    ),
    "lung": VolumePreset(
        "lung",
        ((-1000, 0.3, 0.3, 0.3), (-700, 0.55, 0.7, 0.85), (-300, 0.85, 0.45, 0.4), (200, 0.9, 0.8, 0.75)),
        ((-1000, 0.0), (-850, 0.0), (-650, 0.04), (-350, 0.25), (-100, 0.0), (300, 0.0)),
    ),
    "soft-tissue": VolumePreset(
        "soft-tissue",
        ((-300, 0.4, 0.2, 0.15), (-50, 0.85, 0.6, 0.45), (60, 0.85, 0.3, 0.25), (300, 1.0, 0.95, 0.85)),
        ((-300, 0.0), (-80, 0.02), (40, 0.15), (150, 0.3), (600, 0.6)),
    ),
}


def ct_image_data(ct: Image) -> tuple["vtk.vtkImageData", "vtk.vtkMatrix4x4"]:
    """The CT as vtkImageData (spacing, origin 0) and the user matrix that places it in LPS."""
    return image_data(ct.voxels, ct.spacing), vtk_matrix(rigid_part(ct.affine))


def volume_property(preset: str | VolumePreset) -> "vtk.vtkVolumeProperty":
    p = VOLUME_PRESETS[preset] if isinstance(preset, str) else preset
    ctf = vtk.vtkColorTransferFunction()
    for hu, r, g, b in p.colour:
        ctf.AddRGBPoint(hu, r, g, b)
    otf = vtk.vtkPiecewiseFunction()
    for hu, a in p.opacity:
        otf.AddPoint(hu, a)
    prop = vtk.vtkVolumeProperty()
    prop.SetColor(ctf)
    prop.SetScalarOpacity(otf)
    prop.SetInterpolationTypeToLinear()
    prop.SetShade(bool(p.shade))
    prop.SetAmbient(0.3)
    prop.SetDiffuse(0.7)
    prop.SetSpecular(0.1)
    return prop


def volume_actor(data: "vtk.vtkImageData", matrix: "vtk.vtkMatrix4x4", preset: str = "bone") -> "vtk.vtkVolume":
    """A volume rendering of the CT with a preset ('bone', 'lung', 'soft-tissue')."""
    if preset not in VOLUME_PRESETS:
        raise ValueError(f"unknown volume preset {preset!r}; allowed: {', '.join(VOLUME_PRESETS)}")
    mapper = vtk.vtkFixedPointVolumeRayCastMapper()
    mapper.SetInputData(data)
    mapper.AutoAdjustSampleDistancesOn()
    mapper.SetMaximumImageSampleDistance(6.0)
    mapper.LockSampleDistanceToInputSpacingOn()
    vol = vtk.vtkVolume()
    vol.SetMapper(mapper)
    vol.SetProperty(volume_property(preset))
    vol.SetUserMatrix(matrix)
    return vol


def set_volume_preset(volume: "vtk.vtkVolume", preset: str) -> None:
    volume.SetProperty(volume_property(preset))


#: Desired update rates (frames/s) while interacting and when still, as an interactor sets them.
INTERACTIVE_RATE = 15.0
STILL_RATE = 0.0001


def set_interactive(window: "vtk.vtkRenderWindow", interactive: bool) -> None:
    """Ask for the coarse, fast rendering (while the view moves) or for full quality."""
    window.SetDesiredUpdateRate(INTERACTIVE_RATE if interactive else STILL_RATE)
