"""The public steps (CT grid in, CT-grid masks ``[k, j, i]`` out) and ``segment_ct``.

Each step can run alone: give it the CT and, where it needs them, the masks of earlier steps
(computed for you when left out). ``segment_ct`` runs them all once, sharing the working
grids, and returns a ``StructureSet``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
from scipy import ndimage as ndi

from ...errors import InputError
from ...images import Image
from ..structures import StructureSet
from . import body as _body
from . import fissures as _fis
from . import bones as _bones
from . import lungs as _lungs
from . import lungtexture as _tex
from . import mediastinum as _med
from .grid import WorkGrid, bbox, dilate

#: Working grid voxel sizes (mm): body and table on a coarse grid, the rest on a finer one.
BODY_GRID_MM = 3.0
WORK_GRID_MM = 2.0

#: What ``segment_ct(parts=...)`` accepts, and the structures each part adds.
PARTS: dict[str, tuple[str, ...]] = {
    "body": ("body",),
    "airways": ("trachea", "airways"),
    "lungs": ("lung_left", "lung_right"),
    "bones": ("bone", "vertebrae", "ribs_left", "ribs_right", "sternum", "scapula_left", "scapula_right",
              "clavicula_left", "clavicula_right", "hip_left", "hip_right"),
    "lung_vessels": ("lung_vessels",),
    "heart": ("heart", "aorta", "mediastinal_vessels"),
    "emphysema": ("emphysema",),
    "fissures": ("lung_fissures",),
    "lobes": _fis.LOBES_LEFT + _fis.LOBES_RIGHT,
}

#: Classes of the names that ``structures.tsv`` may not list yet.
_CLASSES = {"bone": "bone", "ribs_left": "bone", "ribs_right": "bone",
            "mediastinal_vessels": "vessel",
            **{n: "lobe" for n in _fis.LOBES_LEFT + _fis.LOBES_RIGHT}}

Progress = Callable[[int, int, str], None]


def _check_ct(ct: Image) -> None:
    if not isinstance(ct, Image):
        raise InputError(f"expected a planner Image, got {type(ct).__name__}")
    if min(ct.shape) < 3:
        raise InputError(f"the scan is too small to segment: grid {ct.shape} (need at least 3 voxels per axis)")
    if ct.meta.modality and ct.meta.modality.upper() not in ("CT", "OT"):
        raise InputError(f"automatic segmentation needs a CT (HU values); this scan's modality is {ct.meta.modality}")


def _check_mask(mask: np.ndarray, ct: Image, what: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != ct.shape:
        raise InputError(f"{what} mask shape {m.shape} does not match the CT grid {ct.shape}")
    return m.astype(bool, copy=False)


class _Run:
    """Shared state of one segmentation: the CT, its working grids and what is computed."""

    def __init__(self, ct: Image, fissure_points: dict[str, np.ndarray] | None = None):
        _check_ct(ct)
        self.ct = ct
        self.fissure_points = fissure_points  # the user's points on the fissures, LPS, by kind
        self.hu_full = ct.voxels
        self.g = WorkGrid(ct, WORK_GRID_MM)
        self.hu = self.g.down(ct.voxels)
        self.full: dict[str, np.ndarray] = {}
        self.work: dict[str, np.ndarray] = {}
        self.fits: dict[str, _fis.LungFissures] | None = None
        self.lobes_: dict[str, np.ndarray] | None = None
        self.lobe_sides: set[str] = set()  # lungs split into lobes credibly
        self.point_fits_: dict[str, _fis.LungFissures] | None = None  # lungs with the user's fissure points
        self.notes: list[str] = []  # what a user must know about this segmentation

    # --- helpers ------------------------------------------------------------------------
    def _work_of(self, name: str) -> np.ndarray:
        if name not in self.work:
            self.work[name] = self.g.down(self.full[name], "majority")
        return self.work[name]

    def give(self, name: str, mask: np.ndarray) -> None:
        self.full[name] = _check_mask(mask, self.ct, name)

    def release(self, keep: Iterable[str]) -> None:
        """Forget the full-grid masks later steps do not need (a chest CT mask is 37 MB)."""
        for name in [n for n in self.full if n not in keep]:
            del self.full[name]

    # --- steps --------------------------------------------------------------------------
    def body(self) -> np.ndarray:
        if "body" not in self.full:
            g3 = WorkGrid(self.ct, BODY_GRID_MM)
            coarse = _body.body_work(g3.down(self.hu_full), g3)
            self.full["body"] = _body.refine_to_ct(coarse, g3, self.hu_full > _body.BODY_HU)
        return self.full["body"]

    def airways(self) -> tuple[np.ndarray, np.ndarray]:
        if "trachea" not in self.full:
            bw = self._work_of_body()
            aw = _lungs.airway_work(self.hu, bw, self.g)
            self.work["airway_all"] = aw
            tr, br = _lungs.split_trachea(aw, self.g)
            lumen = self.hu_full < _lungs.AIR_LUMEN_FULL_HU
            self.full["trachea"] = _body.refine_to_ct(tr, self.g, lumen)
            self.full["airways"] = _body.refine_to_ct(br, self.g, lumen) & ~self.full["trachea"]
        return self.full["trachea"], self.full["airways"]

    def _work_of_body(self) -> np.ndarray:
        self.body()
        return self._work_of("body")

    def lungs(self) -> tuple[np.ndarray, np.ndarray]:
        if "lung_left" not in self.full:
            bw = self._work_of_body()
            if "airway_all" not in self.work:
                tr, br = self.airways()
                self.work["airway_all"] = self.g.down(tr | br, "any")
            left, right = _lungs.lungs_work(self.hu, bw, self.work["airway_all"], self.g)
            self.work["lung_left"], self.work["lung_right"] = left, right
            inside = self.hu_full < _lungs.LUNG_EDGE_FULL_HU
            lf = _body.refine_to_ct(left, self.g, inside)
            rf = _body.refine_to_ct(right, self.g, inside) & ~lf
            self.full["lung_left"], self.full["lung_right"] = lf, rf
        return self.full["lung_left"], self.full["lung_right"]

    def lung_union_work(self) -> np.ndarray:
        self.lungs()
        return self._work_of("lung_left") | self._work_of("lung_right")

    def lung_union_full(self) -> np.ndarray:
        lf, rf = self.lungs()
        return lf | rf

    def bone_parts(self) -> Iterator[tuple[str, np.ndarray]]:
        """``("bone", union)`` then each named part, one CT-grid mask at a time."""
        bw = self._work_of_body()
        bone_w = self.bone_work()
        bone = _body.refine_to_ct(bone_w, self.g, self.hu_full > _bones.BONE_EDGE_FULL_HU) & self.body()
        yield "bone", bone
        parts = _bones.split_bone(bone_w, bw, self.lung_union_work(), self.g)
        labels = np.zeros(self.g.shape, np.uint8)
        names = list(parts)
        for i, name in enumerate(names, start=1):
            labels[parts[name] & (labels == 0)] = i
        # Carry labels one voxel outwards so that the refined rim of each bone keeps its name.
        grown = ndi.grey_dilation(labels, size=(3, 3, 3))
        labels = np.where(labels > 0, labels, grown)
        box = bbox(bone)
        full_labels = self.g.up(labels)[box] if box is not None else None
        for i, name in enumerate(names, start=1):
            m = np.zeros(self.ct.shape, bool)
            if box is not None and parts[name].any():
                m[box] = bone[box] & (full_labels == i)
            yield name, m

    def bone_work(self) -> np.ndarray:
        if "bone" not in self.work:
            self.work["bone"] = _bones.bone_work(self.hu, self._work_of_body(), self.g)
        return self.work["bone"]

    def heart_aorta(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Heart, descending aorta and the other great vessels between the lungs (found by
        shape; empty, with a note, where not found)."""
        if "heart" not in self.full:
            bone_w = self.bone_work()
            spine = _bones.spine_centre(bone_w, self._work_of_body(), self.g)
            self.lungs()
            if "airway_all" not in self.work:
                tr, br = self.airways()
                self.work["airway_all"] = self.g.down(tr | br, "any")
            soft_w = _med.soft_tissue(self.hu, bone_w, self.g.spacing_spl)
            heart, note_h = _med.heart_work(self.hu, self._work_of("lung_left"), self._work_of("lung_right"),
                                            bone_w, self.work["airway_all"], spine, self.g, soft=soft_w)
            aorta, note_a = _med.aorta_work(self.hu, bone_w, spine, self.g, heart, self._work_of_body(), soft=soft_w)
            heart &= ~aorta
            others = _med.mediastinal_vessels_work(
                self.hu, self._work_of("lung_left"), self._work_of("lung_right"), bone_w, self.work["airway_all"],
                spine, self.g, exclude=dilate(heart | aorta, 1.0, self.g.spacing_spl), soft=soft_w)
            # one refinement for the three: their union's edge from the full-resolution scan,
            # each voxel named by the working-grid label nearest it
            lab = np.zeros(self.g.shape, np.uint8)
            lab[others] = 3
            lab[aorta] = 2
            lab[heart] = 1
            union = _body.refine_to_ct(lab > 0, self.g, self.hu_full > _med.SOFT_LOW_HU)
            grown = ndi.grey_dilation(lab, size=(3, 3, 3))
            full_lab = self.g.up(np.where(lab > 0, lab, grown))
            for code, name in ((1, "heart"), (2, "aorta"), (3, "mediastinal_vessels")):
                self.full[name] = union & (full_lab == code)
            self.notes.extend(n for n in (note_h, note_a) if n)
            if aorta.any():
                self.notes.append("aorta: only the descending aorta is found as such; the other great vessels "
                                  "are found only where fat outlines them (mediastinal_vessels, which may include "
                                  "the oesophagus), the hilar vessels only in part: import them to plan near the hila")
        return self.full["heart"], self.full["aorta"], self.full["mediastinal_vessels"]

    def vessels(self) -> np.ndarray:
        if "lung_vessels" not in self.full:
            lw = self.lung_union_work()
            v = _tex.vessel_work(self.hu, lw, self.g.spacing_spl, self.g.voxel_ml)
            v = ndi.binary_dilation(v, ndi.generate_binary_structure(3, 1))
            lung = self.lung_union_full()
            masses_full = self.g.up(_tex.round_masses(self.hu, lw, self.g.spacing_spl))
            self.full["lung_vessels"] = (
                self.g.up(v) & lung & (self.hu_full > _tex.VESSEL_EDGE_FULL_HU) & ~masses_full
            )
        return self.full["lung_vessels"]

    def emphysema(self) -> np.ndarray:
        if "emphysema" not in self.full:
            self.full["emphysema"] = _tex.emphysema_full(self.hu_full, self.lung_union_full())
        return self.full["emphysema"]

    def _axes(self) -> np.ndarray:
        d = self.ct.direction
        return np.stack([d[:, 2], d[:, 1], d[:, 0]], axis=1)  # array axes k, j, i in LPS

    def fissure_fits(self) -> dict[str, _fis.LungFissures]:
        """Fitted fissure surfaces of each lung (credible ones only)."""
        if self.fits is None:
            lf, rf = self.lungs()
            sp = self.ct.spacing[::-1]
            given = self.point_fits()
            self.fits = {side: given[side] if side in given else
                         _fis.fit_lung_agreed(self.hu_full, m, sp, self.ct.affine, self._axes(), side)
                         for side, m in (("left", lf), ("right", rf))}
            for side in given:
                self.notes.extend(self.fits[side].notes)
        return self.fits

    def point_fits(self) -> dict[str, _fis.LungFissures]:
        """The fissures through the user's points, by lung (none without points). Needs only the
        lungs: run right after them, a bad point fails before the long steps."""
        if self.point_fits_ is None:
            lf, rf = self.lungs()
            given = _points_by_side(self.ct, self.fissure_points, lf, rf) if self.fissure_points else {}
            self.point_fits_ = {side: _fis.fit_points(pts, side) for side, pts in given.items()}
        return self.point_fits_

    def lobes(self) -> dict[str, np.ndarray]:
        """Lobe masks of the lungs whose fissure fits are credible (none of a lung otherwise)."""
        if self.lobes_ is None:
            lf, rf = self.lungs()
            fits = self.fissure_fits()
            self.lobes_ = {}
            for side, m in (("left", lf), ("right", rf)):
                got = _fis.split_lung(m, self.ct.affine, fits[side]) if m.any() else None
                if got:
                    self.lobes_.update(got)
                    self.lobe_sides.add(side)
        return self.lobes_

    def fissures(self) -> np.ndarray:
        """Fissure sheets of the lungs whose lobes could be split credibly; none elsewhere.

        A doubtful surface or loose plate pieces would make the planner count fissure crossings
        that are not there (or miss real ones) while looking sure: the lung is left without
        fissures and ``self.notes`` says so.
        """
        if "lung_fissures" not in self.full:
            lf, rf = self.lungs()
            fits = self.fissure_fits()
            self.lobes()
            out = np.zeros(self.ct.shape, bool)
            for side, m in (("left", lf), ("right", rf)):
                if not m.any():
                    continue
                second = fits[side].floor is not None  # the second look gives both surfaces or neither
                if side in self.lobe_sides or second:
                    out |= _fis.surface_sheet(m, self.ct.affine, fits[side])
                    if second:
                        self.notes.append(_second_look_note(side, fits[side], side in self.lobe_sides))
                elif side in self.point_fits():
                    self.notes.append(f"{side} lung: the lobes through the fissure points given are implausible "
                                      f"({fits[side].notes[-1]}): no lobes, crossings there are not counted")
                else:
                    self.notes.append(f"fissures not found credibly in the {side} lung: crossings there are not counted"
                                      f"{_fis.thick_slice_hint(self.ct.spacing)} "
                                      "(to count them, give points on its fissures with --fissure-points, or add its "
                                      f"lobes, e.g. TotalSegmentator's lung_*_lobe_{side}, to the structures folder "
                                      "and plan with --structures)")
            self.full["lung_fissures"] = out
        return self.full["lung_fissures"]


