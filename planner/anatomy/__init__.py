"""Anatomy: structure sets on the CT grid, their vocabulary, importers and segmentation."""

from .importers import load_label_map, load_structures, load_totalsegmentator_folder, read_label_table
from .registry import StructureClass, class_of, colour_of, structure_table
from .structures import Structure, StructureSet

__all__ = [
    "Structure",
    "StructureClass",
    "StructureSet",
    "class_of",
    "colour_of",
    "load_label_map",
    "load_structures",
    "load_totalsegmentator_folder",
    "read_label_table",
    "structure_table",
]
