"""Batches: a sweep or CSV of runs, and each run's place in its batch.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("batch_index", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_runs_batch_id_batches", "batches", ["batch_id"], ["id"], ondelete="SET NULL")
        batch_op.create_index("ix_runs_batch_id", ["batch_id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("ix_runs_batch_id")
        batch_op.drop_constraint("fk_runs_batch_id_batches", type_="foreignkey")
        batch_op.drop_column("batch_index")
        batch_op.drop_column("batch_id")
    op.drop_table("batches")
