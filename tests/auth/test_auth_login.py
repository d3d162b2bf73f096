"""Sign-in: `login`, bearer user tokens, and the per-user-name throttle."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select, update

from backend.auth.models import LoginThrottle, User
from backend.db import Database, utcnow
from backend.principal import Role
from backend.settings import Settings

LOGIN = """
mutation Login($u: String!, $p: String!) {
  login(username: $u, password: $p) {
    token
    user { username displayName roles }
    errors { code message field }
  }
}
"""
ME = "{ me { username roles } }"
LOGIN_FAILED = "Unknown user name or wrong password."

MakeUser = Callable[..., Awaitable[tuple[User, str]]]
Gql = Any  # tests/conftest.py's caller: `await gql(query, variables)`, `await gql.data(query)`


def bearer(anonymous: Gql, token: str) -> Gql:
    """A caller like `anonymous`, sending `token` as its bearer token."""
    return type(anonymous)(anonymous.client, token)


async def login(anonymous: Gql, username: str, password: str) -> dict[str, Any]:
    data = await anonymous.data(LOGIN, {"u": username, "p": password})
    result: dict[str, Any] = data["login"]
    return result


async def failures_of(db: Database, username: str) -> int | None:
    async with db.read() as session:
        row = await session.get(LoginThrottle, username)
        return None if row is None else row.failures


async def set_last_failure(db: Database, username: str, seconds_ago: float) -> None:
    """Dates the last failed sign-in of `username` `seconds_ago`, as if that time had passed."""
    async with db.write() as session:
        result = await session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.username == username)
            .values(last_failure_at=utcnow() - dt.timedelta(seconds=seconds_ago))
        )
        assert result.rowcount == 1  # type: ignore[attr-defined]


def throttled(result: dict[str, Any]) -> bool:
    return (
        result["token"] is None
        and len(result["errors"]) == 1
        and result["errors"][0]["code"] == "INVALID_INPUT"
        and "too many failed sign-ins" in result["errors"][0]["message"].lower()
    )


async def test_right_password_gives_a_token_that_works_for_me(
    anonymous: Gql, make_user: MakeUser, password: str
) -> None:
    await make_user("alice", Role.OPERATOR, Role.QUALITY, display_name="Alice A.")

    result = await login(anonymous, "alice", password)

    assert result["errors"] == []
    assert result["user"] == {
        "username": "alice",
        "displayName": "Alice A.",
        "roles": ["OPERATOR", "QUALITY"],
    }
    assert result["token"]
    me = await bearer(anonymous, result["token"]).data(ME)
    assert me["me"] == {"username": "alice", "roles": ["OPERATOR", "QUALITY"]}


async def test_user_name_is_trimmed_at_sign_in(
    anonymous: Gql, make_user: MakeUser, password: str
) -> None:
    await make_user("alice", Role.OPERATOR)
    result = await login(anonymous, "  alice ", password)
    assert result["errors"] == []
    assert result["user"]["username"] == "alice"


async def test_unknown_user_and_wrong_password_answer_alike(
    anonymous: Gql, make_user: MakeUser
) -> None:
    await make_user("alice", Role.OPERATOR)

    unknown = await login(anonymous, "nobody", "whatever-password")
    wrong = await login(anonymous, "alice", "wrong-password")

    assert unknown == wrong
    assert unknown["token"] is None
    assert unknown["user"] is None
    [error] = unknown["errors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["message"] == LOGIN_FAILED


async def test_inactive_user_cannot_sign_in_and_its_tokens_stop_working(
    anonymous: Gql, db: Database, make_user: MakeUser, password: str
) -> None:
    user, token = await make_user("alice", Role.OPERATOR)
    async with db.write() as session:
        await session.execute(update(User).where(User.id == user.id).values(active=False))

    result = await login(anonymous, "alice", password)
    assert result["token"] is None
    assert result["errors"][0]["message"] == LOGIN_FAILED
    body = await bearer(anonymous, token)(ME)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_after_the_free_failures_even_the_right_password_waits_for_the_delay(
    anonymous: Gql, db: Database, settings: Settings, make_user: MakeUser, password: str
) -> None:
    await make_user("alice", Role.OPERATOR)
    free = settings.login_free_failures
    assert free == 3

    for attempt in range(free):
        result = await login(anonymous, "alice", f"wrong-{attempt}")
        assert result["errors"][0]["message"] == LOGIN_FAILED
    assert await failures_of(db, "alice") == free

    refused = await login(anonymous, "alice", password)
    assert throttled(refused), refused
    assert refused["user"] is None
    assert "try again in" in refused["errors"][0]["message"]
    # A refused attempt does not check the password, and counts no further failure.
    assert await failures_of(db, "alice") == free

    await set_last_failure(db, "alice", 0)  # the first delay is 5 s: not over yet
    assert throttled(await login(anonymous, "alice", password))

    await set_last_failure(db, "alice", 5.5)
    result = await login(anonymous, "alice", password)
    assert result["errors"] == []
    assert result["token"]


async def test_the_delay_grows_with_each_further_failure(
    anonymous: Gql, db: Database, settings: Settings, make_user: MakeUser, password: str
) -> None:
    await make_user("alice", Role.OPERATOR)
    for attempt in range(settings.login_free_failures):
        await login(anonymous, "alice", f"wrong-{attempt}")
    await set_last_failure(db, "alice", 5.5)
    # Allowed again, but wrong: the next delay (10 s) is longer than the one before (5 s).
    result = await login(anonymous, "alice", "wrong-again")
    assert result["errors"][0]["message"] == LOGIN_FAILED
    assert await failures_of(db, "alice") == settings.login_free_failures + 1
    await set_last_failure(db, "alice", 5.0)
    assert throttled(await login(anonymous, "alice", password))
    await set_last_failure(db, "alice", 10.5)
    assert (await login(anonymous, "alice", password))["errors"] == []


async def test_success_clears_the_failure_count(
    anonymous: Gql, db: Database, settings: Settings, make_user: MakeUser, password: str
) -> None:
    await make_user("alice", Role.OPERATOR)
    free = settings.login_free_failures
    for attempt in range(free - 1):
        await login(anonymous, "alice", f"wrong-{attempt}")
    assert await failures_of(db, "alice") == free - 1

    assert (await login(anonymous, "alice", password))["errors"] == []
    assert await failures_of(db, "alice") is None

    # The count starts again from zero: free - 1 more failures still leave sign-in open.
    for attempt in range(free - 1):
        await login(anonymous, "alice", f"wrong-{attempt}")
    assert (await login(anonymous, "alice", password))["errors"] == []


async def test_throttling_one_user_name_leaves_the_others_alone(
    anonymous: Gql, settings: Settings, make_user: MakeUser, password: str
) -> None:
    await make_user("alice", Role.OPERATOR)
    await make_user("bob", Role.OPERATOR)
    for attempt in range(settings.login_free_failures):
        await login(anonymous, "alice", f"wrong-{attempt}")
    assert throttled(await login(anonymous, "alice", password))

    result = await login(anonymous, "bob", password)
    assert result["errors"] == []
    assert result["user"]["username"] == "bob"


async def test_unknown_user_names_are_throttled_like_known_ones(
    anonymous: Gql, settings: Settings
) -> None:
    for attempt in range(settings.login_free_failures):
        result = await login(anonymous, "ghost", f"wrong-{attempt}")
        assert result["errors"][0]["message"] == LOGIN_FAILED
    assert throttled(await login(anonymous, "ghost", "anything-at-all"))


async def test_concurrent_failures_are_all_counted(
    anonymous: Gql, db: Database, settings: Settings, make_user: MakeUser
) -> None:
    """Guesses sent at once must not slip past the throttle (nor fail with a fault)."""
    await make_user("alice", Role.OPERATOR)
    free = settings.login_free_failures
    results = await asyncio.gather(
        *(login(anonymous, "alice", f"guess-{i}") for i in range(free + 5))
    )

    checked = [r for r in results if r["errors"][0]["message"] == LOGIN_FAILED]
    refused = [r for r in results if throttled(r)]
    assert len(checked) == free, [r["errors"][0]["message"] for r in results]
    assert len(refused) == 5
    assert await failures_of(db, "alice") == free
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(LoginThrottle)) == 1


# ---------------------------------------------------------------- user tokens


def _token_signed_at(
    settings: Settings, user_id: int, at: dt.datetime, secret: str | None = None
) -> str:
    """A user token as the server makes it, but signed at `at` (and maybe with another key)."""

    class SignedAt(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(at.timestamp())

    key = secret if secret is not None else settings.require_secret_key()
    serializer = URLSafeTimedSerializer(key, salt="mes.user-token", signer=SignedAt)
    return str(serializer.dumps({"u": user_id}))


async def test_a_token_within_its_lifetime_works_and_an_expired_one_is_refused(
    anonymous: Gql, settings: Settings, make_user: MakeUser
) -> None:
    user, _ = await make_user("alice", Role.OPERATOR)
    ttl = dt.timedelta(seconds=settings.token_ttl_seconds)

    fresh = _token_signed_at(settings, user.id, utcnow() - ttl + dt.timedelta(minutes=1))
    assert (await bearer(anonymous, fresh).data(ME))["me"]["username"] == "alice"

    expired = _token_signed_at(settings, user.id, utcnow() - ttl - dt.timedelta(seconds=5))
    body = await bearer(anonymous, expired)(ME)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_token_signed_with_another_secret_is_refused(
    anonymous: Gql, settings: Settings, make_user: MakeUser
) -> None:
    user, _ = await make_user("alice", Role.ADMIN)
    forged = _token_signed_at(settings, user.id, utcnow(), secret="not-the-server-secret-key")
    body = await bearer(anonymous, forged)(ME)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_malformed_and_missing_tokens_are_refused(anonymous: Gql) -> None:
    for caller in (
        bearer(anonymous, "garbage"),
        bearer(anonymous, "mes_not-a-real-api-token"),
        anonymous,
    ):
        body = await caller(ME)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # Not a bearer scheme at all.
    response = await anonymous.client.post(
        "/graphql", json={"query": ME}, headers={"Authorization": "Basic eDp5"}
    )
    assert response.json()["data"] is None


async def test_me_is_null_for_an_api_token_but_reads_work(
    anonymous: Gql, as_role: Callable[..., Awaitable[Gql]]
) -> None:
    admin = await as_role(Role.ADMIN)
    data = await admin.data(
        'mutation { createApiToken(input: {name: "erp", roles: [ERP]}) { token errors { code } } }'
    )
    token = data["createApiToken"]["token"]
    body = await bearer(anonymous, token).data("{ me { username } materials { totalCount } }")
    assert body == {"me": None, "materials": {"totalCount": 0}}


async def test_the_housekeeping_job_forgets_day_old_failures_only(
    anonymous: Gql, db: Database, settings: Settings, make_user: MakeUser
) -> None:
    from backend.auth.tasks import prune_login_throttle
    from backend.events import InProcessBroadcast
    from backend.jobs import JobContext

    await make_user("alice", Role.OPERATOR)
    for name in ("alice", "bob"):
        for attempt in range(settings.login_free_failures):
            await login(anonymous, name, f"wrong-{attempt}")
    await set_last_failure(db, "alice", 25 * 3600)
    await set_last_failure(db, "bob", 23 * 3600)

    assert await prune_login_throttle(JobContext(db=db, broadcast=InProcessBroadcast())) == 1

    assert await failures_of(db, "alice") is None
    assert await failures_of(db, "bob") == settings.login_free_failures
    # Alice starts afresh: her next failure is the first again.
    await login(anonymous, "alice", "wrong-again")
    assert await failures_of(db, "alice") == 1
