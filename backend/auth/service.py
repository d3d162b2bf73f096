"""Users, passwords, user tokens, API tokens and sign-in throttling."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import Select, delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.auth.models import ApiToken, LoginThrottle, User
from backend.db import Database, utcnow
from backend.errors import DomainError, ErrorCode, Problems
from backend.principal import Principal, Role
from backend.settings import Settings
from backend.uow import UnitOfWork

API_TOKEN_PREFIX = "mes_"
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
PASSWORD_MAX = 1024
LOGIN_FAILED = "Unknown user name or wrong password."

_hasher = PasswordHasher()
# Verified against when the user name is unknown, so that both failures take as long.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password_async(password_hash: str, password: str) -> bool:
    """Argon2 is deliberately slow (tens of ms): keep it off the event loop."""
    return await asyncio.to_thread(verify_password, password_hash, password)


def _check_password(problems: Problems, field: str, password: str, settings: Settings) -> None:
    if len(password) < settings.password_min_length:
        problems.invalid(field, f"must be at least {settings.password_min_length} characters")
    elif len(password) > PASSWORD_MAX:
        problems.invalid(field, f"must be at most {PASSWORD_MAX} characters")


def _check_roles(problems: Problems, field: str, roles: list[Role]) -> list[Role]:
    if not roles:
        problems.invalid(field, "give at least one role")
    return sorted(set(roles), key=list(Role).index)


async def _insert_unique(
    uow: UnitOfWork, row: User | ApiToken, taken: Select[int], conflict: DomainError
) -> None:
    """Inserts `row`; raises `conflict` when its unique name was taken meanwhile.

    The check before the insert is not enough on PostgreSQL: two transactions can both find
    the name free, and the second insert then waits for the first to commit and fails. The
    savepoint keeps the transaction usable to tell that case from any other fault.
    """
    try:
        async with uow.session.begin_nested():
            uow.session.add(row)
    except IntegrityError:
        if await uow.session.scalar(taken) is not None:
            raise conflict from None
        raise


async def create_user(
    uow: UnitOfWork,
    settings: Settings,
    *,
    username: str,
    display_name: str,
    password: str,
    roles: list[Role],
) -> User:
    """Adds a user; user names are unique and case-sensitive as typed, after trimming."""
    problems = Problems()
    username = username.strip()
    if not USERNAME_PATTERN.match(username):
        problems.invalid(
            "username",
            "use 1-100 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
        )
    display_name = display_name.strip() or username
    if len(display_name) > 200:
        problems.invalid("displayName", "must be at most 200 characters")
    _check_password(problems, "password", password, settings)
    ordered_roles = _check_roles(problems, "roles", roles)
    problems.raise_if_any()
    # Hashed before the first statement: Argon2 takes a while, and on SQLite the transaction
    # holds the database's single write lock from its first statement on.
    password_hash = await asyncio.to_thread(hash_password, password)
    taken = select(User.id).where(User.username == username)
    conflict = DomainError.one(ErrorCode.CONFLICT, f"user {username!r} already exists", "username")
    if await uow.session.scalar(taken) is not None:
        raise conflict
    user = User(
        username=username,
        display_name=display_name,
        password_hash=password_hash,
        roles=[r.value for r in ordered_roles],
        active=True,
    )
    await _insert_unique(uow, user, taken, conflict)
    uow.audit(
        "user.create",
        "User",
        user.id,
        {"username": username, "displayName": display_name, "roles": user.roles},
    )
    return user


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.require_secret_key(), salt="mes.user-token")


def issue_user_token(settings: Settings, user: User) -> str:
    return str(_serializer(settings).dumps({"u": user.id}))


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_api_token(
    uow: UnitOfWork, *, name: str, roles: list[Role]
) -> tuple[ApiToken, str]:
    """A new long-lived token for a system. The token is returned once; only its hash is kept."""
    problems = Problems()
    name = name.strip()
    if not name or len(name) > 100:
        problems.invalid("name", "give a name of 1-100 characters")
    ordered_roles = _check_roles(problems, "roles", roles)
    problems.raise_if_any()
    taken = select(ApiToken.id).where(ApiToken.name == name)
    conflict = DomainError.one(ErrorCode.CONFLICT, f"a token named {name!r} already exists", "name")
    if await uow.session.scalar(taken) is not None:
        raise conflict
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        token_hash=_hash_token(token),
        roles=[r.value for r in ordered_roles],
        created_by_id=uow.actor.user_id,
    )
    await _insert_unique(uow, row, taken, conflict)
    uow.audit("token.create", "ApiToken", row.id, {"name": name, "roles": row.roles})
    return row, token


async def revoke_api_token(uow: UnitOfWork, name: str) -> ApiToken:
    row = await uow.session.scalar(select(ApiToken).where(ApiToken.name == name.strip()))
    if row is None:
        raise DomainError.one(ErrorCode.NOT_FOUND, f"no API token named {name!r}", "name")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        uow.audit("token.revoke", "ApiToken", row.id, {"name": row.name})
    return row


async def list_api_tokens(session: AsyncSession) -> list[ApiToken]:
    return list(await session.scalars(select(ApiToken).order_by(ApiToken.name)))


async def authenticate(session: AsyncSession, settings: Settings, token: str) -> Principal | None:
    """The principal for a bearer token, or None when it is unknown, expired or revoked."""
    key = _token_key(settings, token)
    return None if key is None else await _principal_of_key(session, key)


def _token_key(settings: Settings, token: str) -> tuple[str, str, int] | None:
    """("api", hash, 0) for an API token, ("user", token, user id) for a user token whose
    signature is valid and not expired, None for anything else. Cheap: no database."""
    token = token.strip()
    if not token:
        return None
    if token.startswith(API_TOKEN_PREFIX):
        return ("api", _hash_token(token), 0)
    try:
        data = _serializer(settings).loads(token, max_age=settings.token_ttl_seconds)
    except (SignatureExpired, BadSignature):
        return None
    user_id = data.get("u") if isinstance(data, dict) else None
    return ("user", token, user_id) if isinstance(user_id, int) else None


async def _principal_of_key(session: AsyncSession, key: tuple[str, str, int]) -> Principal | None:
    kind, token_hash, user_id = key
    if kind == "api":
        row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))
        if row is None or row.revoked_at is not None:
            return None
        return Principal(
            name=row.name, roles=frozenset(Role(r) for r in row.roles), token_id=row.id
        )
    user = await session.get(User, user_id)
    if user is None or not user.active:
        return None
    return principal_of(user)


class PrincipalCache:
    """The principals of recently used tokens, so that a request does not look its token up
    (a session, three round trips and an ORM load: about a third of a compiled read's CPU).

    An entry lives `settings.auth_cache_seconds` (0: no cache). Only tokens that were valid
    are kept, so a new token or user works at once; a token revoked, or a user deactivated
    or given other roles, takes effect in this process within that time. User tokens still
    have their signature and expiry checked on every request. Bounded: the least recently
    used entries go first.
    """

    SIZE = 4096

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, str, int], tuple[float, Principal]] = OrderedDict()

    async def authenticate(self, db: Database, settings: Settings, token: str) -> Principal | None:
        key = _token_key(settings, token)
        if key is None:
            return None
        ttl = settings.auth_cache_seconds
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < ttl:
            self._entries.move_to_end(key)
            return entry[1]
        async with db.read() as session:
            principal = await _principal_of_key(session, key)
        if principal is None or ttl <= 0:
            self._entries.pop(key, None)
        else:
            self._entries[key] = (now, principal)
            self._entries.move_to_end(key)
            if len(self._entries) > self.SIZE:
                self._entries.popitem(last=False)
        return principal

    def clear(self) -> None:
        self._entries.clear()


def principal_of(user: User) -> Principal:
    return Principal(
        name=user.username, roles=frozenset(Role(r) for r in user.roles), user_id=user.id
    )


@dataclass(frozen=True)
class LoginResult:
    user: User | None
    token: str | None
    error: str | None


_LOGIN_LOCK_SPACE = 0x4D45_534C  # "MESL": advisory locks of sign-in attempts, one per user name


def _lock_key(username: str) -> int:
    """A signed 32-bit key for `username` (PostgreSQL's two-key advisory locks take int4)."""
    return int.from_bytes(hashlib.sha256(username.encode()).digest()[:4], "big", signed=True)


def _throttle_delay(settings: Settings, failures: int) -> float:
    """Seconds a user name must wait after `failures` failed sign-ins in a row."""
    over = failures - settings.login_free_failures
    if over < 0:
        return 0.0
    return float(
        min(settings.login_max_delay_seconds, settings.login_base_delay_seconds * 2.0**over)
    )


def _refusal(settings: Settings, throttle: LoginThrottle | None, now: dt.datetime) -> str | None:
    """Why an attempt for this user name is refused now, or None when it may be checked."""
    if throttle is None:
        return None
    delay = _throttle_delay(settings, throttle.failures)
    ready_at = throttle.last_failure_at + dt.timedelta(seconds=delay)
    if ready_at <= now:
        return None
    seconds = max(1, int((ready_at - now).total_seconds() + 0.999))
    return f"Too many failed sign-ins for this user name: try again in {seconds} s."


async def login(db: Database, settings: Settings, username: str, password: str) -> LoginResult:
    """Checks a user name and password. Unknown user and wrong password answer alike.

    After a few failures in a row for one user name (known or not), further attempts for
    that name are refused, without checking the password, for a delay that doubles with
    each failure (capped): guessing slows to a crawl while other users are not affected.
    The failure count is in the database, shared by every server process.

    The password is checked outside any transaction (Argon2 is slow on purpose, and on
    SQLite a write transaction holds the database's only write lock). The outcome is then
    recorded with attempts for the same name taking turns; an attempt whose name was
    throttled meanwhile by concurrent failures is refused, so guesses sent at once cannot
    slip past the count.
    """
    username = username.strip()[:100]
    async with db.read() as session:
        refusal = _refusal(settings, await session.get(LoginThrottle, username), utcnow())
        if refusal is not None:
            return LoginResult(None, None, refusal)
        user = await session.scalar(select(User).where(User.username == username))
    ok = await verify_password_async(user.password_hash if user else _DUMMY_HASH, password)
    succeeded = user is not None and ok and user.active

    async with db.write() as session:
        if db.dialect_name == "postgresql":
            # SQLite's single writer already makes attempts take turns.
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:space, :key)"),
                {"space": _LOGIN_LOCK_SPACE, "key": _lock_key(username)},
            )
        throttle = await session.get(LoginThrottle, username)
        now = utcnow()
        refusal = _refusal(settings, throttle, now)
        if refusal is not None:
            return LoginResult(None, None, refusal)
        if not succeeded:
            if throttle is None:
                session.add(LoginThrottle(username=username, failures=1, last_failure_at=now))
            else:
                throttle.failures += 1
                throttle.last_failure_at = now
            return LoginResult(None, None, LOGIN_FAILED)
        if throttle is not None:
            await session.execute(delete(LoginThrottle).where(LoginThrottle.username == username))
    assert user is not None
    return LoginResult(user, issue_user_token(settings, user), None)


async def users_by_ids(session: AsyncSession, ids: list[int]) -> dict[int, User]:
    rows = await session.scalars(select(User).where(User.id.in_(ids)))
    return {u.id: u for u in rows}
