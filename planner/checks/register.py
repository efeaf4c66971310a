"""Rigid registration of a check scan (needle in) to the planning CT, around the planned path.

The check scan is the *fixed* image and the planning CT the *moving* one: ITK's transform maps
fixed-space points to moving-space points, so the optimised transform is directly the
``check_to_planning`` mapping, and the few slices of a check scan (often a 10 mm slab) are
sampled on their own grid while the planning CT, which covers the region in 3D, is interpolated.
That is also why a slab only a few slices thick registers: no sample ever falls off the slab.

Choices (see ``register_check`` for the thresholds):

* Metric: ITK's normalised correlation on HU (clipped to [-1000, 2000]). Both images are CT, so
  their intensities are related linearly (same HU scale; a different kV, dose or kernel changes
  contrast and noise, not the relation); correlation is invariant to a linear change, sharper at
  the optimum than Mattes mutual information for a mono-modal pair, has no histogram binning to
  tune on a few thousand samples, and its value (-1 perfect, 0 unrelated) is a quality figure
  that means the same for every scan, which a credibility threshold needs.
* Mask (on the check scan): voxels within ``ROI_RADIUS_MM`` of the planned segment entry-target,
  plus bone (> ``BONE_HU``) within ``BONE_RADIUS_MM`` of it (rigid landmarks weigh more where the
  ribs or the femur are in view), minus the needle's metal (> ``METAL_HU``) dilated by
  ``METAL_MARGIN_MM`` (the needle and its streaks are not in the planning CT), restricted to the
  body when a body mask of the planning CT is given (the table does not move with the patient).
* Initial transform: identity. A check scan is taken on the same table in the same frame of
  reference, so the patient has moved by a few mm and degrees at most; a centred start would
  align the centre of a 10 mm slab with the centre of the whole planning CT, which is wrong.
* Multi-resolution: levels at about 4 mm, 2 mm and the native grid (a level no coarser than the
  native voxels is left out). The check scan is averaged down in-plane, and along k only where
  it keeps at least 8 slices at that level (a 10 mm slab is never shrunk along k); where its
  voxels are already that coarse (3 mm CT) it is smoothed instead, in-plane only below 8 slices.
  The planning CT is smoothed to match. Samples: every voxel of the mask up to ``MAX_SAMPLES``,
  a seeded random subset beyond (reproducible). Optimiser: regular-step gradient descent on
  physical-shift scales, down to a 0.002 mm step on the native grid (a coarser stop left
  0.5-0.9 mm errors on 3 mm voxels).
* Credibility: the registration is run from the identity and restarted from two perturbed
  initial transforms; the run with the best correlation over every voxel of the mask is the
  result, and where the target's mapped position depends on the start, the optimum is not
  unique and the result is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..images import Image
from ..planning.verify import segment_distance

#: Radius (mm) of the region around the planned segment that drives the registration.
ROI_RADIUS_MM = 35.0
#: Bone within this distance (mm) of the segment is added to the region.
BONE_RADIUS_MM = 60.0
#: HU above which a voxel counts as bone in the check scan.
BONE_HU = 250.0
#: HU above which a voxel of the check scan is metal (the needle); it is masked out.
METAL_HU = 2000.0
#: Margin (mm) around the metal also masked out (partial volume, streaks along the needle).
METAL_MARGIN_MM = 3.0
#: HU range used for the metric (metal and streaks beyond it do not dominate the correlation).
HU_CLIP = (-1000.0, 2000.0)
#: Smallest region of interest (mm^3) in the check scan near the path.
MIN_ROI_MM3 = 4000.0
#: Least share of the region of interest that must map inside the planning CT.
MIN_OVERLAP = 0.90
#: Largest spread (mm) of the target's mapped position over restarts.
MAX_TARGET_SPREAD_MM = 1.0
#: Correlation the result must reach (-1 perfect, 0 unrelated).
MAX_CORRELATION = -0.5
#: Perturbations of the restarts: translation (mm) and rotation (degrees) along each axis.
RESTART_SHIFT_MM = 3.0
RESTART_ROTATION_DEG = 2.0
#: Most metric samples per iteration (random, seeded: the result is reproducible).
MAX_SAMPLES = 12000
#: Margin (mm) of planning CT kept around the region of interest (the capture range).
MOVING_MARGIN_MM = 30.0


@dataclass
class Registration:
    """A rigid registration of a check scan to the planning CT.

    ``check_to_planning`` maps check-scan LPS (mm, homogeneous) to planning-CT LPS.
    ``quality`` holds the figures: ``correlation`` (final metric, -1 perfect),
    ``correlation_initial`` (at the initial transform), ``overlap`` (share of the check scan's
    region of interest that maps inside the planning CT), ``target_spread_mm`` (largest distance
    between the target's mapped position in the result and in the restarts), ``restarts``,
    ``iterations`` (all levels and restarts), ``stop_condition`` (the optimiser's, last level),
    ``roi_voxels`` and ``roi_mm3``, ``metal_voxels``, ``target_shift_mm`` (how far the
    registration moved the target from the initial transform).
    """

    check_to_planning: np.ndarray
    quality: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def map_to_planning(self, lps_check: np.ndarray | Sequence[float]) -> np.ndarray:
        """Check-scan LPS points (..., 3) -> planning-CT LPS."""
        p = np.asarray(lps_check, float)
        return p @ self.check_to_planning[:3, :3].T + self.check_to_planning[:3, 3]

    def map_to_check(self, lps_planning: np.ndarray | Sequence[float]) -> np.ndarray:
        """Planning-CT LPS points (..., 3) -> check-scan LPS."""
        inv = np.linalg.inv(self.check_to_planning)
        p = np.asarray(lps_planning, float)
        return p @ inv[:3, :3].T + inv[:3, 3]


def to_sitk(image: Image, voxels: np.ndarray | None = None, dtype=np.float32):
    """The image as a SimpleITK image with exactly its geometry (origin, spacing, direction from
    the affine). ``voxels`` replaces the voxel array (same shape) when given."""
    import SimpleITK as sitk

    v = image.voxels if voxels is None else voxels
    out = sitk.GetImageFromArray(np.ascontiguousarray(v, dtype=dtype))
    a = np.asarray(image.affine, float)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    out.SetOrigin(tuple(float(x) for x in a[:3, 3]))
    out.SetSpacing(tuple(float(x) for x in spacing))
    out.SetDirection(tuple(float(x) for x in (a[:3, :3] / spacing).ravel()))
    return out


def from_sitk(img) -> Image:
    """A SimpleITK image as an ``Image`` (voxels [k, j, i], affine from its geometry)."""
    import SimpleITK as sitk

    spacing = np.array(img.GetSpacing(), float)
    direction = np.array(img.GetDirection(), float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = img.GetOrigin()
    return Image(sitk.GetArrayFromImage(img), affine)


def _point(value, what: str) -> np.ndarray:
    try:
        p = np.asarray(value, float).reshape(3)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be three numbers (LPS mm), got {value!r}") from None
    if not np.all(np.isfinite(p)):
        raise InputError(f"{what} must be finite, got {p.tolist()}")
    return p


def _crop(image: Image, lo_ijk: np.ndarray, hi_ijk: np.ndarray) -> Image | None:
    """The sub-image of voxels with indices in [lo, hi] (i, j, k, inclusive, clipped), or None."""
    size = np.array(image.size_ijk)
    lo = np.maximum(np.floor(lo_ijk).astype(int), 0)
    hi = np.minimum(np.ceil(hi_ijk).astype(int), size - 1)
    if np.any(hi < lo):
        return None
    v = image.voxels[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
    affine = np.array(image.affine, float)
    affine[:3, 3] = image.ijk_to_lps(lo.astype(float))
    return Image(v, affine)


def _box_ijk(image: Image, lo_lps: np.ndarray, hi_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index bounding box (i, j, k) of an LPS box in an image's grid."""
    corners = np.array([[x, y, z] for x in (lo_lps[0], hi_lps[0]) for y in (lo_lps[1], hi_lps[1]) for z in (lo_lps[2], hi_lps[2])])
    ijk = image.lps_to_ijk(corners)
    return ijk.min(axis=0), ijk.max(axis=0)


def _grid_lps(image: Image) -> np.ndarray:
    """LPS of every voxel centre, shape (nk, nj, ni, 3)."""
    nk, nj, ni = image.shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    return image.ijk_to_lps(ijk)


def _inside(image: Image, lps: np.ndarray) -> np.ndarray:
    """Whether LPS points (..., 3) lie inside an image's grid (within half a voxel)."""
    ijk = image.lps_to_ijk(lps)
    size = np.array(image.size_ijk)
    return np.all((ijk >= -0.5) & (ijk <= size - 0.5), axis=-1)


def _euler(matrix: np.ndarray, center: np.ndarray):
    import SimpleITK as sitk

    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(float(x) for x in center))
    t.SetMatrix(tuple(float(x) for x in matrix[:3, :3].ravel()))
    t.SetTranslation(tuple(float(x) for x in (matrix[:3, 3] - center + matrix[:3, :3] @ center)))
    return t


def _matrix(transform) -> np.ndarray:
    """4x4 matrix of an ITK rigid transform (maps fixed points to moving points)."""
    m = np.eye(4)
    A = np.array(transform.GetMatrix(), float).reshape(3, 3)
    c = np.array(transform.GetCenter(), float)
    t = np.array(transform.GetTranslation(), float)
    m[:3, :3] = A
    m[:3, 3] = t + c - A @ c
    return m


def _rotation(angles_deg: Sequence[float]) -> np.ndarray:
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Levels:
    """The prepared images of each resolution level: fixed (check) image and mask, moving (planning)."""

    def __init__(self, fixed_img: Image, fixed_mask: np.ndarray, moving_img: Image):
        import SimpleITK as sitk
        from scipy import ndimage

        fixed = to_sitk(fixed_img)
        mask = to_sitk(fixed_img, fixed_mask, np.uint8)
        moving = to_sitk(moving_img)
        sp = np.array(fixed_img.spacing, float)
        nk = fixed_img.shape[0]
        self.levels = []
        for target_mm in (4.0, 2.0, 0.0):
            f_in = max(1, int(round(target_mm / max(sp[0], sp[1])))) if target_mm else 1
            f_k = max(1, int(round(target_mm / sp[2]))) if target_mm else 1
            while f_k > 1 and nk // f_k < 8:
                f_k -= 1
            if not target_mm:
                fx, mk, mv = fixed, mask, moving
            elif target_mm <= float(np.max(sp)):
                continue  # the native grid is already this coarse
            else:
                # the coarser level: the check scan averaged (not along k in a thin slab), both
                # images smoothed to the level's resolution
                sigma = 0.5 * target_mm
                if (f_in, f_k) == (1, 1):
                    # smoothed in-plane, and along k only where the slab is thick enough
                    sig = [sigma / sp[2] if nk >= 8 else 0.0, sigma / sp[1], sigma / sp[0]]
                    fx = to_sitk(fixed_img, ndimage.gaussian_filter(np.asarray(fixed_img.voxels, np.float32), sig, mode="nearest"))
                else:
                    fx = sitk.BinShrink(fixed, [f_in, f_in, f_k])
                mk = mask
                if (f_in, f_k) != (1, 1):
                    mk = sitk.Cast(sitk.BinShrink(sitk.Cast(mask, sitk.sitkFloat32), [f_in, f_in, f_k]) > 0.5, sitk.sitkUInt8)
                mv = sitk.SmoothingRecursiveGaussian(moving, sigma)
            if sitk.GetArrayViewFromImage(mk).sum() < 50:
                continue
            n_mask = int(sitk.GetArrayViewFromImage(mk).sum())
            sampling = min(1.0, MAX_SAMPLES / n_mask)
            self.levels.append((fx, mk, mv, sampling, target_mm))
        self.fixed, self.mask, self.moving = fixed, mask, moving

    def run(self, initial: np.ndarray, center: np.ndarray, seed: int) -> tuple[np.ndarray, int, str]:
        import SimpleITK as sitk

        m = initial
        iterations = 0
        stop = ""
        for n, (fx, mk, mv, sampling, target_mm) in enumerate(self.levels):
            R = sitk.ImageRegistrationMethod()
            R.SetMetricAsCorrelation()
            R.SetMetricFixedMask(mk)
            # gradients on demand at the samples: a gradient image of the whole planning CT
            # crop would cost more than the whole optimisation
            R.SetMetricUseFixedImageGradientFilter(False)
            R.SetMetricUseMovingImageGradientFilter(False)
            if sampling < 1.0:
                R.SetMetricSamplingStrategy(R.RANDOM)
                R.SetMetricSamplingPercentage(sampling, seed + n)
            else:
                R.SetMetricSamplingStrategy(R.NONE)
            R.SetInterpolator(sitk.sitkLinear)
            step = 2.0 if target_mm >= 4 else (1.0 if target_mm else 0.5)
            R.SetOptimizerAsRegularStepGradientDescent(
                learningRate=step,
                minStep=0.01 if target_mm else 0.002,
                numberOfIterations=200,
                relaxationFactor=0.5 if target_mm else 0.7,
                gradientMagnitudeTolerance=1e-8,
            )
            R.SetOptimizerScalesFromPhysicalShift()
            tx = _euler(m, center)
            R.SetInitialTransform(tx, inPlace=True)
            R.SetShrinkFactorsPerLevel([1])
            R.SetSmoothingSigmasPerLevel([0])
            try:
                R.Execute(fx, mv)
            except RuntimeError as exc:
                raise InputError(f"the check scan could not be registered to the planning CT: {_first_line(exc)}") from None
            m = _matrix(tx)
            iterations += int(R.GetOptimizerIteration())
            stop = R.GetOptimizerStopConditionDescription()
        return m, iterations, stop

    def correlation(self, matrix: np.ndarray, center: np.ndarray) -> float:
        """Correlation at full resolution over every voxel of the mask."""
        import SimpleITK as sitk

        R = sitk.ImageRegistrationMethod()
        R.SetMetricAsCorrelation()
        R.SetMetricFixedMask(self.mask)
        R.SetMetricSamplingStrategy(R.NONE)
        R.SetMetricUseFixedImageGradientFilter(False)
        R.SetMetricUseMovingImageGradientFilter(False)
        R.SetInterpolator(sitk.sitkLinear)
        R.SetInitialTransform(_euler(matrix, center), inPlace=True)
        try:
            return float(R.MetricEvaluate(self.fixed, self.moving))
        except RuntimeError:
            return 0.0


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:160]


