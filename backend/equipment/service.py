"""Machine events, live equipment state and OEE (BEHAVIOUR.md, "Equipment").

State rollup. Each STATE event is one interval: from its `occurredAt` to the next STATE event's
(`state_until`), or open while it is the latest. Inserting an event — also a late one — splits
the interval it falls into. Closed intervals are summed per clock hour into
`equipment_state_hours`; COUNTER increments per hour into `equipment_counter_hours`. OEE over a
window reads whole hours from those, and raw events only for the partial hours at its edges
and for the open interval, so a 30-day window never scans 30 days of events.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from backend import validation
from backend.catalog.models import Equipment, EquipmentState, WorkCenter
from backend.db import utcnow
from backend.equipment.models import CounterHour, EquipmentEvent, EquipmentEventKind, StateHour
from backend.errors import DomainError, ErrorCode, Problem, Problems
from backend.uow import UnitOfWork

EVENTS_CHANNEL = "equipment.event"
STATE_CHANNEL = "equipment.state"
MAX_BATCH = 1000
CLOCK_SKEW = dt.timedelta(minutes=5)
HOUR = dt.timedelta(hours=1)


@dataclass
class EventSpec:
    event_id: str
    equipment_code: str
    kind: EquipmentEventKind
    occurred_at: dt.datetime
    state: EquipmentState | None = None
    reason: str | None = None
    counter: str | None = None
    increment: int | None = None
    name: str | None = None
    value: float | None = None
    unit: str | None = None
    alarm_code: str | None = None
    alarm_active: bool | None = None
    message: str | None = None


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    problems: list[Problem] = field(default_factory=list)


def _check(
    spec: EventSpec, at: str, now: dt.datetime
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The event as a row (without ids), or its problems."""
    problems = Problems()
    event_id = validation.code(problems, f"{at}.eventId", spec.event_id, max_length=100)
    if spec.occurred_at.tzinfo is None:
        problems.invalid(f"{at}.occurredAt", "needs a time zone")
    elif spec.occurred_at > now + CLOCK_SKEW:
        problems.invalid(f"{at}.occurredAt", "is in the future: check the bridge's clock")
    kind = spec.kind
    if kind is EquipmentEventKind.STATE and spec.state is None:
        problems.invalid(f"{at}.state", "a STATE event needs a state")
    if kind is EquipmentEventKind.COUNTER:
        if not (spec.counter and spec.counter.strip()):
            problems.invalid(f"{at}.counter", "a COUNTER event needs the counter's name")
        if spec.increment is None or spec.increment < 0:
            problems.invalid(f"{at}.increment", "a COUNTER event needs an increment of 0 or more")
    if kind is EquipmentEventKind.VALUE:
        if not (spec.name and spec.name.strip()):
            problems.invalid(f"{at}.name", "a VALUE event needs the value's name")
        if spec.value is None or not math.isfinite(spec.value):
            problems.invalid(f"{at}.value", "a VALUE event needs a finite value")
    if kind is EquipmentEventKind.ALARM:
        if not (spec.alarm_code and spec.alarm_code.strip()):
            problems.invalid(f"{at}.alarmCode", "an ALARM event needs an alarm code")
        if spec.alarm_active is None:
            problems.invalid(f"{at}.alarmActive", "say whether the alarm is raised or cleared")
    for name, value, limit in (
        ("reason", spec.reason, 200),
        ("counter", spec.counter, 64),
        ("name", spec.name, 64),
        ("unit", spec.unit, 20),
        ("alarmCode", spec.alarm_code, 64),
        ("message", spec.message, 2000),
    ):
        if value is not None and len(value) > limit:
            problems.invalid(f"{at}.{name}", f"must be at most {limit} characters")
    if problems:
        return None, problems.items
    keep = kind  # only the fields of the event's kind are stored
    return {
        "event_id": event_id,
        "kind": kind,
        "occurred_at": spec.occurred_at,
        "received_at": now,
        "state": spec.state if keep is EquipmentEventKind.STATE else None,
        "reason": (spec.reason or None) if keep in (EquipmentEventKind.STATE,) else spec.reason,
        "counter": spec.counter.strip()
        if keep is EquipmentEventKind.COUNTER and spec.counter
        else None,
        "increment": spec.increment if keep is EquipmentEventKind.COUNTER else None,
        "name": spec.name.strip() if keep is EquipmentEventKind.VALUE and spec.name else None,
        "value": spec.value if keep is EquipmentEventKind.VALUE else None,
        "unit": spec.unit,
        "alarm_code": spec.alarm_code.strip()
        if keep is EquipmentEventKind.ALARM and spec.alarm_code
        else None,
        "alarm_active": spec.alarm_active if keep is EquipmentEventKind.ALARM else None,
        "message": spec.message,
    }, []


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def record_events(uow: UnitOfWork, specs: Sequence[EventSpec]) -> IngestResult:
    """Stores a batch: each event checked on its own; duplicates by (equipment, eventId) counted
    and ignored; good events stored even when others in the batch are bad."""
    if len(specs) > MAX_BATCH:
        raise DomainError.one(
            ErrorCode.INVALID_INPUT, f"send at most {MAX_BATCH} events at once", "events"
        )
    session, now, result = uow.session, utcnow(), IngestResult()
    codes = {s.equipment_code.strip() for s in specs}
    equipment = (
        {
            e.code: e
            for e in await session.scalars(
                select(Equipment)
                .where(Equipment.code.in_(codes))
                .order_by(Equipment.id)
                .with_for_update()
            )
        }
        if codes
        else {}
    )
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    duplicates: dict[int, int] = defaultdict(int)
    for i, spec in enumerate(specs):
        at = f"events.{i}"
        row, problems = _check(spec, at, now)
        machine = equipment.get(spec.equipment_code.strip())
        if machine is None:
            problems.append(
                Problem(
                    ErrorCode.NOT_FOUND,
                    f"no equipment {spec.equipment_code.strip()!r}",
                    f"{at}.equipmentCode",
                )
            )
        if problems or row is None or machine is None:
            result.problems.extend(problems)
            continue
        key = (machine.id, row["event_id"])
        if key in seen:
            result.duplicates += 1
            duplicates[machine.id] += 1
            continue
        seen.add(key)
        row["equipment_id"] = machine.id
        rows.append(row)
    if not rows:
        return result
    stored = list(
        (
            await session.execute(
                _insert(uow.dialect)(EquipmentEvent)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["equipment_id", "event_id"])
                .returning(
                    EquipmentEvent.id,
                    EquipmentEvent.equipment_id,
                    EquipmentEvent.kind,
                    EquipmentEvent.occurred_at,
                    EquipmentEvent.counter,
                    EquipmentEvent.increment,
                )
            )
        ).all()
    )
    result.accepted = len(stored)
    result.duplicates += len(rows) - len(stored)
    sent: dict[int, int] = defaultdict(int)
    for row in rows:
        sent[row["equipment_id"]] += 1
    for r in stored:
        sent[r.equipment_id] -= 1
    for equipment_id, left_out in sent.items():
        duplicates[equipment_id] += left_out
    if not stored:
        return result
    await _roll_up_counters(uow, [r for r in stored if r.kind is EquipmentEventKind.COUNTER])
    state_ids = [r.id for r in stored if r.kind is EquipmentEventKind.STATE]
    if state_ids:
        new_states = list(
            await session.scalars(
                select(EquipmentEvent)
                .where(EquipmentEvent.id.in_(state_ids))
                .order_by(EquipmentEvent.occurred_at, EquipmentEvent.id)
            )
        )
        by_id = {e.id: e for e in equipment.values()}
        for event in new_states:
            await _place_state(session, event)
        for equipment_id in {e.equipment_id for e in new_states}:
            await _refresh_current_state(uow, by_id[equipment_id])
    accepted: dict[int, int] = defaultdict(int)
    for r in stored:
        accepted[r.equipment_id] += 1
        uow.publish(EVENTS_CHANNEL, {"id": r.id, "equipmentId": r.equipment_id})
    # One entry per machine: an entity id names one machine (a batch may touch many).
    for machine in sorted(equipment.values(), key=lambda e: e.code):
        if accepted[machine.id]:
            uow.audit(
                "equipment.events",
                "Equipment",
                machine.code,
                {"accepted": accepted[machine.id], "duplicates": duplicates[machine.id]},
            )
    return result


