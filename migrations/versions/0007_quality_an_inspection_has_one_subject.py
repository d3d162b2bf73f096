"""quality: an inspection has a lot or an operation

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 15:45:00.000000

Adds `ck_inspections_one_subject`: exactly one of `lot_id` and `operation_id` is set, as
`startInspection` has always required.

Existing rows: the service never wrote an inspection with neither or both, so a database
written through the API passes. A row that does not was written by hand and cannot be repaired
here: which lot or operation it inspected is not known, and an inspection is a quality record,
not to be deleted or guessed at. The upgrade then stops before changing anything and names the
inspections at fault, for someone to correct by hand.

SQLite: batch mode copies `inspections` to a new table, drops the old one and renames the copy.
Results and deviations refer to inspections, so with foreign keys enforced (as `backend.db`
sets them) that drop fails, and deferring the check does not help: SQLite counts the dropped
references and never uncounts them. Foreign keys are therefore switched off around the copy,
which SQLite allows only between transactions: the migrations before this one are committed
first, the copy is committed with the foreign keys checked (`PRAGMA foreign_key_check`) before
they are switched on again, and the revision is stamped after that. Should the process die in
between, the next upgrade finds the constraint in place and only stamps.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ck_inspections_one_subject"
ONE_SUBJECT = "(lot_id IS NULL) <> (operation_id IS NULL)"


def _refuse_rows_without_one_subject() -> None:
    numbers = (
        op.get_bind()
        .execute(sa.text(f"SELECT number FROM inspections WHERE NOT ({ONE_SUBJECT}) ORDER BY id"))
        .scalars()
        .all()
    )
    if numbers:
        shown = ", ".join(numbers[:20]) + (
            f" and {len(numbers) - 20} more" if len(numbers) > 20 else ""
        )
        raise RuntimeError(
            f"{len(numbers)} inspection(s) have neither or both of a lot and an operation "
            f"({shown}): set exactly one on each, then upgrade again"
        )


def _has_constraint() -> bool:
    checks = sa.inspect(op.get_bind()).get_check_constraints("inspections")
    return any(c["name"] == NAME for c in checks)


def _between_transactions(statement: str) -> None:
    """Runs a statement that SQLite ignores inside a transaction: commits the open one, runs it,
    and begins the next (as `backend.db` begins them). Alembic's `autocommit_block` cannot do
    this here: the engine's "begin" listener opens a real transaction inside it as well."""
    bind = op.get_bind()
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql(statement)
    bind.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _foreign_keys_off_on_sqlite() -> Iterator[None]:
    """See the module's docstring. An error inside rolls the copy back; the connection is then
    dropped, foreign keys off and all, as the migration run ends there."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    _between_transactions("PRAGMA foreign_keys = OFF")
    yield
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"rebuilding inspections broke references: {broken[:5]}")
    _between_transactions("PRAGMA foreign_keys = ON")


def upgrade() -> None:
    if context.is_offline_mode():  # an SQL script for PostgreSQL: no rows to look at
        op.create_check_constraint(op.f(NAME), "inspections", ONE_SUBJECT)
        return
    _refuse_rows_without_one_subject()
    if _has_constraint():
        return
    with (
        _foreign_keys_off_on_sqlite(),
        op.batch_alter_table("inspections", schema=None) as batch_op,
    ):
        batch_op.create_check_constraint(op.f(NAME), ONE_SUBJECT)


def downgrade() -> None:
    if context.is_offline_mode():
        op.drop_constraint(op.f(NAME), "inspections", type_="check")
        return
    if not _has_constraint():
        return
    with (
        _foreign_keys_off_on_sqlite(),
        op.batch_alter_table("inspections", schema=None) as batch_op,
    ):
        batch_op.drop_constraint(op.f(NAME), type_="check")
