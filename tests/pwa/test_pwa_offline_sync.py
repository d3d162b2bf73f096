"""Offline work: the app opens from the service worker without a network, 20 scans and a step
completion are queued on the device, and after reconnecting each happens on the server exactly
once — even when the answer to the first send is lost after the server committed it (the resend
carries the same clientMutationIds and changes nothing)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from playwright.async_api import expect
from pwakit import Api, service_worker_controls, unique

SCANS = 20


async def test_offline_scans_and_a_step_sync_exactly_once(open_app: Any, api: Api) -> None:
    order = unique("PO-O")
    lots = [f"{order}-L{i:02d}" for i in range(1, SCANS + 1)]
    await api.order(order, [("MG-STEARATE", str(SCANS))])
    for lot in lots:
        await api.receive(lot)

    # Online: the order opens (and is kept on the device), the step is started and confirmed.
    page = await open_app(route=f"order/{order}")
    await expect(page.get_by_role("heading", name=f"Order {order}")).to_be_visible()
    await service_worker_controls(page)
    step = page.get_by_role("region", name="10 · Mix")
    await step.get_by_role("button", name="Start step").click()
    await expect(step.get_by_role("list", name="Actions on step 10")).to_contain_text("Done")
    await expect(step.get_by_role("button", name="Complete step")).to_be_visible()

    # Offline: the app still opens (shell from the service worker, the order from the device).
    await page.context.set_offline(True)
    await page.reload()
    await expect(page.get_by_role("heading", name=f"Order {order}")).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="Offline")).to_be_visible()

    await page.get_by_role("link", name="Scan material").click()
    await expect(page.get_by_role("heading", name="Scan", exact=True)).to_be_visible()
    field = page.get_by_label("Scan code")
    scans = page.get_by_role("list", name="Scans").get_by_role("listitem")
    for i, lot in enumerate(lots, start=1):
        await expect(field).to_be_focused()
        await page.keyboard.type(lot, delay=1)
        await page.keyboard.press("Enter")
        await expect(scans).to_have_count(i)
    await expect(scans.filter(has_text="Saved on this device")).to_have_count(SCANS)

    await page.go_back()
    await expect(page.get_by_role("heading", name=f"Order {order}")).to_be_visible()
    step = page.get_by_role("region", name="10 · Mix")
    await step.get_by_label("Good quantity").fill(str(SCANS))
    await step.get_by_label("Scrap quantity").fill("0")
    await step.get_by_role("button", name="Complete step").click()
    await expect(step.get_by_role("list", name="Actions on step 10")).to_contain_text(
        "Saved on this device"
    )
    await expect(page.get_by_role("link", name=f"Sync: {SCANS + 1} waiting")).to_be_visible()

    # The first answer to the queued batch is lost after the server has committed it.
    lost: list[str] = []

    async def lose_first_answer(route: Any) -> None:
        body = route.request.post_data or ""
        if not lost and "mutation Sync" in body:
            await route.fetch()  # the server runs the batch and commits
            lost.append(body)
            await route.abort("connectionreset")
        else:
            await route.fallback()

    await page.context.route("**/graphql", lose_first_answer)
    await page.context.set_offline(False)
    await expect(page.get_by_role("link", name="Sync: All sent")).to_be_visible()
    assert lost, "the batch was never sent"

    state = await api.production_order(order)
    (component,) = state["components"]
    consumed = sorted(
        (c["lot"]["number"], Decimal(c["quantity"])) for c in component["consumptions"]
    )
    assert consumed == [(lot, 1) for lot in lots]  # each lot once, none twice
    assert Decimal(component["quantityConsumed"]) == SCANS
    assert all(c["lot"]["status"] == "CONSUMED" for c in component["consumptions"])
    (operation,) = state["operations"]
    assert operation["status"] == "DONE"
    assert (Decimal(operation["quantityGood"]), Decimal(operation["quantityScrap"])) == (SCANS, 0)
    assert state["status"] == "COMPLETED"

    # The device agrees: nothing refused, all sent.
    await page.get_by_role("link", name="Sync: All sent").click()
    await expect(page.get_by_role("heading", name="Sync")).to_be_visible()
    await expect(page.get_by_role("region", name="Refused")).to_contain_text("Nothing refused.")
    await expect(page.get_by_role("region", name="Waiting")).to_contain_text("Nothing waiting.")
    assert page.errors == []
