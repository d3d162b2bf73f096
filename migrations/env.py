"""Alembic environment: async engine, batch mode on SQLite, the URL from MES settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from backend.db import migration_engine
from backend.models import Base
from backend.settings import get_settings

URL: str = context.config.attributes.get("url") or get_settings().database_url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=Base.metadata,
        compare_type=True,
        # SQLite can hardly ALTER TABLE: batch mode recreates the table instead.
        render_as_batch=URL.startswith("sqlite"),
        **kwargs,
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = migration_engine(URL)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=URL, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
