"""Anatomy: structure sets on the CT grid, their vocabulary, importers and segmentation."""

from .dicom_seg import load_dicom_seg
from .autoseg import lesion_measurements, segment_ct, segment_lesion
from .importers import load_label_map, load_structures, load_totalsegmentator_folder, read_label_table
from .registry import StructureClass, class_of, colour_of, structure_table
from .rtstruct import load_rtstruct
from .slicer_seg import load_slicer_seg, save_slicer_seg
from .structures import Structure, StructureSet

__all__ = [
    "Structure",
    "StructureClass",
    "StructureSet",
    "class_of",
    "colour_of",
    "load_dicom_seg",
    "lesion_measurements",
    "load_label_map",
    "load_rtstruct",
    "load_slicer_seg",
    "load_structures",
    "load_totalsegmentator_folder",
    "read_label_table",
    "segment_ct",
    "segment_lesion",
    "save_slicer_seg",
    "structure_table",
]
