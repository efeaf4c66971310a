"""The case library (planner/library/, ``planner library ...``, ``planner outcome``).

A library of well over 40 cases is built once per module: the embedded demo thorax and the
shared real scans (the thigh sarcoma PET/CT's CT with its RTSTRUCT, the abdomen CT with its
TotalSegmentator masks: both kidneys in one plan) are planned for real, and synthetic cases are
made from the real thorax plan folder: the target moved to a voxel deep inside a chosen lobe,
its size, the trajectories' criteria and the needle drawn at random, the operator's choice made
by known weights, and the outcome (pneumothorax) drawn from a logistic model with known odds
ratios. Every case enters the library through the same ``add`` as a real one.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, require_tool

from planner.cli.main import main
from planner.library import open_library
from planner.library.learn import preset_document, term
from planner.library.query import search, similar
from planner.library.rates import TooFewCases, local_rates

ROOT = Path(__file__).resolve().parents[1]
THORAX = ROOT / "assets" / "demo" / "thorax"
SARCOMA = SHARED_DATA / "pet-ct-sarcoma"
ABDOMEN = SHARED_DATA / "abdomen-ct-totalseg"

#: the simulated department: odds ratios of pneumothorax (the published ones, and a baseline)
TRUE_OR = {"lung_3cm": 2.38, "fissure": 3.75, "emphysema": 6.13, "multiple_punctures": 2.43,
           "small_lesion": 2.09, "large_needle": 1.55}
BASE_LOGIT = math.log(0.06 / 0.94)
#: the simulated operators' weights (the preset's criteria; the pleura angle matters much more to
#: them, the length and lung crossed less)
TRUE_W = {"length_mm": 0.02, "lung_mm": 0.2, "fissures": 6.0, "pleura_crossings_beyond_first": 5.0,
          "emphysema_mm": 1.0, "unidentified_tissue_mm": 0.0, "pleura_angle_deg": 0.6, "vessel_near_mm": 0.0,
          "clearance_deficit_mm": 0.5}
LOBE_VALUES = {"RUL": "lung_upper_lobe_right", "RML": "lung_middle_lobe_right", "RLL": "lung_lower_lobe_right",
               "LUL": "lung_upper_lobe_left", "LLL": "lung_lower_lobe_left"}
N_SYNTH = 240

pytestmark = pytest.mark.filterwarnings("ignore:The value length .* exceeds the maximum length")  # the thigh's SH
CHOICE_NOISE = 2.0  # scale of the noise in the simulated choices (score units; scores differ by ~5-40)


def _plan(out: Path, *args: str) -> Path:
    assert main(["plan", *args, "--out", str(out)]) == 0
    return out


def _plan_quick(out: Path, ct: Path, structures: Path, procedure: str, *labels: str) -> Path:
    """A plan folder without the report set (plan.json, structures, risk maps): what planner
    batch --report none writes; the library takes it without a key image."""
    from planner.session import PlanRequest, TargetSpec, plan_and_write

    request = PlanRequest(ct=ct, procedure=procedure, structures=structures,
                          targets=[TargetSpec("label", name) for name in labels])
    plan_and_write(request, out, report=False)
    return out


def _shared(tmp_path_factory) -> Path:
    """This test run's temporary folder, the same for every pytest-xdist worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """Real plan folders: the demo thorax (always) and the shared real scans (when present).
    Planned once per test run: under pytest-xdist the first worker plans (holding a lock in the
    run's shared temporary folder) and the others read its folders (the tests only read them)."""
    shared = _shared(tmp_path_factory)
    base = shared / "library-plans"
    with _lock(shared / "library-plans.lock"):
        out = {"thorax": base / "thorax"}
        if SHARED_DATA.is_dir():
            out.update(sarcoma=base / "sarcoma", kidneys=base / "kidneys")
        if not (base / "done").is_file():
            _plan(out["thorax"], "--ct", str(THORAX / "ct"), "--structures", str(THORAX / "structures.nii.gz"),
                  "--target-label", "lung_nodule", "--procedure", "lung-biopsy")
            if SHARED_DATA.is_dir():
                _plan_quick(out["sarcoma"], SARCOMA / "ct", SARCOMA / "ct-rtstruct" / "RS.dcm", "soft-tissue-biopsy",
                            "GTV_Mass_CT")
                _plan_quick(out["kidneys"], ABDOMEN / "ct.nii.gz", ABDOMEN / "segmentations", "kidney-biopsy",
                            "kidney_right", "kidney_left")
            (base / "done").write_text("planned\n")
    return out


def _lobe_points(seg: Path, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """For each lobe, LPS points whose whole 12 mm neighbourhood is that lobe (read here with
    pynrrd, independently of the library)."""
    import nrrd

    data, h = nrrd.read(str(seg), index_order="F")  # [i, j, k]
    names = {h[f"Segment{n}_Name"]: int(h[f"Segment{n}_LabelValue"]) for n in range(200)
             if f"Segment{n}_Name" in h}
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(h["space directions"], float).T
    affine[:3, 3] = np.asarray(h["space origin"], float)
    r = np.ceil(6.0 / np.linalg.norm(affine[:3, :3], axis=0)).astype(int)
    out: dict[str, list[np.ndarray]] = {}
    for abbr, name in LOBE_VALUES.items():
        value = names[name]
        cand = np.argwhere(data == value)
        rng.shuffle(cand)
        pts = []
        for i, j, k in cand:
            block = data[i - r[0]:i + r[0] + 1, j - r[1]:j + r[1] + 1, k - r[2]:k + r[2] + 1]
            if block.size and np.all(block == value):
                pts.append((affine @ np.array([i, j, k, 1.0]))[:3].round(2))
            if len(pts) >= 60:
                break
        out[abbr] = pts
    return out


def _score(metrics: dict[str, float], weights: dict[str, float]) -> float:
    return sum(w * term(metrics, k) for k, w in weights.items())


def _flags(m: dict[str, float], size: float, gauge: str) -> dict[str, bool]:
    """The risk factors, as this test defines them (the published factors' definitions)."""
    return {"lung_3cm": m["lung_mm"] >= 30, "fissure": m["fissures"] >= 1, "emphysema": m["emphysema_mm"] > 0,
            "multiple_punctures": m["pleura_crossings"] > 1, "small_lesion": size < 40,
            "large_needle": int(gauge.rstrip("G")) <= 18}


def _synthesize(src: Path, out: Path, n: int, seed: int) -> list[dict]:
    """``n`` synthetic plan folders made from the real thorax plan folder (images and structures
    shared by links); returns what each was made with."""
    rng = np.random.default_rng(seed)
    doc0 = json.loads((src / "plan.json").read_text())
    preset_w = preset_document("lung-biopsy")["weights"]
    points = _lobe_points(src / "structures.seg.nrrd", rng)
    lobes = list(LOBE_VALUES)
    made = []
    for c in range(n):
        lobe = lobes[c % len(lobes)]
        point = points[lobe][(c // len(lobes)) % len(points[lobe])]
        size = float(rng.uniform(12, 70))
        gauge = "17G" if rng.random() < 0.5 else "19G"
        trajs = []
        for _ in range(5):
            m = {"length_mm": float(rng.uniform(50, 130)), "lung_mm": float(rng.uniform(0, 60)),
                 "pleura_crossings": float(1 + (rng.random() < 0.3)), "fissures": float(rng.random() < 0.5),
                 "lung_mm_fissures_unknown": 0.0, "emphysema_mm": float(rng.uniform(1, 8) if rng.random() < 0.35 else 0),
                 "pleura_angle_deg": float(rng.uniform(0, 60)), "vessel_near_mm": float(rng.uniform(0, 6)),
                 "unidentified_tissue_mm": 0.0, "min_clearance_excess_mm": float(rng.uniform(0, 15))}
            trajs.append(m)
        order = sorted(range(5), key=lambda t: _score(trajs[t], preset_w))  # the planner's ranking
        trajs = [trajs[t] for t in order]
        # the department's choice: the best by its weights, give or take a little (Gumbel noise: a
        # random-utility choice model, so choices are not perfectly consistent)
        chosen = int(np.argmin([_score(m, TRUE_W) - rng.gumbel(0, CHOICE_NOISE) for m in trajs])) + 1
        doc = json.loads(json.dumps(doc0))
        doc["target"]["point"] = [float(x) for x in point]
        doc["target"]["diameter_mm"] = round(size, 2)
        tmpl = doc0["trajectories"][0]
        doc["trajectories"] = []
        for rank, m in enumerate(trajs, start=1):
            t = json.loads(json.dumps(tmpl))
            t.update(rank=rank, target=doc["target"]["point"], length_mm=round(m["length_mm"], 1), metrics=m,
                     score=round(_score(m, preset_w), 3), risk_factors=[])
            t["needle"]["gauge"] = gauge
            doc["trajectories"].append(t)
        flags = _flags(trajs[chosen - 1], size, gauge)
        logit = BASE_LOGIT + sum(math.log(TRUE_OR[k]) for k, v in flags.items() if v)
        ptx = bool(rng.random() < 1 / (1 + math.exp(-logit)))
        d = out / f"synth-{c:03d}"
        d.mkdir(parents=True)
        (d / "plan.json").write_text(json.dumps(doc))
        os.symlink(src / "images", d / "images")
        os.symlink(src / "structures.seg.nrrd", d / "structures.seg.nrrd")
        # what planner outcome writes
        (d / "outcome.json").write_text(json.dumps({
            "schema": "planner.outcome/1", "recorded": "2026-01-01T00:00:00+00:00",
            "complications": ["pneumothorax"] if ptx else ["none"], "chest_tube": bool(ptx and rng.random() < 0.3),
            "diagnostic": bool(rng.random() < 0.9), "note": "", "chosen_rank": chosen}))
        made.append({"folder": d, "lobe": lobe, "size": size, "gauge": gauge, "flags": flags, "ptx": ptx,
                     "chosen": chosen, "point": point,
                     "best_true": int(np.argmin([_score(m, TRUE_W) for m in trajs])) + 1})
    return made


KIDNEY_BLEED = 0.15  # the simulated rate of haemorrhage after a kidney biopsy


def _synthesize_kidneys(src: Path, out: Path, n: int, seed: int) -> list[dict]:
    """``n`` variants of the real abdomen's two-kidney plan (both targets' sizes drawn at random),
    each with a haemorrhage drawn at KIDNEY_BLEED."""
    rng = np.random.default_rng(seed)
    doc0 = json.loads((src / "plan.json").read_text())
    made = []
    for c in range(n):
        doc = json.loads(json.dumps(doc0))
        sizes = [round(float(rng.uniform(20, 120)), 2) for _ in doc["targets"]]
        for block, size in zip(doc["targets"], sizes):
            block["target"]["diameter_mm"] = size
        doc["target"]["diameter_mm"] = sizes[0]  # the top level repeats the first target
        bleed = bool(rng.random() < KIDNEY_BLEED)
        d = out / f"kidneys-{c:03d}"
        d.mkdir(parents=True)
        (d / "plan.json").write_text(json.dumps(doc))
        os.symlink(src / "structures.seg.nrrd", d / "structures.seg.nrrd")
        (d / "outcome.json").write_text(json.dumps({
            "schema": "planner.outcome/1", "recorded": "2026-01-01T00:00:00+00:00",
            "complications": ["haemorrhage"] if bleed else ["none"], "chest_tube": False, "diagnostic": True,
            "note": ""}))
        made.append({"folder": d, "sizes": sizes, "bleed": bleed})
    return made


@pytest.fixture(scope="module")
def library(plans, tmp_path_factory):
    """The library of the real plans and the synthetic cases, built once per test run (the first
    pytest-xdist worker builds it under a lock, the others open it: one library, several
    processes, as in a department). ``lib.kidneys``: the kidney variants (with shared data)."""
    shared = _shared(tmp_path_factory)
    base = shared / "library"
    with _lock(shared / "library.lock"):
        if not (base / "made.json").is_file():
            made = _synthesize(plans["thorax"], base / "synth", N_SYNTH, seed=20)
            kidneys = _synthesize_kidneys(plans["kidneys"], base / "kidneys", 20, seed=7) if "kidneys" in plans else []
            lib = open_library(base / "root")
            for p in plans.values():
                lib.add(p)
            for m in made + kidneys:  # the kidney variants: cases of a real scan with synthetic outcomes
                lib.add(m["folder"])
            lib.close()
            (base / "made.json").write_text(json.dumps({"made": made, "kidneys": kidneys}, default=_plain))
        saved = json.loads((base / "made.json").read_text())
    for m in saved["made"] + saved["kidneys"]:
        m["folder"] = Path(m["folder"])
    for m in saved["made"]:
        m["point"] = np.asarray(m["point"])
    lib = open_library(base / "root")
    lib.kidneys = saved["kidneys"]
    yield lib, saved["made"]
    lib.close()


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


# ---------------------------------------------------------------------------------------------
def test_add_derives_the_facts_of_real_plans(plans, library):
    lib, _ = library
    assert lib.count() >= 40
    doc = json.loads((plans["thorax"] / "plan.json").read_text())
    (case,) = [lib.get(i) for i in lib.cases_of_folder(plans["thorax"])]
    f = case.facts
    t1 = doc["trajectories"][0]
    assert f["procedure"] == "lung-biopsy" and f["status"] == "ok"
    assert f["region"] == "RUL"  # the phantom's nodule sits in the right upper lobe (case.json)
    assert f["size_mm"] == pytest.approx(doc["target"]["diameter_mm"])
    assert f["depth_mm"] == pytest.approx(t1["length_mm"]) and f["lung_mm"] == pytest.approx(t1["metrics"]["lung_mm"])
    assert f["limiting"] == t1["limiting"] and f["risk_text"] == t1["risk_factors"]
    assert f["chosen_rank"] == 1 and f["chosen_source"] == "none" and f["n_trajectories"] == len(doc["trajectories"])
    assert f["risk_factors"]["small_lesion"] and f["risk_factors"]["large_needle"]  # 18 mm, 17G
    assert f["frame"] == "lungs" and all(0 <= f[k] <= 1 for k in ("frame_x", "frame_y", "frame_z"))
    assert f["frame_x"] < 0.5  # right lung: patient's right is low x (LPS)
    stored = json.loads(lib.read(f["plan_sha256"]))
    assert stored["anonymized"] is True and "patient" not in stored
    assert stored["trajectories"][0]["entry"] == t1["entry"]  # the geometry itself is kept (LPS mm)
    assert lib.object_path(f["key_image_sha256"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "kidneys" in plans:
        regions = [lib.get(i).facts for i in lib.cases_of_folder(plans["kidneys"])]
        assert [r["region"] for r in regions] == ["kidney_right", "kidney_left"]  # one case per target
        assert [r["side"] for r in regions] == ["right", "left"]
        (sar,) = [lib.get(i).facts for i in lib.cases_of_folder(plans["sarcoma"])]
        assert sar["procedure"] == "soft-tissue-biopsy" and sar["size_mm"] > 40
        assert sar["key_image_sha256"] == ""  # planned without the report set: no image to keep
        assert sar["risk_factors"] == {}  # the published factors are of pneumothorax, lung biopsies only


def test_adding_again_updates_the_case_and_stores_each_file_once(plans, library):
    lib, _ = library
    n = lib.count()
    objects = sorted(p.name for p in (lib.root / "objects").rglob("*") if p.is_file())
    again = lib.add(plans["thorax"])
    assert lib.count() == n
    assert sorted(p.name for p in (lib.root / "objects").rglob("*") if p.is_file()) == objects
    assert [c.id for c in again] == lib.cases_of_folder(plans["thorax"])


def test_search_returns_the_expected_cases(library):
    lib, made = library
    by_folder = {c.key: c for c in lib.cases()}
    synth = {m["folder"].name: m for m in made}

    for lobe in LOBE_VALUES:
        found = search(lib, procedure="lung-biopsy", region=lobe.lower())
        expected = [m for m in made if m["lobe"] == lobe]
        synth_found = [c for c in found if c.facts["n_trajectories"] == 5 and c.facts["chosen_source"] == "recorded"]
        assert len(synth_found) == len(expected), lobe
        assert sorted(tuple(np.round(m["point"], 1)) for m in expected) == \
            sorted(tuple(np.round(json.loads(lib.read(c.facts["plan_sha256"]))["target"]["point"], 1))
                   for c in synth_found)
    found = search(lib, procedure="lung-biopsy", size="10-20", outcome="pneumothorax")
    expected = [m for m in made if 10 <= round(m["size"], 2) <= 20 and m["ptx"]]
    assert len([c for c in found if c.facts["chosen_source"] == "recorded"]) == len(expected) > 0
    assert all(c.outcome["complications"] == ["pneumothorax"] for c in found)
    kidney_cases = 2 * len(getattr(lib, "kidneys", []))
    assert len(search(lib, outcome="unknown")) == lib.count() - len(made) - kidney_cases  # the real plans: none yet
    large = search(lib, risk="large_needle")
    assert {c.facts["needle_gauge"] for c in large} == {"17G"}  # the synthetic cases' 17G (19G is thinner)
    assert all(c.facts["procedure"] == "lung-biopsy" for c in large)  # pneumothorax factors: lung only
    assert by_folder and synth  # (the lookups above used them)
    # the command line: JSON out, and a bad range is one line and exit 2
    assert main(["library", "search", "--library", str(lib.root), "--region", "RML", "--size", "20-", "--json"]) == 0
    assert main(["library", "search", "--library", str(lib.root), "--size", "20-10"]) == 2


@pytest.mark.shared_data
def test_cases_of_a_real_scan_are_searched_and_counted_by_target(library):
    """Twenty variants of the real abdomen's plan of both kidneys: 40 cases, one per kidney, found
    by region and size; their haemorrhage rate within its Wilson interval."""
    lib, _ = library
    kid = lib.kidneys
    for i, side in enumerate(("right", "left")):
        found = search(lib, procedure="kidney-biopsy", region=f"kidney_{side}", outcome="any")
        assert sorted(c.facts["size_mm"] for c in found) == sorted(m["sizes"][i] for m in kid)
        assert all(c.facts["side"] == side for c in found)
        big = search(lib, procedure="kidney-biopsy", region=f"kidney_{side}", size="60-", outcome="any")
        assert len(big) == sum(m["sizes"][i] >= 60 for m in kid) > 0
    r = local_rates(lib, "kidney-biopsy", min_cases=20)
    assert r["complication"] == "haemorrhage" and r["cases"] == 2 * len(kid)
    assert r["events"] == 2 * sum(m["bleed"] for m in kid) and r["factors"] == []
    lo, hi = r["ci95"]
    assert lo <= KIDNEY_BLEED <= hi


def test_similar_finds_the_case_a_new_plan_resembles(library, tmp_path, capsys):
    lib, made = library
    # a new plan: one of the library's cases (one done along trajectory #1, as a new plan's facts
    # are those of #1) with the target moved 1.5 mm and 1 mm larger
    known = [m for m in made if m["chosen"] == 1][3]
    doc = json.loads((known["folder"] / "plan.json").read_text())
    doc["target"]["point"] = [doc["target"]["point"][0] + 1.5, *doc["target"]["point"][1:]]
    doc["target"]["diameter_mm"] += 1.0
    new = tmp_path / "new"
    new.mkdir()
    (new / "plan.json").write_text(json.dumps(doc))
    for name in ("images", "structures.seg.nrrd"):
        os.symlink(os.readlink(known["folder"] / name), new / name)
    (best, case), *rest = similar(lib, new, k=5)
    assert case.key.startswith(__import__("hashlib").sha256((known["folder"] / "plan.json").read_bytes()).hexdigest())
    assert best < rest[0][0] and len(rest) == 4
    assert all(c.facts["procedure"] == "lung-biopsy" for _, c in rest)
    # a case is never its own neighbour
    own = similar(lib, known["folder"], k=3)
    assert all(not c.key.startswith(case.key.split("#")[0]) for _, c in own)
    capsys.readouterr()
    assert main(["library", "similar", str(new), "--library", str(lib.root), "-k", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["id"] == case.id and Path(rows[0]["key_image"]).is_file() and Path(rows[0]["plan"]).is_file()
    assert rows[0]["outcome"] is not None
    assert main(["library", "similar", str(tmp_path), "--library", str(lib.root)]) == 2  # not a plan folder


def test_local_rates_recover_the_simulated_odds_ratios(library, capsys):
    lib, made = library
    r = local_rates(lib, "lung-biopsy")
    assert r["cases"] == len(made)  # the synthetic cases carry outcomes, the real plans not yet
    assert r["events"] == sum(m["ptx"] for m in made)
    report = [f"\nlocal rates from {r['cases']} simulated cases ({r['events']} pneumothoraces):"]
    for f in r["factors"]:
        lo, hi = f["local_or_ci95"]
        report.append(f"  {f['factor']:<20} simulated OR {TRUE_OR[f['factor']]:.2f}  local {f['local_or']:.2f} "
                      f"[{lo:.2f}-{hi:.2f}]  with {f['with']['cases']}, without {f['without']['cases']}")
    with capsys.disabled():
        print("\n".join(report))
    for f in r["factors"]:
        lo, hi = f["local_or_ci95"]
        assert lo <= TRUE_OR[f["factor"]] <= hi, f["factor"]
        assert f["published_or"] == TRUE_OR[f["factor"]]  # the simulation used the published ones
        n1 = sum(m["flags"][f["factor"]] for m in made)
        assert f["with"]["cases"] == n1 and f["without"]["cases"] == len(made) - n1
        k1 = sum(m["ptx"] for m in made if m["flags"][f["factor"]])
        assert f["with"]["events"] == k1
        wl, wh = f["with"]["ci95"]
        assert wl <= k1 / n1 <= wh
    with pytest.raises(TooFewCases, match=r"refused, \d+ case\(s\) with a recorded outcome.*at least 1000"):
        local_rates(lib, "lung-biopsy", min_cases=1000)
    capsys.readouterr()
    assert main(["library", "rates", "--library", str(lib.root), "--min-cases", "1000"]) == 2
    assert "refused" in capsys.readouterr().err
    assert main(["library", "rates", "--library", str(lib.root)]) == 0
    text = capsys.readouterr().out
    assert "published OR" in text and "fissure crossed" in text


def test_learner_recovers_the_weights_of_simulated_choices(library, capsys):
    lib, made = library
    capsys.readouterr()
    assert main(["library", "learn", "lung-biopsy", "--library", str(lib.root), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    report = [f"\nagreement with simulated choices: preset {r['agreement_before']:.3f}, learned "
              f"{r['agreement_after_cv']:.3f} (cross-validated)"]
    assert r["cases"] == len(made)
    # the ceiling: how often the simulated weights themselves pick the noisy choice
    ceiling = np.mean([m["chosen"] == m["best_true"] for m in made])
    report.append(f"(the simulated weights agree with the noisy choices {ceiling:.3f})")
    assert r["agreement_after_cv"] > r["agreement_before"] + 0.2
    assert r["agreement_after_cv"] >= ceiling - 0.05
    # the direction of the learned weights, on the criteria's own scale, is the simulated one's
    keys = list(r["weights_after"])
    feats = np.array([[term(t["metrics"], k) for k in keys] for c in lib.cases(procedure="lung-biopsy")
                      if c.facts["chosen_source"] == "recorded" for t in c.facts["trajectories"]])
    s = feats.std(axis=0)
    live = s > 0
    a = np.array([r["weights_after"][k] for k in keys])[live] * s[live]
    b = np.array([TRUE_W[k] for k in keys])[live] * s[live]
    p = np.array([r["weights_before"][k] for k in keys])[live] * s[live]
    cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    report.append(f"cosine(learned, simulated) {cos(a, b):.3f}; cosine(preset, simulated) {cos(p, b):.3f}")
    with capsys.disabled():
        print("\n".join(report))
    assert cos(a, b) > 0.95 and cos(a, b) > cos(p, b) + 0.2
    # the variant: written, weights only; every hard constraint is the preset's own
    variant = json.loads(Path(r["written"]).read_text())
    preset = preset_document("lung-biopsy")
    assert {k: v for k, v in variant.items() if k not in ("weights", "department_variant")} == \
        {k: v for k, v in preset.items() if k != "weights"}
    assert set(variant["weights"]) == set(preset["weights"])
    assert variant["weights"] == r["weights_after"]
    # read by the planner's own preset reader: every rule but the weights is the preset's
    from dataclasses import replace

    from planner.planning.presets import _parse, load_preset

    parsed, original = _parse(variant, "department variant"), load_preset("lung-biopsy")
    assert replace(parsed, weights=original.weights, sha256=original.sha256) == original
    assert parsed.weights != original.weights
    # the text report prints both agreements
    assert main(["library", "learn", "lung-biopsy", "--library", str(lib.root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "agreement with the choices: preset" in out and "nothing written (--dry-run)" in out


def test_plans_with_the_department_variant_and_refuses_other_hard_constraints(library, tmp_path, capsys):
    """The variant planner library learn writes is what planner plan --library ROOT (or
    --preset-file) plans with: its weights rank the paths, plan.json and the report name it
    (file, version, cases learned from), review re-derives the shipped hard constraints; a variant
    file whose hard constraints differ from the shipped preset's is refused."""
    from planner.cli.library import department_preset
    from planner.images import load_image
    from planner.library.learn import learn, variant_path
    from planner.planning.presets import load_preset
    from planner.report.facts import report_facts
    from planner.report.review import review_plan
    from planner.session import PlanRequest, TargetSpec, plan_and_write

    lib, made = library
    r = learn(lib, "lung-biopsy")  # what planner library learn writes (as in the learner's test)
    path = variant_path(lib.root, "lung-biopsy")
    assert r["written"] == str(path) and department_preset(None, str(lib.root), "lung-biopsy") == str(path)
    out = tmp_path / "variant"
    request = PlanRequest(THORAX / "ct", "lung-biopsy", [TargetSpec("label", "lung_nodule")],
                          structures=THORAX / "structures.nii.gz", preset_file=str(path))
    plan_and_write(request, out, report=False)
    doc = json.loads((out / "plan.json").read_text())
    shipped = load_preset("lung-biopsy")
    b, v = doc["preset"], doc["preset"]["variant"]
    assert b["version"] == shipped.version and b["sha256"] == v["sha256"] != shipped.sha256
    assert v["file"] == str(path) and v["of_sha256"] == shipped.sha256 and v["learned_from_cases"] == len(made)
    assert doc["score"]["weights"] == r["weights_after"] and doc["hard_constraints"]["max_depth_mm"] == \
        shipped.max_depth_mm
    scores = [_score(t["metrics"], r["weights_after"]) for t in doc["trajectories"]]
    assert [t["score"] for t in doc["trajectories"]] == pytest.approx(scores, abs=0.01) and scores == sorted(scores)
    (procedure,) = [blk for blk in report_facts(doc).blocks if getattr(blk, "title", "") == "Procedure"]
    line = dict(procedure.rows)["Preset"]  # the report (PDF and HTML print the same strings)
    assert "department variant of lung-biopsy version" in line and f"learned from {len(made)} cases" in line
    assert str(path) in line
    result = review_plan(out, load_image(THORAX / "ct"))
    assert result.ok and any("department variant" in n for n in result.notes)
    # refused: another hard constraint (a margin), another version, a variant the library lacks
    tampered = json.loads(path.read_text())
    tampered["avoid"][0]["margin_mm"] = float(tampered["avoid"][0]["margin_mm"]) / 2
    (tmp_path / "tampered.json").write_text(json.dumps(tampered))
    older = dict(json.loads(path.read_text()), version=shipped.version - 1)
    (tmp_path / "older.json").write_text(json.dumps(older))
    plan = ["plan", "--ct", str(THORAX / "ct"), "--structures", str(THORAX / "structures.nii.gz"),
            "--target-label", "lung_nodule", "--procedure", "lung-biopsy", "--out", str(tmp_path / "refused")]
    capsys.readouterr()
    assert main(plan + ["--preset-file", str(tmp_path / "tampered.json")]) == 2
    assert main(plan + ["--preset-file", str(tmp_path / "older.json")]) == 2
    assert main(plan + ["--library", str(tmp_path)]) == 2
    assert main(plan + ["--preset-file", str(path), "--library", str(lib.root)]) == 2
    assert main(plan[:-4] + ["--procedure", "kidney-biopsy", "--out", str(tmp_path / "r2"),
                             "--preset-file", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 5 and "Traceback" not in "".join(err)
    assert "differs from the shipped preset 'lung-biopsy' in avoid" in err[0] and "never a hard constraint" in err[0]
    assert "learn the variant again" in err[1] and "no department variant of 'lung-biopsy'" in err[2]
    assert "give one" in err[3] and "not of the procedure asked for ('kidney-biopsy')" in err[4]
    assert not (tmp_path / "refused").exists()


def test_learner_writes_nothing_without_improvement_and_refuses_few_choices(plans, tmp_path, capsys):
    made = _synthesize(plans["thorax"], tmp_path / "s", 12, seed=3)
    lib = open_library(tmp_path / "root")
    for m in made[:4]:
        lib.add(m["folder"])
    assert main(["library", "learn", "lung-biopsy", "--library", str(lib.root)]) == 2
    assert "at least 10 are needed" in capsys.readouterr().err
    # choices that follow the preset exactly: nothing to improve, nothing written
    for m in made:
        o = json.loads((m["folder"] / "outcome.json").read_text())
        o["chosen_rank"] = 1
        (m["folder"] / "outcome.json").write_text(json.dumps(o))
        lib.add(m["folder"])
    assert main(["library", "learn", "lung-biopsy", "--library", str(lib.root), "--min-choices", "5"]) == 0
    out = capsys.readouterr().out
    assert "preset 100.0%" in out and "nothing written" in out
    assert not (lib.root / "presets").exists()
    lib.close()


def test_outcome_command_records_in_folder_and_library(plans, tmp_path, capsys):
    d = tmp_path / "plan"
    shutil.copytree(plans["thorax"], d)
    root = tmp_path / "lib"
    assert main(["outcome", str(d), "--complication", "pneumothorax", "--complication", "haemorrhage",
                 "--chest-tube", "yes", "--diagnostic", "no", "--note", "small apical PTX", "--chosen", "2",
                 "--library", str(root)]) == 0
    rec = json.loads((d / "outcome.json").read_text())
    assert rec["complications"] == ["pneumothorax", "haemorrhage"] and rec["chest_tube"] and not rec["diagnostic"]
    choice = json.loads((d / "choice.json").read_text())  # the choice goes the one way every choice goes
    assert choice["schema"] == "planner.choice/1" and choice["rank"] == 2 and choice["by"] == "outcome"
    lib = open_library(root)
    (c,) = lib.cases()
    assert c.outcome["complications"] == ["pneumothorax", "haemorrhage"] and c.outcome["note"] == "small apical PTX"
    assert c.facts["chosen_rank"] == 2 and c.facts["chosen_source"] == "recorded"
    doc = json.loads((d / "plan.json").read_text())
    assert c.facts["depth_mm"] == pytest.approx(doc["trajectories"][1]["length_mm"])  # the chosen one's facts
    lib.close()
    for bad in (["--complication", "pneumo"], ["--complication", "none,pneumothorax"], ["--chosen", "9"]):
        args = ["outcome", str(d), "--complication", "none", "--chest-tube", "no", "--diagnostic", "yes",
                "--library", str(root)]
        args[2:4] = bad if bad[0] == "--complication" else args[2:4]
        assert main(args + ([] if bad[0] == "--complication" else bad)) == 2
    err = capsys.readouterr().err
    assert err.count("planner: error:") == 3 and "Traceback" not in err


def test_a_choice_recorded_by_review_or_the_web_reaches_the_library(plans, tmp_path, capsys):
    """planner review --chosen records the choice (only once its trajectory passes), the web
    review's record_choice the same way, library add keeps the latest, and a choice made on a plan
    since replaced in its folder is not used."""
    from planner import InputError
    from planner.library import read_choice, record_choice

    d = tmp_path / "plan"
    shutil.copytree(plans["thorax"], d)
    doc = json.loads((d / "plan.json").read_text())
    review = ["review", str(d), "--ct", str(THORAX / "ct"), "--no-window"]
    assert main(review + ["--chosen", "9"]) == 2  # said before the scan is loaded
    assert "has no trajectory #9 (it has #1, #2" in capsys.readouterr().err and not (d / "choice.json").exists()
    assert main(review + ["--chosen", "2"]) == 0
    assert "choice recorded: trajectory #2" in capsys.readouterr().out
    c = json.loads((d / "choice.json").read_text())
    assert (c["schema"], c["rank"], c["by"]) == ("planner.choice/1", 2, "review") and c["time"]
    root = tmp_path / "lib"
    lib = open_library(root)
    (case,) = lib.add(d)
    assert (case.facts["chosen_rank"], case.facts["chosen_source"]) == (2, "recorded")
    assert case.facts["depth_mm"] == pytest.approx(doc["trajectories"][1]["length_mm"])  # the chosen one's facts
    # the web review's call: the same file, the latest choice wins
    assert record_choice(d, 3, by="web") == d / "choice.json"
    assert read_choice(d)["by"] == "web"
    (case,) = lib.add(d)
    assert case.facts["chosen_rank"] == 3
    for rank, by, why in ((0, "web", "no trajectory #0"), (True, "web", "whole number"), (2, "fax", "one of")):
        with pytest.raises(InputError, match=why):
            record_choice(d, rank, by)
    with pytest.raises(InputError, match="not a folder"):
        record_choice(tmp_path / "absent", 1, "web")
    # planned again into the folder: the recorded rank named a trajectory of the old plan
    (d / "plan.json").write_text(json.dumps(doc, indent=2))
    assert read_choice(d) is None
    (case,) = lib.add(d)
    assert (case.facts["chosen_rank"], case.facts["chosen_source"]) == (1, "none")
    lib.close()


def test_similar_for_plan_gives_the_web_review_json_ready_rows(library, tmp_path):
    from planner.library import similar_for_plan

    lib, made = library
    query = made[7]["folder"]
    rows = similar_for_plan(lib.root, query, k=4)
    expected = similar(lib, query, k=4)
    assert [r["case_id"] for r in rows] == [c.id for _, c in expected]
    assert [r["distance"] for r in rows] == [round(dd, 4) for dd, _ in expected]
    json.dumps(rows, allow_nan=False)  # plain JSON
    for r, (_, c) in zip(rows, expected):
        assert r["procedure"] == "lung-biopsy" and r["region"] == c.facts["region"]
        assert r["size_mm"] == pytest.approx(c.facts["size_mm"], abs=0.01)
        assert r["depth_mm"] == pytest.approx(c.facts["depth_mm"], abs=0.01)
        assert r["outcome"] == c.outcome and r["outcome_summary"].split(";")[0] in ("pneumothorax", "none")
        assert Path(r["key_image"]).is_absolute() and Path(r["key_image"]).read_bytes()[:4] == b"\x89PNG"
    assert similar_for_plan(lib, query, k=2) == rows[:2]  # an open library does as well
    if lib.kidneys:  # the real abdomen's plan was made without the report set: no key image
        (kid,) = similar_for_plan(lib.root, lib.kidneys[0]["folder"], k=1)
        assert kid["procedure"] == "kidney-biopsy" and kid["key_image"] is None
    assert similar_for_plan(tmp_path / "no-library", query) == []  # the web asks before any library exists
    assert not (tmp_path / "no-library").exists()


def _source_identifiers(dicom_dirs: list[Path], extra: list[str]) -> list[str]:
    import pydicom

    ids = set(extra)
    for d in dicom_dirs:
        for f in [d] if d.is_file() else sorted(p for p in d.rglob("*") if p.is_file()):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:
                continue
            name = str(ds.get("PatientName", ""))
            ids.update([name, *name.replace("^", " ").split(), str(ds.get("PatientID", "")),
                        str(ds.get("AccessionNumber", "")), str(ds.get("StudyInstanceUID", "")),
                        str(ds.get("SeriesInstanceUID", "")), str(ds.get("FrameOfReferenceUID", "")),
                        str(ds.get("SOPInstanceUID", ""))])
            ids.add(str(f))
            ids.add(str(f.resolve()))
    return sorted(i for i in ids if len(i) >= 4)


def test_no_identifier_of_the_source_dicom_enters_the_library(plans, tmp_path):
    """Every byte under the library root (database, its WAL, every stored file) is searched for
    the source DICOMs' patient name, ID, accession, every UID (study, series, frame of reference,
    each instance) and the paths of the scans and the plan folders."""
    d = tmp_path / "thorax-with-check"
    shutil.copytree(plans["thorax"], d)
    doc = json.loads((d / "plan.json").read_text())
    # a check scan of the procedure (its check.json as planner check writes it, identified) and an
    # outcome whose note names the patient
    (d / "checks" / "01").mkdir(parents=True)
    (d / "checks" / "01" / "check.json").write_text(json.dumps({
        "schema": "planner.check/1", "plan": {"trajectory_rank": 1},
        "check_image": {"series_instance_uid": doc["image"]["series_instance_uid"], "sha256": "0" * 64,
                        "source": str(THORAX / "ct"), "corrections": []},
        "identity": [f"same patient: {doc['patient']['name']} ({doc['patient']['id']})"],
        "deviation": {"target_hit": True}, "correction": {"kind": "none"}}))
    shutil.copy(d / "images" / "bullseye.png", d / "checks" / "01" / "bullseye.png")
    folders = [d]
    dicoms = [THORAX / "ct"]
    if "sarcoma" in plans:
        folders.append(plans["sarcoma"])
        dicoms += [SARCOMA / "ct", SARCOMA / "ct-rtstruct" / "RS.dcm"]
    root = tmp_path / "lib"
    assert main(["outcome", str(d), "--complication", "none", "--chest-tube", "no", "--diagnostic", "yes",
                 "--note", f"{doc['patient']['name']} tolerated it well", "--library", str(root)]) == 0
    assert main(["library", "add", *map(str, folders), "--library", str(root)]) == 0
    export = tmp_path / "teaching"
    assert main(["library", "export", "--library", str(root), "--out", str(export)]) == 0
    ids = _source_identifiers(dicoms, [str(p) for p in folders] + [str(p.resolve()) for p in folders]
                              + [doc["patient"]["name"], doc["patient"]["id"]])
    assert "Demo Thorax" in ids and "DEMO-THORAX" in ids and len(ids) > 100
    if "sarcoma" in plans:
        assert "STS_001" in ids
    files = [p for p in list(root.rglob("*")) + list(export.rglob("*")) if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files) or (root / "library.sqlite").is_file()
    assert len(files) > 10
    blob = b"\n".join(p.read_bytes().lower() for p in files)
    # a part of a name is a word ("Thorax" of "Demo Thorax" is in no stored word, but "pneumothorax" is
    # a column name); everything else is searched as is
    found = [i for i in ids if (re.search(rb"(?<![a-z])" + re.escape(i.lower().encode()) + rb"(?![a-z])", blob)
                                if i.isalpha() else i.lower().encode() in blob)]
    assert found == [], f"identifiers in the library: {found[:5]}"
    # and what was kept is still useful: the check's rank and the outcome are there
    lib = open_library(root)
    c = next(c for c in lib.cases() if c.facts["checks"])
    assert c.facts["checks"][0]["trajectory_rank"] == 1 and c.facts["chosen_source"] == "check"
    assert c.outcome["note"] == "[removed] tolerated it well"
    assert (export / "index.html").read_text().count("<tr>") == lib.count() + 1
    lib.close()


_ADD_SCRIPT = """
import sys
from planner.cli.main import main
import planner.cli.library, planner.library.store, planner.library.query, alembic.command  # imported before the start
print("ready", flush=True)
sys.stdin.readline()  # both start together: the parent answers when both are ready
sys.exit(main(["library", "add", "--library", *sys.argv[1:]]))
"""


def test_two_concurrent_adds_lose_nothing(plans, tmp_path):
    """Two ``planner library add`` processes add 10 cases each into one new library at once (both also create and
    migrate it) and both add one more, the same: all 21 are there, with every file, and no
    temporary file is left."""
    made = _synthesize(plans["thorax"], tmp_path / "s", 20, seed=11)
    root = tmp_path / "lib"
    # each adds its 10, and both add the same extra folder (one case, however it lands)
    extra = _synthesize(plans["thorax"], tmp_path / "x", 1, seed=12)[0]["folder"]
    halves = [[str(m["folder"]) for m in made[:10]] + [str(extra)], [str(extra)] + [str(m["folder"]) for m in made[10:]]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _ADD_SCRIPT, str(root), *h], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for h in halves]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
    for p in procs:  # both go at once
        p.stdin.write("go\n")
        p.stdin.flush()
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    lib = open_library(root)
    cases = lib.cases()
    assert len(cases) == 21
    assert len(lib.cases_of_folder(extra)) == 1
    assert sorted(c.facts["size_mm"] for c in cases if c.id not in lib.cases_of_folder(extra)) == \
        sorted(round(m["size"], 2) for m in made)
    assert all(c.outcome is not None for c in cases)
    for c in cases:
        assert set(c.files) >= {"plan.json", "images/planning_slice.png"}
        assert all(lib.object_path(h).is_file() for h in c.files.values())
    assert not [p for p in root.rglob(".*") if p.is_file() and p.name != ".migrate.lock"]
    lib.close()


def test_bad_library_input_is_one_line(tmp_path, capsys):
    (tmp_path / "notplan").mkdir()
    (tmp_path / "notplan" / "plan.json").write_text("{not json")
    assert main(["library", "add", str(tmp_path / "notplan"), "--library", str(tmp_path / "lib")]) == 2
    assert main(["library", "add", str(tmp_path / "absent"), "--library", str(tmp_path / "lib")]) == 2
    assert main(["library", "search", "--library", str(tmp_path / "lib"), "--db", "nosuchdb://x"]) == 2
    assert main(["library", "search", "--library", str(tmp_path / "lib"), "--db", "mysql://u@h/db"]) == 2
    assert main(["library", "learn", "no-such-procedure", "--library", str(tmp_path / "lib")]) == 2
    err = capsys.readouterr().err
    assert err.count("planner: error:") == 5 and "Traceback" not in err


def test_wilson_interval_and_the_schema_version(library):
    from sqlalchemy import text

    from planner.library.rates import wilson

    assert wilson(0, 10) == pytest.approx((0.0, 3.8415 / 13.8415), abs=1e-4)  # z^2 / (n + z^2)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lib, _ = library
    with lib.engine.connect() as conn:  # the schema is the migrations' (Alembic), at their head
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


# ---------------------------------------------------------------------------------------------
def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return found[-1] if found else require_tool(tool, "postgresql")


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of the Debian package, started here on a loopback port in a
    temporary folder (as the postgres user when the tests run as root: initdb refuses root)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    work = Path(tempfile.mkdtemp(prefix="planner-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None:
            pytest.fail("running as root and neither a postgres nor a nobody user exists to run PostgreSQL")
        pw = pwd.getpwnam(user)
        os.chown(work, pw.pw_uid, pw.pw_gid)
        prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = work / "data"
    subprocess.run(prefix + [initdb, "-D", str(data), "-U", "planner", "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-l", str(work / "log"), "-w", "-o",
                             f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://planner@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], check=False,
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _comparable(lib):
    """Everything the library answers, without what differs by construction (object hashes, whose
    UIDs are salted per library, and the time of adding)."""
    def facts(c):
        return {k: v for k, v in c.facts.items() if k not in ("plan_sha256", "key_image_sha256", "added")}

    out = {"cases": [(c.key, facts(c), c.outcome and {k: v for k, v in c.outcome.items() if k != "recorded"})
                     for c in lib.cases()]}
    out["search"] = [c.key for c in search(lib, procedure="lung-biopsy", region="RLL", size="10-30",
                                           outcome="pneumothorax")]
    out["rates"] = local_rates(lib, "lung-biopsy", min_cases=20)
    from planner.library.learn import learn

    r = learn(lib, "lung-biopsy", min_choices=5, write=False)
    out["learn"] = {k: v for k, v in r.items() if k != "written"}
    return out


def test_postgresql_gives_the_same_results_as_sqlite(plans, postgres, tmp_path, capsys):
    made = _synthesize(plans["thorax"], tmp_path / "s", 44, seed=5)
    folders = list(plans.values()) + [m["folder"] for m in made]
    a = open_library(tmp_path / "sqlite")
    b = open_library(tmp_path / "pg", postgres)
    assert b.engine.dialect.name == "postgresql" and a.engine.dialect.name == "sqlite"
    for d in folders:
        a.add(d)
        b.add(d)
    assert a.count() == b.count() >= 45
    ca, cb = _comparable(a), _comparable(b)
    assert ca["cases"] == cb["cases"]
    assert ca["search"] == cb["search"] and ca["search"]
    assert json.dumps(ca["rates"], sort_keys=True) == json.dumps(cb["rates"], sort_keys=True)
    assert ca["learn"] == cb["learn"]
    query = made[7]["folder"]
    assert [(round(d, 9), c.key) for d, c in similar(a, query, k=5)] == \
        [(round(d, 9), c.key) for d, c in similar(b, query, k=5)]
    # and through the command line (--db URL)
    outs = []
    for root, db in ((a.root, []), (b.root, ["--db", postgres])):
        capsys.readouterr()
        assert main(["library", "search", "--library", str(root), *db, "--procedure", "lung-biopsy",
                     "--outcome", "any", "--json"]) == 0
        outs.append([(r["id"], r["region"], r["size_mm"], r["outcome"]["complications"])
                     for r in json.loads(capsys.readouterr().out)])
    assert outs[0] == outs[1] and len(outs[0]) == len(made)
    # the schema came from the same migrations
    from sqlalchemy import text

    with b.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    a.close()
    b.close()


@pytest.mark.long
@pytest.mark.shared_data
def test_the_real_chest_ct_case_enters_the_library_de_identified(tmp_path):
    """The real chest CT's right-lung mass, planned end to end (automatic segmentation, report),
    added: the right lung (a lobe where fissures were found), in the right half of the lungs'
    frame, and no identifier of its DICOM
    anywhere in the library."""
    from conftest import CHEST_CT

    d = _plan(tmp_path / "chest", "--ct", str(CHEST_CT), "--target", "-82,82,-8", "--procedure", "lung-biopsy")
    root = tmp_path / "lib"
    assert main(["library", "add", str(d), "--library", str(root)]) == 0
    lib = open_library(root)
    (c,) = lib.cases()
    f = c.facts
    print(f"\nreal chest CT case: region {f['region']}, size {f['size_mm']}, depth {f['depth_mm']}, "
          f"frame ({f['frame_x']}, {f['frame_y']}, {f['frame_z']})")
    # a right lobe, or the right lung where the automatic segmentation found no credible fissures
    assert f["region"] in ("RUL", "RML", "RLL", "lung_right") and f["side"] == "right"
    assert f["frame"] == "lungs" and f["frame_x"] < 0.5
    lib.close()
    ids = _source_identifiers([CHEST_CT], [str(d), str(d.resolve())])
    blob = b"\n".join(p.read_bytes().lower() for p in root.rglob("*") if p.is_file())
    found = [i for i in ids if (re.search(rb"(?<![a-z])" + re.escape(i.lower().encode()) + rb"(?![a-z])", blob)
                                if i.isalpha() else i.lower().encode() in blob)]
    assert found == []
