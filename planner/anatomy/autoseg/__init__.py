"""Classical automatic segmentation of a CT (thresholds, morphology, region growing and
Hessian filters; no trained model), good enough to plan needle paths with.

Every step is a function of the CT (and of earlier results) returning boolean masks
``[k, j, i]`` on the CT grid; ``segment_ct`` runs them all into a ``StructureSet``.
"""

from .lesion import lesion_measurements, segment_lesion
from .mr import body_of
from .pipeline import (
    PARTS,
    airway_mask,
    body_mask,
    bone_mask,
    emphysema_mask,
    fissure_mask,
    lobe_masks,
    lung_masks,
    lung_vessel_mask,
    segment_ct,
    split_bones,
)

__all__ = [
    "PARTS",
    "airway_mask",
    "body_mask",
    "body_of",
    "bone_mask",
    "emphysema_mask",
    "fissure_mask",
    "lesion_measurements",
    "lobe_masks",
    "lung_masks",
    "lung_vessel_mask",
    "segment_ct",
    "segment_lesion",
    "split_bones",
]
