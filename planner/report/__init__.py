"""Reports and exports of a plan: PDF and HTML report, Slicer markups, meshes, DICOM, review.

One module per output; :func:`write_report_set` writes them all into a plan folder and
:func:`review_plan` checks a plan folder against a scan.
"""

from .facts import ReportFacts, report_facts
from .reportset import ReportSet, write_report_set

__all__ = ["ReportFacts", "ReportSet", "report_facts", "write_report_set"]
