"""scanLot and parseBarcode through GraphQL: the checks in the order BEHAVIOUR.md gives (an
earlier check wins when two would fail), the code formats, the default quantity, scan time
and late entries."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from lots_support import (
    GS,
    GTIN_INT,
    GTIN_OTHER,
    GTIN_RM1,
    GTIN_RM2,
    ORDER_COMPONENTS,
    SCAN,
    Caller,
    Floor,
    codes,
    consumptions_of,
    expire_in_past,
    lot_row,
    make_order,
    row_counts,
    set_lot,
)
from sqlalchemy import text

from backend.auth.models import User
from backend.db import Database, utcnow
from backend.gql import Context, Services
from backend.graphql import build_schema
from backend.jobs import JobContext
from backend.lots import service
from backend.lots.models import LotStatus
from backend.lots.tasks import expire_lots
from backend.principal import Principal, Role
from backend.settings import Settings

pytestmark = pytest.mark.usefixtures("po1")


def gs1(lot: str, gtin: str = GTIN_RM1, expiry: str = "301231") -> str:
    return f"(01){gtin}(17){expiry}(10){lot}"


async def unchanged(db: Database, before: dict[str, int], refusals: int = 1) -> None:
    """Nothing but the stored refusal(s) was written."""
    after = await row_counts(db)
    assert after == before | {"mutation_outcomes": before["mutation_outcomes"] + refusals}


# ---------------------------------------------------------------- the checks, in order


async def test_the_order_must_be_running_before_anything_else_is_looked_at(
    floor: Floor, erp: Caller, db: Database
) -> None:
    await make_order(erp, "PO-X", [("RM-1", "10")], release=False)
    for status in ("PLANNED", "ON_HOLD", "COMPLETED", "CLOSED", "CANCELLED"):
        async with db.write() as session:
            await session.execute(
                text("UPDATE production_orders SET status = :s WHERE number = 'PO-X'"),
                {"s": status},
            )
        before = await row_counts(db)
        # An unknown lot and an unreadable code would each fail later; the order's state wins.
        for code in ("NO-SUCH-LOT", f"]d201{GTIN_RM1[:-1]}0"):
            payload = await floor.scan(code, "PO-X")
            assert codes(payload) == [("INVALID_TRANSITION", "orderNumber")], status
            assert status in payload["errors"][0]["message"]
        await unchanged(db, before, refusals=2)


async def test_an_unknown_order_is_not_found(floor: Floor) -> None:
    payload = await floor.scan("L-A", "PO-NOPE")
    assert codes(payload) == [("NOT_FOUND", "orderNumber")]


async def test_an_unknown_lot_or_an_unreadable_code_is_an_unknown_barcode(
    floor: Floor, db: Database
) -> None:
    before = await row_counts(db)
    for code in (
        "L-NOBODY",  # a plain lot number nobody received
        gs1("L-NOBODY"),  # a good GS1 code of an unknown lot
        f"]d201{GTIN_RM1[:-1]}{(int(GTIN_RM1[-1]) + 1) % 10}10L-A",  # wrong check digit
        "(01)123(10)L-A",  # cut-off GTIN
        f"(01){GTIN_RM1}(17)301231",  # GS1 without a lot number
    ):
        payload = await floor.scan(code)
        assert codes(payload) == [("UNKNOWN_BARCODE", "code")], code
        assert payload["errors"][0]["message"]
    await unchanged(db, before, refusals=5)


async def test_a_gtin_of_another_material_wins_over_every_later_check(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1")
    await expire_in_past(db, "L-A", dt.timedelta(hours=1))
    await set_lot(db, "L-A", status=LotStatus.ON_HOLD)
    before = await row_counts(db)
    # Expired, on hold, and the GTIN is the pigment's: the GTIN check comes first.
    payload = await floor.scan(gs1("L-A", GTIN_RM2))
    assert codes(payload) == [("WRONG_MATERIAL", "code")]
    assert "GTIN" in payload["errors"][0]["message"]
    # A GTIN no material has is just as wrong.
    payload = await floor.scan(gs1("L-A", GTIN_OTHER))
    assert codes(payload) == [("WRONG_MATERIAL", "code")]
    await unchanged(db, before, refusals=2)


async def test_an_expired_lot_is_refused_before_its_status_and_the_components(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-INT", "INT-1")  # not a component of PO-1
    await expire_in_past(db, "L-INT", dt.timedelta(minutes=5))
    await set_lot(db, "L-INT", status=LotStatus.ON_HOLD)
    before = await row_counts(db)
    payload = await floor.scan(gs1("L-INT", GTIN_INT), quantity="100000")
    assert codes(payload) == [("LOT_EXPIRED", "code")]
    assert "L-INT" in payload["errors"][0]["message"]
    await unchanged(db, before)


async def test_a_lot_that_is_not_available_is_refused_before_the_components(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-INT", "INT-1")  # not a component of PO-1
    for status in (LotStatus.QUARANTINE, LotStatus.ON_HOLD, LotStatus.REJECTED, LotStatus.CONSUMED):
        await set_lot(db, "L-INT", status=status)
        before = await row_counts(db)
        payload = await floor.scan("L-INT", quantity="100000")
        assert codes(payload) == [("LOT_UNAVAILABLE", "code")], status
        assert status.value in payload["errors"][0]["message"]
        await unchanged(db, before)


async def test_a_lot_received_into_quarantine_cannot_be_scanned(floor: Floor, erp: Caller) -> None:
    await make_order(erp, "PO-S", [("RM-Q", "5")])
    lot = await floor.ok_receive("L-Q", "RM-Q", "5")
    assert lot["status"] == "QUARANTINE"
    payload = await floor.scan("L-Q", "PO-S")
    assert codes(payload) == [("LOT_UNAVAILABLE", "code")]


async def test_a_material_the_order_does_not_use_is_refused_before_the_quantity(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-INT", "INT-1", "5")
    await floor.ok_receive("L-A", "RM-1", "50")
    before = await row_counts(db)

    payload = await floor.scan(gs1("L-INT", GTIN_INT), quantity="1000")
    assert codes(payload) == [("WRONG_MATERIAL", "code")]
    assert "does not use INT-1" in payload["errors"][0]["message"]
    # RM-1 belongs to operation 10 only.
    payload = await floor.scan("L-A", operationSequence=20)
    assert codes(payload) == [("WRONG_MATERIAL", "code")]
    assert "operation 20" in payload["errors"][0]["message"]
    await unchanged(db, before, refusals=2)


async def test_more_than_the_lot_holds_is_insufficient_quantity(floor: Floor, db: Database) -> None:
    await floor.ok_receive("L-A", "RM-1", "50")
    before = await row_counts(db)
    payload = await floor.scan("L-A", quantity="50.000001")
    assert codes(payload) == [("INSUFFICIENT_QUANTITY", "quantity")]
    assert "50" in payload["errors"][0]["message"]
    await unchanged(db, before)
    assert (await lot_row(db, "L-A")).quantity == Decimal(50)


async def test_bad_input_is_invalid_input_with_its_field(floor: Floor, db: Database) -> None:
    await floor.ok_receive("L-A", "RM-1", "50")
    ahead = (utcnow() + dt.timedelta(minutes=10)).isoformat()
    for extra, field in (
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "-1"}, "quantity"),
        ({"quantity": "0.0000001"}, "quantity"),
        ({"scannedAt": "2026-01-01T08:00:00"}, "scannedAt"),  # no zone
        ({"scannedAt": ahead}, "scannedAt"),
    ):
        before = await row_counts(db)
        payload = await floor.scan("L-A", **extra)
        assert codes(payload) == [("INVALID_INPUT", field)], extra
        await unchanged(db, before)


async def test_a_device_clock_slightly_ahead_is_tolerated_and_clamped(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1", "50")
    ahead = utcnow() + dt.timedelta(seconds=60)
    await floor.ok_scan("L-A", quantity="1", scannedAt=ahead.isoformat())
    [consumption] = await consumptions_of(db, "L-A")
    assert consumption.consumed_at <= consumption.recorded_at < ahead
    assert consumption.late_entry is False


# ---------------------------------------------------------------- scan time and expiry


async def test_a_scan_made_before_expiry_and_synced_after_it_is_accepted(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1", "50")
    expired_at = await expire_in_past(db, "L-A", dt.timedelta(hours=1))

    # Now (no scannedAt) the lot is past its expiry, and so it is half an hour ago...
    payload = await floor.scan("L-A", quantity="1")
    assert codes(payload) == [("LOT_EXPIRED", "code")]
    for when in (expired_at, expired_at + dt.timedelta(minutes=30)):
        payload = await floor.scan("L-A", quantity="1", scannedAt=when.isoformat())
        assert codes(payload) == [("LOT_EXPIRED", "code")]
    assert await consumptions_of(db, "L-A") == []

    # ...but an offline device scanned it two hours ago, while it was still good.
    scanned = expired_at - dt.timedelta(hours=1)
    payload = await floor.ok_scan("L-A", quantity="4", scannedAt=scanned.isoformat())
    assert dt.datetime.fromisoformat(payload["consumption"]["consumedAt"]) == scanned
    [consumption] = await consumptions_of(db, "L-A")
    assert (consumption.quantity, consumption.consumed_at) == (Decimal(4), scanned)
    assert (await lot_row(db, "L-A")).quantity == Decimal(46)


async def test_the_expiry_job_does_not_undo_an_offline_scan_made_before_expiry(
    floor: Floor, erp: Caller, app: Any, db: Database
) -> None:
    """The job marks the lot EXPIRED only because time passed; a scan from before that time
    still counts. A lot that was in quarantine at the time stays refused."""
    await make_order(erp, "PO-S", [("RM-Q", "5")])
    await floor.ok_receive("L-A", "RM-1", "50")
    await floor.ok_receive("L-Q", "RM-Q", "5")
    expired_at = await expire_in_past(db, "L-A", dt.timedelta(hours=1))
    await expire_in_past(db, "L-Q", dt.timedelta(hours=1))
    services: Services = app.state.services
    await expire_lots(JobContext(db=services.db, broadcast=services.broadcast))
    assert (await lot_row(db, "L-A")).status is LotStatus.EXPIRED
    before = expired_at - dt.timedelta(minutes=10)

    payload = await floor.ok_scan("L-A", quantity="50", scannedAt=before.isoformat())
    assert payload["lot"]["status"] == "CONSUMED"
    payload = await floor.scan("L-Q", "PO-S", scannedAt=before.isoformat())
    assert codes(payload) == [("LOT_UNAVAILABLE", "code")]
    assert "EXPIRED" in payload["errors"][0]["message"]


async def test_late_entries_are_flagged_when_scanned_over_24_hours_before_receipt(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1", "50")
    now = utcnow()
    await floor.ok_scan("L-A", quantity="1", scannedAt=(now - dt.timedelta(hours=25)).isoformat())
    await floor.ok_scan("L-A", quantity="1", scannedAt=(now - dt.timedelta(hours=23)).isoformat())
    await floor.ok_scan("L-A", quantity="1")
    flags = [
        (c.late_entry, c.recorded_at - c.consumed_at) for c in await consumptions_of(db, "L-A")
    ]
    assert [late for late, _ in flags] == [True, False, False]
    assert flags[0][1] > dt.timedelta(hours=24)
    assert flags[2][1] < dt.timedelta(seconds=5)


# ---------------------------------------------------------------- formats


def formats(lot: str) -> dict[str, str]:
    return {
        "plain": lot,
        "plain, with the wedge's ENTER": f"  {lot}\r\n",
        "parentheses": f"(01){GTIN_RM1}(17)301231(10){lot}",
        "parentheses, lot only": f"(10){lot}",
        "raw, lot last": f"01{GTIN_RM1}17301231" + f"10{lot}",
        "raw with GS": f"01{GTIN_RM1}10{lot}{GS}17301231",
        "]d2 DataMatrix": f"]d201{GTIN_RM1}10{lot}{GS}17301231",
        "]C1 GS1-128": f"]C101{GTIN_RM1}10{lot}{GS}17301231",
        "]Q3 GS1 QR": f"]Q301{GTIN_RM1}10{lot}{GS}17301231",
        "]e0 DataBar": f"]e001{GTIN_RM1}10{lot}{GS}17301231",
    }


async def test_every_code_format_finds_the_lot(floor: Floor, db: Database) -> None:
    await floor.ok_receive("L-2026-001", "RM-1", "50")
    for n, (name, code) in enumerate(formats("L-2026-001").items(), start=1):
        payload = await floor.scan(code, quantity="1")
        assert payload["errors"] == [], name
        assert payload["lot"]["number"] == "L-2026-001", name
        assert Decimal(payload["lot"]["quantity"]) == Decimal(50 - n), name
        parsed = payload["parsed"]
        assert parsed["lotNumber"] == "L-2026-001", name
        if "(01)" in code or code.lstrip("]dCQe0123").startswith("01"):
            assert parsed["gtin"] == GTIN_RM1, name
            assert parsed["expiresAt"] in (None, "2031-01-01T00:00:00+00:00"), name
        assert payload["consumption"]["lot"] == {"number": "L-2026-001"}
        assert payload["consumption"]["consumedBy"] == {"username": "otto"}
    assert len(await consumptions_of(db, "L-2026-001")) == len(formats("x"))


async def test_a_wedge_stand_in_for_gs_works_when_configured(
    floor: Floor,
    app: Any,
    db: Database,
    settings: Settings,
    make_user: Any,
) -> None:
    await floor.ok_receive("L-A", "RM-1", "50")
    code = f"01{GTIN_RM1}10L-A~17301231"

    # The app's settings have no stand-in: "~" is not GS, and the code cannot be read.
    payload = await floor.scan(code, quantity="1")
    assert codes(payload) == [("UNKNOWN_BARCODE", "code")]
    assert "GS stand-in" in payload["errors"][0]["message"]

    # With MES_GS_STAND_INS="~", the same code reads as GTIN, lot L-A and expiry.
    wedge = settings.model_copy(update={"gs_stand_ins": "~"})
    services: Services = app.state.services
    user: User = (await make_user("wanda", Role.OPERATOR))[0]
    context = Context(
        services=dataclasses.replace(services, settings=wedge),
        principal=Principal(name="wanda", roles=frozenset({Role.OPERATOR}), user_id=user.id),
    )
    variables = {
        "clientMutationId": "wedge-1",
        "code": code,
        "orderNumber": "PO-1",
        "quantity": "2",
    }
    result = await build_schema(wedge).execute(SCAN, {"input": variables}, context_value=context)
    assert result.errors is None, result.errors
    assert result.data is not None
    scan = result.data["scanLot"]
    assert scan["errors"] == []
    assert scan["parsed"]["gtin"] == GTIN_RM1
    assert scan["parsed"]["expiresAt"] == "2031-01-01T00:00:00+00:00"
    assert (scan["lot"]["number"], Decimal(scan["lot"]["quantity"])) == ("L-A", Decimal(48))
    assert service.parse(wedge, code).lot_number == "L-A"


# ---------------------------------------------------------------- quantities


async def components(caller: Caller, number: str = "PO-1") -> dict[str, Decimal]:
    body = await caller.data(ORDER_COMPONENTS, {"number": number})
    return {
        c["material"]["code"]: Decimal(c["quantityConsumed"])
        for c in body["productionOrder"]["components"]
    }


async def test_the_default_quantity_is_what_the_order_still_needs_at_most_the_lot(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1", "60")
    await floor.ok_receive("L-B", "RM-1", "80")
    await floor.ok_receive("L-C", "RM-1", "80")

    first = await floor.ok_scan("L-A")  # PO-1 needs 100 kg RM-1: the lot's 60 kg
    assert Decimal(first["consumption"]["quantity"]) == Decimal(60)
    assert (first["lot"]["status"], Decimal(first["lot"]["quantity"])) == ("CONSUMED", 0)
    second = await floor.ok_scan(gs1("L-B"))  # the 40 kg still needed
    assert Decimal(second["consumption"]["quantity"]) == Decimal(40)
    assert (second["lot"]["status"], Decimal(second["lot"]["quantity"])) == ("AVAILABLE", 40)
    assert await components(floor.caller) == {"RM-1": Decimal(100), "RM-2": Decimal(0)}

    # Nothing more is needed: the operator must say how much to add.
    payload = await floor.scan("L-C")
    assert codes(payload) == [("INVALID_INPUT", "quantity")]
    await floor.ok_scan("L-C", quantity="2.5")
    assert await components(floor.caller) == {"RM-1": Decimal("102.5"), "RM-2": Decimal(0)}
    consumed = await lot_row(db, "L-A")
    assert (consumed.status, consumed.quantity, consumed.initial_quantity) == (
        LotStatus.CONSUMED,
        Decimal(0),
        Decimal(60),
    )
    # A consumed lot is no longer available.
    payload = await floor.scan("L-A", quantity="1")
    assert codes(payload) == [("LOT_UNAVAILABLE", "code")]


async def test_an_explicit_quantity_taking_the_whole_lot_consumes_it(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-P", "RM-2", "3.25")
    payload = await floor.ok_scan("L-P", quantity="3.25")
    assert payload["lot"]["status"] == "CONSUMED"
    assert await components(floor.caller) == {"RM-1": Decimal(0), "RM-2": Decimal("3.25")}
    row = await lot_row(db, "L-P")
    assert (row.status, row.quantity) == (LotStatus.CONSUMED, Decimal(0))


async def test_a_scan_writes_an_audit_entry_and_a_consumption_row(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-A", "RM-1", "60")
    before = await row_counts(db)
    await floor.ok_scan(f"]C101{GTIN_RM1}10L-A", quantity="7", operationSequence=10)
    after = await row_counts(db)
    assert after["consumptions"] == before["consumptions"] + 1
    assert after["audit_entries"] == before["audit_entries"] + 1
    [row] = await consumptions_of(db, "L-A")
    assert (row.quantity, row.operation_sequence, row.consumed_by) == (Decimal(7), 10, "otto")
    assert row.raw_code == f"]C101{GTIN_RM1}10L-A"


async def test_only_floor_roles_may_scan(erp: Caller, floor: Floor, db: Database) -> None:
    await floor.ok_receive("L-A", "RM-1", "60")
    payload = await Floor(erp).scan("L-A")
    assert codes(payload) == [("FORBIDDEN", None)]
    assert await consumptions_of(db, "L-A") == []


# ---------------------------------------------------------------- parseBarcode

PARSE = """
query($code: String!) { parseBarcode(code: $code) { raw gtin lotNumber expiresAt serial quantity } }
"""


async def test_parse_barcode_reads_a_code_without_changing_anything(
    floor: Floor, db: Database
) -> None:
    before = await row_counts(db)
    code = f"]d201{GTIN_RM1}17260200" + f"10ABC-1{GS}21SN-9{GS}3012"
    body = await floor.caller.data(PARSE, {"code": code})
    assert body["parseBarcode"] == {
        "raw": code,
        "gtin": GTIN_RM1,
        "lotNumber": "ABC-1",
        "expiresAt": "2026-03-01T00:00:00+00:00",  # day 00: the month's last day, usable through it
        "serial": "SN-9",
        "quantity": "12",
    }
    plain = await floor.caller.data(PARSE, {"code": "L-2026-0001"})
    assert plain["parseBarcode"] == {
        "raw": "L-2026-0001",
        "gtin": None,
        "lotNumber": "L-2026-0001",
        "expiresAt": None,
        "serial": None,
        "quantity": None,
    }
    assert await row_counts(db) == before


async def test_an_unreadable_code_is_a_top_level_unknown_barcode(floor: Floor) -> None:
    body = await floor.caller(PARSE, {"code": f"(01){GTIN_RM1[:-1]}0(10)X"})
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "UNKNOWN_BARCODE"
    assert "check digit" in error["message"]


async def test_parse_barcode_needs_a_signed_in_user(anonymous: Caller) -> None:
    body = await anonymous(PARSE, {"code": "L-1"})
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_malformed_input_is_reported_first_and_all_at_once(
    floor: Floor, erp: Caller, db: Database
) -> None:
    await make_order(erp, "PO-P", [("RM-1", "10")], release=False)  # PLANNED
    ahead = (utcnow() + dt.timedelta(hours=1)).isoformat()
    before = await row_counts(db)
    payload = await floor.scan("L-NOBODY", "PO-P", quantity="-1", scannedAt=ahead)
    assert sorted(codes(payload)) == [("INVALID_INPUT", "quantity"), ("INVALID_INPUT", "scannedAt")]
    assert "clock" in {e["field"]: e["message"] for e in payload["errors"]}["scannedAt"]
    await unchanged(db, before)


async def test_an_operation_the_order_does_not_have_is_not_found(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-P", "RM-2", "5")  # RM-2 is for any operation of PO-1
    before = await row_counts(db)
    payload = await floor.scan("L-P", quantity="1", operationSequence=99)
    assert codes(payload) == [("NOT_FOUND", "operationSequence")]
    await unchanged(db, before)
    await floor.ok_scan("L-P", quantity="1", operationSequence=20)
    [row] = await consumptions_of(db, "L-P")
    assert row.operation_sequence == 20
