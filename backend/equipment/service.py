"""Machine events, live equipment state and OEE (BEHAVIOUR.md, "Equipment").

State rollup. Each STATE event is one interval: from its `occurredAt` to the next STATE event's
(`state_until`), or open while it is the latest; events at the same moment are ordered by
their row id, and all but the last of them get an empty interval (no stretch at all).
Inserting an event — also a late one — splits the interval it falls into. Closed intervals are
summed per clock hour into `equipment_state_hours` (seconds, and the stretches that start in
the hour); COUNTER increments per hour into `equipment_counter_hours`. OEE over a window reads
whole hours from those, and raw events only for the partial hours at its edges and for the
open interval, so a 30-day window never scans 30 days of events. OEE sums whole microseconds,
so the rollups' float seconds cannot leave residues.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Row, Select, Table, bindparam, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

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
_MICRO = dt.timedelta(microseconds=1)


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
    event_id = spec.event_id.strip()
    if not (0 < len(event_id) <= 100 and event_id.isprintable()):  # else the same, slower
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
        if spec.value is None:
            problems.invalid(f"{at}.value", "a VALUE event needs a value")
    # Checked for every kind, although only a VALUE event's value is kept: a non-finite
    # number is a broken sender, and saying so beats dropping it quietly.
    validation.finite(problems, f"{at}.value", spec.value)
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


# The statements of an ingest are built once (building a statement costs more Python than
# running it) and take their rows as parameter sets (executemany), so SQLAlchemy compiles each
# only once: a multi-row VALUES with the rows in it was compiled afresh for every batch.


@functools.cache
def _store_events(dialect: str) -> Any:
    table = EquipmentEvent.__table__
    return (
        _insert(dialect)(table)
        .on_conflict_do_nothing(index_elements=["equipment_id", "event_id"])
        .returning(table.c.id, table.c.equipment_id, table.c.event_id)
    )


# What an event row holds when it is stored (state_until comes later, from its neighbours).
_STORED_COLUMNS = (
    "equipment_id",
    "event_id",
    "kind",
    "occurred_at",
    "state",
    "reason",
    "counter",
    "increment",
    "name",
    "value",
    "unit",
    "alarm_code",
    "alarm_active",
    "message",
)


@functools.cache
def _store_events_unnested() -> Any:
    """PostgreSQL: the batch as one array per column, unnested into rows. One statement of
    15 parameters whatever the batch size: SQLAlchemy and asyncpg handle 15 lists, not 15
    values per event (about 2 ms less Python per 500 events than a multi-row VALUES)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    def sql_type(name: str) -> str:
        # Without a length: a cast to VARCHAR(n) would cut an over-long value silently, where
        # the INSERT into the column refuses it (as any INSERT would).
        return str(_events.c[name].type.compile(dialect=dialect)).split("(", 1)[0]

    arrays = ", ".join(f"CAST(:{name} AS {sql_type(name)}[])" for name in _STORED_COLUMNS)
    received = sql_type("received_at")
    return text(
        f"INSERT INTO {_events.name} ({', '.join(_STORED_COLUMNS)}, received_at) "
        f"SELECT *, CAST(:received_at AS {received}) FROM unnest({arrays}) "
        "ON CONFLICT (equipment_id, event_id) DO NOTHING "
        "RETURNING id, equipment_id, event_id"
    ).columns(_events.c.id, _events.c.equipment_id, _events.c.event_id)


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    equipment_id: int
    kind: EquipmentEventKind
    occurred_at: dt.datetime
    counter: str | None
    increment: int | None


async def _store(
    uow: UnitOfWork, rows: Sequence[dict[str, Any]], now: dt.datetime
) -> list[_Stored]:
    """Inserts the rows, but none whose (equipment, eventId) is already stored; returns those
    it inserted."""
    connection = await uow.session.connection()
    if uow.dialect == "postgresql":
        columns: dict[str, Any] = {name: [row[name] for row in rows] for name in _STORED_COLUMNS}
        columns["kind"] = [kind.value for kind in columns["kind"]]
        columns["state"] = [None if st is None else st.value for st in columns["state"]]
        # The driver sends zone-aware times as they are; UTCDateTime's bind only adds the
        # check, done in _check, that every one has a zone.
        result = await connection.execute(_store_events_unnested(), {**columns, "received_at": now})
    else:
        # Core executemany: a few multi-row INSERTs ("insertmanyvalues") from one cached
        # compiled statement.
        result = await connection.execute(_store_events(uow.dialect), rows)
    by_key = {(row["equipment_id"], row["event_id"]): row for row in rows}
    stored = []
    for pk, equipment_id, event_id in result:
        row = by_key[(equipment_id, event_id)]
        stored.append(
            _Stored(
                pk, equipment_id, row["kind"], row["occurred_at"], row["counter"], row["increment"]
            )
        )
    return stored


