"""Compiled reads (backend/compiled) against the resolvers: the same bytes, both ways.

Every document of the corpus runs on two apps over the same database, one with compiled reads
on and one with them off, and the response bodies must be byte-identical; the counters say
which path served each. The edge data has nulls, empty lists, unicode and control characters,
microsecond and whole-second times, extreme decimals and priorities, and 520 orders (pages of
500). On SQLite the extension steps aside, and the answers are the resolvers' own.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from compiled_support import (
    MICRO,
    TINY,
    TRICKY,
    WHOLE,
    Case,
    MakeUser,
    assert_pages_agree,
    assert_role_checks_come_first,
    assert_sqlite_steps_aside,
    differences,
    post,
    skip_unless_sqlite,
    two_apps,
)

from backend.catalog.models import Material, MaterialKind, WorkCenter
from backend.compiled import extension
from backend.db import Database
from backend.gql import encode_cursor
from backend.orders.models import (
    OperationStatus,
    OrderComponent,
    OrderOperation,
    OrderStatus,
    ProductionOrder,
)
from backend.principal import Role
from backend.settings import Settings

ORDERS = 520
BENCH_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "test_orders_read.py"
BENCH_QUERY = re.search(r'QUERY = """(.*?)"""', BENCH_FILE.read_text(), re.S).group(1)  # type: ignore[union-attr]

ALL_ORDER_FIELDS = """
  __typename id number externalId quantity quantityGood quantityScrap status priority dueAt
  createdAt updatedAt
  product { __typename id code name kind unit gtin lotControlled shelfLifeDays }
  workCenter { __typename id code name }
  operations {
    __typename id sequence name instructions status quantityGood quantityScrap startedAt
    completedAt workCenter { id code name }
  }
  components {
    __typename quantityRequired quantityConsumed operationSequence
    material { id code name kind unit gtin lotControlled shelfLifeDays }
  }
