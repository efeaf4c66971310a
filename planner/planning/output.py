"""``plan.json`` (schema ``planner.plan/1``, see shared/design/CONVENTIONS.md), written atomically."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..anatomy.target import Target
from ..atomic import atomic_path, write_json_atomic  # noqa: F401  (write_json_atomic: used by callers)
from ..errors import InputError
from ..images import Image
from .engine import PlanResult
from .presets import Preset

SCHEMA = "planner.plan/1"


def target_block(target: Target, result: PlanResult) -> dict[str, Any]:
    """What the plan says of one target: the target, its status, trajectories and reasons (the
    top level of ``plan.json`` for the first target, an entry of ``targets`` for the others)."""
    return {
        "target": target.to_dict(),
        "status": result.status,
        "trajectories": [t.to_dict() for t in result.trajectories],
        "rejected": dict(result.rejected),
        "n_candidates": result.n_candidates,
        "explanation": list(result.explanation),
    }


def read_plan(plan_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``plan.json`` of a plan folder, refused with a one-line :class:`InputError` when missing,
    unreadable or not a ``planner.plan`` document."""
    p = Path(plan_dir) / "plan.json"
    if not p.is_file():
        raise InputError(f"{p}: no plan.json in {plan_dir} (not a plan folder written by 'planner plan')")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable plan ({exc})") from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("planner.plan/"):
        raise InputError(f"{p}: schema {doc.get('schema') if isinstance(doc, dict) else None!r} is not {SCHEMA}")
    return doc


def plan_document(ct: Image, target: Target, preset: Preset, result: PlanResult, structures_source: str,
                  notes: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The plan as a JSON-able dict: the required core plus explanations and provenance."""
    return {
        "schema": SCHEMA,
        "coordinate_system": "LPS",
        "image": {
            "series_instance_uid": ct.meta.series_instance_uid,
            "study_instance_uid": ct.meta.study_instance_uid,
            "frame_of_reference_uid": ct.meta.frame_of_reference_uid,
            "sha256": ct.sha256,
            "source": ct.meta.source,
            "modality": ct.meta.modality,
            "corrections": list(ct.meta.corrections),
        },
        "procedure": preset.id,
        **target_block(target, result),
        "clearance_definition": "distance from the needle axis to the nearest voxel centre of a structure, mm; "
                                "a feasible trajectory keeps at least margin + needle radius from every avoided one",
        "hard_constraints": {
            "clearance_mm (margin + needle radius)": {k: round(v, 2) for k, v in result.hard_margins_mm.items()},
            "max_angle_from_skin_normal_deg": preset.max_angle_from_skin_normal_deg,
            "max_craniocaudal_deg": preset.max_craniocaudal_deg,
            "positions": list(preset.positions),
            "max_depth_mm": preset.max_depth_mm,
            "fixed_position": preset.fixed_position,
            "approach": preset.approach.to_dict() if preset.approach else None,
        },
        "score": {"weights": dict(preset.weights), "note": preset.raw.get("weights_note", "")},
        "structures_source": structures_source,
        "structures_notes": list(notes),
        "provenance": {
            "planner_version": __version__,
            "python": platform.python_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()},
        },
    }


def write_risk_map(result: PlanResult, path: str | os.PathLike[str]) -> None:
    """Every candidate entry (LPS), its score (NaN if infeasible) and its rejection reason."""
    rm = result.risk_map
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, entries_lps=rm["entries"].astype(np.float32), score=rm["score"].astype(np.float32),
                            reason=rm["reason"].astype("U40"))