def register_check(
    planning: Image,
    check: Image,
    *,
    entry_lps: Sequence[float],
    target_lps: Sequence[float],
    body: np.ndarray | None = None,
) -> Registration:
    """Register a check scan to the planning CT rigidly, around the planned path.

    Parameters
    ----------
    planning : the planning CT (HU).
    check : the check scan (HU), the needle in; it may be a slab of a few slices (10 mm works).
    entry_lps, target_lps : the planned path (planning-CT LPS mm).
    body : optional boolean body mask of the planning CT (its voxel shape); when given, the
        region of interest keeps only the body (the table does not move with the patient).

    Returns a ``Registration``; ``check_to_planning`` maps check LPS to planning LPS.

    Raises ``InputError`` (one line, with the reason) when:

    * the check scan has less than ``MIN_ROI_MM3`` (4 cm^3, about a 10 mm slab 11 mm around the
      path) within ``ROI_RADIUS_MM`` of the planned path: it does not show the needle's region;
    * less than ``MIN_OVERLAP`` (90 %) of that region lies inside the planning CT at the start
      or after registration: the comparison would rest on anatomy the plan does not show;
    * the final correlation is weaker than ``MAX_CORRELATION`` (-0.5; the simulated check scans
      of the chest, abdomen and knee, with noise and a needle, reach -0.9 and better, and an
      unrelated scan or noise stays near 0), or is worse than at the start;
    * restarts from initial transforms perturbed by ``RESTART_SHIFT_MM`` (3 mm) and
      ``RESTART_ROTATION_DEG`` (2 degrees) map the target more than ``MAX_TARGET_SPREAD_MM``
      (1.0 mm) apart: the optimum is not unique to within the accuracy a deviation needs
      (the deviation a doctor acts on is a few mm; the goal is 1.5 mm at the target).
    """
    import SimpleITK as sitk  # noqa: F401  (a runtime dependency; fail here, not midway)

    entry = _point(entry_lps, "entry_lps")
    target = _point(target_lps, "target_lps")
    notes: list[str] = []
    if planning.voxels.dtype == bool or check.voxels.dtype == bool:
        raise InputError("the planning CT and the check scan must be CT images in HU, not masks")

    # --- region of interest in the check scan (identity start: same frame of reference) ---
    reach = max(ROI_RADIUS_MM, BONE_RADIUS_MM)
    lo, hi = np.minimum(entry, target) - reach, np.maximum(entry, target) + reach
    box = _crop(check, *_box_ijk(check, lo, hi))
    where = "the check scan"
    if check.meta.source:
        where = f"the check scan {check.meta.source}"
    if box is None:
        raise InputError(f"{where} does not cover the planned path (no voxel within {reach:.0f} mm of entry-target)")
    lps = _grid_lps(box)
    dist = segment_distance(lps, entry, target)
    hu = np.asarray(box.voxels, np.float32)
    sp = np.array(box.spacing, float)
    metal = hu > METAL_HU
    if metal.any():
        from scipy import ndimage

        near_metal = ndimage.distance_transform_edt(~metal, sampling=sp[::-1]) <= METAL_MARGIN_MM
    else:
        near_metal = metal
    roi = ((dist <= ROI_RADIUS_MM) | ((dist <= BONE_RADIUS_MM) & (hu > BONE_HU))) & ~near_metal
    if body is not None:
        b = np.asarray(body, bool)
        if b.shape != planning.shape:
            raise InputError(f"body mask shape {b.shape} differs from the planning CT's {planning.shape}")
        ijk = np.rint(planning.lps_to_ijk(lps)).astype(int)
        size = np.array(planning.size_ijk)
        ok = np.all((ijk >= 0) & (ijk < size), axis=-1)
        inside = np.zeros(roi.shape, bool)
        inside[ok] = b[ijk[ok][:, 2], ijk[ok][:, 1], ijk[ok][:, 0]]
        roi &= inside
    voxel_mm3 = float(np.prod(sp))
    roi_mm3 = float(roi.sum()) * voxel_mm3
    if roi_mm3 < MIN_ROI_MM3:
        raise InputError(
            f"{where} covers only {roi_mm3 / 1000:.1f} cm^3 within {ROI_RADIUS_MM:.0f} mm of the planned path"
            f" (at least {MIN_ROI_MM3 / 1000:.0f} cm^3 needed): it does not show the region of the needle"
        )
    overlap0 = float(_inside(planning, lps[roi]).mean())
    if overlap0 < MIN_OVERLAP:
        raise InputError(
            f"{where} does not overlap the planning CT near the planned path"
            f" ({overlap0:.0%} of its region of interest lies inside the planning CT, at least {MIN_OVERLAP:.0%} needed)"
        )

    # --- tight crops, clipped HU ----------------------------------------------------------
    kk, jj, ii = np.nonzero(roi)
    fixed_img = Image(np.clip(hu, *HU_CLIP)[kk.min() : kk.max() + 1, jj.min() : jj.max() + 1, ii.min() : ii.max() + 1], _shifted(box, ii.min(), jj.min(), kk.min()))
    fixed_mask = roi[kk.min() : kk.max() + 1, jj.min() : jj.max() + 1, ii.min() : ii.max() + 1]
    roi_lps = lps[roi]
    moving_box = _crop(planning, *_box_ijk(planning, roi_lps.min(axis=0) - MOVING_MARGIN_MM, roi_lps.max(axis=0) + MOVING_MARGIN_MM))
    assert moving_box is not None  # the overlap above guarantees it
    moving_img = moving_box.with_voxels(np.clip(np.asarray(moving_box.voxels, np.float32), *HU_CLIP))
    levels = _Levels(fixed_img, fixed_mask, moving_img)
    if not levels.levels:
        raise InputError(f"{where}: too few voxels near the planned path to register")

    # --- registration and restarts ----------------------------------------------------------
    initial = np.eye(4)
    corr0 = levels.correlation(initial, target)
    perturbations = [
        (RESTART_SHIFT_MM * np.array([1.0, -1.0, 1.0]) / np.sqrt(3), RESTART_ROTATION_DEG * np.array([1.0, -1.0, 1.0])),
        (RESTART_SHIFT_MM * np.array([-1.0, 1.0, -1.0]) / np.sqrt(3), RESTART_ROTATION_DEG * np.array([-1.0, 1.0, 1.0])),
    ]
    runs = []  # (correlation, matrix, stop condition)
    iterations = 0
    for n, start in enumerate([np.zeros(3), *[None] * len(perturbations)]):
        p = np.eye(4)
        if n:
            shift, angles = perturbations[n - 1]
            p[:3, :3] = _rotation(angles)
            p[:3, 3] = target - p[:3, :3] @ target + shift
        m, it, stop = levels.run(p @ initial, target, seed=1 + 10 * n)
        iterations += it
        runs.append((levels.correlation(m, target), m, stop))
    # the run with the best correlation over every voxel of the region is the result; the
    # others say how much the target's mapping depends on the start
    corr, result, stop = min(runs, key=lambda r: r[0])
    mapped = _apply(result, target)
    spread = max(float(np.linalg.norm(_apply(m, target) - mapped)) for _, m, _ in runs)
    overlap = float(_inside(planning, _apply(result, roi_lps)).mean())
    quality = {
        "metric": "correlation",
        "correlation": round(corr, 4),
        "correlation_initial": round(corr0, 4),
        "overlap": round(overlap, 4),
        "target_spread_mm": round(spread, 3),
        "restarts": len(perturbations),
        "iterations": iterations,
        "stop_condition": stop,
        "roi_voxels": int(roi.sum()),
        "roi_mm3": round(roi_mm3, 1),
        "metal_voxels": int(metal.sum()),
        "target_shift_mm": round(float(np.linalg.norm(_apply(result, target) - target)), 3),
        "levels": len(levels.levels),
    }
    rotation_deg = float(np.degrees(np.arccos(np.clip((np.trace(result[:3, :3]) - 1) / 2, -1, 1))))
    quality["rotation_deg"] = round(rotation_deg, 3)
    if not metal.any():
        notes.append(f"no metal (> {METAL_HU:.0f} HU) in the check scan near the path")
    if check.meta.frame_of_reference_uid and planning.meta.frame_of_reference_uid and (
        check.meta.frame_of_reference_uid != planning.meta.frame_of_reference_uid
    ):
        notes.append("the check scan's frame of reference differs from the planning CT's; registration started from identity")
    if overlap < MIN_OVERLAP:
        raise InputError(
            f"registration not credible: only {overlap:.0%} of the check scan's region of interest maps inside the planning CT"
            f" (at least {MIN_OVERLAP:.0%} needed)"
        )
    if corr > MAX_CORRELATION:
        raise InputError(
            f"registration not credible: correlation {corr:.2f} with the planning CT (at most {MAX_CORRELATION:.1f} needed,"
            " -1 is perfect): the check scan does not show the planned anatomy"
        )
    if corr > corr0 + 0.005:
        raise InputError(f"registration not credible: the correlation got worse ({corr0:.3f} at the start, {corr:.3f} after)")
    if spread > MAX_TARGET_SPREAD_MM:
        raise InputError(
            f"registration not credible: restarts from perturbed starts map the target {spread:.1f} mm apart"
            f" (at most {MAX_TARGET_SPREAD_MM:.1f} mm allowed)"
        )
    notes.append(
        f"check scan registered rigidly (correlation {corr:.3f}, target moved {quality['target_shift_mm']:.1f} mm,"
        f" rotation {rotation_deg:.1f} deg, restart spread {spread:.2f} mm)"
    )
    return Registration(check_to_planning=result, quality=quality, notes=notes)


def _shifted(image: Image, i0: int, j0: int, k0: int) -> np.ndarray:
    affine = np.array(image.affine, float)
    affine[:3, 3] = image.ijk_to_lps([float(i0), float(j0), float(k0)])
    return affine


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, float)
    return p @ matrix[:3, :3].T + matrix[:3, 3]