@functools.cache
def _add_to_counter_hours(dialect: str) -> Any:
    table = CounterHour.__table__
    insert = _insert(dialect)(table)
    return insert.on_conflict_do_update(
        index_elements=["equipment_id", "hour", "counter"],
        set_={"total": table.c.total + insert.excluded.total},
    )


@functools.cache
def _add_to_state_hours(dialect: str) -> Any:
    table = StateHour.__table__
    insert = _insert(dialect)(table)
    return insert.on_conflict_do_update(
        index_elements=["equipment_id", "hour", "state", "reason"],
        set_={
            "seconds": table.c.seconds + insert.excluded.seconds,
            "starts": table.c.starts + insert.excluded.starts,
        },
    )


_equipment = cast(Table, Equipment.__table__)
_events = cast(Table, EquipmentEvent.__table__)
_LOCK_EQUIPMENT = (
    select(
        _equipment.c.id,
        _equipment.c.code,
        _equipment.c.work_center_id,
        _equipment.c.state,
        _equipment.c.state_reason,
    )
    .where(_equipment.c.code.in_(bindparam("codes", expanding=True)))
    .order_by(_equipment.c.id)
    .with_for_update()
)
_INTERVALS = select(
    _events.c.id,
    _events.c.equipment_id,
    _events.c.occurred_at,
    _events.c.state,
    _events.c.reason,
    _events.c.state_until,
).where(_events.c.id.in_(bindparam("ids", expanding=True)))
_EVENTS_BY_IDS = (
    select(_events).where(_events.c.id.in_(bindparam("ids", expanding=True))).order_by(_events.c.id)
)
_SET_STATE_UNTIL = (
    update(_events)
    .where(_events.c.id == bindparam("b_id"))
    .values(state_until=bindparam("b_until"))
)
_SET_CURRENT_STATE = (
    update(_equipment)
    .where(_equipment.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        state_reason=bindparam("b_reason"),
        state_since=bindparam("b_since"),
    )
)


