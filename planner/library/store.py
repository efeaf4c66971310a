"""The case library: a root folder with the database (SQLite by default, any SQLAlchemy URL)
and the de-identified files, stored once each under ``objects/`` by the SHA-256 of their bytes.

Concurrent writers: SQLite runs in WAL mode with a busy timeout and every transaction starts
``BEGIN IMMEDIATE`` (a writer waits for the other instead of failing on a lock upgrade); files
are written to a temporary name and renamed to their hash (two writers of the same file write
the same bytes); migrations run under a lock (a file lock beside a SQLite database, an
advisory lock on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from ..errors import InputError
from . import facts as F
from .models import Case, Outcome, StoredFile

DB_NAME = "library.sqlite"
DEFAULT_ROOT_ENV = "PLANNER_LIBRARY"
DEFAULT_URL_ENV = "PLANNER_LIBRARY_DB"
COMPLICATIONS = ("pneumothorax", "haemorrhage", "none")
_FRAMES: dict[str, Any] = {}


def default_root() -> Path:
    env = os.environ.get(DEFAULT_ROOT_ENV)
    return Path(env) if env else Path.home() / ".local" / "share" / "planner" / "library"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"timeout": 60, "isolation_level": None})

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL: consistent after a crash, one fsync per checkpoint
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(eng, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return eng
    return create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine, root: Path) -> None:
    """Bring the database to the latest schema (Alembic, programmatically), under a lock."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    if engine.dialect.name == "sqlite":
        import fcntl

        lock = os.open(root / ".migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        finally:
            os.close(lock)
    else:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(2020202001)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


@dataclass
class CaseView:
    """A case as the commands show it (plain values, no database session)."""

    id: int
    key: str
    facts: dict[str, Any]
    outcome: dict[str, Any] | None
    files: dict[str, str]  # name -> sha256

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        out = {"id": self.id, **self.facts, "outcome": self.outcome}
        if root is not None:
            out["plan"] = str(root / "objects" / self.facts["plan_sha256"][:2] / self.facts["plan_sha256"])
            k = self.facts.get("key_image_sha256")
            out["key_image"] = str(root / "objects" / k[:2] / k) if k else None
        return out


class Library:
    """A case library at ``root`` (database ``url``, default SQLite ``root/library.sqlite``)."""

    def __init__(self, root: str | os.PathLike[str], url: str | None = None):
        self.root = Path(root).absolute()
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{root}: cannot create the library folder ({exc.strerror or exc})") from None
        self.url = url or os.environ.get(DEFAULT_URL_ENV) or f"sqlite:///{self.root / DB_NAME}"
        try:
            self.engine = _engine(self.url)
            migrate(self.engine, self.root)
        except OperationalError as exc:
            raise InputError(f"library database {self._safe_url()}: cannot open it ({str(exc.orig).strip()})") \
                from None
        except (ArgumentError, NoSuchModuleError) as exc:
            raise InputError(f"library database {self._safe_url()}: not a usable database URL ({exc})") from None
        except ModuleNotFoundError as exc:  # a dialect whose driver is not installed
            raise InputError(f"library database {self._safe_url()}: its driver is not installed ({exc}); "
                             "PostgreSQL is supported out of the box (postgresql+psycopg://...)") from None

    def _safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            return "(unparsable URL)"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine) as s, s.begin():
            yield s

    def salt(self) -> bytes:
        """The library's secret salt of the new UIDs (created once): the same scan gets the same
        new UIDs in every case of this library, and they cannot be mapped back without it.
        Created whole: written to a temporary file and linked to its name (a link never replaces
        an existing file, so two processes creating it at once agree on the first one)."""
        p = self.root / "uid.salt"
        if not p.exists():
            fd, tmp = tempfile.mkstemp(prefix=".uid.salt.", dir=self.root)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(os.urandom(32))
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, p)
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp)
        data = p.read_bytes()
        if len(data) != 32:
            raise InputError(f"{p}: damaged (expected 32 bytes); the library's new UIDs depend on it")
        return data

    # -- files ---------------------------------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        return self.root / "objects" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` under its hash (atomically; already there: nothing to do)."""
        digest = F.sha256(data)
        path = self.object_path(digest)
        if path.is_file() and path.stat().st_size == len(data):
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{digest[:8]}.", suffix=f".{os.getpid()}", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return digest

    def read(self, digest: str) -> bytes:
        return self.object_path(digest).read_bytes()

    # -- add -----------------------------------------------------------------------------------
    def add(self, folder: str | os.PathLike[str]) -> list[CaseView]:
        """Add (or update) the plan folder's cases, de-identified; returns them."""
        d = Path(folder)
        doc, raw = read_plan_folder(d)
        ids = F.identifiers(doc, d)
        checks = _read_checks(d)
        for c in checks:
            src = (c.get("check_image") or {}).get("source")
            if isinstance(src, str) and len(src) >= 3:
                ids += [src, str(Path(src).absolute())]
            uid = (c.get("check_image") or {}).get("series_instance_uid")
            if isinstance(uid, str) and len(uid) >= 3:
                ids.append(uid)
        ids = sorted(set(ids), key=len, reverse=True)
        clean = F.deidentify_plan(doc, ids, self.salt())
        files: dict[str, bytes] = {"plan.json": F.dumps(clean)}
        for p in sorted((d / "images").glob("*.png")) if (d / "images").is_dir() else []:
            try:
                files[f"images/{p.name}"] = F.clean_png(p.read_bytes())
            except (OSError, ValueError, SyntaxError):  # PIL's errors for a file that is not a PNG
                continue  # an unreadable image is left out, not a reason to refuse the case
        check_rows = []
        for c in checks:
            n = c["_number"]
            c_clean = F.deidentify_check({k: v for k, v in c.items() if k != "_number"}, ids)
            files[f"checks/{n:02d}/check.json"] = F.dumps(c_clean)
            for p in sorted((d / "checks" / f"{n:02d}").glob("*.png")):
                try:
                    files[f"checks/{n:02d}/{p.name}"] = F.clean_png(p.read_bytes())
                except (OSError, ValueError, SyntaxError):
                    continue
            dev = c_clean.get("deviation") or {}
            check_rows.append({"number": n, "trajectory_rank": (c_clean.get("plan") or {}).get("trajectory_rank"),
                               "correction": (c_clean.get("correction") or {}).get("kind"),
                               "target_hit": dev.get("target_hit")})
        allowed = list(F.vocabulary(doc).values())
        for name, data in files.items():  # the texts; images are re-encoded from their pixels alone
            if name.endswith(".json"):
                F.assert_clean(data, ids, f"{d / name}", allowed if name == "plan.json" else ())
        chosen, source = chosen_rank_of(d, doc, check_rows, raw)
        frames = self._frames(d, doc)
        stored = {name: self.put(data) for name, data in files.items()}
        key_image = next((stored[k] for k in F.KEY_IMAGES if k in stored),
                         next((v for k, v in stored.items() if k.endswith(".png")), ""))
        base = F.sha256(raw)
        out = []
        for i, block in enumerate(F.target_blocks(clean)):  # facts from the de-identified document only
            fx = F.derive(clean, block, frames, chosen)
            fx.update(chosen_source=source if chosen else "none", checks=check_rows,
                      plan_sha256=stored["plan.json"], key_image_sha256=key_image)
            out.append(self._upsert(f"{base}#{i}", fx, stored, {n: len(b) for n, b in files.items()}))
        recorded = read_outcome(d)
        if recorded is not None:
            recorded["note"] = F.scrub(str(recorded.get("note") or ""), ids)  # a name typed into the note
            self.record_outcome([c.id for c in out], recorded)
            out = self.cases([c.id for c in out])
        return out

    def _frames(self, d: Path, doc: dict[str, Any]) -> dict[str, Any] | None:
        """The structures file's segments and boxes (read once per process per file hash: a
        department plans several targets on one scan)."""
        seg = d / "structures.seg.nrrd"
        if not seg.is_file():
            return None
        digest = F.sha256(seg.read_bytes())
        if digest not in _FRAMES:
            try:
                _FRAMES[digest] = F.frame_facts(seg)
            except InputError:
                return None
            while len(_FRAMES) > 4:
                _FRAMES.pop(next(iter(_FRAMES)))
        return _FRAMES[digest]

    def _upsert(self, key: str, fx: dict[str, Any], stored: dict[str, str], sizes: dict[str, int]) -> CaseView:
        row = {k: (json.dumps(v, sort_keys=True) if k in ("risk_factors", "risk_text", "trajectories", "checks")
                   else v) for k, v in fx.items()}
        for attempt in range(3):
            try:
                with self.session() as s:
                    case = s.scalar(select(Case).where(Case.key == key))
                    if case is None:
                        case = Case(key=key, added=_now(), **row)
                        s.add(case)
                        s.flush()
                    else:
                        for k, v in row.items():
                            setattr(case, k, v)
                    have = {f.name: f for f in s.scalars(select(StoredFile).where(StoredFile.case_id == case.id))}
                    for name, digest in stored.items():
                        if name in have:
                            have[name].sha256, have[name].size = digest, sizes[name]
                        else:
                            s.add(StoredFile(case_id=case.id, name=name, sha256=digest, size=sizes[name]))
                    cid = case.id
                return self.get(cid)
            except IntegrityError:
                if attempt == 2:  # another writer added the same case at the same moment: update it
                    raise
        raise AssertionError("unreachable")

    # -- outcomes ------------------------------------------------------------------------------
    def record_outcome(self, case_ids: list[int], outcome: dict[str, Any]) -> None:
        with self.session() as s:
            for cid in case_ids:
                o = s.scalar(select(Outcome).where(Outcome.case_id == cid))
                vals = outcome_row(outcome)
                if o is None:
                    s.add(Outcome(case_id=cid, **vals))
                else:
                    for k, v in vals.items():
                        setattr(o, k, v)

    def set_chosen(self, case_ids: list[int], rank: int) -> None:
        with self.session() as s:
            for cid in case_ids:
                c = s.get(Case, cid)
                if c is not None:
                    c.chosen_rank, c.chosen_source = rank, "recorded"

    def cases_of_folder(self, folder: str | os.PathLike[str]) -> list[int]:
        _, raw = read_plan_folder(Path(folder))
        base = F.sha256(raw)
        with self.session() as s:
            return list(s.scalars(select(Case.id).where(Case.key.like(f"{base}#%")).order_by(Case.key)))

    # -- reading -------------------------------------------------------------------------------
    def get(self, case_id: int) -> CaseView:
        return self.cases([case_id])[0]

    def cases(self, ids: list[int] | None = None, procedure: str | None = None) -> list[CaseView]:
        with self.session() as s:
            q = select(Case).order_by(Case.id)
            if ids is not None:
                q = q.where(Case.id.in_(ids))
            if procedure:
                q = q.where(Case.procedure == procedure)
            rows = list(s.scalars(q))
            outs = {o.case_id: o for o in s.scalars(select(Outcome).where(Outcome.case_id.in_([r.id for r in rows])))}
            files: dict[int, dict[str, str]] = {}
            for f in s.scalars(select(StoredFile).where(StoredFile.case_id.in_([r.id for r in rows]))):
                files.setdefault(f.case_id, {})[f.name] = f.sha256
            return [CaseView(r.id, r.key, case_facts(r), outcome_view(outs.get(r.id)), files.get(r.id, {}))
                    for r in rows]

    def count(self) -> int:
        with self.session() as s:
            return len(list(s.scalars(select(Case.id))))


