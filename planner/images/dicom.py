"""DICOM series: find them under a folder, pick one, assemble it into an :class:`Image`.

The slice order comes from ImagePositionPatient projected on the slice normal (never from file
names or InstanceNumber); ImageOrientationPatient is honoured as written, so oblique, prone,
feet-first and decubitus scans land at their true LPS positions. Irregular series (gantry tilt,
missing slices, uneven spacing, duplicates, mixed image sizes) are corrected on purpose and
each correction is recorded in ``Image.meta.corrections``, or refused with an :class:`InputError`.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import GeometryError, InputError, brief
from . import geometry
from .image import Image, ImageMeta, check_voxel_count
from .quiet import held_library_warnings, one_line
from .restack import restack_slices

#: Called as ``progress(done, total, what)`` during long steps.
Progress = Callable[[int, int, str], None]

# SOP classes that are never part of an image volume, with the word used in messages.
_NON_VOLUME_SOP_CLASSES = {
    "1.2.840.10008.1.3.10": "DICOMDIR",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation (SEG)",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT plan",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.88.59": "key object selection",
}
_NON_VOLUME_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report (SR)",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66.": "spatial registration or fiducials",
}

# Image storage SOP classes: a file of one of these without pixel data is truncated.
_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.12.1",  # XA
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.128",  # PET
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET
}

#: Positions closer than this along the normal (mm) are "the same position".
DUPLICATE_TOL_MM = 0.01
#: A slice position off the regular grid by more than this share of the step is irregular.
REGULAR_TOL_FRACTION = 0.02
#: The largest gap (in nominal steps) that is interpolated instead of refused.
MAX_GAP_STEPS = 2.0
#: Share of a series' images that the most common size must hold for the others to be skipped.
MAJORITY_SHARE = 0.9


def _sop_kind(sop_class_uid: str) -> str | None:
    """The reason a SOP class is not a volume slice, or None if it may be one."""
    if sop_class_uid in _NON_VOLUME_SOP_CLASSES:
        return _NON_VOLUME_SOP_CLASSES[sop_class_uid]
    for prefix, word in _NON_VOLUME_PREFIXES.items():
        if sop_class_uid.startswith(prefix):
            return word
    return None


@dataclass
class _Slice:
    """One 2D image: a single-frame file or one frame of a multi-frame file."""

    path: str
    frame: int
    position: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float
    instance_number: int
    sop_instance_uid: str
    localizer: bool
    multiframe: bool = False
    # What tells apart several images at one position (None: not recorded).
    echo_number: int | None = None  # EchoNumbers
    echo_time: float | None = None  # EchoTime, ms
    temporal: int | None = None  # TemporalPositionIdentifier
    acquisition: int | None = None  # AcquisitionNumber
    image_type: str = ""  # ImageType, values joined by backslashes

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.column_cosine)

    @property
    def label(self) -> str:
        """The file, and the frame for multi-frame files, as named in messages."""
        return f"{self.path} [frame {self.frame + 1}]" if self.multiframe else self.path


@dataclass
class DicomSeries:
    """The files of one SeriesInstanceUID found under a folder.

    Files whose SeriesInstanceUID is blank (common after anonymisation) are grouped by their
    other identifying attributes instead; ``uid`` is then a key derived from those
    (``blank-uid-...``, see :func:`blank_uid_key`) and ``blank_uid`` is True.
    """

    uid: str
    headers: list[Any] = field(default_factory=list)  # pydicom Datasets, pixel data deferred
    paths: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    blank_uid: bool = False

    @property
    def first(self) -> Any:
        return self.headers[0]

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", "")) if self.headers else ""

    @property
    def description(self) -> str:
        return str(self.first.get("SeriesDescription", "")) if self.headers else ""

    def n_images(self) -> int:
        return sum(int(h.get("NumberOfFrames", 1) or 1) for h in self.headers)

    def summary(self) -> dict[str, Any]:
        sizes = Counter(f"{h.get('Columns', '?')}x{h.get('Rows', '?')}" for h in self.headers)
        return {
            "series_instance_uid": "" if self.blank_uid else self.uid,
            "key": self.uid,
            "blank_uid": self.blank_uid,
            "modality": self.modality,
            "description": self.description,
            "files": len(self.paths),
            "images": self.n_images(),
            "image_sizes": dict(sizes),
            "corrupt_files": list(self.corrupt),
        }


@dataclass
class DicomScan:
    """Everything found under a folder: image series, and files skipped with the reason."""

    root: str
    series: list[DicomSeries]
    skipped: list[tuple[str, str]]
    n_files: int
    corrupt_unknown_series: list[tuple[str, str]]

    def describe(self) -> list[dict[str, Any]]:
        return [s.summary() for s in self.series]


# ---------------------------------------------------------------------------------------------
# Scanning
# ---------------------------------------------------------------------------------------------
def _list_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            files.append(Path(dirpath) / name)
    return files


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path) -> Any:
    import pydicom

    # Large values (pixel data) are deferred: read from the file only when decoded.
    ds = pydicom.dcmread(str(path), defer_size=4096)
    _parse_all(ds.file_meta if hasattr(ds, "file_meta") else None)
    _parse_all(ds)
    _check_integers(ds)
    return ds


_INTEGER_TAGS = ("Rows", "Columns", "SamplesPerPixel", "NumberOfFrames", "InstanceNumber", "BitsAllocated",
                 "BitsStored", "PixelRepresentation")


def _check_integers(ds: Any) -> None:
    """Raise ValueError naming the first integer attribute the loader uses that holds no integer."""
    for name in _INTEGER_TAGS:
        value = ds.get(name)
        if value is None or value == "":
            continue
        try:
            ok = float(value) == int(value)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"{name} {brief(repr(value), 40)} is not an integer")


def _parse_all(ds: Any) -> None:
    """Convert every value now (pydicom converts them when first used), so that a corrupt one
    fails here, as a corrupt file, not in the middle of assembling the volume. Deferred values
    (pixel data) stay unread."""
    if ds is None:
        return
    for tag in list(ds.keys()):
        if tag.is_private:
            continue  # never used here; vendors' private dictionaries often disagree with the files
        if getattr(ds.get_item(tag), "value", b"") is None:
            continue  # deferred
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _parse_all(item)


#: What groups images whose SeriesInstanceUID is blank (with the rounded ImageOrientationPatient).
BLANK_UID_GROUPING = (
    "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "Modality", "SeriesNumber", "SeriesDescription",
    "SeriesDate", "SeriesTime", "FrameOfReferenceUID", "Rows", "Columns",
)


def blank_uid_key(ds: Any) -> str:
    """The stable key (``blank-uid-`` and 12 hex digits) of the series of an image whose
    SeriesInstanceUID is blank: a hash of :data:`BLANK_UID_GROUPING` and the orientation, so
    that the same files give the same key wherever they are."""
    values = [str(ds.get(k, "") or "").strip() for k in BLANK_UID_GROUPING]
    iop = ds.get("ImageOrientationPatient", None)
    if iop is None and "SharedFunctionalGroupsSequence" in ds:
        iop = _lookup(ds.SharedFunctionalGroupsSequence, "PlaneOrientationSequence", "ImageOrientationPatient")
    try:
        values.append(",".join(f"{round(float(x), 3) + 0.0:.3f}" for x in iop))
    except (TypeError, ValueError):
        values.append(str(iop))
    return "blank-uid-" + hashlib.sha256("\0".join(values).encode("utf-8", "replace")).hexdigest()[:12]


def scan_folder(path: str | os.PathLike[str], progress: Progress | None = None) -> DicomScan:
    """Read the headers of every file under ``path`` (recursively) and group the images by series.

    Images with a blank SeriesInstanceUID are grouped by :func:`blank_uid_key`.

    Raises
    ------
    InputError
        If ``path`` does not exist, or holds no file at all.
    """
    with held_library_warnings():
        return _scan_folder(path, progress)


def _scan_folder(path: str | os.PathLike[str], progress: Progress | None) -> DicomScan:
    from pydicom.errors import InvalidDicomError

    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    files = _list_files(root)
    if not files:
        raise InputError(f"{root}: the folder is empty")

    by_uid: dict[str, DicomSeries] = {}
    skipped: list[tuple[str, str]] = []
    corrupt_unknown: list[tuple[str, str]] = []

    def corrupt(f: Path, uid: str, reason: str) -> None:
        if uid:
            by_uid.setdefault(uid, DicomSeries(uid)).corrupt.append(str(f))
        else:
            corrupt_unknown.append((str(f), reason))

    for n, f in enumerate(files):
        if progress is not None:
            progress(n, len(files), "reading DICOM headers")
        try:
            ds = _read_header(f)
        except InvalidDicomError:
            skipped.append((str(f), "not a DICOM file"))
            continue
        except Exception as exc:  # a DICOM file whose header cannot be parsed
            if _has_dicm_magic(f):
                corrupt(f, _series_uid_of_broken(f), f"corrupt or truncated DICOM file ({type(exc).__name__}: {brief(exc)})")
            else:
                skipped.append((str(f), "not a DICOM file"))
            continue
        sop_class = str(ds.get("SOPClassUID", "") or "")
        if not sop_class and hasattr(ds, "file_meta"):
            sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
        kind = _sop_kind(sop_class)
        if kind is not None:
            skipped.append((str(f), kind))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            if sop_class in _IMAGE_SOP_CLASSES or "Rows" in ds:
                corrupt(f, uid, "corrupt or truncated DICOM file (an image object without pixel data)")
            else:
                skipped.append((str(f), "no pixel data"))
            continue
        blank = not uid
        if blank:
            uid = blank_uid_key(ds)
        s = by_uid.setdefault(uid, DicomSeries(uid, blank_uid=blank))
        s.headers.append(ds)
        s.paths.append(str(f))
    if progress is not None:
        progress(len(files), len(files), "reading DICOM headers")
    series = sorted(by_uid.values(), key=lambda s: (-s.n_images(), s.uid))
    return DicomScan(str(root), series, skipped, len(files), corrupt_unknown)


def _series_uid_of_broken(path: Path) -> str:
    """Best-effort SeriesInstanceUID of a file whose full header could not be read."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True, specific_tags=["SeriesInstanceUID"])
        return str(ds.get("SeriesInstanceUID", "") or "")
    except Exception:
        return ""


