"""A plan folder is either the old plan or the new one, never a mix.

Each test here failed before plan folders were written as a whole (a hidden sibling swapped in
under a lock): a second plan left the first one's DICOM objects, markups and meshes; an
anonymised plan left the identified DICOM files of the plan before it; a run killed after
plan.json left a new plan.json beside the old report; two runs into one folder mixed their files.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from planner.atomic import replace_folder
from planner.cli.main import main
from planner.demo import demo_cases

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def thorax():
    case = next(c for c in demo_cases() if c.id == "thorax")
    return str(case.ct), str(case.folder / case.info["structures"])


def _plan(thorax, out: Path, *extra: str) -> int:
    ct, structures = thorax
    return main(["plan", "--ct", ct, "--structures", structures, "--target-label", "lung_nodule",
                 "--procedure", "lung-biopsy", "--out", str(out), "--n", "2", *extra])


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file of a folder (relative path) with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")
                  and not p.name.endswith(".lock"))


def test_a_second_plan_replaces_the_first_whole(thorax, tmp_path, capsys):
    out, fresh = tmp_path / "plan", tmp_path / "fresh"
    assert _plan(thorax, out, "--dicom") == 0
    assert (out / "dicom" / "report.dcm").is_file()
    first = json.loads((out / "plan.json").read_text())
    # The second plan: another target (a point), no DICOM, one trajectory.
    point = ",".join(f"{x + 4:.1f}" for x in first["target"]["point"])
    ct, structures = thorax
    args = ["plan", "--ct", ct, "--structures", structures, "--target", point, "--procedure", "lung-biopsy",
            "--n", "1", "--out"]
    assert main(args + [str(out)]) == 0
    assert main(args + [str(fresh)]) == 0
    capsys.readouterr()
    # Exactly the files a run into an empty folder writes: nothing of the first plan is left.
    assert sorted(_snapshot(out)) == sorted(_snapshot(fresh))
    assert not (out / "dicom").exists()
    doc = json.loads((out / "plan.json").read_text())
    assert doc["target"]["label"] != first["target"]["label"] and len(doc["trajectories"]) == 1
    assert sorted(p.name for p in (out / "markups").iterdir()) == ["trajectory_1.mrk.json"]
    assert _leftovers(out) == []


def test_an_anonymised_plan_over_an_identified_one_keeps_no_identifier(thorax, tmp_path, capsys):
    from planner.images import load_image

    ct = load_image(thorax[0])
    name = ct.meta.patient_name.replace("^", " ").strip()
    assert name and ct.meta.patient_id
    out = tmp_path / "plan"
    assert _plan(thorax, out, "--dicom") == 0
    assert any(name.encode() in p.read_bytes() or ct.meta.patient_id.encode() in p.read_bytes()
               for p in out.rglob("*") if p.is_file())  # the identified plan names the patient
    assert _plan(thorax, out, "--dicom", "--anonymize") == 0
    capsys.readouterr()
    for p in out.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for ident in (name, ct.meta.patient_name, ct.meta.patient_id):
                assert ident.encode() not in data, (p, ident)


# A child that plans into a folder and dies at a chosen moment: SIGKILL, or Ctrl-C, right after
# plan.json of the new plan is written and before its report is.
CHILD = r"""
import os, signal, sys
import planner.report.reportset as rs
how = sys.argv[1]
real = rs.write_report_set
def dying(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGINT)
    return real(*a, **k)
rs.write_report_set = dying
import planner.report
planner.report.write_report_set = dying
from planner.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_a_run_killed_after_plan_json_leaves_the_old_plan_intact(thorax, tmp_path, capsys, how):
    out = tmp_path / "plan"
    assert _plan(thorax, out) == 0
    capsys.readouterr()
    before = _snapshot(out)
    ct, structures = thorax
    proc = subprocess.run([sys.executable, "-c", CHILD, how, "plan", "--ct", ct, "--structures", structures,
                           "--target-label", "lung_nodule", "--procedure", "lung-biopsy", "--n", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    if how == "kill":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, proc.stderr
        assert proc.stderr.strip() == "planner: interrupted"
    assert _snapshot(out) == before  # the old plan, whole, and nothing of the new one
    if how == "interrupt":
        assert _leftovers(out) == []  # an interrupted run cleans up after itself
    else:
        assert _leftovers(out)  # a killed one cannot: its half-written sibling is hidden...
    # ...and the next run into the folder removes it.
    assert _plan(thorax, out) == 0
    capsys.readouterr()
    assert _leftovers(out) == []
    from planner.cli.main import main as m
    assert m(["review", str(out), "--ct", ct, "--no-window"]) == 0


def test_a_second_writer_of_the_same_folder_is_refused(thorax, tmp_path, capsys):
    out = tmp_path / "plan"
    assert _plan(thorax, out) == 0
    before = _snapshot(out)
    capsys.readouterr()
    with replace_folder(out) as staging:  # another run is writing this folder now
        (staging / "plan.json").write_text("{}")
        assert _plan(thorax, out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another planner is writing" in err[0]
        assert _snapshot(out) == before
    assert json.loads((out / "plan.json").read_text()) == {}  # the one that held the lock won, whole


def test_out_that_cannot_be_written_is_refused_before_any_work(thorax, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert _plan(thorax, blocker / "plan") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocker) in err[0]
    assert _plan(thorax, blocker) == 2  # a file given as the folder is not replaced
    assert blocker.read_text() == "not a folder"
    capsys.readouterr()


def test_a_folder_that_is_not_a_plan_is_never_replaced_or_mixed_into(thorax, tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.txt").write_text("years of work")
    assert _plan(thorax, home) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a plan folder" in err[0]
    assert sorted(p.name for p in home.iterdir()) == ["thesis.txt"]


@pytest.mark.parametrize("n", ["0", "-3", "two"])
def test_n_below_one_is_refused(thorax, tmp_path, capsys, n):
    ct, structures = thorax
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--ct", ct, "--structures", structures, "--target-label", "lung_nodule",
              "--procedure", "lung-biopsy", "--out", str(tmp_path / "p"), "--n", n])
    assert exc.value.code == 2
    assert "--n" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_no_file_of_a_plan_names_its_hidden_staging_folder(thorax, tmp_path, capsys):
    out = tmp_path / "plan"
    assert _plan(thorax, out, "--dicom") == 0
    capsys.readouterr()
    for p in out.rglob("*"):
        if p.is_file():
            assert b".plan.new-" not in p.read_bytes(), p


def test_the_current_folder_is_never_replaced(thorax, tmp_path, capsys, monkeypatch):
    """An empty current folder given as --out would be swapped away from under the shell."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert _plan(thorax, Path(".")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the current folder" in err[0]
    assert here.is_dir() and list(here.iterdir()) == []


def test_a_plan_folder_with_check_scans_is_not_replaced(thorax, tmp_path, capsys):
    """The check scans of a procedure belong to the plan they were compared with: planning again
    into that folder would throw them away (or mix them with another plan); it is refused."""
    out = tmp_path / "plan"
    assert _plan(thorax, out) == 0
    (out / "checks" / "01").mkdir(parents=True)
    (out / "checks" / "01" / "check.json").write_text("{}")
    before = _snapshot(out)
    capsys.readouterr()
    assert _plan(thorax, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the check scans of a procedure" in err[0]
    assert _snapshot(out) == before
