"""Safe replay by clientMutationId for receiveLot, scanLot and produceLot, and concurrent scans
of one lot: never more taken than it holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
from lots_support import Caller, Floor, codes, consumptions_of, lot_row, row_counts, set_lot

from backend.db import Database
from backend.lots.models import LotStatus
from backend.principal import Role

pytestmark = pytest.mark.usefixtures("po1")

AsRole = Callable[..., Awaitable[Caller]]


async def test_a_resent_scan_returns_the_same_payload_and_changes_nothing(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1", "50")
    first = await floor.ok_scan("L-A", quantity="20", cmid="phone-7:scan-1")
    before = await row_counts(db)

    again = await floor.scan("L-A", quantity="20", cmid="phone-7:scan-1")

    assert again == first
    assert await row_counts(db) == before
    assert (await lot_row(db, "L-A")).quantity == Decimal(30)
    assert len(await consumptions_of(db, "L-A")) == 1


async def test_a_resent_receipt_returns_the_same_lot(floor: Floor, db: Database) -> None:
    first = await floor.receive("L-A", "RM-1", "50", cmid="desk:r-1", supplierLot="S-1")
    before = await row_counts(db)
    again = await floor.receive("L-A", "RM-1", "50", cmid="desk:r-1", supplierLot="S-1")
    assert first["errors"] == []
    assert again == first  # not CONFLICT on the lot number: it is the same receipt
    assert await row_counts(db) == before


async def test_a_resent_production_returns_the_same_lot(floor: Floor, db: Database) -> None:
    first = await floor.produce("PO-1", "10", cmid="line:p-1")
    before = await row_counts(db)
    again = await floor.produce("PO-1", "10", cmid="line:p-1")
    assert first["errors"] == []
    assert first["lot"]["number"] == "PO-1-001"
    assert again == first  # not a second lot PO-1-002
    assert await row_counts(db) == before


async def test_the_same_id_for_a_different_request_is_a_conflict(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1", "50", cmid="dev:1")
    before = await row_counts(db)

    for payload in (
        await floor.receive("L-A", "RM-1", "51", cmid="dev:1"),  # another quantity
        await floor.scan("L-A", quantity="1", cmid="dev:1"),  # another mutation
        await floor.produce("PO-1", "1", cmid="dev:1"),
    ):
        assert codes(payload) == [("CONFLICT", "clientMutationId")]
        assert payload["errors"][0]["message"]
    assert await row_counts(db) == before
    assert (await lot_row(db, "L-A")).quantity == Decimal(50)


async def test_a_refused_scan_replays_its_refusal_even_when_the_lot_is_released_later(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1", "50")
    await set_lot(db, "L-A", status=LotStatus.ON_HOLD)
    refused = await floor.scan("L-A", quantity="5", cmid="dev:s-1")
    assert codes(refused) == [("LOT_UNAVAILABLE", "code")]

    await set_lot(db, "L-A", status=LotStatus.AVAILABLE)
    before = await row_counts(db)
    again = await floor.scan("L-A", quantity="5", cmid="dev:s-1")
    assert again == refused
    assert await row_counts(db) == before
    # The device learns of the refusal; a new scan (a new id) goes through now.
    await floor.ok_scan("L-A", quantity="5", cmid="dev:s-2")
    assert (await lot_row(db, "L-A")).quantity == Decimal(45)


async def test_ids_belong_to_their_user(floor: Floor, as_role: AsRole, db: Database) -> None:
    other = Floor(await as_role(Role.OPERATOR, username="olga"))
    await floor.ok_receive("L-A", "RM-1", "50", cmid="1")
    await other.ok_receive("L-B", "RM-1", "50", cmid="1")  # the same id, another user
    await floor.ok_scan("L-A", quantity="3", cmid="2")
    await other.ok_scan("L-A", quantity="4", cmid="2")

    assert (await lot_row(db, "L-A")).quantity == Decimal(43)
    assert [(c.consumed_by, c.quantity) for c in await consumptions_of(db, "L-A")] == [
        ("otto", Decimal(3)),
        ("olga", Decimal(4)),
    ]


async def test_an_id_sent_twice_at_once_is_done_once(floor: Floor, db: Database) -> None:
    await floor.ok_receive("L-A", "RM-1", "500")
    for attempt in range(8):
        cmid = f"burst-{attempt}"
        first, second = await asyncio.gather(
            floor.scan("L-A", quantity="2", cmid=cmid),
            floor.scan("L-A", quantity="2", cmid=cmid),
        )
        assert first["errors"] == [], first
        assert second == first
    assert len(await consumptions_of(db, "L-A")) == 8
    assert (await lot_row(db, "L-A")).quantity == Decimal(500 - 16)


@pytest.mark.postgres
async def test_two_operators_racing_for_a_whole_lot_never_take_more_than_it_holds(
    floor: Floor, as_role: AsRole, db: Database
) -> None:
    other = Floor(await as_role(Role.OPERATOR, username="olga"))
    losses: dict[str, int] = {}
    for attempt in range(20):
        number = f"L-RACE-{attempt}"
        await floor.ok_receive(number, "RM-1", "10")
        results = await asyncio.gather(
            floor.scan(number, quantity="10"), other.scan(number, quantity="10")
        )
        won = [r for r in results if r["errors"] == []]
        lost = [r for r in results if r["errors"] != []]
        assert (len(won), len(lost)) == (1, 1), results
        assert won[0]["lot"]["status"] == "CONSUMED"
        [(code, field)] = codes(lost[0])
        assert (code, field) in {("INSUFFICIENT_QUANTITY", "quantity"), ("LOT_UNAVAILABLE", "code")}
        losses[code] = losses.get(code, 0) + 1

        lot = await lot_row(db, number)
        assert (lot.status, lot.quantity) == (LotStatus.CONSUMED, Decimal(0))
        [consumption] = await consumptions_of(db, number)
        assert consumption.quantity == Decimal(10)
    assert sum(losses.values()) == 20
