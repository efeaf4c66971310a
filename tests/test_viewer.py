"""``planner view``: the review window built offscreen, its keys and mouse, re-planning, the
procedure-room mode, level of detail, and the message when no display exists."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_tool
from PIL import Image as PILImage

from planner.cli.main import main
from planner.demo import demo_cases
from planner.scene import load_case
from planner.scene.needles import TARGET
from planner.viewer import LAYOUT, Viewer
import planner


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    c = next(c for c in demo_cases() if c.id == "thorax")
    out = tmp_path_factory.mktemp("thorax_view")
    plan = planner.plan(c.ct, procedure=c.info["procedure"], structures=c.folder / c.info["structures"],
                        target_label=c.info["target"]["label"], n=3)
    plan.write(out)
    assert len(plan.trajectories) >= 2
    return out


@pytest.fixture(scope="module")
def viewer(plan_dir):
    v = Viewer(load_case(plan_dir), size=(900, 540))
    v.attach_interactor()
    return v


def _press(v: Viewer, key: str) -> None:
    iren = v.interactor
    iren.SetKeySym(key)
    iren.InvokeEvent("KeyPressEvent")


def test_view_without_display_exits_2_with_one_line(plan_dir, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", str(plan_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "display" in err[0] and "--offscreen" in err[0]


def test_view_with_an_unreachable_display_exits_2(plan_dir, monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":97")  # no X server answers there
    assert main(["view", str(plan_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "display" in err[-1] and "Traceback" not in "\n".join(err)


def test_view_offscreen_writes_the_whole_layout(plan_dir, tmp_path, capsys):
    shot = tmp_path / "viewer.png"
    assert main(["view", str(plan_dir), "--offscreen", "--screenshot", str(shot), "--size", "900x540"]) == 0
    rgb = np.asarray(PILImage.open(shot).convert("RGB")).astype(int)
    assert rgb.shape == (540, 900, 3)
    assert rgb.mean(axis=2).std() > 20
    magenta = np.all(np.abs(rgb - TARGET) < 40, axis=2)
    # the target marker shows in the 3D view and in every slice (each viewport of the layout)
    for name, (x0, y0, x1, y1) in LAYOUT.items():
        part = magenta[int((1 - y1) * 540):int((1 - y0) * 540), int(x0 * 900):int(x1 * 900)]
        assert part.sum() >= 4, f"no target marker in the {name} viewport"


def test_keys_cycle_alternatives_and_toggle_layers(viewer):
    v = viewer
    assert v.selected == 1 and v.views["planning"].info["path"].rank == 1
    _press(v, "n")
    assert v.selected == 2 and v.views["planning"].info["path"].rank == 2
    _press(v, "p")
    assert v.selected == 1
    layer = v.views["3d"].info["layer"]
    shown = [a for a in layer.actors.values() if a.GetVisibility()]
    assert shown
    _press(v, "s")
    assert not any(a.GetVisibility() for a in layer.actors.values())
    assert not any(a.GetVisibility() for a in v.views["axial"].info["contours"].values())
    _press(v, "s")
    assert any(a.GetVisibility() for a in layer.actors.values())
    assert v.views["3d"].info["plan_base"], "risk map shown by default"
    _press(v, "r")
    assert not v.views["3d"].info["plan_base"]
    _press(v, "r")
    assert v.views["3d"].info["plan_base"]
    before = v.slice_window
    _press(v, "w")
    assert v.slice_window != before
    assert v.render().mean() > 10


def test_wheel_scrolls_the_slice_under_the_pointer(viewer):
    v = viewer
    plane = v.views["axial"].info["plane"]
    z0 = plane.GetOrigin()[2]
    w, h = v.window.GetSize()
    x0, y0, x1, y1 = LAYOUT["axial"]
    v.interactor.SetEventInformation(int((x0 + x1) / 2 * w), int((y0 + y1) / 2 * h))
    v.interactor.InvokeEvent("MouseWheelForwardEvent")
    v.interactor.InvokeEvent("MouseWheelForwardEvent")
    assert np.isclose(plane.GetOrigin()[2] - z0, 2 * v.scene.case.ct.spacing[2])
    assert "z = " in v.views["axial"].info["title"].GetInput()
    # while scrolling, the 3D view (which does not depend on the slices) is left as drawn
    assert not v.views["3d"].base.GetDraw()
    v.still()
    assert v.views["3d"].base.GetDraw()


def test_move_the_target_and_replan_live(viewer):
    v = viewer
    t0 = v.target.copy()
    _press(v, "Right")  # 2 mm towards the patient's left
    assert np.allclose(v.target, t0 + [2.0, 0, 0])
    _press(v, "Return")
    case = v.scene.case
    assert case.paths, v.messages
    for p in case.paths:
        assert np.allclose(p.target, v.target, atol=0.01)
    assert v.messages and "re-planned" in v.messages[-1]
    assert v.views["planning"].info["path"].rank == 1


def test_level_of_detail_while_interacting(viewer):
    v = viewer
    mapper = v.views["3d"].info["volume"].GetMapper()
    layer = v.views["3d"].info["layer"]
    name = next(iter(layer.actors))
    v.set_interactive(True)
    v.window.Render()
    assert mapper.GetImageSampleDistance() > 1.0
    assert layer.actors[name].GetMapper().GetInput() is layer.coarse[name]
    v.set_interactive(False)
    v.window.Render()
    assert mapper.GetImageSampleDistance() <= 1.0
    assert layer.actors[name].GetMapper().GetInput() is layer.fine[name]


def test_procedure_room_mode(viewer):
    room = Viewer(viewer.scene, size=(900, 540), room=True)
    assert set(room.views) == {"planning", "bullseye", "progression"}  # the chosen plan only
    assert room.views["planning"].info["path"].rank == 1
    rgb = room.render()
    assert rgb.mean() < 140  # dark

    def font(view):
        return max(a.GetTextProperty().GetFontSize() for a in view.overlay.GetViewProps() if a.IsA("vtkTextActor"))

    assert font(room.views["planning"]) > 1.5 * font(viewer.views["planning"])  # large type


_ON_SCREEN = r"""
import json, sys
import numpy as np
from planner.scene import load_case
from planner.viewer import Viewer
win = Viewer._onscreen_window((900, 540))
v = Viewer(load_case(sys.argv[1]), size=(900, 540), offscreen=False, window=win)
iren = v.attach_interactor()
first = v.render()
iren.SetKeySym("n")
iren.InvokeEvent("KeyPressEvent")
print(json.dumps({"window": win.GetClassName(), "mean": float(first.mean()), "shape": list(first.shape),
                  "selected": v.selected}))
