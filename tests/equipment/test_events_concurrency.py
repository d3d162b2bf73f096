"""Batches for the same machine sent at the same time (bridges resending after a timeout, two
bridges on one line): every eventId is stored once, accepted and duplicates add up, and the
state intervals and hourly rollups stay consistent."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Callable
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
from sqlalchemy import func, select

from backend.catalog.models import Equipment
from backend.db import Database
from backend.equipment.models import CounterHour, EquipmentEvent
from backend.principal import Role

pytestmark = pytest.mark.postgres

STATES = ["RUNNING", "RUNNING", "IDLE", "DOWN", "PLANNED_STOP", "SETUP"]
T0 = floor_hour(dt.datetime.now(dt.UTC)) - dt.timedelta(days=3, minutes=41)


@pytest.fixture
async def bridges(as_role: Callable[..., Awaitable[Caller]]) -> list[Caller]:
    """Four EQUIPMENT callers, one per concurrent sender."""
    await make_plant(await as_role(Role.ERP, username="erp"))
    return [await as_role(Role.EQUIPMENT, username=f"bridge-{i}") for i in range(4)]


def machine_events(
    rng: random.Random, code: str, n: int, prefix: str = "e"
) -> tuple[list[dict[str, Any]], list[StatePoint], list[CountPoint]]:
    """n events, every third a STATE event, at distinct random moments over two days."""
    events: list[dict[str, Any]] = []
    states: list[StatePoint] = []
    counts: list[CountPoint] = []
    moments = rng.sample(range(2 * 86_400_000), n)
    for i, ms in enumerate(moments):
        moment = T0 + dt.timedelta(milliseconds=ms)
        if i % 3 == 0:
            point = StatePoint(moment, rng.choice(STATES), rng.choice([None, "jam", "break"]))
            states.append(point)
            events.append(state(f"{prefix}-{i}", code, moment, point.state, point.reason))
        else:
            count = CountPoint(moment, rng.choice(["good", "good", "reject"]), rng.randint(0, 9))
            counts.append(count)
            events.append(counter(f"{prefix}-{i}", code, moment, count.counter, count.increment))
    return events, states, counts


async def stored_ids(db: Database, code: str) -> list[str]:
    async with db.read() as session:
        rows = await session.scalars(
            select(EquipmentEvent.event_id)
            .join(Equipment, Equipment.id == EquipmentEvent.equipment_id)
            .where(Equipment.code == code)
        )
        return list(rows)


async def check_machine(
    caller: Caller,
    db: Database,
    code: str,
    states: list[StatePoint],
    counts: list[CountPoint],
) -> None:
    """Current state, rollups and OEE over the whole history as if sent one by one."""
    latest = max(states, key=lambda p: p.at)
    machine = await equipment(caller, code)
    assert (machine["state"], machine["stateReason"], parse(machine["stateSince"])) == (
        latest.state,
        latest.reason,
        latest.at,
    )
    assert await rollup_differences(db, code) == []
    for start, end in (
        (T0 - dt.timedelta(hours=1), T0 + dt.timedelta(days=3)),
        (T0 + dt.timedelta(hours=5, minutes=7), T0 + dt.timedelta(hours=30, seconds=1)),
    ):
        data = await caller.data(OEE, {"code": code, "from": iso(start), "to": iso(end)})
        wanted = expected_oee(states, counts, IDEAL[code], start, end)
        assert oee_differences(data["equipment"]["oee"], wanted) == []


async def test_overlapping_resends_store_every_event_once(
    bridges: list[Caller], db: Database
) -> None:
    rng = random.Random(5)
    events: list[dict[str, Any]] = []
    states: list[StatePoint] = []
    counts: list[CountPoint] = []
    for round_ in range(3):  # a few rounds: more chances for the batches to interleave
        new, new_states, new_counts = machine_events(rng, "M-1", 400, prefix=f"r{round_}")
        events, states, counts = events + new, states + new_states, counts + new_counts
        slices = [new[0:200], new[100:300], new[200:400], new[::2]]
        for chunk in slices:
            rng.shuffle(chunk)
        payloads = await asyncio.gather(
            *(record(caller, chunk) for caller, chunk in zip(bridges, slices, strict=True))
        )
        assert all(p["errors"] == [] for p in payloads)
        assert sum(p["accepted"] for p in payloads) == 400
        assert sum(p["accepted"] + p["duplicates"] for p in payloads) == sum(map(len, slices))

    ids = await stored_ids(db, "M-1")
    assert sorted(ids) == sorted(e["eventId"] for e in events)
    async with db.read() as session:
        totals = dict(
            (
                await session.execute(
                    select(CounterHour.counter, func.sum(CounterHour.total)).group_by(
                        CounterHour.counter
                    )
                )
            ).all()
        )
    assert totals == {
        name: sum(c.increment for c in counts if c.counter == name) for name in ("good", "reject")
    }
    await check_machine(bridges[0], db, "M-1", states, counts)

    # And the last round once more, at the same time: nothing new.
    again = await asyncio.gather(
        *(record(caller, chunk) for caller, chunk in zip(bridges, slices, strict=True))
    )
    assert [(p["accepted"], p["duplicates"]) for p in again] == [(0, len(s)) for s in slices]


async def test_concurrent_state_batches_keep_the_intervals_consistent(
    bridges: list[Caller], db: Database
) -> None:
    rng = random.Random(8)
    history: dict[str, tuple[list[StatePoint], list[CountPoint]]] = {
        "M-1": ([], []),
        "M-2": ([], []),
    }
    for round_ in range(3):
        press, press_states, press_counts = machine_events(rng, "M-1", 240, f"r{round_}")
        blender, blender_states, blender_counts = machine_events(rng, "M-2", 120, f"r{round_}")
        history["M-1"][0].extend(press_states)
        history["M-1"][1].extend(press_counts)
        history["M-2"][0].extend(blender_states)
        history["M-2"][1].extend(blender_counts)
        # Interleaved in time, disjoint in ids; each batch holds both machines, in either
        # order, so batches wait for each other's locks.
        rng.shuffle(press)
        rng.shuffle(blender)
        slices = [
            press[i::4] + blender[i::4] if i % 2 else blender[i::4] + press[i::4] for i in range(4)
        ]
        payloads = await asyncio.gather(
            *(record(caller, chunk) for caller, chunk in zip(bridges, slices, strict=True))
        )
        assert [(p["accepted"], p["duplicates"], p["errors"]) for p in payloads] == [
            (len(s), 0, []) for s in slices
        ]
    await check_machine(bridges[1], db, "M-1", *history["M-1"])
    await check_machine(bridges[2], db, "M-2", *history["M-2"])
