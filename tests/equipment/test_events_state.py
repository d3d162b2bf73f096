"""The current state comes from the STATE event with the latest occurredAt: a late event never
overwrites a newer state, but it does change the machine's history. `Equipment.events`
filters by kind and pages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from equipment_events_support import (
    EVENT,
    OEE,
    Caller,
    alarm,
    counter,
    equipment,
    floor_hour,
    iso,
    make_plant,
    record,
    state,
    value,
)

from backend.principal import Role

T0 = floor_hour(dt.datetime.now(dt.UTC)) - dt.timedelta(hours=5)
PAGE = f"""
query($code: String!, $kinds: [EquipmentEventKind!], $first: Int, $after: String) {{
  equipment(code: $code) {{
    events(kinds: $kinds, first: $first, after: $after) {{
      totalCount pageInfo {{ hasNextPage endCursor }} edges {{ cursor node {{ {EVENT} }} }}
    }}
  }}
}}
"""


@pytest.fixture
async def bridge(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    await make_plant(await as_role(Role.ERP, username="erp"))
    return await as_role(Role.EQUIPMENT, username="bridge")


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


async def current(caller: Caller, code: str = "M-1") -> tuple[str, str | None, dt.datetime | None]:
    machine = await equipment(caller, code)
    since = machine["stateSince"]
    return (
        machine["state"],
        machine["stateReason"],
        dt.datetime.fromisoformat(since) if since else None,
    )


async def oee(caller: Caller, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    data = await caller.data(OEE, {"code": "M-1", "from": iso(start), "to": iso(end)})
    report: dict[str, Any] = data["equipment"]["oee"]
    return report


async def test_a_late_event_changes_history_but_not_the_current_state(bridge: Caller) -> None:
    assert await current(bridge) == ("OFFLINE", None, None)
    await record(bridge, [state("s-1", "M-1", at(10), "RUNNING")])
    assert await current(bridge) == ("RUNNING", None, at(10))

    # Late: it happened before the running state began.
    payload = await record(bridge, [state("s-2", "M-1", at(5), "DOWN", "jam")])
    assert payload == {"accepted": 1, "duplicates": 0, "errors": []}
    assert await current(bridge) == ("RUNNING", None, at(10))
    report = await oee(bridge, at(0), at(15))
    assert (report["plannedSeconds"], report["runSeconds"], report["downSeconds"]) == (
        600.0,
        300.0,
        300.0,
    )
    assert report["downtimeByReason"] == [{"reason": "jam", "seconds": 300.0, "occurrences": 1}]

    # Late again, and splitting the DOWN stretch in two.
    await record(bridge, [state("s-3", "M-1", at(7), "SETUP", "changeover")])
    assert await current(bridge) == ("RUNNING", None, at(10))
    report = await oee(bridge, at(0), at(15))
    assert report["downSeconds"] == 120.0
    assert {d["reason"]: (d["seconds"], d["occurrences"]) for d in report["downtimeByReason"]} == {
        "jam": (120.0, 1),
        "changeover": (180.0, 1),
    }

    # Newer: it becomes the current state.
    await record(bridge, [state("s-4", "M-1", at(20), "IDLE", "no material")])
    assert await current(bridge) == ("IDLE", "no material", at(20))
    # Older than everything: nothing changes now.
    await record(bridge, [state("s-5", "M-1", at(-60), "PLANNED_STOP", "break")])
    assert await current(bridge) == ("IDLE", "no material", at(20))
    report = await oee(bridge, at(-90), at(25))
    # Of 115 minutes, 30 before anything is known are left out and the 65-minute break is not
    # planned time: DOWN 2, SETUP 3, RUNNING 10, IDLE 5 remain.
    assert (report["plannedSeconds"], report["runSeconds"]) == (20 * 60.0, 600.0)
    assert report["availability"] == 0.5


async def test_in_one_batch_the_latest_occurrence_wins_whatever_the_order(bridge: Caller) -> None:
    payload = await record(
        bridge,
        [
            state("s-1", "M-1", at(30), "DOWN", "jam"),
            state("s-2", "M-1", at(40), "RUNNING"),
            state("s-3", "M-1", at(35), "SETUP"),
            counter("c-1", "M-1", at(50), "good", 1),  # not a STATE event: no effect on state
            state("s-4", "M-2", at(10), "DOWN", "motor"),
        ],
    )
    assert payload["accepted"] == 5
    assert await current(bridge) == ("RUNNING", None, at(40))
    assert await current(bridge, "M-2") == ("DOWN", "motor", at(10))
    assert await current(bridge, "M-3") == ("OFFLINE", None, None)

    # A later batch whose newest event is still older than the current state.
    await record(bridge, [state("s-5", "M-1", at(39), "DOWN"), state("s-6", "M-1", at(38), "IDLE")])
    assert await current(bridge) == ("RUNNING", None, at(40))
    # Same state again, later: the state stays, with a new reason it is a change.
    await record(bridge, [state("s-7", "M-1", at(45), "RUNNING", "speed 2")])
    assert await current(bridge) == ("RUNNING", "speed 2", at(45))


async def test_events_filter_by_kind_and_page(bridge: Caller) -> None:
    batch = [
        state("s-1", "M-1", at(1), "RUNNING"),
        counter("c-1", "M-1", at(2), "good", 3),
        value("v-1", "M-1", at(3), "temperature", 70.0, "degC"),
        alarm("a-1", "M-1", at(4), "OVERHEAT", True),
        counter("c-2", "M-1", at(5), "reject", 1),
        alarm("a-2", "M-1", at(6), "OVERHEAT", False),
        state("s-2", "M-1", at(7), "DOWN", "jam"),
        state("other", "M-2", at(1), "RUNNING"),
    ]
    assert (await record(bridge, batch))["accepted"] == 8

    async def ids(kinds: list[str] | None, first: int) -> tuple[list[str], int, int]:
        """All eventIds page by page, the totalCount, and the number of pages."""
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            data = await bridge.data(
                PAGE, {"code": "M-1", "kinds": kinds, "first": first, "after": after}
            )
            connection = data["equipment"]["events"]
            pages += 1
            seen += [e["node"]["eventId"] for e in connection["edges"]]
            assert all(e["node"]["equipment"] == {"code": "M-1"} for e in connection["edges"])
            if not connection["pageInfo"]["hasNextPage"]:
                return seen, connection["totalCount"], pages
            after = connection["pageInfo"]["endCursor"]

    assert await ids(None, 50) == (["s-1", "c-1", "v-1", "a-1", "c-2", "a-2", "s-2"], 7, 1)
    assert await ids(None, 3) == (["s-1", "c-1", "v-1", "a-1", "c-2", "a-2", "s-2"], 7, 3)
    assert await ids(["STATE"], 1) == (["s-1", "s-2"], 2, 2)
    assert await ids(["COUNTER", "ALARM"], 2) == (["c-1", "a-1", "c-2", "a-2"], 4, 2)
    assert await ids(["VALUE"], 10) == (["v-1"], 1, 1)
    data = await bridge.data(PAGE, {"code": "M-3", "kinds": None, "first": 10, "after": None})
    assert data["equipment"]["events"]["totalCount"] == 0
    assert data["equipment"]["events"]["edges"] == []
