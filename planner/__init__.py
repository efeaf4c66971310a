"""Interventional procedure planning assistant.

Every position in the public API is in DICOM patient coordinates (LPS, millimetres).
Voxel arrays are indexed ``[k, j, i]`` (slice, row, column) with one 4x4 affine that maps
``(i, j, k, 1)`` to LPS.
"""

__version__ = "0.1.0"
