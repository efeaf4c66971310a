"""Byte-level fuzzing of every reader: a short, derandomized campaign, and the inputs it found.

Each reader gets a small valid seed (tests/fuzzkit.py) mutated by bit flips, byte replacements,
truncation, inserted, deleted and duplicated runs, and for NRRD headers and JSON structure-aware
edits (NaN, 0, -1, 1e308, huge strings, wrong types, missing keys, deep nesting). Every input
must give a usable object or a one-line PlannerError; never another exception, a hang or a large
allocation. ``make fuzz`` (benchmarks/fuzz.py) runs the same mutations for longer.

The regression tests below rebuild, in code, the inputs that once broke a reader.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzkit
from planner.anatomy import load_structures
from planner.anatomy.fissure_points import read_fissure_points
from planner.errors import InputError, PlannerError
from planner.images import load_image

ROOT = Path(__file__).resolve().parents[1]

#: Examples per reader in the default suite (the whole file takes about 30 s on one core).
EXAMPLES = {
    "dicom_file": 60, "dicom_folder": 60, "nifti": 60, "nifti_gz": 60, "nrrd": 60, "slicer_seg": 60,
    "dicom_seg": 40, "rtstruct": 60, "label_map": 60, "label_table": 60, "plan_json": 60, "markups": 60,
}


@pytest.fixture(scope="session")
def plan_seed(tmp_path_factory) -> Path:
    """A plan.json written by the planner itself (the demo thorax, two trajectories)."""
    import planner

    out = tmp_path_factory.mktemp("fuzz-plan")
    planner.plan(ROOT / "assets/demo/thorax/ct", procedure="lung-biopsy", target=(-85, -14, 39), n=2,
                 structures=ROOT / "assets/demo/thorax/structures.nii.gz").write(out)
    return out / "plan.json"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> fuzzkit.Workspace:
    return fuzzkit.Workspace(tmp_path_factory.mktemp("fuzz"))


def run_campaign(ws: fuzzkit.Workspace, name: str, examples: int, saved: Path) -> None:
    seed = ws.seed(name)

    @settings(derandomize=True, max_examples=examples, deadline=None, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data: st.DataObject) -> None:
        mutated, ops = fuzzkit.mutate(seed, fuzzkit.READERS[name], fuzzkit.HypothesisChooser(data))
        failure = fuzzkit.check(ws, name, mutated)
        if failure is not None:
            saved.mkdir(parents=True, exist_ok=True)
            path = saved / f"{name}-{fuzzkit.input_id(mutated)}-{fuzzkit.READERS[name].filename}"
            path.write_bytes(mutated)
            raise AssertionError(f"{failure}\n  mutations: {ops}\n  input ({len(mutated)} bytes) saved as {path}\n"
                                 f"{failure.traceback}")

    one()


@pytest.mark.parametrize("name", [n for n in EXAMPLES if n != "plan_json"])
def test_reader_survives_mutated_input(ws, name, tmp_path):
    run_campaign(ws, name, EXAMPLES[name], tmp_path / "failing")


def test_plan_json_reader_survives_mutated_input(ws, plan_seed, tmp_path):
    fuzzkit.PLAN_SEED = plan_seed
    run_campaign(ws, "plan_json", EXAMPLES["plan_json"], tmp_path / "failing")


def test_every_reader_is_fuzzed():
    assert set(EXAMPLES) == set(fuzzkit.READERS)


# ---------------------------------------------------------------------------------------------
# The guards themselves
# ---------------------------------------------------------------------------------------------
def test_a_hang_becomes_a_failure_naming_the_reader(ws, monkeypatch):
    ws.seed("markups")

    def spin(path):
        while True:
            pass

    monkeypatch.setattr(fuzzkit, "TIME_LIMIT_S", 1)
    monkeypatch.setattr("planner.anatomy.fissure_points.read_fissure_points", spin)
    failure = fuzzkit.check(ws, "markups", ws.seed("markups"))
    assert failure is not None and failure.what == "hang" and failure.reader == "markups"


@pytest.mark.parametrize("message, bad", [
    ("x.nrrd: not a readable NRRD file", False),
    ("x.nrrd: bad\nline", True),
    ("x.nrrd: got [[1. 0. 0.]\n [0. 1. 0.]]", True),
    ("x.nrrd: spacing np.float64(1.0)", True),
    ("x" * 401, True),
])
def test_message_check(message, bad):
    assert (fuzzkit.message_problem(message) is not None) == bad


# ---------------------------------------------------------------------------------------------
# Regressions: inputs the campaign found, rebuilt in code (each failed before its fix)
# ---------------------------------------------------------------------------------------------
def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert fuzzkit.message_problem(msg) is None, msg
    return msg


def seed_file(ws: fuzzkit.Workspace, name: str, data: bytes | None = None) -> Path:
    """The reader's input folder with ``data`` (default: its seed) as its file."""
    reader = fuzzkit.READERS[name]
    seed = ws.seed(name)
    path = ws.input_dir(reader) / reader.filename
    path.write_bytes(seed if data is None else data)
    return path


