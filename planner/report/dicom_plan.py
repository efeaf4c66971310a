"""The plan itself as DICOM, in the CT's study, with highdicom:

- **Segmentation** (DICOM SEG, binary, one segment per structure), on the CT's own slices: each
  frame references the CT image it lies on. Written only when the loaded CT is the series' own
  grid (no resampling, no correction); otherwise it is left out and the reason is returned.
- **Comprehensive 3D SR**, TID 1500 (Imaging Measurement Report): one measurement group
  (TID 1501) per trajectory, tracked as "Trajectory N", with the needle's depth (Length, mm) and,
  inferred from it, the path as a SCOORD3D POLYLINE from entry to target in the CT's frame of
  reference (LPS mm, as in plan.json; TID 300 row "Source of Measurement", TID 320).

Codes: SNOMED CT and DCM where they exist; the finding type "Planned needle trajectory" and the
procedure (the preset's id and title) are in this product's private coding scheme ``99PLANNER``
(DICOM PS3.16 8.2 allows private schemes with the 99 prefix).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..anatomy.structures import StructureClass, StructureSet
from ..images import Image

SCHEME = "99PLANNER"

# SNOMED CT codes of the structure classes: (category, type) of DICOM SEG's segment description
_SCT = {
    "bone": (("91723000", "Anatomical structure"), ("272673000", "Bone structure")),
    "vessel": (("91723000", "Anatomical structure"), ("59820001", "Blood vessel")),
    "airway": (("91723000", "Anatomical structure"), ("89187006", "Airway structure")),
    "lung": (("91723000", "Anatomical structure"), ("39607008", "Lung structure")),
    "lobe": (("91723000", "Anatomical structure"), ("39607008", "Lung structure")),
    "nerve": (("91723000", "Anatomical structure"), ("3057000", "Nerve structure")),
    "organ": (("91723000", "Anatomical structure"), ("113343008", "Body organ structure")),
    "muscle": (("91723000", "Anatomical structure"), ("71616004", "Skeletal muscle structure")),
    "body": (("91723000", "Anatomical structure"), ("38266002", "Entire body as a whole")),
    "target": (("49755003", "Morphologically abnormal structure"), ("4147007", "Mass")),
    "fluid": (("91723000", "Anatomical structure"), ("32457005", "Body fluid")),
}
_TISSUE = (("85756007", "Tissue"), ("85756007", "Tissue"))


def _code(value: str, meaning: str, scheme: str = "SCT") -> Any:
    from pydicom.sr.coding import Code

    return Code(value, scheme, meaning)


def slices_of(ct: Image, headers: list[Any]) -> list[Any] | None:
    """The header of each slice k of ``ct`` (in k order), when the CT is exactly the series'
    grid: one single-frame image per slice, at the slice's position within 0.01 mm; else None."""
    if ct.meta.corrections or len(headers) != ct.shape[0]:
        return None
    out = []
    by_pos = []
    for h in headers:
        if "ImagePositionPatient" not in h or int(h.get("NumberOfFrames", 1) or 1) != 1:
            return None
        by_pos.append((np.asarray([float(x) for x in h.ImagePositionPatient]), h))
    for k in range(ct.shape[0]):
        p = ct.ijk_to_lps(np.array([0.0, 0.0, float(k)]))
        d, h = min(((float(np.linalg.norm(q - p)), h) for q, h in by_pos), key=lambda x: x[0])
        if d > 0.01 or int(h.Rows) != ct.shape[1] or int(h.Columns) != ct.shape[2]:
            return None
        out.append(h)
    return out


