"""The manifest of a cohort: a CSV file, one row per target.

Columns: ``case_id``, ``ct``, ``procedure`` required; ``target`` ("x,y,z" LPS mm),
``target_label``, ``seed``, ``target_joint`` (exactly one of the four per row), ``structures``,
``approach``, ``side``, ``modality`` optional - the ``planner plan`` options of the same names.
``ct`` is a path (relative to the manifest's folder) or ``pacs:NODE:SERIES_UID``. The whole file
is checked before any work starts: every bad row is reported with its line number.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, brief

REQUIRED = ("case_id", "ct", "procedure")
TARGETS = {"target": "point", "target_label": "label", "seed": "seed", "target_joint": "joint"}
OPTIONAL = (*TARGETS, "structures", "approach", "side", "modality")
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_ROWS = 100_000


class ManifestError(InputError):
    """The manifest cannot be used: ``problems`` lists each bad row ("line N: ...")."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} problem(s), nothing was run: " + "; ".join(problems[:20]) + more)


@dataclass
class Row:
    """One target of the cohort, checked."""

    line: int
    case_id: str
    ct: str  # a path (absolute) or pacs:NODE:SERIES
    procedure: str
    target_kind: str
    target_value: str
    structures: str | None = None
    approach: str | None = None
    side: str | None = None
    modality: str = "CT"
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The plan folder's name within the case: the kind of target and a digest of its value
        (stable when rows are reordered)."""
        digest = hashlib.sha256(f"{self.target_kind}:{self.target_value}".encode()).hexdigest()[:10]
        return f"{self.target_kind}-{digest}"

    @property
    def folder(self) -> str:
        return f"cases/{self.case_id}/{self.key}"

    def options(self) -> dict[str, Any]:
        return {"procedure": self.procedure, "target": [self.target_kind, self.target_value],
                "structures": self.structures, "approach": self.approach, "side": self.side,
                "modality": self.modality}


def _resolve(value: str, base: Path) -> str:
    if value.startswith("pacs:"):
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def read_manifest(path: str | os.PathLike[str]) -> list[Row]:
    """Every row of the manifest, checked (ManifestError listing every problem otherwise)."""
    from ..planning.presets import load_preset
    from ..session import TargetSpec

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such manifest file")
    try:
        text = p.read_text("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text ({brief(exc)})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise InputError(f"{p}: empty manifest (a header line with case_id,ct,procedure is needed)")
    problems = []
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing:
        problems.append(f"line 1: column(s) {', '.join(missing)} missing")
    if unknown:
        problems.append(f"line 1: unknown column(s) {', '.join(brief(u, 40) for u in unknown)} (known: "
                        f"{', '.join(REQUIRED + OPTIONAL)})")
    if len(set(header)) != len(header):
        problems.append("line 1: a column is named twice")
    if problems:
        raise ManifestError(p, problems)
    base = p.parent.resolve()
    rows: list[Row] = []
    seen: dict[tuple[str, str], int] = {}
    presets: dict[tuple[str, str | None], Any] = {}
    for n, record in enumerate(reader, start=2):
        if n > MAX_ROWS + 1:
            problems.append(f"line {n}: more than {MAX_ROWS} rows")
            break
        if None in record:
            problems.append(f"line {n}: more values than columns")
            continue
        r = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
        if not any(r.values()):
            continue  # a blank line
        bad = []
        case_id = r.get("case_id", "")
        if not _CASE_ID.match(case_id):
            bad.append(f"case_id {brief(repr(case_id), 40)}: 1-64 letters, digits, '_', '-', '.'")
        ct = r.get("ct", "")
        if not ct:
            bad.append("ct is empty")
        elif ct.startswith("pacs:"):
            parts = ct.split(":")
            if len(parts) != 3 or not parts[1] or not re.match(r"^[0-9]+(\.[0-9]+)*$", parts[2]):
                bad.append(f"ct {brief(repr(ct), 60)}: pacs:NODE:SERIES_UID expected")
        elif not Path(_resolve(ct, base)).exists():
            bad.append(f"ct {brief(ct, 80)}: no such file or folder")
        kinds = [(k, r[k]) for k in TARGETS if r.get(k)]
        if len(kinds) != 1:
            bad.append("give exactly one of target, target_label, seed, target_joint" if not kinds else
                       f"several targets in one row ({', '.join(k for k, _ in kinds)}): one row per target")
        modality = (r.get("modality") or "CT").upper()
        if modality not in ("CT", "MR"):
            bad.append(f"modality {brief(repr(r.get('modality')), 20)}: CT or MR")
        side = r.get("side") or None
        if side not in (None, "left", "right"):
            bad.append(f"side {brief(repr(side), 20)}: left or right")
        approach = r.get("approach") or None
        procedure = r.get("procedure", "")
        try:
            if (procedure, approach) not in presets:
                presets[(procedure, approach)] = load_preset(procedure, approach)
        except InputError as exc:
            bad.append(brief(exc, 160))
        structures = r.get("structures") or None
        if structures is not None:
            structures = _resolve(structures, base)
            if not Path(structures).exists():
                bad.append(f"structures {brief(r['structures'], 80)}: no such file or folder")
        if len(kinds) == 1:
            kind, value = TARGETS[kinds[0][0]], kinds[0][1]
            try:
                TargetSpec(kind, value)
            except InputError as exc:
                bad.append(brief(exc, 160))
            if not bad:
                other = seen.get((case_id, f"{kind}:{value}"))
                if other is not None:
                    bad.append(f"the same target as line {other} of case {case_id}")
                seen[(case_id, f"{kind}:{value}")] = n
        if bad:
            problems += [f"line {n}: {b}" for b in bad]
            continue
        rows.append(Row(n, case_id, _resolve(ct, base), procedure, TARGETS[kinds[0][0]], kinds[0][1], structures,
                        approach, side, modality, r))
    if problems:
        raise ManifestError(p, problems)
    if not rows:
        raise InputError(f"{p}: no rows (one row per target is needed)")
    return rows
