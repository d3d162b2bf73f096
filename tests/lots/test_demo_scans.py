"""The demo's printed GS1 codes scan into the demo orders (on the test database)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

from lots_support import Caller, Floor, codes, row_counts

from backend.db import Database
from backend.demo import demo_codes, seed
from backend.principal import Role
from backend.settings import Settings

PARSE = "query($code: String!) { parseBarcode(code: $code) { gtin lotNumber expiresAt } }"


async def test_the_printed_demo_codes_scan_into_the_demo_orders(
    db: Database, settings: Settings, as_role: Callable[..., Awaitable[Caller]]
) -> None:
    await seed(db, settings)
    before = await row_counts(db)
    await seed(db, settings)  # again: nothing changes
    assert await row_counts(db) == before
    printed = {c.lot: c for c in await demo_codes(db)}
    assert set(printed) == {
        "API-2611-01",
        "API-2611-02",
        "LAC-2611-01",
        "MGS-2610-01",
        "BLD-2611-01",
        "BLD-2611-02",
        "FOIL-2611-01",
    }
    floor = Floor(await as_role(Role.OPERATOR, username="otto"))

    for code in printed.values():  # what the label says is what the parser reads
        for text in (code.printable, code.raw):
            parsed = (await floor.caller.data(PARSE, {"code": text}))["parseBarcode"]
            assert parsed["lotNumber"] == code.lot
            assert parsed["gtin"] is not None

    # Available lots of a component scan in, by either form of the code.
    mgs = await floor.ok_scan(printed["MGS-2610-01"].printable, "PO-1001")
    assert Decimal(mgs["consumption"]["quantity"]) == Decimal(1)  # PO-1001 needs 1 kg
    blend_1 = await floor.ok_scan(printed["BLD-2611-01"].raw, "PO-1002")
    assert (Decimal(blend_1["consumption"]["quantity"]), blend_1["lot"]["status"]) == (
        Decimal(80),
        "CONSUMED",
    )
    blend_2 = await floor.ok_scan(printed["BLD-2611-02"].printable, "PO-1002")
    assert Decimal(blend_2["consumption"]["quantity"]) == Decimal(40)  # 120 needed in all

    # The API and lactose wait for incoming inspection; foil goes to an order not released.
    assert printed["API-2611-01"].status == "QUARANTINE"
    payload = await floor.scan(printed["API-2611-01"].printable, "PO-1001")
    assert codes(payload) == [("LOT_UNAVAILABLE", "code")]
    payload = await floor.scan(printed["FOIL-2611-01"].printable, "PO-1003")
    assert codes(payload) == [("INVALID_TRANSITION", "orderNumber")]
    payload = await floor.scan(printed["BLD-2611-02"].printable, "PO-1001")
    assert codes(payload) == [("WRONG_MATERIAL", "code")]
