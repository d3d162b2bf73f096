"""Compiled reads of inspections and deviations against the resolvers: the same bytes both
ways (see test_compiled_orders.py for the harness's idea), over compiled_support.seed's edge
data: Float values (printed as orjson prints them; a value with no exact printing fails the
statement and the resolvers answer), recordedBy and raisedBy (the user, or the made-up User
named after an API token), an inspection's characteristics (the operation's or the lot
material's), an order's deviations, its operations' characteristics and inspections, and a
material's incoming characteristics (by position, though inserted against it)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx
import pytest
from compiled_support import (
    TRICKY,
    Case,
    MakeUser,
    assert_role_checks_come_first,
    assert_sqlite_steps_aside,
    differences,
    post,
    seed,
    skip_unless_sqlite,
    two_apps,
)
from sqlalchemy import update

from backend.catalog.models import Characteristic
from backend.compiled.metrics import METRICS
from backend.db import Database
from backend.principal import Role
from backend.settings import Settings

CHARACTERISTIC_FIELDS = "__typename id name kind unit nominal lowerLimit upperLimit"

ALL_INSPECTION_FIELDS = f"""
  __typename id number status createdAt completedAt
  lot {{ number status material {{ code }} }}
  order {{ number workCenter {{ code }} }}
  operation {{ sequence name status }}
  characteristics {{ {CHARACTERISTIC_FIELDS} }}
  results {{ __typename value passed note recordedAt
    characteristic {{ {CHARACTERISTIC_FIELDS} }}
    recordedBy {{ __typename id username displayName }} }}
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
            f"{{ {CHARACTERISTIC_FIELDS} }} inspections {{ "
            f"{ALL_INSPECTION_FIELDS} }} }} }} }} }} }}",
            {},
            c,
        ),
        (
            "materials' incoming characteristics (M-1's Float edges, M-3's by position, none)",
            "{ productionOrders(first: 3) { edges { node { number product { code "
            f"incomingCharacteristics {{ {CHARACTERISTIC_FIELDS} }} }} components {{ material "
            f"{{ code incomingCharacteristics {{ {CHARACTERISTIC_FIELDS} }} }} }} }} }} }} }}",
            {},
            c,
        ),
        (
            "incoming characteristics of lots' and an inspection's material, aliased",
            "{ lots(first: 4) { edges { node { number material { code "
            "ic: incomingCharacteristics { name key: id } } } } } "
            'inspection(number: "IN-1") { lot { material { incomingCharacteristics { name '
            "upperLimit } } } characteristics { name } } }",
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
    cases = corpus()
    problems = await differences(on, off, cases, token)
    # The incoming characteristics really ran over data: M-3's, by position.
    incoming = next(case for case in cases if case[0].startswith("materials' incoming"))
    body, _ = await post(on, incoming[1], {}, token)
    orders = httpx.Response(200, content=body).json()["data"]["productionOrders"]["edges"]
    m3 = [
        [c["name"] for c in component["material"]["incomingCharacteristics"]]
        for order in orders
        for component in order["node"]["components"]
        if component["material"]["code"] == "M-3"
    ]
    assert m3 == [["Density", TRICKY, "Clarity 😀"]]
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
    queries = {
        "deviations": "{ deviations { totalCount edges { node { number lots { number } } } } }",
        "inspection": '{ inspection(number: "IN-1") { number results { passed } } }',
    }
    await assert_role_checks_come_first(on, off, queries, make_user, monkeypatch)


async def test_quality_sqlite_steps_aside(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    skip_unless_sqlite(db)
    on, off = clients
    await seed(db)
    _, token = await make_user("lite", Role.QUALITY)
    await assert_sqlite_steps_aside(on, off, corpus(), token)