async def _roll_up_counters(uow: UnitOfWork, stored: Iterable[Any]) -> None:
    totals: dict[tuple[int, dt.datetime, str], int] = defaultdict(int)
    for r in stored:
        totals[(r.equipment_id, _hour(r.occurred_at), r.counter)] += int(r.increment or 0)
    if not totals:
        return
    insert = _insert(uow.dialect)(CounterHour).values(
        [
            {"equipment_id": e, "hour": h, "counter": c, "total": t}
            for (e, h, c), t in totals.items()
        ]
    )
    await uow.session.execute(
        insert.on_conflict_do_update(
            index_elements=["equipment_id", "hour", "counter"],
            set_={"total": CounterHour.total + insert.excluded.total},
        )
    )


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


async def _add_interval(
    session: AsyncSession,
    equipment_id: int,
    state: EquipmentState,
    reason: str | None,
    start: dt.datetime,
    end: dt.datetime,
    sign: int,
) -> None:
    """Adds (sign=1) or removes (sign=-1) a closed interval's seconds, hour by hour."""
    if end <= start:
        return
    hour = _hour(start)
    while hour < end:
        seconds = (min(end, hour + HOUR) - max(start, hour)).total_seconds()
        await _bump(session, equipment_id, hour, state, reason or "", seconds * sign, 0)
        hour += HOUR


