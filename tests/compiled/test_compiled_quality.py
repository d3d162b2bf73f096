"""Compiled reads of inspections and deviations against the resolvers: the same bytes both
ways (see test_compiled_orders.py for the harness's idea), over compiled_support.seed's edge
data: Float values (printed as orjson prints them; a value with no exact printing fails the
statement and the resolvers answer), recordedBy and raisedBy (the user, or the made-up User
named after an API token), an inspection's characteristics (the operation's or the lot
material's), and an order's deviations, its operations' characteristics and inspections."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from compiled_support import Case, assert_role_checks_come_first, differences, post, seed, two_apps
from sqlalchemy import update

from backend.auth import policy
from backend.auth.models import User
from backend.catalog.models import Characteristic
from backend.compiled.metrics import METRICS
from backend.db import Database
from backend.principal import Role
from backend.settings import Settings

MakeUser = Callable[..., Awaitable[tuple[User, str]]]

ALL_INSPECTION_FIELDS = """
  __typename id number status createdAt completedAt
  lot { number status material { code } }
  order { number workCenter { code } }
  operation { sequence name status }
  characteristics { __typename id name kind unit nominal lowerLimit upperLimit }
  results { __typename value passed note recordedAt
    characteristic { __typename id name kind unit nominal lowerLimit upperLimit }
    recordedBy { __typename id username displayName } }
"""

ALL_DEVIATION_FIELDS = """
  __typename id number title description severity status source disposition raisedAt
  raisedBy { __typename id username displayName }
  lots { __typename number quantity expiresAt }
  order { number }
  inspection { number status createdAt completedAt }
  signatures { __typename meaning reason signedAt contentHash
    signer { __typename id username displayName } }
