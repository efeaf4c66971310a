"""``planner library add|search|similar|export|rates|learn`` and ``planner outcome``: the
de-identified case library and the outcomes of performed procedures (see planner/library/)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError

EXIT_OK = 0


def _lib(args: argparse.Namespace) -> Any:
    from ..library import open_library

    return open_library(args.library, args.db)


def _yes_no(text: str) -> bool:
    t = text.strip().lower()
    if t in ("yes", "y", "true", "1"):
        return True
    if t in ("no", "n", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: yes or no")


def _complications(values: list[str]) -> list[str]:
    from ..library.store import COMPLICATIONS

    out: list[str] = []
    for v in values:
        for part in v.split(","):
            p = part.strip().lower().replace("hemorrhage", "haemorrhage")
            if p not in COMPLICATIONS:
                raise InputError(f"--complication {part.strip()!r}: one of {', '.join(COMPLICATIONS)}")
            if p not in out:
                out.append(p)
    if "none" in out and len(out) > 1:
        raise InputError("--complication none cannot be given with a complication")
    return out


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def cmd_add(args: argparse.Namespace) -> int:
    from ..library.query import case_line

    with _lib(args) as lib:
        for d in args.dirs:
            for c in lib.add(d):
                print(f"added {d}: {case_line(c)}")
        print(f"library {lib.root}: {lib.count()} cases")
    return EXIT_OK


def cmd_outcome(args: argparse.Namespace) -> int:
    from ..atomic import write_json_atomic
    from ..library.choice import check_rank, plan_ranks, record_choice
    from ..library.query import case_line
    from ..library.store import OUTCOME_FILE, _now

    d = Path(args.dir)
    _, _, ranks = plan_ranks(d)
    comps = _complications(args.complication)
    if args.chosen is not None:  # checked before anything is written
        check_rank(args.chosen, ranks, "the plan", "--chosen")
    record = {"schema": "planner.outcome/1", "recorded": _now(), "complications": comps,
              "chest_tube": args.chest_tube, "diagnostic": args.diagnostic, "note": args.note or ""}
    write_json_atomic(record, d / OUTCOME_FILE)
    print(f"wrote {d / OUTCOME_FILE}")
    if args.chosen is not None:
        print(f"wrote {record_choice(d, args.chosen, 'outcome')}: trajectory #{args.chosen} chosen")
    with _lib(args) as lib:
        cases = lib.add(d)  # added (de-identified) if new, with the outcome and choice just written
        for c in cases:
            print(f"library {lib.root}: {case_line(c)}")
    return EXIT_OK


def check_review_choice(plan_dir: str, rank: int | None) -> None:
    """``planner review --chosen N``: the rank must be one of the plan's (said before the long work)."""
    if rank is None:
        return
    from ..library.choice import check_rank, plan_ranks

    _, _, ranks = plan_ranks(Path(plan_dir))
    check_rank(rank, ranks, str(Path(plan_dir) / "plan.json"), "--chosen")


def record_review_choice(plan_dir: str, rank: int | None, result: Any) -> list[str]:
    """After ``planner review``: record trajectory ``rank`` as the one chosen, only when every
    check of it (each target's #rank) passed on the scan; the lines to print."""
    if rank is None:
        return []
    from ..library.choice import record_choice

    mine = [c for c in result.checks if c.rank == rank]
    if not mine or not all(c.ok for c in mine):
        return [f"choice NOT recorded: trajectory #{rank} did not pass its checks on this scan"]
    path = record_choice(plan_dir, rank, "review")
    return [f"choice recorded: trajectory #{rank} ({path}); planner library add keeps it"]


