"""What the differential tests of compiled reads share: two apps (compiled reads on and off)
over one database, a request that says which path served it, the run of a corpus, the checks
each domain makes the same way (role checks first, a walk through every page, SQLite stepping
aside), the fields a corpus selects, and the edge data of lots, quality and equipment."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from graphql import FieldNode, GraphQLSchema, TypeInfo, TypeInfoVisitor, Visitor, parse, visit

from backend.app import create_app
from backend.auth import policy
from backend.auth.models import User
from backend.catalog.models import (
    Characteristic,
    CharacteristicKind,
    Equipment,
    EquipmentState,
    Material,
    MaterialKind,
    WorkCenter,
)
from backend.compiled.metrics import METRICS
from backend.db import Database
from backend.gql import encode_cursor
from backend.lots.models import Consumption, Lot, LotStatus
from backend.orders.models import (
    OperationStatus,
    OrderComponent,
    OrderOperation,
    OrderStatus,
    ProductionOrder,
)
from backend.principal import Role
from backend.quality.models import (
    Deviation,
    DeviationLot,
    DeviationSeverity,
    DeviationSource,
    DeviationStatus,
    Disposition,
    Inspection,
    InspectionResult,
    InspectionStatus,
    Signature,
)
from backend.settings import Settings

Case = tuple[str, str, dict[str, Any], str]  # (name, document, variables, expected path)
MakeUser = Callable[..., Awaitable[tuple[User, str]]]  # conftest's make_user

TRICKY = 'quote " backslash \\ tab \t newline \n ctrl \x01 del \x7f é ü 中文 😀 / end'
LOTS = 520
MICRO = dt.datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=dt.UTC)
WHOLE = dt.datetime(2026, 3, 1, 8, 30, 15, tzinfo=dt.UTC)
TINY = dt.datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC)
# Lots expire far ahead: the app's expiry job must not change them between two requests.
LATER = dt.datetime(2099, 3, 1, 8, 30, 15, 123456, tzinfo=dt.UTC)


@asynccontextmanager
async def two_apps(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """(compiled reads on, compiled reads off), two apps over the one test database. They
    trust no token from an earlier request: each test truncates the tables, so a new user gets
    an old id (and, within the same second, the same token)."""
    on = create_app(settings.model_copy(update={"compiled_reads": True, "auth_cache_seconds": 0}))
    off = create_app(settings.model_copy(update={"compiled_reads": False, "auth_cache_seconds": 0}))
    async with (
        on.router.lifespan_context(on),
        off.router.lifespan_context(off),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=on), base_url="http://on") as c_on,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=off), base_url="http://off") as c_off,
    ):
        yield c_on, c_off


async def post(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str | None
) -> tuple[bytes, str]:
    """(body, the path that served it: "compiled", "resolvers" or "none")."""
    variables = dict(variables)
    name = variables.pop("__operationName", None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    before = dict(METRICS.reads)
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables, "operationName": name},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    after = METRICS.reads
    served = [p for p in after if after[p] != before.get(p, 0)]
    return response.content, served[0] if len(served) == 1 else "none"


async def differences(
    on: httpx.AsyncClient, off: httpx.AsyncClient, corpus: list[Case], token: str | None
) -> list[str]:
    """Runs every case both ways; what differs, or was served by the wrong path."""
    problems: list[str] = []
    for name, query, variables, expected in corpus:
        body_on, path_on = await post(on, query, variables, token)
        body_off, path_off = await post(off, query, variables, token)
        if body_on != body_off:
            problems.append(
                f"{name}: bodies differ\n on: {body_on[:600]!r}\noff: {body_off[:600]!r}"
            )
        if path_off not in ("resolvers", "none"):
            problems.append(f"{name}: compiled reads off, yet served by {path_off}")
        if expected == "compiled" and path_on != "compiled":
            problems.append(f"{name}: served by {path_on}, expected compiled")
        if expected == "resolvers" and path_on == "compiled":
            problems.append(f"{name}: served compiled, expected the resolvers")
        if expected == "compiled" and b'"errors"' in body_on:
            problems.append(f"{name}: errors in a compiled case: {body_on[:300]!r}")
    return problems


async def assert_role_checks_come_first(
    on: httpx.AsyncClient,
    off: httpx.AsyncClient,
    queries: dict[str, str],
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`queries`: a root field -> a compiled document reading it. With each root made readable
    by QUALITY only (for this test), anonymous, an OPERATOR and a QUALITY user get the same
    answer both ways, and the compiled path runs only for the allowed one."""
    for root in queries:
        monkeypatch.setitem(policy.QUERIES, root, frozenset({Role.QUALITY}))
    _, operator = await make_user("operator", Role.OPERATOR)
    _, quality = await make_user("quality", Role.QUALITY)
    for query in queries.values():
        anonymous_on, path = await post(on, query, {}, None)
        anonymous_off, _ = await post(off, query, {}, None)
        assert anonymous_on == anonymous_off
        assert b"UNAUTHENTICATED" in anonymous_on
        assert path == "none"  # refused before any path ran
        forbidden_on, path = await post(on, query, {}, operator)
        forbidden_off, _ = await post(off, query, {}, operator)
        assert forbidden_on == forbidden_off
        assert b"FORBIDDEN" in forbidden_on
        assert path == "none"
        allowed_on, path = await post(on, query, {}, quality)
        allowed_off, _ = await post(off, query, {}, quality)
        assert allowed_on == allowed_off
        assert path == "compiled"


