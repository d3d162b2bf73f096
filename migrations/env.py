"""Alembic environment: async engine, batch mode on SQLite, the URL from MES settings."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from backend.db import migration_engine
from backend.models import Base
from backend.settings import get_settings

URL: str = context.config.attributes.get("url") or get_settings().database_url


def _configure(**kwargs: Any) -> None:
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


def _run_to_completion(coroutine: Coroutine[Any, Any, None]) -> None:
    """asyncio.run, also when the caller is itself async (a loop runs in this thread):
    then the migrations run on a loop of their own in another thread, and the caller waits."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as pool:
        pool.submit(asyncio.run, coroutine).result()


if context.is_offline_mode():
    _configure(url=URL, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    _run_to_completion(_online())