async def _bump(
    session: AsyncSession,
    equipment_id: int,
    hour: dt.datetime,
    state: EquipmentState,
    reason: str,
    seconds: float,
    starts: int,
) -> None:
    dialect = session.get_bind().dialect.name
    insert = _insert(dialect)(StateHour).values(
        equipment_id=equipment_id,
        hour=hour,
        state=state,
        reason=reason,
        seconds=seconds,
        starts=starts,
    )
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["equipment_id", "hour", "state", "reason"],
            set_={
                "seconds": StateHour.seconds + insert.excluded.seconds,
                "starts": StateHour.starts + insert.excluded.starts,
            },
        )
    )


async def _place_state(session: AsyncSession, event: EquipmentEvent) -> None:
    """Fits a new STATE event into the equipment's intervals and the hourly rollup."""
    same = (
        EquipmentEvent.equipment_id == event.equipment_id,
        EquipmentEvent.kind == EquipmentEventKind.STATE,
        EquipmentEvent.id != event.id,
    )
    later = or_(
        EquipmentEvent.occurred_at > event.occurred_at,
        (EquipmentEvent.occurred_at == event.occurred_at) & (EquipmentEvent.id > event.id),
    )
    earlier = or_(
        EquipmentEvent.occurred_at < event.occurred_at,
        (EquipmentEvent.occurred_at == event.occurred_at) & (EquipmentEvent.id < event.id),
    )
    nxt = await session.scalar(
        select(EquipmentEvent)
        .where(*same, later)
        .order_by(EquipmentEvent.occurred_at, EquipmentEvent.id)
        .limit(1)
    )
    prev = await session.scalar(
        select(EquipmentEvent)
        .where(*same, earlier)
        .order_by(EquipmentEvent.occurred_at.desc(), EquipmentEvent.id.desc())
        .limit(1)
    )
    assert event.state is not None
    event.state_until = nxt.occurred_at if nxt is not None else None
    await _bump(
        session,
        event.equipment_id,
        _hour(event.occurred_at),
        event.state,
        event.reason or "",
        0.0,
        1,
    )
    if event.state_until is not None:
        await _add_interval(
            session,
            event.equipment_id,
            event.state,
            event.reason,
            event.occurred_at,
            event.state_until,
            1,
        )
    if prev is not None:
        assert prev.state is not None
        if prev.state_until is not None:
            # The new event cuts the end off prev's closed interval.
            await _add_interval(
                session,
                prev.equipment_id,
                prev.state,
                prev.reason,
                event.occurred_at,
                prev.state_until,
                -1,
            )
        else:
            await _add_interval(
                session,
                prev.equipment_id,
                prev.state,
                prev.reason,
                prev.occurred_at,
                event.occurred_at,
                1,
            )
        prev.state_until = event.occurred_at
    await session.flush()


