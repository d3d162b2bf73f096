"""Shared by the equipment event and OEE tests: GraphQL documents, a small plant, event
builders, the OEE oracle written from BEHAVIOUR.md, and a recomputation of the hourly rollups
from the raw events."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from backend.catalog.models import Equipment
from backend.db import Database
from backend.equipment.models import CounterHour, EquipmentEvent, EquipmentEventKind, StateHour


class Caller(Protocol):
    """The root conftest's `Gql`: a GraphQL caller signed in as someone."""

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]: ...


ERRORS = "errors { code message field }"
RECORD = f"""
mutation Record($events: [EquipmentEventInput!]!) {{
  recordEquipmentEvents(events: $events) {{ accepted duplicates {ERRORS} }}
}}
"""
UPSERT_WORK_CENTERS = f"""
mutation Plant($input: [WorkCenterInput!]!) {{
  upsertWorkCenters(input: $input) {{ workCenters {{ code }} {ERRORS} }}
}}
"""
EQUIPMENT = "id code state stateReason stateSince workCenter { code }"
EQUIPMENT_BY_CODE = f"query($code: String!) {{ equipment(code: $code) {{ {EQUIPMENT} }} }}"
EVENT = """
  id eventId kind occurredAt receivedAt state reason counter increment name value unit
  alarmCode alarmActive message equipment { code }
"""
OEE_FIELDS = """
  from to plannedSeconds runSeconds downSeconds goodCount rejectCount
  availability performance quality oee downtimeByReason { reason seconds occurrences }
"""
OEE = f"""
query($code: String!, $from: DateTime!, $to: DateTime!) {{
  equipment(code: $code) {{ oee(from: $from, to: $to) {{ {OEE_FIELDS} }} }}
}}
"""

# WC-1 holds M-1 (0.5 s per piece) and M-2 (2 s); WC-2 holds M-3 (no ideal cycle time).
PLANT = [
    {
        "code": "WC-1",
        "name": "Tableting",
        "equipment": [
            {"code": "M-1", "name": "Tablet press", "idealCycleSeconds": 0.5},
            {"code": "M-2", "name": "Blender", "idealCycleSeconds": 2.0},
        ],
    },
    {
        "code": "WC-2",
        "name": "Packing",
        "equipment": [{"code": "M-3", "name": "Blister line"}],
    },
]
IDEAL = {"M-1": 0.5, "M-2": 2.0, "M-3": 0.0}


async def make_plant(erp: Caller, plant: Sequence[dict[str, Any]] = PLANT) -> None:
    payload = (await erp.data(UPSERT_WORK_CENTERS, {"input": list(plant)}))["upsertWorkCenters"]
    assert payload["errors"] == [], payload["errors"]


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def state(
    event_id: str, code: str, at: dt.datetime, value: str, reason: str | None = None
) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "equipmentCode": code,
        "kind": "STATE",
        "occurredAt": iso(at),
        "state": value,
        "reason": reason,
    }


def counter(event_id: str, code: str, at: dt.datetime, name: str, increment: int) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "equipmentCode": code,
        "kind": "COUNTER",
        "occurredAt": iso(at),
        "counter": name,
        "increment": increment,
    }


def value(
    event_id: str, code: str, at: dt.datetime, name: str, number: float, unit: str | None = None
) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "equipmentCode": code,
        "kind": "VALUE",
        "occurredAt": iso(at),
        "name": name,
        "value": number,
        "unit": unit,
    }


def alarm(
    event_id: str, code: str, at: dt.datetime, alarm_code: str, active: bool
) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "equipmentCode": code,
        "kind": "ALARM",
        "occurredAt": iso(at),
        "alarmCode": alarm_code,
        "alarmActive": active,
    }


