"""The body outline of an MR image: the one automatic step that is not CT-specific.

MR intensities have no fixed scale, so the structures at risk of an MR plan are imported
(see ``planner.anatomy.load_structures``); only the skin, which the planner needs for its
entry points, is found here: Otsu's threshold between background and tissue, holes filled
slice by slice (dark tendons, cortical bone and fat-suppressed fat inside the limb), and the
largest connected part kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...errors import InputError
from ...images import Image


def mr_body_mask(image: Image) -> np.ndarray:
    """The body ``[k, j, i]`` of an MR image (any orientation)."""
    from skimage.filters import threshold_otsu

    v = np.asarray(image.voxels, dtype=np.float32)
    sample = v[:: max(1, v.shape[0] // 16)].ravel()
    if sample.max() <= sample.min():
        raise InputError(f"{image.meta.source}: the image is uniform; no body can be found in it")
    smooth = ndimage.uniform_filter(v, size=3)
    body = smooth > threshold_otsu(sample) * 0.5  # half of Otsu's: keeps dark tissue inside the outline
    body = ndimage.binary_opening(body, iterations=1)
    labels, n = ndimage.label(body)
    if n == 0:
        raise InputError(f"{image.meta.source}: no body found in the MR image")
    sizes = ndimage.sum_labels(body, labels, index=np.arange(1, n + 1))
    body = labels == (1 + int(np.argmax(sizes)))
    # fill holes in every plane of all three axes (the image's slices may be sagittal or coronal)
    for axis in range(3):
        body = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(body, axis, 0)], axis=0)
        body = np.moveaxis(body, 0, axis)
    return body


def body_of(image: Image, structures=None) -> np.ndarray:
    """The body a plan's skin comes from: the structure set's own ``body`` when it has one,
    else the body outline of the scan by its modality (MR signal or CT density)."""
    if structures is not None and "body" in structures:
        return structures.mask("body")
    if (image.meta.modality or "").upper() == "MR":
        return mr_body_mask(image)
    from .pipeline import body_mask

    return body_mask(image)

