"""Shop floor operations through GraphQL: startOperation and completeOperation, the order
they move along, the quality gate, and safe replay by clientMutationId."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from orders_support import ACTIONS, UPSERT, Caller, order_input, row_counts, set_status
from sqlalchemy import func, select

from backend.audit.models import AuditEntry
from backend.db import Database
from backend.events import Broadcast
from backend.gql import Context, Services
from backend.graphql import build_schema
from backend.orders.models import OrderOperation, OrderStatus, ProductionOrder
from backend.principal import Principal, Role
from backend.replay.models import MutationOutcome

pytestmark = pytest.mark.usefixtures("plant")

S = OrderStatus
ERRORS = "errors { code message field }"
OPERATION = "sequence status quantityGood quantityScrap startedAt completedAt"
ORDER = "number status quantityGood quantityScrap updatedAt operations { sequence status }"
PAYLOAD = f"operation {{ {OPERATION} }} order {{ {ORDER} }} {ERRORS}"
START = f"""
mutation Start($input: OperationActionInput!) {{ startOperation(input: $input) {{ {PAYLOAD} }} }}
"""
COMPLETE = f"""
mutation Complete($input: CompleteOperationInput!) {{
  completeOperation(input: $input) {{ {PAYLOAD} }}
}}
"""
ORDER_QUERY = f"query($number: String!) {{ productionOrder(number: $number) {{ {ORDER} }} }}"

_ids = itertools.count(1)


def plain_operations(*sequences: int) -> list[dict[str, Any]]:
    """Operations without characteristics: nothing holds them at the quality gate."""
    return [{"sequence": s, "name": f"Step {s}", "workCenterCode": "WC-1"} for s in sequences]


class Floor:
    """An operator at the line: starts and completes operations of orders."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    async def start(
        self, sequence: int, number: str = "PO-1", *, cmid: str | None = None
    ) -> dict[str, Any]:
        variables = {"clientMutationId": cmid or f"start-{next(_ids)}"}
        variables |= {"orderNumber": number, "sequence": sequence}
        body = await self.caller.data(START, {"input": variables})
        payload: dict[str, Any] = body["startOperation"]
        return payload

    async def complete(
        self,
        sequence: int,
        good: str = "10",
        scrap: str = "0",
        reason: str | None = None,
        number: str = "PO-1",
        *,
        cmid: str | None = None,
    ) -> dict[str, Any]:
        variables = {
            "clientMutationId": cmid or f"complete-{next(_ids)}",
            "orderNumber": number,
            "sequence": sequence,
            "quantityGood": good,
            "quantityScrap": scrap,
            "scrapReason": reason,
        }
        body = await self.caller.data(COMPLETE, {"input": variables})
        payload: dict[str, Any] = body["completeOperation"]
        return payload


@pytest.fixture
async def olga(as_role: Callable[..., Awaitable[Caller]]) -> Floor:
    return Floor(await as_role(Role.OPERATOR, username="olga"))


async def make_order(
    erp: Caller, operations: list[dict[str, Any]], number: str = "PO-1", release: bool = True
) -> None:
    created = await erp.data(
        UPSERT, {"input": order_input(f"ERP-{number}", number, operations=operations)}
    )
    assert created["upsertProductionOrder"]["errors"] == []
    if release:
        released = await erp.data(ACTIONS["release"][0], {"number": number})
        assert released["releaseProductionOrder"]["errors"] == []


@pytest.fixture
async def order(erp: Caller, plant: None) -> None:
    """PO-1, released, with operations 10, 20 and 30 and no characteristics."""
    await make_order(erp, plain_operations(10, 20, 30), release=True)


