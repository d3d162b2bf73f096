"""Compiled reads of lots, consumptions and work centres against the resolvers: the same
bytes both ways (see test_compiled_orders.py for the harness's idea). The edge data
(compiled_support.seed) has nulls, empty lists, unicode and control characters, microsecond
and whole-second times, extreme decimals and 520 lots (pages of 500); `seed_all` adds a
genealogy (several levels, diamonds, a lot reached at two depths, a corrupted cycle) for
Lot.trace, whose arguments are statement parameters."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from compiled_support import (
    MICRO,
    TINY,
    WHOLE,
    Case,
    MakeUser,
    assert_pages_agree,
    assert_role_checks_come_first,
    assert_sqlite_steps_aside,
    differences,
    post,
    seed,
    skip_unless_sqlite,
    two_apps,
)
from sqlalchemy import select

from backend.db import Database
from backend.lots.models import GenealogyLink, Lot
from backend.orders.models import ProductionOrder
from backend.principal import Role
from backend.settings import Settings

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

EQUIPMENT = "equipment { __typename id code name idealCycleSeconds state stateReason stateSince }"

LINK_FIELDS = """
  __typename depth quantity at
  inputLot { __typename id number status }
  outputLot { number material { code } }
  order { number status }
"""

# input -> output: L-0010 into L-0020 and L-0021, both into L-0030 (a diamond), L-0010 also
# straight into L-0030 (reached at depths 1 and 2 from L-0030), L-0011 into L-0010, L-0030 into
# L-0040 into L-0050; L-0100 and L-0101 into each other (a corrupted cycle).
GENEALOGY = [
    ("L-0010", "L-0020", "PO-0", Decimal("0.000001"), MICRO),
    ("L-0010", "L-0021", None, Decimal("123456789012.123456"), WHOLE),
    ("L-0020", "L-0030", "PO-1", Decimal("1"), TINY),
    ("L-0021", "L-0030", "PO-1", Decimal("0"), MICRO),
    ("L-0011", "L-0010", None, Decimal("2.5"), WHOLE),
    ("L-0010", "L-0030", "PO-1", Decimal("7.000100"), MICRO + dt.timedelta(seconds=1)),
    ("L-0030", "L-0040", "PO-2", Decimal("3"), WHOLE),
    ("L-0040", "L-0050", None, Decimal("0.5"), TINY),
    ("L-0100", "L-0101", None, Decimal("1"), WHOLE),
    ("L-0101", "L-0100", "PO-0", Decimal("1"), WHOLE),
]


async def seed_all(db: Database) -> dict[str, Any]:
    """compiled_support.seed, plus GENEALOGY (inserted out of id order by lot)."""
    facts = await seed(db)
    async with db.write() as session:
        lots = {lot.number: lot.id for lot in await session.scalars(select(Lot))}
        orders = {o.number: o.id for o in await session.scalars(select(ProductionOrder))}
        for source, made, order, quantity, at in GENEALOGY:
            session.add(
                GenealogyLink(
                    input_lot_id=lots[source],
                    output_lot_id=lots[made],
                    order_id=orders[order] if order else None,
                    quantity=quantity,
                    at=at,
                )
            )
    return facts


TRACE = (
    "query T($n: String!, $dir: TraceDirection!, $d: Int) { lot(number: $n) { number "
    "trace(direction: $dir, maxDepth: $d) { depth inputLot { number } outputLot { number } } } }"
)


def _trace_cases() -> list[Case]:
    cases: list[Case] = []
    for number in ("L-0030", "L-0010", "L-0100", "L-0002"):
        for direction in ("BACKWARD", "FORWARD"):
            for depth in (None, 0, 1, 2, -5):
                variables = {"n": number, "dir": direction, "d": depth}
                cases.append((f"trace {variables}", TRACE, variables, "compiled"))
    return cases


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
        # ---- genealogy, deviations of a lot, lots of an order
        (
            "trace both ways, every link field",
            '{ lot(number: "L-0030") { b: trace(direction: BACKWARD) { '
            f"{LINK_FIELDS} }} f: trace(direction: FORWARD, maxDepth: null) {{ {LINK_FIELDS} }} "
            "} }",
            {},
            c,
        ),
        *_trace_cases(),
        (
            "trace of every lot on a page (most have no links)",
            "{ lots(first: 500) { edges { node { number "
            "trace(direction: FORWARD, maxDepth: 2) { depth outputLot { number } } "
            "back: trace(direction: BACKWARD) { depth inputLot { number } } } } } }",
            {},
            c,
        ),
        (
            "trace inside trace, other arguments, in a fragment",
            'query N($d: Int) { lot(number: "L-0050") { ...T } } '
            "fragment T on Lot { trace(direction: BACKWARD, maxDepth: $d) { depth "
            "inputLot { number trace(direction: FORWARD, maxDepth: 1) { depth "
            "outputLot { number deviations { number } } } } } }",
            {"d": 3},
            c,
        ),
        (
            "trace, the same variables again (one plan, other values)",
            'query N($d: Int) { lot(number: "L-0050") { ...T } } '
            "fragment T on Lot { trace(direction: BACKWARD, maxDepth: $d) { depth "
            "inputLot { number trace(direction: FORWARD, maxDepth: 1) { depth "
            "outputLot { number deviations { number } } } } } }",
            {"d": None},
            c,
        ),
        (
            "deviations of lots (several, by id; none)",
            '{ a: lot(number: "L-0001") { deviations { __typename id number status '
            'lots { number } } } b: lot(number: "L-0002") { deviations { number } } '
            "lots(first: 6) { edges { node { number deviations { number } } } } }",
            {},
            c,
        ),
        (
            "lots produced by orders",
            "{ productionOrders(first: 5) { edges { node { number producedLots { __typename "
            "number quantity producedBy { number } } } } } }",
            {},
            c,
        ),
        (
            "trace: a link's order's deviations",
            '{ lot(number: "L-0030") { trace(direction: FORWARD) { order { deviations '
            "{ number raisedBy { username } } } } } }",
            {},
            c,
        ),
        # ---- the resolvers answer these
        (
            "trace: a required direction missing",
            TRACE,
            {"n": "L-0030"},
            r,
        ),
        (
            "equipment's work centre (not declared)",
            "{ workCenters { equipment { workCenter { code } } } }",
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
    facts = await seed_all(db)
    _, token = await make_user("reader", Role.SUPERVISOR)
    cases = corpus(facts["lot_cursor_500"], facts["lot_cursor_last"])
    problems = await differences(on, off, cases, token)
    big, _ = await post(on, cases[0][1], {}, token)
    assert big.count(b'"cursor"') == 500
    # The diamond: L-0011's link is reached at depths 2 and 3 from L-0030, and printed at 2.
    both = next(case for case in cases if case[0] == "trace both ways, every link field")
    body, _ = await post(on, both[1], {}, token)
    lot = httpx.Response(200, content=body).json()["data"]["lot"]
    assert [(x["depth"], x["inputLot"]["number"], x["outputLot"]["number"]) for x in lot["b"]] == [
        (1, "L-0020", "L-0030"),
        (1, "L-0021", "L-0030"),
        (1, "L-0010", "L-0030"),
        (2, "L-0010", "L-0020"),
        (2, "L-0010", "L-0021"),
        (2, "L-0011", "L-0010"),
    ]
    assert [(x["depth"], x["outputLot"]["number"]) for x in lot["f"]] == [
        (1, "L-0040"),
        (2, "L-0050"),
    ]
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
    await assert_pages_agree(on, off, query, "lots", token, pages=3)


@pytest.mark.postgres
async def test_lot_role_checks_come_first(
    db: Database,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on, off = clients
    await seed(db)
    queries = {
        "lots": "{ lots(first: 2) { totalCount } }",
        "workCenters": "{ workCenters { code } }",
    }
    await assert_role_checks_come_first(on, off, queries, make_user, monkeypatch)


async def test_lots_sqlite_steps_aside(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    skip_unless_sqlite(db)
    on, off = clients
    facts = await seed_all(db)
    _, token = await make_user("lite", Role.SUPERVISOR)
    cases = corpus(facts["lot_cursor_500"], facts["lot_cursor_last"])
    await assert_sqlite_steps_aside(on, off, cases, token)
