"""Accounts: `createUser` and `createApiToken`, and revoking API tokens."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from backend.audit.models import AuditEntry
from backend.auth import service as auth_service
from backend.auth.models import ApiToken, User
from backend.db import Database
from backend.errors import DomainError
from backend.principal import SYSTEM, Role
from backend.settings import Settings
from backend.uow import transaction

Gql = Any  # tests/conftest.py's caller: `await gql(query, variables)`, `await gql.data(query)`
AsRole = Callable[..., Awaitable[Gql]]

CREATE_USER = """
mutation CreateUser($input: CreateUserInput!) {
  createUser(input: $input) {
    user { id username displayName roles }
    errors { code message field }
  }
}
"""
CREATE_TOKEN = """
mutation CreateToken($input: CreateApiTokenInput!) {
  createApiToken(input: $input) { token errors { code message field } }
}
"""
LOGIN = """
mutation Login($u: String!, $p: String!) {
  login(username: $u, password: $p) { token user { username roles } errors { code message } }
}
"""
UPSERT_MATERIAL = """
mutation Upsert($code: String!) {
  upsertMaterials(input: [
    {code: $code, name: "Flour", kind: RAW, unit: "kg", lotControlled: true}
  ]) {
    materials { code }
    errors { code message field }
  }
}
"""
NOT_ADMIN = [r for r in Role if r is not Role.ADMIN]


def bearer(anonymous: Gql, token: str) -> Gql:
    return type(anonymous)(anonymous.client, token)


def user_input(
    username: str = "newbie",
    password: str = "s3cret-enough",
    roles: list[str] | None = None,
    display_name: str = "New Bie",
) -> dict[str, Any]:
    return {
        "input": {
            "username": username,
            "displayName": display_name,
            "password": password,
            "roles": ["OPERATOR"] if roles is None else roles,
        }
    }


async def count(db: Database, model: type[Any]) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def all_cells(db: Database, table: str) -> list[str]:
    """Every value in `table`, as text."""
    async with db.read() as session:
        rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
    return [str(value) for row in rows for value in row]


# ---------------------------------------------------------------- createUser


async def test_admin_creates_a_user_who_can_then_sign_in(
    as_role: AsRole, anonymous: Gql, db: Database
) -> None:
    admin = await as_role(Role.ADMIN)
    password = "s3cret-enough"

    data = await admin.data(
        CREATE_USER,
        user_input(
            username="  carol ", password=password, roles=["QUALITY", "OPERATOR", "QUALITY"]
        ),
    )

    payload = data["createUser"]
    assert payload["errors"] == []
    assert payload["user"]["username"] == "carol"
    assert payload["user"]["displayName"] == "New Bie"
    assert payload["user"]["roles"] == ["OPERATOR", "QUALITY"]
    async with db.read() as session:
        user = await session.scalar(select(User).where(User.username == "carol"))
    assert user is not None
    assert user.password_hash.startswith("$argon2")
    assert auth_service.verify_password(user.password_hash, password)
    assert not any(password in cell for cell in await all_cells(db, "users"))

    signed_in = (await anonymous.data(LOGIN, {"u": "carol", "p": password}))["login"]
    assert signed_in["errors"] == []
    assert signed_in["user"] == {"username": "carol", "roles": ["OPERATOR", "QUALITY"]}


@pytest.mark.parametrize("role", NOT_ADMIN, ids=str)
async def test_create_user_is_forbidden_without_admin(
    as_role: AsRole, db: Database, role: Role
) -> None:
    caller = await as_role(role)
    users_before = await count(db, User)

    data = await caller.data(CREATE_USER, user_input())

    assert data["createUser"]["user"] is None
    assert [e["code"] for e in data["createUser"]["errors"]] == ["FORBIDDEN"]
    assert await count(db, User) == users_before
    assert await count(db, AuditEntry) == 0


async def test_create_user_anonymously_is_a_top_level_error_with_no_data(
    anonymous: Gql, db: Database
) -> None:
    body = await anonymous(CREATE_USER, user_input())
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await count(db, User) == 0
    assert await count(db, AuditEntry) == 0


async def test_password_needs_eight_characters(as_role: AsRole, db: Database) -> None:
    admin = await as_role(Role.ADMIN)

    short = (await admin.data(CREATE_USER, user_input(password="7-chars")))["createUser"]
    assert short["user"] is None
    [error] = short["errors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == "password"
    assert "8" in error["message"]
    assert await count(db, User) == 1  # only the admin

    exactly = (await admin.data(CREATE_USER, user_input(password="8-chars!")))["createUser"]
    assert exactly["errors"] == []


async def test_duplicate_user_name_is_a_conflict(as_role: AsRole, db: Database) -> None:
    admin = await as_role(Role.ADMIN)
    first = (await admin.data(CREATE_USER, user_input(username="dave")))["createUser"]
    assert first["errors"] == []

    again = (await admin.data(CREATE_USER, user_input(username=" dave ")))["createUser"]

    assert again["user"] is None
    assert [(e["code"], e["field"]) for e in again["errors"]] == [("CONFLICT", "username")]
    assert await count(db, User) == 2
    assert await count(db, AuditEntry) == 1


async def test_invalid_input_is_reported_field_by_field(as_role: AsRole, db: Database) -> None:
    admin = await as_role(Role.ADMIN)

    no_roles = (await admin.data(CREATE_USER, user_input(roles=[])))["createUser"]
    assert [(e["code"], e["field"]) for e in no_roles["errors"]] == [("INVALID_INPUT", "roles")]

    everything = (
        await admin.data(
            CREATE_USER, user_input(username="no spaces allowed", password="short", roles=[])
        )
    )["createUser"]
    assert sorted((e["code"], e["field"]) for e in everything["errors"]) == [
        ("INVALID_INPUT", "password"),
        ("INVALID_INPUT", "roles"),
        ("INVALID_INPUT", "username"),
    ]
    assert await count(db, User) == 1
    assert await count(db, AuditEntry) == 0


async def test_concurrent_creates_of_one_user_name_give_one_user_and_conflicts(
    as_role: AsRole, db: Database
) -> None:
    admin = await as_role(Role.ADMIN)

    results = await asyncio.gather(
        *(admin.data(CREATE_USER, user_input(username="erin")) for _ in range(4))
    )

    payloads = [r["createUser"] for r in results]
    assert sum(1 for p in payloads if p["errors"] == []) == 1
    conflicts = [p["errors"] for p in payloads if p["errors"]]
    assert (
        conflicts
        == [[{"code": "CONFLICT", "message": "user 'erin' already exists", "field": "username"}]]
        * 3
    )
    async with db.read() as session:
        assert (
            await session.scalar(
                select(func.count()).select_from(User).where(User.username == "erin")
            )
            == 1
        )
    assert await count(db, AuditEntry) == 1


# ---------------------------------------------------------------- API tokens


async def test_api_token_is_shown_once_works_with_its_roles_and_only_its_hash_is_stored(
    as_role: AsRole, anonymous: Gql, db: Database
) -> None:
    admin = await as_role(Role.ADMIN)

    payload = (await admin.data(CREATE_TOKEN, {"input": {"name": "erp-link", "roles": ["ERP"]}}))[
        "createApiToken"
    ]

    assert payload["errors"] == []
    token = payload["token"]
    assert token
    erp = bearer(anonymous, token)
    assert (await erp.data(UPSERT_MATERIAL, {"code": "FLOUR"}))["upsertMaterials"] == {
        "materials": [{"code": "FLOUR"}],
        "errors": [],
    }
    forbidden = (await erp.data(CREATE_USER, user_input()))["createUser"]
    assert [e["code"] for e in forbidden["errors"]] == ["FORBIDDEN"]
    audit = await erp("{ auditTrail { totalCount } }")
    assert audit["data"] is None
    assert audit["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    digest = hashlib.sha256(token.encode()).hexdigest()
    cells = await all_cells(db, "api_tokens")
    assert digest in cells
    assert not any(token in cell for cell in cells)
    assert not any(token in cell for cell in await all_cells(db, "audit_entries"))
    # The material was changed by the token: the audit trail names it.
    async with db.read() as session:
        actors = list(await session.scalars(select(AuditEntry.actor).order_by(AuditEntry.sequence)))
    assert actors[-1] == "erp-link"


@pytest.mark.parametrize("role", NOT_ADMIN, ids=str)
async def test_create_api_token_is_forbidden_without_admin(
    as_role: AsRole, db: Database, role: Role
) -> None:
    caller = await as_role(role)
    payload = (await caller.data(CREATE_TOKEN, {"input": {"name": "x", "roles": ["ERP"]}}))[
        "createApiToken"
    ]
    assert payload["token"] is None
    assert [e["code"] for e in payload["errors"]] == ["FORBIDDEN"]
    assert await count(db, ApiToken) == 0
    assert await count(db, AuditEntry) == 0


async def test_duplicate_token_name_and_missing_roles_are_refused(
    as_role: AsRole, db: Database
) -> None:
    admin = await as_role(Role.ADMIN)
    first = (await admin.data(CREATE_TOKEN, {"input": {"name": "bridge", "roles": ["EQUIPMENT"]}}))[
        "createApiToken"
    ]
    assert first["errors"] == []

    again = (await admin.data(CREATE_TOKEN, {"input": {"name": " bridge", "roles": ["ERP"]}}))[
        "createApiToken"
    ]
    assert again["token"] is None
    assert [(e["code"], e["field"]) for e in again["errors"]] == [("CONFLICT", "name")]

    no_roles = (await admin.data(CREATE_TOKEN, {"input": {"name": "other", "roles": []}}))[
        "createApiToken"
    ]
    assert [(e["code"], e["field"]) for e in no_roles["errors"]] == [("INVALID_INPUT", "roles")]
    assert await count(db, ApiToken) == 1


async def test_concurrent_creates_of_one_token_name_give_one_token(
    as_role: AsRole, db: Database
) -> None:
    admin = await as_role(Role.ADMIN)
    results = await asyncio.gather(
        *(admin.data(CREATE_TOKEN, {"input": {"name": "erp", "roles": ["ERP"]}}) for _ in range(5))
    )
    payloads = [r["createApiToken"] for r in results]
    assert sum(1 for p in payloads if p["token"]) == 1
    assert sorted(e["code"] for p in payloads for e in p["errors"]) == ["CONFLICT"] * 4
    assert await count(db, ApiToken) == 1


async def _make_token(admin: Gql, name: str, *roles: str) -> str:
    payload = (await admin.data(CREATE_TOKEN, {"input": {"name": name, "roles": list(roles)}}))[
        "createApiToken"
    ]
    assert payload["errors"] == []
    token: str = payload["token"]
    return token


async def _refused(caller: Gql) -> bool:
    body = await caller("{ materials { totalCount } }")
    return bool(
        body["data"] is None and body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    )


AUTH_CACHE_SECONDS = 0.3


@pytest.fixture
def short_auth_cache(app: Any, monkeypatch: pytest.MonkeyPatch) -> float:
    """The app trusts a token it has looked up for AUTH_CACHE_SECONDS (default 5 s)."""
    services = app.state.services
    settings = services.settings.model_copy(update={"auth_cache_seconds": AUTH_CACHE_SECONDS})
    monkeypatch.setattr(services, "settings", settings)
    return AUTH_CACHE_SECONDS


async def _refused_after_the_cache(caller: Gql, cache_seconds: float) -> None:
    """Still served at once (the process trusts what it looked up), refused once the
    cache time has passed."""
    assert not await _refused(caller)
    await asyncio.sleep(cache_seconds + 0.05)
    assert await _refused(caller)


async def test_a_revoked_token_stops_working(
    as_role: AsRole, anonymous: Gql, app: Any, db: Database, short_auth_cache: float
) -> None:
    admin = await as_role(Role.ADMIN)
    token = await _make_token(admin, "erp-link", "ERP")
    other = await _make_token(admin, "mes-bridge", "EQUIPMENT")
    erp = bearer(anonymous, token)
    assert (await erp.data("{ materials { totalCount } }"))["materials"]["totalCount"] == 0

    async with transaction(db, SYSTEM) as uow:
        await auth_service.revoke_api_token(uow, "erp-link")

    await _refused_after_the_cache(erp, short_auth_cache)
    upsert = await erp(UPSERT_MATERIAL, {"code": "FLOUR"})
    assert upsert["data"] is None
    assert not await _refused(bearer(anonymous, other))
    async with db.read() as session:
        last = await session.scalar(
            select(AuditEntry).order_by(AuditEntry.sequence.desc()).limit(1)
        )
    assert last is not None
    assert (last.action, last.entity_type, last.actor) == ("token.revoke", "ApiToken", "system")


async def test_a_new_token_works_at_once_after_an_unknown_one_was_refused(
    as_role: AsRole, anonymous: Gql, app: Any
) -> None:
    """Only valid tokens are remembered: a refusal is never cached."""
    admin = await as_role(Role.ADMIN)
    assert await _refused(bearer(anonymous, "mes_not-a-token"))
    token = await _make_token(admin, "erp-link", "ERP")
    assert not await _refused(bearer(anonymous, token))


async def test_with_no_auth_cache_a_revoked_token_is_refused_at_once(
    as_role: AsRole, anonymous: Gql, app: Any, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = app.state.services
    monkeypatch.setattr(
        services, "settings", services.settings.model_copy(update={"auth_cache_seconds": 0})
    )
    admin = await as_role(Role.ADMIN)
    erp = bearer(anonymous, await _make_token(admin, "erp-link", "ERP"))
    assert not await _refused(erp)
    async with transaction(db, SYSTEM) as uow:
        await auth_service.revoke_api_token(uow, "erp-link")
    assert await _refused(erp)


async def test_revoking_an_unknown_token_is_not_found(db: Database) -> None:
    with pytest.raises(DomainError) as raised:
        async with transaction(db, SYSTEM) as uow:
            await auth_service.revoke_api_token(uow, "nope")
    assert [(p.code, p.field) for p in raised.value.problems] == [("NOT_FOUND", "name")]


def _mes_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MES_")}
    env["MES_DATABASE_URL"] = settings.database_url
    env["MES_SECRET_KEY"] = settings.require_secret_key()
    return env


async def _run_mes(
    repo_root: Path, settings: Settings, cwd: Path, *args: str
) -> tuple[int, str, str]:
    mes = Path(sys.executable).parent / "mes"
    process = await asyncio.create_subprocess_exec(
        mes,
        *args,
        env=_mes_env(settings),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_mes_revoke_token_from_the_command_line(
    as_role: AsRole,
    anonymous: Gql,
    settings: Settings,
    repo_root: Path,
    tmp_path: Path,
    short_auth_cache: float,
) -> None:
    admin = await as_role(Role.ADMIN)
    token = await _make_token(admin, "erp-link", "ERP")
    erp = bearer(anonymous, token)
    assert not await _refused(erp)

    code, out, err = await _run_mes(repo_root, settings, tmp_path, "revoke-token", "erp-link")

    assert code == 0, err
    assert "erp-link" in out
    await asyncio.sleep(short_auth_cache + 0.05)  # the `mes` process cannot tell the server
    assert await _refused(erp)

    code, out, err = await _run_mes(repo_root, settings, tmp_path, "revoke-token", "no-such-token")
    assert code != 0
    assert "no-such-token" in err
    assert "Traceback" not in err
