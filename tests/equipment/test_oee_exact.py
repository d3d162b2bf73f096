"""OEE is exact over any window: random machine histories, sent in random order across many
batches (late events split existing intervals), compared window by window with an oracle
written from BEHAVIOUR.md's definition, and the hourly rollups compared with a recomputation
from the raw events.

A failure names its seed; rerun one with `-k "seed-<n>"`, or try others with
MES_OEE_SEEDS="1-500" (a range) or "5,17" (a list).
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from equipment_events_support import (
    IDEAL,
    OEE,
    Caller,
    CountPoint,
    StatePoint,
    counter,
    equipment,
    expected_oee,
    floor_hour,
    iso,
    make_plant,
    oee_differences,
    parse,
    record,
    rollup_differences,
    state,
)

from backend.db import Database
from backend.principal import Role


def seeds(spec: str | None) -> list[int]:
    if not spec:
        return [11, 2024, 777]
    if "-" in spec:
        low, high = spec.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in spec.split(",")]


HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
SPAN = 3 * DAY
STATES = ["RUNNING"] * 4 + ["IDLE", "DOWN", "DOWN", "PLANNED_STOP", "SETUP", "OFFLINE"]
# "IDLE" as a reason shares a downtime line with IDLE stretches that have no reason.
REASONS = [None, None, "jam", "material", "break", "changeover", "IDLE"]
COUNTERS = ["good"] * 7 + ["reject"] * 2 + ["scrap-bin"]


@dataclass
class History:
    """One machine's random events, as sent and as the oracle sees them."""

    code: str
    events: list[dict[str, Any]]
    states: list[StatePoint]
    counts: list[CountPoint]
    start: dt.datetime

    @property
    def first(self) -> dt.datetime:
        return min(p.at for p in self.states)

    @property
    def last(self) -> dt.datetime:
        return max([p.at for p in self.states] + [c.at for c in self.counts])


def random_history(
    rng: random.Random, code: str, start: dt.datetime, n_states: int, n_counts: int
) -> History:
    """STATE and COUNTER events at random moments over three days from `start`; some fall
    exactly on an hour, most have microseconds, and a few STATE events share their moment with
    another one."""
    span = SPAN // dt.timedelta(microseconds=1)
    moments: set[dt.datetime] = set()
    while len(moments) < n_states + n_counts:
        offset = dt.timedelta(microseconds=rng.randrange(span))
        moment = start + offset
        if rng.random() < 0.1:
            moment = floor_hour(moment)
        elif rng.random() < 0.1:
            moment = moment.replace(microsecond=0)
        moments.add(moment)
    ordered = sorted(moments)
    rng.shuffle(ordered)
    events: list[dict[str, Any]] = []
    states: list[StatePoint] = []
    counts: list[CountPoint] = []
    for i, moment in enumerate(ordered[:n_states]):
        if states and rng.random() < 0.05:
            moment = rng.choice(states).at
        event_id = f"{code}-s{i}"
        point = StatePoint(moment, rng.choice(STATES), rng.choice(REASONS), event_id=event_id)
        states.append(point)
        events.append(state(event_id, code, moment, point.state, point.reason))
    for i, moment in enumerate(ordered[n_states:]):
        count = CountPoint(moment, rng.choice(COUNTERS), rng.choice([0, 1, 1, 2, 5, 17, 250]))
        counts.append(count)
        events.append(counter(f"{code}-c{i}", code, moment, count.counter, count.increment))
    return History(code, events, states, counts, start)


