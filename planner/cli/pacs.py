"""``planner pacs echo|find|pull|push`` and ``planner listen``: the DICOM network commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError

EXIT_OK = 0


def _config(args: argparse.Namespace) -> Any:
    from ..pacs.config import load_config

    return load_config(args.pacs_config)


def _progress() -> Any:
    from .main import _Progress

    return _Progress()


def cmd_pacs_echo(args: argparse.Namespace) -> int:
    from ..pacs.dimse import echo

    cfg = _config(args)
    node = cfg.node(args.node)
    echo(cfg, node)
    print(f"{node.describe()}: answers (C-ECHO)")
    return EXIT_OK


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    widths = [max(len(title), *(len(str(r[key])) for r in rows)) for key, title in columns]
    lines = ["  ".join(title.ljust(w) for (_, title), w in zip(columns, widths))]
    for r in rows:
        lines.append("  ".join(str(r[key]).ljust(w) for (key, _), w in zip(columns, widths)))
    return "\n".join(line.rstrip() for line in lines)


def cmd_pacs_find(args: argparse.Namespace) -> int:
    from ..pacs.dimse import find
    from ..pacs.web import find as web_find

    cfg = _config(args)
    node = cfg.node(args.node)
    query = {"patient_id": args.patient_id, "accession": args.accession, "study_date": args.study_date,
             "modality": args.modality}
    rows = web_find(node, **query) if args.web else find(cfg, node, **query)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
        return EXIT_OK
    if not rows:
        print(f"{node.describe()}: no series matches")
        return EXIT_OK
    out = [r.to_json() for r in rows]
    for r in out:
        r["instances"] = "?" if r["instances"] is None else r["instances"]
    print(_table(out, [("patient_id", "patient ID"), ("patient_name", "name"), ("study_date", "date"),
                       ("accession", "accession"), ("modality", "mod"), ("series_number", "#"),
                       ("instances", "images"), ("series_description", "series"), ("series_uid", "series UID")]))
    print(f"{len(rows)} series in {len({r.study_uid for r in rows})} studies on {node.describe()}")
    return EXIT_OK


def cmd_pacs_pull(args: argparse.Namespace) -> int:
    from ..pacs.dimse import pull
    from ..pacs.web import pull as web_pull

    cfg = _config(args)
    node = cfg.node(args.node)
    progress = _progress()
    try:
        if args.via == "web":
            files = web_pull(node, args.series, args.out, progress=progress)
        else:
            files = pull(cfg, node, args.series, args.out, via=args.via, progress=progress)
    finally:
        progress.close()
    print(f"pulled {len(files)} instances of series {args.series} from {node.describe()} into {args.out} "
          "(complete: every instance the node lists)")
    return EXIT_OK


def cmd_pacs_push(args: argparse.Namespace) -> int:
    from ..pacs.push import plan_objects, push_objects

    cfg = _config(args)
    node = cfg.node(args.node)
    files = plan_objects(Path(args.dir))
    progress = _progress()
    try:
        n = push_objects(cfg, node, files, web=args.web, progress=progress)
    finally:
        progress.close()
    print(f"sent {n} DICOM objects of {args.dir} to {node.describe()}" + (" by STOW-RS" if args.web else " by C-STORE"))
    return EXIT_OK


def cmd_listen(args: argparse.Namespace) -> int:
    from ..pacs.listen import listen

    cfg = _config(args)
    return listen(cfg, port=args.port, storage=args.storage, prepare=not args.no_prepare, quiet_s=args.quiet_s,
                  out=sys.stdout)


def add_commands(sub: Any) -> None:
    """The network commands, on the main parser's sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pacs-config", metavar="PATH",
                        help="the PACS nodes (TOML; default ~/.config/planner/pacs.toml)")
    p = sub.add_parser("pacs", help="DICOM networking with a PACS: echo, find, pull, push")
    ps = p.add_subparsers(dest="pacs_command", required=True, metavar="ACTION")

    q = ps.add_parser("echo", parents=[common], help="C-ECHO: does the node answer?")
    q.add_argument("node", help="node name in the PACS configuration")
    q.set_defaults(func=cmd_pacs_echo)

    q = ps.add_parser("find", parents=[common], help="studies and series on the node (C-FIND, or QIDO-RS with --web)")
    q.add_argument("node")
    q.add_argument("--patient-id")
    q.add_argument("--accession")
    q.add_argument("--study-date", metavar="RANGE", help="YYYYMMDD or YYYYMMDD-YYYYMMDD (either end open)")
    q.add_argument("--modality", help="e.g. CT")
    q.add_argument("--web", action="store_true", help="ask by DICOMweb (QIDO-RS) instead of DIMSE")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_pacs_find)

    q = ps.add_parser("pull", parents=[common], help="retrieve one series into a folder, verified complete")
    q.add_argument("node")
    q.add_argument("--series", required=True, help="SeriesInstanceUID")
    q.add_argument("--out", required=True, help="a new (or empty) folder")
    q.add_argument("--via", choices=["get", "move", "web"], default="get",
                   help="C-GET (default), C-MOVE to this product's AE (listen_port), or WADO-RS")
    q.set_defaults(func=cmd_pacs_pull)

    q = ps.add_parser("push", parents=[common],
                      help="send a plan folder's DICOM objects (written with planner plan --dicom) to the node")
    q.add_argument("node")
    q.add_argument("dir", help="plan folder")
    q.add_argument("--web", action="store_true", help="by DICOMweb (STOW-RS) instead of C-STORE")
    q.set_defaults(func=cmd_pacs_push)

    q = sub.add_parser("listen", parents=[common],
                       help="receive series (C-STORE) from the configured nodes and prepare each new CT for planning")
    q.add_argument("--port", type=int, help="port (default: listen_port of the configuration)")
    q.add_argument("--storage", help="where received series go (default: storage of the configuration, or "
                                     "~/planner-inbox)")
    q.add_argument("--quiet-s", type=float, default=10.0,
                   help="a series is complete after this many seconds without a new image (default 10)")
    q.add_argument("--no-prepare", action="store_true", help="only receive; do not segment new CTs")
    q.set_defaults(func=cmd_listen)


def fetch_for_plan(args: argparse.Namespace) -> Path:
    """``planner plan --pacs NODE --series UID``: the series' folder in the cache (pulled when needed)."""
    from ..pacs.cache import fetch_series

    if not args.series:
        raise InputError("--pacs NODE needs --series UID: the series to plan on")
    if args.ct:
        raise InputError("give either --ct PATH or --pacs NODE --series UID, not both")
    cfg = _config(args)
    node = cfg.node(args.pacs)
    progress = _progress()
    try:
        folder, pulled = fetch_series(cfg, node, args.series, progress=progress)
    finally:
        progress.close()
    print(("pulled" if pulled else "cached:") + f" series {args.series} from {node.describe()} in {folder}",
          file=sys.stderr)
    return folder