def select_series(scan: DicomScan, series_uid: str | None = None, modality: str | None = "CT") -> DicomSeries:
    """Pick the series to load.

    With ``series_uid`` that series is taken (it must exist and, if ``modality`` is given, be of
    that modality). Without it, the only series of ``modality`` is taken; several are refused
    with the list, so that the user can choose with ``--series``.
    """
    usable = [s for s in scan.series if s.headers]
    if scan.corrupt_unknown_series and not usable:
        f, reason = scan.corrupt_unknown_series[0]
        raise InputError(f"{f}: {reason}")
    broken = [s for s in scan.series if s.corrupt]
    if broken and not usable:
        raise InputError(f"{broken[0].corrupt[0]}: corrupt or truncated DICOM file; no image of its series can be read")
    if not usable:
        what = Counter(reason for _, reason in scan.skipped)
        found = ", ".join(f"{n} {r}" for r, n in what.most_common()) or "nothing"
        raise InputError(f"{scan.root}: no DICOM image series found ({scan.n_files} files: {found})")

    def listing(items: Iterable[DicomSeries]) -> str:
        return "; ".join(
            f"{brief(s.uid, 70)} ({'blank SeriesInstanceUID, ' if s.blank_uid else ''}"
            f"{brief(s.modality, 10) or '?'}, {s.n_images()} images"
            f"{', ' + brief(repr(s.description), 70) if s.description else ''})"
            for s in items
        )

    if series_uid:
        chosen = [s for s in usable if s.uid == series_uid]
        if not chosen:
            raise InputError(f"{scan.root}: no series with SeriesInstanceUID (or key) {series_uid}; found: {listing(usable)}")
        pick = chosen[0]
    else:
        wanted = [s for s in usable if modality is None or s.modality == modality]
        if not wanted:
            raise InputError(
                f"{scan.root}: no {modality} series found (this command needs {modality}); found: {listing(usable)}"
            )
        if len(wanted) > 1:
            raise InputError(
                f"{scan.root}: {len(wanted)} {modality or 'image'} series found, choose one with --series UID: "
                f"{listing(wanted)}"
            )
        pick = wanted[0]
    if modality is not None and pick.modality != modality:
        raise InputError(
            f"{pick.paths[0]}: series {pick.uid} is {pick.modality or 'of unknown modality'}, this command needs {modality}"
        )
    if pick.corrupt:
        raise InputError(
            f"{pick.corrupt[0]}: corrupt or truncated DICOM file in series {pick.uid} "
            f"({len(pick.corrupt)} such file(s)); remove or replace it and load again"
        )
    if scan.corrupt_unknown_series:
        f, reason = scan.corrupt_unknown_series[0]
        raise InputError(f"{f}: {reason}; it may belong to the series being loaded, so nothing was loaded")
    return pick


