"""Classical segmentation of a knee MR (no trained model): relative intensities, echo decay and
the geometry of the knee.

MR values have no fixed scale, so every threshold here is relative to the scan itself (Otsu's
threshold and percentiles inside the body), and the names come from where things lie, not from
their brightness alone. Works in the acquisition plane (the array's slices, whatever their
orientation) and links the slices in 3D. What each step finds, and what it misses:

* **body**: Otsu's threshold of the first echo, holes filled (see :mod:`.mr`). Misses nothing
  but coil and fold-over artefact outside the limb, which it drops.
* **femur, tibia, patella, fibula** (``<bone>_<side>``; the side from the knee's position,
  x > 0 the patient's left): the fatty marrow. With several echoes, voxels whose fitted T2 is
  above Otsu's threshold (fat and marrow decay slowly, muscle fast) or whose first echo is
  brighter than Otsu's threshold of the signal with the coil's shading divided out (flow
  artefacts spoil the T2 of some slices, not the signal); with one image, the latter alone
  (T1, PD or T2 without fat suppression), and where that finds no femur and tibia, the class
  darker than muscle but brighter than cortex (fat suppressed: PD/T2 FS, DESS).
  Thin dark lines (a valley filter: cortex, even faint, septa, ligaments), voids and fluid
  (T2 over 1.5 times the fat's) are walls. An opening by a 4 mm disk in each slice leaves the
  thick marrow and drops the thin fat bands; pieces mostly within 7 mm of the skin or on
  average shallower than 9 mm (in 3D: a slice cut along the skin) are subcutaneous fat. The
  pieces are linked between slices when they overlap well; the two largest are femur (upper)
  and tibia (lower), the patella the largest piece in front of the distal femur whose centre
  lies 8-70 mm above the joint line, the fibula a slim piece (under 40 mm across) lateral and
  not in front of the upper tibia, below the joint line; its shaft, whose marrow is thinner than
  that opening (a shaft 10-15 mm across, mostly cortex), is followed down from the head as dark
  cortex within 8 mm of a line along the tibia (it may take a dark vessel touching it). Each bone
  is closed (3 mm), filled, bridged across long-T2 gaps that a 6 mm closing spans (an artefact
  across the marrow), filled on a slice where both neighbours hold it, and grown by 1.5 mm of
  cortex. Misses: bone on
  fat-suppressed images where the marrow is as bright as muscle (the notes say no bone was
  found; on the fat-suppressed phantom the bones reach Dice 0.74-0.79 only), thin ends
  of a bone (the patella's poles), marrow oedema (may leave
  holes); joins a fat pad (Hoffa's, prefemoral) whose edge touches the marrow where neither a
  dark line nor the opening parts them.
* **effusion** (``knee_effusion_<side>``): joint fluid, long T2: with several echoes the voxels
  whose signal decays slowest (a T2 fitted over the echoes, above 1.5 times the median T2 of the
  marrow fat) and that are bright on the late echo; with one fat-suppressed image the brightest
  signal outside bone (top 1 %); with one image where fat is brightest (T1, PD/T2 without fat
  suppression) it is not sought, and the notes say why. Only within 15 mm of the bones, deeper
  than 2 mm, in front of the back of the femoral condyles (the popliteal vessels are long-T2 too
  and are left out by position), not inside a bone seen on both neighbouring slices (an
  artefact). The echo that
  shows it best against the marrow is the one shown and planned on. Misses: fluid thinner than a
  voxel (a collapsed recess: then ``--target-joint knee_recess_<side>`` places the recess by the
  bones) and a Baker's cyst; takes a flow or pulsation artefact outside bone for fluid. A needle aims at its suprapatellar pocket (:func:`effusion_target`).
* **quadriceps and patellar tendons**: dark tissue (under 0.35 times the soft tissue's median
  signal) in the band where each must lie: 9 mm around the line 50 mm up the femoral shaft
  from the patella's upper pole; 7 mm around the line from its lower pole to the tibial
  tuberosity, in front of it. Found where dark voxels fill that band; partly or not at all
  where the tendon is not dark or the slices miss the mid-line; may take the dark skin or
  retinaculum beside it.
* **popliteal neurovascular bundle** (``popliteal_neurovascular_bundle_<side>``, class vessel):
  PLACED BY ANATOMICAL POSITION, NOT SEEN (without contrast the vessels are not told from the
  muscle and fat around them), as the CT's limb bundles are (:mod:`planner.anatomy.limb`): a tube
  along the limb through the popliteal fossa, at the middle of the femoral condyles (the
  intercondylar notch), 24 mm wide, from 4 mm in front of to 40 mm behind the back of the bone
  within a quarter of the condyles' width of that middle, at each level (the femur's popliteal
  surface, the condyles, the back of the tibia: the tube follows that contour, bridged across the
  joint space), from 50 mm below to 60 mm above the joint line; bone and fluid left out. It stands for the popliteal artery (on
  the capsule), the vein behind it and the tibial nerve behind both, in the fat of the fossa; a
  bundle displaced by a mass or a Baker's cyst, or a high division of the artery, is not covered,
  nor is the common peroneal nerve (lateral, along the biceps tendon).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ...errors import InputError
from ...images import Image
from ..structures import StructureSet
from .mr import mr_body_mask

Progress = Callable[[int, int, str], None]

#: A T2 (fitted over the echoes) this many times the marrow fat's median counts as fluid.
FLUID_T2_FACTOR = 1.5
#: Fluid lies this close (mm) to a bone of the joint.
FLUID_NEAR_BONE_MM = 15.0
#: Depth (mm) under the skin taken as subcutaneous fat, never bone.
SUBCUT_MM = 3.0
#: Opening radius (mm) that cuts bright pieces joined through thin gaps (partial volume of cortex).
CUT_MM = 1.0
#: Cortex added around the marrow (mm): a closing and a thin dilation up to the dark rim.
CORTEX_MM = 1.5
#: In-plane opening radius (mm): marrow is thicker than this, subcutaneous and intermuscular fat thinner.
CORE_MM = 4.0
#: Pieces on neighbouring slices are one when their overlap is this share of the smaller and of the larger.
LINK_MIN, LINK_MAX = 0.7, 0.3
#: Share of the body taken as thin dark lines (cortex, septa) that bound the marrow.
DARK_LINE_TOP = 0.15
#: Mean depth under the skin (mm, in 3D) below which a bright piece is subcutaneous fat, not marrow.
BONE_MIN_DEPTH_MM = 9.0
#: Tendons: darker than this share of the median soft-tissue signal (first echo).
TENDON_DARK = 0.35
#: Rows and columns at the image's edges where the field of view cuts the limb.
EDGE_PX = 8
#: Smallest bone piece (ml).
BONE_MIN_ML = 1.0
#: Popliteal bundle (by position): a tube with an elliptical cross-section, its centre this far
#: behind the back of the bones at the middle of the joint, its half-width (x) and half-depth (y),
#: from this far below to this far above the joint line (mm). The artery lies on the capsule and the
#: bone's back (on the popliteus below the joint), the vein behind it, the tibial nerve up to 30-35 mm
#: behind the bone.
NVB_BEHIND_MM, NVB_RX_MM, NVB_RY_MM = 18.0, 12.0, 22.0
NVB_BELOW_MM, NVB_ABOVE_MM = 50.0, 60.0
#: Fibular shaft: followed this far (mm) below the head, in steps, within this radius of its line,
#: while its cross-section is at least this (mm2; a shaft is 10-15 mm across).
SHAFT_MAX_MM, SHAFT_STEP_MM, SHAFT_RADIUS_MM, SHAFT_MIN_MM2 = 150.0, 3.0, 8.0, 30.0


@dataclass
class Echoes:
    """The images of one MR series at the same positions: one per echo, with their echo times."""

    images: list[Image]
    numbers: list[int]
    echo_times_ms: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.images:
            raise InputError("no MR image given")
        if len(self.numbers) != len(self.images):
            raise InputError("one echo number per image")
        if not self.echo_times_ms:
            self.echo_times_ms = [None] * len(self.images)
        ref = self.images[0]
        for im in self.images[1:]:
            if im.shape != ref.shape or not np.allclose(im.affine, ref.affine, atol=1e-4):
                raise InputError("the echoes of the series do not share one grid")

    def by_number(self, n: int) -> Image:
        if n not in self.numbers:
            raise InputError(f"no echo {n}: the series holds echoes {self.numbers}")
        return self.images[self.numbers.index(n)]


def load_echoes(path, series_uid: str | None = None, progress: Progress | None = None) -> Echoes | None:
    """Every echo of the MR series at ``path`` (a DICOM folder or file), or None when the source
    holds one volume (NIfTI, NRRD, a single-echo series)."""
    from pathlib import Path

    from ...images.dicom import (
        load_series,
        scan_folder,
        select_series,
        series_sub_volumes,
    )
    from ...images.io import source_kind

    if source_kind(Path(path)) != "dicom":
        return None
    series = select_series(scan_folder(path), series_uid, "MR")
    sub = series_sub_volumes(series)
    if len(sub["echoes"]) < 2:
        return None
    images, numbers, tes = [], [], []
    for e in sub["echoes"]:
        images.append(load_series(series, str(path), echo=e["echo"]))
        numbers.append(int(e["echo"]))
        tes.append(e["echo_time_ms"])
    return Echoes(images, numbers, tes)


# --- helpers ---------------------------------------------------------------------------------------
def _closed_at_the_edges(body: np.ndarray) -> np.ndarray:
    """The body with the limb closed where the field of view cuts it: in each slice, within EDGE_PX
    of each image edge (scanners often leave the outermost rows blank), a line from the first to
    the last body pixel there closes the outline before its holes are filled, so a dark tendon or
    cortex running out of the image is not left out as background."""
    out = body.copy()
    e = EDGE_PX
    for k, b in enumerate(body):
        if not b.any():
            continue
        closed = b.copy()
        for t in range(2):  # rows, then columns (transposed)
            m = closed if t == 0 else closed.T
            n = m.shape[0]
            for band, line in ((slice(0, min(e, n)), min(e, n) - 1), (slice(max(n - e, 0), n), max(n - e, 0))):
                on = np.flatnonzero(m[band].any(axis=0))
                if len(on):  # a line across the band's deepest row, from its first to its last body pixel
                    m[line, on[0]:on[-1] + 1] = True
        out[k] = ndi.binary_fill_holes(closed)
    return out


def _disk(r_mm: float, sp: np.ndarray) -> np.ndarray:
    """A disk of radius ``r_mm`` in the slice plane (pixels ``sp[1]`` x ``sp[2]`` mm)."""
    rj = max(1, int(np.floor(r_mm / sp[1] + 0.5)))
    ri = max(1, int(np.floor(r_mm / sp[2] + 0.5)))
    y, x = np.mgrid[-rj:rj + 1, -ri:ri + 1]
    return (x * sp[2]) ** 2 + (y * sp[1]) ** 2 <= r_mm * r_mm + 0.25 * float(min(sp[1:])) ** 2


def _depth3(body: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Distance (mm) under the skin in 3D (a slice cut along the skin, at the side of the limb, is
    shallow though it is wide); the first and last slices are not skin (the slab ends there)."""
    pad = 4
    b = np.pad(body, ((pad, pad), (0, 0), (0, 0)), mode="edge")
    return ndi.distance_transform_edt(b, sampling=sp)[pad:-pad].astype(np.float32)


