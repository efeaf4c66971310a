"""The embedded demo cases (``assets/demo/<case>/``) and what ``planner demo`` does with them.

Each case folder holds ``case.json`` (title, target, procedure and any further procedures),
``ct/`` (a DICOM series) and its ground-truth structures. The demo loads each CT, writes an
axial, coronal and sagittal PNG through the target and plans each procedure of the case.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .atomic import atomic_path
from .errors import InputError


def assets_dir() -> Path:
    """The folder of the demo cases: ``$PLANNER_ASSETS`` or ``assets/`` of the source tree."""
    env = os.environ.get("PLANNER_ASSETS")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "assets"
    return path


@dataclass(frozen=True)
class DemoCase:
    """One embedded case, as described by its ``case.json``."""

    id: str
    folder: Path
    info: dict[str, Any]

    @property
    def ct(self) -> Path:
        return self.folder / self.info.get("ct", "ct")

    @property
    def target_lps(self) -> list[float]:
        return [float(x) for x in self.info["target"]["point"]]

    @property
    def title(self) -> str:
        return str(self.info.get("title", self.id))


def demo_cases() -> list[DemoCase]:
    """Every case under ``assets/demo/``, sorted by id."""
    root = assets_dir() / "demo"
    if not root.is_dir():
        raise InputError(f"{root}: demo cases not found (set PLANNER_ASSETS to the project's assets/ folder)")
    cases = []
    for f in sorted(root.glob("*/case.json")):
        cases.append(DemoCase(f.parent.name, f.parent, json.loads(f.read_text())))
    if not cases:
        raise InputError(f"{root}: no demo case (no */case.json)")
    return cases


def save_png(pixels: np.ndarray, path: Path, marks: list[tuple[float, float]] = ()) -> None:  # type: ignore[assignment]
    """Write a uint8 grey image as PNG, atomically, with optional cross marks (col, row)."""
    from PIL import Image as PILImage, ImageDraw

    im = PILImage.fromarray(pixels, mode="L").convert("RGB")
    draw = ImageDraw.Draw(im)
    for c, r in marks:
        draw.line([(c - 8, r), (c - 3, r)], fill=(255, 200, 0), width=1)
        draw.line([(c + 3, r), (c + 8, r)], fill=(255, 200, 0), width=1)
        draw.line([(c, r - 8), (c, r - 3)], fill=(255, 200, 0), width=1)
        draw.line([(c, r + 3), (c, r + 8)], fill=(255, 200, 0), width=1)
    with atomic_path(path, ".png") as tmp:
        im.save(tmp, format="PNG")


def run_demo(out: Path) -> Iterator[str]:
    """Run every demo case into ``out/<case>/``; yields one line of news per step.

    Each plan folder is written as a whole (see :func:`planner.session.plan_and_write`); the
    case's first folder also gets an axial, coronal and sagittal PNG through the target."""
    from .images import load_image

    for case in demo_cases():
        image = load_image(case.ct)
        yield f"{case.id}: loaded {case.title}: {image!r}"
        yield from _plan_case(case, image, out / case.id)


def _orthogonal_pngs(case: DemoCase, image: Any, folder: Path) -> list[Path]:
    """An axial, coronal and sagittal PNG through the case's target, into ``folder/images``."""
    from .images.reslice import WINDOWS, plane_through, window

    target = np.array(case.target_lps)
    level, width = WINDOWS[case.info.get("window", "soft-tissue")]
    extent = np.ptp(image.corners(), axis=0).max()
    pixel_mm = min(float(image.spacing.min()), float(extent) / 512.0)  # about 512 pixels across
    written = []
    for plane in ("axial", "coronal", "sagittal"):
        pixels, to_lps = plane_through(image, plane, target, pixel_mm=pixel_mm)  # type: ignore[arg-type]
        col, row, _ = np.linalg.solve(to_lps, target)
        path = folder / "images" / f"{plane}.png"
        save_png(window(pixels, level, width), path, [(float(col), float(row))])
        written.append(path)
    return written


def _plan_case(case: DemoCase, image: Any, out: Path) -> Iterator[str]:
    """Plan the case's procedure into ``out``, and each of its ``also_procedures`` beside it
    (``out/../knee-synovial-biopsy`` for the knee case)."""
    from .atomic import replace_folder
    from .planning import list_presets
    from .session import PlanRequest, TargetSpec, plan_and_write

    first = case.info.get("procedure")
    procedures = [first] + [p for p in case.info.get("also_procedures", []) if p != first]
    pngs: list[Path] = []
    for n, procedure in enumerate(procedures):
        where = out if n == 0 else out.with_name(procedure if procedure.startswith(f"{out.name}-")
                                                 else f"{out.name}-{procedure}")
        also = (lambda folder: pngs.extend(_orthogonal_pngs(case, image, folder))) if n == 0 else None
        if procedure not in list_presets():
            yield f"{case.id}: no plan for {procedure!r} (no such preset)"
            if also is not None:
                with replace_folder(where) as staging:
                    also(staging)
            continue
        request = PlanRequest(case.ct, procedure, [TargetSpec("label", case.info["target"]["label"])],
                              structures=case.folder / case.info["structures"])
        session, plan, rs = plan_and_write(request, where, dicom=True, also=also, scene_html=True)
        for path in pngs:
            yield f"{case.id}: wrote {where / 'images' / path.name}"
        pngs.clear()
        best = plan.trajectories[0] if plan.trajectories else None
        if best is None:
            yield f"{case.id}: {procedure}: NO SAFE TRAJECTORY; " + "; ".join(plan.targets[0].explanation)
        else:
            approach = f" ({session.preset.approach.id})" if session.preset.approach else ""
            yield (f"{case.id}: planned {procedure}{approach}: {len(plan.trajectories)} trajectories, best depth "
                   f"{best.length_mm:.1f} mm, {best.limiting}; wrote {where / 'plan.json'}")
        yield f"{case.id}: wrote the report set: {rs.pdf}, {rs.html.name}, {rs.markups[0].name}, " \
              f"{len(rs.meshes)} meshes, {len(rs.dicom)} DICOM objects"