def _second_look_note(side: str, fits: _fis.LungFissures, named: bool) -> str:
    """What a plan must say of fissures found by the second look (see ``fissures.fit_floor_steep``)."""
    ridges = "; ".join(n for n in fits.notes if "ridge in the CT" in n)
    lobes = ("its lobes are named from them" if named else
             f"the lobes they cut are not named ({fits.notes[-1]})")
    return (f"{side} lung: its fissures were found by a second look, as one near-horizontal sheet (the minor "
            f"fissure and the upper part of the oblique one) and the steep lower part of the oblique fissure "
            f"({ridges}); {lobes}. Crossings are counted; these surfaces may lie several millimetres off the "
            "fissure in places: check on the CT where a needle passes close to one")


#: A point given on a fissure may lie this far (mm) outside the lung masks (a click on the pleura).
POINT_OFF_LUNG_MM = 5.0


def _points_by_side(ct: Image, points: dict[str, np.ndarray], left: np.ndarray, right: np.ndarray
                    ) -> dict[str, dict[str, np.ndarray]]:
    """The user's fissure points of each lung: the lung a point lies in, or the nearer one within
    POINT_OFF_LUNG_MM; any other point is refused."""
    sp = ct.spacing[::-1]
    reach = np.ceil(POINT_OFF_LUNG_MM / sp).astype(int)
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for kind, pts in points.items():
        for p in np.atleast_2d(pts):
            kji = np.rint(ct.lps_to_ijk(p[None])[0][::-1]).astype(int)
            lo, hi = np.maximum(kji - reach, 0), np.minimum(kji + reach + 1, ct.shape)
            if np.any(lo >= hi):
                raise InputError(f"fissure point {(np.round(p, 1) + 0.0).tolist()} (LPS mm) is outside the scan")
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            best = None
            for side, lung in (("left", left), ("right", right)):
                m = lung[box]
                if not m.any():
                    continue
                d = np.min(np.linalg.norm((np.argwhere(m) - (kji - lo)) * sp, axis=1))
                if d <= POINT_OFF_LUNG_MM and (best is None or d < best[0]):
                    best = (d, side)
            if best is None:
                raise InputError(f"fissure point {(np.round(p, 1) + 0.0).tolist()} (LPS mm) is not in a lung "
                                 f"(nor within {POINT_OFF_LUNG_MM:g} mm of one)")
            out.setdefault(best[1], {}).setdefault(kind, []).append(p)
    return {side: {k: np.asarray(v) for k, v in kinds.items()} for side, kinds in out.items()}