# ---------------------------------------------------------------------------------------------
# Slices of a series
# ---------------------------------------------------------------------------------------------
def _tag(keyword: str) -> str:
    """The DICOM tag of a keyword as written in the standard, e.g. '(0028,1053)'."""
    from pydicom.datadict import tag_for_keyword

    t = tag_for_keyword(keyword)
    return f"({t >> 16:04X},{t & 0xFFFF:04X})" if t is not None else "(?)"


def _show(v: Any) -> str:
    """A header value as written in messages: numbers short, NaN and infinity spelled out."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, (float, int, np.floating, np.integer)):
        f = float(v)
        if np.isnan(f):
            return "NaN"
        return ("-infinity" if f < 0 else "infinity") if np.isinf(f) else f"{f:g}"
    return brief(repr(v), 80)


def _impossible(path: str, keyword: str, value: Any, why: str) -> InputError:
    return InputError(f"{path}: {keyword} {_show(value)} is impossible (tag {_tag(keyword)}): {why}; nothing was loaded")


def _floats(value: Any, n: int, what: str, path: str) -> np.ndarray:
    """``n`` finite numbers of the attribute ``what`` (a DICOM keyword) or an :class:`InputError`."""
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"{path}: {what} (tag {_tag(what)}) is missing or not numeric ({brief(repr(value), 80)})"
        ) from None
    if arr.shape != (n,):
        raise InputError(f"{path}: {what} (tag {_tag(what)}) must hold {n} number{'s' if n > 1 else ''}, got {brief(repr(value), 80)}")
    if not np.all(np.isfinite(arr)):
        raise _impossible(path, what, arr.tolist() if n > 1 else arr[0], "not a finite number")
    return arr


def _orientation(iop: Any, path: str) -> tuple[np.ndarray, np.ndarray]:
    v = _floats(iop, 6, "ImageOrientationPatient", path)
    r, c = v[:3], v[3:]
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 1e-6 or nc < 1e-6:
        which = "row" if nr < 1e-6 else "column"
        raise _impossible(path, "ImageOrientationPatient", v.tolist(), f"the {which} direction is a zero vector")
    if abs(float(r @ c)) / (nr * nc) > 1 - 1e-6:
        raise _impossible(path, "ImageOrientationPatient", v.tolist(), "the row and column directions are parallel")
    if abs(nr - 1) > 1e-3 or abs(nc - 1) > 1e-3 or abs(float(r @ c)) > 1e-3:
        raise _impossible(path, "ImageOrientationPatient", v.tolist(),
                          "the row and column directions must be two orthogonal unit vectors")
    # Re-orthonormalise the 6-digit rounding of the header.
    r = r / nr
    c = c - (c @ r) * r
    return r, c / np.linalg.norm(c)


def _pixel_spacing(ps: Any, keyword: str, path: str) -> tuple[float, float]:
    psv = _floats(ps, 2, keyword, path)
    if np.any(psv <= 0):
        raise _impossible(path, keyword, psv.tolist(), "pixel sizes must be positive")
    return float(psv[0]), float(psv[1])


def _rescale(slope: Any, intercept: Any, path: str) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (1 and 0 when absent or empty), checked."""
    out = []
    for keyword, value, default in (("RescaleSlope", slope, 1.0), ("RescaleIntercept", intercept, 0.0)):
        if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
            out.append(default)
            continue
        x = float(_floats([value] if isinstance(value, (str, bytes, int, float)) else value, 1, keyword, path)[0])
        out.append(x)
    if out[0] == 0:
        raise _impossible(path, "RescaleSlope", 0, "every stored value would become the intercept")
    return out[0], out[1]


def _whole(ds: Any, keyword: str, path: str, default: int) -> int:
    v = ds.get(keyword, None)
    if v is None or (isinstance(v, str) and not v.strip()):
        return default
    try:
        return int(v)
    except (TypeError, ValueError):
        raise InputError(f"{path}: {keyword} (tag {_tag(keyword)}) is not a whole number ({brief(repr(v), 40)})") from None


def _check_image_pixel_module(ds: Any, path: str) -> tuple[int, int, int]:
    """Rows, Columns and NumberOfFrames after refusing values no image can have."""
    rows, cols = _whole(ds, "Rows", path, 0), _whole(ds, "Columns", path, 0)
    for keyword, n in (("Rows", rows), ("Columns", cols)):
        if n < 1:
            raise _impossible(path, keyword, n, "an image needs at least one row and one column")
    spp = _whole(ds, "SamplesPerPixel", path, 1)
    if spp < 1:
        raise _impossible(path, "SamplesPerPixel", spp, "a pixel holds at least one sample")
    if spp != 1:
        raise InputError(f"{path}: {spp} samples per pixel (a colour image); a scan volume needs 1")
    n_frames = _whole(ds, "NumberOfFrames", path, 1)
    if n_frames < 1:
        raise _impossible(path, "NumberOfFrames", n_frames, "an image holds at least one frame")
    bits_alloc = _whole(ds, "BitsAllocated", path, 16)
    if not (bits_alloc == 1 or (bits_alloc % 8 == 0 and 8 <= bits_alloc <= 64)):
        raise _impossible(path, "BitsAllocated", bits_alloc, "it must be 1 or a multiple of 8 up to 64")
    bits_stored = _whole(ds, "BitsStored", path, bits_alloc)
    if not 1 <= bits_stored <= bits_alloc:
        raise _impossible(path, "BitsStored", bits_stored, f"it must be between 1 and BitsAllocated ({bits_alloc})")
    rep = _whole(ds, "PixelRepresentation", path, 0)
    if rep not in (0, 1):
        raise _impossible(path, "PixelRepresentation", rep, "it must be 0 (unsigned) or 1 (signed)")
    return rows, cols, n_frames