def _depth(body: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Distance (mm) under the skin, in the slice plane."""
    return np.stack([ndi.distance_transform_edt(s, sampling=sp[1:]) for s in body]).astype(np.float32)


def _per_slice(fn, mask: np.ndarray) -> np.ndarray:
    return np.stack([fn(s) for s in mask], axis=0)


def _lps(image: Image, kji: np.ndarray) -> np.ndarray:
    return image.ijk_to_lps(np.asarray(kji, float)[:, ::-1])


def _unshaded(v: np.ndarray, body: np.ndarray, sp: np.ndarray, sigma_mm: float = 25.0) -> np.ndarray:
    """``v`` divided by its smooth shading: the mean signal of the body over ``sigma_mm``
    (normalized convolution), scaled back to the body's median."""
    sig = sigma_mm / sp
    sig[0] = min(sig[0], 1.0)  # little across thick slices
    # the field is smooth: computed on every f-th pixel (still 8 pixels of sigma), then interpolated
    f = max(1, int(min(sig[1], sig[2]) // 8))
    small = np.s_[:, ::f, ::f]
    sig_small = np.array([sig[0], sig[1] / f, sig[2] / f])
    w = ndi.gaussian_filter(body[small].astype(np.float32), sig_small)
    m = ndi.gaussian_filter(np.where(body, v, 0.0)[small].astype(np.float32), sig_small)
    shade_small = m / np.maximum(w, 1e-3)
    if f > 1:
        jj, ii = np.meshgrid(np.arange(v.shape[1]) / f, np.arange(v.shape[2]) / f, indexing="ij")
        shade = np.stack([ndi.map_coordinates(sl, [jj, ii], order=1, mode="nearest") for sl in shade_small])
    else:
        shade = shade_small
    out = v / np.maximum(shade, 1e-3)
    med = float(np.median(v[body])) if body.any() else 1.0
    out = out * med / max(float(np.median(out[body])), 1e-6) if body.any() else out
    return np.where(body, out, 0.0).astype(np.float32)


def _dark_lines(v: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Thin dark lines in each slice (cortex, even where partial volume leaves it faint; septa;
    ligaments): a valley filter over 1-2 pixels, kept where its response is in the body's top
    DARK_LINE_TOP share."""
    from skimage.filters import sato

    out = np.zeros(v.shape, bool)
    resp = np.stack([sato(s, sigmas=(1.0, 2.0), black_ridges=True) for s in v])
    r = resp[body]
    if r.size:
        t = float(np.percentile(r, 100.0 * (1.0 - DARK_LINE_TOP)))
        out = (resp > t) & body
    return out


def _t2_map(stack: np.ndarray, tes: Sequence[float]) -> np.ndarray:
    """T2 (ms) from a log-linear fit over the echoes (the first left out when there are more than
    three: stimulated echoes make it too bright in multi-echo spin-echo trains)."""
    t = np.asarray(tes, float)
    s = stack
    if len(t) > 3:
        t, s = t[1:], s[1:]
    logs = np.log(np.maximum(s, 1.0))
    tm = t - t.mean()
    slope = np.tensordot(tm, logs - logs.mean(axis=0), axes=(0, 0)) / float((tm ** 2).sum())
    return np.clip(-1.0 / np.minimum(slope, -1e-4), 0.0, 2000.0).astype(np.float32)


@dataclass
class KneeMR:
    """What one knee MR segmentation found, with its notes."""

    structures: StructureSet
    notes: list[str]
    echo: int | None  # the echo chosen for display (fluid-sensitive), None for a single image
    side: str


def _side_of(image: Image, body: np.ndarray, side: str | None) -> str:
    if side in ("left", "right"):
        return side
    if side is not None:
        raise InputError(f"side {side!r}: left or right")
    idx = np.argwhere(body[:, ::8, ::8]) * np.array([1, 8, 8])
    x = float(np.median(_lps(image, idx)[:, 0]))
    return "left" if x > 0 else "right"


def segment_knee_mr(image: Image, echoes: Echoes | None = None, *, side: str | None = None,
                    progress: Progress | None = None) -> KneeMR:
    """Segment a knee MR (see the module's notes for what each structure finds and misses).

    Parameters
    ----------
    image : Image
        The MR (the echo loaded, or the single image of the series).
    echoes : Echoes, optional
        Every echo of a multi-echo series on ``image``'s grid: the fluid comes from their decay,
        the bones from the earliest.
    side : "left" or "right", optional
        The knee's side; by default from the body's position (x > 0 is the patient's left).
    """
    if not isinstance(image, Image):
        raise InputError(f"expected a planner Image, got {type(image).__name__}")
    if min(image.shape) < 3:
        raise InputError(f"the scan is too small to segment: grid {image.shape}")
    if echoes is not None and (echoes.images[0].shape != image.shape
                               or not np.allclose(echoes.images[0].affine, image.affine, atol=1e-4)):
        raise InputError("the echoes given are not on the image's grid")
    notes: list[str] = []
    total = 5

    def step(n: int, what: str) -> None:
        if progress is not None:
            progress(n, total, what)

    step(0, "body")
    multi = echoes is not None and len(echoes.images) >= 2
    if multi:
        order = np.argsort([t if t is not None else n for t, n in zip(echoes.echo_times_ms, echoes.numbers)])
        stack = np.stack([echoes.images[i].voxels.astype(np.float32) for i in order])
        numbers = [echoes.numbers[i] for i in order]
        tes = [echoes.echo_times_ms[i] if echoes.echo_times_ms[i] is not None else float(n)
               for i, n in zip(order, numbers)]
        early = stack[0]
    else:
        stack, numbers, tes = None, [], []
        early = image.voxels.astype(np.float32)
    sp = np.asarray(image.spacing[::-1], float)  # mm along k, j, i
    body_img = Image(early, image.affine, image.meta)
    body = _closed_at_the_edges(mr_body_mask(body_img))
    side = _side_of(image, body, side)
    sset = StructureSet.for_image(image)
    sset.add("body", body, source="automatic (MR)")

    step(1, "bones")
    from skimage.filters import threshold_otsu

    # the early image, its coil shading divided out (a smooth field, mean tissue signal over ~50 mm)
    unshaded = _unshaded(early, body, sp)
    smooth = _per_slice(lambda s: ndi.median_filter(s, size=5), unshaded)
    sig = _per_slice(lambda s: ndi.median_filter(s, size=3), unshaded)
    sv = sig[body]
    t_sig = float(threshold_otsu(sv[:: max(1, sv.size // 200000)]))
    # thin dark lines (cortex, septa, ligaments) and voids bound the marrow
    walls = _dark_lines(early, body) | (sig < 0.5 * t_sig)
    t2f = None
    fluid_like = None
    if multi:
        # fat and marrow decay slowly, muscle fast: the fitted T2 tells them apart whatever the coil's shading
        t2 = _t2_map(ndi.uniform_filter(stack, size=(1, 1, 3, 3)), tes)
        t2[~body] = 0.0
        t2f = _per_slice(lambda s: ndi.median_filter(s, size=5), t2)
        tv = t2f[body & ~walls]
        t_t2 = float(threshold_otsu(tv[:: max(1, tv.size // 200000)]))
        fat_like = float(np.median(t2f[body & ~walls & (t2f > t_t2) & (smooth > t_sig)]))
        # fluid (far longer T2 than fat) is not marrow
        fluid_like = (t2f > FLUID_T2_FACTOR * fat_like) & body
        # marrow: fat-like T2, or the first echo bright (flow artefacts spoil the T2 of a few slices, not the signal)
        cand = ((t2f > t_t2) | ((smooth > t_sig) & (t2f > 0.5 * t_t2))) & body & ~walls & ~fluid_like
        what = (f"T2 fitted over {len(numbers)} echoes above Otsu's threshold, {t_t2:.0f} ms, or the first echo's "
                "signal above its Otsu threshold, coil shading divided out")
    else:
        cand = (smooth > t_sig) & body & ~walls
        what = "signal above Otsu's threshold, coil shading divided out"
    feature = cand.astype(np.float32)
    t_fat = 0.5
    bones, bone_notes, geo = _bones(image, feature, body, t_fat, sp, side, what, fluid_like)
    fat_suppressed = False
    if not bones and not multi:
        # fat suppressed (PD/T2 FS, DESS with water excitation): the marrow is darker than muscle, though
        # not as dark as cortex, tendons and air; the same steps on that darker class
        lines = _dark_lines(early, body)
        dark_cand = (smooth < t_sig) & (sig > 0.15 * t_sig) & body & ~lines
        bones2, notes2, geo2 = _bones(image, dark_cand.astype(np.float32), body, 0.5, sp, side,
                                      "fat suppressed: signal below Otsu's threshold, darker than muscle and "
                                      "brighter than cortex, coil shading divided out", None)
        if bones2:
            bones, bone_notes, geo, fat_suppressed = bones2, notes2, geo2, True
            cand = dark_cand
    if bones.get("fibula") is not None and bones.get("tibia") is not None:
        # the fibular shaft: its marrow is narrower than the opening that found the head, so it is
        # followed down from the head as its dark cortex along the tibia (the marrow between the
        # two lines of cortex filled in; fat beside the shaft is as bright as marrow, so not taken)
        other = np.zeros(image.shape, bool)
        for n, m in bones.items():
            if n != "fibula":
                other |= m
        soft = sig[body & ~other]
        dark = (sig < TENDON_DARK * float(np.median(soft))) if soft.size else np.zeros(image.shape, bool)
        # cortex, or marrow deeper than the fat under the skin
        shaft_like = dark & body & ~other
        bones["fibula"], shaft_note = _fibular_shaft(image, bones["fibula"], bones["tibia"], shaft_like, sp)
        bone_notes.append(shaft_note)
    notes += bone_notes
    for name in ("femur", "tibia", "patella", "fibula"):
        m = bones.get(name)
        if m is not None and m.any():
            sset.add(f"{name}_{side}", m, source="automatic (MR)")
    bone_all = np.zeros(image.shape, bool)
    for m in bones.values():
        bone_all |= m

    step(2, "fluid")
    chosen_echo: int | None = None
    if multi and bone_all.any():
        marrow = bone_all & cand
        fat_t2 = float(np.median(t2f[marrow])) if marrow.any() else float(np.median(t2f[body]))
        late = ndi.uniform_filter(stack[-1], size=(1, 3, 3))
        late_fat = float(np.median(late[marrow])) if marrow.any() else float(np.percentile(late[body], 90))
        cand = (t2 > FLUID_T2_FACTOR * fat_t2) & (late > 0.6 * late_fat) & body & ~bone_all
        fluid = _fluid_in_joint(cand, image, bones, body, sp, geo)
        # the echo that shows fluid against fat and muscle best: largest (fluid - brightest other) / noise
        if fluid.any():
            best, best_c = None, -np.inf
            for n, vol in zip(numbers, stack):
                f = float(np.median(vol[fluid]))
                other = float(np.median(vol[marrow])) if marrow.any() else float(np.percentile(vol[body], 75))
                noise = float(np.std(vol[~body])) + 1e-3
                c = (f - other) / noise
                if c > best_c:
                    best, best_c = n, c
            chosen_echo = best
        else:
            chosen_echo = numbers[-1]
        notes.append(f"effusion: from the decay over {len(numbers)} echoes (TE {tes[0]:.1f}-{tes[-1]:.1f} ms): "
                     f"T2 above {FLUID_T2_FACTOR * fat_t2:.0f} ms ({FLUID_T2_FACTOR:g} x the marrow fat's "
                     f"{fat_t2:.0f} ms) and bright on the last echo, within {FLUID_NEAR_BONE_MM:g} mm of the bones; "
                     f"{fluid.sum() * sset.voxel_volume_ml():.1f} ml found; echo {chosen_echo} shows it best "
                     "(the echo chosen for display)")
    elif bone_all.any() and fat_suppressed:
        hi = float(np.percentile(smooth[body & ~bone_all], 99.0))
        fluid = _fluid_in_joint((smooth >= hi) & body & ~bone_all, image, bones, body, sp, geo)
        notes.append("effusion: one fat-suppressed image, so the fluid is its brightest signal outside bone (top 1 % "
                     "of the soft tissue): check it (vessels with slow flow and oedema are as bright)")
    elif bone_all.any():
        fluid = np.zeros(image.shape, bool)
        notes.append("effusion: not sought: on this one image fat and marrow are the brightest tissue (T1, or PD/T2 "
                     "without fat suppression), where joint fluid cannot be told from fat by its signal; give a "
                     "fluid-sensitive series (fat-suppressed PD/T2, DESS, or every echo of a multi-echo T2)")
    else:
        fluid = np.zeros(image.shape, bool)
    if fluid.any():
        sset.add(f"knee_effusion_{side}", fluid, source="automatic (MR)")
    elif not notes[-1].startswith("effusion: not sought"):
        notes.append("effusion: no joint fluid found (a collapsed recess): target the recess by position with "
                     f"--target-joint knee_recess_{side}")

    step(3, "tendons")
    if bone_all.any():
        soft = sig[body & ~bone_all & ~fluid]
        dark_t = TENDON_DARK * float(np.median(soft)) if soft.size else 0.0  # tendons give almost no signal
        for name, m, note in _tendons(image, sig, body, bones, dark_t, sp, geo, side):
            if m is not None and m.any():
                sset.add(name, m, source="automatic (MR)")
            notes.append(note)

    step(4, "popliteal bundle")
    if geo.get("joint") is not None:
        nvb, note = _popliteal(image, body, bones, bone_all, fluid, geo, side)
        if nvb.any():
            sset.add(f"popliteal_neurovascular_bundle_{side}", nvb, cls="vessel",
                     source="placed by anatomical position (not seen on the scan)")
        notes.append(note)
    step(5, "done")
    sset.notes.extend(notes)
    return KneeMR(sset, notes, chosen_echo, side)


# --- bones -----------------------------------------------------------------------------------------
def _bones(image: Image, smooth: np.ndarray, body: np.ndarray, t_fat: float, sp: np.ndarray, side: str, what: str,
           fluid_like: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], list[str], dict]:
    notes: list[str] = []
    vox_ml = float(np.prod(sp)) / 1000.0
    # depth under the skin, in the slice plane
    depth = _depth3(body, sp)
    bright = (smooth > t_fat) & body
    # marrow is thick: an opening by a disk of CORE_MM keeps it and drops the fat bands under the
    # skin and between the muscles, and cuts the bridges between a bone and a fat pad
    core_disk = _disk(CORE_MM, sp)
    opened = _per_slice(lambda s: ndi.binary_opening(s, core_disk), bright)
    lab2 = np.zeros(bright.shape, np.int32)
    count = 0
    for k in range(bright.shape[0]):
        lab, n = ndi.label(opened[k])
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel(), minlength=n + 1) * float(sp[1] * sp[2])
        shallow = np.bincount(lab.ravel(), weights=(depth[k] <= SUBCUT_MM + CORE_MM).ravel(), minlength=n + 1)
        keep = shallow * float(sp[1] * sp[2]) < 0.6 * np.maximum(sizes, 1e-6)  # mostly under the skin: subcutaneous fat
        mean_depth = np.bincount(lab.ravel(), weights=depth[k].ravel(), minlength=n + 1) / np.maximum(
            np.bincount(lab.ravel(), minlength=n + 1), 1)
        keep &= mean_depth > BONE_MIN_DEPTH_MM  # marrow lies deeper than the fat under the skin, on average
        keep[0] = False
        keep &= sizes >= 60.0  # mm2
        new = np.cumsum(keep) * keep
        lab2[k] = np.where(keep[lab], new[lab] + count, 0)
        count += int(keep.sum())
    lab3, n3 = _link_slices(lab2, count)
    geo: dict = {}
    if n3 == 0:
        notes.append("bones: no marrow brighter than muscle was found (fat-suppressed images?): no bone segmented; "
                     "import the bones with --structures")
        return {}, notes, geo
    sizes = np.bincount(lab3.ravel(), minlength=n3 + 1).astype(float)
    sizes[0] = 0
    idx = np.argwhere(lab3 > 0)
    pts = _lps(image, idx)
    lb = lab3[tuple(idx.T)]
    cnt = np.bincount(lb, minlength=n3 + 1).astype(float)
    cen = np.stack([np.bincount(lb, weights=pts[:, a], minlength=n3 + 1) / np.maximum(cnt, 1) for a in range(3)], 1)
    zmin = np.full(n3 + 1, np.inf)
    zmax = np.full(n3 + 1, -np.inf)
    np.minimum.at(zmin, lb, pts[:, 2])
    np.maximum.at(zmax, lb, pts[:, 2])
    big = [int(i) for i in np.argsort(sizes)[::-1] if sizes[i] * vox_ml >= BONE_MIN_ML]
    out: dict[str, np.ndarray] = {}
    if len(big) < 2:
        notes.append("bones: fewer than two large marrow regions: femur and tibia not told apart; no bone segmented")
        return {}, notes, geo
    a, b = big[0], big[1]
    fem, tib = (a, b) if cen[a, 2] > cen[b, 2] else (b, a)
    if zmin[fem] < cen[tib, 2] or zmax[tib] > cen[fem, 2]:
        notes.append("bones: the two largest marrow regions are not one above the other: not a knee in extension? "
                     "no bone segmented")
        return {}, notes, geo
    lateral = -1.0 if side == "right" else 1.0  # LPS x towards the knee's lateral side
    fem_pts = pts[lb == fem]
    tib_pts = pts[lb == tib]
    joint_z = 0.5 * (fem_pts[:, 2].min() + tib_pts[:, 2].max())
    fem_low = fem_pts[fem_pts[:, 2] < fem_pts[:, 2].min() + 30.0]
    fem_front = float(fem_low[:, 1].min())  # most anterior point of the distal femur (y)
    fem_back = float(fem_low[:, 1].max())
    fem_x = float(np.median(fem_low[:, 0]))
    geo.update(joint=joint_z, fem_front=fem_front, fem_back=fem_back, fem_x=fem_x,
               fem_width=float(np.ptp(fem_low[:, 0])), fem_bottom=float(fem_pts[:, 2].min()),
               tib_top=float(tib_pts[:, 2].max()))
    chosen = {"femur": fem, "tibia": tib}
    # patella: thick piece in front of the distal femur, its centre above the joint line
    best, best_score = None, 0.0
    for i in big[2:] + [int(i) for i in np.argsort(sizes)[::-1] if 0.3 <= sizes[i] * vox_ml < BONE_MIN_ML]:
        c = cen[i]
        if not (c[2] > joint_z + 8.0 and c[2] < joint_z + 70.0 and c[1] < fem_front + 10.0):
            continue
        if abs(c[0] - fem_x) > 0.5 * geo["fem_width"] + 10.0:
            continue
        score = sizes[i] * vox_ml
        if score > best_score:
            best, best_score = i, score
    if best is not None:
        chosen["patella"] = best
    else:
        notes.append("patella: not found (no thick bright piece in front of the distal femur)")
    # fibula: behind and lateral to the upper tibia, below the plateau
    tib_up = tib_pts[tib_pts[:, 2] > tib_pts[:, 2].max() - 40.0]
    tib_lat = float(np.percentile(tib_up[:, 0] * lateral, 90))
    best, best_score = None, 0.0
    for i in [int(i) for i in np.argsort(sizes)[::-1] if sizes[i] * vox_ml >= 0.3]:
        if i in chosen.values():
            continue
        c = cen[i]
        tib_mid = float(np.median(tib_up[:, 0])) * lateral
        if c[2] < joint_z - 5.0 and c[2] > joint_z - 90.0 and c[0] * lateral > tib_mid + 0.25 * (tib_lat - tib_mid) * 2 \
                and c[1] > float(np.median(tib_up[:, 1])) - 5.0 and c[1] < float(np.max(tib_up[:, 1])) + 10.0:
            sel = pts[lb == i]
            if np.ptp(sel[:, 1]) > 40.0 or np.ptp(sel[:, 0]) > 40.0:  # a fibula is a slim bone, its head under 40 mm
                continue
            score = sizes[i] * vox_ml
            if score > best_score:
                best, best_score = i, score
    if best is not None:
        chosen["fibula"] = best
    else:
        notes.append("fibula: not found (not in the field of view, or its head not told from the soft tissue)")
    lab3 = _attach_pieces(lab2, lab3, list(chosen.values()))
    # each bone: its marrow, closed and filled per slice, grown by the cortex up to the dark rim
    close = _disk(3.0, sp)
    bridge = _disk(6.0, sp)
    grow = _disk(CORTEX_MM, sp)
    taken = np.zeros(image.shape, bool)
    cand_all = (smooth > t_fat) & body
    inset = _disk(1.0, sp)
    for name, i in chosen.items():
        m = lab3 == i
        # the end slices of a bone, too thin for the opening: the marrow candidates inside the
        # bone's footprint on the next slice in
        ks = np.flatnonzero(m.any(axis=(1, 2)))
        for k_end, k_in in ((ks[0] - 1, ks[0]), (ks[-1] + 1, ks[-1])):
            if 0 <= k_end < m.shape[0]:
                foot = ndi.binary_erosion(m[k_in], inset)
                m[k_end] |= cand_all[k_end] & foot & ((lab3[k_end] == 0) | (lab3[k_end] == i))
        sl = ndi.find_objects(m.astype(np.uint8))[0]
        sl = tuple(slice(max(s.start - 8, 0), min(s.stop + 8, n)) if ax else s
                   for ax, (s, n) in enumerate(zip(sl, image.shape)))
        sub = m[sl]
        if fluid_like is not None:
            # long-T2 gaps across the marrow (flow and pulsation artefacts run straight through a bone) are
            # bone where a wider closing bridges them; fluid against the bone's outer surface is not
            fl = fluid_like[sl]
            sub = sub | np.stack([f & ndi.binary_closing(s, bridge, border_value=0) for s, f in zip(sub, fl)])
        sub = _per_slice(lambda s: ndi.binary_fill_holes(ndi.binary_closing(s, close, border_value=0)), sub)
        sub = _per_slice(lambda s: ndi.binary_dilation(s, grow), sub) & body[sl]
        # a slice that lost part of the bone (a flow artefact across it) where both its neighbours hold it
        sub[1:-1] |= sub[:-2] & sub[2:] & body[sl][1:-1]
        full = np.zeros(image.shape, bool)
        full[sl] = sub
        full &= ~taken
        taken |= full
        out[name] = full
    found = ", ".join(n for n in ("femur", "tibia", "patella", "fibula") if n in out)
    notes.append(f"bones ({found}): the fatty marrow ({what}) inside the body, thicker than {2 * CORE_MM:g} mm, "
                 f"in its dark cortex, {CORTEX_MM:g} mm of cortex added; named by position")
    return out, notes, geo


def _fibular_shaft(image: Image, fib: np.ndarray, tib: np.ndarray, shaft_like: np.ndarray,
                  sp: np.ndarray) -> tuple[np.ndarray, str]:
    """The fibula with its shaft: followed down from the head (the piece found from its thick
    marrow) in steps of SHAFT_STEP_MM along the tibial shaft's axis, within SHAFT_RADIUS_MM of a
    line re-centred at each step on what was taken, as the voxels of ``shaft_like`` (its dark
    cortex) joined to the part above, the marrow between the two lines of cortex closed in each
    slice; it stops where the cross-section taken falls under SHAFT_MIN_MM2 (the shaft left the
    field of view, or its cortex is not dark). A dark vessel or tendon touching the shaft within
    that radius is taken with it."""
    tp = _lps(image, np.argwhere(tib)[::5])
    down = np.array([0.0, 0.0, -1.0])
    top = tp[:, 2].max()
    shaft = tp[tp[:, 2] < top - 30.0]
    if len(shaft) > 100 and np.ptp(shaft[:, 2]) > 20.0:
        ax = np.linalg.svd(shaft - shaft.mean(axis=0), full_matrices=False)[2][0]
        ax = ax if ax[2] < 0 else -ax
        if ax[2] < -0.8:  # the tibia's own axis, when it is a shaft along the limb
            down = ax
    fp = _lps(image, np.argwhere(fib))
    t_f = fp @ down
    centre = fp[t_f >= t_f.max() - 6.0].mean(axis=0)  # the middle of the head's lowest part
    t0 = float(centre @ down)
    # work in a box around the head, reaching SHAFT_MAX_MM down
    reach = SHAFT_MAX_MM + SHAFT_RADIUS_MM
    corners = np.array([centre + a * SHAFT_RADIUS_MM * e + b * down for a in (-1, 1) for e in np.eye(3)
                        for b in (-10.0, reach)])
    ijk = image.lps_to_ijk(corners)[:, ::-1]
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 2, image.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    like = shaft_like[box]
    shape = like.shape
    pts = _lps(image, np.argwhere(np.ones(shape, bool)) + lo)  # every voxel of the box, in order
    t = (pts @ down - t0).reshape(shape)
    taken = fib[box].copy()
    conn = ndi.generate_binary_structure(3, 2)
    depth = -15.0  # from beside the head's lowest part (the neck's edges, off its line, taken with it)
    while depth < SHAFT_MAX_MM:
        band = np.abs(t - depth) < SHAFT_STEP_MM
        q = pts[band.ravel()] - centre
        tube = np.zeros(shape, bool)
        tube[band] = np.linalg.norm(q - np.outer(q @ down, down), axis=1) <= SHAFT_RADIUS_MM
        m = tube & like
        if not m.any():
            break
        lab, _ = ndi.label(m | taken, conn)
        new = np.isin(lab, np.unique(lab[taken & (lab > 0)])) & m & ~taken
        area = float(new.sum()) * float(np.prod(sp)) / SHAFT_STEP_MM  # the cross-section added
        if depth > 0.0 and area < SHAFT_MIN_MM2:
            break
        taken |= new
        centre = pts[(taken & tube).ravel()].mean(axis=0)  # the line re-centred on the bone in this step
        depth += SHAFT_STEP_MM
    if depth <= 0.0:
        return fib, "fibula: its head only (no shaft followed below it)"
    close = _disk(CORE_MM, sp)  # the marrow between the two lines of cortex, where it was not taken
    sub = _per_slice(lambda s: ndi.binary_fill_holes(ndi.binary_closing(s, close, border_value=0)), taken)
    out = fib.copy()
    out[box] |= sub & ~tib[box]
    return out, (f"fibula: its shaft followed {max(depth, 0.0):.0f} mm down from the head along the tibia, as its dark "
                 f"cortex within {SHAFT_RADIUS_MM:g} mm of its line with the marrow between (it stops where the shaft "
                 "leaves the field of view or its cortex is not dark)")


def _attach_pieces(lab2: np.ndarray, lab3: np.ndarray, bones: list[int], rounds: int = 3) -> np.ndarray:
    """A piece of a slice that was not linked (its shape changed too much from the next slice) joins
    a bone when at least half of it lies on that bone in a neighbouring slice (the ends of a bone,
    where it narrows fast)."""
    lab3 = lab3.copy()
    for _ in range(rounds):
        changed = False
        for k in range(lab2.shape[0]):
            free = (lab2[k] > 0) & ~np.isin(lab3[k], bones)
            if not free.any():
                continue
            ids = lab2[k][free]
            area = np.bincount(ids)
            for nb in (k - 1, k + 1):
                if nb < 0 or nb >= lab2.shape[0]:
                    continue
                for b in bones:
                    on = np.bincount(ids, weights=(lab3[nb][free] == b).astype(float), minlength=len(area))
                    for pid in np.flatnonzero((area > 0) & (on >= 0.5 * np.maximum(area, 1))):
                        sel = lab2[k] == pid
                        if not np.isin(lab3[k][sel], bones).any():
                            lab3[k][sel] = b
                            changed = True
        if not changed:
            break
    return lab3


def _link_slices(lab2: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """3D pieces from per-slice pieces: two pieces on neighbouring slices are one when they share
    at least half of the smaller one's area (a fat pad that only grazes a bone on the next slice
    stays apart)."""
    parent = np.arange(count + 1)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    area = np.bincount(lab2.ravel(), minlength=count + 1)
    for k in range(lab2.shape[0] - 1):
        a, b = lab2[k].ravel(), lab2[k + 1].ravel()
        both = (a > 0) & (b > 0)
        if not both.any():
            continue
        pairs, n = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
        for (x, y), c in zip(pairs.T, n):
            if c >= LINK_MIN * min(area[x], area[y]) and c >= LINK_MAX * max(area[x], area[y]):
                rx, ry = find(int(x)), find(int(y))
                if rx != ry:
                    parent[max(rx, ry)] = min(rx, ry)
    roots = np.array([find(i) for i in range(count + 1)])
    uniq, new = np.unique(roots, return_inverse=True)
    new = new.astype(np.int32)  # root 0 (background) stays 0: it is the smallest
    return new[lab2], int(len(uniq) - 1)


# --- fluid -----------------------------------------------------------------------------------------
def _fluid_in_joint(cand: np.ndarray, image: Image, bones: dict[str, np.ndarray], body: np.ndarray,
                    sp: np.ndarray, geo: dict) -> np.ndarray:
    """Fluid candidates kept where joint fluid lies: near the bones, not behind the condyles,
    not at the skin; specks dropped."""
    if not cand.any() or not bones:
        return np.zeros(cand.shape, bool)
    near = np.zeros(cand.shape, bool)
    allb = np.zeros(cand.shape, bool)
    for m in bones.values():
        allb |= m
    box = ndi.find_objects(allb.astype(np.uint8))[0]
    pad = np.ceil(FLUID_NEAR_BONE_MM / sp).astype(int)
    box = tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, cand.shape))
    d = ndi.distance_transform_edt(~allb[box], sampling=sp)
    near[box] = d <= FLUID_NEAR_BONE_MM
    fluid = cand & near & body
    fluid[1:-1] &= ~(allb[:-2] & allb[2:])  # long T2 inside a bone seen on both neighbouring slices: an artefact
    depth = _depth(body, sp)
    fluid &= depth > 2.0
    if geo.get("fem_back") is not None:
        idx = np.argwhere(fluid)
        if len(idx):
            y = _lps(image, idx)[:, 1]
            behind = y > geo["fem_back"] - 5.0
            fluid[tuple(idx[behind].T)] = False
    lab, n = ndi.label(fluid, ndi.generate_binary_structure(3, 2))
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1) * float(np.prod(sp))
        keep = sizes >= 5.0  # mm3
        keep[0] = False
        fluid = keep[lab]
    return fluid


# --- tendons ---------------------------------------------------------------------------------------
def _band_mask(image: Image, a: np.ndarray, b: np.ndarray, radius: float, box: np.ndarray) -> np.ndarray:
    """Voxels within ``radius`` mm of the segment a-b (LPS), evaluated in ``box`` (an array mask)."""
    out = np.zeros(image.shape, bool)
    idx = np.argwhere(box)
    if not len(idx):
        return out
    p = _lps(image, idx)
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-6), 0.0, 1.0)
    d = np.linalg.norm(p - (a + t[:, None] * ab), axis=1)
    sel = idx[d <= radius]
    out[tuple(sel.T)] = True
    return out


def _tendons(image: Image, smooth: np.ndarray, body: np.ndarray, bones: dict[str, np.ndarray], dark_t: float,
             sp: np.ndarray, geo: dict, side: str):
    depth = _depth(body, sp)
    dark = (smooth < dark_t) & body & (depth > 1.0)
    allb = np.zeros(image.shape, bool)
    for m in bones.values():
        allb |= m
    dark &= ~allb
    results = []
    pat = bones.get("patella")
    tib = bones.get("tibia")
    if pat is None or not pat.any():
        results.append((f"quadriceps_tendon_{side}", None,
                        "quadriceps and patellar tendons: not looked for (no patella found)"))
        return results
    pp = _lps(image, np.argwhere(pat))
    top = pp[pp[:, 2] >= pp[:, 2].max() - 3.0].mean(axis=0)
    bottom = pp[pp[:, 2] <= pp[:, 2].min() + 3.0].mean(axis=0)
    front = float(pp[:, 1].min())
    # quadriceps tendon: from the upper pole 50 mm up along the femoral shaft, in front of the femur
    up = np.array([0.0, 0.0, 1.0])
    fem = bones.get("femur")
    if fem is not None and fem.any():
        fp = _lps(image, np.argwhere(fem))
        shaft = fp[fp[:, 2] > top[2]]
        if len(shaft) > 50 and np.ptp(shaft[:, 2]) > 20.0:
            c = shaft - shaft.mean(axis=0)
            axis = np.linalg.svd(c, full_matrices=False)[2][0]
            axis = axis if axis[2] > 0 else -axis
            if axis[2] > 0.8:  # a knee in extension: the shaft within about 35 degrees of the body axis
                up = axis
    a = top + np.array([0.0, -3.0, 0.0])
    b = a + 50.0 * up
    band = _band_mask(image, a, b, 9.0, dark)
    quad = _largest(band, sp)
    note = ("quadriceps tendon: dark tissue within 9 mm of the line 50 mm up the femoral shaft from the patella's "
            f"upper pole ({quad.sum() * float(np.prod(sp)) / 1000:.1f} ml found)")
    results.append((f"quadriceps_tendon_{side}", quad, note))
    if tib is not None and tib.any():
        tp = _lps(image, np.argwhere(tib))
        level = tp[:, 2].max() - 25.0
        ring = tp[np.abs(tp[:, 2] - level) <= 3.0]
        if len(ring):
            tub = ring[np.argmin(ring[:, 1])]  # most anterior point of the tibia 25 mm below its top: tuberosity
            a = bottom + np.array([0.0, -2.0, 0.0])
            band = _band_mask(image, a, tub + np.array([0.0, -2.0, 0.0]), 7.0, dark)
            idx = np.argwhere(band)
            if len(idx):  # only in front of the line patella apex - tuberosity (not Hoffa's fat or cartilage)
                p = _lps(image, idx)
                f = np.interp(p[:, 2], [tub[2], bottom[2]], [tub[1], min(bottom[1], front + 8.0)])
                band[tuple(idx[p[:, 1] > f + 3.0].T)] = False
            patt = _largest(band, sp)
            note = ("patellar tendon: dark tissue within 7 mm of the line from the patella's lower pole to the tibial "
                    f"tuberosity ({patt.sum() * float(np.prod(sp)) / 1000:.1f} ml found)")
            results.append((f"patellar_tendon_{side}", patt, note))
    return results


def _largest(mask: np.ndarray, sp: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask, ndi.generate_binary_structure(3, 2))
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


# --- popliteal bundle ------------------------------------------------------------------------------
def _popliteal(image: Image, body: np.ndarray, bones: dict[str, np.ndarray], bone_all: np.ndarray,
               fluid: np.ndarray, geo: dict, side: str) -> tuple[np.ndarray, str]:
    """Where the popliteal artery, vein and tibial nerve run, by position: a tube along the limb in
    the popliteal fossa, behind the middle of the joint (see the module's notes); soft tissue only."""
    fem = bones.get("femur")
    near = bone_all if fem is None else fem | bones.get("tibia", np.zeros_like(fem))
    pts = _lps(image, np.argwhere(near)[::3])
    fp = _lps(image, np.argwhere(fem)[::3]) if fem is not None else pts
    jz = float(geo["joint"])
    cond = fp[fp[:, 2] < fp[:, 2].min() + 25.0]  # the condyles
    x_lo, x_hi = np.percentile(cond[:, 0], [2.0, 98.0])
    x_mid = 0.5 * float(x_lo + x_hi)
    half = max(10.0, 0.25 * float(x_hi - x_lo))  # the inner halves of the condyles, and the notch between
    band = pts[np.abs(pts[:, 0] - x_mid) <= half]
    levels = np.arange(jz - NVB_BELOW_MM, jz + NVB_ABOVE_MM + 0.1, 2.0)
    back = np.full(len(levels), np.nan)
    for n, z in enumerate(levels):
        at = band[np.abs(band[:, 2] - z) <= 2.0]
        if len(at) >= 5:
            back[n] = float(np.percentile(at[:, 1], 98.0))  # the back of the bone there (y grows posterior)
    ok = np.isfinite(back)
    if not ok.any():
        return np.zeros(image.shape, bool), ("popliteal neurovascular bundle: not placed (no bone behind the middle "
                                             "of the joint to place it by)")
    back = np.interp(levels, levels[ok], back[ok])  # across the joint space, and beyond the bones held
    back = ndi.maximum_filter1d(back, size=5)  # over 10 mm: the tube stays behind a bump of the back
    centre_y = back + NVB_BEHIND_MM
    # every voxel of the body in the tube's reach, tested against the tube at its own level
    cand = body & ~bone_all & ~fluid
    idx = np.argwhere(cand)
    p = _lps(image, idx)
    z_ok = (p[:, 2] >= levels[0]) & (p[:, 2] <= levels[-1]) & (np.abs(p[:, 0] - x_mid) <= NVB_RX_MM)
    idx, p = idx[z_ok], p[z_ok]
    cy = np.interp(p[:, 2], levels, centre_y)
    inside = ((p[:, 0] - x_mid) / NVB_RX_MM) ** 4 + ((p[:, 1] - cy) / NVB_RY_MM) ** 4 <= 1.0  # a rounded box
    m = np.zeros(image.shape, bool)
    m[tuple(idx[inside].T)] = True
    note = (f"popliteal_neurovascular_bundle_{side}: PLACED BY ANATOMICAL POSITION, NOT SEEN: a tube along the limb "
            f"behind the middle of the joint (x {x_mid:.0f} mm, between the femoral condyles), "
            f"{2 * NVB_RX_MM:g} mm wide and {2 * NVB_RY_MM:g} mm deep, from {NVB_BEHIND_MM - NVB_RY_MM:g} to "
            f"{NVB_BEHIND_MM + NVB_RY_MM:g} mm behind the back of the femur and the tibia there (the condyles, the "
            f"intercondylar notch, the tibial plateau), following it from {NVB_ABOVE_MM:g} mm above to "
            f"{NVB_BELOW_MM:g} mm below the joint line: the popliteal fossa where the popliteal artery (deepest), vein "
            "and tibial nerve run; class vessel, avoided like a segmented one; import the real vessels and nerves "
            "to replace it")
    return m, note


def segment_mr_scan(path, series_uid: str | None = None, echo: int | None = None,
                    progress: Progress | None = None, image: Image | None = None) -> tuple[Image, KneeMR]:
    """Load the MR at ``path`` with every echo of its series and segment it (a knee).

    Returns the image to show and plan on (the echo asked for with ``echo``, else the one that
    shows the fluid best, else the one loaded) and the segmentation; the notes say which echo
    was used and why. ``image``: the MR already loaded from ``path`` (not loaded again).
    """
    from ...images import load_image

    if image is None:
        image = load_image(path, series_uid, "MR", progress, echo=echo)
    echoes = load_echoes(path, series_uid)
    result = segment_knee_mr(image, echoes, progress=progress)
    shown = image
    if echoes is not None:
        if echo is not None:
            result.echo = int(echo)
            how = "as asked with --echo"
        elif result.echo is not None:
            shown = echoes.by_number(result.echo)
            how = "the echo showing the fluid best against the marrow fat"
        else:
            result.echo = echoes.numbers[0]
            how = "the first"
        te = echoes.echo_times_ms[echoes.numbers.index(result.echo)]
        result.notes.append(f"MR: the segmentation used all {len(echoes.numbers)} echoes of the series (bones from the "
                            f"T2 fitted over them, fluid from its decay); echo {result.echo}"
                            + (f" (TE {te:.1f} ms)" if te is not None else "") + f" is shown and planned on: {how}")
    else:
        result.notes.append("MR: one image per slice position (no echoes to combine): it is segmented and planned on")
    result.structures.notes[:] = list(result.notes)
    return shown, result


def effusion_target(image: Image, sset: StructureSet, name: str):
    """The target of a knee injection or synovial biopsy in the effusion ``name``: the deepest point
    of its largest pocket in the suprapatellar recess (above the patella's upper pole less 5 mm, in
    front of the middle of the femoral condyles), else in the front of the joint above the tibial
    plateau (patellofemoral), else anywhere; in that pocket, the point farthest from tendon and bone
    (up to 6 mm, then the deepest in the fluid), so that a thin pocket against the quadriceps
    tendon (a collapsed recess) still gets a tip that keeps clear of it. Fluid between the condyles
    and the plateau, or behind them, is no target for a needle from the front or the side."""
    from ..target import _structure_target

    if name not in sset:
        from ..target import target_from_structure

        return target_from_structure(image, sset, name)
    eff = sset.mask(name)
    side = name.rsplit("_", 1)[-1]
    lab, n = ndi.label(eff, ndi.generate_binary_structure(3, 2))
    if n == 0:
        from ..target import target_from_structure

        return target_from_structure(image, sset, name)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    ok = np.ones(n + 1, bool)
    ok[0] = False
    why = "its largest pocket"
    fem, tib = f"femur_{side}", f"tibia_{side}"
    if fem in sset and tib in sset:
        fp = _lps(image, np.argwhere(sset.mask(fem))[::7])
        tp = _lps(image, np.argwhere(sset.mask(tib))[::7])
        low = fp[fp[:, 2] < fp[:, 2].min() + 30.0]
        mid_y = 0.5 * (low[:, 1].min() + low[:, 1].max())
        plateau = float(np.percentile(tp[:, 2], 99))
        idx = np.argwhere(eff)
        p = _lps(image, idx)
        li = lab[tuple(idx.T)]
        cnt = np.bincount(li, minlength=n + 1).astype(float)
        cy = np.bincount(li, weights=p[:, 1], minlength=n + 1) / np.maximum(cnt, 1)
        cz = np.bincount(li, weights=p[:, 2], minlength=n + 1) / np.maximum(cnt, 1)
        front = ok & (cy < mid_y) & (cz > plateau + 5.0)
        pat = f"patella_{side}"
        supra = front.copy()
        if pat in sset:
            top = float(_lps(image, np.argwhere(sset.mask(pat))[::3])[:, 2].max())
            supra &= cz > top - 5.0
        else:
            supra[:] = False
        if supra.any():
            ok = supra
            why = "its largest pocket above the patella, in front of the femur (suprapatellar recess)"
        elif front.any():
            ok = front
            why = "its largest pocket in the front of the joint (patellofemoral recess)"
    best = int(np.argmax(np.where(ok, sizes, 0)))
    pocket = lab == best
    part = StructureSet.for_image(image)
    s = part.add(name, pocket, cls="fluid", source=sset[name].source)
    t = _structure_target(image, part, s, "structure")
    import dataclasses

    # a thin pocket against a tendon or a bone (a collapsed recess): its point farthest from them,
    # the deeper in the fluid the better, so that a needle's tip there keeps clear of both
    walls = [x for x in sset if x.cls.value in ("tendon", "bone")]
    if walls:
        sp = np.asarray(image.spacing[::-1], float)
        box = ndi.find_objects(pocket.astype(np.uint8))[0]
        pad = np.ceil(15.0 / sp).astype(int)
        box = tuple(slice(max(b.start - q, 0), min(b.stop + q, n)) for b, q, n in zip(box, pad, pocket.shape))
        wall = np.zeros(pocket[box].shape, bool)
        for x in walls:
            wall |= sset.mask(x.name, box)
        d_wall = ndi.distance_transform_edt(~wall, sampling=sp)
        d_in = ndi.distance_transform_edt(pocket[box], sampling=sp)
        score = np.where(pocket[box], np.minimum(d_wall, 6.0) + 0.1 * d_in, -np.inf)
        kji = np.array(np.unravel_index(int(np.argmax(score)), score.shape)) + [b.start for b in box]
        point = image.ijk_to_lps(kji[::-1][None].astype(float))[0]
        how = (f"effusion: the point of {why} farthest from tendon and bone "
               f"({float(d_wall[tuple(kji - [b.start for b in box])]):.1f} mm)")
        return dataclasses.replace(t, point=tuple(float(v) for v in point), how=how)
    return dataclasses.replace(t, how=f"effusion: the deepest point of {why}")