async def _refresh_current_state(uow: UnitOfWork, equipment: Equipment) -> None:
    latest = await uow.session.scalar(
        select(EquipmentEvent)
        .where(
            EquipmentEvent.equipment_id == equipment.id,
            EquipmentEvent.kind == EquipmentEventKind.STATE,
        )
        .order_by(EquipmentEvent.occurred_at.desc(), EquipmentEvent.id.desc())
        .limit(1)
    )
    if latest is None or latest.state is None:
        return
    if (equipment.state, equipment.state_reason, equipment.state_since) == (
        latest.state,
        latest.reason,
        latest.occurred_at,
    ):
        return
    changed = equipment.state != latest.state or equipment.state_reason != latest.reason
    equipment.state, equipment.state_reason = latest.state, latest.reason
    equipment.state_since = latest.occurred_at
    if changed:
        uow.publish(STATE_CHANNEL, {"id": equipment.id, "workCenterId": equipment.work_center_id})


# ---------------------------------------------------------------- OEE


@dataclass
class Downtime:
    reason: str
    seconds: float = 0.0
    occurrences: int = 0


@dataclass
class Oee:
    start: dt.datetime
    end: dt.datetime
    planned_seconds: float
    run_seconds: float
    down_seconds: float
    good: int
    reject: int
    availability: float
    performance: float
    quality: float
    oee: float
    downtime: list[Downtime]


def _ratio(top: float, bottom: float) -> float:
    return top / bottom if bottom > 0 else 0.0


def _ceil_hour(moment: dt.datetime) -> dt.datetime:
    floor = _hour(moment)
    return floor if floor == moment else floor + HOUR


