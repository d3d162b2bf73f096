"""Supervisors: a new deviation appears in the inbox live; approving it is an electronic
signature (password again, meaning, reason) made online only — a wrong password signs nothing,
offline signs nothing and says so, and a good signature changes the lot's status."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect
from pwakit import Api, password, unique


async def test_a_supervisor_approves_a_deviation_with_a_signature(open_app: Any, api: Api) -> None:
    lot = unique("MGS-D")
    await api.receive(lot)
    title = f"Damp bag {lot}"

    page = await open_app(user="supervisor", route="deviations", wait_for_subscription=True)
    await expect(page.get_by_role("heading", name="Deviations")).to_be_visible()
    # Raised on the floor while the inbox is open: it shows up without a reload.
    number = await api.raise_deviation(title, [lot], as_user="operator")
    assert await api.lot_status(lot) == "ON_HOLD"
    link = page.get_by_role("link", name=title)
    await expect(link).to_be_visible()
    await expect(link).to_contain_text(number)

    await link.click()
    await expect(page.get_by_role("heading", name=f"Deviation {number}")).to_be_visible()
    lot_row = page.get_by_role("listitem").filter(has=page.get_by_role("link", name=lot))
    await expect(lot_row).to_contain_text("HOLD")

    await page.get_by_label("Disposition").select_option("USE_AS_IS")
    await expect(page.get_by_label("Meaning")).to_have_value("Approved")
    await page.get_by_label("Reason").fill("Dried and retested; within specification.")
    await expect(page.get_by_label("Password")).to_have_attribute("type", "password")

    # A wrong password: refused, shown, nothing signed.
    await page.get_by_label("Password").fill("not-my-password")
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("alert")).to_contain_text("SIGNATURE_INVALID")
    assert await api.lot_status(lot) == "ON_HOLD"

    # Offline: signing needs the network, the form stays.
    await page.context.set_offline(True)
    await page.get_by_label("Password").fill(password("supervisor"))
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("alert")).to_contain_text(
        "Signing needs the network. Nothing was signed."
    )
    await expect(page.get_by_role("button", name="Approve")).to_be_visible()
    deviation = await api("query($n: String!) { deviation(number: $n) { status } }", {"n": number})
    assert deviation["deviation"]["status"] == "OPEN"

    # Online again: signed.
    await page.context.set_offline(False)
    await expect(page.get_by_role("status").filter(has_text="Online")).to_be_visible()
    await page.get_by_label("Password").fill(password("supervisor"))
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_text("The deviation is now APPROVED")).to_be_visible()
    await expect(lot_row).to_contain_text("OK")
    await expect(page.get_by_role("button", name="Approve")).to_have_count(0)

    assert await api.lot_status(lot) == "AVAILABLE"
    data = await api(
        """query($n: String!) { deviation(number: $n) { status disposition
             signatures { signer { username } meaning reason } } }""",
        {"n": number},
    )
    assert data["deviation"]["status"] == "APPROVED"
    assert data["deviation"]["disposition"] == "USE_AS_IS"
    assert data["deviation"]["signatures"] == [
        {
            "signer": {"username": "supervisor"},
            "meaning": "Approved",
            "reason": "Dried and retested; within specification.",
        }
    ]
    assert page.errors == []
