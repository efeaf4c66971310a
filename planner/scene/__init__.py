"""The 3D scene of a case and the procedure-room views (VTK), on top of images/anatomy/planning.

Report code calls :func:`render_views` (a plan folder or a :class:`Case` -> PNG files);
the interactive viewer (:mod:`planner.viewer`) builds on the same blocks.
"""

from .case import ActualNeedle, Case, NeedlePath, RiskMap, case_from_objects, gauge_diameter_mm, load_case, load_checks, read_case_ct
from .views import REPORT_VIEWS, SLICE_VIEWS, Scene, View, build_view, render_views

__all__ = [
    "ActualNeedle",
    "Case",
    "NeedlePath",
    "REPORT_VIEWS",
    "RiskMap",
    "SLICE_VIEWS",
    "Scene",
    "View",
    "build_view",
    "case_from_objects",
    "gauge_diameter_mm",
    "load_case",
    "read_case_ct",
    "load_checks",
    "render_views",
]
