"""Byte-level fuzzing of every reader of the product: seeds, mutations and the property checked.

Shared by the short campaign of the test suite (``tests/test_fuzz.py``, Hypothesis) and the long
one (``benchmarks/fuzz.py``, ``make fuzz``). A mutation draws its choices from a ``Chooser``:
Hypothesis data in the tests (so that failures shrink and replay), a seeded ``random.Random``
in the long campaign; the same code mutates in both.

The property, for every reader and every input: the reader returns a usable object (an image
with a finite affine and a plausible shape, a structure set on the CT grid, a dict) or raises a
:class:`~planner.errors.PlannerError` whose message is one line (no newline, no numpy repr,
at most ``MAX_MESSAGE`` characters); never another exception, never a hang longer than
``TIME_LIMIT_S``, never a large allocation (refused through an address-space limit).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import resource
import signal
import sys
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dicomgen, when imported from benchmarks/

#: Seconds a reader may take on one small input before it counts as hung.
TIME_LIMIT_S = 10
#: Longest acceptable error message.
MAX_MESSAGE = 400
#: Address space a reader may add while reading one small input (larger requests fail).
MEMORY_HEADROOM = 1536 << 20


# ---------------------------------------------------------------------------------------------
# Choices
# ---------------------------------------------------------------------------------------------
class Chooser:
    """Where a mutation's choices come from."""

    def int(self, lo: int, hi: int) -> int:  # inclusive
        raise NotImplementedError

    def choice(self, items: list[Any]) -> Any:
        return items[self.int(0, len(items) - 1)]

    def bytes(self, n: int) -> bytes:
        return bytes(self.int(0, 255) for _ in range(n))


class RandomChooser(Chooser):
    def __init__(self, rng: Any):
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)


class HypothesisChooser(Chooser):
    def __init__(self, data: Any):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def bytes(self, n: int) -> bytes:
        return self.data.draw(self.st.binary(min_size=n, max_size=n))


# ---------------------------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------------------------
_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF]