async def stored(db: Database) -> dict[str, Any]:
    """Everything a refusal must leave alone: row counts, audit trail, orders, operations."""
    async with db.read() as session:
        orders = [
            (o.number, o.status, o.quantity_good, o.quantity_scrap, o.updated_at)
            for o in await session.scalars(select(ProductionOrder).order_by(ProductionOrder.id))
        ]
        operations = [
            (
                o.order_id,
                o.sequence,
                o.status,
                o.quantity_good,
                o.quantity_scrap,
                o.scrap_reason,
                o.started_at,
                o.completed_at,
            )
            for o in await session.scalars(select(OrderOperation).order_by(OrderOperation.id))
        ]
    return {"counts": await row_counts(db), "orders": orders, "operations": operations}


async def audit_actions(db: Database) -> list[tuple[str, str, str]]:
    async with db.read() as session:
        entries = await session.scalars(select(AuditEntry).order_by(AuditEntry.sequence))
        return [(e.action, e.entity_type, e.actor) for e in entries]


async def last_audits(db: Database, count: int) -> list[tuple[str, dict[str, Any] | None]]:
    async with db.read() as session:
        entries = list(
            await session.scalars(
                select(AuditEntry).order_by(AuditEntry.sequence.desc()).limit(count)
            )
        )
    return [(e.action, e.changes) for e in reversed(entries)]


async def outcomes(db: Database) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(MutationOutcome)) or 0)


def codes(payload: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["code"], e["field"]) for e in payload["errors"]]


def statuses(payload: dict[str, Any]) -> list[tuple[int, str]]:
    return [(o["sequence"], o["status"]) for o in payload["order"]["operations"]]


# ---------------------------------------------------------------- the happy path


@pytest.mark.usefixtures("order")
async def test_an_order_runs_from_release_to_close(olga: Floor, erp: Caller, db: Database) -> None:
    started = await olga.start(10, " PO-1 ")
    assert started["errors"] == []
    assert started["operation"]["status"] == "RUNNING"
    assert started["operation"]["startedAt"] is not None
    assert started["operation"]["completedAt"] is None
    assert started["order"]["status"] == "IN_PROGRESS"
    assert statuses(started) == [(10, "RUNNING"), (20, "PENDING"), (30, "PENDING")]
    assert await last_audits(db, 2) == [
        (
            "operation.start",
            {"order": "PO-1", "sequence": 10, "status": ["READY", "RUNNING"]},
        ),
        ("order.start", {"status": ["RELEASED", "IN_PROGRESS"]}),
    ]

    done = await olga.complete(10, good="98.5", scrap="1.5", reason="  Lumps in the resin ")
    assert done["errors"] == []
    op = done["operation"]
    assert (op["status"], op["quantityGood"], op["quantityScrap"]) == (
        "DONE",
        "98.500000",
        "1.500000",
    )
    assert op["completedAt"] is not None
    assert op["completedAt"] >= op["startedAt"]
    assert statuses(done) == [(10, "DONE"), (20, "READY"), (30, "PENDING")]
    # Only the last operation's quantities are the order's.
    order = done["order"]
    assert (order["status"], order["quantityGood"], order["quantityScrap"]) == (
        "IN_PROGRESS",
        "0.000000",
        "0.000000",
    )
    assert await last_audits(db, 1) == [
        (
            "operation.complete",
            {
                "order": "PO-1",
                "sequence": 10,
                "status": ["RUNNING", "DONE"],
                "quantityGood": "98.500000",
                "quantityScrap": "1.500000",
                "scrapReason": "Lumps in the resin",
                "next": {"sequence": 20, "status": ["PENDING", "READY"]},
            },
        )
    ]

    assert (await olga.start(20))["order"]["status"] == "IN_PROGRESS"
    assert (await olga.complete(20, good="97", scrap="0"))["errors"] == []
    assert (await olga.start(30))["errors"] == []
    last = await olga.complete(30, good="96", scrap="1", reason="Seal torn")
    assert last["errors"] == []
    assert statuses(last) == [(10, "DONE"), (20, "DONE"), (30, "DONE")]
    order = last["order"]
    assert (order["status"], order["quantityGood"], order["quantityScrap"]) == (
        "COMPLETED",
        "96.000000",
        "1.000000",
    )
    assert (await erp.data(ORDER_QUERY, {"number": "PO-1"}))["productionOrder"] == order
    assert (await last_audits(db, 2))[1] == (
        "order.complete",
        {
            "status": ["IN_PROGRESS", "COMPLETED"],
            "quantityGood": ["0.000000", "96.000000"],
            "quantityScrap": ["0.000000", "1.000000"],
        },
    )
    async with db.read() as session:
        reasons = list(
            await session.scalars(
                select(OrderOperation.scrap_reason).order_by(OrderOperation.sequence)
            )
        )
    assert reasons == ["Lumps in the resin", None, "Seal torn"]

    closed = await erp.data(ACTIONS["close"][0], {"number": "PO-1"})
    assert closed["closeProductionOrder"] == {
        "order": {"number": "PO-1", "status": "CLOSED"},
        "errors": [],
    }
    assert [a for a in await audit_actions(db) if a[2] == "olga"] == [
        ("operation.start", "OrderOperation", "olga"),
        ("order.start", "ProductionOrder", "olga"),
        ("operation.complete", "OrderOperation", "olga"),
        ("operation.start", "OrderOperation", "olga"),
        ("operation.complete", "OrderOperation", "olga"),
        ("operation.start", "OrderOperation", "olga"),
        ("operation.complete", "OrderOperation", "olga"),
        ("order.complete", "ProductionOrder", "olga"),
    ]


