"""The operator's choice of trajectory, recorded in the plan folder (``choice.json``).

One function records it for every way a choice is made: ``planner review DIR --chosen N``, the
viewer's key, the web review and ``planner outcome --chosen N``. ``planner library add`` reads it
(:func:`read_choice`), so the library keeps the department's choices for ``library learn``.

``choice.json`` (schema ``planner.choice/1``)::

    {"schema": "planner.choice/1", "rank": 2, "by": "viewer", "time": "2026-01-01T10:00:00+00:00",
     "plan_sha256": "<sha256 of the plan.json the rank refers to>"}

A rank names a trajectory of one ``plan.json``: the choice is bound to that file's hash, and a
choice whose plan was replaced since (planned again into the same folder) is not used.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError

CHOICE_FILE = "choice.json"
CHOICE_SCHEMA = "planner.choice/1"
#: Who recorded a choice.
CHOICE_BY = ("review", "viewer", "web", "outcome")


def plan_ranks(plan_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes, list[int]]:
    """The plan document of ``plan_dir``, its bytes, and the ranks of its trajectories (over
    every target of a multi-target plan), sorted."""
    from . import facts as F
    from .store import read_plan_folder

    doc, raw = read_plan_folder(Path(plan_dir))
    ranks = sorted({t.get("rank") for b in F.target_blocks(doc) for t in b.get("trajectories") or []
                    if isinstance(t, dict) and isinstance(t.get("rank"), int)})
    return doc, raw, ranks


def check_rank(rank: Any, ranks: list[int], where: str, option: str = "rank") -> int:
    """``rank`` as a trajectory rank the plan has; a one-line InputError otherwise."""
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise InputError(f"{option} {rank!r}: a trajectory rank is a whole number (1 is the planner's first)")
    if rank not in ranks:
        have = ", ".join(f"#{r}" for r in ranks) or "none (no safe trajectory)"
        raise InputError(f"{option} {rank}: {where} has no trajectory #{rank} (it has {have})")
    return rank


def record_choice(plan_dir: str | os.PathLike[str], rank: int, by: str) -> Path:
    """Record that the operator chose trajectory ``rank`` of the plan in ``plan_dir``; returns
    the path of ``choice.json`` written.

    This is the one way a choice is recorded: ``planner review --chosen``, the viewer, the web
    review and ``planner outcome --chosen`` all call it. The web review calls
    ``record_choice(plan_dir, rank, by="web")``: keep this signature (positional ``plan_dir`` and
    ``rank``, ``by`` one of :data:`CHOICE_BY`) stable.

    The rank is checked against ``plan.json``'s trajectories (of any target); the file is written
    atomically under the plan folder's lock (the one every writer of a plan folder takes), and a
    later choice replaces an earlier one. Raises :class:`planner.InputError` (one line) for a
    folder that is not a plan, a rank the plan does not have, or an unknown ``by``.
    """
    from ..atomic import folder_lock, write_json_atomic

    if by not in CHOICE_BY:
        raise InputError(f"choice recorded by {by!r}: one of {', '.join(CHOICE_BY)}")
    d = Path(plan_dir)
    _, raw, ranks = plan_ranks(d)
    check_rank(rank, ranks, str(d / "plan.json"))
    with folder_lock(d):
        if hashlib.sha256((d / "plan.json").read_bytes()).hexdigest() != hashlib.sha256(raw).hexdigest():
            raise InputError(f"{d / 'plan.json'}: replaced while the choice was being recorded; choose again")
        record = {"schema": CHOICE_SCHEMA, "rank": rank, "by": by,
                  "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "plan_sha256": hashlib.sha256(raw).hexdigest()}
        return write_json_atomic(record, d / CHOICE_FILE)


def read_choice(plan_dir: str | os.PathLike[str], plan_bytes: bytes | None = None) -> dict[str, Any] | None:
    """The choice recorded in ``plan_dir`` (``choice.json``), or None when there is none, when it
    cannot be read, or when it was made on another ``plan.json`` (``plan_bytes``: that file's
    bytes, read here when not given)."""
    d = Path(plan_dir)
    p = d / CHOICE_FILE
    if not p.is_file():
        return None
    try:
        c = json.loads(p.read_text(encoding="utf-8"))
        raw = plan_bytes if plan_bytes is not None else (d / "plan.json").read_bytes()
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(c, dict) or c.get("schema") != CHOICE_SCHEMA:
        return None
    rank = c.get("rank")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1 or c.get("by") not in CHOICE_BY:
        return None
    if c.get("plan_sha256") != hashlib.sha256(raw).hexdigest():
        return None  # the folder was planned again since: the rank named another trajectory
    return c