def random_windows(
    rng: random.Random, history: History, now: dt.datetime, n: int
) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """Windows of every shape: inside one hour, across one hour boundary, on whole hours,
    spanning days, starting before the first event, ending in the future, and with edges on
    the very moments of events."""
    start, first, last = history.start, history.first, history.last
    moments = sorted({p.at for p in history.states} | {c.at for c in history.counts})

    def anywhere() -> dt.datetime:
        return start + rng.random() * SPAN

    def hour_in_span() -> dt.datetime:
        return floor_hour(start) + rng.randrange(int(SPAN / HOUR)) * HOUR

    shapes: list[tuple[str, Callable[[], tuple[dt.datetime, dt.datetime]]]] = []

    def inside_an_hour() -> tuple[dt.datetime, dt.datetime]:
        hour = hour_in_span()
        a, b = sorted(rng.sample(range(3_600_000_000), 2))
        return hour + dt.timedelta(microseconds=a), hour + dt.timedelta(microseconds=b)

    def across_one_boundary() -> tuple[dt.datetime, dt.datetime]:
        hour = hour_in_span() + HOUR
        return hour - rng.random() * HOUR, hour + rng.random() * HOUR

    def whole_hours() -> tuple[dt.datetime, dt.datetime]:
        a = hour_in_span()
        return a, a + rng.randint(1, 40) * HOUR

    def spanning_days() -> tuple[dt.datetime, dt.datetime]:
        a = anywhere()
        return a, a + DAY + rng.random() * 2 * DAY

    def before_the_first() -> tuple[dt.datetime, dt.datetime]:
        a = first - rng.random() * DAY
        return a, max(a + HOUR, anywhere())

    def into_the_future() -> tuple[dt.datetime, dt.datetime]:
        a = anywhere()
        return a, max(last, now) + rng.random() * 2 * DAY

    def everything() -> tuple[dt.datetime, dt.datetime]:
        return start - HOUR * rng.random(), now + DAY * rng.random()

    def between_events() -> tuple[dt.datetime, dt.datetime]:
        i = rng.randrange(len(moments) - 1)
        j = min(len(moments) - 1, i + rng.randint(1, 30))
        return moments[i], moments[j]

    def short() -> tuple[dt.datetime, dt.datetime]:
        a = anywhere()
        return a, a + dt.timedelta(seconds=rng.uniform(0.001, 600))

    shapes = [
        ("inside-an-hour", inside_an_hour),
        ("across-one-boundary", across_one_boundary),
        ("whole-hours", whole_hours),
        ("spanning-days", spanning_days),
        ("before-the-first", before_the_first),
        ("into-the-future", into_the_future),
        ("everything", everything),
        ("between-events", between_events),
        ("short", short),
    ]
    windows = []
    for i in range(n):
        name, make = shapes[i % len(shapes)]
        a, b = make()
        assert a < b
        windows.append((name, a, b))
    return windows


def batches(rng: random.Random, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The events in random order, cut into batches of random size."""
    shuffled = list(events)
    rng.shuffle(shuffled)
    out: list[list[dict[str, Any]]] = []
    while shuffled:
        size = rng.randint(1, 60)
        out.append(shuffled[:size])
        shuffled = shuffled[size:]
    return out


@pytest.fixture
async def bridge(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    await make_plant(await as_role(Role.ERP, username="erp"))
    return await as_role(Role.EQUIPMENT, username="bridge")


async def server_oee(
    caller: Caller, code: str, start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    data = await caller.data(OEE, {"code": code, "from": iso(start), "to": iso(end)})
    report: dict[str, Any] = data["equipment"]["oee"]
    return report


@pytest.mark.parametrize("seed", seeds(os.environ.get("MES_OEE_SEEDS")), ids=lambda s: f"seed-{s}")
async def test_oee_matches_the_definition_over_random_windows(
    bridge: Caller, db: Database, seed: int
) -> None:
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    # Reproducible relative to the clock hour: every time is a whole number of microseconds
    # from an hour boundary, so a seed lays the same events on the same hour edges.
    start = floor_hour(now) - 4 * DAY + dt.timedelta(microseconds=rng.randrange(3_600_000_000))
    press = random_history(rng, "M-1", start, n_states=200, n_counts=100)
    blender = random_history(rng, "M-2", start, n_states=40, n_counts=20)

    sent = batches(rng, press.events + blender.events)
    order = {e["eventId"]: i for i, e in enumerate(e for batch in sent for e in batch)}
    for history in (press, blender):
        history.states = [replace(p, sent=order[p.event_id]) for p in history.states]
    for batch in sent:
        payload = await record(bridge, batch)
        assert payload == {"accepted": len(batch), "duplicates": 0, "errors": []}, seed
    resent = rng.choice(sent)
    assert await record(bridge, resent) == {
        "accepted": 0,
        "duplicates": len(resent),
        "errors": [],
    }

    for history in (press, blender):
        latest = max(history.states, key=lambda p: (p.at, p.sent))
        machine = await equipment(bridge, history.code)
        assert (machine["state"], machine["stateReason"], parse(machine["stateSince"])) == (
            latest.state,
            latest.reason,
            latest.at,
        ), seed
        assert await rollup_differences(db, history.code) == [], seed

    failures: list[str] = []
    for history, n in ((press, 45), (blender, 9)):
        for shape, a, b in random_windows(rng, history, now, n):
            report = await server_oee(bridge, history.code, a, b)
            assert (parse(report["from"]), parse(report["to"])) == (a, b)
            wanted = expected_oee(history.states, history.counts, IDEAL[history.code], a, b)
            wrong = oee_differences(report, wanted)
            if wrong:
                failures.append(f"{history.code} {shape} [{iso(a)}, {iso(b)}): {wrong}")
    assert failures == [], f"seed {seed}:\n" + "\n".join(failures)
