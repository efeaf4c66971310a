"""The PET images of a plan (planner.report.pet_images): the uptake lands where the geometry puts it.

A synthetic CT and SUV volume on an axial grid whose k axis runs feet-ward (as a feet-first
series) and whose voxels are anisotropic; a hot sphere of known LPS centre on the needle path.
The screen positions are computed here from the definitions of each image (the fused plane holds
the needle, screen right toward the patient's left; the MIP is coronal, head up, the patient's
right on the viewer's left), not by the drawing code.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from planner.images import Image
from planner.report.pet_images import IMAGE_PX, fusion_image, mip_image


def _grid():
    shape = (60, 100, 90)  # k, j, i
    aff = np.eye(4)
    aff[:3, :3] = np.diag([1.2, 1.2, -2.5])  # k runs toward the feet
    aff[:3, 3] = [-50.0, -60.0, 80.0]
    return shape, aff


def _scene(centre):
    shape, aff = _grid()
    kk, jj, ii = np.indices(shape)
    lps = np.stack([ii, jj, kk, np.ones_like(ii)], -1) @ aff.T
    d = np.linalg.norm(lps[..., :3] - centre, axis=-1)
    ct = Image(np.where(d < 60, 40, -1000).astype(np.int16), aff)
    suv = np.where(d < 8.0, 9.0, 0.8).astype(np.float32)
    return ct, Image(suv, aff)


def test_fused_uptake_lies_on_the_target_in_the_needles_plane():
    hot = np.array([2.0, -1.0, 10.0])
    u = np.array([1.0, 0.3, 0.4])
    u /= np.linalg.norm(u)
    entry = hot - 50.0 * u
    ct, suv = _scene(hot)
    png = fusion_image(ct, suv.voxels, entry, hot, (hot - 10 * u, hot + 10 * u), top_suv=18.0)
    rgb = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"), int)
    assert rgb.shape == (IMAGE_PX, IMAGE_PX, 3)
    # the plane: centred on the path's middle, 2 * max(60, 25 + 40) mm across; the target lies
    # 25 mm from the centre along the needle, and the needle points toward the patient's left
    # (+x), so it runs to the right of the screen
    px = 2 * max(60.0, 25.0 + 40.0) / IMAGE_PX
    tx, ty = IMAGE_PX / 2 + 25.0 / px, IMAGE_PX / 2
    near = rgb[int(ty) - 20:int(ty) - 14, int(tx) - 3:int(tx) + 3].reshape(-1, 3)  # 6 mm off the path, in the sphere
    assert np.all(near[:, 0] > 150) and np.all(near[:, 0] - near[:, 2] > 80), near  # SUV 9 of 18: orange-red
    far = rgb[int(ty) - 100:int(ty) - 94, int(tx) - 3:int(tx) + 3].reshape(-1, 3)  # 37 mm off: no uptake
    assert np.all(np.abs(far[:, 0] - far[:, 2]) < 6), far  # grey CT


def test_mip_shows_the_hot_spot_where_the_coronal_projection_puts_it():
    hot = np.array([20.0, 0.0, 0.0])
    ct, suv = _scene(hot)
    # the target marked 40 mm below the sphere, so that its marks do not cover the sphere
    png = mip_image(suv, hot - [0.0, 0.0, 40.0], None, top_suv=18.0)  # the sphere (SUV 9) mid-grey, apart from black label boxes
    rgb = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"), int)
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    dark = grey & (rgb[..., 0] > 100) & (rgb[..., 0] < 150)  # SUV 9 of 18; labels are black and white
    dark[:30, :] = False  # the title
    dark[:, IMAGE_PX:] = False  # the colour bar
    from scipy import ndimage

    lab, n = ndimage.label(dark)
    biggest = 1 + int(np.argmax(ndimage.sum(dark, lab, range(1, n + 1))))  # the sphere, not antialiased text
    rows, cols = np.nonzero(lab == biggest)
    assert len(rows) > 20
    # coronal, head up, the patient's right (low x) on the left: x spans [-50, -50 + 90 * 1.2],
    # z spans [80 - 59 * 2.5, 80] (voxel centres); the larger extent (z: 150 mm) fills 512 px
    scale = IMAGE_PX / max(60 * 2.5, 90 * 1.2)
    want_col = (hot[0] - (-50.0 - 0.6)) * scale
    want_row = ((80.0 + 1.25) - hot[2]) * scale
    assert abs(np.median(cols) - want_col) < 3 and abs(np.median(rows) - want_row) < 3, \
        (np.median(cols), want_col, np.median(rows), want_row)