def department_preset(preset_file: str | None, library: str | None, procedure: str) -> str | None:
    """``planner plan --preset-file PATH`` or ``--library ROOT``: the preset file to plan with
    (ROOT's department variant of the procedure, ``ROOT/presets/PROCEDURE.json``), or None for
    the shipped preset."""
    if preset_file and library:
        raise InputError("--preset-file and --library both name a preset: give one")
    if library is None:
        return preset_file
    from ..library.learn import variant_path

    p = variant_path(Path(library), procedure)
    if not p.is_file():
        raise InputError(f"--library {library}: no department variant of {procedure!r} in it ({p} is missing; "
                         f"planner library learn {procedure} writes one when it agrees better with the choices)")
    return str(p)


def _print_cases(lib: Any, cases: list[Any], as_json: bool, dist: list[float] | None = None) -> None:
    from ..library.query import case_line

    if as_json:
        rows = [c.to_json(lib.root) for c in cases]
        if dist is not None:
            for r, dd in zip(rows, dist):
                r["distance"] = round(dd, 4)
        print(json.dumps(_finite(rows), indent=1))
        return
    for i, c in enumerate(cases):
        extra = f" (distance {dist[i]:.2f})" if dist is not None else ""
        print(case_line(c) + extra)
        js = c.to_json(lib.root)
        print(f"    key image {js['key_image'] or '(none: planned without the report set)'}\n    plan      {js['plan']}")


def cmd_search(args: argparse.Namespace) -> int:
    from ..library.query import search

    with _lib(args) as lib:
        found = search(lib, args.procedure, args.region, args.size, args.depth, args.outcome, args.risk)
        _print_cases(lib, found, args.json)
        if not args.json:
            print(f"{len(found)} of {lib.count()} cases match")
    return EXIT_OK


def cmd_similar(args: argparse.Namespace) -> int:
    from ..library.query import similar

    with _lib(args) as lib:
        found = similar(lib, args.dir, args.k, args.target - 1)
        _print_cases(lib, [c for _, c in found], args.json, [d for d, _ in found])
        if not args.json and not found:
            print("no case of this procedure in the library yet")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from ..library.query import export, search

    with _lib(args) as lib:
        if args.case:
            have = {c.id: c for c in lib.cases(args.case)}
            missing = [i for i in args.case if i not in have]
            if missing:
                raise InputError(f"--case {missing[0]}: no such case in the library {lib.root}")
            cases = [have[i] for i in args.case]
        else:
            cases = search(lib, args.procedure, args.region, args.size, args.depth, args.outcome, args.risk)
        out = export(lib, cases, args.out)
        print(f"wrote {len(cases)} de-identified cases and {out / 'index.html'}")
    return EXIT_OK


def cmd_rates(args: argparse.Namespace) -> int:
    from ..library.rates import lines, local_rates

    with _lib(args) as lib:
        r = local_rates(lib, args.procedure, args.min_cases, args.complication)
    if args.json:
        print(json.dumps(_finite(r), indent=1))
    else:
        print("\n".join(lines(r)))
    return EXIT_OK