def case_facts(r: Case) -> dict[str, Any]:
    out = {c: getattr(r, c) for c in ("procedure", "status", "region", "target_label", "side", "size_mm", "depth_mm",
                                       "lung_mm", "needle_gauge", "limiting", "chosen_rank", "chosen_source",
                                       "n_trajectories", "frame", "frame_x", "frame_y", "frame_z", "preset_sha256",
                                       "plan_sha256", "key_image_sha256", "added")}
    for c in ("risk_factors", "risk_text", "trajectories", "checks"):
        out[c] = json.loads(getattr(r, c))
    return out


def outcome_row(o: dict[str, Any]) -> dict[str, Any]:
    comp = set(o.get("complications") or [])
    return {"recorded": o.get("recorded") or _now(), "pneumothorax": int("pneumothorax" in comp),
            "haemorrhage": int("haemorrhage" in comp), "chest_tube": int(bool(o.get("chest_tube"))),
            "diagnostic": int(bool(o.get("diagnostic"))), "note": str(o.get("note") or "")}


def outcome_view(o: Outcome | None) -> dict[str, Any] | None:
    if o is None:
        return None
    comp = [c for c in ("pneumothorax", "haemorrhage") if getattr(o, c)]
    return {"complications": comp or ["none"], "chest_tube": bool(o.chest_tube), "diagnostic": bool(o.diagnostic),
            "note": o.note, "recorded": o.recorded}


