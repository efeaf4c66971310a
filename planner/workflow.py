"""The main job, from files to a written plan: what ``planner plan`` and the demo both run.

load the CT -> import or segment the structures -> resolve the target -> plan -> explain the
chosen trajectories -> write ``plan.json`` and ``risk_map.npz`` (atomically) into ``out``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .anatomy import StructureSet, load_structures, segment_ct
from .anatomy.autoseg import body_mask
from .anatomy.target import Target, parse_point, target_at_point, target_from_seed, target_from_structure
from .errors import InputError
from .images import Image, load_image
from .planning import PlanResult, Preset, load_preset, plan
from .planning.explain import describe
from .planning.output import plan_document, write_json_atomic, write_risk_map

Progress = Callable[[int, int, str], None]


@dataclass
class PlanRun:
    ct: Image
    structures: StructureSet
    target: Target
    preset: Preset
    result: PlanResult
    document: dict[str, Any]
    out: Path


def run_plan(
    ct_path: str | os.PathLike[str],
    procedure: str,
    out: str | os.PathLike[str],
    *,
    structures: str | os.PathLike[str] | None = None,
    target_point: str | None = None,
    target_label: str | None = None,
    seed: str | None = None,
    series_uid: str | None = None,
    n_best: int = 5,
    progress: Progress | None = None,
) -> PlanRun:
    """Plan one procedure and write its files. Exactly one of the three target forms is given."""
    if sum(x is not None for x in (target_point, target_label, seed)) != 1:
        raise InputError("give exactly one target: a point, a structure label or a seed point")
    preset = load_preset(procedure)  # an unknown id fails before the long work
    ct = load_image(ct_path, series_uid, "CT", progress)
    if structures is not None:
        sset = load_structures(structures, ct, progress=progress)
        source = str(structures)
    else:
        sset = segment_ct(ct, progress=progress)
        source = "automatic segmentation"
    if target_point is not None:
        target = target_at_point(ct, parse_point(target_point))
    elif seed is not None:
        target = target_from_seed(ct, parse_point(seed))
    else:
        target = target_from_structure(ct, sset, str(target_label))
    body = sset.mask("body") if "body" in sset else body_mask(ct)
    result = plan(ct, sset, target, preset, body, n_best=n_best)
    for t in result.trajectories:
        describe(t, sset, preset, target.label, target.diameter_mm)
    doc = plan_document(ct, target, preset, result, source, sset.notes)
    out_dir = Path(out)
    write_json_atomic(doc, out_dir / "plan.json")
    write_risk_map(result, out_dir / "risk_map.npz")
    return PlanRun(ct, sset, target, preset, result, doc, out_dir)