async def record_events(uow: UnitOfWork, specs: Sequence[EventSpec]) -> IngestResult:
    """Stores a batch: each event checked on its own; duplicates by (equipment, eventId) counted
    and ignored; good events stored even when others in the batch are bad."""
    if len(specs) > MAX_BATCH:
        raise DomainError.one(
            ErrorCode.INVALID_INPUT, f"send at most {MAX_BATCH} events at once", "events"
        )
    session, now, result = uow.session, utcnow(), IngestResult()
    codes = {s.equipment_code.strip() for s in specs}
    connection = await session.connection()
    # Plain rows, locked: batches for the same machines take turns (their state placement
    # reads what the other wrote). The ORM's objects would only add cost here.
    equipment = (
        {e.code: e for e in await connection.execute(_LOCK_EQUIPMENT, {"codes": sorted(codes)})}
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
    stored = await _store(uow, rows, now)
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
        machines = {e.id: e for e in equipment.values()}
        placed = await _place_states(uow, state_ids)
        await _set_current_states(uow, [(machines[k], latest) for k, latest in placed.items()])
    ids: dict[int, list[int]] = defaultdict(list)
    for r in sorted(stored, key=lambda r: r.id):
        ids[r.equipment_id].append(r.id)
    # One message per machine and batch, not per event: a subscriber's queue holds a limited
    # number of messages, and a batch of 500 must not overflow it.
    for equipment_id, event_ids in ids.items():
        uow.publish(EVENTS_CHANNEL, {"equipmentId": equipment_id, "ids": event_ids})
    accepted = {k: len(v) for k, v in ids.items()}
    # One entry per machine: an entity id names one machine (a batch may touch many).
    for machine in sorted(equipment.values(), key=lambda e: e.code):
        if machine.id in accepted:
            uow.audit(
                "equipment.events",
                "Equipment",
                machine.code,
                {"accepted": accepted[machine.id], "duplicates": duplicates[machine.id]},
            )
    return result


async def _roll_up_counters(uow: UnitOfWork, stored: Iterable[_Stored]) -> None:
    totals: dict[tuple[int, dt.datetime, str], int] = defaultdict(int)
    for r in stored:
        assert r.counter is not None  # checked: a COUNTER event names its counter
        totals[(r.equipment_id, _hour(r.occurred_at), r.counter)] += int(r.increment or 0)
    if not totals:
        return
    connection = await uow.session.connection()
    await connection.execute(
        _add_to_counter_hours(uow.dialect),
        [
            {"equipment_id": e, "hour": h, "counter": c, "total": t}
            for (e, h, c), t in sorted(totals.items())
        ],
    )


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


_Slot = tuple[int, dt.datetime, EquipmentState, str]  # equipment, hour, state, reason ("")


class _StateDeltas:
    """Changes to equipment_state_hours, summed before they are written in a few statements."""

    def __init__(self) -> None:
        self.micros: dict[_Slot, int] = defaultdict(int)
        self.starts: dict[_Slot, int] = defaultdict(int)

    def interval(
        self,
        equipment_id: int,
        state: EquipmentState,
        reason: str | None,
        start: dt.datetime,
        end: dt.datetime,
        sign: int,
    ) -> None:
        """Adds (sign=1) or removes (sign=-1) a closed interval's time, hour by hour."""
        hour = _hour(start)
        while hour < end:
            piece = (min(end, hour + HOUR) - max(start, hour)) // _MICRO
            self.micros[(equipment_id, hour, state, reason or "")] += piece * sign
            hour += HOUR

    def start(
        self, equipment_id: int, state: EquipmentState, reason: str | None, at: dt.datetime, n: int
    ) -> None:
        self.starts[(equipment_id, _hour(at), state, reason or "")] += n

    async def write(self, uow: UnitOfWork) -> None:
        slots = sorted(
            k for k in {*self.micros, *self.starts} if self.micros.get(k) or self.starts.get(k)
        )
        if not slots:
            return
        connection = await uow.session.connection()
        await connection.execute(
            _add_to_state_hours(uow.dialect),
            [
                {
                    "equipment_id": e,
                    "hour": h,
                    "state": st,
                    "reason": r,
                    "seconds": self.micros.get((e, h, st, r), 0) / 1e6,
                    "starts": self.starts.get((e, h, st, r), 0),
                }
                for e, h, st, r in slots
            ],
        )


@functools.cache
def _neighbours() -> Select[Any]:
    """The STATE events whose ids are the parameter `ids`, each with its neighbours among all
    STATE events of its equipment in (occurredAt, id) order: `next_at`, the moment of the next
    one, and `prev_id`, the previous one.

    Each neighbour is found with ORDER BY occurredAt alone, which the index on (equipment,
    kind, occurredAt) serves in order from the event on, and the tie on id is settled among
    the events of that one moment. (Ordering by (occurredAt, id) instead lets the planner
    sort the whole rest of a machine's history when it misjudges the row counts.)

    Built once: building it costs more than running it.
    """
    outer, other = EquipmentEvent, aliased(EquipmentEvent)
    same = (other.equipment_id == outer.equipment_id, other.kind == EquipmentEventKind.STATE)
    next_at = (
        select(other.occurred_at)
        .where(
            *same,
            other.occurred_at >= outer.occurred_at,
            or_(other.occurred_at > outer.occurred_at, other.id > outer.id),
        )
        .order_by(other.occurred_at)
        .limit(1)
        .correlate(outer)
        .scalar_subquery()
    )
    prev_at = (
        select(other.occurred_at)
        .where(
            *same,
            other.occurred_at <= outer.occurred_at,
            or_(other.occurred_at < outer.occurred_at, other.id < outer.id),
        )
        .order_by(other.occurred_at.desc())
        .limit(1)
        .correlate(outer)
        .scalar_subquery()
    )
    found = (
        select(
            outer.id,
            outer.equipment_id,
            outer.occurred_at,
            outer.state,
            outer.reason,
            next_at.label("next_at"),
            prev_at.label("prev_at"),
        )
        .where(outer.id.in_(bindparam("ids", expanding=True)))
        .subquery()
    )
    prev_id = (
        select(func.max(other.id))
        .where(
            other.equipment_id == found.c.equipment_id,
            other.kind == EquipmentEventKind.STATE,
            other.occurred_at == found.c.prev_at,
            or_(other.occurred_at < found.c.occurred_at, other.id < found.c.id),
        )
        .correlate(found)
        .scalar_subquery()
    )
    return select(found, prev_id.label("prev_id"))


async def _place_states(uow: UnitOfWork, ids: Sequence[int]) -> dict[int, Any]:
    """Fits newly stored STATE events into their equipment's intervals and the hourly rollup;
    returns, per equipment, the new event that became its latest (if one did).

    The new events are already in the table, so each one's neighbours, found in one query,
    are its final neighbours. Only two kinds of interval change: the new ones, and the one an
    older event had when a new event lands inside it (that older event is then the new event's
    previous one). Intervals only ever shrink: a stretch of zero length (two events at the same
    moment) is no stretch and does not count as a start.
    """
    session = uow.session
    new = {r.id: r for r in (await session.execute(_neighbours(), {"ids": ids})).all()}
    wanted = {r.prev_id for r in new.values() if r.prev_id is not None and r.prev_id not in new}
    old = (
        {r.id: r for r in await session.execute(_INTERVALS, {"ids": sorted(wanted)})}
        if wanted
        else {}
    )
    deltas, until_of, latest = _StateDeltas(), {}, {}
    for r in new.values():
        until = r.next_at
        if until is None:
            latest[r.equipment_id] = r
        until_of[r.id] = until
        if until is None or until > r.occurred_at:
            deltas.start(r.equipment_id, r.state, r.reason, r.occurred_at, 1)
        if until is not None:
            deltas.interval(r.equipment_id, r.state, r.reason, r.occurred_at, until, 1)
        prev = old.get(r.prev_id) if r.prev_id is not None else None
        if prev is None:
            continue  # none, or another new event (whose interval is computed in full)
        if prev.state_until is None:
            deltas.interval(
                prev.equipment_id, prev.state, prev.reason, prev.occurred_at, r.occurred_at, 1
            )
        else:
            deltas.interval(
                prev.equipment_id, prev.state, prev.reason, r.occurred_at, prev.state_until, -1
            )
        was_a_stretch = prev.state_until is None or prev.state_until > prev.occurred_at
        if was_a_stretch and r.occurred_at == prev.occurred_at:
            deltas.start(prev.equipment_id, prev.state, prev.reason, prev.occurred_at, -1)
        until_of[prev.id] = r.occurred_at
    changed = [{"b_id": k, "b_until": v} for k, v in sorted(until_of.items()) if v is not None]
    if changed:  # by primary key: one executemany
        connection = await session.connection()
        await connection.execute(_SET_STATE_UNTIL, changed)
    await deltas.write(uow)
    return latest


async def _set_current_states(uow: UnitOfWork, placed: Sequence[tuple[Any, Any]]) -> None:
    """Each machine's state is now that of `latest`, its STATE event with the latest
    occurredAt; subscribers hear of it when the state or its reason changed. `placed` holds
    (the machine's locked row, its latest event)."""
    for machine, latest in placed:
        if machine.state != latest.state or machine.state_reason != latest.reason:
            uow.publish(STATE_CHANNEL, {"id": machine.id, "workCenterId": machine.work_center_id})
    if not placed:
        return
    connection = await uow.session.connection()
    await connection.execute(
        _SET_CURRENT_STATE,
        [
            {
                "b_id": machine.id,
                "b_state": latest.state,
                "b_reason": latest.reason,
                "b_since": latest.occurred_at,
            }
            for machine, latest in sorted(placed, key=lambda p: p[0].id)
        ],
    )


# ---------------------------------------------------------------- OEE


@dataclass
class Downtime:
    reason: str
    micros: int = 0
    occurrences: int = 0

    @property
    def seconds(self) -> float:
        return self.micros / 1e6


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
    # Sums in whole microseconds (every time is a whole number of them): exact, and the
    # rollups' float sums round back to what they stand for, without residues such as
    # 1e-13 s of a state that is not in the window at all.
    micros: dict[EquipmentState, int] = defaultdict(int)
    downtime: dict[str, Downtime] = {}
    counts: dict[str, int] = defaultdict(int)

    def add(state: EquipmentState, reason: str | None, span: int, starts: int) -> None:
        micros[state] += span
        if state is not EquipmentState.RUNNING:
            label = reason or state.value
            entry = downtime.setdefault(label, Downtime(label))
            entry.micros += span
            entry.occurrences += starts

    head_end, tail_start = _ceil_hour(start), _hour(end)
    if head_end >= tail_start:  # the window lies within one or two partial hours: raw only
        segments = [(start, end)]
        middle = None
    else:
        segments = [(start, head_end), (tail_start, end)]
        middle = (head_end, tail_start)

    # Every query below is an index range or seek: none scans a machine's history from its
    # beginning or end, so a window costs the same after a month of events as after a day.
    state_events = (
        EquipmentEvent.equipment_id == equipment.id,
        EquipmentEvent.kind == EquipmentEventKind.STATE,
    )

    async def covering(moment: dt.datetime) -> EquipmentEvent | None:
        """The STATE event whose interval holds `moment` and began before it."""
        found = await session.scalar(
            select(EquipmentEvent)
            .where(*state_events, EquipmentEvent.occurred_at < moment)
            .order_by(EquipmentEvent.occurred_at.desc(), EquipmentEvent.id.desc())
            .limit(1)
        )
        if found is None or (found.state_until is not None and found.state_until <= moment):
            return None
        return found

    # The open interval (the current state, from the latest STATE event on) is in no rollup:
    # it counts on its own, up to the end of the window.
    current = await session.scalar(
        select(EquipmentEvent)
        .where(*state_events)
        .order_by(EquipmentEvent.occurred_at.desc(), EquipmentEvent.id.desc())
        .limit(1)
    )
    if current is not None and current.state_until is not None:
        current = None  # cannot be: the latest event's interval is open

    # The edge segments from raw events: intervals that begin in them (closed ones; the open
    # one is counted below), and the part of the one that began before.
    for a, b in segments:
        if b <= a:
            continue
        rows = await session.execute(  # plain rows: up to an hour of events, no ORM objects
            select(
                EquipmentEvent.state,
                EquipmentEvent.reason,
                EquipmentEvent.occurred_at,
                EquipmentEvent.state_until,
            ).where(
                *state_events,
                EquipmentEvent.occurred_at >= a,
                EquipmentEvent.occurred_at < b,
                EquipmentEvent.state_until.is_not(None),
            )
        )
        for state, reason, began, until in rows:
            assert state is not None
            assert until is not None
            overlap = (min(b, until) - began) // _MICRO
            # A stretch of zero length (another event at the same moment) is no stretch.
            add(state, reason, overlap, 1 if overlap > 0 else 0)
        before = await covering(a)
        if before is not None and before.state_until is not None:
            assert before.state is not None
            overlap = (min(b, before.state_until) - a) // _MICRO
            add(before.state, before.reason, overlap, 0)  # its start counts elsewhere
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
            add(state, reason or None, round((secs or 0.0) * 1e6), int(starts or 0))
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
    if current is not None and current.occurred_at < end:
        assert current.state is not None
        # Its start is in the rollup when it began in the middle hours.
        in_middle = middle is not None and middle[0] <= current.occurred_at < middle[1]
        began_in_edge = start <= current.occurred_at and not in_middle
        overlap = (end - max(start, current.occurred_at)) // _MICRO
        add(current.state, current.reason, overlap, 1 if began_in_edge else 0)
    # The interval that began before the window but reaches into it is one stretch, too.
    first = await covering(start) if start < end else None  # an empty window holds none
    if first is not None and first.state not in (None, EquipmentState.RUNNING):
        assert first.state is not None
        label = first.reason or first.state.value
        downtime.setdefault(label, Downtime(label)).occurrences += 1

    # planned = window - PLANNED_STOP - left out, where left out = window - known
    planned = (sum(micros.values()) - micros[EquipmentState.PLANNED_STOP]) / 1e6
    run, down = micros[EquipmentState.RUNNING] / 1e6, micros[EquipmentState.DOWN] / 1e6
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
            (d for d in downtime.values() if d.micros > 0 or d.occurrences > 0),
            key=lambda d: (-d.micros, d.reason),
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


async def equipment_id(session: AsyncSession, code: str) -> int | None:
    found: int | None = await session.scalar(
        select(Equipment.id).where(Equipment.code == code.strip())
    )
    return found


async def work_center_id(session: AsyncSession, code: str) -> int | None:
    found: int | None = await session.scalar(
        select(WorkCenter.id).where(WorkCenter.code == code.strip())
    )
    return found


async def events_by_ids(session: AsyncSession, ids: Sequence[int]) -> list[Row[Any]]:
    """The events with these ids, in id order, as plain rows (with the columns' names)."""
    wanted = sorted(set(ids))
    rows: list[Row[Any]] = []
    for k in range(0, len(wanted), MAX_BATCH):
        rows += await session.execute(_EVENTS_BY_IDS, {"ids": wanted[k : k + MAX_BATCH]})
    return rows