"""


def corpus() -> list[Case]:
    c, r = "compiled", "resolvers"
    return [
        (
            "all inspection fields",
            "{ inspections(first: 500) { __typename totalCount pageInfo { hasNextPage "
            "hasPreviousPage startCursor endCursor } "
            f"edges {{ __typename cursor node {{ {ALL_INSPECTION_FIELDS} }} }} }} }}",
            {},
            c,
        ),
        (
            "inspections by status, a page of one",
            "query S($s: [InspectionStatus!]) { inspections(first: 1, status: $s) { totalCount "
            "pageInfo { hasNextPage endCursor } edges { node { number status } } } }",
            {"s": ["OPEN", "PASSED"]},
            c,
        ),
        (
            "inspections: no match",
            "{ inspections(status: []) { totalCount } x: inspections(first: 0) "
            "{ pageInfo { hasNextPage startCursor } edges { cursor } } }",
            {},
            c,
        ),
        (
            "inspection by number",
            f"query I($n: String!) {{ inspection(number: $n) {{ {ALL_INSPECTION_FIELDS} }} }}",
            {"n": " IN-2 😀 "},
            c,
        ),
        ("inspection unknown", '{ inspection(number: "IN-9") { number } }', {}, c),
        (
            "all deviation fields",
            "{ deviations(first: 500) { totalCount pageInfo { hasNextPage endCursor } "
            f"edges {{ cursor node {{ {ALL_DEVIATION_FIELDS} }} }} }} }}",
            {},
            c,
        ),
        (
            "deviations by status",
            "{ deviations(status: [APPROVED, REJECTED]) { totalCount edges { node { number "
            "disposition lots { number } signatures { signer { username } } } } } }",
            {},
            c,
        ),
        (
            "deviation by number, lots by position",
            f'{{ deviation(number: "DEV-1") {{ {ALL_DEVIATION_FIELDS} }} }}',
            {},
            c,
        ),
        (
            "lots of an inspection's deviation: nested through a link",
            '{ deviation(number: "DEV-1") { inspection { lot { number inspections '
            "{ number } } results { passed } } lots { material { code } producedBy "
            "{ number } } } }",
            {},
            c,
        ),
        (
            "Float values, and users or the stand-ins of tokens, under aliases and fragments",
            '{ inspection(number: "IN-1") { results { v: value value ...U '
            "characteristic { upperLimit u: upperLimit } } } } "
            "fragment U on InspectionResult { recordedBy { ... on User { username } "
            "n: username } by: recordedBy { id } }",
            {},
            c,
        ),
        (
            "raisedBy: the user, or a made-up user for a token",
            "{ deviations { edges { node { number raisedBy { id username displayName } } } } }",
            {},
            c,
        ),
        (
            "an inspection's characteristics (the operation's, the material's, none)",
            "{ inspections { edges { node { number characteristics { name position: id } "
            "operation { characteristics { name } } } } } }",
            {},
            c,
        ),
        (
            "an order's deviations, its operations' characteristics and inspections",
            "{ productionOrders(first: 5) { edges { node { number deviations { number "
            "raisedBy { username } lots { number } } operations { sequence characteristics "
            "{ __typename id name kind unit nominal lowerLimit upperLimit } inspections { "
            f"{ALL_INSPECTION_FIELDS} }} }} }} }} }} }}",
            {},
            c,
        ),
        # ---- the resolvers answer these
        (
            "a token's stand-in user: roles (not declared)",
            '{ inspection(number: "IN-1") { results { recordedBy { username roles } } } }',
            {},
            r,
        ),
        ("negative first", "{ deviations(first: -1) { totalCount } }", {}, r),
    ]


@pytest.fixture(scope="module")
async def clients(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with two_apps(settings) as pair:
        yield pair


@pytest.mark.postgres
async def test_quality_compiled_as_the_resolvers(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    on, off = clients
    await seed(db)
    _, token = await make_user("reader", Role.QUALITY)
    problems = await differences(on, off, corpus(), token)
    assert not problems, "\n\n".join(problems)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("upper_limit", math.inf),
        ("nominal", -math.inf),
        ("lower_limit", math.nan),
        ("upper_limit", 9.5e21),  # PostgreSQL's digits: 9.500000000000001e+21
    ],
)
async def test_floats_without_an_exact_printing_go_to_the_resolvers(
    db: Database,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    make_user: MakeUser,
    column: str,
    value: float,
) -> None:
    """The columns hold what graphql-core refuses (an infinite limit comes in as a literal
    such as 1e999; NaN only through SQL) and values the SQL cannot print exactly: the
    statement fails, and the resolvers answer -- an error for NaN and the infinities."""
    on, off = clients
    await seed(db)
    _, token = await make_user("floats", Role.QUALITY)
    async with db.write() as session:
        await session.execute(
            update(Characteristic).where(Characteristic.name == "Colour").values({column: value})
        )
    query = (
        '{ inspection(number: "IN-1") { number results { characteristic { name nominal '
        "lowerLimit upperLimit } } } }"
    )
    before = METRICS.fallbacks["sql_error"]
    body_on, path = await post(on, query, {}, token)
    body_off, _ = await post(off, query, {}, token)
    assert body_on == body_off
    assert path == "resolvers"
    assert METRICS.fallbacks["sql_error"] == before + 1
    assert (b"Float cannot represent" in body_on) is not math.isfinite(value)


@pytest.mark.postgres
async def test_quality_role_checks_come_first(
    db: Database,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on, off = clients
    await seed(db)
    queries = [
        "{ deviations { totalCount edges { node { number lots { number } } } } }",
        '{ inspection(number: "IN-1") { number results { passed } } }',
    ]
    monkeypatch.setitem(policy.QUERIES, "deviations", frozenset({Role.QUALITY}))
    monkeypatch.setitem(policy.QUERIES, "inspection", frozenset({Role.QUALITY}))
    _, operator = await make_user("operator", Role.OPERATOR)
    _, quality = await make_user("quality", Role.QUALITY)
    await assert_role_checks_come_first(on, off, queries, operator, quality)


async def test_quality_sqlite_steps_aside(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    if db.dialect_name != "sqlite":
        pytest.skip("SQLite only: on PostgreSQL the compiled path answers (tests above)")
    on, off = clients
    await seed(db)
    _, token = await make_user("lite", Role.QUALITY)
    before = METRICS.fallbacks["engine"]
    compiled = [case for case in corpus() if case[3] == "compiled"]
    for _, query, variables, _ in compiled:
        body_on, path = await post(on, query, variables, token)
        body_off, _ = await post(off, query, variables, token)
        assert body_on == body_off
        assert path == "resolvers"
        assert b'"errors"' not in body_on
    assert METRICS.fallbacks["engine"] == before + len(compiled)