def byte_mutation(data: bytes, c: Chooser) -> tuple[bytes, str]:
    """One byte-level mutation: bit flip, byte replacement, truncation, insertion or deletion of
    a run, a duplicated chunk, or an interesting integer written over the data."""
    n = len(data)
    op = c.int(0, 6)
    pos = c.int(0, max(n - 1, 0))
    b = bytearray(data)
    if op == 0 and n:
        bit = c.int(0, 7)
        b[pos] ^= 1 << bit
        return bytes(b), f"flip bit {bit} of byte {pos}"
    if op == 1 and n:
        v = c.choice([0, 0xFF, 0x7F, 0x80, 0x20, 0x0A, c.int(0, 255)])
        b[pos] = v
        return bytes(b), f"byte {pos} = {v:#x}"
    if op == 2:
        cut = c.int(0, n)
        return data[:cut], f"truncate at {cut}"
    if op == 3:
        k = c.choice([1, 2, 4, 16, 256, c.int(1, 4096)])
        run = c.bytes(min(k, 16)) * (k // min(k, 16) + 1)
        run = run[:k] if c.int(0, 1) else bytes([run[0]]) * k
        return data[:pos] + run + data[pos:], f"insert {k} bytes at {pos}"
    if op == 4:
        k = c.choice([1, 2, 4, 16, 256, c.int(1, max(n, 1))])
        return data[:pos] + data[pos + k:], f"delete {k} bytes at {pos}"
    if op == 5 and n:
        k = c.int(1, min(n - pos, 4096))
        dest = c.int(0, n)
        return data[:dest] + data[pos:pos + k] + data[dest:], f"duplicate {k} bytes at {pos} to {dest}"
    width = c.choice([1, 2, 4, 8])
    value = c.choice(_INTERESTING) & ((1 << (8 * width)) - 1)
    order = c.choice(["little", "big"])
    b[pos:pos + width] = value.to_bytes(width, order)
    return bytes(b), f"write {value:#x} ({width} bytes, {order}) at {pos}"


_NUMBER = re.compile(rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_WEIRD_NUMBERS = [b"nan", b"NaN", b"inf", b"-inf", b"0", b"-1", b"1e308", b"-1e308", b"1e-320", b"4294967296",
                  b"18446744073709551616", b"99999999999999999999999", b"0.5", b"1e", b"--1", b""]


def huge_text(c: Chooser) -> bytes:
    return c.choice([b"x", b"9", b" ", b"\\", b"\x00", "\u00e9".encode()]) * c.choice([1000, 100_000])


def nrrd_header_mutation(data: bytes, c: Chooser) -> tuple[bytes, str]:
    """A mutation of an NRRD file's text header: numbers replaced (NaN, 0, -1, 1e308, ...), a
    value replaced by a huge string or another field's value, a line deleted or duplicated."""
    end = data.find(b"\n\n")
    if end < 0:
        return byte_mutation(data, c)
    head, rest = data[:end].split(b"\n"), data[end:]
    i = c.int(1 if len(head) > 1 else 0, len(head) - 1)
    line = head[i]
    op = c.int(0, 5)
    if op == 0:
        nums = list(_NUMBER.finditer(line))
        if nums:
            m = c.choice(nums)
            new = c.choice(_WEIRD_NUMBERS)
            head[i] = line[:m.start()] + new + line[m.end():]
            return b"\n".join(head) + rest, f"header line {i}: number {m.group()!r} -> {new!r}"
    if op == 1:
        key, sep, _ = line.partition(b":")
        new = c.choice([b"", b"nan", b"0", b"-1", b"1e308", b"none", b"(nan,nan,nan)", b"(1,0,0) (0,1,0)",
                        b"raw", b"gzip", b"bzip2", b"ascii", b"hex", b"double", b"int64", b"block",
                        b"list domain domain", huge_text(c)])
        head[i] = key + (sep or b":") + (b"=" if line[len(key) + 1:len(key) + 2] == b"=" else b"") + b" " + new
        return b"\n".join(head) + rest, f"header line {i}: value -> {new[:40]!r}"
    if op == 2 and len(head) > 1:
        del head[i]
        return b"\n".join(head) + rest, f"header line {i} deleted"
    if op == 3:
        head.insert(i, line)
        return b"\n".join(head) + rest, f"header line {i} duplicated"
    if op == 4:
        j = c.int(0, len(head) - 1)
        key = line.partition(b":")[0]
        value = head[j].partition(b":")[2]
        head[i] = key + b":" + value
        return b"\n".join(head) + rest, f"header line {i} takes the value of line {j}"
    return byte_mutation(data, c)


_JSON_REPLACEMENTS: list[Callable[[Chooser], Any]] = [
    lambda c: float("nan"), lambda c: float("inf"), lambda c: 0, lambda c: -1, lambda c: 1e308, lambda c: -1e308,
    lambda c: 10 ** 400, lambda c: "x" * c.choice([1000, 100_000]), lambda c: "", lambda c: None, lambda c: True,
    lambda c: [], lambda c: {}, lambda c: [1, 2], lambda c: [[0.0, 0.0, 0.0]], lambda c: {"a": 1},
    lambda c: "1.5", lambda c: [float("nan")] * 3, lambda c: ["a", "b", "c"],
]


def _json_paths(doc: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(doc, dict):
        for k in doc:
            yield from _json_paths(doc[k], path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _json_paths(v, path + (i,))


def json_mutation(data: bytes, c: Chooser) -> tuple[bytes, str]:
    """A structure-aware JSON mutation: a value replaced by NaN, 0, -1, 1e308, a huge string,
    a value of the wrong type; a key removed; an item duplicated; or very deep nesting."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return byte_mutation(data, c)
    paths = list(_json_paths(doc))
    path = c.choice(paths)
    op = c.int(0, 4)
    if op == 3:
        depth = c.choice([100, 10_000, 100_000])
        return b"[" * depth + b"1" + b"]" * depth, f"nesting {depth} deep"
    if not path:
        new = c.choice(_JSON_REPLACEMENTS)(c)
        return json.dumps(new).encode(), f"document -> {type(new).__name__}"
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    where = "/".join(str(k) for k in path)
    if op == 1 and isinstance(parent, dict):
        del parent[key]
        what = f"{where} removed"
    elif op == 2 and isinstance(parent, list):
        parent.insert(key, parent[key])
        what = f"{where} duplicated"
    else:
        new = c.choice(_JSON_REPLACEMENTS)(c)
        parent[key] = new
        what = f"{where} -> {str(new)[:30]}"
    return json.dumps(doc, indent=1).encode(), what


def gzip_inner_mutation(data: bytes, c: Chooser, inner: Callable[[bytes, Chooser], tuple[bytes, str]]) -> tuple[bytes, str]:
    """Mutate the content of a gzip file and compress it again."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, ValueError, zlib.error):
        return byte_mutation(data, c)
    new, what = inner(raw, c)
    return gzip.compress(new, compresslevel=1, mtime=0), f"inside gzip: {what}"


def mutate(data: bytes, reader: "Reader", c: Chooser, max_ops: int = 4) -> tuple[bytes, list[str]]:
    """1 to ``max_ops`` mutations of the reader's kinds applied one after the other."""
    ops = []
    for _ in range(c.int(1, max_ops)):
        kind = c.choice(reader.mutations)
        if kind == "bytes":
            data, what = byte_mutation(data, c)
        elif kind == "nrrd":
            data, what = nrrd_header_mutation(data, c)
        elif kind == "json":
            data, what = json_mutation(data, c)
        elif kind == "gzip":
            data, what = gzip_inner_mutation(data, c, byte_mutation)
        else:
            raise ValueError(kind)
        ops.append(what)
    return data, ops


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------
def tiny_image() -> "Image":
    """A 4 x 5 x 6 int16 image on an oblique grid, with a frame of reference."""
    from planner.images import Image, ImageMeta

    v = (np.arange(120, dtype=np.int16).reshape(4, 5, 6) * 7 - 400).astype(np.int16)
    a = np.eye(4)
    c, s = math.cos(0.3), math.sin(0.3)
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.8, 0.9, 2.5])
    a[:3, 3] = [-10.0, 5.0, 20.0]
    return Image(v, a, ImageMeta(modality="CT", source="tiny"))


def _write_tiny_series(folder: Path, n: int = 4) -> list[Path]:
    from planner.testing.dicom_write import write_ct_slices

    rows, cols = 6, 8
    pix = (np.arange(n * rows * cols).reshape(n, rows, cols) % 50 * 20 - 500).astype(np.int16)
    pos = np.array([[-4.0, -3.0, 2.5 * k] for k in range(n)])
    return write_ct_slices(folder, pix, pos, (1, 0, 0), (0, 1, 0), (1.0, 1.0), uid_seed="fuzz",
                           file_names=[f"IM{k:02d}.dcm" for k in range(n)])


@dataclass
class Reader:
    """One reader under fuzzing: how to make its seed and companions, and how to call it."""

    name: str
    filename: str  # the mutated file, inside the input folder
    mutations: list[str]
    prepare: Callable[[Path], bytes]  # writes the companions into a folder, returns the seed bytes
    call: Callable[[Path, "Context"], Any]  # reads the input folder
    kind: str  # image, structures, dict, points


@dataclass
class Context:
    """What structure readers need: the CT they place masks on."""

    ct: Any = None
    seeds: dict[str, bytes] = field(default_factory=dict)


def _ct_for_structures(folder: Path) -> Any:
    from planner.images import load_image

    _write_tiny_series(folder / "ct")
    return load_image(folder / "ct")


def _prep_dicom_file(folder: Path) -> bytes:
    from dicomgen import Acquisition, write_enhanced_ct

    acq = Acquisition(rows=5, columns=6, n_slices=3, step=2.0, pixel_spacing=(1.0, 1.2))
    return write_enhanced_ct(folder / "seed", acq, seed="fuzz").read_bytes()


def _prep_dicom_folder(folder: Path) -> bytes:
    files = _write_tiny_series(folder, 3)
    seed = files[1].read_bytes()
    files[1].unlink()
    return seed


def _prep_image(suffix: str) -> Callable[[Path], bytes]:
    def prep(folder: Path) -> bytes:
        from planner.images import save_image

        p = folder / f"seed{suffix}"
        save_image(tiny_image(), p)
        data = p.read_bytes()
        p.unlink()
        return data
    return prep


def _prep_slicer_seg(folder: Path) -> bytes:
    from planner.anatomy import StructureSet, save_slicer_seg
    from planner.images import load_image

    ct = load_image(folder.parents[1] / "ct")
    sset = StructureSet.for_image(ct)
    a = np.zeros(ct.shape, bool)
    a[1:3, 1:4, 2:5] = True
    b = np.zeros(ct.shape, bool)
    b[2:4, 2:5, 3:7] = True  # overlaps a: two layers, a 4D file
    sset.add("liver", a)
    sset.add("aorta", b)
    p = folder / "seed.seg.nrrd"
    save_slicer_seg(sset, p)
    data = p.read_bytes()
    p.unlink()
    return data


def _prep_dicom_seg(folder: Path) -> bytes:
    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    sources = [pydicom.dcmread(p) for p in sorted((folder.parents[1] / "ct").glob("*.dcm"))]
    pixels = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), np.uint8)
    pixels[1:3, 2:4, 2:6] = 1
    concept = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="liver", segmented_property_category=concept,
        segmented_property_type=concept, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type="BINARY", segment_descriptions=[desc],
        series_instance_uid=generate_uid(entropy_srcs=["fuzz-seg-series"]), series_number=7,
        sop_instance_uid=generate_uid(entropy_srcs=["fuzz-seg-sop"]), instance_number=1, manufacturer="test",
        manufacturer_model_name="test", software_versions="1", device_serial_number="1",
    )
    p = folder / "seed.dcm"
    seg.save_as(p)
    data = p.read_bytes()
    p.unlink()
    return data