async def oee(
    session: AsyncSession, equipment: Equipment, start: dt.datetime, end: dt.datetime
) -> Oee:
    """OEE over [start, end) exactly as BEHAVIOUR.md defines it."""
    if start.tzinfo is None or end.tzinfo is None:
        raise DomainError.one(ErrorCode.INVALID_INPUT, "from and to need a time zone", "from")
    if end < start:
        raise DomainError.one(ErrorCode.INVALID_INPUT, "`to` must not be before `from`", "to")
    seconds: dict[EquipmentState, float] = defaultdict(float)
    downtime: dict[str, Downtime] = {}
    counts: dict[str, int] = defaultdict(int)
    known = 0.0

    def add(state: EquipmentState, reason: str | None, secs: float, starts: int) -> None:
        nonlocal known
        seconds[state] += secs
        known += secs
        if state is not EquipmentState.RUNNING:
            label = reason or state.value
            entry = downtime.setdefault(label, Downtime(label))
            entry.seconds += secs
            entry.occurrences += starts

    head_end, tail_start = _ceil_hour(start), _hour(end)
    if head_end >= tail_start:  # the window lies within one or two partial hours: raw only
        segments = [(start, end)]
        middle = None
    else:
        segments = [(start, head_end), (tail_start, end)]
        middle = (head_end, tail_start)

    # Raw intervals for the edge segments (closed ones; the open one is handled below).
    for a, b in segments:
        if b <= a:
            continue
        rows = await session.scalars(
            select(EquipmentEvent).where(
                EquipmentEvent.equipment_id == equipment.id,
                EquipmentEvent.kind == EquipmentEventKind.STATE,
                EquipmentEvent.occurred_at < b,
                EquipmentEvent.state_until.is_not(None),
                EquipmentEvent.state_until > a,
            )
        )
        for ev in rows:
            assert ev.state is not None and ev.state_until is not None
            overlap = (min(b, ev.state_until) - max(a, ev.occurred_at)).total_seconds()
            began_here = a <= ev.occurred_at < b
            add(ev.state, ev.reason, overlap, 1 if began_here else 0)
        for name, total in (
            await session.execute(
                select(EquipmentEvent.counter, func.sum(EquipmentEvent.increment))
                .where(
                    EquipmentEvent.equipment_id == equipment.id,
                    EquipmentEvent.kind == EquipmentEventKind.COUNTER,
                    EquipmentEvent.occurred_at >= a,
                    EquipmentEvent.occurred_at < b,
                )
                .group_by(EquipmentEvent.counter)
            )
        ).all():
            counts[name or ""] += int(total or 0)
    if middle is not None:
        for state, reason, secs, starts in (
            await session.execute(
                select(
                    StateHour.state,
                    StateHour.reason,
                    func.sum(StateHour.seconds),
                    func.sum(StateHour.starts),
                )
                .where(
                    StateHour.equipment_id == equipment.id,
                    StateHour.hour >= middle[0],
                    StateHour.hour < middle[1],
                )
                .group_by(StateHour.state, StateHour.reason)
            )
        ).all():
            add(state, reason or None, float(secs or 0.0), int(starts or 0))
        for name, total in (
            await session.execute(
                select(CounterHour.counter, func.sum(CounterHour.total))
                .where(
                    CounterHour.equipment_id == equipment.id,
                    CounterHour.hour >= middle[0],
                    CounterHour.hour < middle[1],
                )
                .group_by(CounterHour.counter)
            )
        ).all():
            counts[name] += int(total or 0)
        # Rollup "starts" include the open interval's start; its seconds come below.
    # The open interval (the current state) counts up to the end of the window.
    current = await session.scalar(
        select(EquipmentEvent).where(
            EquipmentEvent.equipment_id == equipment.id,
            EquipmentEvent.kind == EquipmentEventKind.STATE,
            EquipmentEvent.state_until.is_(None),
            EquipmentEvent.occurred_at < end,
        )
    )
    if current is not None and current.state is not None:
        overlap = (end - max(start, current.occurred_at)).total_seconds()
        in_middle = middle is not None and middle[0] <= current.occurred_at < middle[1]
        began_in_edge = start <= current.occurred_at < end and not in_middle
        add(current.state, current.reason, max(overlap, 0.0), 1 if began_in_edge else 0)
    # An interval that began before the window but reaches into it is one stretch, too.
    first = await session.scalar(
        select(EquipmentEvent).where(
            EquipmentEvent.equipment_id == equipment.id,
            EquipmentEvent.kind == EquipmentEventKind.STATE,
            EquipmentEvent.occurred_at < start,
            or_(EquipmentEvent.state_until.is_(None), EquipmentEvent.state_until > start),
        )
    )
    if first is not None and first.state is not None and first.state is not EquipmentState.RUNNING:
        label = first.reason or first.state.value
        downtime.setdefault(label, Downtime(label)).occurrences += 1

    window = (end - start).total_seconds()
    left_out = window - known
    planned = window - seconds[EquipmentState.PLANNED_STOP] - left_out
    run, down = seconds[EquipmentState.RUNNING], seconds[EquipmentState.DOWN]
    good, reject = counts.get("good", 0), counts.get("reject", 0)
    availability = _ratio(run, planned)
    performance = _ratio((equipment.ideal_cycle_seconds or 0.0) * (good + reject), run)
    quality = _ratio(good, good + reject)
    return Oee(
        start,
        end,
        planned,
        run,
        down,
        good,
        reject,
        availability,
        performance,
        quality,
        availability * performance * quality,
        sorted(
            (d for d in downtime.values() if d.seconds > 0 or d.occurrences > 0),
            key=lambda d: (-d.seconds, d.reason),
        ),
    )


# ---------------------------------------------------------------- reads


def events_query(
    equipment_id: int, kinds: Sequence[EquipmentEventKind] | None
) -> Select[EquipmentEvent]:
    stmt = select(EquipmentEvent).where(EquipmentEvent.equipment_id == equipment_id)
    if kinds:
        stmt = stmt.where(EquipmentEvent.kind.in_(list(kinds)))
    return stmt


async def equipment_ids_of_work_center(session: AsyncSession, code: str) -> set[int]:
    return set(
        await session.scalars(
            select(Equipment.id)
            .join(WorkCenter, WorkCenter.id == Equipment.work_center_id)
            .where(WorkCenter.code == code.strip())
        )
    )
