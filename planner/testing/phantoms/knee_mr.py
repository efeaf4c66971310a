"""The synthetic right knee (:func:`.knee.make_knee`) as a multi-echo spin-echo MR, sagittal.

Each tissue of the CT phantom gets a proton density and a T2 (3 T, values of the order the
literature gives: fat and fatty marrow T2 about 130 ms, muscle 35 ms, cartilage 40 ms, joint
fluid several hundred ms; cortex, tendons and menisci give almost no signal), and each echo is
``PD * exp(-TE / T2)`` plus Gaussian noise, then a smooth coil shading. The slices run along x
(the patient's left-right axis), ``step`` CT columns apart (3.2 mm by default), as a sagittal
knee MR is acquired. The labels are the CT phantom's, on the MR grid.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ...images import Image
from .knee import CORTEX, make_knee

#: (proton density, T2 ms) by material.
TISSUE = {
    "air": (0.0, 1.0),
    "fat": (1000.0, 130.0),
    "muscle": (750.0, 35.0),
    "skin": (600.0, 30.0),
    "fluid": (950.0, 500.0),
    "cartilage": (700.0, 40.0),
    "dark": (60.0, 10.0),  # cortex, tendons, menisci, ligaments
    "marrow": (950.0, 125.0),
    "blood": (150.0, 150.0),  # flow void, mostly
    "nerve": (650.0, 60.0),
}
#: Signal by material of single-image sequences (relative; ``make_knee_mr(contrast=...)``): a T1
#: (fat and marrow bright, fluid dark) and a fat-suppressed PD (fluid bright, fat and marrow dark).
CONTRASTS = {
    "t1": {"air": 0.0, "fat": 1000.0, "marrow": 950.0, "muscle": 420.0, "skin": 380.0, "fluid": 150.0,
           "cartilage": 480.0, "dark": 30.0, "blood": 80.0, "nerve": 420.0},
    "pd_fs": {"air": 0.0, "fat": 90.0, "marrow": 110.0, "muscle": 350.0, "skin": 300.0, "fluid": 1000.0,
              "cartilage": 520.0, "dark": 30.0, "blood": 100.0, "nerve": 450.0},
}
#: The echo times (ms) of the phantom's series (eight echoes, as a T2-mapping sequence).
ECHO_TIMES_MS = (7.0, 14.0, 21.0, 28.0, 35.0, 42.0, 49.0, 56.0)


@dataclasses.dataclass(frozen=True)
class KneeMR:
    """The phantom's echoes (one Image each, shared grid), their times and the truth labels."""

    echoes: list[Image]
    echo_times_ms: tuple[float, ...]
    labels: dict[str, np.ndarray]


@functools.lru_cache(maxsize=1)
def _knee(seed: int):
    """The CT phantom the MR is made from (kept: several contrasts of one knee share it; its
    images are read-only)."""
    return make_knee(seed)


def make_knee_mr(seed: int = 0, step: int = 4, echo_times_ms: tuple[float, ...] = ECHO_TIMES_MS,
                 noise: float = 0.02, shading: float = 0.3, contrast: str | None = None) -> KneeMR:
    """The multi-echo sagittal MR of the synthetic right knee (see the module's notes); with
    ``contrast`` ("t1", "pd_fs": :data:`CONTRASTS`) one image of that sequence instead (its
    ``echo_times_ms`` empty)."""
    ph = _knee(seed)
    ct = ph.ct
    hu = ct.voxels.astype(np.float32)
    label = np.zeros(ct.shape, np.int16)
    names = list(ph.labels)
    for n, name in enumerate(names, start=1):
        label[ph.labels[name]] = n
    by = {name: label == (names.index(name) + 1) for name in names}
    material = np.full(ct.shape, "air", dtype=object)
    material[hu > -500] = "fat"
    material[(hu > -60) & (hu < 40)] = "skin"
    material[(hu >= 40) & (hu < 70)] = "muscle"
    material[(hu >= 70) & (hu < 95)] = "dark"  # menisci and tendons
    material[(hu >= 95) & (hu < 140)] = "cartilage"
    bones = [n for n in names if n.split("_")[0] in ("femur", "tibia", "patella", "fibula")]
    for n in bones:
        material[by[n]] = "marrow"
    material[hu >= 0.8 * CORTEX] = "dark"
    for n in names:
        if "effusion" in n:
            material[by[n]] = "fluid"
        elif n.startswith(("popliteal_artery", "popliteal_vein")):
            material[by[n]] = "blood"
        elif "nerve" in n:
            material[by[n]] = "nerve"
        elif "tendon" in n:
            material[by[n]] = "dark"
        elif n.startswith("cartilage"):
            material[by[n]] = "cartilage"
    pd = np.zeros(ct.shape, np.float32)
    t2 = np.ones(ct.shape, np.float32)
    for m, (p, t) in TISSUE.items():
        sel = material == m
        pd[sel], t2[sel] = p, t
        if contrast is not None:
            pd[sel], t2[sel] = CONTRASTS[contrast][m], 1e9  # no decay: the sequence's own signal
    del material
    # sagittal: [k, j, i] (z, y, x) -> slices along x, every ``step``-th column
    cols = np.arange(step // 2, ct.shape[2], step)

    def sag(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(a[:, :, cols], (2, 1, 0)))

    pd_s, t2_s = sag(pd), sag(t2)
    aff = ct.affine.copy()
    i_axis = ct.affine[:3, 0] * step
    aff[:3, 3] = ct.affine[:3, 3] + ct.affine[:3, 0] * cols[0]
    aff[:3, 0] = ct.affine[:3, 2]  # new i runs along the old k (z)
    aff[:3, 2] = i_axis  # new k runs along the old i (x), ``step`` columns apart
    rng = np.random.Generator(np.random.PCG64(seed + 77))
    zz = np.linspace(-1.0, 1.0, pd_s.shape[2])[None, None, :]
    yy = np.linspace(-1.0, 1.0, pd_s.shape[1])[None, :, None]
    coil = 1.0 - shading * (0.6 * zz ** 2 + 0.4 * (yy - 0.3) ** 2)  # brighter near the coil's centre
    what = "multi-echo T2" if contrast is None else {"t1": "T1", "pd_fs": "PD fat-suppressed"}[contrast]
    meta = dataclasses.replace(ct.meta, modality="MR", series_description=f"Knee {what} sagittal (synthetic)")
    if contrast is not None:
        echo_times_ms = (0.0,)
    echoes = []
    for te in echo_times_ms:
        s = pd_s * np.exp(-te / t2_s) * coil
        s = np.abs(s + rng.normal(0.0, noise * 1000.0, s.shape))
        echoes.append(Image(np.rint(s).astype(np.int16), aff, meta))
    labels = {n: sag(by[n]) for n in names}
    return KneeMR(echoes, tuple(echo_times_ms) if contrast is None else (), labels)


__all__ = ["CONTRASTS", "ECHO_TIMES_MS", "TISSUE", "KneeMR", "make_knee_mr"]