# --- public steps ---------------------------------------------------------------------------------
def body_mask(ct: Image) -> np.ndarray:
    """The patient's body ``[k, j, i]``: inside the skin, lungs and bowel gas included, without
    the table, cushions, blankets and air."""
    return _Run(ct).body()


def airway_mask(ct: Image, body: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(trachea, bronchi)`` lumen masks; both empty when the scan shows no trachea."""
    run = _Run(ct)
    if body is not None:
        run.give("body", body)
    return run.airways()


def lung_masks(
    ct: Image, body: np.ndarray | None = None, airways: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(left, right)`` lungs (vessels and nodules inside them included; trachea and main
    bronchi excluded). ``airways``: the trachea and bronchi lumen, if already segmented."""
    run = _Run(ct)
    if body is not None:
        run.give("body", body)
    if airways is not None:
        run.work["airway_all"] = run.g.down(_check_mask(airways, ct, "airways"), "any")
    return run.lungs()


def bone_mask(ct: Image, body: np.ndarray | None = None) -> np.ndarray:
    """All bone (cortex, marrow and medullary cavities; not the spinal canal)."""
    run = _Run(ct)
    if body is not None:
        run.give("body", body)
    return next(run.bone_parts())[1]  # the union comes first, before any split


def split_bones(
    ct: Image, body: np.ndarray | None = None, lungs: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Bone and its parts: ``bone``, ``vertebrae``, ``ribs_left``/``_right``, ``sternum``,
    ``scapula_*``, ``clavicula_*``, ``hip_*`` (empty masks where a part is not found).
    ``lungs``: both lungs as one mask, if already segmented (they place ribs and scapulae)."""
    run = _Run(ct)
    if body is not None:
        run.give("body", body)
    if lungs is not None:
        run.full["lung_left"] = _check_mask(lungs, ct, "lungs")
        run.full["lung_right"] = np.zeros(ct.shape, bool)
    return dict(run.bone_parts())


def lung_vessel_mask(ct: Image, lungs: np.ndarray | None = None) -> np.ndarray:
    """Intrapulmonary vessels (bright tubes in the lungs; round masses left out)."""
    run = _Run(ct)
    if lungs is not None:
        run.full["lung_left"] = _check_mask(lungs, ct, "lungs")
        run.full["lung_right"] = np.zeros(ct.shape, bool)
    return run.vessels()


def emphysema_mask(ct: Image, lungs: np.ndarray | None = None) -> np.ndarray:
    """Lung voxels below -950 HU after a light in-plane smoothing."""
    if lungs is None:
        left, right = lung_masks(ct)
        lungs = left | right
    return _tex.emphysema_full(ct.voxels, _check_mask(lungs, ct, "lungs"))


def _give_lungs(run: _Run, lungs: np.ndarray) -> None:
    """Both lungs as one mask: pieces right of the mask's centre are the right lung."""
    m = _check_mask(lungs, run.ct, "lungs")
    lab, n = ndi.label(m)
    left = np.zeros(m.shape, bool)
    if n:
        idx = np.argwhere(m)
        x = _fis._lps(idx, run.ct.affine)[:, 0]
        x_mid = float(np.average(x))
        sums = np.bincount(lab[m], weights=x, minlength=n + 1)
        counts = np.bincount(lab[m], minlength=n + 1)
        is_left = np.zeros(n + 1, bool)
        is_left[1:] = sums[1:] / np.maximum(counts[1:], 1) > x_mid
        left = is_left[lab] & m
    run.full["lung_left"] = left
    run.full["lung_right"] = m & ~left


def fissure_mask(ct: Image, lungs: np.ndarray | None = None) -> np.ndarray:
    """The interlobar fissures: in each lung where a smooth surface fits the thin bright plates
    found in it credibly, that surface drawn as a one-voxel sheet (major fissure, and the right
    minor fissure when found); elsewhere the plate pieces themselves (often strips)."""
    run = _Run(ct)
    if lungs is not None:
        _give_lungs(run, lungs)
    return run.fissures()


def lobe_masks(ct: Image, left: np.ndarray | None = None, right: np.ndarray | None = None,
               fissures: object | None = None) -> dict[str, np.ndarray]:
    """Lobes (TotalSegmentator names ``lung_upper_lobe_left`` ...) of each lung whose fissure
    fit is credible; a lung whose fissures are not found credibly gets no lobes at all (never
    guessed ones). ``fissures`` is accepted for symmetry with the other steps and ignored: the
    lobes come from the fitted surfaces, which are recomputed."""
    run = _Run(ct)
    if left is not None or right is not None:
        run.full["lung_left"] = _check_mask(left, ct, "left lung") if left is not None else np.zeros(ct.shape, bool)
        run.full["lung_right"] = _check_mask(right, ct, "right lung") if right is not None else np.zeros(ct.shape, bool)
    return dict(run.lobes())


# --- everything -----------------------------------------------------------------------------------
def segment_ct(ct: Image, progress: Progress | None = None, parts: Iterable[str] | None = None,
               fissure_points: dict[str, np.ndarray] | None = None) -> StructureSet:
    """Classical automatic segmentation of a CT into a ``StructureSet`` (source "automatic").

    Parameters
    ----------
    ct : Image
        A CT in HU.
    progress : callable, optional
        ``progress(done, total, what)``, called before each step and once at the end.
    parts : iterable of str, optional
        Subset of ``PARTS`` (body, airways, lungs, bones, heart (heart and descending aorta),
        lung_vessels, emphysema, fissures,
        lobes: only those of lungs whose fissures are found credibly);
        all when None. Steps the chosen ones need run too, but add nothing.
    fissure_points : dict, optional
        The user's points on the fissures (:func:`planner.anatomy.fissure_points.read_fissure_points`):
        a lung with points gets its fissures and lobes through them, not from the image.
    """
    wanted = list(PARTS) if parts is None else list(dict.fromkeys(parts))
    unknown = [p for p in wanted if p not in PARTS]
    if unknown:
        raise InputError(f"unknown segmentation part(s) {unknown}; choose from {', '.join(PARTS)}")
    run = _Run(ct, fissure_points)
    steps = [p for p in PARTS if p in wanted]
    total = len(steps)
    sset = StructureSet.for_image(ct)
    for done, step in enumerate(steps):
        if progress is not None:
            progress(done, total, step)
        masks: Iterable[tuple[str, np.ndarray]]
        if step == "body":
            masks = [("body", run.body())]
        elif step == "airways":
            masks = zip(("trachea", "airways"), run.airways())
        elif step == "lungs":
            masks = zip(("lung_left", "lung_right"), run.lungs())
            run.point_fits()  # the user's fissure points are checked now, not after the long steps
        elif step == "bones":
            masks = run.bone_parts()  # one at a time: eleven CT-grid masks at once weigh 400 MB
        elif step == "heart":
            masks = zip(("heart", "aorta", "mediastinal_vessels"), run.heart_aorta())
        elif step == "lung_vessels":
            masks = [("lung_vessels", run.vessels())]
        elif step == "emphysema":
            masks = [("emphysema", run.emphysema())]
        elif step == "fissures":
            masks = [("lung_fissures", run.fissures())]
        else:
            masks = list(run.lobes().items())
            run.lobes_ = {}  # handed over: do not keep eleven lobe-sized masks
        for name, m in masks:
            sset.add(name, m, cls=_CLASSES.get(name), source="automatic")
        run.release(keep=("body", "lung_left", "lung_right"))
    if progress is not None:
        progress(total, total, "done")
    sset.notes.extend(run.notes)
    return sset