async def assert_pages_agree(
    on: httpx.AsyncClient,
    off: httpx.AsyncClient,
    query: str,
    root: str,
    token: str,
    pages: int,
) -> None:
    """Follows `root`'s endCursor page by page from the start, both ways: every page is the
    same bytes both ways and served compiled, the walk stops after `pages` pages, and the
    pages hold each of the connection's `totalCount` nodes once. `query` takes `$after` and
    selects `totalCount`, `pageInfo { hasNextPage endCursor }` and `edges { cursor }`."""
    after: str | None = None
    cursors: list[str] = []
    walked = 0
    while True:
        body_on, path = await post(on, query, {"after": after}, token)
        body_off, _ = await post(off, query, {"after": after}, token)
        assert body_on == body_off, f"page {walked + 1} differs"
        assert path == "compiled", f"page {walked + 1} served by {path}"
        page = httpx.Response(200, content=body_on).json()["data"][root]
        cursors += [edge["cursor"] for edge in page["edges"]]
        walked += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert walked == pages
    assert len(cursors) == len(set(cursors)) == page["totalCount"]


async def assert_sqlite_steps_aside(
    on: httpx.AsyncClient, off: httpx.AsyncClient, corpus: list[Case], token: str
) -> None:
    """On SQLite (the caller skips elsewhere) the corpus's compiled documents are answered by
    the resolvers, without errors and with the bytes of compiled reads off; each counts one
    `engine` fallback, so the extension did look at them and stepped aside."""
    compiled = [case for case in corpus if case[3] == "compiled"]
    assert compiled
    before = METRICS.fallbacks["engine"]
    for name, query, variables, _ in compiled:
        body_on, path = await post(on, query, variables, token)
        body_off, _ = await post(off, query, variables, token)
        assert body_on == body_off, name
        assert path == "resolvers", name
        assert b'"errors"' not in body_on, name
    assert METRICS.fallbacks["engine"] == before + len(compiled)


def skip_unless_sqlite(db: Database) -> None:
    """The steps-aside tests: on PostgreSQL the compiled path answers (the corpus tests)."""
    if db.dialect_name != "sqlite":
        pytest.skip("SQLite only: on PostgreSQL the compiled path answers (the corpus tests)")


def selected_fields(schema: GraphQLSchema, corpus: list[Case]) -> set[tuple[str, str]]:
    """(type, field) pairs selected by the corpus's compiled documents."""
    selected: set[tuple[str, str]] = set()
    for _, query, _, expected in corpus:
        if expected != "compiled":
            continue
        info = TypeInfo(schema)

        class Fields(Visitor):
            def enter_field(self, node: FieldNode, *_: Any, info: TypeInfo = info) -> None:
                parent = info.get_parent_type()
                if parent is not None and not node.name.value.startswith("__"):
                    selected.add((parent.name, node.name.value))

        visit(parse(query), TypeInfoVisitor(info, Fields()))
    return selected


