"""VTK plumbing shared by the scene modules: arrays, matrices, offscreen windows, screenshots.

VTK is imported here (and in the other ``planner.scene`` modules and the viewer) only; the
images, anatomy and planning layers never import it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

# Without a display server, VTK's default X11 window fails noisily before it falls back:
# ask for the EGL (offscreen) window from the start when no display is set.
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

RGB = tuple[int, int, int]


def rgb01(colour: Sequence[float]) -> tuple[float, float, float]:
    """0-255 RGB -> 0-1 RGB, as VTK properties take it."""
    return (colour[0] / 255.0, colour[1] / 255.0, colour[2] / 255.0)


def vtk_matrix(m: np.ndarray) -> "vtk.vtkMatrix4x4":
    """A 4x4 numpy array as a vtkMatrix4x4."""
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def rigid_part(affine: np.ndarray) -> np.ndarray:
    """The rotation + translation of an image affine (spacing taken out), shape (4, 4).

    VTK image data carries origin and spacing; the direction (and the origin) go into the
    prop's user matrix, so that a voxel at index (i, j, k) lands at ``affine @ (i, j, k, 1)``.
    """
    a = np.asarray(affine, float)
    sp = np.linalg.norm(a[:3, :3], axis=0)
    out = np.eye(4)
    out[:3, :3] = a[:3, :3] / sp
    out[:3, 3] = a[:3, 3]
    return out


def image_data(voxels: np.ndarray, spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0)
               ) -> "vtk.vtkImageData":
    """A ``[k, j, i]`` array as vtkImageData (x = i fastest), spacing along (i, j, k).

    The array is copied (VTK keeps no reference to numpy memory that may go away).
    """
    v = np.ascontiguousarray(voxels)
    img = vtk.vtkImageData()
    img.SetDimensions(int(v.shape[2]), int(v.shape[1]), int(v.shape[0]))
    img.SetSpacing(*[float(s) for s in spacing])
    img.SetOrigin(*[float(o) for o in origin])
    arr = numpy_support.numpy_to_vtk(v.ravel(), deep=True)
    arr.SetName("values")
    img.GetPointData().SetScalars(arr)
    return img


def points_array(points: np.ndarray) -> "vtk.vtkPoints":
    pts = vtk.vtkPoints()
    pts.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(points, dtype=np.float64), deep=True))
    return pts


def polydata_points(poly: "vtk.vtkPolyData") -> np.ndarray:
    """The points of a polydata as an (n, 3) float array (a copy)."""
    data = poly.GetPoints().GetData() if poly.GetPoints() is not None else None
    return np.zeros((0, 3)) if data is None else numpy_support.vtk_to_numpy(data).astype(float).copy()


def offscreen_window(size: tuple[int, int]) -> "vtk.vtkRenderWindow":
    """An offscreen render window of ``size`` (width, height) pixels."""
    win = vtk.vtkRenderWindow()
    win.SetOffScreenRendering(1)
    win.SetSize(int(size[0]), int(size[1]))
    win.SetMultiSamples(0)
    win.SetAlphaBitPlanes(1)
    return win


def capture(window: "vtk.vtkRenderWindow") -> np.ndarray:
    """Render and read the window back: uint8 RGB array (rows top to bottom, shape (h, w, 3))."""
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    out = grab.GetOutput()
    w, h, _ = out.GetDimensions()
    arr = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(h, w, -1)[:, :, :3]
    return np.ascontiguousarray(arr[::-1])  # VTK's first row is the bottom one


def save_png(rgb: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an RGB array as PNG atomically (temporary file, then rename)."""
    from PIL import Image as PILImage

    from ..atomic import atomic_path

    p = Path(path)
    with atomic_path(p, ".png") as tmp:
        PILImage.fromarray(rgb, mode="RGB").save(tmp, format="PNG")
    return p


def world_to_pixel(renderer: "vtk.vtkRenderer", points: np.ndarray) -> np.ndarray:
    """World (LPS) points -> (col, row) pixel positions of the PNG (row 0 at the top), shape (n, 2).

    Uses the renderer's composite projection matrix directly, so it can be checked against
    the pixels VTK draws.
    """
    win = renderer.GetRenderWindow()
    w, h = win.GetSize()
    vp = renderer.GetViewport()
    aspect = renderer.GetTiledAspectRatio()
    cam = renderer.GetActiveCamera()
    m = cam.GetCompositeProjectionTransformMatrix(aspect, -1, 1)
    mat = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    p = np.atleast_2d(np.asarray(points, float))
    hom = np.c_[p, np.ones(len(p))] @ mat.T
    ndc = hom[:, :3] / hom[:, 3:4]
    x0, y0, x1, y1 = vp[0] * w, vp[1] * h, vp[2] * w, vp[3] * h
    col = x0 + (ndc[:, 0] + 1) / 2 * (x1 - x0) - 0.5
    row_from_bottom = y0 + (ndc[:, 1] + 1) / 2 * (y1 - y0) - 0.5
    return np.c_[col, (h - 1) - row_from_bottom]