"""

FRAGMENTS = """
query Fragments {
  productionOrders(first: 3) {
    ...Conn
    edges { node { ... on ProductionOrder { number product { ...Mat } } ...Order } }
  }
}
fragment Conn on ProductionOrderConnection {
  totalCount pageInfo { ...Page } edges { cursor node { ...Order } }
}
fragment Page on PageInfo { hasNextPage hasPreviousPage startCursor endCursor }
fragment Order on ProductionOrder {
  number status operations { ... on OrderOperation { sequence name } status }
  product { ...Mat code }
}
fragment Mat on Material { code name __typename }
"""


def corpus(cursor_2: str, cursor_last: str) -> list[Case]:
    c, r = "compiled", "resolvers"
    return [
        ("benchmark query", BENCH_QUERY, {"first": 50}, c),
        ("benchmark query, default page", BENCH_QUERY, {}, c),
        (
            "all fields, page of 500",
            "query All { productionOrders(first: 500) { __typename totalCount "
            "pageInfo { __typename hasNextPage hasPreviousPage startCursor endCursor } "
            f"edges {{ __typename cursor node {{ {ALL_ORDER_FIELDS} }} }} }} }}",
            {},
            c,
        ),
        (
            "all fields, over the maximum page",
            "{ productionOrders(first: 100000) { totalCount pageInfo { hasNextPage endCursor } "
            f"edges {{ cursor node {{ {ALL_ORDER_FIELDS} }} }} }} }}",
            {},
            c,
        ),
        (
            "second page after a cursor",
            "query P($after: String) { productionOrders(first: 500, after: $after) { "
            "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } "
            "edges { cursor node { number } } totalCount } }",
            {"after": cursor_2},
            c,
        ),
        (
            "past the last page",
            "query P($after: String) { productionOrders(after: $after) { "
            "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } "
            "edges { cursor node { number } } totalCount } }",
            {"after": cursor_last},
            c,
        ),
        (
            "after: empty string (no filter, but a previous page)",
            '{ productionOrders(first: 2, after: "") { pageInfo { hasPreviousPage '
            "startCursor } edges { node { number } } } }",
            {},
            c,
        ),
        (
            "empty page (first: 0)",
            "{ productionOrders(first: 0) { totalCount pageInfo { hasNextPage hasPreviousPage "
            "startCursor endCursor } edges { cursor node { number } } } }",
            {},
            c,
        ),
        (
            "aliases, duplicate keys, __typename",
            "{ __typename a: productionOrders(first: 2) { edges { node { n: number number "
            "number id x: id product { code c: code code } } } } "
            "b: productionOrders(first: 1, after: "
            f'"{cursor_2}") {{ totalCount t: totalCount edges {{ node {{ number }} }} }} }}',
            {},
            c,
        ),
        ("named and inline fragments", FRAGMENTS, {}, c),
        (
            "operationName picks one of two",
            "query A { productionOrders(first: 1) { totalCount } } "
            'query B { productionOrder(number: "PO-0002") { number } }',
            {"__operationName": "B"},
            c,
        ),
        (
            "variables with and without defaults",
            'query V($first: Int = 7, $status: [OrderStatus!], $wc: String = "WC-1") { '
            "productionOrders(first: $first, status: $status, workCenter: $wc) { totalCount "
            "edges { cursor node { number status workCenter { code } } } } }",
            {"status": ["RELEASED", "IN_PROGRESS"]},
            c,
        ),
        (
            "literal @skip and @include",
            "{ productionOrders(first: 3) { totalCount @skip(if: true) "
            "pageInfo @include(if: false) { hasNextPage } "
            "edges { node { number @include(if: true) status @skip(if: false) "
            "product @skip(if: true) { code } } } } }",
            {},
            c,
        ),
        (
            "@include($var) true",
            "query I($with: Boolean!) { productionOrders(first: 3) { edges { node { number "
            "operations @include(if: $with) { sequence } components @skip(if: $with) "
            "{ quantityRequired } } } } }",
            {"with": True},
            c,
        ),
        (
            "@include($var) false",
            "query I($with: Boolean!) { productionOrders(first: 3) { edges { node { number "
            "operations @include(if: $with) { sequence } components @skip(if: $with) "
            "{ quantityRequired } } } } }",
            {"with": False},
            c,
        ),
        (
            "status filter",
            "{ productionOrders(first: 500, status: [ON_HOLD, CANCELLED]) { totalCount "
            "pageInfo { hasNextPage endCursor } edges { node { number status } } } }",
            {},
            c,
        ),
        (
            "empty status list (no filter)",
            "{ productionOrders(first: 5, status: []) { totalCount edges { node { number } } } }",
            {},
            c,
        ),
        (
            "workCenter filter, stripped",
            '{ productionOrders(first: 500, workCenter: "  WC-2 ") { totalCount '
            "edges { node { number workCenter { code } } } } }",
            {},
            c,
        ),
        (
            "unknown work center: an empty page",
            '{ productionOrders(workCenter: "NOPE") { totalCount pageInfo { hasNextPage '
            "startCursor endCursor } edges { cursor } } }",
            {},
            c,
        ),
        ("totalCount alone", "{ productionOrders { totalCount } }", {}, c),
        (
            "productionOrder by number",
            f"query One($n: String!) {{ productionOrder(number: $n) {{ {ALL_ORDER_FIELDS} }} }}",
            {"n": " PO-0002 "},
            c,
        ),
        (
            "productionOrder with empty lists and nulls",
            f'{{ productionOrder(number: "PO-0001") {{ {ALL_ORDER_FIELDS} }} }}',
            {},
            c,
        ),
        (
            "productionOrder unknown -> null",
            '{ productionOrder(number: "NO-SUCH") { number } x: productionOrders(first: 1) '
            "{ totalCount } }",
            {},
            c,
        ),
        (
            "operations' characteristics and inspections, deviations: empty lists",
            "{ productionOrders(first: 2) { edges { node { number operations { "
            "characteristics { name } inspections { number } } } } } "
            'productionOrder(number: "PO-0002") { number deviations { id } } }',
            {},
            c,
        ),
        (
            "a product's and its components' incoming characteristics: empty lists",
            "{ productionOrders(first: 3) { edges { node { product { code "
            "incomingCharacteristics { name } } components { material { "
            "incomingCharacteristics { id } } } } } } }",
            {},
            c,
        ),
        # ---- the resolvers answer these
        (
            "mutation",
            'mutation { holdProductionOrder(number: "NO-SUCH", reason: "x") { errors { code } } }',
            {},
            r,
        ),
        ("introspection", "{ __schema { queryType { name } } }", {}, r),
        (
            "introspection with a mapped root",
            '{ __type(name: "Material") { name } productionOrders { totalCount } }',
            {},
            r,
        ),
        ("negative first", "{ productionOrders(first: -1) { totalCount } }", {}, r),
        (
            "invalid cursor",
            '{ productionOrders(after: "bm90LWEtY3Vyc29y") { totalCount } }',
            {},
            r,
        ),
        (
            "non-compilable field (a consumer's roles)",
            "{ productionOrders(first: 2) { edges { node { components { consumptions { "
            "consumedBy { roles } } } } } } }",
            {},
            r,
        ),
        (
            "unmapped root next to a mapped one",
            "{ materials { totalCount } productionOrders(first: 1) { totalCount } }",
            {},
            r,
        ),
        (
            "abstract type condition",
            "{ productionOrders(first: 2) { edges { node { ... on Node { id } number } } } }",
            {},
            r,
        ),
        (
            "variables that do not coerce",
            "query V($first: Int) { productionOrders(first: $first) { totalCount } }",
            {"first": "many"},
            r,
        ),
        (
            "missing required variable",
            "query One($n: String!) { productionOrder(number: $n) { number } }",
            {},
            r,
        ),
    ]


async def seed(db: Database) -> dict[str, Any]:
    """The edge data; returns what the corpus needs to know of it."""
    async with db.write() as session:
        m1 = Material(
            code="M-1",
            name=TRICKY,
            kind=MaterialKind.FINISHED,
            unit="pcs",
            gtin=None,
            lot_controlled=True,
            shelf_life_days=None,
        )
        m2 = Material(
            code="M-2 😀",
            name='Raw \\ "two"',
            kind=MaterialKind.RAW,
            unit="kg",
            gtin="09506000134352",
            lot_controlled=False,
            shelf_life_days=0,
        )
        wc1 = WorkCenter(code="WC-1", name='Press "A" \\ 1\t😀')
        wc2 = WorkCenter(code="WC-2", name="Line\n2")
        session.add_all([m1, m2, wc1, wc2])
        await session.flush()
        statuses = list(OrderStatus)
        orders: list[ProductionOrder] = []
        for i in range(1, ORDERS + 1):
            order = ProductionOrder(
                number=f"PO-{i:04d}",
                external_id=None if i % 3 == 1 else f"ERP-{i}",
                product_id=(m1 if i % 2 else m2).id,
                quantity=Decimal("10.5") + i,
                quantity_good=Decimal("0"),
                quantity_scrap=Decimal("0"),
                status=statuses[i % len(statuses)],
                priority=i % 7 - 3,
                due_at=None if i % 4 == 1 else MICRO + dt.timedelta(days=i),
                work_center_id=None if i % 5 == 1 else (wc1 if i % 2 else wc2).id,
                content_hash="x" * 64,
                created_at=WHOLE + dt.timedelta(seconds=i),
                updated_at=MICRO + dt.timedelta(seconds=i),
            )
            orders.append(order)
        first, second = orders[0], orders[1]
        first.priority = -(2**31)
        first.work_center_id = None
        second.number = "PO-0002"
        second.external_id = TRICKY
        second.quantity = Decimal("0")
        second.quantity_good = Decimal("0.000001")
        second.quantity_scrap = Decimal("123456789012.123456")
        second.priority = 2**31 - 1
        second.due_at = TINY
        session.add_all(orders)
        await session.flush()
        for order in orders[1:]:
            i = order.id
            many = 3 if order is second else 1 + i % 2
            for seq in range(many):
                session.add(
                    OrderOperation(
                        order_id=order.id,
                        sequence=(many - seq) * 10,  # inserted out of order
                        name=TRICKY if order is second else f"Op {seq}",
                        instructions=None if seq else "Do it\r\n😀",
                        status=list(OperationStatus)[(i + seq) % 4],
                        work_center_id=None if seq == 1 else wc1.id,
                        quantity_good=Decimal("0.000001") * seq,
                        quantity_scrap=Decimal("99999999.999999") if seq == 2 else Decimal(0),
                        started_at=MICRO if seq == 0 else WHOLE if seq == 1 else None,
                        completed_at=TINY if seq == 2 else None,
                    )
                )
            for pos in range(2 if order is second else i % 3):
                session.add(
                    OrderComponent(
                        order_id=order.id,
                        position=5 - pos,  # the resolver orders by position
                        material_id=(m2 if pos else m1).id,
                        quantity_required=Decimal("123456789012.123456") if pos else Decimal(1),
                        quantity_consumed=Decimal("0.000001") if pos else Decimal(0),
                        operation_sequence=None if pos else 10,
                    )
                )
    return {"cursor_2": encode_cursor(orders[499].id), "cursor_last": encode_cursor(orders[-1].id)}


@pytest.fixture(scope="module")
async def clients(
    settings: Settings, db: Database
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with two_apps(settings) as pair:
        yield pair


@pytest.mark.postgres
async def test_compiled_reads_answer_as_the_resolvers(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    on, off = clients
    facts = await seed(db)
    _, token = await make_user("reader", Role.SUPERVISOR)
    cases = corpus(facts["cursor_2"], facts["cursor_last"])
    problems = await differences(on, off, cases, token)
    # Pages of 500 really ran: the big documents were not trivially small.
    big, _ = await post(on, cases[2][1], {}, token)
    assert big.count(b'"cursor"') == 500
    assert not problems, "\n\n".join(problems)


@pytest.mark.postgres
async def test_paging_through_every_order_compiled(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    """Following endCursor page by page gives the same pages both ways, then stops."""
    on, off = clients
    await seed(db)
    _, token = await make_user("pager", Role.OPERATOR)
    query = (
        "query P($after: String) { productionOrders(first: 150, after: $after, "
        "status: [PLANNED, RELEASED, IN_PROGRESS, ON_HOLD, COMPLETED, CLOSED]) { totalCount "
        "pageInfo { hasNextPage hasPreviousPage endCursor } edges { cursor node { number } } } }"
    )
    # 446 orders of those statuses, 150 a page
    await assert_pages_agree(on, off, query, "productionOrders", token, pages=3)


@pytest.mark.postgres
async def test_role_checks_come_first(
    db: Database,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anonymous and forbidden callers get exactly the resolver path's answer."""
    on, off = clients
    await seed(db)
    queries = {
        "productionOrders": "{ productionOrders(first: 2) { totalCount edges { node { id } } } }",
        "productionOrder": '{ productionOrder(number: "PO-0002") { operations { name } } }',
    }
    await assert_role_checks_come_first(on, off, queries, make_user, monkeypatch)