async def seed(db: Database) -> dict[str, Any]:
    """Lots, consumptions, inspections, deviations and equipment with edge values; returns
    what the corpora need to know of them."""
    q = Decimal
    async with db.write() as session:
        u1 = User(username="ann", display_name=TRICKY, password_hash="x", roles=["OPERATOR"])
        u2 = User(username="bob 😀", display_name="Bob", password_hash="x", roles=[])
        m1 = Material(
            code="M-1",
            name=TRICKY,
            kind=MaterialKind.RAW,
            unit="kg",
            gtin=None,
            lot_controlled=True,
            shelf_life_days=None,
        )
        m2 = Material(
            code="M-2 😀",
            name="Two",
            kind=MaterialKind.FINISHED,
            unit="pcs",
            gtin="09506000134352",
            lot_controlled=True,
            shelf_life_days=0,
        )
        m3 = Material(
            code="M-3",
            name="No lots",
            kind=MaterialKind.RAW,
            unit="l",
            gtin=None,
            lot_controlled=False,
            shelf_life_days=30,
        )
        wc_b = WorkCenter(code="WC-B", name='Press "B" \\ 😀\t')
        wc_a = WorkCenter(code="WC-A", name="Line\nA")
        wc_empty = WorkCenter(code="WC-C", name="No equipment")
        session.add_all([u1, u2, m1, m2, m3, wc_b, wc_a, wc_empty])
        await session.flush()
        session.add_all(
            [
                Equipment(
                    code="EQ-2",
                    name=TRICKY,
                    work_center_id=wc_a.id,
                    ideal_cycle_seconds=0.1,
                    state=EquipmentState.DOWN,
                    state_reason=TRICKY,
                    state_since=MICRO,
                ),
                Equipment(
                    code="EQ-1",
                    name="One",
                    work_center_id=wc_a.id,
                    ideal_cycle_seconds=None,
                    state=EquipmentState.RUNNING,
                    state_reason=None,
                    state_since=WHOLE,
                ),
                Equipment(
                    code="EQ-3",
                    name="Three",
                    work_center_id=wc_b.id,
                    ideal_cycle_seconds=1e-7,
                    state=EquipmentState.OFFLINE,
                    state_reason="",
                    state_since=None,
                ),
                Equipment(code="EQ-0", name="Nowhere", work_center_id=None),
                # Floats where orjson's notation switches (fixed below 1e16, ".0" when
                # integral) and PostgreSQL's does not (1e+15).
                Equipment(
                    code="EQ-4", name="Four", work_center_id=wc_b.id, ideal_cycle_seconds=1e15
                ),
                Equipment(
                    code="EQ-5", name="Five", work_center_id=wc_b.id, ideal_cycle_seconds=1e16
                ),
                Equipment(code="EQ-6", name="Six", work_center_id=wc_b.id, ideal_cycle_seconds=2.5),
                Equipment(
                    code="EQ-7", name="Seven", work_center_id=wc_b.id, ideal_cycle_seconds=-0.0
                ),
            ]
        )
        orders = [
            ProductionOrder(
                number=f"PO-{i}",
                external_id=None,
                product_id=m2.id,
                quantity=q("5"),
                quantity_good=q(0),
                quantity_scrap=q(0),
                status=OrderStatus.IN_PROGRESS,
                priority=0,
                due_at=None,
                work_center_id=wc_a.id if i else None,
                content_hash="x" * 64,
                created_at=WHOLE,
                updated_at=MICRO,
            )
            for i in range(3)
        ]
        session.add_all(orders)
        await session.flush()
        operation = OrderOperation(
            order_id=orders[0].id,
            sequence=10,
            name="Op",
            instructions=None,
            status=OperationStatus.RUNNING,
            work_center_id=wc_a.id,
            quantity_good=q(0),
            quantity_scrap=q(0),
            started_at=MICRO,
            completed_at=None,
        )
        session.add(operation)
        components = [
            OrderComponent(
                order_id=orders[0].id,
                position=2 - n,
                material_id=m1.id,
                quantity_required=q("10"),
                quantity_consumed=q("0.000001"),
                operation_sequence=10 if n else None,
            )
            for n in range(2)
        ]
        session.add_all(components)
        # M-3 has no lots: an order's component is how a read reaches its characteristics.
        session.add(
            OrderComponent(
                order_id=orders[1].id,
                position=1,
                material_id=m3.id,
                quantity_required=q("0.5"),
                quantity_consumed=q(0),
                operation_sequence=None,
            )
        )
        await session.flush()
        statuses = list(LotStatus)
        lots: list[Lot] = []
        for i in range(1, LOTS + 1):
            lots.append(
                Lot(
                    number=f"L-{i:04d}",
                    material_id=(m1 if i % 3 else m2).id,
                    quantity=q("123456789012.123456") if i == 2 else q(i) / 1000,
                    initial_quantity=q(i),
                    status=statuses[i % len(statuses)],
                    expires_at=None
                    if i % 4 == 1
                    else LATER + dt.timedelta(days=i, microseconds=-123456 * (i % 2)),
                    supplier_lot=TRICKY if i == 2 else None if i % 2 else f"S-{i}",
                    produced_by_order_id=orders[i % 3].id if i % 5 == 0 else None,
                    created_by="x",
                    created_at=TINY if i == 2 else WHOLE + dt.timedelta(seconds=i),
                )
            )
        lots[0].number = "L-0001"
        session.add_all(lots)
        await session.flush()
        # Consumptions: out of id order by time; one without a user (an API token).
        for n, (user, quantity) in enumerate(
            [(u1, q("0.000001")), (None, q("99999999.999999")), (u2, q(0))]
        ):
            session.add(
                Consumption(
                    lot_id=lots[n].id,
                    order_id=orders[0].id,
                    component_id=components[0].id,
                    operation_sequence=None,
                    quantity=quantity,
                    consumed_at=[MICRO, WHOLE, TINY][n],
                    consumed_by_id=user.id if user else None,
                    consumed_by=user.username if user else "token 😀",
                    raw_code=TRICKY,
                )
            )
        ch1 = Characteristic(
            material_id=m1.id,
            position=1,
            name=TRICKY,
            kind=CharacteristicKind.NUMERIC,
            unit="mm",
            nominal=0.1,
            lower_limit=None,
            upper_limit=1e21,
        )
        ch2 = Characteristic(
            operation_id=operation.id,
            position=1,
            name="Visual",
            kind=CharacteristicKind.ATTRIBUTE,
            unit=None,
        )
        ch3 = Characteristic(
            material_id=m1.id,
            position=2,
            name="Colour",
            kind=CharacteristicKind.ATTRIBUTE,
            unit="",
        )
        # Floats at the notation switches: -0.0, 0.00001 (PostgreSQL: 1e-05), 1e-6, integral
        # values (100.0), 16 digits with a fraction, 2**53 + 2, the smallest subnormal.
        edge_limits = [
            (-0.0, 1e-05, 1234567890123456.2),
            (100.0, 5e-324, 1e16),
            (1e-06, -1.5e-07, 9007199254740994.0),
        ]
        edge_characteristics = [
            Characteristic(
                material_id=m1.id,
                position=3 + n,
                name=f"Edge {n}",
                kind=CharacteristicKind.NUMERIC,
                unit="mm",
                nominal=nominal,
                lower_limit=lower,
                upper_limit=upper,
            )
            for n, (nominal, lower, upper) in enumerate(edge_limits)
        ]
        ch7 = Characteristic(
            operation_id=operation.id,
            position=2,
            name="Width",
            kind=CharacteristicKind.NUMERIC,
            unit="mm",
            nominal=2.5,
            lower_limit=2.0,
            upper_limit=3.0,
        )
        # M-3's incoming characteristics, inserted against their positions (ids descend as
        # the positions rise): Material.incomingCharacteristics is by position.
        m3_characteristics = [
            Characteristic(
                material_id=m3.id,
                position=position,
                name=name,
                kind=kind,
                unit=unit,
                nominal=nominal,
            )
            for position, name, kind, unit, nominal in (
                (7, "Clarity 😀", CharacteristicKind.ATTRIBUTE, None, None),
                (3, TRICKY, CharacteristicKind.NUMERIC, "", 0.5),
                (0, "Density", CharacteristicKind.NUMERIC, "g/ml", 1e-05),
            )
        ]
        session.add_all([ch1, ch2, ch3, *edge_characteristics, ch7, *m3_characteristics])
        await session.flush()
        i1 = Inspection(
            number="IN-1",
            status=InspectionStatus.FAILED,
            lot_id=lots[0].id,
            created_by="x",
            created_at=MICRO,
            completed_at=WHOLE,
        )
        i2 = Inspection(
            number="IN-2 😀",
            status=InspectionStatus.OPEN,
            order_id=orders[0].id,
            operation_id=operation.id,
            created_by="x",
            created_at=WHOLE,
            completed_at=None,
        )
        i3 = Inspection(
            number="IN-3",
            status=InspectionStatus.PASSED,
            lot_id=lots[1].id,
            created_by="x",
            created_at=TINY,
            completed_at=TINY,
        )
        i4 = Inspection(
            number="IN-4",
            status=InspectionStatus.OPEN,
            lot_id=lots[2].id,  # of M-2: no characteristics
            created_by="x",
            created_at=WHOLE,
            completed_at=None,
        )
        session.add_all([i1, i2, i3, i4])
        await session.flush()
        session.add_all(
            [
                InspectionResult(
                    inspection_id=i1.id,
                    characteristic_id=ch1.id,
                    value=0.30000000000000004,
                    passed=False,
                    note=TRICKY,
                    recorded_by_id=u1.id,
                    recorded_by="ann",
                    recorded_at=MICRO,
                ),
                InspectionResult(
                    inspection_id=i1.id,
                    characteristic_id=ch3.id,
                    value=None,
                    passed=True,
                    note=None,
                    recorded_by_id=None,
                    recorded_by="token 😀",
                    recorded_at=WHOLE,
                ),
                *(
                    InspectionResult(
                        inspection_id=i1.id,
                        characteristic_id=ch.id,
                        value=value,
                        passed=True,
                        note=None,
                        recorded_by_id=None,
                        recorded_by="",  # a token's name, empty: the stand-in user prints it
                        recorded_at=MICRO,
                    )
                    for ch, value in zip(
                        edge_characteristics, (-0.0, 1e15 + 0.5, 123456.789), strict=True
                    )
                ),
                InspectionResult(
                    inspection_id=i2.id,
                    characteristic_id=ch2.id,
                    value=1e-7,
                    passed=True,
                    note="",
                    recorded_by_id=u2.id,
                    recorded_by="bob",
                    recorded_at=TINY,
                ),
            ]
        )
        d1 = Deviation(
            number="DEV-1",
            title=TRICKY,
            description=None,
            severity=DeviationSeverity.CRITICAL,
            status=DeviationStatus.OPEN,
            source=DeviationSource.INSPECTION,
            disposition=None,
            order_id=orders[0].id,
            inspection_id=i1.id,
            raised_by_id=u1.id,
            raised_by="ann",
            raised_at=MICRO,
        )
        d2 = Deviation(
            number="DEV-2",
            title="Plain",
            description=TRICKY,
            severity=DeviationSeverity.MINOR,
            status=DeviationStatus.APPROVED,
            source=DeviationSource.MANUAL,
            disposition=Disposition.RETURN_TO_SUPPLIER,
            order_id=None,
            inspection_id=None,
            raised_by_id=None,
            raised_by="token 😀",
            raised_at=WHOLE,
            decided_at=MICRO,
        )
        d3 = Deviation(
            number="DEV-3",
            title="Rejected",
            description="",
            severity=DeviationSeverity.MAJOR,
            status=DeviationStatus.REJECTED,
            source=DeviationSource.SCAN,
            disposition=Disposition.SCRAP,
            raised_by_id=u2.id,
            raised_by="bob",
            raised_at=TINY,
        )
        session.add_all([d1, d2, d3])
        await session.flush()
        # DEV-1's lots by position, not by id; DEV-2 has none.
        for position, lot in ((2, lots[0]), (1, lots[4]), (3, lots[2])):
            session.add(DeviationLot(deviation_id=d1.id, lot_id=lot.id, position=position))
        session.add(DeviationLot(deviation_id=d3.id, lot_id=lots[0].id, position=1))
        for n, (signer, reason) in enumerate(((u2, None), (u1, TRICKY))):
            session.add(
                Signature(
                    deviation_id=d3.id,
                    signer_id=signer.id,
                    signer=signer.username,
                    signer_display_name=signer.display_name,
                    meaning=f"Approved {n} 😀",
                    reason=reason,
                    signed_at=[MICRO, WHOLE][n],
                    content_hash="a" * 64,
                )
            )
    return {
        "lot_cursor_500": encode_cursor(lots[499].id),
        "lot_cursor_last": encode_cursor(lots[-1].id),
    }