async def test_a_supervisor_may_run_operations_but_erp_and_quality_may_not(
    erp: Caller, db: Database, as_role: Callable[..., Awaitable[Caller]]
) -> None:
    await make_order(erp, plain_operations(10))
    for role in (Role.ERP, Role.QUALITY, Role.EQUIPMENT):
        caller = Floor(await as_role(role))
        before = await stored(db)
        assert codes(await caller.start(10)) == [("FORBIDDEN", None)]
        assert await stored(db) == before
    supervisor = Floor(await as_role(Role.SUPERVISOR))
    assert (await supervisor.start(10))["operation"]["status"] == "RUNNING"
    assert (await supervisor.complete(10))["order"]["status"] == "COMPLETED"


# ---------------------------------------------------------------- refusals


async def assert_refused(
    db: Database,
    call: Awaitable[dict[str, Any]],
    code: str,
    field: str | None,
    *mentions: str,
) -> dict[str, Any]:
    """The call is refused with `code` on `field`, and nothing is written."""
    before = await stored(db)
    payload = await call
    assert (payload["operation"], payload["order"]) == (None, None)
    assert codes(payload) == [(code, field)]
    for text in mentions:
        assert text in payload["errors"][0]["message"]
    assert await stored(db) == before
    return payload


NOT_WORKING = [S.PLANNED, S.ON_HOLD, S.COMPLETED, S.CLOSED, S.CANCELLED]


@pytest.mark.usefixtures("order")
@pytest.mark.parametrize("status", NOT_WORKING)
async def test_no_operation_starts_unless_the_order_is_released_or_in_progress(
    olga: Floor, db: Database, status: OrderStatus
) -> None:
    # Operation 10 stays READY: only the order's state stands in the way.
    await set_status(db, "PO-1", status, S.RELEASED if status is S.ON_HOLD else None)
    await assert_refused(db, olga.start(10), "INVALID_TRANSITION", None, status.value, "PO-1")


@pytest.mark.usefixtures("order")
@pytest.mark.parametrize("status", NOT_WORKING)
async def test_no_operation_completes_unless_the_order_is_released_or_in_progress(
    olga: Floor, db: Database, status: OrderStatus
) -> None:
    assert (await olga.start(10))["errors"] == []
    await set_status(db, "PO-1", status, S.IN_PROGRESS if status is S.ON_HOLD else None)
    await assert_refused(db, olga.complete(10), "INVALID_TRANSITION", None, status.value)