def _lookup(groups: Sequence[Any], seq: str, attr: str) -> Any:
    for g in groups:
        if g is not None and seq in g and len(g[seq].value):
            item = g[seq][0]
            if attr in item:
                return item[attr].value
    return None


def _optional_int(value: Any) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _optional_float(value: Any) -> float | None:
    try:
        f = None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None
    return f if f is not None and np.isfinite(f) else None


def _slices_of(ds: Any, path: str) -> list[_Slice]:
    rows, cols, n_frames = _check_image_pixel_module(ds, path)
    image_type_values = [str(t).strip().upper() for t in (ds.get("ImageType", []) or [])]
    localizer = "LOCALIZER" in image_type_values
    sop_uid = str(ds.get("SOPInstanceUID", ""))
    inst = int(ds.get("InstanceNumber", 0) or 0)
    # What may tell apart several images at one position (echoes, phases, energies).
    echoes = ds.get("EchoNumbers", None)
    if echoes is not None and not isinstance(echoes, (str, bytes, int, float)) and len(echoes) == 1:
        echoes = echoes[0]
    tells = dict(
        echo_number=_optional_int(echoes), echo_time=_optional_float(ds.get("EchoTime", None)),
        temporal=_optional_int(ds.get("TemporalPositionIdentifier", None)),
        acquisition=_optional_int(ds.get("AcquisitionNumber", None)), image_type="\\".join(image_type_values),
    )

    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
        per = ds.PerFrameFunctionalGroupsSequence
        if len(per) != n_frames:
            raise InputError(f"{path}: {len(per)} per-frame functional groups for {n_frames} frames")
        out = []
        for f in range(n_frames):
            groups = (per[f], shared)
            label = f"{path} [frame {f + 1}]"
            ipp = _lookup(groups, "PlanePositionSequence", "ImagePositionPatient")
            iop = _lookup(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
            ps = _lookup(groups, "PixelMeasuresSequence", "PixelSpacing")
            slope = _lookup(groups, "PixelValueTransformationSequence", "RescaleSlope")
            icpt = _lookup(groups, "PixelValueTransformationSequence", "RescaleIntercept")
            if slope is None:
                slope = ds.get("RescaleSlope", None)
            if icpt is None:
                icpt = ds.get("RescaleIntercept", None)
            r, c = _orientation(iop, label)
            frame_tells = dict(tells)
            te = _optional_float(_lookup(groups, "MREchoSequence", "EffectiveEchoTime"))
            if te is not None:
                frame_tells["echo_time"] = te
            tpi = _optional_int(_lookup(groups, "FrameContentSequence", "TemporalPositionIndex"))
            if tpi is not None:
                frame_tells["temporal"] = tpi
            out.append(
                _Slice(path, f, _floats(ipp, 3, "ImagePositionPatient", label), r, c,
                       _pixel_spacing(ps, "PixelSpacing", label), rows, cols, *_rescale(slope, icpt, label),
                       inst * 100000 + f, sop_uid, localizer, multiframe=True, **frame_tells)
            )
        return out
    if n_frames > 1:
        raise InputError(f"{path}: multi-frame image ({n_frames} frames) without per-frame positions cannot be placed in space")
    r, c = _orientation(ds.get("ImageOrientationPatient"), path)
    ps, ps_keyword = ds.get("PixelSpacing", None), "PixelSpacing"
    if ps is None:
        ps, ps_keyword = ds.get("ImagerPixelSpacing", None), "ImagerPixelSpacing"
        if ps is None:
            ps_keyword = "PixelSpacing"
    return [
        _Slice(path, 0, _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", path), r, c,
               _pixel_spacing(ps, ps_keyword, path), rows, cols,
               *_rescale(ds.get("RescaleSlope", None), ds.get("RescaleIntercept", None), path), inst, sop_uid,
               localizer, **tells)
    ]


def _consistent_slices(series: DicomSeries, notes: list[str]) -> list[_Slice]:
    slices: list[_Slice] = []
    for ds, path in zip(series.headers, series.paths):
        slices.extend(_slices_of(ds, path))

    loc = [s for s in slices if s.localizer]
    if loc and len(loc) < len(slices):
        notes.append(f"skipped {len(loc)} localizer image(s) of the series (e.g. {loc[0].label})")
        slices = [s for s in slices if not s.localizer]

    def key(s: _Slice) -> tuple:
        return (s.rows, s.columns, tuple(np.round(s.normal, 3)))

    groups: dict[tuple, list[_Slice]] = defaultdict(list)
    for s in slices:
        groups[key(s)].append(s)
    if len(groups) > 1:
        ranked = sorted(groups.values(), key=len, reverse=True)
        main = ranked[0]
        desc = ", ".join(
            f"{len(g)} image(s) of {g[0].columns}x{g[0].rows} with normal {np.round(g[0].normal, 3).tolist()} (e.g. {g[0].label})"
            for g in ranked
        )
        if len(main) < MAJORITY_SHARE * len(slices):
            raise InputError(f"series {series.uid} mixes image sizes or orientations: {desc}; nothing was loaded")
        others = len(slices) - len(main)
        notes.append(f"skipped {others} image(s) whose size or orientation differs from the other {len(main)}: {desc}")
        slices = main

    if len(slices) < 2:
        raise InputError(
            f"{slices[0].label}: series {series.uid} has a single image; a volume needs at least 2 slices"
        )
    check_voxel_count((len(slices), slices[0].rows, slices[0].columns), slices[0].label)

    ref = slices[0]
    for s in slices[1:]:
        if np.abs(s.row_cosine - ref.row_cosine).max() > 1e-3 or np.abs(s.column_cosine - ref.column_cosine).max() > 1e-3:
            raise InputError(f"{s.label}: ImageOrientationPatient differs from {ref.label}; nothing was loaded")
        if abs(s.pixel_spacing[0] - ref.pixel_spacing[0]) > 1e-3 * ref.pixel_spacing[0] or abs(
            s.pixel_spacing[1] - ref.pixel_spacing[1]
        ) > 1e-3 * ref.pixel_spacing[1]:
            raise InputError(
                f"{s.label}: PixelSpacing {list(s.pixel_spacing)} differs from {list(ref.pixel_spacing)} in {ref.label}"
            )
    return slices


# ---------------------------------------------------------------------------------------------
# Several images per slice position: echoes, phases, acquisitions, image types
# ---------------------------------------------------------------------------------------------
#: Attributes tried, in this order, to tell apart the images that share a slice position (and an
#: echo): contrast phases or temporal positions, repeated acquisitions, dual-energy images.
PHASE_ATTRIBUTES = ("TemporalPositionIdentifier", "AcquisitionNumber", "ImageType")
_FIELD = {"EchoNumbers": "echo_number", "EchoTime": "echo_time", "TemporalPositionIdentifier": "temporal",
          "AcquisitionNumber": "acquisition", "ImageType": "image_type"}
_PHASE_WORDS = {"TemporalPositionIdentifier": ("phase", "phases"), "AcquisitionNumber": ("acquisition", "acquisitions"),
                "ImageType": ("image type", "image types")}


@dataclass
class _Split:
    """How the images of a series that share slice positions are told apart.

    ``echoes`` and ``phases`` map the number the user chooses with (``--echo N``, ``--phase N``)
    to the attribute value it stands for; empty when the series has one of each.
    """

    echo_attribute: str | None = None  # "EchoNumbers", or "EchoTime" when EchoNumbers do not differ
    echoes: dict[int, Any] = field(default_factory=dict)
    echo_times: dict[int, float | None] = field(default_factory=dict)
    phase_attribute: str | None = None
    phases: dict[int, Any] = field(default_factory=dict)


def _position_index(slices: list[_Slice]) -> list[int]:
    """For each image, the index of its slice position (positions closer than DUPLICATE_TOL_MM are one)."""
    normal = slices[0].normal
    s = np.array([float(x.position @ normal) for x in slices])
    order = np.argsort(s, kind="stable")
    idx = [0] * len(s)
    cur = 0
    for n, i in enumerate(order):
        if n and s[i] - s[order[n - 1]] >= DUPLICATE_TOL_MM:
            cur += 1
        idx[i] = cur
    return idx


def _differs(keys: list[Any], values: list[Any]) -> bool:
    """Whether two images with the same key (slice position, ...) differ in value."""
    seen: dict[Any, Any] = {}
    for k, v in zip(keys, values):
        if seen.setdefault(k, v) != v:
            return True
    return False


def _split_of(slices: list[_Slice]) -> _Split:
    split = _Split()
    keys: list[Any] = _position_index(slices)
    for attribute in ("EchoNumbers", "EchoTime"):
        values = [getattr(s, _FIELD[attribute]) for s in slices]
        if None not in values and _differs(keys, values):
            split.echo_attribute = attribute
            distinct = sorted(set(values))
            if attribute == "EchoNumbers":
                split.echoes = {int(v): v for v in distinct}
            else:  # numbered 1, 2, ... by echo time
                split.echoes = {n + 1: v for n, v in enumerate(distinct)}
            for n, v in split.echoes.items():
                tes = sorted({s.echo_time for s in slices if getattr(s, _FIELD[attribute]) == v and s.echo_time is not None})
                split.echo_times[n] = tes[0] if tes else None
            keys = [(k, v) for k, v in zip(keys, values)]
            break
    for attribute in PHASE_ATTRIBUTES:
        values = [getattr(s, _FIELD[attribute]) for s in slices]
        if None not in values and _differs(keys, values):
            split.phase_attribute = attribute
            distinct = sorted(set(values))
            if attribute == "ImageType":
                split.phases = {n + 1: v for n, v in enumerate(distinct)}
            else:
                split.phases = {int(v): v for v in distinct}
            break
    return split


def _ms(te: float | None) -> str:
    return "" if te is None else f" (TE {round(te, 1):g} ms)"


def _echo_list(split: _Split) -> str:
    return ", ".join(f"{n}{_ms(split.echo_times[n])}" for n in split.echoes)


def _phase_list(split: _Split) -> str:
    if split.phase_attribute == "ImageType":
        return ", ".join(f"{n} ({v or 'blank'})" for n, v in split.phases.items())
    return ", ".join(str(n) for n in split.phases)


def _choose_sub_volume(
    slices: list[_Slice], series: DicomSeries, where: str, echo: int | None, phase: int | None, notes: list[str]
) -> list[_Slice]:
    """The images of one echo and one phase, noting in ``notes`` what the series held and what was taken."""
    split = _split_of(slices)
    if echo is not None:
        echo = int(echo)
        if not split.echoes:
            numbers = sorted({s.echo_number for s in slices if s.echo_number is not None})
            if numbers != [echo]:
                held = f"only echo {numbers[0]}{_ms(slices[0].echo_time)}" if len(numbers) == 1 else \
                    "no EchoNumbers" if not numbers else f"echo numbers {numbers} at different positions"
                raise InputError(f"{where}: no echo {echo} in series {series.uid}: its images record {held}; "
                                 f"leave out --echo")
        elif echo not in split.echoes:
            raise InputError(f"{where}: no echo {echo} in series {series.uid}; it holds {len(split.echoes)} echoes: "
                             f"{_echo_list(split)}; choose one of these with --echo N")
    if phase is not None:
        phase = int(phase)
        if not split.phases:
            raise InputError(f"{where}: series {series.uid} holds one image per slice position "
                             f"(and echo), so there is no phase {phase} to choose; leave out --phase")
        if phase not in split.phases:
            one, many = _PHASE_WORDS[split.phase_attribute or ""]
            raise InputError(f"{where}: no phase {phase} in series {series.uid}; it holds {len(split.phases)} "
                             f"{many} ({split.phase_attribute}): {_phase_list(split)}; choose one of these with --phase N")
    if split.echoes:
        n = echo if echo is not None else next(iter(split.echoes))
        value = split.echoes[n]
        slices = [s for s in slices if getattr(s, _FIELD[split.echo_attribute or ""]) == value]
        how = "(EchoNumbers)" if split.echo_attribute == "EchoNumbers" else \
            "(told apart by EchoTime, numbered by it: no EchoNumbers tell them apart)"
        notes.append(f"{len(split.echoes)} echoes in this series {how}: {_echo_list(split)}; echo {n}"
                     f"{_ms(split.echo_times[n])} loaded" + (", as asked" if echo is not None else
                                                              "; choose another with --echo N"))
    if split.phases:
        n = phase if phase is not None else next(iter(split.phases))
        value = split.phases[n]
        slices = [s for s in slices if getattr(s, _FIELD[split.phase_attribute or ""]) == value]
        one, many = _PHASE_WORDS[split.phase_attribute or ""]
        shown = f" ({value or 'blank'})" if split.phase_attribute == "ImageType" else ""
        notes.append(f"{len(split.phases)} {many} at the same slice positions in this series "
                     f"({split.phase_attribute}): {_phase_list(split)}; {one} {n}{shown} loaded"
                     + (", as asked" if phase is not None else "; choose another with --phase N"))
    return slices


def series_sub_volumes(series: DicomSeries) -> dict[str, Any]:
    """The echoes and phases of a series whose images share slice positions, for ``planner info``.

    ``{"echo_attribute": ..., "echoes": [{"echo": n, "echo_time_ms": te}], "phase_attribute": ...,
    "phases": [{"phase": n, "value": v}]}``; the lists are empty for an ordinary series.
    """
    slices = _consistent_slices(series, [])
    split = _split_of(slices)
    return {
        "echo_attribute": split.echo_attribute,
        "echoes": [{"echo": n, "echo_time_ms": split.echo_times[n]} for n in split.echoes],
        "phase_attribute": split.phase_attribute,
        "phases": [{"phase": n, "value": v} for n, v in split.phases.items()],
    }


def format_sub_volumes(sub: dict[str, Any]) -> list[str]:
    """``planner info``'s lines for :func:`series_sub_volumes`, e.g. '8 echoes: 1 (TE 6.3 ms), ...'."""
    lines = []
    if sub["echoes"]:
        lines.append(f"{len(sub['echoes'])} echoes: " + ", ".join(
            f"{e['echo']}{_ms(e['echo_time_ms'])}" for e in sub["echoes"]) + " (choose with --echo N)")
    if sub["phases"]:
        attribute = sub["phase_attribute"]
        many = _PHASE_WORDS[attribute][1]
        shown = (", ".join(f"{p['phase']} ({p['value'] or 'blank'})" for p in sub["phases"]) if attribute == "ImageType"
                 else ", ".join(str(p["phase"]) for p in sub["phases"]))
        lines.append(f"{len(sub['phases'])} {many} ({attribute}): {shown} (choose with --phase N)")
    return lines


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}
_PLAIN_FILE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # pixel bytes stored as-is in the file
_PIXEL_TAG = b"\xe0\x7f\x10\x00"