def cmd_learn(args: argparse.Namespace) -> int:
    from ..library.learn import learn

    with _lib(args) as lib:
        r = learn(lib, args.procedure, args.folds, args.min_choices, write=not args.dry_run)
    if args.json:
        print(json.dumps(_finite(r), indent=1))
        return EXIT_OK
    print(f"{r['procedure']}: {r['cases']} cases with a recorded choice of trajectory")
    print(f"agreement with the choices: preset {100 * r['agreement_before']:.1f}%, learned "
          f"{100 * r['agreement_after_cv']:.1f}% ({r['folds']}-fold cross-validated; "
          f"{100 * r['agreement_after_fit']:.1f}% on all cases)")
    print(f"{'criterion':<32}{'preset':>10}{'learned':>12}")
    for k, v in r["weights_before"].items():
        print(f"{k:<32}{v:>10.4g}{r['weights_after'][k]:>12.4g}")
    if r["written"]:
        print(f"wrote the department variant {r['written']} (weights only; every hard constraint unchanged)")
    elif args.dry_run:
        print("nothing written (--dry-run)")
    else:
        print("nothing written: the learned weights do not agree with the choices better than the preset's")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--library", metavar="ROOT",
                        help="the library's folder (default $PLANNER_LIBRARY or ~/.local/share/planner/library)")
    common.add_argument("--db", metavar="URL",
                        help="SQLAlchemy database URL, e.g. postgresql+psycopg://user@host/db (default "
                             "$PLANNER_LIBRARY_DB or SQLite in the library's folder); files stay under ROOT")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--procedure", help="procedure preset id, e.g. lung-biopsy")
    filters.add_argument("--region", help="lobe (RUL, RML, RLL, LUL, LLL), organ or joint, e.g. liver, knee_right")
    filters.add_argument("--size", metavar="MM", help="target size range in mm, e.g. 10-20")
    filters.add_argument("--depth", metavar="MM", help="depth (skin to target) range in mm")
    filters.add_argument("--outcome", help="pneumothorax, haemorrhage, none, chest-tube, diagnostic, "
                                           "nondiagnostic, any (recorded) or unknown (not recorded)")
    filters.add_argument("--risk", help="a risk factor present: lung_3cm, fissure, emphysema, multiple_punctures, "
                                        "small_lesion, large_needle")

    p = sub.add_parser("library", help="the de-identified case library: add, search, similar, export, rates, learn")
    ls = p.add_subparsers(dest="library_command", required=True, metavar="ACTION")
    q = ls.add_parser("add", parents=[common], help="add plan folders (with their checks and outcome), de-identified")
    q.add_argument("dirs", nargs="+", metavar="DIR", help="plan folder written by planner plan")
    q.set_defaults(func=cmd_add)
    q = ls.add_parser("search", parents=[common, filters], help="cases matching every filter given")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_search)
    q = ls.add_parser("similar", parents=[common], help="the library cases most similar to a plan folder's target")
    q.add_argument("dir", help="plan folder")
    q.add_argument("-k", type=int, default=5, help="how many (default 5)")
    q.add_argument("--target", type=int, default=1, help="which target of a multi-target plan (default 1)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_similar)
    q = ls.add_parser("export", parents=[common, filters],
                      help="a teaching folder of the selected cases (de-identified) with index.html")
    q.add_argument("--out", required=True, help="folder to write (replaced whole)")
    q.add_argument("--case", type=int, action="append", help="a case id (repeat); default: the filters' matches")
    q.set_defaults(func=cmd_export)
    q = ls.add_parser("rates", parents=[common], help="local complication rates by risk factor beside the published "
                                                      "odds ratios")
    q.add_argument("--procedure", default="lung-biopsy", help="procedure preset id (default lung-biopsy)")
    q.add_argument("--complication", help="pneumothorax (default for lung-biopsy), haemorrhage, chest_tube, "
                                          "nondiagnostic")
    q.add_argument("--min-cases", type=int, default=30, help="refuse below this many cases with an outcome (30)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_rates)
    q = ls.add_parser("learn", parents=[common], help="fit the preset's soft-criterion weights to the department's "
                                                      "choices of trajectory")
    q.add_argument("procedure", help="procedure preset id")
    q.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    q.add_argument("--min-choices", type=int, default=10, help="refuse below this many recorded choices (10)")
    q.add_argument("--dry-run", action="store_true", help="report only; write no variant")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_learn)

    q = sub.add_parser("outcome", parents=[common], help="record the outcome of a performed procedure in its plan "
                                                         "folder and the library")
    q.add_argument("dir", help="plan folder")
    q.add_argument("--complication", action="append", required=True,
                   help="pneumothorax, haemorrhage or none (repeat, or comma-separate, for several)")
    q.add_argument("--chest-tube", type=_yes_no, required=True, metavar="yes|no")
    q.add_argument("--diagnostic", type=_yes_no, required=True, metavar="yes|no")
    q.add_argument("--note", help="free text (identifiers of the plan's patient are removed in the library)")
    q.add_argument("--chosen", type=int, metavar="RANK", help="the trajectory performed, when not #1")
    q.set_defaults(func=cmd_outcome)
