"""Images: the one image type and the loaders of DICOM, NIfTI and NRRD (all in LPS)."""

from .dicom import DicomScan, DicomSeries, load_dicom, load_series, scan_folder, select_series
from .image import MAX_VOXELS, Image, ImageMeta
from .io import keep_loaded, load_image, save_image, source_kind
from .pet import SuvFactors, load_pet, read_pet, resample_to, suv_factors

__all__ = [
    "Image",
    "ImageMeta",
    "MAX_VOXELS",
    "DicomScan",
    "DicomSeries",
    "load_dicom",
    "keep_loaded",
    "load_image",
    "load_pet",
    "read_pet",
    "resample_to",
    "SuvFactors",
    "suv_factors",
    "load_series",
    "save_image",
    "scan_folder",
    "select_series",
    "source_kind",
]