"""


def test_the_review_window_opens_on_a_real_x_display(plan_dir):
    """On an X display (Xvfb here), the viewer opens a real window, draws into it and takes keys."""
    import json
    import os
    import subprocess
    import sys

    runner = require_tool("xvfb-run", "xvfb")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "VTK_DEFAULT_OPENGL_WINDOW")}
    out = subprocess.run([runner, "-a", "-s", "-screen 0 1280x1024x24", sys.executable, "-c", _ON_SCREEN,
                          str(plan_dir)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert facts["window"] == "vtkXOpenGLRenderWindow"  # a window on the display, not offscreen
    assert facts["shape"][:2] == [540, 900] and facts["mean"] > 10
    assert facts["selected"] == 2  # the key reached the viewer


def test_replan_keeps_the_plans_approach(tmp_path):
    """A knee injection planned from medial is re-planned from medial, not from the preset's
    default (lateral) side."""
    c = next(c for c in demo_cases() if c.id == "knee")
    out = tmp_path / "knee_medial"
    plan = planner.plan(c.ct, procedure="knee-injection", structures=c.folder / c.info["structures"],
                        target_label="knee_effusion_right", approach="suprapatellar-medial", n=3)
    plan.write(out)
    assert plan.status == "ok"
    v = Viewer(load_case(out), size=(600, 400))
    v.attach_interactor()
    _press(v, "Return")
    paths = v.scene.case.paths
    assert paths, v.messages
    # right knee: medial is towards the patient's left, larger LPS x than the target
    assert all(p.entry[0] > p.target[0] + 5.0 for p in paths), [p.entry for p in paths]


def test_replan_keeps_the_side_given_and_says_what_it_decided(tmp_path):
    """A point target has no side in its name: the plan's --side must reach the re-plan (it was
    lost, and a lateral approach then failed for want of a side), and the re-plan's explanation
    and rejection counts replace the first plan's instead of staying stale."""
    c = next(c for c in demo_cases() if c.id == "knee")
    ct = planner.load_image(c.ct)
    structures = planner.load_structures(c.folder / c.info["structures"], ct)
    point = tuple(c.target_lps)
    plan = planner.plan(ct, procedure="knee-injection", structures=structures, target=point, side="right",
                        approach="suprapatellar-lateral", n=2)
    assert plan.ok and plan.preset.side == "right"
    out = tmp_path / "knee_side"
    plan.write(out)
    v = Viewer(load_case(out), size=(600, 400))
    v.move_target(np.array([0.0, 0.0, 2.0]))
    result = v.replan()
    case = v.scene.case
    assert case.paths, v.messages
    # right knee, lateral: towards the patient's right, smaller LPS x than the target
    assert all(p.entry[0] < p.target[0] - 5.0 for p in case.paths), [p.entry for p in case.paths]
    assert case.plan["explanation"] == list(result.explanation)
    assert case.plan["rejected"] == dict(result.rejected)
    assert case.plan["n_candidates"] == result.n_candidates != plan.targets[0].n_candidates


