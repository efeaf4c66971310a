"""Planning: presets, distance fields, and the search for safe, ranked needle trajectories."""

from .engine import PlanResult, Trajectory, plan, prepare
from .presets import Approach, AvoidRule, Needle, Preset, list_presets, load_preset

__all__ = ["Approach", "AvoidRule", "Needle", "PlanResult", "Preset", "Trajectory", "list_presets", "load_preset", "plan", "prepare"]