def _read_trailing_pixels(path: str, out: memoryview) -> bool:
    """Read the pixel bytes of an uncompressed file straight into ``out``.

    Only for files whose last element is Pixel Data of exactly ``len(out)`` bytes (the element
    header just before them is checked): no second parse of the header, no extra copy.
    Returns False when the layout is not that simple (the caller then goes through pydicom).
    """
    nbytes = out.nbytes
    length = nbytes + (nbytes & 1)
    try:
        size = os.path.getsize(path)
        if size < length + 12:
            return False
        with open(path, "rb") as f:
            f.seek(size - length - 12)
            head = f.read(12)
            if int.from_bytes(head[8:12], "little") != length:
                return False
            if head[4:8] != _PIXEL_TAG and not (head[0:4] == _PIXEL_TAG and head[4:6] in (b"OW", b"OB")):
                return False
            return f.readinto(out) == nbytes
    except OSError:
        return False


def _pixel_format(ds: Any) -> tuple[str, int, int, bool]:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")) if meta is not None else "1.2.840.10008.1.2"
    bits_alloc = int(ds.get("BitsAllocated", 16))
    bits_stored = int(ds.get("BitsStored", bits_alloc))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    return ts, bits_alloc, bits_stored, signed


def _mask_bits(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Drop the bits above BitsStored (sign-extending signed values)."""
    bits_alloc = arr.dtype.itemsize * 8
    if bits_stored >= bits_alloc:
        return arr
    shift = bits_alloc - bits_stored
    if signed:
        return (arr << shift) >> shift
    return arr & np.array((1 << bits_stored) - 1, dtype=arr.dtype)


def _decode_file(ds: Any, path: str) -> np.ndarray:
    """Stored pixel values of a file as (frames, rows, columns), before rescale."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    ts, bits_alloc, bits_stored, signed = _pixel_format(ds)
    try:
        if ts in _NATIVE_SYNTAXES and bits_alloc in (8, 16, 32):
            dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_alloc // 8}")
            need = rows * cols * n_frames * dtype.itemsize
            raw = ds.PixelData
            if len(raw) < need:
                raise InputError(
                    f"{path}: pixel data is truncated ({len(raw)} bytes, {need} expected for "
                    f"{n_frames}x{rows}x{cols} at {bits_alloc} bits)"
                )
            arr = np.frombuffer(raw, dtype=dtype, count=rows * cols * n_frames).reshape(n_frames, rows, cols)
            return _mask_bits(arr, bits_stored, signed)
        arr = ds.pixel_array
    except InputError:
        raise
    except Exception as exc:
        name = getattr(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None), "name", ts)
        raise InputError(f"{path}: cannot decode the pixel data ({brief(name, 70)}): {one_line(exc)}") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (n_frames, rows, cols):
        raise InputError(f"{path}: decoded pixel data has shape {arr.shape}, header says {(n_frames, rows, cols)}")
    return arr


