"""The library's tables (SQLAlchemy). The schema is created and changed only by the Alembic
migrations in ``migrations/versions/``; these classes must match the latest one.

No column holds an identifier of a patient: cases are keyed by a hash of their source
``plan.json``, and every stored text has been de-identified before it gets here.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Case(Base):
    """One target of one plan folder, with the facts derived from its ``plan.json``."""

    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)  # sha256 of the source plan.json + '#' target index
    added: Mapped[str] = mapped_column(String(40))
    procedure: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(64), index=True)  # RUL/RML/RLL/LUL/LLL, organ or joint
    target_label: Mapped[str] = mapped_column(String(128))
    side: Mapped[str] = mapped_column(String(8))
    size_mm: Mapped[float | None] = mapped_column(Float, nullable=True)
    depth_mm: Mapped[float | None] = mapped_column(Float, nullable=True)
    lung_mm: Mapped[float | None] = mapped_column(Float, nullable=True)
    needle_gauge: Mapped[str] = mapped_column(String(16))
    limiting: Mapped[str] = mapped_column(Text)
    chosen_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chosen_source: Mapped[str] = mapped_column(String(32))  # recorded | check | none
    n_trajectories: Mapped[int] = mapped_column(Integer)
    frame_x: Mapped[float | None] = mapped_column(Float, nullable=True)
    frame_y: Mapped[float | None] = mapped_column(Float, nullable=True)
    frame_z: Mapped[float | None] = mapped_column(Float, nullable=True)
    frame: Mapped[str] = mapped_column(String(32))  # what the frame is: lungs, body, structures, none
    risk_factors: Mapped[str] = mapped_column(Text)  # JSON: factor id -> bool, for the chosen trajectory
    risk_text: Mapped[str] = mapped_column(Text)  # JSON list: the plan's risk factor lines
    trajectories: Mapped[str] = mapped_column(Text)  # JSON list: rank, metrics, length, gauge per trajectory
    checks: Mapped[str] = mapped_column(Text)  # JSON list: summary of each check scan
    preset_sha256: Mapped[str] = mapped_column(String(64))
    plan_sha256: Mapped[str] = mapped_column(String(64))  # the de-identified plan.json stored under the root
    key_image_sha256: Mapped[str] = mapped_column(String(64))


class StoredFile(Base):
    """A file of a case, stored once under the root by the hash of its (de-identified) bytes."""

    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("case_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))  # path inside the plan folder, e.g. images/planning_slice.png
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)


class Outcome(Base):
    """What happened when the procedure was done (one per case; recording again replaces it)."""

    __tablename__ = "outcomes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), unique=True)
    recorded: Mapped[str] = mapped_column(String(40))
    pneumothorax: Mapped[int] = mapped_column(Integer)
    haemorrhage: Mapped[int] = mapped_column(Integer)
    chest_tube: Mapped[int] = mapped_column(Integer)
    diagnostic: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text)
