"""``planner batch MANIFEST.csv --out DIR``: a cohort on a Dask cluster (see planner.batch.run)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_batch(args: argparse.Namespace) -> int:
    from ..batch.run import run_batch

    counts = run_batch(args.manifest, args.out, scheduler=args.scheduler, workers=args.workers,
                       memory=args.memory_per_worker, report=args.report == "full", pacs_config=args.pacs_config,
                       stream=sys.stderr, retry_failed=args.retry_failed, n_best=args.n)
    print(f"{counts['rows']} rows: {counts['planned']} planned now ({counts['failed']} failed), {counts['skipped']} "
          f"skipped (unchanged); {counts['failed_total']} failed in all (see {args.out}/summary.html); results in "
          f"{args.out}/results.csv and results.parquet")
    return 0


def add_commands(sub: Any) -> None:
    from ..batch.run import DEFAULT_MEMORY

    q = sub.add_parser("batch", help="plan a cohort (one CSV row per target) on a Dask cluster, resumable")
    q.add_argument("manifest", help="CSV: case_id, ct, procedure; target | target_label | seed | target_joint; "
                                    "optional structures, approach, side, modality (paths relative to the CSV)")
    q.add_argument("--out", required=True, help="output folder (plans in cases/, results.csv, summary.html)")
    q.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (default: a local cluster)")
    q.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster (default 2)")
    q.add_argument("--memory-per-worker", default=DEFAULT_MEMORY,
                   help=f"memory limit of each local worker (default {DEFAULT_MEMORY}; a chest CT plan needs about "
                        "2.5 GB)")
    q.add_argument("--report", choices=["none", "full"], default="none",
                   help="none (default): plan.json, structures and risk map per case; full: the whole report set "
                        "as planner plan writes it")
    q.add_argument("--pacs-config", metavar="PATH", help="PACS nodes, for ct given as pacs:NODE:SERIES")
    q.add_argument("--n", type=int, default=1,
                   help="trajectories kept per target (default 1: the table holds the best one's figures; "
                        "planner plan keeps 5)")
    q.add_argument("--retry-failed", action="store_true",
                   help="run again the rows that failed last time although their inputs did not change")
    q.set_defaults(func=cmd_batch)