class _NeedsFloat(Exception):
    """Rescaled values do not fit int16: the volume is read again as float32."""


def _store(vol: np.ndarray, k: int, stored: np.ndarray, s: _Slice) -> None:
    """Rescale one frame's stored values into ``vol[k]``."""
    if vol.dtype == np.float32:
        vol[k] = stored.astype(np.float64) * s.slope + s.intercept
        return
    if not stored.dtype.isnative:  # Explicit VR Big Endian: the view below needs native bytes
        stored = stored.astype(stored.dtype.newbyteorder("="))
    icpt = int(s.intercept)
    lo, hi = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
    if lo + icpt < -32768 or hi + icpt > 32767:
        raise _NeedsFloat
    if stored.dtype.itemsize == 2 and (stored.dtype.kind == "i" or hi <= 32767):
        np.add(stored.view(np.int16), np.int16(icpt), out=vol[k])  # int16 arithmetic, no wrap
    else:
        np.add(stored, np.int32(icpt), out=vol[k], casting="unsafe")


def _read_file_into(vol: np.ndarray, ds: Any, path: str, targets: list[tuple[int, _Slice]]) -> None:
    """Decode one file and store its frames at their slice indices ``targets``."""
    ts, bits_alloc, bits_stored, signed = _pixel_format(ds)
    if (
        vol.dtype == np.int16 and len(targets) == 1 and ts in _PLAIN_FILE_SYNTAXES and bits_alloc == 16
        and int(ds.get("NumberOfFrames", 1) or 1) == 1
    ):
        k, s = targets[0]
        dest = vol[k]
        if _read_trailing_pixels(path, memoryview(dest).cast("B")):
            stored = _mask_bits(dest.view("<i2" if signed else "<u2"), bits_stored, signed)
            _store(vol, k, stored, s)  # in place when unmasked: numpy handles the overlap
            return
    frames = _decode_file(ds, path)
    for k, s in targets:
        _store(vol, k, frames[s.frame], s)


