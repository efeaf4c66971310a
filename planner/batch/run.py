"""``planner batch MANIFEST.csv --out DIR``: a cohort planned on a Dask cluster.

- The manifest is checked whole first (:mod:`.manifest`).
- Each row's inputs are summed up in an *input key*: the content hashes of its CT and structures,
  its options, the preset file's hash, and the package's version and segmentation code. A row
  whose record (``DIR/records/``) has the same key and whose plan folder is there is skipped;
  anything changed re-runs only the rows it touches.
- On the cluster (a ``distributed.LocalCluster`` of ``--workers`` processes, one thread each,
  ``--memory-per-worker`` each; or any scheduler by ``--scheduler ADDRESS``): one task per row,
  which runs the same planning code as ``planner plan`` into ``DIR/cases/CASE/KEY``. A CT's
  automatic segmentation is made once, by the first case on it (the others wait on a Dask lock),
  and kept by voxel hash for every case on it;
  the rows on the largest scans go first (the last tasks, when a worker may wait for the
  other, are short), and each worker keeps the last scan it read for the next row on it.
  Workers read the scans from their paths: nothing large goes through the scheduler. A failing
  row records its error and the others go on; the tasks of a worker that dies are run again
  elsewhere (Dask's own resilience).
- Results: ``DIR/results.csv`` and ``DIR/results.parquet`` (a row per manifest row, in manifest
  order), ``DIR/summary.html`` with its plots, and the failures listed with their reasons.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError
from .manifest import Row, read_manifest
from .tasks import content_hash, plan_case, record_path

DEFAULT_MEMORY = "6GiB"
#: The columns of the results table, in order.
COLUMNS = ("case_id", "line", "procedure", "target", "feasible", "error", "depth_mm", "needle", "limiting",
           "limiting_structure", "risk_factors", "n_risk_factors", "lung_mm", "fissures", "pleura_crossings",
           "emphysema_mm", "min_clearance_excess_mm", "patient_position", "region", "target_label",
           "target_diameter_mm", "n_candidates", "ruled_out", "seconds", "skipped", "folder")


#: One thread per worker process, numerical libraries included: n workers on n cores, not 2n threads.
ONE_THREAD = {k: "1" for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def task_row(r: Row) -> dict[str, Any]:
    """A manifest row as :func:`.tasks.plan_case` takes it (plain values, with its key and folder)."""
    row = {**asdict(r), "key": r.key, "folder": r.folder}
    row.pop("raw", None)
    return row


def _algorithm() -> str:
    from .. import __version__
    from ..anatomy.cache import algorithm_id

    return f"{__version__}:{algorithm_id()}"


def input_key(row: Row, hashes: dict[str, str], report: bool, n_best: int = 1) -> str:
    """The digest of everything a row's plan depends on."""
    from ..planning.presets import load_preset

    def h(p: str | None) -> str | None:
        if p is None:
            return None
        if p.startswith("pacs:"):
            return p  # a series UID names its content (the cache checks the instances)
        if p not in hashes:
            hashes[p] = content_hash(p)
        return hashes[p]

    preset = load_preset(row.procedure, row.approach)
    doc = {"ct": h(row.ct), "structures": h(row.structures), "options": row.options(), "preset": preset.sha256,
           "algorithm": _algorithm(), "report": report, "n_best": n_best}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _done(out: Path, row: Row, key: str, retry_failed: bool = False) -> dict[str, Any] | None:
    p = record_path(out, row.case_id, row.key)
    try:
        rec = json.loads(p.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if rec.get("input_key") != key or "internal error" in str(rec.get("error", "")):
        return None
    if retry_failed and rec.get("error"):
        return None
    if rec.get("feasible") is not None and not (out / row.folder / "plan.json").is_file():
        return None
    return rec


class _Progress:
    def __init__(self, total: int, out: TextIO):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="cases", unit="case", file=out, disable=None, leave=True)
        self.failed = 0

    def update(self, done: int, running: int, failed: int) -> None:
        self.bar.n = done
        self.bar.set_postfix(failed=failed, running=running, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _cluster(scheduler: str | None, workers: int, memory: str) -> tuple[Any, Any, str]:
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise InputError(f"--scheduler {scheduler}: cannot reach it ({exc})") from None
        return client, None, f"scheduler {scheduler}"
    # Dask gives its workers MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive mmap
    # threshold: every large array of a case is then mapped, zeroed page by page and unmapped
    # again. Measured on a 60-row cohort: a case took 1.5 times as long (system time 3.5 times,
    # page faults 8 times). The nannies read it when they are made (and reuse it on a restart).
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory,
                               dashboard_address="127.0.0.1:0", host="127.0.0.1", env=ONE_THREAD)
    return Client(cluster), cluster, f"local cluster of {workers} worker processes, {memory} each"