def element_offset(data: bytes, group: int, element: int, last: bool = False) -> int:
    """Offset of an explicit-VR little-endian element's tag in a DICOM file (its first or last)."""
    tag = struct.pack("<HH", group, element)
    pos = data.rfind(tag) if last else data.find(tag)
    assert pos > 0
    return pos


def test_dicom_value_of_unknown_vr_is_a_corrupt_file(ws):
    # A flipped bit turned BitsStored's VR "US" into "WS": pydicom raised NotImplementedError
    # when the loader first read the value, long after the header was "read".
    seed = ws.seed("dicom_file")
    pos = element_offset(seed, 0x0028, 0x0101)
    data = seed[:pos + 4] + b"WS" + seed[pos + 6:]
    with pytest.raises(InputError, match="corrupt or truncated DICOM file"):
        load_image(seed_file(ws, "dicom_file", data))


def set_value(data: bytes, group: int, element: int, value: bytes, last: bool = False) -> bytes:
    """``data`` with the value of its first (or last) (group, element), an explicit-VR element with
    a 2-byte length (DS, IS, UI, US, ...), replaced by ``value`` as raw bytes (no validation)."""
    pos = element_offset(data, group, element, last)
    length = struct.unpack_from("<H", data, pos + 6)[0]
    value += b" " * (len(value) % 2)
    return data[:pos + 6] + struct.pack("<H", len(value)) + value + data[pos + 8 + length:]


@pytest.mark.parametrize("name, element", [("RescaleIntercept", 0x1052), ("RescaleSlope", 0x1053)])
def test_dicom_rescale_that_is_not_a_number_is_refused(ws, name, element):
    # '-10\xff4' in RescaleIntercept: ValueError from float() in the slice reader.
    data = set_value(ws.seed("dicom_folder"), 0x0028, element, b"-10\xff4")
    path = seed_file(ws, "dicom_folder", data)
    with pytest.raises(InputError, match=name) as err:
        load_image(path.parent)
    one_line(err.value)


def test_dicom_integer_attribute_that_is_not_an_integer_is_refused(ws):
    # InstanceNumber '1\\2', a MultiValue: int() raised TypeError
    path = seed_file(ws, "dicom_folder", set_value(ws.seed("dicom_folder"), 0x0020, 0x0013, b"1\\2"))
    with pytest.raises(InputError, match="corrupt") as err:
        load_image(path.parent)
    one_line(err.value)


def test_enhanced_ct_per_frame_rescale_that_is_not_a_number_is_refused(ws):
    path = seed_file(ws, "dicom_file", set_value(ws.seed("dicom_file"), 0x0028, 0x1052, b"op"))
    with pytest.raises(InputError, match="RescaleIntercept") as err:
        load_image(path)
    one_line(err.value)


