"""produceLot, the genealogy it records, Lot.trace both ways, and the lot queries."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from lots_support import Caller, Floor, codes, lot_row, make_order, row_counts
from sqlalchemy import insert, select, text

from backend.audit.models import AuditEntry
from backend.db import Database, utcnow
from backend.lots.models import GenealogyLink, LotStatus

pytestmark = pytest.mark.usefixtures("plant")

TRACE = """
query($number: String!, $direction: TraceDirection!, $maxDepth: Int) {
  lot(number: $number) {
    trace(direction: $direction, maxDepth: $maxDepth) {
      depth quantity at inputLot { number } outputLot { number } order { number }
    }
  }
}
"""
Link = tuple[int, str, str, str]  # depth, input lot, output lot, quantity


async def trace(
    caller: Caller, number: str, direction: str, max_depth: int | None = None
) -> list[Link]:
    body = await caller.data(
        TRACE, {"number": number, "direction": direction, "maxDepth": max_depth}
    )
    links = body["lot"]["trace"]
    return sorted(
        (
            link["depth"],
            link["inputLot"]["number"],
            link["outputLot"]["number"],
            f"{Decimal(link['quantity']).normalize():f}",
        )
        for link in links
    )


@pytest.fixture
async def chain(floor: Floor, erp: Caller) -> None:
    """Raw lots into two blend orders, both blends into one finished order.

    R1 (RM-1) --100--> PO-INT-001 <--10-- P1 (RM-2)
    R2 (RM-1) ---50--> PO-INT-001 --120--> PO-FG-001, PO-FG-002
    R2 (RM-1) ---30--> PO-INT2-001 --30--> PO-FG-001, PO-FG-002
    R3 (RM-1) is received and never used.
    """
    await make_order(erp, "PO-INT", [("RM-1", "150"), ("RM-2", "10")], product="INT-1")
    await make_order(erp, "PO-INT2", [("RM-1", "30")], product="INT-1")
    await make_order(erp, "PO-FG", [("INT-1", "150")], product="FG-1")
    for number, material in (("R1", "RM-1"), ("R2", "RM-1"), ("R3", "RM-1"), ("P1", "RM-2")):
        await floor.ok_receive(number, material, "100")
    await floor.ok_scan("R1", "PO-INT", quantity="60")
    await floor.ok_scan("R1", "PO-INT", quantity="40")  # the same lot twice: one link of 100
    await floor.ok_scan("R2", "PO-INT")  # the 50 kg still needed
    await floor.ok_scan("P1", "PO-INT")  # 10 kg
    assert await floor.ok_produce("PO-INT", "120") == "PO-INT-001"
    await floor.ok_scan("R2", "PO-INT2")  # 30 kg
    assert await floor.ok_produce("PO-INT2", "30") == "PO-INT2-001"
    await floor.ok_scan("PO-INT-001", "PO-FG")  # 120 kg
    await floor.ok_scan("PO-INT2-001", "PO-FG")  # 30 kg
    assert await floor.ok_produce("PO-FG", "1000") == "PO-FG-001"
    assert await floor.ok_produce("PO-FG", "500") == "PO-FG-002"


FROM_FINISHED = [
    (1, "PO-INT-001", "PO-FG-001", "120"),
    (1, "PO-INT2-001", "PO-FG-001", "30"),
    (2, "P1", "PO-INT-001", "10"),
    (2, "R1", "PO-INT-001", "100"),
    (2, "R2", "PO-INT-001", "50"),
    (2, "R2", "PO-INT2-001", "30"),
]


@pytest.mark.usefixtures("chain")
async def test_backward_from_a_finished_lot_gives_every_link_once_with_its_depth(
    floor: Floor,
) -> None:
    assert await trace(floor.caller, "PO-FG-001", "BACKWARD") == FROM_FINISHED
    assert await trace(floor.caller, "PO-FG-001", "BACKWARD", 1) == FROM_FINISHED[:2]
    assert await trace(floor.caller, "PO-FG-001", "BACKWARD", 0) == []
    assert await trace(floor.caller, "R1", "BACKWARD") == []  # received: nothing went into it


@pytest.mark.usefixtures("chain")
async def test_forward_from_a_raw_lot_answers_the_recall_question(floor: Floor) -> None:
    # R2 went into both blends (fan-out), and both blends into both finished lots (fan-in).
    assert await trace(floor.caller, "R2", "FORWARD") == [
        (1, "R2", "PO-INT-001", "50"),
        (1, "R2", "PO-INT2-001", "30"),
        (2, "PO-INT-001", "PO-FG-001", "120"),
        (2, "PO-INT-001", "PO-FG-002", "120"),
        (2, "PO-INT2-001", "PO-FG-001", "30"),
        (2, "PO-INT2-001", "PO-FG-002", "30"),
    ]
    assert await trace(floor.caller, "R2", "FORWARD", 1) == [
        (1, "R2", "PO-INT-001", "50"),
        (1, "R2", "PO-INT2-001", "30"),
    ]
    assert await trace(floor.caller, "R3", "FORWARD") == []  # never used: nothing to recall
    assert await trace(floor.caller, "PO-FG-002", "FORWARD") == []


@pytest.mark.usefixtures("chain")
async def test_a_cycle_in_the_genealogy_ends_and_gives_each_link_once(
    floor: Floor, db: Database
) -> None:
    async with db.write() as session:
        ids = dict((await session.execute(text("SELECT number, id FROM lots"))).all())
        # A corrupted record: the finished lot "went into" the raw lot it came from.
        await session.execute(
            insert(GenealogyLink).values(
                input_lot_id=ids["PO-FG-001"],
                output_lot_id=ids["R1"],
                quantity=Decimal(1),
                at=utcnow(),
            )
        )
    backward = await trace(floor.caller, "PO-FG-001", "BACKWARD")
    assert backward == sorted([*FROM_FINISHED, (3, "PO-FG-001", "R1", "1")])
    forward = await trace(floor.caller, "R1", "FORWARD")
    assert len(forward) == len(set(forward))
    assert [link[:3] for link in forward] == [
        (1, "R1", "PO-INT-001"),
        (2, "PO-INT-001", "PO-FG-001"),
        (2, "PO-INT-001", "PO-FG-002"),
        (3, "PO-FG-001", "R1"),
    ]


@pytest.mark.usefixtures("chain")
async def test_trace_links_carry_their_order_and_time(floor: Floor) -> None:
    body = await floor.caller.data(TRACE, {"number": "PO-INT2-001", "direction": "BACKWARD"})
    [link] = body["lot"]["trace"]
    assert link["order"] == {"number": "PO-INT2"}
    assert utcnow() - dt.datetime.fromisoformat(link["at"]) < dt.timedelta(minutes=1)


# ---------------------------------------------------------------- produceLot


async def test_a_produced_lot_is_available_numbered_by_its_order_and_linked(
    floor: Floor, erp: Caller, db: Database
) -> None:
    await make_order(erp, "PO-B", [("RM-1", "10")], product="INT-1")
    await floor.ok_receive("R1", "RM-1", "10")
    await floor.ok_scan("R1", "PO-B")
    before = await row_counts(db)

    payload = await floor.produce("PO-B", "9.5")
    assert payload["errors"] == []
    lot = payload["lot"]
    assert (lot["number"], lot["status"], lot["material"]) == (
        "PO-B-001",
        "AVAILABLE",
        {"code": "INT-1"},
    )
    assert Decimal(lot["quantity"]) == Decimal("9.5")
    assert lot["producedBy"] == {"number": "PO-B"}
    expires = dt.datetime.fromisoformat(lot["expiresAt"])  # INT-1 keeps 30 days
    assert abs(expires - (utcnow() + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    after = await row_counts(db)
    assert after["lots"] == before["lots"] + 1
    assert after["genealogy_links"] == before["genealogy_links"] + 1
    async with db.read() as session:
        actions = list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
    assert actions[-1] == "lot.produce"

    given = await floor.produce("PO-B", "1", number=" BLEND-X ", expiresAt="2031-01-01T00:00:00Z")
    assert given["errors"] == []
    assert given["lot"]["number"] == "BLEND-X"
    assert given["lot"]["expiresAt"] == "2031-01-01T00:00:00+00:00"
    assert await floor.ok_produce("PO-B", "1") == "PO-B-003"


async def test_a_produced_lot_without_inputs_has_no_genealogy(floor: Floor, erp: Caller) -> None:
    await make_order(erp, "PO-B", [("RM-1", "10")], product="INT-1")
    assert await floor.ok_produce("PO-B", "5") == "PO-B-001"
    assert await trace(floor.caller, "PO-B-001", "BACKWARD") == []


async def test_only_a_running_order_produces(floor: Floor, erp: Caller, db: Database) -> None:
    await make_order(erp, "PO-B", [("RM-1", "10")], release=False)
    for state in ("PLANNED", "ON_HOLD", "COMPLETED", "CLOSED", "CANCELLED"):
        async with db.write() as session:
            await session.execute(
                text("UPDATE production_orders SET status = :s WHERE number = 'PO-B'"),
                {"s": state},
            )
        before = await row_counts(db)
        payload = await floor.produce("PO-B", "5")
        assert codes(payload) == [("INVALID_TRANSITION", "orderNumber")], state
        assert state in payload["errors"][0]["message"]
        after = await row_counts(db)
        assert after == before | {"mutation_outcomes": before["mutation_outcomes"] + 1}


async def test_produce_refuses_bad_input(floor: Floor, erp: Caller, db: Database) -> None:
    await make_order(erp, "PO-B", [("RM-1", "10")])
    await floor.ok_receive("R1", "RM-1", "10")
    cases: list[tuple[str, str, dict[str, Any], str, str]] = [
        ("PO-NOPE", "5", {}, "NOT_FOUND", "orderNumber"),
        ("PO-B", "5", {"number": " R1 "}, "CONFLICT", "number"),  # a received lot's number
        ("PO-B", "0", {}, "INVALID_INPUT", "quantity"),
        ("PO-B", "5", {"expiresAt": "2031-01-01T00:00:00"}, "INVALID_INPUT", "expiresAt"),
        ("PO-B", "5", {"number": "N" * 65}, "INVALID_INPUT", "number"),
    ]
    for order, quantity, extra, code, field in cases:
        before = await row_counts(db)
        payload = await floor.produce(order, quantity, **extra)
        assert codes(payload) == [(code, field)], (order, quantity, extra)
        after = await row_counts(db)
        assert after == before | {"mutation_outcomes": before["mutation_outcomes"] + 1}


async def test_only_floor_roles_may_produce(erp: Caller) -> None:
    await make_order(erp, "PO-B", [("RM-1", "10")])
    payload = await Floor(erp).produce("PO-B", "5")
    assert codes(payload) == [("FORBIDDEN", None)]


# ---------------------------------------------------------------- queries

LOTS = """
query($status: [LotStatus!], $material: String, $first: Int, $after: String) {
  lots(status: $status, material: $material, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor node { number status material { code } } }
  }
}
"""


async def test_lots_filter_by_status_and_material_and_page(floor: Floor, db: Database) -> None:
    for i in range(5):
        await floor.ok_receive(f"R{i}", "RM-1", "10")
    await floor.ok_receive("P0", "RM-2", "10")
    await floor.ok_receive("Q0", "RM-Q", "10")
    await floor.ok_receive("Q1", "RM-Q", "10")
    async with db.write() as session:
        await session.execute(text("UPDATE lots SET status = 'ON_HOLD' WHERE number = 'R3'"))

    async def page(after: str | None = None, **filters: Any) -> dict[str, Any]:
        body = await floor.caller.data(LOTS, {"first": 2, "after": after, **filters})
        result: dict[str, Any] = body["lots"]
        return result

    first = await page(status=["AVAILABLE"], material="RM-1")
    assert [e["node"]["number"] for e in first["edges"]] == ["R0", "R1"]
    assert first["totalCount"] == 4
    assert first["pageInfo"]["hasNextPage"] is True
    second = await page(first["pageInfo"]["endCursor"], status=["AVAILABLE"], material="RM-1")
    assert [e["node"]["number"] for e in second["edges"]] == ["R2", "R4"]
    assert second["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "endCursor": second["edges"][-1]["cursor"],
    }
    assert second["totalCount"] == 4

    held = await page(status=["ON_HOLD", "QUARANTINE"])
    assert [e["node"]["number"] for e in held["edges"]] == ["R3", "Q0"]
    assert held["totalCount"] == 3
    assert (await page(material=" RM-2 "))["totalCount"] == 1
    assert (await page(material="NOPE"))["totalCount"] == 0
    body = await floor.caller.data(LOTS, {})
    assert body["lots"]["totalCount"] == 8


LOT = """
query($number: String!) {
  lot(number: $number) { id number status producedBy { number status } material { code } }
}
"""
NODE = "query($id: ID!) { node(id: $id) { id ... on Lot { number quantity status } } }"


async def test_lot_by_number_produced_by_and_node(floor: Floor, erp: Caller) -> None:
    await make_order(erp, "PO-B", [("RM-1", "10")])
    await floor.ok_receive("R1", "RM-1", "10")
    await floor.ok_produce("PO-B", "4")

    received = (await floor.caller.data(LOT, {"number": " R1 "}))["lot"]
    assert (received["number"], received["producedBy"]) == ("R1", None)
    produced = (await floor.caller.data(LOT, {"number": "PO-B-001"}))["lot"]
    assert produced["producedBy"] == {"number": "PO-B", "status": "RELEASED"}
    assert (await floor.caller.data(LOT, {"number": "NOPE"}))["lot"] is None

    node = (await floor.caller.data(NODE, {"id": produced["id"]}))["node"]
    assert node == {"id": produced["id"], "number": "PO-B-001", "quantity": "4.000000",
                    "status": "AVAILABLE"}  # fmt: skip


async def test_lots_need_a_signed_in_user(anonymous: Caller) -> None:
    body = await anonymous(LOT, {"number": "R1"})
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_lot_at_zero_after_production_inputs_is_consumed(
    floor: Floor, erp: Caller, db: Database
) -> None:
    await make_order(erp, "PO-B", [("RM-1", "10")])
    await floor.ok_receive("R1", "RM-1", "10")
    await floor.ok_scan("R1", "PO-B")
    await floor.ok_produce("PO-B", "1")
    row = await lot_row(db, "R1")
    assert (row.status, row.quantity) == (LotStatus.CONSUMED, Decimal(0))


async def test_an_order_number_too_long_to_number_lots_after_asks_for_a_number(
    floor: Floor, erp: Caller, db: Database
) -> None:
    long_number = "PO-" + "9" * 59  # 62 characters: "<order>-001" would not fit in 64
    await make_order(erp, long_number, [("RM-1", "10")])
    before = await row_counts(db)
    payload = await floor.produce(long_number, "5")
    assert codes(payload) == [("INVALID_INPUT", "number")]
    assert await row_counts(db) == before | {"mutation_outcomes": before["mutation_outcomes"] + 1}
    assert await floor.ok_produce(long_number, "5", number="FG-LONG-1") == "FG-LONG-1"