def run_batch(manifest: str | os.PathLike[str], out: str | os.PathLike[str], *, scheduler: str | None = None,
              workers: int = 2, memory: str = DEFAULT_MEMORY, report: bool = False,
              pacs_config: str | None = None, stream: TextIO | None = None,
              retry_failed: bool = False, n_best: int = 1, on_record: Any = None) -> dict[str, Any]:
    """Plan every row of ``manifest`` into ``out``; returns the counts (planned, skipped, failed).
    A row that failed with the same inputs is skipped too (its failure stands) unless
    ``retry_failed`` (e.g. after a PACS node was unreachable). ``n_best``: trajectories kept per
    target (the table holds the best one's figures). ``on_record(record)`` is called as each row
    is done."""
    stream = stream or sys.stderr
    rows = read_manifest(manifest)  # every bad row said before any work
    if workers < 1:
        raise InputError(f"--workers {workers}: at least 1")
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise InputError(f"{d}: --out is a file")
    (d / "records").mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    if not isinstance(n_best, int) or n_best < 1:
        raise InputError(f"--n {n_best!r}: at least one trajectory must be kept")
    keys = {r.line: input_key(r, hashes, report, n_best) for r in rows}
    todo = [r for r in rows if _done(d, r, keys[r.line], retry_failed) is None]
    counts = {"rows": len(rows), "skipped": len(rows) - len(todo), "planned": 0, "failed": 0}
    print(f"{len(rows)} rows; {counts['skipped']} unchanged since the last run (skipped); {len(todo)} to plan",
          file=stream, flush=True)
    if todo:
        _run(todo, d, keys, scheduler, workers, memory, report, pacs_config, stream, counts, n_best, on_record)
    records = write_table(d, rows, {r.line for r in todo})
    counts["failed_total"] = sum(1 for rec in records if rec.get("error"))
    return counts


def write_table(d: Path, rows: list[Row], planned: set[int]) -> list[dict[str, Any]]:
    """The results table and summary of ``rows`` from their records in ``d``; ``planned``: the
    manifest lines planned in this run (the others were skipped). Returns the records."""
    from .summary import write_results

    records = []
    for r in rows:
        rec = json.loads(record_path(d, r.case_id, r.key).read_text("utf-8"))
        rec["skipped"] = r.line not in planned
        rec["target"] = f"{r.target_kind}:{r.target_value}"
        rec["line"] = r.line
        records.append(rec)
    write_results(d, records, COLUMNS)
    return records


def _scan_size(ct: str) -> int:
    """About how large a scan is, in bytes of voxels: a NIfTI's or NRRD's header shape (its file
    is compressed), a DICOM folder's bytes; 0 for a PACS series or a file that cannot be read."""
    from ..images import source_kind

    p = Path(ct)
    try:
        kind = source_kind(p)
        if kind == "nifti":
            import nibabel as nib

            return 2 * math.prod(int(n) for n in nib.load(str(p)).header.get_data_shape())
        if kind == "nrrd":
            import nrrd

            return 2 * math.prod(int(n) for n in nrrd.read_header(str(p))["sizes"])
        if p.is_file():
            return p.stat().st_size
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    except Exception:  # noqa: BLE001 - only an order: the case itself says what is wrong with its scan
        return 0


def _run(todo: list[Row], d: Path, keys: dict[int, str], scheduler: str | None, workers: int, memory: str,
         report: bool, pacs_config: str | None, stream: TextIO, counts: dict[str, int], n_best: int = 1,
         on_record: Any = None) -> None:
    from distributed import as_completed

    client, cluster, what = _cluster(scheduler, workers, memory)
    try:
        print(f"on a {what}; dashboard {client.dashboard_link}", file=stream, flush=True)
        size = {ct: _scan_size(ct) for ct in {r.ct for r in todo}}
        todo = sorted(todo, key=lambda r: (-size[r.ct], r.ct))  # the largest scans first (a short tail),
        # the rows of one scan together (a worker keeps the last scan it read)
        futures = []
        for n, r in enumerate(todo):  # in this order: one task group, and falling priorities (with a
            # group per case id, Dask ran the small groups first, between rows of one scan)
            futures.append(client.submit(plan_case, task_row(r), str(d), keys[r.line], report, pacs_config, n_best,
                                         pure=False, key=("planner-case", f"{r.case_id}-{r.key}"),
                                         priority=len(todo) - n))
        progress = _Progress(len(futures), stream)
        done = 0
        t0 = time.perf_counter()
        try:
            for future in as_completed(futures):
                rec = future.result()
                if on_record is not None:
                    on_record(rec)
                done += 1
                counts["planned"] += 1
                if rec.get("error"):
                    counts["failed"] += 1
                progress.update(done, len(futures) - done, counts["failed"])
        finally:
            progress.close()
        rate = done / max(time.perf_counter() - t0, 1e-9) * 60
        print(f"planned {done} rows ({counts['failed']} failed) at {rate:.1f} cases per minute", file=stream,
              flush=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
