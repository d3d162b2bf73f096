"""OEE worked out by hand for small histories: the formulas, the edges of the definition
(time before the first state, zero denominators, the open interval running into the future)
and the window checks. The random comparison with the oracle is in test_oee_exact.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from equipment_events_support import (
    OEE,
    Caller,
    counter,
    floor_hour,
    iso,
    make_plant,
    record,
    rollup_differences,
    state,
)

from backend.db import Database
from backend.principal import Role

# Not on an hour: the windows below cross hour boundaries at odd places.
T0 = floor_hour(dt.datetime.now(dt.UTC)) - dt.timedelta(days=2, minutes=17, seconds=13)


@pytest.fixture
async def bridge(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    await make_plant(await as_role(Role.ERP, username="erp"))
    return await as_role(Role.EQUIPMENT, username="bridge")


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


async def oee(caller: Caller, start: dt.datetime, end: dt.datetime, code: str = "M-1") -> Any:
    data = await caller.data(OEE, {"code": code, "from": iso(start), "to": iso(end)})
    return data["equipment"]["oee"]


def downtime(report: dict[str, Any]) -> dict[str, tuple[float, int]]:
    return {d["reason"]: (d["seconds"], d["occurrences"]) for d in report["downtimeByReason"]}


async def shift(bridge: Caller) -> None:
    """M-1 (0.5 s per piece): 30 min running, 10 min DOWN (jam), 20 min running, a 30-minute
    planned break, then running on; counts along the way."""
    payload = await record(
        bridge,
        [
            state("s-1", "M-1", at(0), "RUNNING"),
            state("s-2", "M-1", at(30), "DOWN", "jam"),
            state("s-3", "M-1", at(40), "RUNNING"),
            state("s-4", "M-1", at(60), "PLANNED_STOP", "break"),
            state("s-5", "M-1", at(90), "RUNNING"),
            counter("c-1", "M-1", at(10), "good", 3000),
            counter("c-2", "M-1", at(50), "reject", 100),
            counter("c-3", "M-1", at(95), "good", 500),
            counter("c-4", "M-1", at(96), "scrap-bin", 99),  # neither good nor reject
            counter("c-5", "M-1", at(100), "good", 7),  # at the window's end: outside
        ],
    )
    assert payload["accepted"] == 10


async def test_the_formulas_over_a_shift(bridge: Caller) -> None:
    await shift(bridge)
    report = await oee(bridge, at(0), at(100))

    run, down, planned_stop = 60 * 60.0, 10 * 60.0, 30 * 60.0
    planned = 100 * 60.0 - planned_stop
    assert (report["plannedSeconds"], report["runSeconds"], report["downSeconds"]) == (
        planned,
        run,
        down,
    )
    assert (report["goodCount"], report["rejectCount"]) == (3500, 100)
    assert report["availability"] == pytest.approx(run / planned, abs=1e-12)
    assert report["performance"] == pytest.approx(0.5 * 3600 / run, abs=1e-12)
    assert report["quality"] == pytest.approx(3500 / 3600, abs=1e-12)
    assert report["oee"] == pytest.approx(
        (run / planned) * (0.5 * 3600 / run) * (3500 / 3600), abs=1e-12
    )
    assert report["downtimeByReason"] == [
        {"reason": "break", "seconds": 1800.0, "occurrences": 1},
        {"reason": "jam", "seconds": 600.0, "occurrences": 1},
    ]
    assert (report["from"], report["to"]) == (iso(at(0)), iso(at(100)))


async def test_the_same_window_in_another_time_zone(bridge: Caller) -> None:
    await shift(bridge)
    zone = dt.timezone(dt.timedelta(hours=5, minutes=30))
    here = await oee(bridge, at(5), at(95))
    there = await oee(bridge, at(5).astimezone(zone), at(95).astimezone(zone))
    assert {k: v for k, v in there.items() if k not in ("from", "to")} == {
        k: v for k, v in here.items() if k not in ("from", "to")
    }
    assert dt.datetime.fromisoformat(there["from"]) == at(5)


async def test_stretches_cut_by_the_window_count_once(bridge: Caller) -> None:
    await shift(bridge)
    # From inside the jam to inside the break.
    report = await oee(bridge, at(35), at(70))
    assert downtime(report) == {"jam": (300.0, 1), "break": (600.0, 1)}
    assert (report["plannedSeconds"], report["runSeconds"]) == (25 * 60.0, 20 * 60.0)
    assert (report["goodCount"], report["rejectCount"]) == (0, 100)
    # Entirely inside the jam.
    report = await oee(bridge, at(31), at(32))
    assert downtime(report) == {"jam": (60.0, 1)}
    assert (report["plannedSeconds"], report["availability"], report["oee"]) == (60.0, 0.0, 0.0)


async def test_each_state_event_is_a_stretch_of_its_own(bridge: Caller) -> None:
    """The server's convention: two DOWN events with the same reason one after the other are two
    occurrences; a stretch without a reason goes under its state's name."""
    await record(
        bridge,
        [
            state("s-1", "M-1", at(0), "DOWN", "jam"),
            state("s-2", "M-1", at(5), "DOWN", "jam"),
            state("s-3", "M-1", at(6), "IDLE"),
            state("s-4", "M-1", at(8), "DOWN", "IDLE"),
            state("s-5", "M-1", at(9), "OFFLINE"),
            state("s-6", "M-1", at(10), "SETUP", ""),
            state("s-7", "M-1", at(12), "RUNNING", "fast"),
        ],
    )
    report = await oee(bridge, at(0), at(20))
    assert downtime(report) == {
        "jam": (360.0, 2),
        "IDLE": (180.0, 2),
        "OFFLINE": (60.0, 1),
        "SETUP": (120.0, 1),
    }
    assert (report["runSeconds"], report["downSeconds"], report["plannedSeconds"]) == (
        480.0,
        420.0,
        1200.0,
    )


