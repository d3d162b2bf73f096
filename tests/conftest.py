"""Fixtures: a migrated database (SQLite, or PostgreSQL when MES_TEST_DATABASE_URL is set),
the app on it (Redis broadcast when MES_TEST_REDIS_URL is set), a clean state per test, and
helpers to call GraphQL as a user with given roles."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend.app import create_app
from backend.auth import service as auth_service
from backend.auth.models import User
from backend.db import Base, Database
from backend.migrate import upgrade
from backend.principal import Role
from backend.settings import Settings

# The product's SQLite default is synchronous=FULL (an answered change survives a power cut);
# the suite's throwaway databases need not, and every commit's fsync would slow it down. Servers
# the tests start as processes inherit this. tests/test_db_durability.py checks the default.
os.environ.setdefault("MES_SQLITE_SYNCHRONOUS", "NORMAL")

PG_URL = os.environ.get("MES_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("MES_TEST_REDIS_URL")
ON_POSTGRES = bool(PG_URL)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL: runs in the PostgreSQL + Redis leg")
    skip_redis = pytest.mark.skip(reason="needs Redis: runs in the PostgreSQL + Redis leg")
    for item in items:
        if "postgres" in item.keywords and not ON_POSTGRES:
            item.add_marker(skip_pg)
        if (
            "redis" in item.keywords
            and not REDIS_URL
            and "allow_redis_any_leg" not in item.keywords
        ):
            item.add_marker(skip_redis)


def _recreate_postgres(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql+psycopg", database="postgres")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database migrated to head, made once per test session."""
    if PG_URL:
        _recreate_postgres(PG_URL)
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'mes.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        secret_key="test-secret-key-0123456789",
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    yield database
    await database.dispose()


async def _truncate(db: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with db.write() as session:
        if db.dialect_name == "postgresql":
            await session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                await session.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> None:
    """Every test that touches the database starts from empty tables."""
    if "db" in request.fixturenames or "app" in request.fixturenames:
        database: Database = request.getfixturevalue("db")
        await _truncate(database)
    if "app" in request.fixturenames:
        # The session's app trusts tokens it has seen for a few seconds; after a truncation
        # a new user gets an old id (and, within the same second, the same token).
        request.getfixturevalue("app").state.services.principals.clear()


@pytest.fixture(scope="session")
async def app(settings: Settings, db: Database) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://mes.test"
    ) as c:
        yield c


_PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def password_hash() -> str:
    return auth_service.hash_password(_PASSWORD)


class Gql:
    """Calls /graphql as someone; returns the parsed JSON body."""

    def __init__(self, client: httpx.AsyncClient, token: str | None = None) -> None:
        self.client, self.token = client, token

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers, **kw
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of a call that must not fail at the top level."""
        body = await self(query, variables)
        assert "errors" not in body, body["errors"]
        result: dict[str, Any] = body["data"]
        return result


@pytest.fixture
def make_user(
    db: Database, settings: Settings, password_hash: str
) -> Callable[..., Awaitable[tuple[User, str]]]:
    """Creates a user with the given roles straight in the database; returns (user, token)."""

    async def make(
        username: str, *roles: Role, display_name: str | None = None
    ) -> tuple[User, str]:
        async with db.write() as session:
            user = User(
                username=username,
                display_name=display_name or username.title(),
                password_hash=password_hash,
                roles=[r.value for r in roles],
                active=True,
            )
            session.add(user)
        return user, auth_service.issue_user_token(settings, user)

    return make


@pytest.fixture
def as_role(
    client: httpx.AsyncClient, make_user: Callable[..., Awaitable[tuple[User, str]]]
) -> Callable[..., Awaitable[Gql]]:
    """`gql = await as_role(Role.ERP)`: a GraphQL caller signed in with those roles."""
    counter = iter(range(1_000_000))

    async def make(*roles: Role, username: str | None = None) -> Gql:
        name = username or "-".join(r.value.lower() for r in roles) + f"-{next(counter)}"
        _, token = await make_user(name, *roles)
        return Gql(client, token)

    return make


@pytest.fixture
def anonymous(client: httpx.AsyncClient) -> Gql:
    return Gql(client)


@pytest.fixture
def password() -> str:
    return _PASSWORD


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return ROOT