def _prep_rtstruct(folder: Path) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from planner.anatomy.dicom_seg import RTSTRUCT_STORAGE
    from planner.images import load_image

    ct = load_image(folder.parents[1] / "ct")
    frame_uid = ct.meta.frame_of_reference_uid
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    fm.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fuzz-rt"])
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, fm.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StructureSetLabel = "RTSTRUCT", "FUZZ", "fuzz"
    ref = Dataset()
    ref.FrameOfReferenceUID = frame_uid
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([ref])
    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = 1, frame_uid, "liver"
    ds.StructureSetROISequence = DicomSequence([roi])
    item = Dataset()
    item.ReferencedROINumber, item.ROIDisplayColor = 1, [255, 20, 0]
    contours = []
    for z in (2.5, 5.0):
        c = Dataset()
        pts = [[-3, -2, z], [1, -2, z], [2, 0, z], [1, 1.5, z], [-3, 1, z]]
        c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(pts)
        c.ContourData = [f"{x:g}" for p in pts for x in p]
        contours.append(c)
    item.ContourSequence = DicomSequence(contours)
    ds.ROIContourSequence = DicomSequence([item])
    p = folder / "seed.dcm"
    ds.save_as(p, enforce_file_format=True)
    data = p.read_bytes()
    p.unlink()
    return data


