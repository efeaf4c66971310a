"""The plan folders under a root, as the worklist shows them (no web code here).

Every folder under ROOT holding a ``plan.json`` is a case. Each is named in URLs by an opaque
key (an HMAC of its path under ROOT with a key drawn when the server starts), never by its
folder name or anything of the patient. Symbolic links are not followed, hidden folders and
the plan folder's own subfolders (checks, images, ...) are not searched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Subfolders of a plan folder that hold no other plan.
PLAN_PARTS = {"checks", "images", "meshes", "markups", "surfaces", "dicom", "web"}
MAX_DEPTH = 8
MAX_PLAN_BYTES = 50 * 1024 * 1024
KEY = re.compile(r"^[0-9a-f]{20}$")


@dataclass
class PlanEntry:
    key: str
    folder: Path
    procedure: str = ""
    patient: str = ""
    study_date: str = ""
    created: str = ""
    status: str = "planned"  # planned / checked (N) / unreadable
    feasible: bool | None = None
    target: str = ""
    problem: str = ""
    checks: int = 0

    def row(self) -> dict[str, Any]:
        return {"key": self.key, "procedure": self.procedure, "patient": self.patient, "study_date": self.study_date,
                "created": self.created, "status": self.status, "feasible": self.feasible, "target": self.target,
                "problem": self.problem, "checks": self.checks}


def _count_checks(folder: Path) -> int:
    try:
        return sum(1 for d in (folder / "checks").iterdir() if d.name.isdigit() and (d / "check.json").is_file())
    except OSError:
        return 0


class Worklist:
    """The cases under ``root``; rescanned on every call (a new plan appears at the next look)."""

    def __init__(self, root: str | os.PathLike[str], secret: bytes):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            from ..errors import InputError

            raise InputError(f"{root}: not a folder")
        self._secret = secret

    def key_of(self, folder: Path) -> str:
        rel = folder.resolve().relative_to(self.root).as_posix()
        return hmac.new(self._secret, rel.encode("utf-8"), hashlib.sha256).hexdigest()[:20]

    def folders(self) -> list[Path]:
        out: list[Path] = []
        for top, dirs, files in os.walk(self.root, followlinks=False):
            here = Path(top)
            depth = len(here.relative_to(self.root).parts)
            if "plan.json" in files and (here / "plan.json").is_file() and not (here / "plan.json").is_symlink():
                out.append(here)
                dirs[:] = [d for d in dirs if d not in PLAN_PARTS]
            dirs[:] = [d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH]
        return out

    def entry(self, folder: Path) -> PlanEntry:
        e = PlanEntry(key=self.key_of(folder), folder=folder)
        pj = folder / "plan.json"
        try:
            if pj.stat().st_size > MAX_PLAN_BYTES:
                raise ValueError(f"plan.json is larger than {MAX_PLAN_BYTES // 2**20} MiB")
            doc = json.loads(pj.read_text("utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("plan.json is not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            e.status, e.problem = "unreadable", " ".join(str(exc).split())[:200]
            return e
        pat = doc.get("patient") if isinstance(doc.get("patient"), dict) else {}
        study = doc.get("study") if isinstance(doc.get("study"), dict) else {}
        prov = doc.get("provenance") if isinstance(doc.get("provenance"), dict) else {}
        tgt = doc.get("target") if isinstance(doc.get("target"), dict) else {}
        e.procedure = str(doc.get("procedure_title") or doc.get("procedure") or "?")[:120]
        e.patient = str(pat.get("name") or "anonymous")[:80]
        e.study_date = str(study.get("date") or "")[:20]
        e.created = str(prov.get("created") or "")[:40]
        e.feasible = doc.get("status") == "ok" and bool(doc.get("trajectories"))
        e.target = str(tgt.get("label") or "")[:80]
        e.checks = _count_checks(folder)
        e.status = f"checked ({e.checks})" if e.checks else "planned"
        return e

    def entries(self) -> list[PlanEntry]:
        """Every case, newest plan first (unreadable ones last)."""
        got = [self.entry(f) for f in self.folders()]
        return sorted(got, key=lambda e: (e.status != "unreadable", e.created), reverse=True)

    def folder(self, key: str) -> Path | None:
        """The plan folder named by ``key``, or None; never a folder outside the root."""
        if not KEY.match(key or ""):
            return None
        for f in self.folders():
            if hmac.compare_digest(self.key_of(f), key):
                r = f.resolve()
                return r if r.is_relative_to(self.root) else None
        return None
