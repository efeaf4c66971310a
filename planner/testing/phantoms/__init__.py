"""Deterministic synthetic CT phantoms with ground-truth structures (demo cases and tests).

``make_thorax()`` is an adult chest with a solid nodule in the right lower lobe;
``make_knee()`` a right knee with a joint effusion. Both are built from analytic shapes in
patient space (LPS mm), so every mask, landmark and volume is known exactly.
``make_knee_mr()`` is that knee as a sagittal multi-echo T2 MR (one image per echo).
"""

from .common import Phantom
from .knee import make_knee
from .knee_mr import make_knee_mr
from .thorax import make_thorax

__all__ = ["Phantom", "make_knee", "make_knee_mr", "make_thorax"]