def _label_map_image(folder: Path) -> Any:
    from planner.images import Image, load_image

    ct = load_image(folder.parents[1] / "ct")
    v = np.zeros(ct.shape, np.uint8)
    v[1:3, 1:4, 2:5] = 1
    v[2:4, 4:6, 5:8] = 2
    return Image(v, ct.affine)


def _write_raw_nrrd(image: Any, path: Path) -> None:
    import nrrd

    header = {"space": "left-posterior-superior", "space directions": image.affine[:3, :3].T.tolist(),
              "space origin": image.affine[:3, 3].tolist(), "kinds": ["domain"] * 3, "encoding": "raw"}
    nrrd.write(str(path), np.ascontiguousarray(image.voxels), header, index_order="C")


_TABLE = {"1": "liver", "2": "aorta"}


def _prep_label_map(folder: Path) -> bytes:
    (folder / "labels.json").write_text(json.dumps(_TABLE))
    p = folder / "seed.nrrd"
    _write_raw_nrrd(_label_map_image(folder), p)
    data = p.read_bytes()
    p.unlink()
    return data


def _prep_label_table(folder: Path) -> bytes:
    _write_raw_nrrd(_label_map_image(folder), folder / "labels.nrrd")
    return json.dumps({"labels": {k: {"name": v} for k, v in _TABLE.items()}}, indent=1).encode()


