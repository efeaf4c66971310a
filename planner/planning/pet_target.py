"""PET-guided targeting: the most avid part of a lesion, and the SUV a biopsy core samples.

All arrays are on the CT grid ([k, j, i], the CT's affine); positions are LPS mm.

* SUVmax: the highest voxel SUV in the lesion.
* SUVpeak (PERCIST 1.0, Wahl et al., J Nucl Med 2009;50 Suppl 1:122S-150S): the highest mean
  SUV of a 1 ml sphere (radius 6.2 mm) whose centre lies in the lesion. The sphere is the set
  of voxels whose centres lie within 6.2 mm of the centre voxel's centre; its mean at every
  voxel is one correlation with that spherical kernel (scipy.ndimage). A sphere reaching a voxel
  without PET (NaN: outside the PET's field of view) is not a candidate.
* SUVmean: the mean SUV over the lesion's voxels that have a PET value.

The biopsy core (:func:`core_suv`) is taken as **centred on the target point**: the throw of
``core_length_mm`` runs along the needle from ``core_length_mm / 2`` short of the target to
``core_length_mm / 2`` beyond it, so the planned target is the middle of the sample. The needle
tip is placed ``core_length_mm / 2`` short of the target before the gun fires.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from ..anatomy.target import Target
from ..errors import InputError

#: PERCIST 1.0: a 1 cm^3 sphere, radius 6.2 mm.
PEAK_RADIUS_MM = 6.2
#: A lesion whose SUVmax is below this (g/ml) is not called avid: no sub-region is targeted.
#: Our choice, close to the liver background PERCIST uses as a threshold reference (about 1.5-2.5).
AVID_FLOOR_SUV = 1.5
#: The biopsy throw used when the preset names none (mm): the usual 20 mm of automated core guns.
DEFAULT_CORE_LENGTH_MM = 20.0
#: Sampling step along the core (mm).
CORE_STEP_MM = 0.5


def sphere_kernel(affine: np.ndarray, radius_mm: float = PEAK_RADIUS_MM) -> np.ndarray:
    """Boolean [k, j, i] kernel: the voxels whose centres lie within ``radius_mm`` of the middle
    voxel's centre, through the affine (exact for any orientation)."""
    a = np.asarray(affine, float)[:3, :3]
    sp = np.linalg.norm(a, axis=0)  # (i, j, k) spacing
    n = np.ceil(radius_mm / sp).astype(int)
    ii, jj, kk = np.meshgrid(*(np.arange(-m, m + 1) for m in n), indexing="ij")
    off = np.stack([ii, jj, kk], axis=-1) @ a.T
    inside = np.linalg.norm(off, axis=-1) <= radius_mm + 1e-9
    return np.ascontiguousarray(inside.transpose(2, 1, 0))


def _lps(affine: np.ndarray, kji: Sequence[int]) -> np.ndarray:
    a = np.asarray(affine, float)
    return a[:3, :3] @ np.asarray(kji, float)[::-1] + a[:3, 3]


@dataclass(frozen=True)
class LesionSuv:
    """SUV of a lesion on the CT grid (g/ml; units as the PET's: SUVbw or SUVlbm)."""

    suv_max: float
    suv_max_point: tuple[float, float, float]
    suv_peak: float
    suv_peak_centre: tuple[float, float, float]
    suv_mean: float
    volume_ml: float
    pet_coverage: float  # share of the lesion's voxels with a PET value
    sphere_ml: float  # volume of the voxels of the SUVpeak sphere on this grid

    def to_dict(self) -> dict[str, Any]:
        return {"suv_max": round(self.suv_max, 3), "suv_max_point": [round(x, 2) for x in self.suv_max_point],
                "suv_peak": round(self.suv_peak, 3), "suv_peak_centre": [round(x, 2) for x in self.suv_peak_centre],
                "suv_mean": round(self.suv_mean, 3), "volume_ml": round(self.volume_ml, 2),
                "pet_coverage": round(self.pet_coverage, 4), "peak_sphere_ml": round(self.sphere_ml, 3),
                "peak_definition": f"PERCIST 1.0: highest mean SUV of a sphere of radius {PEAK_RADIUS_MM} mm "
                                   "(1 ml) centred on a lesion voxel"}


