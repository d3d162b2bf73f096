"""SQLite's durability setting: FULL unless configured otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from backend.db import Database
from backend.settings import Settings


@pytest.mark.parametrize(("configured", "pragma"), [(None, 2), ("NORMAL", 1), ("FULL", 2)])
async def test_sqlite_commits_are_fsynced_unless_configured_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: str | None, pragma: int
) -> None:
    monkeypatch.delenv("MES_SQLITE_SYNCHRONOUS", raising=False)
    if configured:
        monkeypatch.setenv("MES_SQLITE_SYNCHRONOUS", configured)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        async with db.write() as session:
            assert await session.scalar(text("PRAGMA synchronous")) == pragma
        async with db.read() as session:
            assert await session.scalar(text("PRAGMA synchronous")) == pragma
    finally:
        await db.dispose()


def test_an_unknown_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MES_SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        Settings()


@pytest.mark.postgres
async def test_a_pooled_connection_killed_while_idle_is_replaced_before_use(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool pings a connection only after an idle spell; a dead one is then dropped and
    the session gets a live one (a database restart costs no failed request)."""
    from backend import db as db_module

    db = Database(settings.database_url)
    try:
        async with db.read() as session:
            first = await session.scalar(text("SELECT pg_backend_pid()"))
        killer = Database(settings.database_url)
        try:
            async with killer.read() as session:
                assert await session.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": first})
        finally:
            await killer.dispose()
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.0)  # it has been idle "long"
        async with db.read() as session:
            second = await session.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await db.dispose()
