"""The `mes` command as a user runs it: what it prints, what it leaves in the database, and a
one-line reason (never a traceback) for every expected failure."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory

from backend.app import create_app
from backend.migrate import alembic_config, upgrade
from backend.settings import Settings

MES = Path(sys.executable).parent / "mes"
SECRET = "cli-test-secret-key-0123456789"


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    def one_line_error(self) -> str:
        """The failure's one line on stderr (asserting there is exactly one, and no traceback)."""
        assert self.returncode != 0, f"expected a failure; stdout: {self.stdout!r}"
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.stderr}"
        return lines[0]


def mes_env(**settings: str | None) -> dict[str, str]:
    """The environment without any MES_* of the caller's, plus `settings` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MES_")}
    env.update({k: v for k, v in settings.items() if v is not None})
    return env


Run = Callable[..., Result]


@pytest.fixture
def run_mes(tmp_path: Path) -> Run:
    """`run_mes("db", "upgrade", MES_DATABASE_URL=...)`: runs `mes` in tmp_path, bounded."""
    assert MES.exists(), f"{MES} is not installed: pip install -e ."

    def run(*args: str, timeout: float = 60, **settings: str | None) -> Result:
        done = subprocess.run(
            [str(MES), *args],
            cwd=tmp_path,  # no .env of the project's is read
            env=mes_env(**settings),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


ROOT = Path(__file__).resolve().parents[2]
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()

LOGIN = """
mutation($username: String!, $password: String!) {
  login(username: $username, password: $password) {
    token user { username displayName roles } errors { code field message }
  }
}"""


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A migrated, empty SQLite database file."""
    path = tmp_path / "mes.db"
    upgrade(sqlite_url(path))
    return path


@pytest.fixture
def env(database: Path) -> dict[str, str]:
    return {"MES_DATABASE_URL": sqlite_url(database), "MES_SECRET_KEY": SECRET}