def test_dicom_series_listing_with_a_line_break_in_a_uid_stays_one_line(ws):
    # A newline written into one file's SeriesInstanceUID made two series; the message listing
    # them spanned two lines.
    path = seed_file(ws, "dicom_folder")
    seed = path.read_bytes()
    uid = pydicom.dcmread(path).SeriesInstanceUID.encode()
    path.write_bytes(seed.replace(uid, uid[:5] + b"\n" + uid[6:]))
    with pytest.raises(InputError, match="series found") as err:
        load_image(path.parent)
    one_line(err.value)


def test_dicom_length_error_gives_a_short_message(ws):
    # A length field made odd for a 4-byte VR: pydicom's 500-character explanation was copied
    # into the message whole.
    seed = ws.seed("dicom_folder")
    pos = element_offset(seed, 0x0002, 0x0000)  # FileMetaInformationGroupLength, UL
    data = seed[:pos + 6] + struct.pack("<H", 2) + seed[pos + 8:pos + 8] + b"\xce\x00" + seed[pos + 12:]
    path = seed_file(ws, "dicom_folder", data)
    with pytest.raises(InputError) as err:
        load_image(path.parent)
    one_line(err.value)


def nifti_with_dims(ws: fuzzkit.Workspace, name: str, dims: tuple[int, ...], datatype: int = 64) -> Path:
    seed = ws.seed(name)
    raw = bytearray(gzip.decompress(seed) if name == "nifti_gz" else seed)
    struct.pack_into("<8h", raw, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    struct.pack_into("<hh", raw, 70, datatype, 64 if datatype == 64 else 16)  # float64
    return seed_file(ws, name, gzip.compress(bytes(raw)) if name == "nifti_gz" else bytes(raw))


@pytest.mark.parametrize("name", ["nifti", "nifti_gz"])
def test_nifti_declaring_gigabytes_is_refused_before_allocating(ws, name):
    # 1000^3 float64 voxels in a 600-byte file: nibabel zero-filled an 8 GB buffer before
    # finding the data missing. Refused now from the file size, with no allocation at all.
    path = nifti_with_dims(ws, name, (1000, 1000, 1000))
    with fuzzkit.memory_limit(256 << 20), pytest.raises(InputError, match="declares 8,000,000,000 bytes") as err:
        load_image(path)
    one_line(err.value)


def test_truncated_nifti_message_is_one_line(ws):
    # nibabel's "Expected 240 bytes, got 74 bytes from ...\n - could the file be damaged?"
    seed = ws.seed("nifti")
    with pytest.raises(InputError) as err:
        load_image(seed_file(ws, "nifti", seed[:-10]))
    one_line(err.value)


def test_truncated_gzip_nifti_message_is_one_line(ws):
    raw = gzip.decompress(ws.seed("nifti_gz"))
    with pytest.raises(InputError) as err:
        load_image(seed_file(ws, "nifti_gz", gzip.compress(raw[:432])))
    one_line(err.value)


def nrrd_header_edit(data: bytes, field: str, value: bytes) -> bytes:
    head, sep, rest = data.partition(b"\n\n")
    lines = [(field.encode() + b": " + value) if line.startswith(field.encode() + b":") else line
             for line in head.split(b"\n")]
    return b"\n".join(lines) + sep + rest


@pytest.mark.parametrize("name, field, value", [
    ("label_map", "space directions", b"(1,0,0) (0,1,0) (inf,0,2.5)"),  # numpy repr over 3 lines
    ("nrrd", "space", b"9" * 1000),  # 1100-character message
    ("label_map", "encoding", b"\x00" * 1000),
    ("slicer_seg", "Segment1_Color", b"\x00" * 4000),  # 4090-character message
    ("nrrd", "space origin", b"(1,2)"),
    ("nrrd", "space origin", b"(nan,0,0)"),  # refused by the affine check already; kept as a guard
])
def test_nrrd_header_value_gives_a_one_line_message(ws, name, field, value):
    seed = ws.seed(name)
    data = nrrd_header_edit(seed, field, value)
    assert data != seed
    path = seed_file(ws, name, data)
    with pytest.raises(PlannerError) as err:
        load_structures(path, ws.ctx.ct) if fuzzkit.READERS[name].kind == "structures" else load_image(path)
    one_line(err.value)


@pytest.mark.parametrize("name", ["nrrd", "slicer_seg"])
def test_nrrd_bad_magic_line_gives_a_one_line_message(ws, name):
    # pynrrd quotes the whole first line, up to and with its newline
    seed = ws.seed(name)
    path = seed_file(ws, name, b"NRRD" + b"l" * 300 + seed[4:200])
    with pytest.raises(InputError) as err:
        load_structures(path, ws.ctx.ct) if name == "slicer_seg" else load_image(path)
    one_line(err.value)


@pytest.mark.parametrize("edit", ["vr", "sop-class"])
def test_corrupt_dicom_seg_header_is_refused(ws, edit):
    seed = ws.seed("dicom_seg")
    if edit == "vr":  # Rows "US" -> "UQ": NotImplementedError from pydicom
        pos = element_offset(seed, 0x0028, 0x0010)
        data = seed[:pos + 4] + b"UQ" + seed[pos + 6:]
    else:  # a line break in the SOP class UID: a two-line message
        data = seed.replace(b"1.2.840.10008.5.1.4.1.1.66.4", b"1.2.840.1\r008.5.1.4.1.1.66.4")
    with pytest.raises(InputError) as err:
        load_structures(seed_file(ws, "dicom_seg", data), ws.ctx.ct)
    one_line(err.value)


def test_dicom_seg_without_pixel_data_is_refused(ws):
    # highdicom: AttributeError "Dataset contains no pixel data"
    path = seed_file(ws, "dicom_seg")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(InputError) as err:
        load_structures(path, ws.ctx.ct)
    one_line(err.value)


def test_dicom_seg_frame_position_that_is_not_a_number_is_refused(ws):
    # ValueError from float() of the last frame's ImagePositionPatient in the frame geometry
    data = set_value(ws.seed("dicom_seg"), 0x0020, 0x0032, b"op\\1\\2", last=True)
    with pytest.raises(InputError) as err:
        load_structures(seed_file(ws, "dicom_seg", data), ws.ctx.ct)
    one_line(err.value)


@pytest.mark.parametrize("value", [b"--", b"1\\2"])  # int('--'): ValueError; int(MultiValue): TypeError
def test_rtstruct_roi_number_that_is_not_an_integer_is_refused(ws, value):
    data = set_value(ws.seed("rtstruct"), 0x3006, 0x0022, value)
    with pytest.raises(InputError, match="ROINumber") as err:
        load_structures(seed_file(ws, "rtstruct", data), ws.ctx.ct)
    one_line(err.value)


@pytest.mark.parametrize("colour", [b"255\\.\\0", b"7"])
def test_rtstruct_malformed_colour_is_ignored(ws, colour):
    # int('.') raised ValueError; a single IS value had no len()
    data = set_value(ws.seed("rtstruct"), 0x3006, 0x002A, colour)
    sset = load_structures(seed_file(ws, "rtstruct", data), ws.ctx.ct)
    assert sset.names() == ["liver"]


def test_rtstruct_unknown_vr_and_line_break_in_frame_uid(ws):
    seed = ws.seed("rtstruct")
    pos = element_offset(seed, 0x3006, 0x0050)  # ContourData "DS" -> "D\0"
    with pytest.raises(InputError) as err:
        load_structures(seed_file(ws, "rtstruct", seed[:pos + 4] + b"D\x00" + seed[pos + 6:]), ws.ctx.ct)
    one_line(err.value)
    uid = ws.ctx.ct.meta.frame_of_reference_uid.encode()
    with pytest.raises(InputError, match="frame of reference") as err:
        load_structures(seed_file(ws, "rtstruct", seed.replace(uid, uid[:30] + b"\n" + uid[31:])), ws.ctx.ct)
    one_line(err.value)


@pytest.mark.parametrize("data", [b'{"labels": {"1": "li\xc5ver"}}', b"[" * 100_000 + b"]" * 100_000])
def test_label_table_not_utf8_or_nested_too_deep_is_refused(ws, data):
    # UnicodeDecodeError and RecursionError escaped read_label_table
    with pytest.raises(InputError) as err:
        load_structures(seed_file(ws, "label_table", data).with_name("labels.nrrd"), ws.ctx.ct)
    one_line(err.value)


@pytest.mark.parametrize("doc", [
    {"markups": ["a", "b", "c"]},  # AttributeError: 'str' object has no attribute 'get'
    {"markups": [{"name": "oblique", "controlPoints": [float("nan")]}]},
    {"markups": [{"name": "oblique", "controlPoints": [[[0.0, 0.0, 0.0]]]}]},
    {"markups": [{"name": "oblique", "controlPoints": "abc"}]},
    {"markups": [{"name": "oblique", "controlPoints": [{"position": [0, 1, 10 ** 400]}]}]},  # OverflowError
    {"markups": [{"name": "oblique", "controlPoints": [{"position": [0, 1, float("nan")]}]}]},  # NaN accepted
    {"markups": [{"name": "oblique", "controlPoints": [{"position": [0, True, 1]}]}]},
    {"markups": [{"name": "x" * 10_000, "coordinateSystem": "y" * 10_000}]},
])
def test_markups_of_the_wrong_shape_are_refused(tmp_path, doc):
    p = tmp_path / "points.mrk.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError) as err:
        read_fissure_points(p)
    one_line(err.value)


def test_markups_nested_too_deep_are_refused(tmp_path):
    p = tmp_path / "points.mrk.json"
    p.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InputError) as err:
        read_fissure_points(p)
    one_line(err.value)


