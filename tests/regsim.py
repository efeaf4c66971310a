"""Simulated check scans for the registration tests and benchmark.

A check scan is made from the planning CT: the anatomy is moved by a random rigid transform
(SimpleITK resampling), the result is cropped to a slab of slices around a path from a skin
point to a point 50-100 mm inside the body, a crude needle (a bright 3000 HU line, 1 mm
radius) is drawn along the moved path, and noise is added. The true ``check_to_planning``
mapping is known, so the registration error at the target can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from planner.images import Image


@dataclass
class SimCase:
    check: Image
    entry: np.ndarray  # planning LPS
    target: np.ndarray  # planning LPS
    true_check_to_planning: np.ndarray  # 4x4
    slab_mm: float
    motion_mm: float  # displacement of the target by the motion
    motion_deg: float


def rotation(angles_deg) -> np.ndarray:
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def apply(m: np.ndarray, p) -> np.ndarray:
    p = np.asarray(p, float)
    return p @ m[:3, :3].T + m[:3, 3]


def body_slices(ct: Image) -> np.ndarray:
    """A crude body mask: per slice, the largest region above -500 HU, holes filled."""
    mask = np.zeros(ct.shape, bool)
    for k in range(ct.shape[0]):
        s = ct.voxels[k] > -500
        lab, n = ndimage.label(s)
        if n == 0:
            continue
        sizes = ndimage.sum(s, lab, range(1, n + 1))
        mask[k] = ndimage.binary_fill_holes(lab == (1 + int(np.argmax(sizes))))
    return mask


def random_path(ct: Image, body: np.ndarray, rng: np.random.Generator, margin_mm: float = 25.0):
    """A path from a skin point to a point 50-100 mm inside the body, nearly axial."""
    sp = ct.spacing
    nk = ct.shape[0]
    kmargin = int(np.ceil(margin_mm / sp[2]))
    for _ in range(500):
        k = int(rng.integers(kmargin, nk - kmargin))
        sl = body[k]
        if sl.sum() < 500:
            continue
        jj, ii = np.nonzero(sl)
        centre = np.array([ii.mean(), jj.mean()])
        ang = rng.uniform(0, 2 * np.pi)
        d = np.array([np.cos(ang), np.sin(ang)])
        # walk outward from the centre to the skin
        t = 0.0
        last_in = None
        while True:
            p = centre + t * d
            i, j = int(round(p[0])), int(round(p[1]))
            if not (0 <= i < sl.shape[1] and 0 <= j < sl.shape[0]):
                break
            if sl[j, i]:
                last_in = (p[0], p[1])
            t += 0.5
        if last_in is None:
            continue
        entry_ijk = np.array([last_in[0], last_in[1], k], float)
        entry = ct.ijk_to_lps(entry_ijk)
        centre_lps = ct.ijk_to_lps(np.array([centre[0], centre[1], k], float))
        inward = centre_lps - entry
        inward[2] = 0.0
        if np.linalg.norm(inward) < 60:
            continue
        inward /= np.linalg.norm(inward)
        depth = rng.uniform(50, 100)
        dz = rng.uniform(-0.15, 0.15)  # a few degrees craniocaudal
        direction = inward + np.array([0, 0, dz])
        direction /= np.linalg.norm(direction)
        target = entry + depth * direction
        tijk = np.rint(ct.lps_to_ijk(target)).astype(int)
        if not (0 <= tijk[2] < nk and 0 <= tijk[1] < ct.shape[1] and 0 <= tijk[0] < ct.shape[2]):
            continue
        if not body[tijk[2], tijk[1], tijk[0]]:
            continue
        return entry, target
    raise RuntimeError("no path found")


def to_sitk(image: Image, voxels=None):
    from planner.checks.register import to_sitk as conv

    return conv(image, voxels)


def simulate(
    ct: Image,
    body: np.ndarray,
    rng: np.random.Generator,
    *,
    max_shift_mm: float = 5.0,
    max_deg: float = 4.0,
    slab_mm: tuple[float, float] = (10.0, 40.0),
    noise_hu: float = 20.0,
    needle: bool = True,
    path=None,
) -> SimCase:
    import SimpleITK as sitk

    entry, target = path if path is not None else random_path(ct, body, rng)
    # the motion: rotate about a point of the body near the target slice, then shift
    angles = rng.uniform(-1, 1, 3)
    angles *= rng.uniform(0.5, 1.0) * max_deg / np.max(np.abs(angles))
    shift = rng.normal(size=3)
    shift *= rng.uniform(0.3, 1.0) * max_shift_mm / np.linalg.norm(shift)
    k = int(np.clip(round(ct.lps_to_ijk(target)[2]), 0, ct.shape[0] - 1))
    jj, ii = np.nonzero(body[k])
    pivot = ct.ijk_to_lps(np.array([ii.mean(), jj.mean(), k], float))
    R = rotation(angles)
    true = np.eye(4)  # check LPS -> planning LPS
    true[:3, :3] = R
    true[:3, 3] = pivot - R @ pivot + shift
    inv = np.linalg.inv(true)
    entry_c, target_c = apply(inv, entry), apply(inv, target)

    # slab of slices around the moved path
    thick = rng.uniform(*slab_mm)
    zc = 0.5 * (entry_c[2] + target_c[2])
    sp = ct.spacing
    kc = ct.lps_to_ijk(np.array([entry_c[0], entry_c[1], zc]))[2]
    nslab = max(1, int(round(thick / sp[2])))
    k0 = int(np.clip(round(kc - nslab / 2), 0, ct.shape[0] - nslab))
    affine = np.array(ct.affine, float)
    affine[:3, 3] = ct.ijk_to_lps(np.array([0.0, 0.0, k0]))
    ref = Image(np.zeros((nslab,) + ct.shape[1:], np.int16), affine)

    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(true[:3, :3].ravel()))
    tx.SetTranslation(tuple(true[:3, 3]))
    moved = sitk.Resample(to_sitk(ct), to_sitk(ref), tx, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    v = sitk.GetArrayFromImage(moved)
    if needle:
        lps = _grid(ref)
        d = _seg_dist(lps, entry_c - 30 * (target_c - entry_c) / np.linalg.norm(target_c - entry_c), target_c)
        v[d <= 1.0] = 3000.0
    v = v + rng.normal(0, noise_hu, v.shape)
    check = Image(np.clip(np.rint(v), -1024, 3071).astype(np.int16), affine)
    disp = float(np.linalg.norm(apply(inv, target) - target))
    return SimCase(check, entry, target, true, nslab * sp[2], disp, float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))))


def _grid(image: Image) -> np.ndarray:
    nk, nj, ni = image.shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    return image.ijk_to_lps(np.stack([i, j, k], -1).astype(float))


def _seg_dist(p, a, b):
    ab = b - a
    t = np.clip(((p - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def target_error(reg_matrix: np.ndarray, case: SimCase) -> float:
    """Distance (mm) between the true and the estimated planning position of the target as
    seen in the check scan."""
    in_check = apply(np.linalg.inv(case.true_check_to_planning), case.target)
    return float(np.linalg.norm(apply(reg_matrix, in_check) - case.target))
