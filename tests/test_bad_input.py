"""Bad input: one line naming the file and the problem, exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from dicomgen import Acquisition, write_acquisition
from planner.cli.main import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("planner: error: ")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "series"
    paths = write_acquisition(folder, Acquisition(n_slices=12))
    return folder, paths


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "info", str(tmp_path / "empty"))
    assert_one_line_error(code, err, "empty", "is empty")


def test_folder_without_dicom(tmp_path, capsys):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_text("hello")
    (d / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    code, _, err = run_cli(capsys, "convert", str(d), str(tmp_path / "o.nii.gz"))
    assert_one_line_error(code, err, str(d), "no DICOM image series found")
    assert not (tmp_path / "o.nii.gz").exists()


def test_truncated_pixel_data_in_a_series(series, tmp_path, capsys):
    folder, paths = series
    victim = paths[4]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 3000])
    out = tmp_path / "o.nrrd"
    code, _, err = run_cli(capsys, "convert", str(folder), str(out))
    assert_one_line_error(code, err, victim.name)
    assert not out.exists(), "nothing partial is written"


def test_corrupt_header_in_a_series(series, capsys):
    folder, paths = series
    victim = paths[2]
    data = bytearray(victim.read_bytes())
    victim.write_bytes(bytes(data[:300]))  # preamble + a few elements, then nothing
    code, _, err = run_cli(capsys, "info", str(folder))
    assert_one_line_error(code, err, victim.name)


def test_series_of_one_slice(tmp_path, capsys):
    write_acquisition(tmp_path / "one", Acquisition(n_slices=1))
    code, _, err = run_cli(capsys, "info", str(tmp_path / "one"))
    assert_one_line_error(code, err, "single image", "at least 2")


def test_non_ct_modality_where_ct_is_required(series, capsys):
    folder, paths = series
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.Modality = "MR"
        ds.save_as(p)
    code, _, err = run_cli(capsys, "info", str(folder))
    assert_one_line_error(code, err, "no CT series found", "MR")
    code, out, _ = run_cli(capsys, "info", str(folder), "--modality", "any")
    assert code == 0 and "MR" in out


def test_absurd_dimensions_are_refused_before_allocating(series, capsys):
    folder, paths = series
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.Rows = 60000
        ds.Columns = 60000
        ds.save_as(p)
    code, _, err = run_cli(capsys, "info", str(folder))
    assert_one_line_error(code, err, "voxels", "header is probably corrupt")


def test_missing_path_and_bad_output_suffix(tmp_path, series, capsys):
    code, _, err = run_cli(capsys, "info", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "no such file or folder")
    code, _, err = run_cli(capsys, "convert", str(series[0]), str(tmp_path / "out.png"))
    assert_one_line_error(code, err, "out.png", ".nii")


def test_console_script_prints_no_traceback(tmp_path):
    """End to end through the installed entry point."""
    exe = Path(sys.executable).with_name("planner")
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [str(exe), "info", str(tmp_path / "empty")], capture_output=True, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("planner: error:")


def test_negative_coordinates_survive_argument_parsing():
    from planner.cli.main import normalise_argv

    assert normalise_argv(["plan", "--target", "-82,82,-8"]) == ["plan", "--target=-82,82,-8"]
    assert normalise_argv(["plan", "--target=-82,82,-8"]) == ["plan", "--target=-82,82,-8"]