def test_plan_json_nested_too_deep_is_refused(tmp_path):
    # json.loads raises RecursionError, which read_plan does not catch (it catches ValueError)
    from planner.planning.output import read_plan

    (tmp_path / "plan.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InputError) as err:
        read_plan(tmp_path)
    one_line(err.value)


def test_plan_json_with_a_huge_schema_gives_a_short_message(tmp_path):
    from planner.planning.output import read_plan

    (tmp_path / "plan.json").write_text(json.dumps({"schema": "x" * 100_000}))
    with pytest.raises(InputError) as err:
        read_plan(tmp_path)
    one_line(err.value)


def test_seeds_read_back(ws):
    """The campaign starts from inputs the readers accept (else it would fuzz only the refusals)."""
    for name in fuzzkit.READERS:
        if name != "plan_json":
            result = ws.read(name, ws.seed(name))
            assert not isinstance(result, Exception), result
    assert np.asarray(ws.ctx.ct.shape).prod() > 0


def test_enhanced_ct_transfer_syntax_with_a_line_break_gives_a_one_line_message(ws):
    # '1.2.840.10008\n1.2.1': pydicom cannot decode, and the message quoted the UID over two lines
    seed = ws.seed("dicom_file")
    data = set_value(seed, 0x0002, 0x0010, b"1.2.840.10008\n1.2.1")
    with pytest.raises(InputError) as err:
        load_image(seed_file(ws, "dicom_file", data))
    one_line(err.value)


def test_slicer_segment_colour_of_nan_is_refused(ws):
    # int(round(nan)): ValueError
    data = nrrd_header_edit(ws.seed("slicer_seg"), "Segment1_Color", b"nan 0.5 0.5")
    with pytest.raises(InputError, match="Color") as err:
        load_structures(seed_file(ws, "slicer_seg", data), ws.ctx.ct)
    one_line(err.value)


def test_label_table_giving_one_long_name_to_two_values_is_refused_in_one_line(ws):
    # "structure '1000...0' is given twice": 428 characters, and no file named
    name = "1" + "0" * 400
    data = json.dumps({"1": name, "2": name}).encode()
    with pytest.raises(InputError, match="labels.nrrd") as err:
        load_structures(seed_file(ws, "label_table", data).with_name("labels.nrrd"), ws.ctx.ct)
    one_line(err.value)