def _read_volume(
    series: DicomSeries, slices: list[_Slice], progress: Progress | None, workers: int | None
) -> np.ndarray:
    """Decode every slice (in parallel threads) straight into one (n, rows, cols) array.

    int16 when every slope is 1 and every intercept an integer and the values fit, else float32.
    """
    header_of = dict(zip(series.paths, series.headers))
    by_file: dict[str, list[tuple[int, _Slice]]] = defaultdict(list)
    for k, s in enumerate(slices):
        by_file[s.path].append((k, s))
    jobs = list(by_file.items())
    shape = (len(slices), slices[0].rows, slices[0].columns)
    integral = all(s.slope == 1.0 and float(s.intercept).is_integer() for s in slices)
    n_workers = workers or min(8, (os.cpu_count() or 1) * 2)
    for dtype in ((np.int16, np.float32) if integral else (np.float32,)):
        vol = np.empty(shape, dtype=dtype)
        try:
            if progress is not None:
                progress(0, len(jobs), "decoding slices")

            def work(job: tuple[str, list[tuple[int, _Slice]]]) -> None:
                _read_file_into(vol, header_of[job[0]], job[0], job[1])

            if n_workers <= 1 or len(jobs) < 4:
                for n, job in enumerate(jobs):
                    work(job)
                    if progress is not None:
                        progress(n + 1, len(jobs), "decoding slices")
            else:
                with ThreadPoolExecutor(max_workers=n_workers) as pool:
                    for n, _ in enumerate(pool.map(work, jobs)):
                        if progress is not None:
                            progress(n + 1, len(jobs), "decoding slices")
            return vol
        except _NeedsFloat:
            continue
    raise AssertionError("unreachable: float32 holds every rescaled value")


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------
def _meta_of(ds: Any, source: str, corrections: list[str]) -> ImageMeta:
    def g(name: str) -> str:
        v = ds.get(name, "")
        return "" if v is None else str(v)

    return ImageMeta(
        modality=g("Modality"),
        patient_id=g("PatientID"),
        patient_name=g("PatientName"),
        patient_birth_date=g("PatientBirthDate"),
        patient_sex=g("PatientSex"),
        study_instance_uid=g("StudyInstanceUID"),
        series_instance_uid=g("SeriesInstanceUID"),
        frame_of_reference_uid=g("FrameOfReferenceUID"),
        study_date=g("StudyDate"),
        acquisition_date=g("AcquisitionDate") or g("ContentDate") or g("SeriesDate"),
        study_description=g("StudyDescription"),
        series_description=g("SeriesDescription"),
        accession_number=g("AccessionNumber"),
        manufacturer=g("Manufacturer"),
        patient_position=g("PatientPosition"),
        source=source,
        source_format="DICOM",
        corrections=tuple(corrections),
    )


def load_series(
    series: DicomSeries,
    source: str = "",
    progress: Progress | None = None,
    workers: int | None = None,
    echo: int | None = None,
    phase: int | None = None,
) -> Image:
    """Assemble one series into an :class:`Image` on a regular, orthogonal grid.

    A series holding several images per slice position (echoes of a multi-echo MR, contrast
    phases or temporal positions, repeated acquisitions, dual-energy image types) is split:
    ``echo`` (the EchoNumbers value) and ``phase`` (the TemporalPositionIdentifier or
    AcquisitionNumber value, or the number ``planner info`` gives an ImageType) choose the
    sub-volume, the first of each by default; the corrections say what was there and what
    was loaded.

    Raises
    ------
    InputError
        For any problem that makes the volume unsafe to use; nothing partial is returned.
    """
    with held_library_warnings():
        return _load_series(series, source, progress, workers, echo, phase)


def _blank_uid_note(series: DicomSeries) -> str | None:
    blank = []
    if series.blank_uid:
        blank.append("SeriesInstanceUID")
    for keyword in ("StudyInstanceUID", "SOPInstanceUID"):
        if any(not str(h.get(keyword, "") or "").strip() for h in series.headers):
            blank.append(keyword)
    if not blank:
        return None
    what = " and ".join(blank) if len(blank) < 3 else f"{blank[0]}, {blank[1]} and {blank[2]}"
    note = f"{what} {'is' if len(blank) == 1 else 'are'} blank in these files (common after anonymisation)"
    if series.blank_uid:
        note += (f": the images were grouped as series {series.uid} by {', '.join(BLANK_UID_GROUPING[:-2])}, "
                 f"image size and orientation; a plan made on this scan is bound to it by the voxel hash alone")
    return note


