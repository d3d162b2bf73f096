"""axe-core (WCAG 2.0/2.1/2.2 A and AA rules) finds no serious or critical violation on any
screen, each shown with real data from the demo server, at phone size."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import expect
from pwakit import Api, assert_accessible, unique


@dataclass(frozen=True)
class Plant:
    order: str
    lot: str
    quarantined_lot: str
    deviation: str


@pytest.fixture(scope="module")
async def plant(api: Api) -> Plant:
    order, lot, held = unique("PO-A"), unique("MGS-A"), unique("MGS-H")
    await api.order(order, [("MG-STEARATE", "5")], operations=("Weigh", "Mix"))
    await api.receive(lot)
    await api.receive(held)
    deviation = await api.raise_deviation(f"Label smudged on {held}", [held], as_user="operator")
    quarantined = unique("API-A")
    await api.receive(quarantined, material="PARA-API", quantity="10")
    return Plant(order, lot, quarantined, deviation)


async def refused_scan(page: Any) -> None:
    """A scan the server refuses (an unknown code), so the screens show a refusal too."""
    await page.get_by_label("Scan code").fill("NO-SUCH-LOT")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("list", name="Scans")).to_contain_text("Refused:")


@dataclass(frozen=True)
class Screen:
    name: str
    user: str | None
    route: Callable[[Plant], str]
    heading: Callable[[Plant], str]
    then: Callable[[Any], Awaitable[None]] | None = None
    ready: str | None = None  # a text that shows once the screen's data is there


SCREENS = [
    Screen("sign in", None, lambda p: "", lambda p: "Sign in"),
    Screen("my work", "operator", lambda p: "", lambda p: "My work", ready="PO-A"),
    Screen("order", "operator", lambda p: f"order/{p.order}", lambda p: f"Order {p.order}",
           ready="Weigh"),
    Screen("scan", "operator", lambda p: f"scan/{p.order}", lambda p: "Scan", then=refused_scan),
    Screen("scan without an order", "operator", lambda p: "scan", lambda p: "Scan"),
    Screen("receive", "operator", lambda p: "receive", lambda p: "Receive a lot"),
    Screen("inspect", "operator", lambda p: f"inspect/{p.quarantined_lot}",
           lambda p: "Inspection"),
    Screen("raise", "operator", lambda p: "raise", lambda p: "Raise a deviation"),
    Screen("lot", "operator", lambda p: f"lot/{p.lot}", lambda p: f"Lot {p.lot}",
           ready="Magnesium stearate"),
    Screen("sync", "operator", lambda p: "sync", lambda p: "Sync"),
    Screen("deviations", "supervisor", lambda p: "deviations", lambda p: "Deviations",
           ready="Label smudged"),
    Screen("deviation", "supervisor", lambda p: f"deviation/{p.deviation}",
           lambda p: f"Deviation {p.deviation}", ready="Label smudged"),
    Screen("machines", "supervisor", lambda p: "equipment", lambda p: "Machines",
           ready="PRESS-01"),
    Screen("device settings", "operator", lambda p: "settings", lambda p: "This device"),
]  # fmt: skip


@pytest.mark.parametrize("screen", SCREENS, ids=[s.name for s in SCREENS])
async def test_no_serious_accessibility_violations(
    screen: Screen, plant: Plant, open_app: Any
) -> None:
    page = await open_app(user=screen.user, route=screen.route(plant))
    await expect(
        page.get_by_role("heading", name=screen.heading(plant), exact=True)
    ).to_be_visible()
    if screen.ready:
        await expect(page.get_by_role("main")).to_contain_text(screen.ready)
    if screen.then:
        await screen.then(page)
    await assert_accessible(page, f"the {screen.name} screen")
    assert page.errors == []


async def test_sync_screen_with_a_refusal_is_accessible(plant: Plant, open_app: Any) -> None:
    page = await open_app(route=f"scan/{plant.order}")
    await refused_scan(page)
    await page.get_by_role("link", name="Sync: 1 refused").click()
    await expect(page.get_by_role("heading", name="Sync")).to_be_visible()
    await assert_accessible(page, "the Sync screen with a refusal")
    await page.get_by_role("button", name="Correct").click()
    await expect(page.get_by_role("button", name="Send again")).to_be_visible()
    await assert_accessible(page, "the Sync screen correcting a refusal")
