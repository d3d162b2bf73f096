"""The order state machine: release, hold, resume, cancel, close; every other move refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from orders_support import (
    ACTIONS,
    MUTATION_FIELD,
    ORDER,
    UPSERT,
    Caller,
    order_input,
    row_counts,
    set_status,
)
from sqlalchemy import select

from backend.audit.models import AuditEntry
from backend.db import Database
from backend.orders.models import OrderStatus
from backend.principal import Role

S = OrderStatus
ALLOWED: dict[str, set[OrderStatus]] = {
    "release": {S.PLANNED},
    "hold": {S.RELEASED, S.IN_PROGRESS},
    "resume": {S.ON_HOLD},
    "cancel": {S.PLANNED, S.RELEASED, S.ON_HOLD},
    "close": {S.COMPLETED},
}
REFUSED = [
    (action, status)
    for action in ACTIONS
    for status in OrderStatus
    if status not in ALLOWED[action]
]


async def act(
    caller: Caller, action: str, number: str = "PO-1", **variables: Any
) -> dict[str, Any]:
    document, defaults = ACTIONS[action]
    body = await caller.data(document, {"number": number, **defaults, **variables})
    payload: dict[str, Any] = body[MUTATION_FIELD[action]]
    return payload


async def status_of(caller: Caller, number: str = "PO-1") -> dict[str, Any]:
    order: dict[str, Any] = (await caller.data(ORDER, {"number": number}))["productionOrder"]
    return order


async def last_audit(db: Database) -> AuditEntry:
    async with db.read() as session:
        entry = await session.scalar(
            select(AuditEntry).order_by(AuditEntry.sequence.desc()).limit(1)
        )
    assert entry is not None
    return entry


@pytest.fixture
async def order(erp: Caller) -> None:
    payload = (await erp.data(UPSERT, {"input": order_input()}))["upsertProductionOrder"]
    assert payload["errors"] == []


pytestmark = [pytest.mark.usefixtures("plant", "order")]


async def test_release_readies_the_first_operation_only(erp: Caller, db: Database) -> None:
    payload = await act(erp, "release", " PO-1 ")

    assert payload["errors"] == []
    assert payload["order"]["status"] == "RELEASED"
    assert payload["order"]["operations"] == [
        {"sequence": 10, "status": "READY"},
        {"sequence": 20, "status": "PENDING"},
    ]
    stored = await status_of(erp)
    assert [o["status"] for o in stored["operations"]] == ["READY", "PENDING"]
    entry = await last_audit(db)
    assert (entry.action, entry.actor, entry.changes) == (
        "order.release",
        "erp",
        {"status": ["PLANNED", "RELEASED"]},
    )


async def test_hold_and_resume_return_to_released(erp: Caller, db: Database) -> None:
    await act(erp, "release")

    held = await act(erp, "hold", reason="  Mixer blade cracked ")
    assert (held["errors"], held["order"]["status"]) == ([], "ON_HOLD")
    entry = await last_audit(db)
    assert (entry.action, entry.changes) == (
        "order.hold",
        {"status": ["RELEASED", "ON_HOLD"], "reason": "Mixer blade cracked"},
    )

    resumed = await act(erp, "resume")
    assert (resumed["errors"], resumed["order"]["status"]) == ([], "RELEASED")
    assert (await status_of(erp))["status"] == "RELEASED"
    assert (await last_audit(db)).action == "order.resume"


async def test_resume_returns_an_order_held_in_progress_to_in_progress(
    erp: Caller, db: Database
) -> None:
    await set_status(db, "PO-1", S.IN_PROGRESS)
    assert (await act(erp, "hold"))["order"]["status"] == "ON_HOLD"
    assert (await act(erp, "resume"))["order"]["status"] == "IN_PROGRESS"


@pytest.mark.parametrize("reason", ["", "   \n\t"])
@pytest.mark.parametrize("action", ["hold", "cancel"])
async def test_hold_and_cancel_need_a_reason(
    erp: Caller, db: Database, action: str, reason: str
) -> None:
    await act(erp, "release")
    before = await row_counts(db)

    payload = await act(erp, action, reason=reason)

    assert payload["order"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID_INPUT", "reason")]
    assert await row_counts(db) == before
    assert (await status_of(erp))["status"] == "RELEASED"


@pytest.mark.parametrize("start", [S.PLANNED, S.RELEASED, S.ON_HOLD])
async def test_cancel_works_from_planned_released_and_on_hold(
    erp: Caller, db: Database, start: OrderStatus
) -> None:
    await set_status(db, "PO-1", start, S.RELEASED if start is S.ON_HOLD else None)

    payload = await act(erp, "cancel")

    assert (payload["errors"], payload["order"]["status"]) == ([], "CANCELLED")
    entry = await last_audit(db)
    assert (entry.action, entry.changes) == (
        "order.cancel",
        {"status": [start.value, "CANCELLED"], "reason": "Customer order withdrawn"},
    )
    # A cancelled order held before cannot be resumed back to life.
    assert [e["code"] for e in (await act(erp, "resume"))["errors"]] == ["INVALID_TRANSITION"]


async def test_close_takes_a_completed_order_to_closed(erp: Caller, db: Database) -> None:
    await set_status(db, "PO-1", S.COMPLETED)

    payload = await act(erp, "close")

    assert (payload["errors"], payload["order"]["status"]) == ([], "CLOSED")
    assert (await status_of(erp))["status"] == "CLOSED"
    assert (await last_audit(db)).changes == {"status": ["COMPLETED", "CLOSED"]}


@pytest.mark.parametrize(("action", "status"), REFUSED, ids=[f"{a}-{s}" for a, s in REFUSED])
async def test_every_other_move_is_an_invalid_transition(
    erp: Caller, db: Database, action: str, status: OrderStatus
) -> None:
    await set_status(db, "PO-1", status, S.RELEASED if status is S.ON_HOLD else None)
    before_order = await status_of(erp)
    before = await row_counts(db)

    payload = await act(erp, action)

    assert payload["order"] is None
    [error] = payload["errors"]
    assert error["code"] == "INVALID_TRANSITION"
    assert status.value in error["message"]
    assert await row_counts(db) == before
    assert await status_of(erp) == before_order


@pytest.mark.parametrize("action", list(ACTIONS))
async def test_an_unknown_number_is_not_found(erp: Caller, db: Database, action: str) -> None:
    before = await row_counts(db)
    payload = await act(erp, action, "PO-404")
    assert payload["order"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("NOT_FOUND", "number")]
    assert "PO-404" in payload["errors"][0]["message"]
    assert await row_counts(db) == before


async def test_a_supervisor_may_hold_and_resume_but_not_release(
    erp: Caller, db: Database, as_role: Callable[..., Awaitable[Caller]]
) -> None:
    supervisor = await as_role(Role.SUPERVISOR)
    before = await row_counts(db)

    refused = await act(supervisor, "release")
    assert refused["order"] is None
    assert [e["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    assert await row_counts(db) == before
    assert (await status_of(erp))["status"] == "PLANNED"

    await act(erp, "release")
    assert (await act(supervisor, "hold"))["order"]["status"] == "ON_HOLD"
    me = await supervisor.data("{ me { username } }")
    assert (await last_audit(db)).actor == me["me"]["username"]
    assert (await act(supervisor, "resume"))["order"]["status"] == "RELEASED"
    for action in ("cancel", "close"):
        assert [e["code"] for e in (await act(supervisor, action))["errors"]] == ["FORBIDDEN"]


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.QUALITY, Role.INTEGRATOR, Role.EQUIPMENT])
async def test_shop_floor_and_system_roles_may_not_move_orders(
    erp: Caller, db: Database, as_role: Callable[..., Awaitable[Caller]], role: Role
) -> None:
    await act(erp, "release")
    caller = await as_role(role)
    before = await row_counts(db)
    for action in ACTIONS:
        assert [e["code"] for e in (await act(caller, action))["errors"]] == ["FORBIDDEN"], action
    assert await row_counts(db) == before
    assert (await status_of(erp))["status"] == "RELEASED"