async def record(caller: Caller, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The recordEquipmentEvents payload (no top-level error allowed)."""
    payload: dict[str, Any] = (await caller.data(RECORD, {"events": list(events)}))[
        "recordEquipmentEvents"
    ]
    return payload


async def equipment(caller: Caller, code: str) -> dict[str, Any]:
    found: dict[str, Any] = (await caller.data(EQUIPMENT_BY_CODE, {"code": code}))["equipment"]
    return found


def parse(moment: str) -> dt.datetime:
    return dt.datetime.fromisoformat(moment.replace("Z", "+00:00"))


def floor_hour(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------- the OEE oracle

MICRO = dt.timedelta(microseconds=1)


def micros(span: dt.timedelta) -> int:
    return span // MICRO


@dataclass(frozen=True)
class StatePoint:
    at: dt.datetime
    state: str
    reason: str | None
    # Among STATE events at the same moment, the one stored last counts (the server orders by
    # occurredAt, then by its row id): the order of sending, within a batch too.
    sent: int = 0
    event_id: str = ""


@dataclass(frozen=True)
class CountPoint:
    at: dt.datetime
    counter: str
    increment: int


def label(point: StatePoint) -> str:
    """How downtimeByReason names a stretch — the server's convention (backend/equipment/
    service.py, `add` in `oee`): the STATE event's reason, or the state's name when it has none.
    So a DOWN stretch with reason "IDLE" and an IDLE stretch without one share a line."""
    return point.reason or point.state


def expected_oee(
    states: Sequence[StatePoint],
    counts: Sequence[CountPoint],
    ideal_cycle_seconds: float,
    start: dt.datetime,
    end: dt.datetime,
) -> dict[str, Any]:
    """OEE over [start, end) straight from BEHAVIOUR.md, by brute force over all events.

    Each moment takes the state of the last STATE event at or before it, so STATE event i
    holds from its time to the next one's (the last one holds for ever); time before the first
    known state is left out. A stretch is one STATE event's interval; occurrences count the
    non-running stretches that overlap the window (an event followed by another at the same
    moment has an empty interval: it overlaps nothing). Seconds are summed in whole
    microseconds, so the oracle itself is exact.
    """
    ordered = sorted(states, key=lambda p: (p.at, p.sent))
    per_state: dict[str, int] = defaultdict(int)
    downtime: dict[str, list[int]] = {}
    for i, point in enumerate(ordered):
        until = ordered[i + 1].at if i + 1 < len(ordered) else None
        lo = max(start, point.at)
        hi = end if until is None else min(end, until)
        if hi <= lo:
            continue
        span = micros(hi - lo)
        per_state[point.state] += span
        if point.state != "RUNNING":
            line = downtime.setdefault(label(point), [0, 0])
            line[0] += span
            line[1] += 1
    window = micros(end - start)
    known = sum(per_state.values())
    left_out = window - known
    planned = (window - per_state["PLANNED_STOP"] - left_out) / 1e6
    run, down = per_state["RUNNING"] / 1e6, per_state["DOWN"] / 1e6
    good = sum(c.increment for c in counts if c.counter == "good" and start <= c.at < end)
    reject = sum(c.increment for c in counts if c.counter == "reject" and start <= c.at < end)

    def ratio(top: float, bottom: float) -> float:
        return top / bottom if bottom > 0 else 0.0

    availability = ratio(run, planned)
    performance = ratio(ideal_cycle_seconds * (good + reject), run)
    quality = ratio(good, good + reject)
    return {
        "plannedSeconds": planned,
        "runSeconds": run,
        "downSeconds": down,
        "goodCount": good,
        "rejectCount": reject,
        "availability": availability,
        "performance": performance,
        "quality": quality,
        "oee": availability * performance * quality,
        "downtimeByReason": {k: (us / 1e6, n) for k, (us, n) in downtime.items()},
    }


TOLERANCE = 1e-6


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def oee_differences(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What differs between the server's OeeReport and the oracle's (empty when they agree)."""
    wrong: list[str] = []
    for key in ("goodCount", "rejectCount"):
        if actual[key] != expected[key]:
            wrong.append(f"{key}: server {actual[key]}, expected {expected[key]}")
    for key in (
        "plannedSeconds",
        "runSeconds",
        "downSeconds",
        "availability",
        "performance",
        "quality",
        "oee",
    ):
        if not close(actual[key], expected[key]):
            wrong.append(f"{key}: server {actual[key]!r}, expected {expected[key]!r}")
    reasons = [d["reason"] for d in actual["downtimeByReason"]]
    if len(reasons) != len(set(reasons)):
        wrong.append(f"downtimeByReason names a reason twice: {reasons}")
    served = {d["reason"]: (d["seconds"], d["occurrences"]) for d in actual["downtimeByReason"]}
    wanted: dict[str, tuple[float, int]] = expected["downtimeByReason"]
    for reason in sorted(set(served) | set(wanted)):
        got, want = served.get(reason), wanted.get(reason)
        if got is None or want is None or got[1] != want[1] or not close(got[0], want[0]):
            wrong.append(f"downtimeByReason[{reason!r}]: server {got}, expected {want}")
    return wrong