def _prep_markups(folder: Path) -> bytes:
    doc = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {"type": "Fiducial", "name": "oblique", "coordinateSystem": "LPS", "coordinateUnits": "mm",
             "controlPoints": [{"id": str(n), "label": f"oblique-{n}", "position": [float(-80 + 5 * n), 10.0 * n, -20.0 + n],
                                "positionStatus": "defined"} for n in range(3)]},
            {"type": "Fiducial", "name": "right", "coordinateSystem": "RAS",
             "controlPoints": [{"label": "minor 1", "position": [60.0, -12.5, 4.0], "positionStatus": "defined"},
                               {"label": "minor 2", "position": [70.0, -2.5, 4.5]}]},
        ],
    }
    return json.dumps(doc, indent=1).encode()


PLAN_SEED: Path | None = None  # set by the caller: a plan.json written by the demo plan


def _prep_plan(folder: Path) -> bytes:
    if PLAN_SEED is None:
        raise RuntimeError("fuzzkit.PLAN_SEED is not set (a plan.json to start from)")
    return PLAN_SEED.read_bytes()


def _load_image(name: str) -> Callable[[Path, Context], Any]:
    def call(folder: Path, ctx: Context) -> Any:
        from planner.images import load_image

        return load_image(folder / name)
    return call


def _load_structures(name: str) -> Callable[[Path, Context], Any]:
    def call(folder: Path, ctx: Context) -> Any:
        from planner.anatomy import load_structures

        return load_structures(folder / name, ctx.ct)
    return call


def _read_plan(folder: Path, ctx: Context) -> Any:
    from planner.planning.output import read_plan

    return read_plan(folder)


def _read_markups(folder: Path, ctx: Context) -> Any:
    from planner.anatomy.fissure_points import read_fissure_points

    return read_fissure_points(folder / "points.mrk.json")


READERS: dict[str, Reader] = {r.name: r for r in [
    Reader("dicom_file", "enhanced.dcm", ["bytes"], _prep_dicom_file, _load_image("enhanced.dcm"), "image"),
    Reader("dicom_folder", "IM01.dcm", ["bytes"], _prep_dicom_folder, _load_image(""), "image"),
    Reader("nifti", "image.nii", ["bytes"], _prep_image(".nii"), _load_image("image.nii"), "image"),
    Reader("nifti_gz", "image.nii.gz", ["bytes", "gzip", "gzip"], _prep_image(".nii.gz"), _load_image("image.nii.gz"), "image"),
    Reader("nrrd", "image.nrrd", ["bytes", "nrrd"], _prep_image(".nrrd"), _load_image("image.nrrd"), "image"),
    Reader("slicer_seg", "s.seg.nrrd", ["bytes", "nrrd"], _prep_slicer_seg, _load_structures("s.seg.nrrd"), "structures"),
    Reader("dicom_seg", "seg.dcm", ["bytes"], _prep_dicom_seg, _load_structures("seg.dcm"), "structures"),
    Reader("rtstruct", "rs.dcm", ["bytes"], _prep_rtstruct, _load_structures("rs.dcm"), "structures"),
    Reader("label_map", "labels.nrrd", ["bytes", "nrrd"], _prep_label_map, _load_structures("labels.nrrd"), "structures"),
    Reader("label_table", "labels.json", ["bytes", "json", "json"], _prep_label_table, _load_structures("labels.nrrd"), "structures"),
    Reader("plan_json", "plan.json", ["bytes", "json", "json"], _prep_plan, _read_plan, "dict"),
    Reader("markups", "points.mrk.json", ["bytes", "json", "json"], _prep_markups, _read_markups, "points"),
]}
STRUCTURE_READERS = {name for name, r in READERS.items() if r.kind == "structures"}


