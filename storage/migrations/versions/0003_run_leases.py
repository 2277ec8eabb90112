"""Run leases: the processes that own runs, each with a token and a heartbeat, and each run's owner token.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_owners",
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name="pk_run_owners"),
    )
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("owner_token", sa.String(32), nullable=True))
        batch_op.create_index("ix_runs_owner_token", ["owner_token"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("ix_runs_owner_token")
        batch_op.drop_column("owner_token")
    op.drop_table("run_owners")