def test_key_c_records_the_trajectory_shown_as_chosen(plan_dir, tmp_path):
    """Key c records the trajectory on screen in the plan folder's choice.json (the way every
    choice is recorded) and says so in the window; a trajectory from a re-plan in the viewer (not
    in plan.json) is refused, said in the window too; the viewer reopens on the choice."""
    import json
    import shutil

    from planner.viewer import KEYS

    d = tmp_path / "plan"
    shutil.copytree(plan_dir, d)
    v = Viewer(load_case(d), size=(600, 400), plan_dir=d)
    v.attach_interactor()
    assert "c" in KEYS
    _press(v, "n")
    _press(v, "c")
    choice = json.loads((d / "choice.json").read_text())
    assert (choice["rank"], choice["by"]) == (2, "viewer")
    banner = v.views["planning"].info["banner"]
    assert "#2 recorded as the one chosen" in banner.GetInput() and v.views["planning"].overlay.HasViewProp(banner)
    _press(v, "Prior")  # the target 2 mm up, re-planned: its #1 is not plan.json's #1
    _press(v, "Return")
    assert "re-planned" in v.messages[-1]
    _press(v, "c")
    assert json.loads((d / "choice.json").read_text())["rank"] == 2
    assert "NOT recorded" in v.views["planning"].info["banner"].GetInput() and "re-plan" in v.messages[-1]
    rgb = v.render()  # the line is drawn: its yellow shows at the foot of the planning slice
    x0, y0, x1, y1 = LAYOUT["planning"]
    foot = rgb[int((1 - y0) * 400) - 30:int((1 - y0) * 400), int(x0 * 600):int(x1 * 600)].astype(int)
    assert np.all(np.abs(foot - [255, 220, 0]) < 60, axis=2).sum() > 20
    again = Viewer(load_case(d), size=(600, 400), plan_dir=d, room=True)  # reopened: the chosen one first
    assert again.selected == 2 and again.views["planning"].info["path"].rank == 2
    assert "was chosen (viewer" in again.views["planning"].info["banner"].GetInput()