def read_plan_folder(d: Path) -> tuple[dict[str, Any], bytes]:
    """The plan document of a plan folder and its bytes (refused, one line, when not a plan)."""
    from ..planning.output import check_plan_document

    p = d / "plan.json"
    if not d.is_dir():
        raise InputError(f"{d}: not a folder (give a plan folder, the --out of planner plan)")
    if not p.is_file():
        raise InputError(f"{d}: no plan.json in it (give a plan folder, the --out of planner plan)")
    raw = p.read_bytes()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None
    check_plan_document(doc, str(p))
    return doc, raw


def _read_checks(d: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted((d / "checks").glob("[0-9][0-9]/check.json")) if (d / "checks").is_dir() else []:
        try:
            c = json.loads(f.read_text())
        except (ValueError, OSError, UnicodeDecodeError):
            continue
        if isinstance(c, dict):
            c["_number"] = int(f.parent.name)
            out.append(c)
    return out


OUTCOME_FILE = "outcome.json"


def read_outcome(d: Path) -> dict[str, Any] | None:
    """The outcome recorded in a plan folder (``outcome.json``, written by ``planner outcome``)."""
    p = d / OUTCOME_FILE
    if not p.is_file():
        return None
    try:
        o = json.loads(p.read_text())
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not a readable outcome ({exc})") from None
    if not isinstance(o, dict) or not isinstance(o.get("complications"), list) \
            or not all(c in COMPLICATIONS for c in o["complications"]) \
            or not isinstance(o.get("chest_tube"), bool) or not isinstance(o.get("diagnostic"), bool):
        raise InputError(f"{p}: not an outcome (complications, chest_tube and diagnostic are needed); "
                         "write it with planner outcome")
    return o


def chosen_rank_of(d: Path, doc: dict[str, Any], checks: list[dict[str, Any]],
                   plan_bytes: bytes | None = None) -> tuple[int | None, str]:
    """The trajectory the operator chose: recorded in ``choice.json`` (by ``planner review
    --chosen``, the viewer, the web review or ``planner outcome --chosen``; see
    :func:`planner.library.choice.record_choice`), else, in folders written before it existed,
    ``outcome.json``'s or ``plan.json``'s ``chosen_rank``, else the one the latest check scan
    was compared with; None when nothing says."""
    from .choice import read_choice

    c = read_choice(d, plan_bytes)
    if c is not None:
        return int(c["rank"]), "recorded"
    o = d / OUTCOME_FILE
    if o.is_file():
        try:
            r = json.loads(o.read_text()).get("chosen_rank")
            if isinstance(r, int) and r >= 1:
                return r, "recorded"
        except (ValueError, OSError, AttributeError):
            pass
    r = doc.get("chosen_rank")
    if isinstance(r, int) and r >= 1:
        return r, "recorded"
    for c in reversed(checks):
        r = c.get("trajectory_rank")
        if isinstance(r, int) and r >= 1:
            return r, "check"
    return None, "none"


def open_library(root: str | os.PathLike[str] | None = None, url: str | None = None) -> Library:
    """Open (creating and migrating as needed) the library at ``root`` (default
    ``$PLANNER_LIBRARY`` or ``~/.local/share/planner/library``) with database ``url`` (default
    ``$PLANNER_LIBRARY_DB`` or SQLite in the root)."""
    return Library(root if root is not None else default_root(), url)