def structures_seg(sset: StructureSet, ct: Image, slices: list[Any], series_number: int = 9903) -> Any:
    """The structures as a binary DICOM SEG on the CT slices ``slices`` (see :func:`slices_of`)."""
    import highdicom as hd

    names = [s.name for s in sset]
    if not names:
        raise ValueError("no structure to write")
    from pydicom.sr.codedict import codes

    descriptions = []
    for n, s in enumerate(sset, start=1):
        cls = s.cls.value if isinstance(s.cls, StructureClass) else str(s.cls)
        (cv, cm), (tv, tm) = _SCT.get(cls, _TISSUE)
        automatic = s.source == "automatic"  # what planner.anatomy.autoseg made; else imported
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=s.name[:64], segmented_property_category=_code(cv, cm),
            segmented_property_type=_code(tv, tm),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if automatic
            else hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            # classical image analysis: thresholds and morphological operations, no learned model
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="planner", version=_version(), family=codes.DCM.MorphologicalOperations) if automatic else None))
    nk, nj, ni = ct.shape
    pixels = np.zeros((nk, nj, ni, len(names)), bool)
    for n, s in enumerate(sset):
        pixels[..., n] = s.full(ct.shape)
    return hd.seg.Segmentation(
        source_images=slices, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="planner", manufacturer_model_name="planner",
        software_versions=_version(), device_serial_number="0", series_description="Structures at risk (plan)",
        content_label="STRUCTURES", omit_empty_frames=True,
        content_description=f"{len(names)} structures of the needle plan"[:64],
    )


def _version() -> str:
    from .. import __version__

    return __version__


def trajectories_sr(doc: dict[str, Any], ref: Any, series_number: int = 9904) -> Any:
    """The plan's trajectories as a Comprehensive 3D SR (TID 1500), in the study of ``ref`` (a CT
    header), each path a SCOORD3D polyline entry -> target in the CT's frame of reference."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frame = str(ref.FrameOfReferenceUID)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="planner"))
    context = hd.sr.ObservationContext(observer_device_context=observer)
    groups = []
    for t in doc.get("trajectories", []):
        entry, target = (np.asarray(t[k], float) for k in ("entry", "target"))
        depth = float(np.linalg.norm(target - entry))
        length = hd.sr.Measurement(name=codes.SCT.Length, value=round(depth, 1), unit=codes.UCUM.Millimeter)
        path = hd.sr.Scoord3DContentItem(
            name=codes.DCM.SourceOfMeasurement, graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE,
            graphic_data=np.array([entry, target]), frame_of_reference_uid=frame,
            relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM)
        item = length[0]
        if "ContentSequence" not in item:
            item.ContentSequence = hd.sr.ContentSequence()
        item.ContentSequence.append(path)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Trajectory {t['rank']}"),
            finding_type=_code("TRAJ", "Planned needle trajectory", SCHEME), measurements=[length]))
    if not groups:
        raise ValueError("the plan holds no trajectory")
    procedure = _code(str(doc.get("procedure", "plan"))[:16], str(doc.get("procedure_title") or "needle procedure")[:64],
                      SCHEME)
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=procedure,
                                     imaging_measurements=groups, title=codes.DCM.ImagingMeasurementReport)
    return hd.sr.Comprehensive3DSR(
        evidence=[ref], content=report[0], series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="planner", is_complete=True,
        is_final=False, is_verified=False, series_description="Needle trajectories (plan)")


def write_plan_objects(out_dir: str | os.PathLike[str], sset: StructureSet | None, ct: Image, doc: dict[str, Any],
                       uid_map: Any = None) -> tuple[list[Path], list[str]]:
    """``structures.dcm`` (SEG) and ``trajectories.dcm`` (SR) into ``out_dir``; the files written
    and the notes (why an object was left out)."""
    from ..images.dicom import scan_folder, select_series
    from .dicom_export import save_datasets

    out = Path(out_dir)
    notes: list[str] = []
    scan = scan_folder(ct.meta.source)
    series = select_series(scan, ct.meta.series_instance_uid, None)
    objs: list[tuple[str, Any]] = []
    if doc.get("trajectories"):
        objs.append(("trajectories.dcm", trajectories_sr(doc, series.headers[0])))
    if sset is not None and len(sset):
        slices = slices_of(ct, series.headers)
        if slices is None:
            notes.append("structures not written as DICOM SEG: the loaded CT is not the series' own slice grid "
                         "(corrected or multi-frame); structures.seg.nrrd holds them")
        else:
            objs.append(("structures.dcm", structures_seg(sset, ct, slices)))
    # built by highdicom to the IOD (its own checks); the tests also run dciodvfy on them
    return save_datasets(objs, out, uid_map), notes