@pytest.mark.postgres
async def test_metrics_count_paths_and_fallbacks(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    on, _ = clients
    await seed(db)
    _, token = await make_user("metered", Role.SUPERVISOR)
    await post(on, "{ productionOrders { totalCount } }", {}, token)
    await post(on, "{ productionOrders(first: -1) { totalCount } }", {}, token)
    text = (await on.get("/metrics")).text
    assert re.search(r'^mes_graphql_reads_total\{path="compiled"\} [1-9]', text, re.M)
    assert re.search(r'^mes_graphql_reads_total\{path="resolvers"\} [1-9]', text, re.M)
    assert re.search(r'^mes_compiled_fallbacks_total\{reason="arguments"\} [1-9]', text, re.M)
    assert "# TYPE mes_compiled_fallbacks_total counter" in text


async def test_sqlite_steps_aside(
    db: Database, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], make_user: MakeUser
) -> None:
    """On SQLite the resolvers answer, the same as with compiled reads off."""
    skip_unless_sqlite(db)
    on, off = clients
    facts = await seed(db)
    _, token = await make_user("lite", Role.SUPERVISOR)
    await assert_sqlite_steps_aside(on, off, corpus(facts["cursor_2"], facts["cursor_last"]), token)


@pytest.mark.postgres
async def test_statements_hold_no_values(
    db: Database,
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Arguments are parameters: documents differing only in values share one statement
    (one prepared statement per shape), and no value appears in the SQL."""
    on, _ = clients
    await seed(db)
    _, token = await make_user("prepared", Role.SUPERVISOR)
    seen: list[tuple[str, list[Any]]] = []
    fetch = extension._fetch

    async def spy(services: Any, sql: str, parameters: list[Any]) -> bytes:
        seen.append((sql, parameters))
        return await fetch(services, sql, parameters)

    monkeypatch.setattr(extension, "_fetch", spy)
    for number, wc, first in (("PO-0002", "WC-1", 3), ("PO-0017", "WC-2", 11)):
        query = (
            f'{{ productionOrder(number: "{number}") {{ number }} '
            f'productionOrders(first: {first}, workCenter: "{wc}", status: [PLANNED]) '
            "{ totalCount edges { node { number } } } }"
        )
        _, path = await post(on, query, {}, token)
        assert path == "compiled"
    (sql_a, params_a), (sql_b, params_b) = seen
    assert sql_a == sql_b
    assert params_a != params_b
    for value in ("PO-0002", "PO-0017", "WC-1", "WC-2", "PLANNED"):
        assert value not in sql_a