def _load_series(
    series: DicomSeries, source: str, progress: Progress | None, workers: int | None, echo: int | None,
    phase: int | None,
) -> Image:
    notes: list[str] = []
    blank = _blank_uid_note(series)
    if blank:
        notes.append(blank)
    slices = _consistent_slices(series, notes)
    slices = _choose_sub_volume(slices, series, source or series.paths[0], echo, phase, notes)
    normal = slices[0].normal
    s_pos = np.array([float(s.position @ normal) for s in slices])
    order = np.lexsort((np.array([s.instance_number for s in slices]), s_pos))
    slices = [slices[i] for i in order]
    s_pos = s_pos[order]

    volume = _read_volume(series, slices, progress, workers)

    # Duplicates: identical copies are dropped, different images at one position refused.
    keep = [0]
    for k in range(1, len(slices)):
        if s_pos[k] - s_pos[keep[-1]] < DUPLICATE_TOL_MM:
            a, b = slices[keep[-1]], slices[k]
            if not np.array_equal(volume[keep[-1]], volume[k]):
                raise InputError(
                    f"{b.label}: a different image at the same position as {a.label} "
                    f"({s_pos[k]:.2f} mm along the slice normal); the series may mix two acquisitions "
                    f"or phases, nothing was loaded"
                )
            notes.append(f"dropped {b.label}: an identical duplicate of {a.label}")
            continue
        keep.append(k)
    if len(keep) < len(slices):
        slices = [slices[k] for k in keep]
        volume = volume[keep]
        s_pos = s_pos[keep]
    if len(slices) < 2:
        raise InputError(f"{slices[0].label}: series {series.uid} has a single distinct slice position; a volume needs 2")

    ref = slices[0]
    rel = np.array([s.position - ref.position for s in slices])
    u = rel @ ref.row_cosine  # in-plane offsets of each slice, mm
    v = rel @ ref.column_cosine
    ds_ = s_pos - s_pos[0]
    nominal = float(np.median(np.diff(s_pos)))
    # Positions must lie on one straight line (a tilted one is fine).
    fit_u = np.polyfit(ds_, u, 1)
    fit_v = np.polyfit(ds_, v, 1)
    resid = np.hypot(u - np.polyval(fit_u, ds_), v - np.polyval(fit_v, ds_))
    line_tol = max(0.01, 0.1 * min(ref.pixel_spacing))
    if resid.max() > line_tol:
        worst = int(np.argmax(resid))
        raise InputError(
            f"{slices[worst].label}: slice position is {resid[worst]:.2f} mm off the line of the other slices; "
            f"inconsistent ImagePositionPatient, nothing was loaded"
        )
    drift = float(np.hypot(u[-1] - u[0], v[-1] - v[0]))
    tilted = drift > max(0.01, 0.05 * min(ref.pixel_spacing))
    if tilted:
        angle = float(np.degrees(np.arctan2(np.hypot(fit_u[0], fit_v[0]), 1.0)))
        gantry = series.first.get("GantryDetectorTilt", None)
        notes.append(
            f"gantry tilt: slices stacked {angle:.2f} degrees off their normal"
            + (f" (header GantryDetectorTilt {float(gantry):g})" if gantry not in (None, "") else "")
            + "; resampled onto an orthogonal grid"
        )

    tol = max(0.005, REGULAR_TOL_FRACTION * nominal)
    span = float(s_pos[-1] - s_pos[0])
    regular_step = span / (len(slices) - 1)
    off_grid = np.abs(ds_ - regular_step * np.arange(len(slices)))
    irregular = off_grid.max() > tol
    if irregular:
        steps = np.diff(s_pos)
        big = int(np.argmax(steps))
        if steps[big] > MAX_GAP_STEPS * nominal + tol:
            raise InputError(
                f"{slices[big + 1].label}: gap of {steps[big]:.2f} mm after {slices[big].label} "
                f"(nominal slice step {nominal:.2f} mm); more than {MAX_GAP_STEPS:g} steps is too large to "
                f"interpolate safely, nothing was loaded"
            )
        n_out = int(round(span / nominal)) + 1
        regular_step = span / (n_out - 1)
        uneven = [f"{d:.2f}" for d in sorted(set(np.round(steps, 2)))]
        notes.append(
            f"uneven slice spacing (steps {', '.join(uneven)} mm; largest gap {steps[big]:.2f} mm after "
            f"{slices[big].label}): resampled to {n_out} slices every {regular_step:.3f} mm"
        )

    if not tilted and not irregular:
        affine = geometry.affine_from_dicom(
            ref.row_cosine, ref.column_cosine, ref.pixel_spacing, ref.position, normal * regular_step
        )
    else:
        volume, affine = restack_slices(
            volume, s_pos - s_pos[0], u, v, ref.row_cosine, ref.column_cosine, ref.pixel_spacing,
            ref.position, regular_step,
        )
    meta = _meta_of(series.first, source, notes)
    return Image(volume, affine, meta)


def load_dicom(
    path: str | os.PathLike[str],
    series_uid: str | None = None,
    modality: str | None = "CT",
    progress: Progress | None = None,
    workers: int | None = None,
    echo: int | None = None,
    phase: int | None = None,
) -> Image:
    """Load one DICOM series from a folder (searched recursively) or a single file.

    Parameters
    ----------
    path : folder or file
    series_uid : str, optional
        SeriesInstanceUID to load when the folder holds several series.
    modality : str or None
        Required modality (``"CT"`` by default); ``None`` accepts any.
    progress : callable, optional
        ``progress(done, total, what)``.
    workers : int, optional
        Threads used to decode slices.
    echo, phase : int, optional
        The sub-volume of a series with several images per slice position (see :func:`load_series`).
    """
    with held_library_warnings():
        scan = scan_folder(path, progress)
        series = select_series(scan, series_uid, modality)
        return load_series(series, str(path), progress, workers, echo=echo, phase=phase)


__all__ = ["DicomScan", "DicomSeries", "scan_folder", "select_series", "load_series", "load_dicom", "GeometryError",
           "series_sub_volumes", "format_sub_volumes", "blank_uid_key"]
