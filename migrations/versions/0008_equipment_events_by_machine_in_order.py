"""equipment: events by machine in id order

A machine's events page (Equipment.events, on the resolver path and in compiled reads) is
`WHERE equipment_id = ? AND id > ? ORDER BY id LIMIT n`. With only the primary key to give the
order, PostgreSQL walks the whole table for a machine with few events (1M events, a machine
with 2: 90 ms); with this index it reads the page directly (0.2 ms).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 15:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("equipment_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_equipment_events_by_machine", ["equipment_id", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("equipment_events", schema=None) as batch_op:
        batch_op.drop_index("ix_equipment_events_by_machine")