def suv_peak(suv_on_ct: np.ndarray, lesion_mask: np.ndarray, affine: np.ndarray,
             radius_mm: float = PEAK_RADIUS_MM) -> tuple[float, tuple[float, float, float]]:
    """SUVpeak of a lesion and its sphere's centre (LPS mm), among the spheres wholly inside the PET.

    Raises InputError when no sphere centred in the lesion lies wholly inside the PET."""
    from scipy import ndimage

    kernel = sphere_kernel(affine, radius_mm)
    half = np.array(kernel.shape) // 2
    mask = np.asarray(lesion_mask, bool)
    idx = np.argwhere(mask)
    if not len(idx):
        raise InputError("the lesion is empty: no SUVpeak")
    lo = np.maximum(idx.min(axis=0) - half, 0)
    hi = np.minimum(idx.max(axis=0) + half + 1, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    v = np.asarray(suv_on_ct[sl], np.float64)
    finite = np.isfinite(v)
    w = kernel.astype(np.float64)
    total = ndimage.correlate(np.where(finite, v, 0.0), w, mode="constant", cval=0.0)
    count = ndimage.correlate(finite.astype(np.float64), w, mode="constant", cval=0.0)
    # a sphere cut by the array's edge counts as incomplete, like one reaching past the PET
    valid = mask[sl] & (np.abs(count - w.sum()) < 0.5) & _whole_sphere_inside(mask.shape, lo, v.shape, half)
    if not valid.any():
        raise InputError("no 1 ml sphere centred in the lesion lies wholly inside the PET's field of view: "
                         "no SUVpeak")
    mean = np.where(valid, total / np.maximum(count, 1.0), -np.inf)
    best = np.unravel_index(int(np.argmax(mean)), mean.shape)
    kji = np.array(best) + lo
    return float(mean[best]), tuple(float(x) for x in _lps(affine, kji))  # type: ignore[return-value]


def _whole_sphere_inside(shape: Sequence[int], lo: np.ndarray, crop_shape: Sequence[int], half: np.ndarray) -> np.ndarray:
    """True where a sphere centred at that crop voxel stays inside the full array."""
    axes = [(np.arange(n) + o >= h) & (np.arange(n) + o < s - h) for n, o, h, s in zip(crop_shape, lo, half, shape)]
    return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]


def lesion_suv(suv_on_ct: np.ndarray, lesion_mask: np.ndarray, affine: np.ndarray) -> LesionSuv:
    """SUVmax, SUVpeak (value and centre), SUVmean and volume of a lesion; InputError when the
    PET does not cover it at all."""
    mask = np.asarray(lesion_mask, bool)
    vox_ml = abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0
    n = int(mask.sum())
    if n == 0:
        raise InputError("the lesion is empty: no SUV")
    values = np.asarray(suv_on_ct, np.float64)[mask]
    covered = np.isfinite(values)
    if not covered.any():
        raise InputError("the lesion lies outside the PET's field of view (no PET value in it): no avid target")
    idx = np.argwhere(mask)[covered]
    vals = values[covered]
    top = int(np.argmax(vals))
    peak, centre = suv_peak(suv_on_ct, mask, affine)
    return LesionSuv(float(vals[top]), tuple(float(x) for x in _lps(affine, idx[top])),  # type: ignore[arg-type]
                     peak, centre, float(vals.mean()), n * vox_ml, float(covered.mean()),
                     float(sphere_kernel(affine).sum()) * vox_ml)


def avid_target(target: Target, suv_on_ct: np.ndarray, affine: np.ndarray, shape: Sequence[int] | None = None,
                floor: float = AVID_FLOOR_SUV, core_length_mm: float = DEFAULT_CORE_LENGTH_MM
                ) -> tuple[Target, LesionSuv, dict[str, Any]]:
    """The lesion's most avid sub-region as the target, labelled ``<lesion>_avid``, keeping the
    lesion's structure and size for the size and hit checks.

    The target is the centre of the hottest 1 ml sphere (as SUVpeak) among the centres at least
    half a core plus half a voxel diagonal inside the lesion (the distance to the nearest voxel
    centre outside it), so that a core centred on it stays in the lesion whatever the needle's
    direction. This is the PERCIST SUVpeak's own centre when that lies deep enough; else (a hot
    rim, a thin lesion) the hottest deep one. Where no centre is deep enough, the deepest
    voxels are used and the returned facts say so.

    Returns the target, the lesion's SUV (PERCIST, unrestricted) and the facts of the choice.
    Refused (InputError) for a target with no lesion (a bare point), a lesion without PET
    coverage, or one whose SUVmax is below ``floor`` (not avid)."""
    if target.structure is None:
        raise InputError(f"--avid targets the most avid part of a lesion: target {target.label!r} is a point, not a "
                         "lesion; give it with --target-label (and --structures) or --seed")
    mask = target.structure.full(tuple(shape) if shape is not None else suv_on_ct.shape)
    stats = lesion_suv(suv_on_ct, mask, affine)
    if stats.suv_max < floor:
        raise InputError(f"lesion {target.label}: SUVmax {stats.suv_max:.2f} is below {floor:g}: not avid, no avid "
                         "sub-region to target; plan without --avid")
    from scipy import ndimage

    sp = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    need = core_length_mm / 2 + float(np.linalg.norm(sp)) / 2
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=sp[::-1])[1:-1, 1:-1, 1:-1]
    deep = mask & (depth >= need)
    facts: dict[str, Any] = {"min_depth_mm": round(need, 2), "core_length_mm": float(core_length_mm)}
    if not deep.any():
        deep = mask & (depth >= depth.max() - 1e-6)
        facts["note"] = (f"no point of the lesion lies {need:.1f} mm inside it (its deepest {depth.max():.1f} mm): the "
                         "target is its hottest deepest point, and a core centred there leaves the lesion")
    try:
        value, centre = suv_peak(suv_on_ct, deep, affine)
    except InputError:
        value, centre = stats.suv_peak, stats.suv_peak_centre
        facts["note"] = "no sphere deep enough in the lesion lies wholly inside the PET: the SUVpeak centre is used"
    facts.update(sphere_suv=round(value, 3), point=[round(x, 2) for x in centre],
                 is_suv_peak_centre=bool(np.allclose(centre, stats.suv_peak_centre)))
    avid = replace(target, point=centre, label=f"{target.label}_avid", how=f"{target.how}+avid")
    return avid, stats, facts