# ---------------------------------------------------------------- the rollups, recomputed

HOUR = dt.timedelta(hours=1)


async def rollup_differences(db: Database, code: str) -> list[str]:
    """Recomputes one machine's state intervals and hourly rollups from its raw events and
    says where the stored ones differ (empty when they agree)."""
    async with db.read() as session:
        equipment_id = await session.scalar(select(Equipment.id).where(Equipment.code == code))
        assert equipment_id is not None
        events = list(
            await session.scalars(
                select(EquipmentEvent)
                .where(EquipmentEvent.equipment_id == equipment_id)
                .order_by(EquipmentEvent.occurred_at, EquipmentEvent.id)
            )
        )
        state_rows = list(
            await session.scalars(select(StateHour).where(StateHour.equipment_id == equipment_id))
        )
        counter_rows = list(
            await session.scalars(
                select(CounterHour).where(CounterHour.equipment_id == equipment_id)
            )
        )
    wrong: list[str] = []
    states = [e for e in events if e.kind is EquipmentEventKind.STATE]  # by (occurredAt, id)
    seconds: dict[tuple[dt.datetime, str, str], int] = defaultdict(int)
    starts: dict[tuple[dt.datetime, str, str], int] = defaultdict(int)
    for i, event in enumerate(states):
        until = states[i + 1].occurred_at if i + 1 < len(states) else None
        if event.state_until != until:
            wrong.append(f"event {event.event_id}: state_until {event.state_until}, next {until}")
        assert event.state is not None
        reason = event.reason or ""
        if until is None or until > event.occurred_at:  # an empty interval is no stretch
            starts[(floor_hour(event.occurred_at), event.state.value, reason)] += 1
        if until is None:
            continue
        hour = floor_hour(event.occurred_at)
        while hour < until:
            piece = min(until, hour + HOUR) - max(event.occurred_at, hour)
            seconds[(hour, event.state.value, reason)] += micros(piece)
            hour += HOUR
    stored_seconds = {(r.hour, r.state.value, r.reason): r.seconds for r in state_rows}
    stored_starts = {(r.hour, r.state.value, r.reason): r.starts for r in state_rows}
    for key in sorted(set(seconds) | set(starts) | set(stored_seconds)):
        want_s, got_s = seconds.get(key, 0) / 1e6, stored_seconds.get(key, 0.0)
        want_n, got_n = starts.get(key, 0), stored_starts.get(key, 0)
        if not close(want_s, got_s) or want_n != got_n:
            wrong.append(f"state hour {key}: stored ({got_s}, {got_n}), raw ({want_s}, {want_n})")
    totals: dict[tuple[dt.datetime, str], int] = defaultdict(int)
    for event in events:
        if event.kind is EquipmentEventKind.COUNTER:
            assert event.counter is not None
            assert event.increment is not None
            totals[(floor_hour(event.occurred_at), event.counter)] += event.increment
    stored_totals = {(r.hour, r.counter): r.total for r in counter_rows}
    for key in sorted(set(totals) | set(stored_totals)):
        if totals.get(key, 0) != stored_totals.get(key, 0):
            wrong.append(
                f"counter hour {key}: stored {stored_totals.get(key, 0)}, raw {totals.get(key, 0)}"
            )
    return wrong
