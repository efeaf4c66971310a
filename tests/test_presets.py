"""Procedure presets are data files: every one loads, names its sources and means what it says."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ROOT
from planner.anatomy.target import Target
from planner.cli.main import main
from planner.errors import InputError
from planner.planning import list_presets, load_preset
from planner.planning.engine import target_side

CONVENTION_IDS = {"lung-biopsy", "liver-biopsy", "kidney-biopsy", "fluid-aspiration", "knee-injection",
                  "knee-synovial-biopsy", "hip-injection", "shoulder-injection", "wrist-injection",
                  "ankle-injection", "si-joint-injection"}


def test_every_preset_of_the_conventions_is_there_and_explains_its_rules():
    presets = list_presets()
    assert CONVENTION_IDS <= set(presets)
    for p in presets.values():
        assert p.avoid and p.needles and p.max_depth_mm > 0
        for rule in p.avoid:
            assert rule.why and rule.source, (p.id, rule.key)
        for a in p.approaches:
            assert a.note and a.source, (p.id, a.id)


def test_approach_directions_follow_the_side_of_the_target():
    knee = load_preset("knee-injection", "suprapatellar-lateral")
    assert np.allclose(knee.approach.vector("right"), [-1, 0, 0])  # a right knee's lateral: the patient's right
    assert np.allclose(knee.approach.vector("left"), [1, 0, 0])
    al = load_preset("knee-injection", "anterolateral").approach.vector("right")
    assert np.allclose(al, np.array([-1, -1, 0]) / np.sqrt(2))
    with pytest.raises(InputError, match="side of the target"):
        knee.approach.vector(None)
    assert np.allclose(load_preset("hip-injection").approach.vector(None), [0, -1, 0])  # anterior needs no side
    assert target_side(Target((0, 0, 0), "knee_effusion_right", "")) == "right"
    assert target_side(Target((0, 0, 0), "lesion", "")) is None


def test_unknown_approach_is_refused_with_the_list():
    with pytest.raises(InputError, match="suprapatellar-lateral"):
        load_preset("knee-injection", "posterior")


def test_procedures_lists_presets_and_their_approaches(capsys):
    assert main(["procedures"]) == 0
    out = capsys.readouterr().out
    for pid in CONVENTION_IDS:
        assert pid in out
    assert "--approach rotator-interval" in out


def test_plan_with_a_bad_approach_exits_2(tmp_path, capsys):
    code = main(["plan", "--ct", str(ROOT / "assets/demo/knee/ct"), "--target", "-104,-25,50", "--procedure", "knee-injection",
                 "--approach", "sideways", "--out", str(tmp_path / "p")])
    assert code == 2
    assert "sideways" in capsys.readouterr().err


def test_a_weight_that_names_no_criterion_is_refused_and_the_lung_preset_weighs_vessels():
    """A misspelt weight would silently weigh nothing (the lung preset's vessel weight once did):
    the loader refuses it, and every shipped preset's weights name computed criteria."""
    import json

    from planner.planning.presets import SCORE_TERMS, _parse

    for p in list_presets().values():
        assert set(p.weights) <= set(SCORE_TERMS), p.id
    lung = load_preset("lung-biopsy")
    assert lung.weights.get("vessel_near_mm", 0) > 0
    data = json.loads((ROOT / "planner" / "data" / "presets" / "lung-biopsy.json").read_text())
    data["weights"]["vessels_within_5mm"] = 3.0
    with pytest.raises(InputError, match=r"vessels_within_5mm.*name no criterion"):
        _parse(data, "presets/lung-biopsy.json")