class Workspace:
    """Seeds and companion files of the readers, made once under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.ctx = Context()
        self._made: set[str] = set()

    def input_dir(self, reader: Reader) -> Path:
        return self.root / reader.name / "input"

    def seed(self, name: str) -> bytes:
        """The seed bytes of a reader, checked to read cleanly when first made."""
        reader = READERS[name]
        if name not in self._made:
            if reader.kind == "structures" and self.ctx.ct is None:
                self.ctx.ct = _ct_for_structures(self.root)
            d = self.input_dir(reader)
            d.mkdir(parents=True, exist_ok=True)
            self.ctx.seeds[name] = reader.prepare(d)
            self._made.add(name)
            result = self.read(name, self.ctx.seeds[name])
            if isinstance(result, Failure) or isinstance(result, Exception):
                raise RuntimeError(f"the seed of {name} does not read cleanly: {result}")
        return self.ctx.seeds[name]

    def read(self, name: str, data: bytes, memory: int = MEMORY_HEADROOM) -> Any:
        """Write ``data`` as the reader's file and read it; returns the result or the PlannerError."""
        from planner.errors import PlannerError

        reader = READERS[name]
        path = self.input_dir(reader) / reader.filename
        path.write_bytes(data)
        try:
            with time_limit(TIME_LIMIT_S), memory_limit(memory), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return reader.call(self.input_dir(reader), self.ctx)
        except PlannerError as exc:
            return exc


# ---------------------------------------------------------------------------------------------
# Guards and the property
# ---------------------------------------------------------------------------------------------
class Hang(BaseException):
    """A reader ran past the time limit (a BaseException: no ``except Exception`` swallows it)."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """SIGALRM after ``seconds`` raises :class:`Hang` in the reader (main thread, POSIX only)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _address_space() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return -1


@contextmanager
def memory_limit(headroom: int) -> Iterator[None]:
    """Cap the address space at its current size plus ``headroom`` (Linux): a reader that asks
    for more gets a MemoryError instead of taking the machine's memory (0: no cap)."""
    used = _address_space()
    if used < 0 or not headroom:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclass
class Failure:
    """An input that breaks the property: what happened, in one line, and the traceback."""

    reader: str
    what: str
    detail: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.reader}: {self.what}: {self.detail}"

    @property
    def signature(self) -> str:
        """What tells two failures apart: the kind, the exception type and the innermost frame
        of the project's code (or, for a bad message, its first words)."""
        if not self.traceback:
            return f"{self.reader}: {self.what}: {re.sub(r'[0-9]+', 'N', self.detail)[:70]}"
        frames = re.findall(r'File "([^"]+)", line (\d+)', self.traceback)
        ours = [f"{Path(f).name}:{n}" for f, n in frames if "/planner/" in f]
        last = self.traceback.strip().splitlines()[-1].split(":")[0]
        return f"{self.reader}: {self.what}: {last} at {ours[-1] if ours else '?'}"


_NUMPY_REPR = re.compile(r"array\(|\bnp\.\w+\(|\[\[[-\s\d.e+]+\]\s")