@asynccontextmanager
async def served(database: Path, **settings_: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app on that database, in this process, with the same secret key as the command."""
    settings = Settings(
        database_url=sqlite_url(database),
        secret_key=SECRET,
        _env_file=None,  # type: ignore[call-arg]
        **settings_,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://mes.test") as client,
    ):
        yield client


async def gql(
    client: httpx.AsyncClient, query: str, token: str | None = None, **variables: Any
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as conn:
        return conn.execute(sql).fetchall()


# ---------------------------------------------------------------- db upgrade


def test_db_upgrade_migrates_an_empty_database_and_again_changes_nothing(
    run_mes: Run, tmp_path: Path
) -> None:
    path = tmp_path / "new.db"
    settings = {"MES_DATABASE_URL": sqlite_url(path)}

    first = run_mes("db", "upgrade", **settings)
    assert first.returncode == 0, first.stderr
    assert HEAD is not None
    assert HEAD in first.stdout
    assert rows(path, "SELECT version_num FROM alembic_version") == [(HEAD,)]

    second = run_mes("db", "upgrade", **settings)
    assert second.returncode == 0, second.stderr
    assert HEAD in second.stdout
    assert rows(path, "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_db_upgrade_on_a_database_that_cannot_be_opened(run_mes: Run, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "no-such-folder" / "mes.db")
    line = run_mes("db", "upgrade", MES_DATABASE_URL=url).one_line_error()
    assert "cannot reach the database" in line


# ---------------------------------------------------------------- users


async def test_create_user_then_sign_in(run_mes: Run, env: dict[str, str], database: Path) -> None:
    created = run_mes(
        "create-user", "alice", "--password", "alice-password-1", "--role", "SUPERVISOR",
        "--role", "QUALITY", "--display-name", "Alice Example", **env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "alice" in created.stdout

    async with served(database) as client:
        body = await gql(client, LOGIN, username="alice", password="alice-password-1")
        login = body["data"]["login"]
        assert login["errors"] == []
        assert login["user"] == {
            "username": "alice",
            "displayName": "Alice Example",
            "roles": ["SUPERVISOR", "QUALITY"],
        }
        me = await gql(client, "{ me { username } }", token=login["token"])
        assert me == {"data": {"me": {"username": "alice"}}}

        wrong = await gql(client, LOGIN, username="alice", password="not-her-password")
        assert wrong["data"]["login"]["token"] is None
        assert wrong["data"]["login"]["errors"]

    again = run_mes("create-user", "alice", "--password", "another-pass", "--role", "ADMIN", **env)
    assert "already exists" in again.one_line_error()
    assert rows(database, "SELECT roles FROM users WHERE username = 'alice'") == [
        ('["SUPERVISOR", "QUALITY"]',)
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--password", "long-enough-1", "--role", "WIZARD"], "invalid choice: 'WIZARD'"),
        (["--password", "short", "--role", "OPERATOR"], "at least 8 characters"),
        (["--password", "long-enough-1"], "--role"),
    ],
    ids=["unknown-role", "short-password", "no-role"],
)
def test_create_user_refuses_bad_arguments(
    run_mes: Run, env: dict[str, str], database: Path, args: list[str], says: str
) -> None:
    line = run_mes("create-user", "bob", *args, **env).one_line_error()
    assert says in line
    assert rows(database, "SELECT count(*) FROM users") == [(0,)]


def test_create_user_on_an_unmigrated_database(run_mes: Run, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    line = run_mes(
        "create-user", "carol", "--password", "long-enough-1", "--role", "ADMIN",
        MES_DATABASE_URL=sqlite_url(path), MES_SECRET_KEY=SECRET,
    ).one_line_error()  # fmt: skip
    assert "mes db upgrade" in line


# ---------------------------------------------------------------- API tokens


async def test_api_token_create_list_use_and_revoke(
    run_mes: Run, env: dict[str, str], database: Path
) -> None:
    created = run_mes("create-token", "erp-link", "--role", "ERP", **env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert len(token.splitlines()) == 1
    assert len(token) >= 32

    listed = run_mes("list-tokens", **env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["erp-link\tERP\tactive"]
    assert token not in listed.stdout

    query = "{ materials { totalCount } }"
    async with served(database, auth_cache_seconds=0.3) as client:
        assert await gql(client, query, token=token) == {"data": {"materials": {"totalCount": 0}}}

        revoked = run_mes("revoke-token", "erp-link", **env)
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked" in revoked.stdout
        await asyncio.sleep(0.35)  # the server trusts a token it looked up for 0.3 s

        refused = await gql(client, query, token=token)
        assert refused["data"] is None
        assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    listed = run_mes("list-tokens", **env)
    [line] = listed.stdout.splitlines()
    assert line.startswith("erp-link\tERP\trevoked ")

    assert (
        "no API token named 'nobody'" in run_mes("revoke-token", "nobody", **env).one_line_error()
    )


# ---------------------------------------------------------------- serve, worker: refusals


def test_serve_without_a_secret_key(run_mes: Run, env: dict[str, str]) -> None:
    line = run_mes("serve", "--port", "1", **{**env, "MES_SECRET_KEY": None}).one_line_error()
    assert "MES_SECRET_KEY" in line


def test_serve_on_an_unmigrated_database(run_mes: Run, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    line = run_mes(
        "serve", "--port", "1", MES_DATABASE_URL=sqlite_url(path), MES_SECRET_KEY=SECRET
    ).one_line_error()
    assert "revision none" in line
    assert "run `mes db upgrade`" in line


def test_serve_without_a_database_file_creates_none(run_mes: Run, tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    line = run_mes(
        "serve", "--port", "1", MES_DATABASE_URL=sqlite_url(path), MES_SECRET_KEY=SECRET
    ).one_line_error()
    assert "run `mes db upgrade`" in line
    assert not path.exists()


def test_serve_with_an_unreachable_postgres(run_mes: Run) -> None:
    url = "postgresql+asyncpg://mes:hush-hush-pw@127.0.0.1:1/mes"
    line = run_mes(
        "serve", "--port", "1", MES_DATABASE_URL=url, MES_SECRET_KEY=SECRET
    ).one_line_error()
    assert "cannot reach the database postgresql+asyncpg://mes:***@127.0.0.1:1/mes" in line
    assert "hush-hush-pw" not in line


def test_serve_with_bad_arguments(run_mes: Run, env: dict[str, str]) -> None:
    assert "--port" in run_mes("serve", "--port", "eighty", **env).one_line_error()
    assert "--workers" in run_mes("serve", "--workers", "0", **env).one_line_error()


def test_worker_without_redis(run_mes: Run, env: dict[str, str]) -> None:
    line = run_mes("worker", **env).one_line_error()
    assert "MES_REDIS_URL" in line


# ---------------------------------------------------------------- export-schema


def test_export_schema_prints_the_checked_in_schema(run_mes: Run) -> None:
    exported = run_mes("export-schema")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == (ROOT / "schema.graphql").read_text(), "run `make schema`"
