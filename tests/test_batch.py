"""``planner batch``: a cohort on a real Dask cluster (worker processes), resumable.

What a researcher relies on: a bad manifest is refused whole with every bad line named; each row
gives the same plan as ``planner plan`` run alone; a failing row records its reason and the others
go on; a second run does nothing; a changed option re-runs only its rows; a worker that dies does
not lose its cases. The default tests use the demo thorax and knee (seconds per case); the
60-target cohort of the real scans is marked ``long`` (``make test-long``) and is also
``benchmarks/batch.py``.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from planner.cli.main import main
from planner.session import PlanRequest, TargetSpec, plan_and_write

THORAX = ROOT / "assets" / "demo" / "thorax"
KNEE = ROOT / "assets" / "demo" / "knee"
COLUMNS = ["case_id", "ct", "procedure", "target", "target_label", "target_joint", "structures", "side"]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({c: r.get(c, "") for c in COLUMNS} for r in rows)
    return path


def _demo_rows(n_points: int = 6, seed: int = 3) -> list[dict[str, str]]:
    import planner

    ct = planner.load_image(THORAX / "ct")
    sset = planner.load_structures(THORAX / "structures.nii.gz", ct)
    lungs = sset.mask("lung_upper_lobe_right") | sset.mask("lung_lower_lobe_left")
    kji = np.argwhere(lungs)
    rng = np.random.default_rng(seed)
    rows = [{"case_id": "thorax", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy",
             "target_label": "lung_nodule", "structures": str(THORAX / "structures.nii.gz")}]
    for p in kji[rng.choice(len(kji), n_points, replace=False)]:
        lps = ct.ijk_to_lps(p[::-1].astype(float))
        rows.append({"case_id": "thorax", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy",
                     "target": ",".join(f"{x:.1f}" for x in lps), "structures": str(THORAX / "structures.nii.gz")})
    rows.append({"case_id": "knee", "ct": str(KNEE / "ct"), "procedure": "knee-injection",
                 "target_label": "knee_effusion_right", "structures": str(KNEE / "structures.nii.gz")})
    rows.append({"case_id": "knee", "ct": str(KNEE / "ct"), "procedure": "knee-synovial-biopsy",
                 "target_joint": "knee_recess_right", "structures": str(KNEE / "structures.nii.gz")})
    rows.append({"case_id": "thorax-far", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy",
                 "target": "0,0,5000", "structures": str(THORAX / "structures.nii.gz")})  # outside the scan
    return rows


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- the manifest ---------------------------------------------------------------------------------

def test_a_bad_manifest_is_refused_whole_with_every_bad_line(tmp_path, capsys):
    rows = [
        {"case_id": "ok", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy", "target_label": "lung_nodule"},
        {"case_id": "bad id!", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy", "target": "1,2,3"},
        {"case_id": "a", "ct": "missing/ct", "procedure": "lung-biopsy", "target": "1,2,3"},
        {"case_id": "b", "ct": str(THORAX / "ct"), "procedure": "no-such-procedure", "target": "1,2,3"},
        {"case_id": "c", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy"},
        {"case_id": "d", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy", "target": "1,2"},
        {"case_id": "e", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy", "target": "1,2,3", "side": "up"},
        {"case_id": "ok", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy", "target_label": "lung_nodule"},
        {"case_id": "f", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy", "target": "1,2,3",
         "target_label": "x"},
    ]
    m = _write(tmp_path / "m.csv", rows)
    assert main(["batch", str(m), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    for line in ("line 3: case_id", "line 4: ct missing/ct", "line 5:", "line 6: give exactly one",
                 "line 7: target", "line 8: side", "line 9: the same target as line 2", "line 10: several targets"):
        assert line in err[0], line
    assert "nothing was run" in err[0] and not (tmp_path / "out").exists()
    (tmp_path / "h.csv").write_text("case_id,ct,colour\nx,y,z\n")
    assert main(["batch", str(tmp_path / "h.csv"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "column(s) procedure missing" in err and "unknown column(s) colour" in err


def test_an_mr_row_without_structures_is_accepted(tmp_path):
    """A knee MR is segmented without imports now: an MR row needs no structures column."""
    from planner.batch.manifest import read_manifest

    m = _write(tmp_path / "m.csv", [{"case_id": "knee", "ct": str(THORAX / "ct"), "procedure": "knee-injection",
                                     "target_joint": "knee_recess_right", "modality": "MR"}])
    rows = read_manifest(m)
    assert len(rows) == 1


# --- a cohort on a local cluster ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    rows = _demo_rows()
    m = _write(tmp / "manifest.csv", rows)
    assert main(["batch", str(m), "--out", str(tmp / "out"), "--workers", "2"]) == 0
    return tmp, rows, m


def test_every_row_equals_planner_plan_run_alone(cohort):
    tmp, rows, _ = cohort
    table = _table(tmp / "out")
    assert [int(r["line"]) for r in table] == list(range(2, len(rows) + 2))
    for row, res in zip(rows, table):
        if row["case_id"] == "thorax-far":  # a failing row records its reason; the others go on
            assert res["feasible"] == "" and "outside the scan" in res["error"]
            continue
        # planner plan's own code path (its report set left out: the figures are plan.json's)
        alone = tmp / "alone" / res["line"]
        kind, value = next((k, row[c]) for c, k in (("target", "point"), ("target_label", "label"),
                                                    ("target_joint", "joint")) if row.get(c))
        request = PlanRequest(row["ct"], row["procedure"], [TargetSpec(kind, value)], structures=row["structures"],
                              n_best=1)
        plan_and_write(request, alone, report=False)
        mine = json.loads((tmp / "out" / res["folder"] / "plan.json").read_text())
        theirs = json.loads((alone / "plan.json").read_text())
        assert mine["trajectories"] == theirs["trajectories"] and mine["target"] == theirs["target"]
        assert mine["rejected"] == theirs["rejected"]
        assert res["feasible"] == str(mine["status"] == "ok")
        if mine["trajectories"]:
            assert float(res["depth_mm"]) == mine["trajectories"][0]["length_mm"]
    assert (tmp / "out" / "results.parquet").is_file() and "Failures" in (tmp / "out" / "summary.html").read_text()


def test_parquet_holds_the_same_table(cohort):
    import pyarrow.parquet as pq

    tmp, rows, _ = cohort
    table = pq.read_table(tmp / "out" / "results.parquet").to_pylist()
    csv_rows = _table(tmp / "out")
    assert len(table) == len(csv_rows) == len(rows)
    for a, b in zip(table, csv_rows):
        assert a["case_id"] == b["case_id"] and str(a["feasible"] if a["feasible"] is not None else "") == b["feasible"]
        assert (a["depth_mm"] is None and b["depth_mm"] == "") or a["depth_mm"] == float(b["depth_mm"])


def test_a_second_run_skips_everything_and_a_change_reruns_only_its_rows(cohort, capsys):
    tmp, rows, m = cohort
    before = _table(tmp / "out")
    assert main(["batch", str(m), "--out", str(tmp / "out")]) == 0
    out = capsys.readouterr()
    assert f"{len(rows)} unchanged since the last run (skipped); 0 to plan" in out.err
    assert _table(tmp / "out") == [dict(r, skipped="True") for r in before]
    changed = [dict(r) for r in rows]
    changed[-2]["procedure"] = "knee-injection"  # the knee recess: another procedure
    _write(m, changed)
    assert main(["batch", str(m), "--out", str(tmp / "out")]) == 0
    out = capsys.readouterr()
    assert f"{len(rows) - 1} unchanged since the last run (skipped); 1 to plan" in out.err
    after = _table(tmp / "out")
    assert [r["skipped"] for r in after].count("False") == 1 and after[-2]["procedure"] == "knee-injection"


# --- a scheduler and workers as separate processes; one killed mid-run ------------------------------

class _Proc:
    def __init__(self, args: list[str], ready: str):
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.address = ""

        def read():
            for line in self.p.stdout:
                self.lines.append(line)
                if ready in line and not self.ready.is_set():
                    self.address = line.split(ready)[-1].strip()
                    self.ready.set()
            self.ready.set()

        threading.Thread(target=read, daemon=True).start()

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()


def test_separate_scheduler_and_workers_and_a_worker_killed_mid_run(tmp_path, capsys):
    dask = str(Path(sys.executable).parent / "dask")
    scheduler = _Proc([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                       "--no-show"], "Scheduler at:")
    workers: list[_Proc] = []
    try:
        assert scheduler.ready.wait(120) and scheduler.address.startswith("tcp://"), "".join(scheduler.lines)
        for _ in range(2):
            workers.append(_Proc([dask, "worker", scheduler.address, "--nthreads", "1", "--memory-limit", "4GiB",
                                  "--no-dashboard", "--nworkers", "1"], "Registered to:"))
        for w in workers:
            assert w.ready.wait(120), "".join(w.lines)
        from distributed import Client

        with Client(scheduler.address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=120)
        rows = _demo_rows(n_points=5, seed=9)
        m = _write(tmp_path / "m.csv", rows)
        killed = []

        def kill_one(record):
            if not killed:  # the first row done: a worker dies (SIGKILL, no goodbye)
                killed.append(record)
                workers[0].p.send_signal(signal.SIGKILL)

        from planner.batch.run import run_batch

        counts = run_batch(m, tmp_path / "out", scheduler=scheduler.address, on_record=kill_one)
        assert killed and workers[0].p.wait(timeout=60) == -signal.SIGKILL
        assert counts["planned"] == len(rows) and counts["skipped"] == 0
        table = _table(tmp_path / "out")
        assert len(table) == len(rows)
        assert all(r["error"] == "" for r in table if r["case_id"] != "thorax-far")
        assert all((tmp_path / "out" / r["folder"] / "plan.json").is_file() for r in table if r["feasible"])
    finally:
        for w in workers:
            w.stop()
        scheduler.stop()


def test_an_unreachable_scheduler_is_one_line(tmp_path, capsys):
    from planner.testing.orthanc import free_port

    m = _write(tmp_path / "m.csv", _demo_rows(n_points=1)[:1])
    assert main(["batch", str(m), "--out", str(tmp_path / "out"), "--scheduler",
                 f"tcp://127.0.0.1:{free_port()}"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("planner:")]
    assert len(err) == 1 and "cannot reach it" in err[0]


# --- the cohort of real scans (long) ----------------------------------------------------------------

@pytest.mark.long
@pytest.mark.shared_data
def test_sixty_targets_of_the_real_scans(tmp_path):
    from planner.batch.run import run_batch
    from planner.testing.cohort import build_cohort

    cohort = build_cohort(tmp_path)
    assert len(cohort.rows) >= 60
    counts = run_batch(cohort.manifest, tmp_path / "out", workers=2)
    assert counts["rows"] == len(cohort.rows)
    table = {int(r["line"]): r for r in _table(tmp_path / "out")}
    for line, want in cohort.expect.items():
        got = table[line]
        if want == "feasible":
            assert got["feasible"] == "True", got
        elif want == "infeasible":
            assert got["feasible"] == "False", got
        elif want == "error":
            assert got["feasible"] == "" and got["error"], got
        else:
            assert got["feasible"] in ("True", "False") and not got["error"], got


def test_local_cluster_workers_keep_the_adaptive_malloc_threshold():
    """Dask's default MALLOC_TRIM_THRESHOLD_ made every case of a cohort 1.5 times slower (see
    benchmarks/batch.py); the planner's local cluster must start its workers without it, and with
    one thread for the numerical libraries."""
    import os

    from planner.batch.run import _cluster

    client, cluster, what = _cluster(None, 1, "2GiB")
    try:
        env = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "NUMBA_NUM_THREADS")})
    finally:
        client.close()
        cluster.close()
    assert "1 worker" in what and len(env) == 1
    (got,) = env.values()
    assert got == {"MALLOC_TRIM_THRESHOLD_": None, "NUMBA_NUM_THREADS": "1"}


def test_a_ct_not_yet_segmented_is_segmented_once_while_the_other_worker_waits(tmp_path, monkeypatch):
    """Rows on a CT planned with the automatic segmentation: the first case segments it and keeps
    it by voxel hash; the other worker, started on the same CT at the same time, waits for it
    instead of segmenting it a second time (a chest CT takes minutes)."""
    from planner.batch.run import run_batch

    cache = tmp_path / "cache"
    monkeypatch.setenv("PLANNER_CACHE", str(cache))  # an empty segmentation cache, for the workers too
    rows = [{"case_id": f"thorax-{n}", "ct": str(THORAX / "ct"), "procedure": "lung-biopsy", "target": t}
            for n, t in enumerate(("60,10,5", "-60,10,5", "55,20,20", "-55,20,20"))]
    counts = run_batch(_write(tmp_path / "m.csv", rows), tmp_path / "out", workers=2)
    assert counts["planned"] == 4 and counts["failed_total"] == 0
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "records").glob("*.json"))]
    how = sorted(r["segmentation"] for r in records)
    assert how.count("segmented") == 1, how
    assert {"already segmented", "segmented by another worker"} >= set(how) - {"segmented"}
    assert len([d for d in (cache / "segmentations").iterdir() if not d.name.startswith(".")]) == 1
