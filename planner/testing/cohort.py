"""A test cohort for ``planner batch``, built from the shared real scans and the demo cases.

Rows: lung biopsies at random points inside the lungs of the real chest CT (its automatic
segmentation, kept in the segmentation cache so the batch reuses it), liver and kidney biopsies
at random points inside the organs of the abdomen CT (with its TotalSegmentator structures), knee
injections of the demo knee; targets unreachable on purpose (inside the heart and the aorta of
the chest, the spinal canal); a target outside the body, and a row whose CT is a broken file.
Points are LPS mm, drawn with a seeded generator, at least 3 mm inside their structure.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
CHEST = DATA / "chest-ct" / "dicom"
ABDOMEN = DATA / "abdomen-ct-totalseg" / "ct.nii.gz"
ABDOMEN_SEG = DATA / "abdomen-ct-totalseg" / "segmentations"
KNEE = ROOT / "assets" / "demo" / "knee"

COLUMNS = ["case_id", "ct", "procedure", "target", "target_label", "target_joint", "structures", "side"]


@dataclass
class Cohort:
    manifest: Path
    rows: list[dict[str, str]]
    expect: dict[int, str]  # line -> "feasible", "infeasible", "error", "any"


def _points(mask: np.ndarray, image, rng: np.random.Generator, n: int, inset_mm: float = 3.0) -> list[np.ndarray]:
    sp = np.asarray(image.spacing)[::-1]
    deep = ndi.distance_transform_edt(mask, sampling=sp) >= inset_mm
    kji = np.argwhere(deep)
    if not len(kji):
        return []
    pick = kji[rng.choice(len(kji), size=min(n, len(kji)), replace=False)]
    return [image.ijk_to_lps(p[::-1].astype(float)) for p in pick]


def _fmt(p: np.ndarray) -> str:
    return ",".join(f"{x:.1f}" for x in p)


def build_cohort(folder: Path, *, n_lung: int = 34, n_liver: int = 10, n_kidney: int = 8, seed: int = 7) -> Cohort:
    """Write ``folder/manifest.csv`` (and the broken file it names); returns the rows and what each
    row must give."""
    from ..anatomy import load_structures
    from ..anatomy.autoseg import segment_ct
    from ..anatomy.cache import cached_segmentation, store_segmentation
    from ..images import load_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    expect: list[str] = []

    def add(expected: str, **row: str) -> None:
        rows.append({c: row.get(c, "") for c in COLUMNS})
        expect.append(expected)

    chest = load_image(CHEST)
    seg = cached_segmentation(chest)
    if seg is None:
        seg = segment_ct(chest)
        store_segmentation(chest, seg, source="test cohort")
    lungs = np.zeros(chest.shape, bool)
    for name in seg.names():
        if name.startswith("lung_") and getattr(seg[name].cls, "value", "") in ("lung", "lobe"):
            lungs |= seg.mask(name)
    for n, p in enumerate(_points(lungs, chest, rng, n_lung)):
        add("any", case_id=f"chest-{n // 10}", ct=str(CHEST), procedure="lung-biopsy", target=_fmt(p))
    for name, n_max in (("heart", 2), ("aorta", 2), ("spinal_cord", 1)):
        if name in seg.names():
            for p in _points(seg.mask(name), chest, rng, n_max, inset_mm=2.0):
                add("infeasible", case_id="chest-unreachable", ct=str(CHEST), procedure="lung-biopsy", target=_fmt(p))
    add("error", case_id="chest-outside", ct=str(CHEST), procedure="lung-biopsy",
        target=_fmt(chest.ijk_to_lps(np.array([2.0, 2.0, chest.shape[0] / 2]))))

    abdomen = load_image(ABDOMEN)
    organs = load_structures(ABDOMEN_SEG, abdomen)
    for name, proc, n_pts in (("liver", "liver-biopsy", n_liver), ("kidney_left", "kidney-biopsy", n_kidney // 2),
                              ("kidney_right", "kidney-biopsy", n_kidney - n_kidney // 2)):
        side = {"kidney_left": "left", "kidney_right": "right"}.get(name, "")
        for p in _points(organs.mask(name), abdomen, rng, n_pts):
            add("any", case_id=f"abdomen-{name}", ct=str(ABDOMEN), procedure=proc, target=_fmt(p),
                structures=str(ABDOMEN_SEG), side=side)

    knee_seg = str(KNEE / "structures.nii.gz")
    add("feasible", case_id="knee", ct=str(KNEE / "ct"), procedure="knee-injection", target_label="knee_effusion_right",
        structures=knee_seg)
    add("any", case_id="knee", ct=str(KNEE / "ct"), procedure="knee-injection", target_joint="knee_recess_right",
        structures=knee_seg)
    broken = folder / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 not really a gzip file")
    add("error", case_id="broken", ct=broken.name, procedure="lung-biopsy", target="0,0,0")

    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return Cohort(manifest, rows, {n + 2: e for n, e in enumerate(expect)})
