"""What a check writes beside its ``check.json``: images, the check page (PDF and HTML) and,
with ``--dicom``, DICOM objects. Called by :func:`planner.checks.run.run_check` with the check's
staging folder; everything written there appears in ``checks/NN/`` at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class CheckContext:
    """What the check's outputs are drawn from (all already loaded and verified by run_check)."""

    plan: Any  # planner.planning.model.Plan (read from plan.json)
    plan_dir: Path
    planning: Any  # planner.images.Image: the planning CT
    check: Any  # planner.images.Image: the check scan (its own coordinates)
    structures: Any  # planner.anatomy StructureSet on the planning CT's grid
    check_to_planning: np.ndarray  # 4x4, check-scan LPS -> planning-CT LPS
    preset: Any  # planner.planning.presets Preset


def write_check_outputs(staging: Path, document: dict[str, Any], context: CheckContext, *, dicom: bool = False,
                        anonymize: bool = False) -> list[Path]:
    """Write the check's images and page into ``staging``; the paths written."""
    return []
