"""The first schema: cases, their files and their outcomes.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(80), nullable=False, unique=True),
        sa.Column("added", sa.String(40), nullable=False),
        sa.Column("procedure", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("region", sa.String(64), nullable=False, index=True),
        sa.Column("target_label", sa.String(128), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("size_mm", sa.Float, nullable=True),
        sa.Column("depth_mm", sa.Float, nullable=True),
        sa.Column("lung_mm", sa.Float, nullable=True),
        sa.Column("needle_gauge", sa.String(16), nullable=False),
        sa.Column("limiting", sa.Text, nullable=False),
        sa.Column("chosen_rank", sa.Integer, nullable=True),
        sa.Column("chosen_source", sa.String(32), nullable=False),
        sa.Column("n_trajectories", sa.Integer, nullable=False),
        sa.Column("frame_x", sa.Float, nullable=True),
        sa.Column("frame_y", sa.Float, nullable=True),
        sa.Column("frame_z", sa.Float, nullable=True),
        sa.Column("frame", sa.String(32), nullable=False),
        sa.Column("risk_factors", sa.Text, nullable=False),
        sa.Column("risk_text", sa.Text, nullable=False),
        sa.Column("trajectories", sa.Text, nullable=False),
        sa.Column("checks", sa.Text, nullable=False),
        sa.Column("preset_sha256", sa.String(64), nullable=False),
        sa.Column("plan_sha256", sa.String(64), nullable=False),
        sa.Column("key_image_sha256", sa.String(64), nullable=False),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.UniqueConstraint("case_id", "name"),
    )
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False, unique=True),
        sa.Column("recorded", sa.String(40), nullable=False),
        sa.Column("pneumothorax", sa.Integer, nullable=False),
        sa.Column("haemorrhage", sa.Integer, nullable=False),
        sa.Column("chest_tube", sa.Integer, nullable=False),
        sa.Column("diagnostic", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("outcomes", "files", "cases"):
        op.drop_table(table)
