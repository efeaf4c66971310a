"""The Python API (`planner.load_image`, `planner.segment`, `planner.plan`, `plan.write`,
`planner.read_plan`) and the one planning session every way of planning goes through."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import planner
from planner.demo import demo_cases
from planner.planning.model import Plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def thorax():
    case = next(c for c in demo_cases() if c.id == "thorax")
    ct = planner.load_image(case.ct)
    return case, ct, planner.load_structures(case.folder / case.info["structures"], ct)


def test_the_api_example_runs(tmp_path):
    """demos/api_example.py, the README's quick start, works as written."""
    proc = subprocess.run([sys.executable, str(ROOT / "demos" / "api_example.py"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "#1: entry LPS (" in proc.stdout and "read back: lung-biopsy" in proc.stdout
    assert (tmp_path / "out" / "plan.json").is_file() and (tmp_path / "out" / "report.pdf").is_file()


def test_a_plan_is_the_same_written_and_read_back(thorax, tmp_path):
    case, ct, structures = thorax
    plan = planner.plan(ct, procedure="lung-biopsy", target_label="lung_nodule", structures=structures, n=2)
    assert isinstance(plan, Plan) and plan.ok and len(plan.trajectories) == 2
    t = plan.trajectories[0]
    assert t.length_mm == pytest.approx(np.linalg.norm(np.subtract(t.target, t.entry)), abs=0.06)
    assert t.room is not None and "entry_table_z_mm" in t.room  # room terms come from planning
    plan.write(tmp_path / "p")
    on_disk = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert on_disk == plan.to_json()
    again = planner.read_plan(tmp_path / "p")
    assert again.to_json() == on_disk
    assert Plan.from_json(on_disk).to_json() == on_disk
    assert again.trajectories[0].entry == t.entry and again.preset == plan.preset
    with pytest.raises(planner.InputError, match="already written"):
        again.write(tmp_path / "q")


def test_plan_json_is_written_once(thorax, tmp_path, monkeypatch):
    """plan.json is written once, complete (identified, with its room terms): the report set does
    not read it back and rewrite it."""
    import planner.atomic as atomic
    import planner.session as session_module

    written = []
    real = atomic.write_json_atomic

    def counting(doc, path):
        if Path(path).name == "plan.json":
            written.append(json.loads(json.dumps(doc)))
        return real(doc, path)

    monkeypatch.setattr(session_module, "write_json_atomic", counting)
    monkeypatch.setattr("planner.report.reportset.write_json_atomic", counting)
    case, ct, structures = thorax
    plan = planner.plan(ct, procedure="lung-biopsy", target_label="lung_nodule", structures=structures, n=1)
    plan.write(tmp_path / "p")
    assert len(written) == 1
    doc = written[0]
    assert doc["patient"]["id"] == ct.meta.patient_id and "room" in doc["trajectories"][0]
    assert doc["structures_file"]["sha256"] and doc["preset"]["id"] == "lung-biopsy"


def test_a_cached_planning_context_gives_the_fresh_answer(thorax):
    """The session reuses the distance fields for a target moved a few mm: the trajectories must
    be those a fresh session finds."""
    from planner.session import PlanningSession, TargetSpec

    case, ct, structures = thorax
    s = planner.open_session(ct, procedure="lung-biopsy", structures=structures)
    moved = np.asarray(case.target_lps) + np.array([2.0, -1.5, 1.0])
    s.plan([TargetSpec("label", "lung_nodule")], n_best=3)
    again = s.plan([TargetSpec("point", moved)], n_best=3)
    fresh = PlanningSession(ct, structures, procedure="lung-biopsy").plan([TargetSpec("point", moved)], n_best=3)
    assert len(s._contexts) == 1  # the second plan did reuse the first one's region
    assert [t.entry for t in again.trajectories] == [t.entry for t in fresh.trajectories]
    assert again.targets[0].rejected == fresh.targets[0].rejected


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give exactly one target"),
    ({"target": (1, 2, 3), "seed": (1, 2, 3)}, "give exactly one target"),
    ({"target_label": "lung_nodule", "n": 0}, "at least one trajectory"),
    ({"target": "1,2"}, "expected three numbers"),
    ({"target_label": "lung_nodule", "procedure": "nose-biopsy"}, "unknown procedure"),
])
def test_api_misuse_is_one_input_error(thorax, kwargs, message):
    case, ct, structures = thorax
    kwargs = {"procedure": "lung-biopsy", **kwargs}
    with pytest.raises(planner.InputError, match=message):
        planner.plan(ct, structures=structures, **kwargs)


def test_long_steps_report_progress(thorax, tmp_path):
    """Planning and writing the report say how far they are (the command line shows it as bars)."""
    from planner.session import PlanRequest, TargetSpec, plan_and_write

    case, ct, structures = thorax
    seen: list[tuple[int, int, str]] = []
    request = PlanRequest(case.ct, "lung-biopsy", [TargetSpec("label", "lung_nodule")],
                          structures=case.folder / case.info["structures"], n_best=1)
    plan_and_write(request, tmp_path / "p", progress=lambda done, total, what: seen.append((done, total, what)))
    steps = {what for _, _, what in seen}
    assert {"planning", "writing the report"} <= steps
    for what in ("planning", "writing the report"):
        mine = [(d, t) for d, t, w in seen if w == what]
        assert mine[0][0] == 0 and mine[-1][0] == mine[-1][1]  # from the start to the end
        assert [d for d, _ in mine] == sorted(d for d, _ in mine)
