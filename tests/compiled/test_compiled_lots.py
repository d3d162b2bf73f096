"""Compiled reads of lots, consumptions and work centres against the resolvers: the same
bytes both ways (see test_compiled_orders.py for the harness's idea). The edge data
(compiled_support.seed) has nulls, empty lists, unicode and control characters, microsecond
and whole-second times, extreme decimals and 520 lots (pages of 500)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from compiled_support import Case, differences, post, seed, two_apps

from backend.auth import policy
from backend.auth.models import User
from backend.compiled.metrics import METRICS
from backend.db import Database
from backend.principal import Role
from backend.settings import Settings

MakeUser = Callable[..., Awaitable[tuple[User, str]]]

ALL_LOT_FIELDS = """
  __typename id number quantity status expiresAt supplierLot createdAt
  material { __typename id code name kind unit gtin lotControlled shelfLifeDays }
  producedBy { __typename id number status workCenter { code } }
  inspections { id number status createdAt completedAt }
"""

CONSUMPTIONS = """
  productionOrder(number: "PO-0") { number components { quantityRequired consumptions {
    __typename quantity consumedAt lot { number status } consumedBy { id username displayName }
  } } }
"""

EQUIPMENT = "equipment { __typename id code name state stateReason stateSince }"


def corpus(cursor_500: str, cursor_last: str) -> list[Case]:
    c, r = "compiled", "resolvers"
    return [
        (
            "all lot fields, page of 500",
            "query All { lots(first: 500) { __typename totalCount pageInfo { __typename "
            "hasNextPage hasPreviousPage startCursor endCursor } "
            f"edges {{ __typename cursor node {{ {ALL_LOT_FIELDS} }} }} }} }}",
            {},
            c,
        ),
        (
            "lots over the maximum page",
            "{ lots(first: 9999) { totalCount pageInfo { hasNextPage endCursor } "
            "edges { cursor node { number quantity } } } }",
            {},
            c,
        ),
        ("lots, default page", f"{{ lots {{ edges {{ node {{ {ALL_LOT_FIELDS} }} }} }} }}", {}, c),
        (
            "lots after a cursor",
            "query P($after: String) { lots(first: 500, after: $after) { totalCount "
            "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } "
            "edges { cursor node { number } } } }",
            {"after": cursor_500},
            c,
        ),
        (
            "lots past the last page",
            "query P($after: String) { lots(after: $after) { totalCount pageInfo { hasNextPage "
            "hasPreviousPage startCursor endCursor } edges { cursor } } }",
            {"after": cursor_last},
            c,
        ),
        (
            "lots by status and material (stripped)",
            "query F($s: [LotStatus!], $m: String) { lots(first: 500, status: $s, material: $m) "
            "{ totalCount edges { node { number status material { code } } } } }",
            {"s": ["AVAILABLE", "ON_HOLD"], "m": "  M-2 😀 "},
            c,
        ),
        (
            "lots: empty status list, empty material (no such code)",
            '{ a: lots(first: 3, status: []) { totalCount } b: lots(material: "") '
            "{ totalCount pageInfo { hasNextPage startCursor endCursor } edges { cursor } } }",
            {},
            c,
        ),
        (
            "lots: a material without lots",
            '{ lots(material: "M-3") { totalCount edges { node { number } } } }',
            {},
            c,
        ),
        (
            "lot by number",
            f"query One($n: String!) {{ lot(number: $n) {{ {ALL_LOT_FIELDS} }} }}",
            {"n": " L-0002\t"},
            c,
        ),
        (
            "lot with a producing order, fragments and aliases",
            '{ lot(number: "L-0005") { ...L p: producedBy { n: number } } '
            'none: lot(number: "NOPE") { number } } '
            "fragment L on Lot { number producedBy { number } material { ... on Material "
            "{ code } } }",
            {},
            c,
        ),
        ("consumptions of a component", f"{{ {CONSUMPTIONS} }}", {}, c),
        (
            "consumptions, empty lists",
            "{ productionOrders(first: 3) { edges { node { number components { consumptions "
            "{ quantity } } } } } }",
            {},
            c,
        ),
        (
            "work centres with their equipment (by code)",
            f"{{ workCenters {{ __typename id code name {EQUIPMENT} }} }}",
            {},
            c,
        ),
        (
            "work centres next to lots",
            "{ w: workCenters { code equipment { code } } lots(first: 1) { totalCount } }",
            {},
            c,
        ),
        # ---- the resolvers answer these
        (
            "Float: equipment idealCycleSeconds",
            "{ workCenters { code equipment { code idealCycleSeconds } } }",
            {},
            r,
        ),
        (
            "equipment's work centre (not declared)",
            "{ workCenters { equipment { workCenter { code } } } }",
            {},
            r,
        ),
        (
            "lot trace (arguments)",
            '{ lot(number: "L-0001") { trace(direction: FORWARD) { depth } } }',
            {},
            r,
        ),
        (
            "lot deviations (not declared)",
            '{ lot(number: "L-0001") { deviations { number } } }',
            {},
            r,
        ),
        ("user roles (JSON)", f"{{ {CONSUMPTIONS.replace('displayName', 'roles')} }}", {}, r),
        ("negative first", "{ lots(first: -1) { totalCount } }", {}, r),
        ("invalid cursor", '{ lots(after: "bm90LWEtY3Vyc29y") { totalCount } }', {}, r),
    ]


@pytest.fixture(scope="module")
async def clients(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with two_apps(settings) as pair:
        yield pair


@pytest.mark.postgres
async def test_lots_compiled_as_the_resolvers(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    on, off = clients
    facts = await seed(db)
    _, token = await make_user("reader", Role.SUPERVISOR)
    cases = corpus(facts["lot_cursor_500"], facts["lot_cursor_last"])
    problems = await differences(on, off, cases, token)
    big, _ = await post(on, cases[0][1], {}, token)
    assert big.count(b'"cursor"') == 500
    assert not problems, "\n\n".join(problems)


@pytest.mark.postgres
async def test_paging_through_every_lot(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    on, off = clients
    await seed(db)
    _, token = await make_user("pager", Role.OPERATOR)
    query = (
        "query P($after: String) { lots(first: 200, after: $after) { totalCount "
        "pageInfo { hasNextPage endCursor } edges { cursor node { number } } } }"
    )
    after: Any = None
    pages = 0
    while True:
        body_on, path = await post(on, query, {"after": after}, token)
        body_off, _ = await post(off, query, {"after": after}, token)
        assert body_on == body_off
        assert path == "compiled"
        page = httpx.Response(200, content=body_on).json()["data"]["lots"]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 3


@pytest.mark.postgres
async def test_lot_role_checks_come_first(
    db: Database,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on, off = clients
    await seed(db)
    queries = ["{ lots(first: 2) { totalCount } }", "{ workCenters { code } }"]
    for query in queries:
        anonymous_on, path = await post(on, query, {}, None)
        anonymous_off, _ = await post(off, query, {}, None)
        assert anonymous_on == anonymous_off
        assert b"UNAUTHENTICATED" in anonymous_on
        assert path == "none"
    monkeypatch.setitem(policy.QUERIES, "lots", frozenset({Role.QUALITY}))
    monkeypatch.setitem(policy.QUERIES, "workCenters", frozenset({Role.QUALITY}))
    _, token = await make_user("operator", Role.OPERATOR)
    _, quality = await make_user("quality", Role.QUALITY)
    for query in queries:
        forbidden_on, path = await post(on, query, {}, token)
        forbidden_off, _ = await post(off, query, {}, token)
        assert forbidden_on == forbidden_off
        assert b"FORBIDDEN" in forbidden_on
        assert path == "none"
        allowed_on, path = await post(on, query, {}, quality)
        allowed_off, _ = await post(off, query, {}, quality)
        assert allowed_on == allowed_off
        assert path == "compiled"


async def test_lots_sqlite_steps_aside(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    if db.dialect_name != "sqlite":
        pytest.skip("SQLite only: on PostgreSQL the compiled path answers (tests above)")
    on, off = clients
    facts = await seed(db)
    _, token = await make_user("lite", Role.SUPERVISOR)
    before = METRICS.fallbacks["engine"]
    compiled = [
        case
        for case in corpus(facts["lot_cursor_500"], facts["lot_cursor_last"])
        if case[3] == "compiled"
    ]
    for name, query, variables, _ in compiled:
        body_on, path = await post(on, query, variables, token)
        body_off, _ = await post(off, query, variables, token)
        assert body_on == body_off, name
        assert path == "resolvers"
        assert b'"errors"' not in body_on
    assert METRICS.fallbacks["engine"] == before + len(compiled)