@pytest.mark.usefixtures("order")
async def test_a_held_order_stops_work_until_it_is_resumed(
    olga: Floor, erp: Caller, db: Database
) -> None:
    await olga.start(10)
    held = await erp.data(ACTIONS["hold"][0], {"number": "PO-1", "reason": "Mixer jammed"})
    assert held["holdProductionOrder"]["order"]["status"] == "ON_HOLD"
    await assert_refused(db, olga.complete(10), "INVALID_TRANSITION", None, "ON_HOLD")

    await erp.data(ACTIONS["resume"][0], {"number": "PO-1"})
    assert (await olga.complete(10))["operation"]["status"] == "DONE"


@pytest.mark.usefixtures("order")
async def test_operations_move_only_ready_to_running_to_done(olga: Floor, db: Database) -> None:
    await assert_refused(db, olga.start(20), "INVALID_TRANSITION", None, "PENDING", "READY")
    await assert_refused(db, olga.complete(10), "INVALID_TRANSITION", None, "READY", "RUNNING")

    await olga.start(10)
    await assert_refused(db, olga.start(10), "INVALID_TRANSITION", None, "RUNNING", "READY")
    await assert_refused(db, olga.complete(20), "INVALID_TRANSITION", None, "PENDING")

    assert (await olga.complete(10, good="5"))["errors"] == []
    await assert_refused(db, olga.complete(10, good="6"), "INVALID_TRANSITION", None, "DONE")
    await assert_refused(db, olga.start(10), "INVALID_TRANSITION", None, "DONE")
    async with db.read() as session:
        first = await session.scalar(select(OrderOperation).where(OrderOperation.sequence == 10))
    assert first is not None
    assert str(first.quantity_good) == "5.000000"


@pytest.mark.usefixtures("order")
@pytest.mark.parametrize(
    ("good", "scrap", "reason", "field"),
    [
        ("10", "2", None, "scrapReason"),
        ("10", "2", "   ", "scrapReason"),
        ("-1", "0", None, "quantityGood"),
        ("10", "-0.5", "Spilled", "quantityScrap"),
        ("1.0000001", "0", None, "quantityGood"),
        ("10", "1e12", "Everything", "quantityScrap"),
        ("NaN", "0", None, "quantityGood"),
        ("10", "sNaN", "Spilled", "quantityScrap"),
    ],
)
async def test_bad_quantities_and_scrap_without_a_reason_are_invalid_input(
    olga: Floor, db: Database, good: str, scrap: str, reason: str | None, field: str
) -> None:
    await olga.start(10)
    await assert_refused(db, olga.complete(10, good, scrap, reason), "INVALID_INPUT", field)


@pytest.mark.usefixtures("order")
async def test_every_input_problem_is_reported_at_once(olga: Floor, db: Database) -> None:
    await olga.start(10)
    before = await stored(db)
    payload = await olga.complete(10, good="-1", scrap="3")
    assert codes(payload) == [
        ("INVALID_INPUT", "quantityGood"),
        ("INVALID_INPUT", "scrapReason"),
    ]
    assert await stored(db) == before


@pytest.mark.usefixtures("order")
async def test_zero_scrap_needs_no_reason(olga: Floor) -> None:
    await olga.start(10)
    done = await olga.complete(10, good="0", scrap="0")
    assert (done["errors"], done["operation"]["quantityGood"]) == ([], "0.000000")


@pytest.mark.usefixtures("order")
@pytest.mark.parametrize("action", ["start", "complete"])
async def test_unknown_orders_and_sequences_are_not_found(
    olga: Floor, db: Database, action: str
) -> None:
    call = olga.start if action == "start" else olga.complete
    await assert_refused(db, call(10, number="PO-404"), "NOT_FOUND", "orderNumber", "PO-404")
    await assert_refused(db, call(15), "NOT_FOUND", "sequence", "15")