def sample_line(volume: np.ndarray, affine: np.ndarray, points: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of ``volume`` ([k, j, i]) at LPS ``points`` (n, 3): trilinear (order 1) or nearest
    (order 0); NaN outside the grid."""
    from scipy import ndimage

    ijk = (np.linalg.inv(np.asarray(affine, float)) @ np.c_[points, np.ones(len(points))].T)[:3]
    kji = ijk[::-1]
    shape = np.array(volume.shape)[:, None]
    inside = np.all((kji >= -0.5) & (kji <= shape - 0.5), axis=0)
    out = np.full(len(points), np.nan)
    if inside.any():
        src = np.asarray(volume, np.float64 if order else volume.dtype)
        if order == 0:
            q = np.clip(np.rint(kji[:, inside]).astype(int), 0, shape - 1)
            out[inside] = src[tuple(q)]
        else:
            out[inside] = ndimage.map_coordinates(src, kji[:, inside], order=1, mode="nearest")
    return out


def core_points(entry: Sequence[float], target: Sequence[float], core_length_mm: float,
                step_mm: float = CORE_STEP_MM) -> np.ndarray:
    """Points (n, 3) LPS of the biopsy core: centred on the target along the needle's axis."""
    e, t = np.asarray(entry, float), np.asarray(target, float)
    u = (t - e) / max(np.linalg.norm(t - e), 1e-9)
    n = max(int(np.ceil(core_length_mm / step_mm)), 1) + 1
    s = np.linspace(-core_length_mm / 2, core_length_mm / 2, n)
    return t + s[:, None] * u


def core_suv(suv_on_ct: np.ndarray, affine: np.ndarray, entry: Sequence[float], target: Sequence[float],
             core_length_mm: float, lesion_mask: np.ndarray | None = None,
             lesion_suv_max: float | None = None) -> dict[str, Any]:
    """The SUV a biopsy core samples (centred on the target along the needle, see the module):
    mean, min, max (trilinear samples every 0.5 mm), the share of the lesion's SUVmax, the share
    of the core inside the lesion, and the core's ends (LPS)."""
    pts = core_points(entry, target, core_length_mm)
    vals = sample_line(suv_on_ct, affine, pts)
    finite = np.isfinite(vals)
    out: dict[str, Any] = {"core_length_mm": float(core_length_mm), "core_start": [round(float(x), 2) for x in pts[0]],
                           "core_end": [round(float(x), 2) for x in pts[-1]],
                           "definition": "centred on the target along the needle; trilinear samples every "
                                         f"{CORE_STEP_MM} mm", "pet_coverage": round(float(finite.mean()), 4)}
    if finite.any():
        v = vals[finite]
        out.update(suv_mean=round(float(v.mean()), 3), suv_min=round(float(v.min()), 3),
                   suv_max=round(float(v.max()), 3))
        if lesion_suv_max:
            out["share_of_lesion_suv_max"] = round(float(v.mean()) / lesion_suv_max, 4)
    if lesion_mask is not None:
        inside = sample_line(np.asarray(lesion_mask, np.uint8), affine, pts, order=0)
        out["in_lesion"] = round(float(np.mean(np.nan_to_num(inside) > 0)), 4)
    return out


__all__ = ["PEAK_RADIUS_MM", "AVID_FLOOR_SUV", "DEFAULT_CORE_LENGTH_MM", "LesionSuv", "sphere_kernel", "suv_peak",
           "lesion_suv", "avid_target", "core_points", "core_suv", "sample_line"]
