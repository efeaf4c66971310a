"""Writes are atomic: a writer killed at a random moment leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The child rewrites the same files forever, alternating two versions, through the writers the
# plan folder uses: plan.json (write_json_atomic) and every report file (write_bytes_atomic).
CHILD = r"""
import sys
from planner.atomic import write_json_atomic
from planner.atomic import write_bytes_atomic
folder = sys.argv[1]
docs = [{"schema": "planner.plan/1", "version": v, "pad": [v] * 400_000} for v in (1, 2)]
blobs = [bytes([v]) * 3_000_000 for v in (1, 2)]
print("ready", flush=True)
n = 0
while True:
    write_json_atomic(docs[n % 2], folder + "/plan.json")
    write_bytes_atomic(blobs[n % 2], folder + "/report.pdf")
    n += 1
"""


def test_killed_writer_leaves_old_or_new_file(tmp_path: Path) -> None:
    from planner.atomic import write_json_atomic
    from planner.atomic import write_bytes_atomic

    write_json_atomic({"schema": "planner.plan/1", "version": 0, "pad": []}, tmp_path / "plan.json")
    write_bytes_atomic(b"\0" * 10, tmp_path / "report.pdf")
    rng = random.Random(6)
    torn_temp_seen = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                                env=dict(os.environ))
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        doc = json.loads((tmp_path / "plan.json").read_text())  # never torn: always parses
        assert doc["version"] in (0, 1, 2)
        assert doc["pad"] == [doc["version"]] * len(doc["pad"])
        blob = (tmp_path / "report.pdf").read_bytes()
        assert blob in (b"\0" * 10, b"\1" * 3_000_000, b"\2" * 3_000_000)
        leftovers = list(tmp_path.glob(".*.tmp*"))
        torn_temp_seen += bool(leftovers)
        for f in leftovers:  # what a killed writer leaves is a hidden temporary, never the file itself
            f.unlink()
    # The kills did land mid-write (a half-written temporary was left) at least once.
    assert torn_temp_seen >= 1


def test_atomic_path_removes_its_temporary_on_error(tmp_path: Path) -> None:
    from planner.atomic import atomic_path

    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