async def test_time_before_the_first_state_is_left_out_and_zero_denominators_give_zero(
    bridge: Caller,
) -> None:
    await record(
        bridge,
        [
            counter("c-1", "M-1", at(-20), "good", 9),
            counter("c-2", "M-1", at(-10), "reject", 1),
            state("s-1", "M-1", at(0), "RUNNING"),
        ],
    )
    before = await oee(bridge, at(-60), at(0))
    assert {k: v for k, v in before.items() if k not in ("from", "to")} == {
        "plannedSeconds": 0.0,
        "runSeconds": 0.0,
        "downSeconds": 0.0,
        "goodCount": 9,
        "rejectCount": 1,
        "availability": 0.0,
        "performance": 0.0,
        "quality": 0.9,
        "oee": 0.0,
        "downtimeByReason": [],
    }
    across = await oee(bridge, at(-60), at(30))
    assert (across["plannedSeconds"], across["runSeconds"], across["availability"]) == (
        1800.0,
        1800.0,
        1.0,
    )
    # M-3 has no ideal cycle time: performance (and so OEE) is 0.
    await record(
        bridge,
        [state("m3-s", "M-3", at(0), "RUNNING"), counter("m3-c", "M-3", at(1), "good", 10)],
    )
    m3 = await oee(bridge, at(0), at(10), code="M-3")
    assert (m3["availability"], m3["performance"], m3["quality"], m3["oee"]) == (
        1.0,
        0.0,
        1.0,
        0.0,
    )
    # No events at all.
    empty = await oee(bridge, at(0), at(10), code="M-2")
    assert (empty["plannedSeconds"], empty["goodCount"], empty["quality"], empty["oee"]) == (
        0.0,
        0,
        0.0,
        0.0,
    )


async def test_the_current_state_runs_on_into_the_future(bridge: Caller) -> None:
    await record(
        bridge,
        [state("s-1", "M-1", at(0), "RUNNING"), state("s-2", "M-1", at(10), "DOWN", "motor")],
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    report = await oee(bridge, later, later + dt.timedelta(hours=5, minutes=3))
    assert (report["plannedSeconds"], report["downSeconds"]) == (18180.0, 18180.0)
    assert downtime(report) == {"motor": (18180.0, 1)}
    long = await oee(bridge, at(-60 * 24), later)
    assert long["runSeconds"] == 600.0
    assert long["plannedSeconds"] == pytest.approx((later - at(0)).total_seconds(), abs=1e-6)
    assert downtime(long)["motor"][1] == 1


async def test_a_window_must_not_end_before_it_begins(bridge: Caller) -> None:
    await shift(bridge)
    body = await bridge(OEE, {"code": "M-1", "from": iso(at(10)), "to": iso(at(5))})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    naive = {"code": "M-1", "from": "2026-01-01T00:00:00", "to": iso(at(5))}
    assert (await bridge(OEE, naive))["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    empty = await oee(bridge, at(35), at(35))
    assert (empty["plannedSeconds"], empty["runSeconds"], empty["goodCount"]) == (0.0, 0.0, 0)
    assert empty["downtimeByReason"] == []


async def test_a_late_event_from_long_ago(bridge: Caller, db: Database) -> None:
    """A clock that was a year behind: the interval up to the next event spans thousands of
    hourly rollup rows, and every window over it still adds up."""
    long_ago = at(-400 * 24 * 60 - 7.5)
    await shift(bridge)
    await record(bridge, [state("old", "M-1", long_ago, "IDLE", "clock")])
    assert await rollup_differences(db, "M-1") == []
    report = await oee(bridge, long_ago - dt.timedelta(days=1), at(100))
    idle = (at(0) - long_ago).total_seconds()
    assert downtime(report) == {
        "clock": (idle, 1),
        "break": (1800.0, 1),
        "jam": (600.0, 1),
    }
    assert report["plannedSeconds"] == idle + 100 * 60.0 - 1800.0
    middle = await oee(bridge, at(-200 * 24 * 60 + 0.25), at(-100 * 24 * 60 - 0.5))
    assert downtime(middle) == {"clock": (100 * 86400.0 - 45.0, 1)}
    assert (middle["plannedSeconds"], middle["runSeconds"]) == (100 * 86400.0 - 45.0, 0.0)
