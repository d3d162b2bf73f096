"""Engine, sessions and the column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import BigInteger, DateTime, Enum, MetaData, Numeric, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlalchemy.util import await_

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def enum_type(cls: type[enum.Enum], name: str) -> Enum:
    """An enum column stored as VARCHAR with a CHECK, not a native PostgreSQL ENUM: adding a
    value later is then an ordinary migration on both engines."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,
        values_callable=lambda members: [m.value for m in members],
    )


def largest_key(column_type: TypeEngine[Any]) -> int:
    """The largest integer key a column of this type holds on both engines (clients send keys
    in ids and cursors; one beyond the range must be refused, not sent to the database)."""
    return 2**63 - 1 if isinstance(column_type, BigInteger) else 2**31 - 1


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always zone-aware UTC, also on SQLite (which drops the zone).

    Naive datetimes are refused on the way in: a time without a zone is ambiguous on a
    plant floor that spans shifts and daylight-saving changes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: times must carry a zone")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        moment: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)


QUANTITY_SCALE = 6
_QUANTUM = Decimal(1).scaleb(-QUANTITY_SCALE)


class Quantity(TypeDecorator[Decimal]):
    """An exact decimal quantity with six places.

    PostgreSQL stores NUMERIC(18, 6). SQLite has no exact decimal type (NUMERIC there is a
    float), so it stores the value as an integer count of millionths: sums, comparisons and
    `quantity - :taken` in SQL stay exact on both engines.
    """

    impl = Numeric(18, QUANTITY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(18, QUANTITY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        exact = to_quantity(value)
        if dialect.name == "sqlite":
            return int(exact.scaleb(QUANTITY_SCALE))
        return exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-QUANTITY_SCALE).quantize(_QUANTUM)
        return Decimal(str(value)).quantize(_QUANTUM)

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return self


def to_quantity(value: Decimal | int | str) -> Decimal:
    """The value as a Decimal with six places; more places than that is an error, not rounding."""
    try:
        number = Decimal(value)
    except InvalidOperation as error:
        raise ValueError(f"not a number: {value!r}") from error
    if not number.is_finite():
        raise ValueError("quantities must be finite")
    exact = number.quantize(_QUANTUM)
    if exact != number:
        raise ValueError(f"at most {QUANTITY_SCALE} decimal places")
    return exact


def _sqlite_on_connect(synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level so that SQLAlchemy's "begin" event decides how a
    # transaction starts (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "foreign_keys=ON",
        "journal_mode=WAL",
        "busy_timeout=15000",
        f"synchronous={synchronous}",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Any, statement: str) -> None:
    # Straight to aiosqlite's worker thread in one round trip (execute and drop the cursor
    # there): `exec_driver_sql` takes three (open a cursor, execute, close it), and every
    # transaction begins here. Errors are raised as SQLAlchemy's, as `exec_driver_sql` does.
    driver = connection.connection.driver_connection
    try:
        await_(driver.execute_fetchall(statement))
    except sqlite3.Error as error:
        raise DBAPIError.instance(statement, None, error, sqlite3.Error) from error


def _sqlite_begin_immediate(connection: Any) -> None:
    # A writer takes the write lock up front. A deferred transaction that reads and then
    # writes fails at once with SQLITE_BUSY when another writer got in between; an
    # immediate one waits (busy_timeout) and then sees the other's commit.
    _sqlite_begin(connection, "BEGIN IMMEDIATE")


def _sqlite_begin_deferred(connection: Any) -> None:
    _sqlite_begin(connection, "BEGIN")


def _sqlite_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
    # The pool's reset on return (the engines are made with pool_reset_on_return=None), as a
    # ROLLBACK only when a transaction is still open. Sessions end theirs (COMMIT or ROLLBACK)
    # before they give the connection back, so the pool's own unconditional ROLLBACK was one
    # more round trip to the worker thread per session, for nothing.
    driver = record.driver_connection
    if state.asyncio_safe and driver is not None and driver.in_transaction:
        dbapi_connection.rollback()


class Database:
    """The engines and session factories of one process.

    `read()` gives a short read-only session; `write()` a session whose transaction commits
    when the block ends without error (use `backend.uow.transaction` for business changes).
    On SQLite, writes go through their own engine whose transactions begin IMMEDIATE.
    """

    def __init__(self, url: str, *, echo: bool = False, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.dialect_name = url.split(":", 1)[0].split("+", 1)[0]
        if self.dialect_name == "sqlite":
            self.engine = create_async_engine(url, echo=echo, pool_reset_on_return=None)
            self.read_engine = create_async_engine(url, echo=echo, pool_reset_on_return=None)
            for engine, begin in (
                (self.engine, _sqlite_begin_immediate),
                (self.read_engine, _sqlite_begin_deferred),
            ):
                if sqlite_synchronous not in ("FULL", "NORMAL"):
                    raise ValueError(f"sqlite_synchronous: {sqlite_synchronous!r}")
                event.listen(
                    engine.sync_engine,
                    "connect",
                    functools.partial(_sqlite_on_connect, sqlite_synchronous),
                )
                event.listen(engine.sync_engine, "begin", begin)
                event.listen(engine.sync_engine.pool, "reset", _sqlite_reset)
        else:
            self.engine = create_async_engine(
                url,
                echo=echo,
                # Pinged only after an idle spell (_ping_if_idle), not on every checkout.
                pool_pre_ping=False,
                # Connections are kept, not opened per burst: each one holds its prepared
                # statements (compiled reads), lost when an overflow connection is closed.
                pool_size=POOL_SIZE,
                max_overflow=POOL_OVERFLOW,
                connect_args=_connect_args(url),
            )
            event.listen(self.engine.sync_engine, "checkout", _ping_if_idle)
            event.listen(self.engine.sync_engine, "checkin", _note_checkin)
            self.read_engine = self.engine
        self._write_sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, autoflush=False
        )
        self._read_sessions = async_sessionmaker(
            self.read_engine, expire_on_commit=False, autoflush=False
        )

    @property
    def engines(self) -> list[AsyncEngine]:
        return [self.engine] if self.read_engine is self.engine else [self.engine, self.read_engine]

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading; it never commits and is closed (rolled back) at the end."""
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: COMMIT when the block succeeds, ROLLBACK otherwise."""
        async with self._write_sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        for engine in self.engines:
            await engine.dispose()


# Per process, on PostgreSQL: enough for 20-odd concurrent requests without opening and closing
# connections; a deployment of N processes needs N x (POOL_SIZE + POOL_OVERFLOW) connections.
POOL_SIZE = 25
POOL_OVERFLOW = 10


# A pooled connection used less than this long ago is taken as alive; one idle for longer is
# pinged before use (a restarted or failed-over database, a proxy that dropped it). A ping is
# three round trips (BEGIN, ";", ROLLBACK): on every checkout it cost ~7 % of a compiled read.
PING_AFTER_IDLE_S = 5.0


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    returned = record.info.get("mes_checked_in")
    if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_S:
        return
    try:
        dbapi_connection.ping()
    except Exception as error:
        # The pool drops this connection and checks out another (a new one if need be).
        raise DisconnectionError(f"a pooled connection is dead: {error}") from error


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["mes_checked_in"] = time.monotonic()


def _connect_args(url: str) -> dict[str, Any]:
    # asyncpg waits 60 s for a host that does not answer; say so sooner.
    return {"timeout": 10} if "+asyncpg" in url else {}


def migration_engine(url: str) -> AsyncEngine:
    """An engine for Alembic: no pool, SQLite pragmas applied."""
    engine = create_async_engine(url, poolclass=NullPool, connect_args=_connect_args(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_on_connect, "FULL"))
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
    return engine
