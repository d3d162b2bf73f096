"""Scanning with a keyboard-wedge scanner: signed in through the form, a GS1 code typed with the
scanner's "|" for the GS separator, Enter; the scan is saved on the device at once and the
server's answer shows in the list. A scan the server refuses after the device comes back
online (its lot was put on hold meanwhile) shows the server's reason on the scan screen and on
the Sync screen, where it can be dismissed."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from playwright.async_api import expect
from pwakit import Api, service_worker_controls, sign_in, unique

from backend.demo import demo_gtin

MG_STEARATE_GTIN = demo_gtin(3)


async def lot_expiry(api: Api, lot: str) -> str:
    data = await api("query($n: String!) { lot(number: $n) { expiresAt } }", {"n": lot})
    return f"{dt.datetime.fromisoformat(data['lot']['expiresAt']):%y%m%d}"


async def test_sign_in_and_scan_a_gs1_code_with_a_wedge(open_app: Any, api: Api) -> None:
    order, lot = unique("PO-W"), unique("MGS-W")
    await api.order(order, [("MG-STEARATE", "3")])
    await api.receive(lot, quantity="2")
    expiry = await lot_expiry(api, lot)

    page = await open_app(user=None, route=f"scan/{order}")
    await sign_in(page, "operator")
    await expect(page.get_by_role("heading", name="Scan", exact=True)).to_be_visible()
    field = page.get_by_label("Scan code")
    await expect(field).to_be_focused()
    for name, value in {
        "autocomplete": "off",
        "autocapitalize": "off",
        "spellcheck": "false",
        "enterkeyhint": "done",
    }.items():
        await expect(field).to_have_attribute(name, value)

    # What a wedge types: GTIN, lot (variable length, so GS follows, typed as "|"), expiry.
    await page.keyboard.type(f"01{MG_STEARATE_GTIN}10{lot}|17{expiry}", delay=2)
    await page.keyboard.press("Enter")
    await expect(field).to_have_value("")
    await expect(field).to_be_focused()  # ready for the next scan

    scans = page.get_by_role("list", name="Scans")
    row = scans.get_by_role("listitem").filter(has_text=lot)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("Done")
    await expect(row).to_contain_text(re.compile(r"consumed 2(\.0+)? kg"))

    state = await api.production_order(order)
    (component,) = state["components"]
    assert Decimal(component["quantityConsumed"]) == 2
    assert [(c["lot"]["number"], Decimal(c["quantity"])) for c in component["consumptions"]] == [
        (lot, 2)
    ]
    assert await api.lot_status(lot) == "CONSUMED"
    assert page.errors == []


async def test_a_scan_refused_after_reconnecting_is_shown_and_dismissed(
    open_app: Any, api: Api
) -> None:
    order, lot = unique("PO-R"), unique("MGS-R")
    await api.order(order, [("MG-STEARATE", "1")])
    await api.receive(lot)

    page = await open_app(route=f"scan/{order}")
    await expect(page.get_by_label("Scan code")).to_be_focused()
    await service_worker_controls(page)
    await page.context.set_offline(True)
    await expect(page.get_by_role("status").filter(has_text="Offline")).to_be_visible()

    await page.get_by_label("Scan code").fill(lot)
    await page.keyboard.press("Enter")
    row = page.get_by_role("list", name="Scans").get_by_role("listitem").filter(has_text=lot)
    await expect(row).to_contain_text("Saved on this device")
    await expect(page.get_by_role("link", name="Sync: 1 waiting")).to_be_visible()

    # Meanwhile quality puts the lot on hold (a deviation on it).
    await api.raise_deviation("Suspect bag", [lot], as_user="quality")
    assert await api.lot_status(lot) == "ON_HOLD"
    # What the server says to that scan (nothing is written when it refuses).
    refusal = (
        await api.mutate_refused(
            "scanLot",
            "mutation($i: ScanLotInput!) { scanLot(input: $i) { errors { code message } } }",
            {"i": {"clientMutationId": unique("cm"), "code": lot, "orderNumber": order}},
            as_user="supervisor",
        )
    )[0]
    assert refusal["code"] == "LOT_UNAVAILABLE"

    await page.context.set_offline(False)
    await expect(row).to_contain_text(f"Refused: {refusal['message']}")
    await expect(page.get_by_role("link", name="Sync: 1 refused")).to_be_visible()

    await page.get_by_role("link", name="Sync: 1 refused").click()
    await expect(page.get_by_role("heading", name="Sync")).to_be_visible()
    refused = page.get_by_role("region", name="Refused").get_by_role("listitem")
    await expect(refused).to_have_count(1)
    await expect(refused).to_contain_text(lot)
    await expect(refused).to_contain_text(refusal["code"])
    await expect(refused).to_contain_text(refusal["message"])
    await refused.get_by_role("button", name="Dismiss").click()
    await expect(refused).to_have_count(0)
    await expect(page.get_by_role("link", name="Sync: All sent")).to_be_visible()

    state = await api.production_order(order)
    assert state["components"][0]["consumptions"] == []
    assert page.errors == []