@pytest.mark.usefixtures("order")
async def test_two_operators_at_once_move_an_operation_only_once(
    olga: Floor, db: Database, as_role: Callable[..., Awaitable[Caller]]
) -> None:
    bob = Floor(await as_role(Role.OPERATOR, username="bob"))

    starts = await asyncio.gather(olga.start(10), bob.start(10))
    completions = await asyncio.gather(olga.complete(10, "5"), bob.complete(10, "6"))

    for pair in (starts, completions):
        assert sorted(codes(p) for p in pair) == [[], [("INVALID_TRANSITION", None)]]
    actions = [a[0] for a in await audit_actions(db)]
    assert actions.count("operation.start") == 1
    assert actions.count("order.start") == 1
    assert actions.count("operation.complete") == 1
    [winner] = [p for p in completions if not p["errors"]]
    async with db.read() as session:
        first = await session.scalar(select(OrderOperation).where(OrderOperation.sequence == 10))
    assert first is not None
    assert str(first.quantity_good) == winner["operation"]["quantityGood"]


# ---------------------------------------------------------------- the quality gate


async def test_an_operation_with_characteristics_cannot_complete(
    olga: Floor, erp: Caller, db: Database
) -> None:
    operations = plain_operations(10, 20)
    operations[1]["characteristics"] = [{"name": "Seal intact", "kind": "ATTRIBUTE"}]
    await make_order(erp, operations)
    await olga.start(10)
    assert (await olga.complete(10))["errors"] == []  # no characteristics: no gate

    assert (await olga.start(20))["operation"]["status"] == "RUNNING"
    payload = await assert_refused(db, olga.complete(20), "INVALID_TRANSITION", None)
    assert payload["errors"][0]["message"] == (
        "operation 20 needs a passed inspection, or an approved deviation, "
        "before it can be completed"
    )
    order = (await erp.data(ORDER_QUERY, {"number": "PO-1"}))["productionOrder"]
    assert (order["status"], statuses({"order": order})) == (
        "IN_PROGRESS",
        [(10, "DONE"), (20, "RUNNING")],
    )


# ---------------------------------------------------------------- replay


@pytest.mark.usefixtures("order")
async def test_a_resent_start_returns_the_first_answer_and_changes_nothing(
    olga: Floor, db: Database
) -> None:
    first = await olga.start(10, cmid="tablet-7:0001")
    assert first["errors"] == []
    before, kept = await stored(db), await outcomes(db)

    again = await olga.start(10, cmid="tablet-7:0001")

    # Run afresh it would be refused: the operation is RUNNING already.
    assert again == first
    assert (await stored(db), await outcomes(db)) == (before, kept)


@pytest.mark.usefixtures("order")
async def test_a_resent_completion_does_not_complete_twice(olga: Floor, db: Database) -> None:
    await olga.start(10)
    first = await olga.complete(10, "90", "2", "Burnt", cmid="c-1")
    assert first["errors"] == []
    before, kept = await stored(db), await outcomes(db)

    # The same request, quantities written differently: still a resend.
    again = await olga.complete(10, "90.000", "2.0", " Burnt ", cmid="c-1")

    assert again == first
    assert (await stored(db), await outcomes(db)) == (before, kept)
    assert statuses(again) == [(10, "DONE"), (20, "READY"), (30, "PENDING")]


@pytest.mark.usefixtures("order")
async def test_a_reused_id_for_a_different_request_is_a_conflict(olga: Floor, db: Database) -> None:
    await olga.start(10, cmid="c-1")
    await assert_refused(db, olga.complete(10, cmid="c-1"), "CONFLICT", "clientMutationId")
    assert (await olga.complete(10, "7", cmid="c-2"))["errors"] == []
    await assert_refused(db, olga.complete(10, "8", cmid="c-2"), "CONFLICT", "clientMutationId")
    await assert_refused(db, olga.start(20, cmid="c-1"), "CONFLICT", "clientMutationId")