def message_problem(msg: str) -> str | None:
    """Why an error message is not one clean line, or None."""
    if not msg.strip():
        return "empty message"
    if "\n" in msg or "\r" in msg:
        return "message spans several lines"
    if len(msg) > MAX_MESSAGE:
        return f"message of {len(msg)} characters"
    if _NUMPY_REPR.search(msg):
        return "message holds a numpy repr"
    return None


def result_problem(kind: str, result: Any, ctx: Context) -> str | None:
    """Why a reader's result is not usable, or None."""
    from planner.anatomy import StructureSet
    from planner.images import MAX_VOXELS, Image

    if kind == "image":
        if not isinstance(result, Image):
            return f"returned {type(result).__name__}, not an Image"
        if not np.all(np.isfinite(result.affine)):
            return "the affine is not finite"
        if result.voxels.ndim != 3 or min(result.shape) < 1 or result.voxels.size > MAX_VOXELS:
            return f"voxel array of shape {result.voxels.shape}"
        if not np.all(result.spacing > 0) or not np.all(np.isfinite(result.corners())):
            return "spacing or extent not usable"
        _ = result.sha256, result.orientation
    elif kind == "structures":
        if not isinstance(result, StructureSet):
            return f"returned {type(result).__name__}, not a StructureSet"
        if tuple(result.shape) != tuple(ctx.ct.shape):
            return f"structures on a grid of shape {result.shape}, the CT's is {ctx.ct.shape}"
        for s in result:
            if not isinstance(s.name, str) or s.mask.dtype != bool:
                return f"structure {s.name!r} of mask type {s.mask.dtype}"
    elif kind == "dict":
        if not isinstance(result, dict):
            return f"returned {type(result).__name__}, not a dict"
    elif kind == "points":
        if not isinstance(result, dict) or not result:
            return f"returned {result!r}"
        for k, v in result.items():
            a = np.asarray(v)
            if a.ndim != 2 or a.shape[1] != 3 or not np.all(np.isfinite(a)):
                return f"points {k!r} of shape {a.shape} are not finite (n, 3) positions"
    return None


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _read_buffer_only(exc: BaseException) -> bool:
    """Whether a MemoryError was raised reserving the buffer of a file read (``f.read(n)`` with
    the n a corrupt length field announces): Python reserves n bytes but never touches more than
    the file holds, so without the address-space cap this costs no memory."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and bool(re.search(r"\bread\(|fp_read\(|\.readinto\(", frames[-1].line or ""))


def check(ws: Workspace, name: str, data: bytes) -> Failure | None:
    """Run one reader on one input; a :class:`Failure` when the property breaks."""
    import traceback

    from planner.errors import PlannerError

    ws.seed(name)
    reader = READERS[name]
    try:
        try:
            result = ws.read(name, data)
        except MemoryError as exc:
            if not _read_buffer_only(exc):
                raise
            result = ws.read(name, data, memory=0)
        if isinstance(result, PlannerError):
            memory_errors = [e for e in _cause_chain(result) if isinstance(e, MemoryError)]
            if memory_errors and all(_read_buffer_only(e) for e in memory_errors):
                result = ws.read(name, data, memory=0)
    except Hang as exc:
        return Failure(name, "hang", str(exc), traceback.format_exc())
    except MemoryError:
        return Failure(name, "memory blow-up", f"asked for more than {MEMORY_HEADROOM >> 20} MiB more", traceback.format_exc())
    except Exception as exc:  # the bug the campaign looks for
        return Failure(name, "crash", f"{type(exc).__name__}: {str(exc)[:300]}", traceback.format_exc())
    if isinstance(result, PlannerError):
        chain = list(_cause_chain(result))
        if any(isinstance(e, MemoryError) for e in chain):
            return Failure(name, "memory blow-up", f"a MemoryError became the error {str(result)[:200]!r}")
        why = message_problem(str(result))
        if why:
            return Failure(name, "bad message", f"{why}: {str(result)[:300]!r}")
        return None
    why = result_problem(reader.kind, result, ws.ctx)
    if why:
        return Failure(name, "unusable result", why)
    return None


def input_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]
