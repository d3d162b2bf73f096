"""upsertProductionOrder as BEHAVIOUR.md describes it: keyed by externalId, PLANNED takes new
content, a released order refuses different content, and nothing is written on any error."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from orders_support import ACTIONS, ORDER, UPSERT, Caller, order_input, row_counts
from sqlalchemy import select

from backend.audit.models import AuditEntry
from backend.db import Database

pytestmark = pytest.mark.usefixtures("plant")


async def upsert(erp: Caller, order: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = (await erp.data(UPSERT, {"input": order}))["upsertProductionOrder"]
    return payload


async def audit_actions(db: Database) -> list[str]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.entity_type == "ProductionOrder")
                .order_by(AuditEntry.sequence)
            )
        )


async def test_a_new_external_id_creates_a_planned_order_with_what_was_sent(
    erp: Caller, db: Database
) -> None:
    payload = await upsert(erp, order_input(external_id="  ERP-1 ", number=" PO-1  "))

    assert payload["errors"] == []
    order = payload["order"]
    assert order["status"] == "PLANNED"
    assert (order["externalId"], order["number"]) == ("ERP-1", "PO-1")
    assert order["product"]["code"] == "FG-1"
    assert order["workCenter"]["code"] == "WC-1"
    assert Decimal(order["quantity"]) == 100
    assert Decimal(order["quantityGood"]) == Decimal(order["quantityScrap"]) == 0
    assert order["priority"] == 5
    assert order["dueAt"].startswith("2030-01-31T12:00:00")
    assert [
        (c["material"]["code"], Decimal(c["quantityRequired"]), c["operationSequence"])
        for c in order["components"]
    ] == [("RM-1", Decimal("200.5"), 10), ("RM-2", 3, None)]
    assert all(Decimal(c["quantityConsumed"]) == 0 for c in order["components"])
    assert [
        (o["sequence"], o["name"], o["status"], o["workCenter"]["code"])
        for o in order["operations"]
    ] == [(10, "Mix", "PENDING", "WC-1"), (20, "Fill", "PENDING", "WC-2")]
    assert order["operations"][0]["instructions"] == "Mix for 20 minutes"
    assert order["operations"][0]["characteristics"] == [
        {
            "name": "Viscosity",
            "kind": "NUMERIC",
            "unit": "Pa.s",
            "nominal": 2.0,
            "lowerLimit": 1.5,
            "upperLimit": 2.5,
        }
    ]
    assert order["operations"][1]["characteristics"] == [
        {
            "name": "Seal intact",
            "kind": "ATTRIBUTE",
            "unit": None,
            "nominal": None,
            "lowerLimit": None,
            "upperLimit": None,
        }
    ]

    stored = (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"]
    assert stored == order
    counts = await row_counts(db)
    assert (
        counts["production_orders"],
        counts["order_components"],
        counts["order_operations"],
        counts["characteristics"],
    ) == (1, 2, 2, 2)
    assert await audit_actions(db) == ["order.create"]


async def test_operations_are_kept_in_sequence_order_whatever_order_they_come_in(
    erp: Caller,
) -> None:
    order = order_input()
    order["operations"].reverse()
    payload = await upsert(erp, order)
    assert [o["sequence"] for o in payload["order"]["operations"]] == [10, 20]


async def test_while_planned_the_same_key_takes_the_new_content(erp: Caller, db: Database) -> None:
    first = (await upsert(erp, order_input()))["order"]

    changed = order_input(
        quantity="250.25",
        priority=1,
        workCenterCode="WC-2",
        dueAt=None,
        components=[{"materialCode": "PK-1", "quantity": "25", "operationSequence": 30}],
        operations=[
            {
                "sequence": 30,
                "name": "Pack",
                "workCenterCode": "WC-2",
                "characteristics": [
                    {"name": "Label", "kind": "ATTRIBUTE"},
                    {"name": "Weight", "kind": "NUMERIC", "unit": "g", "lowerLimit": 495.0},
                ],
            }
        ],
    )
    payload = await upsert(erp, changed)

    assert payload["errors"] == []
    order = payload["order"]
    assert order["id"] == first["id"]
    assert order["status"] == "PLANNED"
    assert Decimal(order["quantity"]) == Decimal("250.25")
    assert (order["priority"], order["dueAt"], order["workCenter"]["code"]) == (1, None, "WC-2")
    assert [
        (c["material"]["code"], Decimal(c["quantityRequired"]), c["operationSequence"])
        for c in order["components"]
    ] == [("PK-1", 25, 30)]
    assert [(o["sequence"], o["name"]) for o in order["operations"]] == [(30, "Pack")]
    assert [c["name"] for c in order["operations"][0]["characteristics"]] == ["Label", "Weight"]
    assert order["updatedAt"] >= first["updatedAt"]
    # The old components, operations and their characteristics are gone, not left behind.
    counts = await row_counts(db)
    assert (
        counts["production_orders"],
        counts["order_components"],
        counts["order_operations"],
        counts["characteristics"],
    ) == (1, 1, 1, 2)
    assert await audit_actions(db) == ["order.create", "order.update"]


async def test_while_planned_the_number_can_change_too(erp: Caller) -> None:
    await upsert(erp, order_input())
    payload = await upsert(erp, order_input(number="PO-1-NEW"))
    assert payload["order"]["number"] == "PO-1-NEW"
    assert (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"] is None


async def test_the_same_content_again_changes_nothing_while_planned(
    erp: Caller, db: Database
) -> None:
    first = (await upsert(erp, order_input()))["order"]
    before = await row_counts(db)

    # The same content written differently: padded codes, other decimal places, another zone.
    again = order_input(
        external_id=" ERP-1",
        productCode="FG-1 ",
        quantity="100.000",
        dueAt="2030-01-31T14:00:00+02:00",
    )
    payload = await upsert(erp, again)

    assert payload["errors"] == []
    assert payload["order"] == first
    assert await row_counts(db) == before


async def test_after_release_the_same_content_changes_nothing(erp: Caller, db: Database) -> None:
    await upsert(erp, order_input())
    released = await erp.data(ACTIONS["release"][0], {"number": "PO-1"})
    assert released["releaseProductionOrder"]["errors"] == []
    before_order = (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"]
    before = await row_counts(db)

    payload = await upsert(erp, order_input(quantity="100.0"))

    assert payload["errors"] == []
    assert payload["order"] == before_order
    assert payload["order"]["status"] == "RELEASED"
    assert [o["status"] for o in payload["order"]["operations"]] == ["READY", "PENDING"]
    assert await row_counts(db) == before
    assert (await audit_actions(db))[-1] == "order.release"


async def test_after_release_different_content_is_a_conflict(erp: Caller, db: Database) -> None:
    await upsert(erp, order_input())
    await erp.data(ACTIONS["release"][0], {"number": "PO-1"})
    before_order = (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"]
    before = await row_counts(db)

    payload = await upsert(erp, order_input(quantity="101"))

    assert payload["order"] is None
    [error] = payload["errors"]
    assert error["code"] == "CONFLICT"
    assert error["field"] == "externalId"
    assert "RELEASED" in error["message"]
    assert await row_counts(db) == before
    assert (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"] == before_order


# ---------------------------------------------------------------- errors write nothing


def _with(path: str, value: Any) -> dict[str, Any]:
    """The default order with one value replaced at a dotted path (`components.1.materialCode`)."""
    order = order_input()
    *parents, last = path.split(".")
    target: Any = order
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return order


def _duplicate_sequence() -> dict[str, Any]:
    order = order_input()
    order["operations"][1]["sequence"] = 10
    return order


ERROR_CASES: dict[str, tuple[dict[str, Any], list[tuple[str, str]]]] = {
    "unknown product": (_with("productCode", "NOPE"), [("NOT_FOUND", "productCode")]),
    "unknown component material": (
        _with("components.1.materialCode", "NOPE"),
        [("NOT_FOUND", "components.1.materialCode")],
    ),
    "unknown order work center": (
        _with("workCenterCode", "WC-NOPE"),
        [("NOT_FOUND", "workCenterCode")],
    ),
    "unknown operation work center": (
        _with("operations.0.workCenterCode", "WC-NOPE"),
        [("NOT_FOUND", "operations.0.workCenterCode")],
    ),
    "order quantity zero": (_with("quantity", "0"), [("INVALID_INPUT", "quantity")]),
    "order quantity negative": (_with("quantity", "-5"), [("INVALID_INPUT", "quantity")]),
    "component quantity zero": (
        _with("components.0.quantity", "0"),
        [("INVALID_INPUT", "components.0.quantity")],
    ),
    "component quantity negative": (
        _with("components.1.quantity", "-0.5"),
        [("INVALID_INPUT", "components.1.quantity")],
    ),
    "more than six decimal places": (
        _with("quantity", "1.0000001"),
        [("INVALID_INPUT", "quantity")],
    ),
    "duplicate operation sequence": (
        _duplicate_sequence(),
        [("INVALID_INPUT", "operations.1.sequence")],
    ),
    "component at a missing operation": (
        _with("components.0.operationSequence", 99),
        [("INVALID_INPUT", "components.0.operationSequence")],
    ),
    "NUMERIC characteristic with crossed limits": (
        _with("operations.0.characteristics.0.lowerLimit", 3.0),
        [("INVALID_INPUT", "operations.0.characteristics.0.lowerLimit")],
    ),
    "blank number": (_with("number", "   "), [("INVALID_INPUT", "number")]),
    "due time without a zone": (
        _with("dueAt", "2030-01-31T12:00:00"),
        [("INVALID_INPUT", "dueAt")],
    ),
    "empty operation name": (
        _with("operations.1.name", " "),
        [("INVALID_INPUT", "operations.1.name")],
    ),
    "several problems at once": (
        order_input(
            productCode="NOPE",
            components=[
                {"materialCode": "RM-1", "quantity": "1"},
                {"materialCode": "GONE", "quantity": "1"},
            ],
            operations=[{"sequence": 10, "name": "Mix", "workCenterCode": "WC-X"}],
        ),
        [
            ("NOT_FOUND", "productCode"),
            ("NOT_FOUND", "components.1.materialCode"),
            ("NOT_FOUND", "operations.0.workCenterCode"),
        ],
    ),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new order", "update of a planned order"])
@pytest.mark.parametrize("case", list(ERROR_CASES))
async def test_a_refused_upsert_writes_nothing(
    erp: Caller, db: Database, case: str, existing: bool
) -> None:
    if existing:
        await upsert(erp, order_input(quantity="7"))
    before = await row_counts(db)
    before_order = (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"]
    order, expected = ERROR_CASES[case]

    payload = await upsert(erp, order)

    assert payload["order"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == expected
    assert all(e["message"] for e in payload["errors"])
    assert await row_counts(db) == before
    assert (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"] == before_order


async def test_an_order_number_held_by_another_external_id_is_a_conflict(
    erp: Caller, db: Database
) -> None:
    await upsert(erp, order_input(external_id="ERP-1", number="PO-1"))
    await upsert(erp, order_input(external_id="ERP-2", number="PO-2"))
    before = await row_counts(db)

    for external_id in ("ERP-3", "ERP-2"):  # a new order, and an update of a planned one
        payload = await upsert(erp, order_input(external_id=external_id, number=" PO-1 "))
        assert payload["order"] is None
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("CONFLICT", "number")]
        assert await row_counts(db) == before

    assert (await erp.data(ORDER, {"number": "PO-2"}))["productionOrder"]["externalId"] == "ERP-2"


async def test_only_the_erp_and_admins_may_upsert(as_role: Any, db: Database, erp: Caller) -> None:
    supervisor = await as_role(__import__("backend.principal").principal.Role.SUPERVISOR)
    before = await row_counts(db)
    body = await supervisor.data(UPSERT, {"input": order_input()})
    assert [e["code"] for e in body["upsertProductionOrder"]["errors"]] == ["FORBIDDEN"]
    assert await row_counts(db) == before


# ---------------------------------------------------------------- at the same time


async def test_the_same_order_sent_several_times_at_once_is_created_once(
    erp: Caller, db: Database
) -> None:
    """An ERP retrying after a timeout: every copy gets the order, none a fault."""
    bodies = await asyncio.gather(*(erp(UPSERT, {"input": order_input()}) for _ in range(5)))

    assert all("errors" not in b for b in bodies), bodies
    payloads = [b["data"]["upsertProductionOrder"] for b in bodies]
    assert all(p["errors"] == [] for p in payloads)
    assert len({p["order"]["id"] for p in payloads}) == 1
    counts = await row_counts(db)
    assert (counts["production_orders"], counts["order_components"]) == (1, 2)
    assert await audit_actions(db) == ["order.create"]


async def test_one_number_sent_for_several_erp_orders_at_once_goes_to_one(
    erp: Caller, db: Database
) -> None:
    bodies = await asyncio.gather(
        *(
            erp(UPSERT, {"input": order_input(external_id=f"ERP-{i}", number="PO-1")})
            for i in range(4)
        )
    )

    assert all("errors" not in b for b in bodies), bodies
    payloads = [b["data"]["upsertProductionOrder"] for b in bodies]
    assert sum(p["order"] is not None for p in payloads) == 1
    assert (
        sorted((e["code"], e["field"]) for p in payloads for e in p["errors"])
        == [("CONFLICT", "number")] * 3
    )
    assert (await row_counts(db))["production_orders"] == 1