@pytest.mark.usefixtures("order")
async def test_a_resent_refusal_returns_the_same_errors_even_when_it_would_now_succeed(
    olga: Floor, db: Database
) -> None:
    refused = await olga.start(20, cmid="early")
    assert codes(refused) == [("INVALID_TRANSITION", None)]
    await olga.start(10)
    await olga.complete(10)  # now operation 20 is READY

    again = await assert_refused(db, olga.start(20, cmid="early"), "INVALID_TRANSITION", None)

    assert again == refused
    assert (await olga.start(20, cmid="later"))["operation"]["status"] == "RUNNING"


@pytest.mark.usefixtures("order")
async def test_replay_ids_belong_to_each_operator(
    olga: Floor, db: Database, as_role: Callable[..., Awaitable[Caller]]
) -> None:
    bob = Floor(await as_role(Role.OPERATOR, username="bob"))
    assert (await olga.start(10, cmid="shared-id"))["errors"] == []

    done = await bob.complete(10, "12", cmid="shared-id")

    assert (done["errors"], done["operation"]["status"]) == ([], "DONE")
    assert [a for a in await audit_actions(db) if a[0].startswith("operation.")] == [
        ("operation.start", "OrderOperation", "olga"),
        ("operation.complete", "OrderOperation", "bob"),
    ]
    # Each one's id still answers with their own first outcome.
    assert (await olga.start(10, cmid="shared-id"))["operation"]["status"] == "DONE"
    assert (await bob.complete(10, "12", cmid="shared-id")) == done


@pytest.mark.usefixtures("order")
async def test_a_blank_client_mutation_id_is_invalid(olga: Floor, db: Database) -> None:
    await assert_refused(db, olga.start(10, cmid="  "), "INVALID_INPUT", "clientMutationId")


# ---------------------------------------------------------------- productionOrderChanged


class Watched:
    """The app's broadcast, telling the test when the subscription listens."""

    def __init__(self, inner: Broadcast) -> None:
        self.inner = inner
        self.subscribed = asyncio.Event()

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        await self.inner.publish(channel, payload)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        async with self.inner.subscribe(channel) as events:
            self.subscribed.set()
            yield events

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        """The app closes the real broadcast."""


@pytest.mark.usefixtures("order")
async def test_production_order_changed_fires_once_per_start_and_completion(
    olga: Floor, app: Any
) -> None:
    services: Services = app.state.services
    watched = Watched(services.broadcast)
    context = Context(
        services=dataclasses.replace(services, broadcast=watched),  # type: ignore[arg-type]
        principal=Principal(name="sue", roles=frozenset({Role.SUPERVISOR}), user_id=1),
    )
    document = f'subscription {{ productionOrderChanged(number: "PO-1") {{ {ORDER} }} }}'
    stream: Any = await build_schema(services.settings).subscribe(document, context_value=context)
    pending = asyncio.ensure_future(anext(stream))
    try:
        await asyncio.wait_for(watched.subscribed.wait(), 5)
        seen = []
        steps: list[Callable[[], Awaitable[dict[str, Any]]]] = [
            lambda: olga.start(10),
            lambda: olga.complete(10),
            lambda: olga.start(20),
        ]
        for step in steps:
            payload = await step()
            result = await asyncio.wait_for(pending, 5)
            assert result.errors is None, result.errors
            seen.append(result.data["productionOrderChanged"])
            assert seen[-1] == payload["order"]  # as committed, once per change
            pending = asyncio.ensure_future(anext(stream))
        done, _ = await asyncio.wait([pending], timeout=0.3)
        assert not done
        assert [(e["status"], statuses({"order": e})) for e in seen] == [
            ("IN_PROGRESS", [(10, "RUNNING"), (20, "PENDING"), (30, "PENDING")]),
            ("IN_PROGRESS", [(10, "DONE"), (20, "READY"), (30, "PENDING")]),
            ("IN_PROGRESS", [(10, "DONE"), (20, "RUNNING"), (30, "PENDING")]),
        ]
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await stream.aclose()
