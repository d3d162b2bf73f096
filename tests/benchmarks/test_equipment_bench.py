"""Equipment on PostgreSQL: event ingest, event -> subscriber latency, and OEE over 30 days.

1. Ingest (`test_equipment_ingest`). `recordEquipmentEvents` in batches of 500 over HTTP to a
   real `mes serve` with an EQUIPMENT token, as bridges send them: a mix across 10 machines
   (about 48 % COUNTER, 45 % VALUE, 5 % STATE, 2 % ALARM; each machine's events in time
   order), from 1 bridge (all 10 machines) and then from 2 bridges at once (5 machines each),
   each round for MES_BENCH_EQ_SECONDS. Beside it, in the same run and on a database of its
   own with the same machines: exactly the batches the API took, as plain bulk INSERTs
   through SQLAlchemy Core (`insert(EquipmentEvent)` executemany on an AsyncEngine, one
   transaction per batch, as many tasks as bridges). Printed: events/s for both, the ratio
   API / Core, server CPU and PostgreSQL time per 1,000 events, and the statements one batch
   of 500 costs in the service (in-process, by kind). Measured from HTTP to the database:
   the bridge's outbox is not part of it (not ready yet).
2. Latency (`test_equipment_event_latency`). A subscriber on a WebSocket of its own
   (graphql-transport-ws, `equipmentEvents` of all machines) while a loader offers
   `recordEquipmentEvents` at a fixed rate on up to 4 connections (it waits when all 4 are
   busy, so the server sets the pace when it cannot keep up): 2,000 events/s in batches of
   100, then of 500, then a light 200 events/s in batches of 20. Each event carries its batch
   number in `message`; latency is receipt minus the time the batch was sent, and receipt
   minus the time its mutation returned. Printed: the rate accepted, p50/p95/p99, and how
   many of the events the subscriber received at all.
3. OEE (`test_equipment_oee_30_days`). One machine, 30 days, one event per second (STATE when
   the state changes - runs, micro-stops, jams, idle, setups, three planned breaks a day -
   COUNTER `good`/`reject` otherwise): 2.6 M events, loaded with COPY (the service path is
   measured on a sample and extrapolated: far too slow for 2.6 M rows here), the rollups
   built with one INSERT...SELECT per table equivalent to what the service maintains. Checked
   on a 3-hour sample that the same events stored through `record_events` give the same
   `state_until`, rollup rows and OEE; and every OEE figure printed against a reference
   computed in Python from the generated events. Printed: p50/p95 of
   `equipment(code) { oee(from, to) }` over HTTP for the aligned 30-day window, one with
   unaligned edges and the last 24 h, and the statements of one OEE call (in-process).
   MES_BENCH_OEE_STATES=every2s makes every other event a STATE event (1.3 M intervals): the
   worst case for the raw parts of OEE.

Run: MES_BENCH=1 pytest tests/benchmarks/test_equipment_bench.py -s
Knobs: MES_BENCH_EQ_SECONDS (per ingest round, default 15), MES_BENCH_EQ_EVENTS (at most, per
round, default 90000), MES_BENCH_EQ_RATE and MES_BENCH_EQ_LOW_RATE (latency load, events/s,
defaults 2000 and 200), MES_BENCH_SECONDS / MES_BENCH_WARMUP (per latency phase, 10 / 2),
MES_BENCH_OEE_DAYS (30), MES_BENCH_OEE_STEP (seconds between events, 1), MES_BENCH_OEE_STATES
(changes | every2s). Databases: MES_BENCH_DATABASE_URL with `_eq_*` suffixes, dropped at the
end. Every figure is printed with the machine's load average: on a shared 2-CPU machine the
other processes' load moves them a lot.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import math
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import benchkit
import uvloop
import websockets
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.catalog import service as catalog
from backend.catalog.models import Equipment, EquipmentState
from backend.db import Database, utcnow
from backend.equipment import service as equipment_service
from backend.equipment.models import CounterHour, EquipmentEvent, EquipmentEventKind, StateHour
from backend.migrate import upgrade
from backend.principal import SYSTEM
from backend.uow import transaction

BATCH = 500
INGEST_EVENTS = int(os.environ.get("MES_BENCH_EQ_EVENTS", "90000"))
INGEST_SECONDS = benchkit.seconds("MES_BENCH_EQ_SECONDS", 15)
LATENCY_RATE = float(os.environ.get("MES_BENCH_EQ_RATE", "2000"))
LATENCY_LOW_RATE = float(os.environ.get("MES_BENCH_EQ_LOW_RATE", "200"))
LATENCY_SECONDS = benchkit.seconds("MES_BENCH_SECONDS", 10)
LATENCY_WARMUP = benchkit.seconds("MES_BENCH_WARMUP", 2)
OEE_DAYS = float(os.environ.get("MES_BENCH_OEE_DAYS", "30"))
OEE_STEP = int(os.environ.get("MES_BENCH_OEE_STEP", "1"))
OEE_STATES = os.environ.get("MES_BENCH_OEE_STATES", "changes")
OEE_REPEATS = 20
IDEAL_CYCLE_SECONDS = 0.4

MACHINES = [f"PRESS-{k:02d}" for k in range(1, 6)] + [f"BLEND-{k:02d}" for k in range(1, 6)]

RECORD = """mutation Record($events: [EquipmentEventInput!]!) {
  recordEquipmentEvents(events: $events) { accepted duplicates errors { code field message } }
}"""

SUBSCRIPTION = """subscription {
  equipmentEvents { eventId kind occurredAt message state counter increment name value }
}"""

OEE_QUERY = """query Oee($code: String!, $from: DateTime!, $to: DateTime!) {
  equipment(code: $code) {
    oee(from: $from, to: $to) {
      from to plannedSeconds runSeconds downSeconds goodCount rejectCount
      availability performance quality oee
      downtimeByReason { reason seconds occurrences }
    }
  }
}"""


# ---------------------------------------------------------------- shared


async def seed_equipment(url: str, groups: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Work centers with their machines (ideal cycle IDEAL_CYCLE_SECONDS); returns code → id."""
    db = Database(url)
    try:
        async with transaction(db, SYSTEM) as uow:
            await catalog.upsert_work_centers(
                uow,
                [
                    catalog.WorkCenterSpec(
                        wc,
                        f"Work center {wc}",
                        [
                            catalog.EquipmentSpec(code, f"Machine {code}", IDEAL_CYCLE_SECONDS)
                            for code in codes
                        ],
                    )
                    for wc, codes in groups.items()
                ],
            )
        async with db.read() as session:
            return {e.code: e.id for e in await session.scalars(select(Equipment))}
    finally:
        await db.dispose()


def prepare_database(suffix: str) -> str:
    url = benchkit.postgres_url(suffix)
    benchkit.recreate_postgres(url)
    upgrade(url)
    return url


def machine_load() -> str:
    """The load average: the figures are only as good as the machine was quiet."""
    one, five, *_ = Path("/proc/loadavg").read_text().split()
    return f"load average {one} (1 min) {five} (5 min) on {os.cpu_count()} CPUs"


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Ev:
    """One machine event, as the bridge sends it and as the service would store it."""

    event_id: str
    code: str
    kind: EquipmentEventKind
    at: dt.datetime
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

    def as_input(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "eventId": self.event_id,
            "equipmentCode": self.code,
            "kind": self.kind.value,
            "occurredAt": self.at.isoformat(),
        }
        for key, value in (
            ("state", self.state.value if self.state else None),
            ("reason", self.reason),
            ("counter", self.counter),
            ("increment", self.increment),
            ("name", self.name),
            ("value", self.value),
            ("unit", self.unit),
            ("alarmCode", self.alarm_code),
            ("alarmActive", self.alarm_active),
            ("message", self.message),
        ):
            if value is not None:
                data[key] = value
        return data

    def as_row(self, equipment_id: int, received_at: dt.datetime) -> dict[str, Any]:
        """The row the service stores for it (without `state_until`)."""
        return {
            "equipment_id": equipment_id,
            "event_id": self.event_id,
            "kind": self.kind,
            "occurred_at": self.at,
            "received_at": received_at,
            "state": self.state,
            "reason": self.reason,
            "counter": self.counter,
            "increment": self.increment,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "alarm_code": self.alarm_code,
            "alarm_active": self.alarm_active,
            "message": self.message,
        }

    def as_spec(self) -> equipment_service.EventSpec:
        return equipment_service.EventSpec(
            event_id=self.event_id,
            equipment_code=self.code,
            kind=self.kind,
            occurred_at=self.at,
            state=self.state,
            reason=self.reason,
            counter=self.counter,
            increment=self.increment,
            name=self.name,
            value=self.value,
            unit=self.unit,
            alarm_code=self.alarm_code,
            alarm_active=self.alarm_active,
            message=self.message,
        )


_STOPS = (  # (state, reason, weight)
    (EquipmentState.DOWN, "JAM", 30),
    (EquipmentState.DOWN, "MATERIAL_SHORTAGE", 10),
    (EquipmentState.IDLE, None, 25),
    (EquipmentState.SETUP, "CHANGEOVER", 5),
    (EquipmentState.RUNNING, None, 30),
)
_VALUES = (("temperature", "°C", 45.0), ("pressure", "kN", 12.0), ("speed", "rpm", 60.0))
_ALARMS = ("OVERTEMP", "DOOR_OPEN", "LOW_AIR")


def mixed_events(
    codes: Sequence[str], count: int, start: dt.datetime, step: float, prefix: str, seed: int
) -> list[Ev]:
    """`count` events round-robin over `codes` (each machine's in time order, `step` seconds
    apart over all machines): ~48 % COUNTER, 45 % VALUE, 5 % STATE, 2 % ALARM."""
    rng = random.Random(seed)
    seq: Counter[str] = Counter()
    alarms: dict[tuple[str, str], bool] = {}
    events = []
    for i in range(count):
        code = codes[i % len(codes)]
        seq[code] += 1
        ev = Ev(
            f"{prefix}-{code}-{seq[code]:07d}",
            code,
            EquipmentEventKind.COUNTER,
            start + dt.timedelta(seconds=i * step),
        )
        roll = rng.random()
        if roll < 0.48:
            ev.counter = "reject" if rng.random() < 0.04 else "good"
            ev.increment = rng.randint(1, 6)
        elif roll < 0.93:
            name, unit, base = _VALUES[rng.randrange(len(_VALUES))]
            ev.kind, ev.name, ev.unit = EquipmentEventKind.VALUE, name, unit
            ev.value = round(base + rng.gauss(0, base * 0.02), 3)
        elif roll < 0.98:
            state, reason, _ = rng.choices(_STOPS, weights=[w for *_, w in _STOPS])[0]
            ev.kind, ev.state, ev.reason = EquipmentEventKind.STATE, state, reason
        else:
            alarm = _ALARMS[rng.randrange(len(_ALARMS))]
            active = not alarms.get((code, alarm), False)
            alarms[(code, alarm)] = active
            ev.kind, ev.alarm_code, ev.alarm_active = EquipmentEventKind.ALARM, alarm, active
            ev.message = f"{alarm} {'raised' if active else 'cleared'} on {code}"
        events.append(ev)
    return events


def chunks(items: Sequence[Ev], size: int) -> list[list[Ev]]:
    return [list(items[k : k + size]) for k in range(0, len(items), size)]


class StatementLog:
    """Counts and times the statements an engine sends, grouped by what they do."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.count: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.order: list[tuple[str, float]] = []

    @staticmethod
    def label(statement: str) -> str:
        s = " ".join(statement.split())
        head = s[:6].upper()
        table = ""
        for word in (" INTO ", "UPDATE ") if head == "INSERT" else (" FROM ", " INTO ", "UPDATE "):
            if word in s:
                table = s.split(word, 1)[1].split(" ", 1)[0]
                break
        if head == "SELECT" and "pg_advisory" in s:
            return "SELECT pg_advisory_xact_lock (audit chain)"
        if head == "SELECT" and "FOR UPDATE" in s:
            return f"SELECT {table} FOR UPDATE"
        if head == "SELECT" and "equipment_events" in s and "LIMIT" in s:
            return "SELECT equipment_events ... LIMIT 1 (state neighbour/latest)"
        return f"{head} {table}".strip()

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        elapsed = time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
        label = self.label(statement)
        self.count[label] += 1
        self.seconds[label] += elapsed
        self.order.append((label, elapsed))

    @contextlib.contextmanager
    def recording(self) -> Iterator[StatementLog]:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        try:
            yield self
        finally:
            event.remove(self.engine, "before_cursor_execute", self._before)
            event.remove(self.engine, "after_cursor_execute", self._after)

    def lines(self) -> list[str]:
        """One line per kind of statement (count, total time), then the whole call's time."""
        whole = [k for k in self.seconds if k not in self.count]
        return [
            *(
                f"    {n:4d} x {label:<58} {1000 * self.seconds[label]:8.1f} ms"
                for label, n in self.count.most_common()
            ),
            *(f"           {label:<58} {1000 * self.seconds[label]:8.1f} ms" for label in whole),
        ]


# ---------------------------------------------------------------- 1. ingest


@dataclass
class HttpRound:
    seconds: float
    accepted: int
    cpu_seconds: float
    sent: list[list[list[Ev]]]  # per stream, the batches it sent


async def ingest_over_http(
    server: benchkit.Server,
    token: str,
    streams: list[list[list[Ev]]],
    duration: float = math.inf,
) -> HttpRound:
    """Each stream (a bridge) sends its batches one after another on its own connection,
    until it has sent them all or `duration` seconds have passed."""
    requests = [
        [
            benchkit.graphql_request(
                server.port, RECORD, {"events": [e.as_input() for e in b]}, token
            )
            for b in stream
        ]
        for stream in streams
    ]
    accepted = [0]
    failures: list[str] = []
    sent: list[list[list[Ev]]] = [[] for _ in streams]

    async def bridge(k: int, deadline: float) -> None:
        async with benchkit.Connection.open(server.port) as conn:
            for batch, request in zip(streams[k], requests[k], strict=True):
                if time.perf_counter() > deadline:
                    break
                status, body = await conn.exchange(request)
                sent[k].append(batch)
                payload = json.loads(body) if status == 200 else {}
                result = (payload.get("data") or {}).get("recordEquipmentEvents") or {}
                if result.get("accepted") != len(batch) or result.get("errors") != []:
                    failures.append(f"HTTP {status}: {body[:300]!r}")
                accepted[0] += int(result.get("accepted") or 0)

    cpu = server.cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(bridge(k, started + duration) for k in range(len(streams))))
    seconds = time.perf_counter() - started
    assert not failures, failures[:3]
    return HttpRound(seconds, accepted[0], server.cpu_seconds() - cpu, sent)


async def ingest_by_core(url: str, ids: dict[str, int], streams: list[list[list[Ev]]]) -> float:
    """The same batches as plain Core INSERTs (executemany), one transaction per batch."""
    engine = create_async_engine(url, pool_size=len(streams) + 1)
    rows = [
        [[e.as_row(ids[e.code], utcnow()) for e in batch] for batch in stream] for stream in streams
    ]

    async def bridge(stream: list[list[dict[str, Any]]]) -> None:
        for batch in stream:
            async with engine.begin() as conn:
                await conn.execute(insert(EquipmentEvent), batch)

    try:
        async with engine.connect() as conn:  # a warm pool, as the server's is
            await conn.scalar(select(func.count()).select_from(EquipmentEvent))
        started = time.perf_counter()
        await asyncio.gather(*(bridge(s) for s in rows))
        return time.perf_counter() - started
    finally:
        await engine.dispose()


async def count_events(url: str) -> tuple[int, int]:
    """(events stored, sum of COUNTER increments in the hourly rollup)."""
    db = Database(url)
    try:
        async with db.read() as session:
            events = await session.scalar(select(func.count()).select_from(EquipmentEvent))
            total = await session.scalar(select(func.coalesce(func.sum(CounterHour.total), 0)))
            return int(events or 0), int(total or 0)
    finally:
        await db.dispose()


async def statements_of_one_batch(url: str, warm: list[Ev], batch: list[Ev]) -> StatementLog:
    """The statements of storing `batch`, after `warm` on the same connection: as in the
    server, they are prepared already (the first batch on a connection pays for that)."""
    db = Database(url)
    try:
        async with transaction(db, SYSTEM) as uow:
            await equipment_service.record_events(uow, [e.as_spec() for e in warm])
        log = StatementLog(db.engine)
        with log.recording():
            started = time.perf_counter()
            async with transaction(db, SYSTEM) as uow:
                result = await equipment_service.record_events(uow, [e.as_spec() for e in batch])
            log.seconds["(whole transaction, incl. Python)"] = time.perf_counter() - started
        assert result.accepted == len(batch), result
        return log
    finally:
        await db.dispose()


def test_equipment_ingest(tmp_path: Path) -> None:
    api_url, core_url = prepare_database("eq_api"), prepare_database("eq_core")
    groups = {"EQ-WC-A": MACHINES[:5], "EQ-WC-B": MACHINES[5:]}
    benchkit.banner(
        f"Equipment ingest on PostgreSQL: batches of {BATCH} over {len(MACHINES)} machines for "
        f"{INGEST_SECONDS:g} s (at most {INGEST_EVENTS} events) per round; HTTP -> DB, the "
        f"bridge's outbox not included; {machine_load()}"
    )
    started = time.perf_counter()
    now = utcnow()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        ids = {url: runner.run(seed_equipment(url, groups)) for url in (api_url, core_url)}
        token = benchkit.mes(
            api_url, "create-token", "bench-eq", "--role", "EQUIPMENT", cwd=tmp_path
        ).strip()
        rounds: list[tuple[int, list[list[list[Ev]]]]] = []
        for bridges in (1, 2):
            per = INGEST_EVENTS // bridges
            machine_groups = [MACHINES] if bridges == 1 else [MACHINES[:5], MACHINES[5:]]
            streams = [
                chunks(
                    mixed_events(
                        group,
                        per,
                        now - dt.timedelta(hours=2 - bridges * 0.5),
                        0.01,
                        f"r{bridges}b{k}",
                        seed=bridges * 10 + k,
                    ),
                    BATCH,
                )
                for k, group in enumerate(machine_groups)
            ]
            rounds.append((bridges, streams))
        warmup = chunks(
            mixed_events(MACHINES, 2 * BATCH, now - dt.timedelta(hours=3), 0.01, "warm", 99), BATCH
        )
        results: list[tuple[int, HttpRound, float, benchkit.Activity]] = []
        with benchkit.mes_serve(api_url, tmp_path, tmp_path) as server:
            runner.run(ingest_over_http(server, token, [warmup]))
            runner.run(ingest_by_core(core_url, ids[core_url], [warmup]))
            for bridges, streams in rounds:
                before = runner.run(benchkit.database_activity(api_url))
                api = runner.run(ingest_over_http(server, token, streams, INGEST_SECONDS))
                activity = runner.run(benchkit.database_activity(api_url)) - before
                core_s = runner.run(ingest_by_core(core_url, ids[core_url], api.sent))
                results.append((bridges, api, core_s, activity))
        sent = [e for b in warmup for e in b] + [
            e for _, api, _, _ in results for s in api.sent for b in s for e in b
        ]
        stored = {url: runner.run(count_events(url)) for url in (api_url, core_url)}
        warm, sample = chunks(
            mixed_events(MACHINES, 2 * BATCH, now - dt.timedelta(hours=4), 0.01, "count", 7), BATCH
        )
        log = runner.run(statements_of_one_batch(api_url, warm, sample))
        final_api = runner.run(count_events(api_url))
    for url in (api_url, core_url):
        benchkit.drop_postgres(url)

    for bridges, api, core_s, activity in results:
        api_rate, core_rate = api.accepted / api.seconds, api.accepted / core_s
        per_1000 = 1_000_000 / api.accepted
        benchkit.report(
            f"{bridges} bridge(s): API {api.accepted} events in {api.seconds:5.1f} s = "
            f"{api_rate:6.0f} events/s "
            f"({1000 * api.seconds * bridges / (api.accepted / BATCH):6.1f} ms per batch of "
            f"{BATCH}; server CPU {api.cpu_seconds * per_1000:6.1f} ms per 1,000 events; "
            f"PostgreSQL in statements {activity.active_ms * per_1000 / 1000:5.1f} ms per 1,000 "
            f"events)"
        )
        benchkit.report(
            f"{'':12}Core INSERT executemany {core_s:5.2f} s = {core_rate:6.0f} events/s;  "
            f"ratio API / Core {api_rate / core_rate:.2f} (aim >= 0.5); "
            f"aim >= 5,000 events/s: {'met' if api_rate >= 5000 else 'NOT met'}"
        )
    benchkit.report(f"statements of one batch of {BATCH} in the service (in-process):")
    for line in log.lines():
        benchkit.report(line)
    benchkit.report(f"whole benchmark {time.perf_counter() - started:.0f} s; {machine_load()}")
    # What the clients sent is stored, exactly once, and the counter rollup adds up.
    increments = sum(e.increment or 0 for e in sent)
    assert stored[api_url] == (len(sent), increments)
    assert stored[core_url][0] == len(sent)
    assert final_api == (
        len(sent) + 2 * BATCH,
        increments + sum(e.increment or 0 for e in warm + sample),
    )


# ---------------------------------------------------------------- 2. latency


async def subscribe(port: int, token: str) -> AsyncIterator[tuple[float, dict[str, Any]]]:
    """(receipt time, event) for every `equipmentEvents` message on a WebSocket of its own."""
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/graphql",
        subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
        max_size=None,
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        ack = json.loads(await ws.recv())
        assert ack["type"] == "connection_ack", ack
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
        )
        async for raw in ws:
            at = time.perf_counter()
            message = json.loads(raw)
            if message["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif message["type"] == "next":
                yield at, message["payload"]["data"]["equipmentEvents"]
            elif message["type"] in ("error", "complete"):
                raise AssertionError(f"subscription ended: {message}")


@dataclass
class Phase:
    batch: int
    rate: float
    sent: dict[int, float]
    returned: dict[int, float]
    events: dict[int, int]
    measured_from: float = 0.0
    measured_until: float = 0.0
    errors: int = 0
    cpu_seconds: float = 0.0


async def latency_phase(
    server: benchkit.Server, token: str, batch: int, rate: float, prefix: str
) -> Phase:
    """Offers batches at `rate` events/s for LATENCY_WARMUP + LATENCY_SECONDS, on up to 4
    connections; when all 4 are busy the loader waits (the server sets the pace)."""
    port = server.port
    total = math.ceil(rate * (LATENCY_WARMUP + LATENCY_SECONDS) / batch)
    start = utcnow() - dt.timedelta(seconds=total * batch / rate + 5)
    events = mixed_events(MACHINES, total * batch, start, 1 / rate, prefix, seed=batch)
    batches = chunks(events, batch)
    for n, b in enumerate(batches):
        for e in b:
            e.message = str(n)
    requests = [
        benchkit.graphql_request(port, RECORD, {"events": [e.as_input() for e in b]}, token)
        for b in batches
    ]
    phase = Phase(batch, rate, {}, {}, {n: len(b) for n, b in enumerate(batches)})
    idle: asyncio.Queue[benchkit.Connection] = asyncio.Queue()
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(4):
            idle.put_nowait(await stack.enter_async_context(benchkit.Connection.open(port)))

        async def send(n: int, conn: benchkit.Connection) -> None:
            try:
                phase.sent[n] = time.perf_counter()
                status, body = await conn.exchange(requests[n])
                phase.returned[n] = time.perf_counter()
                result = (json.loads(body).get("data") or {}).get("recordEquipmentEvents") or {}
                if status != 200 or result.get("accepted") != len(batches[n]):
                    phase.errors += 1
            finally:
                idle.put_nowait(conn)

        began = time.perf_counter()
        phase.measured_from = began + LATENCY_WARMUP
        phase.measured_until = phase.measured_from + LATENCY_SECONDS
        tasks = []
        cpu: float | None = None
        for n in range(total):
            if cpu is None and time.perf_counter() >= phase.measured_from:
                cpu = server.cpu_seconds()
            delay = began + n * batch / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            conn = await idle.get()
            if time.perf_counter() >= phase.measured_until:
                idle.put_nowait(conn)
                break
            tasks.append(asyncio.create_task(send(n, conn)))
        await asyncio.gather(*tasks)
        await asyncio.sleep(2)  # stragglers
        phase.cpu_seconds = server.cpu_seconds() - (cpu or 0.0)
    return phase


def phase_report(phase: Phase, received: dict[int, list[float]]) -> None:
    measured = [n for n, t in phase.sent.items() if t >= phase.measured_from]
    expected = sum(phase.events[n] for n in measured)
    got = sum(len(received.get(n, [])) for n in measured)
    from_sent = [t - phase.sent[n] for n in measured for t in received.get(n, [])]
    from_returned = [t - phase.returned[n] for n in measured for t in received.get(n, [])]
    early = sum(1 for x in from_returned if x < 0)
    achieved = expected / (phase.measured_until - phase.measured_from)
    mutation = [phase.returned[n] - phase.sent[n] for n in measured]
    benchkit.report(
        f"batches of {phase.batch:3d}, offered {phase.rate:5.0f} events/s, accepted "
        f"{achieved:5.0f} events/s: mutation p50 {1000 * pct(mutation, 50):6.1f} ms p95 "
        f"{1000 * pct(mutation, 95):6.1f} ms; the subscriber received {got}/{expected} events "
        f"({100 * got / max(1, expected):5.1f} %); server CPU "
        f"{1000 * phase.cpu_seconds / max(1, expected):.2f} ms per event"
    )
    if from_sent:
        benchkit.report(
            f"    sent -> received      p50 {1000 * pct(from_sent, 50):7.1f} ms  p95 "
            f"{1000 * pct(from_sent, 95):7.1f} ms  p99 {1000 * pct(from_sent, 99):7.1f} ms"
        )
        benchkit.report(
            f"    accepted -> received  p50 {1000 * pct(from_returned, 50):7.1f} ms  p95 "
            f"{1000 * pct(from_returned, 95):7.1f} ms  p99 {1000 * pct(from_returned, 99):7.1f} ms"
            f"  ({early} before the mutation's answer was in; aim p95 < 250 ms)"
        )


def test_equipment_event_latency(tmp_path: Path) -> None:
    url = prepare_database("eq_latency")
    plan = [(LATENCY_RATE, 100), (LATENCY_RATE, BATCH), (LATENCY_LOW_RATE, 20)]
    benchkit.banner(
        f"Equipment event -> subscriber latency on PostgreSQL: 1 subscriber to all "
        f"{len(MACHINES)} machines' events; phases (events/s offered, batch size) {plan}, "
        f"{LATENCY_SECONDS:g} s measured each after {LATENCY_WARMUP:g} s; {machine_load()}"
    )
    started = time.perf_counter()
    phases: list[tuple[Phase, dict[int, list[float]]]] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(seed_equipment(url, {"EQ-WC-A": MACHINES[:5], "EQ-WC-B": MACHINES[5:]}))
        token = benchkit.mes(
            url, "create-token", "bench-eq", "--role", "EQUIPMENT", cwd=tmp_path
        ).strip()
        with benchkit.mes_serve(url, tmp_path, tmp_path) as server:

            async def run() -> None:
                by_batch: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
                first = asyncio.Event()

                async def listen() -> None:
                    async for at, ev in subscribe(server.port, token):
                        prefix = ev["eventId"].split("-", 1)[0]
                        by_batch[prefix][int(ev["message"] or -1)].append(at)
                        first.set()

                listener = asyncio.create_task(listen())
                # Until the subscription is in place, send a probe now and then.
                probe = mixed_events(
                    MACHINES[:1], 50, utcnow() - dt.timedelta(hours=1), 1, "probe", 1
                )
                for k, ev in enumerate(probe):
                    ev.message = "-1"
                    request = benchkit.graphql_request(
                        server.port, RECORD, {"events": [ev.as_input()]}, token
                    )
                    await benchkit.fetch(server.port, request)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(first.wait(), 0.2)
                    if first.is_set():
                        break
                    assert k < 49, "the subscriber never received an event"
                for k, (rate, batch) in enumerate(plan):
                    prefix = f"lat{k}"
                    phase = await latency_phase(server, token, batch, rate, prefix)
                    phases.append((phase, by_batch[prefix]))
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

            runner.run(run())
    benchkit.drop_postgres(url)
    for phase, got in phases:
        phase_report(phase, got)
    benchkit.report(f"whole benchmark {time.perf_counter() - started:.0f} s; {machine_load()}")
    assert all(phase.errors == 0 for phase, _ in phases), "some batches were refused"


# ---------------------------------------------------------------- 3. OEE


@dataclass
class Plant:
    """One machine's generated history: COPY records, and what the reference needs."""

    start: dt.datetime
    records: list[tuple[Any, ...]]
    # Per event: (offset seconds, kind is STATE, state, reason, counter, increment)
    states: list[tuple[int, EquipmentState, str | None]]
    counters: list[tuple[int, str, int]]


def _next_stop(rng: random.Random) -> tuple[EquipmentState, str | None, int]:
    roll = rng.random()
    if roll < 0.45:
        return EquipmentState.DOWN, "MICROSTOP", rng.randint(3, 30)
    if roll < 0.70:
        return EquipmentState.DOWN, "JAM", rng.randint(30, 300)
    if roll < 0.80:
        return EquipmentState.DOWN, None, rng.randint(60, 300)
    if roll < 0.95:
        return EquipmentState.IDLE, None, rng.randint(60, 300)
    return EquipmentState.SETUP, "CHANGEOVER", rng.randint(300, 900)


def generate_plant(
    equipment_id: int, start: dt.datetime, seconds: int, step: int, mode: str, seed: int
) -> Plant:
    """One event every `step` seconds. STATE when the state changes (mode "changes") or on
    every other event (mode "every2s", the current state again), COUNTER otherwise:
    `good` (or `reject`, 3 %) with 1-2 pieces while RUNNING, `good` +0 while stopped.
    Three planned breaks a day (30 min at 04:00, 12:00, 20:00 UTC)."""
    rng = random.Random(seed)
    received = utcnow()
    records: list[tuple[Any, ...]] = []
    states: list[tuple[int, EquipmentState, str | None]] = []
    counters: list[tuple[int, str, int]] = []
    state, reason = EquipmentState.RUNNING, None
    change_at = 0
    last_state_record = -1
    at_of = [start + dt.timedelta(seconds=t) for t in range(0, seconds, step)]
    for index, t in enumerate(range(0, seconds, step)):
        moment = at_of[index]
        is_state = False
        if t >= change_at:
            second_of_day = (start.hour * 3600 + t) % 86400
            in_break = any(0 <= second_of_day - h * 3600 < 1800 for h in (4, 12, 20))
            if in_break:
                state, reason = EquipmentState.PLANNED_STOP, "BREAK"
                change_at = t + (1800 - (second_of_day % 3600))
            elif state is EquipmentState.RUNNING:
                state, reason, length = _next_stop(rng)
                change_at = t + length
            else:
                state, reason = EquipmentState.RUNNING, None
                change_at = t + max(10, int(rng.expovariate(1 / 240)))
            for h in (4, 12, 20):  # never run into a break
                to_break = (h * 3600 - second_of_day) % 86400
                if 0 < to_break < change_at - t:
                    change_at = t + to_break
            is_state = True
        elif mode == "every2s" and index % 2 == 0:
            is_state = True
        event_id = f"{t:08d}"
        if is_state:
            if last_state_record >= 0:
                records[last_state_record] = (*records[last_state_record][:-1], moment)
            last_state_record = len(records)
            states.append((t, state, reason))
            records.append(
                (
                    equipment_id,
                    event_id,
                    "STATE",
                    moment,
                    received,
                    state.value,
                    reason,
                    None,
                    None,
                    None,
                )
            )
        else:
            if state is EquipmentState.RUNNING:
                counter = "reject" if rng.random() < 0.03 else "good"
                increment = rng.randint(1, 2) * step
            else:
                counter, increment = "good", 0
            counters.append((t, counter, increment))
            records.append(
                (
                    equipment_id,
                    event_id,
                    "COUNTER",
                    moment,
                    received,
                    None,
                    None,
                    counter,
                    increment,
                    None,
                )
            )
    return Plant(start, records, states, counters)


def plant_events(plant: Plant, code: str, until: int) -> list[Ev]:
    """The plant's first `until` seconds as events for `record_events`."""
    events = [
        Ev(
            f"{t:08d}",
            code,
            EquipmentEventKind.STATE,
            plant.start + dt.timedelta(seconds=t),
            state=s,
            reason=r,
        )
        for t, s, r in plant.states
        if t < until
    ] + [
        Ev(
            f"{t:08d}",
            code,
            EquipmentEventKind.COUNTER,
            plant.start + dt.timedelta(seconds=t),
            counter=c,
            increment=i,
        )
        for t, c, i in plant.counters
        if t < until
    ]
    return sorted(events, key=lambda e: e.at)


@dataclass
class Expected:
    planned: float
    run: float
    down: float
    good: int
    reject: int
    downtime: dict[str, float]


def reference_oee(plant: Plant, start: dt.datetime, end: dt.datetime) -> Expected:
    """BEHAVIOUR.md's OEE computed straight from the generated events."""
    a = (start - plant.start).total_seconds()
    b = (end - plant.start).total_seconds()
    by_state: defaultdict[EquipmentState, float] = defaultdict(float)
    downtime: defaultdict[str, float] = defaultdict(float)
    known = 0.0
    for k, (t, state, reason) in enumerate(plant.states):
        until = plant.states[k + 1][0] if k + 1 < len(plant.states) else math.inf
        overlap = min(b, until) - max(a, t)
        if overlap <= 0:
            continue
        by_state[state] += overlap
        known += overlap
        if state is not EquipmentState.RUNNING:
            downtime[reason or state.value] += overlap
    counts: Counter[str] = Counter()
    for t, counter, increment in plant.counters:
        if a <= t < b:
            counts[counter] += increment
    planned = (b - a) - by_state[EquipmentState.PLANNED_STOP] - ((b - a) - known)
    return Expected(
        planned,
        by_state[EquipmentState.RUNNING],
        by_state[EquipmentState.DOWN],
        counts["good"],
        counts["reject"],
        dict(downtime),
    )


def assert_matches(report: dict[str, Any], expected: Expected, what: str) -> None:
    def close(x: float, y: float) -> bool:
        return abs(x - y) <= 1e-6 * max(1.0, abs(y))

    got = {d["reason"]: d["seconds"] for d in report["downtimeByReason"]}
    assert close(report["plannedSeconds"], expected.planned), (what, report, expected)
    assert close(report["runSeconds"], expected.run), (what, report, expected)
    assert close(report["downSeconds"], expected.down), (what, report, expected)
    assert (report["goodCount"], report["rejectCount"]) == (expected.good, expected.reject), what
    assert got.keys() == expected.downtime.keys(), (what, got, expected.downtime)
    assert all(close(got[k], v) for k, v in expected.downtime.items()), (what, got, expected)
    pieces = expected.good + expected.reject
    availability = expected.run / expected.planned if expected.planned else 0.0
    performance = IDEAL_CYCLE_SECONDS * pieces / expected.run if expected.run else 0.0
    quality = expected.good / pieces if pieces else 0.0
    assert close(report["oee"], availability * performance * quality), (what, report)


def as_report(oee: equipment_service.Oee) -> dict[str, Any]:
    return {
        "plannedSeconds": oee.planned_seconds,
        "runSeconds": oee.run_seconds,
        "downSeconds": oee.down_seconds,
        "goodCount": oee.good,
        "rejectCount": oee.reject,
        "oee": oee.oee,
        "downtimeByReason": [
            {"reason": d.reason, "seconds": d.seconds, "occurrences": d.occurrences}
            for d in oee.downtime
        ],
    }


_COPY_COLUMNS = [
    "equipment_id",
    "event_id",
    "kind",
    "occurred_at",
    "received_at",
    "state",
    "reason",
    "counter",
    "increment",
    "state_until",
]

# What the service maintains, computed in one statement per table over the raw events.
_COUNTER_ROLLUP = """
INSERT INTO equipment_counter_hours (equipment_id, hour, counter, total)
SELECT equipment_id, date_trunc('hour', occurred_at), counter, sum(increment)
FROM equipment_events WHERE equipment_id = $1 AND kind = 'COUNTER'
GROUP BY 1, 2, 3
"""
_STATE_ROLLUP = """
INSERT INTO equipment_state_hours (equipment_id, hour, state, reason, seconds, starts)
SELECT equipment_id, hour, state, reason, sum(seconds), sum(starts) FROM (
  SELECT e.equipment_id, h.hour, e.state, coalesce(e.reason, '') AS reason,
         extract(epoch FROM least(e.state_until, h.hour + interval '1 hour')
                          - greatest(e.occurred_at, h.hour))::float8 AS seconds,
         0 AS starts
  FROM equipment_events e
  CROSS JOIN LATERAL generate_series(
      date_trunc('hour', e.occurred_at), e.state_until - interval '1 microsecond',
      interval '1 hour') AS h(hour)
  WHERE e.equipment_id = $1 AND e.kind = 'STATE' AND e.state_until > e.occurred_at
  UNION ALL
  SELECT equipment_id, date_trunc('hour', occurred_at), state, coalesce(reason, ''), 0, 1
  FROM equipment_events WHERE equipment_id = $1 AND kind = 'STATE'
) AS parts
GROUP BY 1, 2, 3, 4
"""
_CURRENT_STATE = """
UPDATE equipment SET state = latest.state, state_reason = latest.reason,
  state_since = latest.occurred_at
FROM (SELECT state, reason, occurred_at FROM equipment_events
      WHERE equipment_id = $1 AND kind = 'STATE' ORDER BY occurred_at DESC, id DESC LIMIT 1)
  AS latest
WHERE equipment.id = $1
"""


async def load_plant(url: str, plant: Plant, equipment_id: int) -> dict[str, float]:
    """COPY the events, then the rollups and the current state as the service keeps them.

    For speed, the COPY runs without the table's two secondary indexes (dropped, then
    created again from their own definitions) and without the per-row foreign key trigger
    (`session_replication_role = replica` in this session only: every row names the one
    machine, which exists)."""
    timings: dict[str, float] = {}
    conn = await asyncpg.connect(benchkit.asyncpg_dsn(url))
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        t = time.perf_counter()
        unique = await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint "
            "WHERE conrelid = 'equipment_events'::regclass AND contype = 'u'"
        )
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'equipment_events' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint "
            "WHERE conrelid = 'equipment_events'::regclass)"
        )
        for row in unique:
            await conn.execute(f'ALTER TABLE equipment_events DROP CONSTRAINT "{row["conname"]}"')
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        await conn.execute("SET session_replication_role = replica")
        for k in range(0, len(plant.records), 250_000):
            await conn.copy_records_to_table(
                "equipment_events",
                records=plant.records[k : k + 250_000],
                columns=_COPY_COLUMNS,
            )
        await conn.execute("SET session_replication_role = DEFAULT")
        timings["COPY events"] = time.perf_counter() - t
        t = time.perf_counter()
        for row in unique:
            await conn.execute(
                f'ALTER TABLE equipment_events ADD CONSTRAINT "{row["conname"]}" {row["def"]}'
            )
        for row in indexes:
            await conn.execute(row["indexdef"])
        timings["indexes"] = time.perf_counter() - t
        for name, sql in (
            ("counter rollup", _COUNTER_ROLLUP),
            ("state rollup", _STATE_ROLLUP),
            ("current state", _CURRENT_STATE),
        ):
            t = time.perf_counter()
            await conn.execute(sql, equipment_id)
            timings[name] = time.perf_counter() - t
        t = time.perf_counter()
        await conn.execute(
            "VACUUM (ANALYZE) equipment_events, equipment_state_hours, equipment_counter_hours"
        )
        timings["VACUUM ANALYZE"] = time.perf_counter() - t
        stray = await conn.fetchval(
            "SELECT count(*) FROM equipment_events WHERE equipment_id <> $1", equipment_id
        )
        assert stray == 0
        assert len(unique) == 1, unique  # (equipment_id, event_id)
        assert len(indexes) == 1, indexes  # the timeline index
    finally:
        await conn.close()
    return timings


async def check_against_service(
    url: str, plant: Plant, ids: dict[str, int], hours: int
) -> tuple[float, int]:
    """Stores the plant's first `hours` through `record_events` on OEE-CHECK and compares
    intervals, rollups and OEE with the bulk-loaded OEE-01. Returns the service's rate."""
    db = Database(url)
    main, check = ids["OEE-01"], ids["OEE-CHECK"]
    try:
        events = plant_events(plant, "OEE-CHECK", hours * 3600)
        started = time.perf_counter()
        for batch in chunks(events, equipment_service.MAX_BATCH):
            async with transaction(db, SYSTEM) as uow:
                result = await equipment_service.record_events(uow, [e.as_spec() for e in batch])
            assert result.accepted == len(batch), result
        rate = len(events) / (time.perf_counter() - started)
        async with db.read() as session:
            last_sample_state = max(t for t, *_ in plant.states if t < hours * 3600)

            async def intervals(equipment_id: int) -> list[tuple[Any, ...]]:
                rows = await session.execute(
                    select(EquipmentEvent.event_id, EquipmentEvent.state_until)
                    .where(
                        EquipmentEvent.equipment_id == equipment_id,
                        EquipmentEvent.kind == EquipmentEventKind.STATE,
                        EquipmentEvent.event_id < f"{last_sample_state:08d}",
                    )
                    .order_by(EquipmentEvent.event_id)
                )
                return [tuple(r) for r in rows]

            assert await intervals(check) == await intervals(main)
            first_hour = plant.start
            assert (first_hour.minute, first_hour.second) == (0, 0)

            # Hours before the one of the sample's last STATE event: its interval is open on
            # OEE-CHECK and closed (later) on OEE-01.
            whole_hours = last_sample_state // 3600
            assert whole_hours >= 1

            async def rollups(equipment_id: int) -> tuple[list[Any], list[Any]]:
                state_rows = await session.execute(
                    select(
                        StateHour.hour,
                        StateHour.state,
                        StateHour.reason,
                        StateHour.seconds,
                        StateHour.starts,
                    )
                    .where(
                        StateHour.equipment_id == equipment_id,
                        StateHour.hour < first_hour + dt.timedelta(hours=whole_hours),
                    )
                    .order_by(StateHour.hour, StateHour.state, StateHour.reason)
                )
                counter_rows = await session.execute(
                    select(CounterHour.hour, CounterHour.counter, CounterHour.total)
                    .where(
                        CounterHour.equipment_id == equipment_id,
                        CounterHour.hour < first_hour + dt.timedelta(hours=hours),
                    )
                    .order_by(CounterHour.hour, CounterHour.counter)
                )
                return [tuple(r) for r in state_rows], [tuple(r) for r in counter_rows]

            by_service, by_sql = await rollups(check), await rollups(main)
            assert by_service[0], "no state rollup in the sample"
            assert by_service[1], "no counter rollup in the sample"
            assert by_service == by_sql
            window = (
                plant.start + dt.timedelta(minutes=7, seconds=13),
                plant.start + dt.timedelta(hours=hours - 1, minutes=41, seconds=30.5),
            )
            machines = {
                e.id: e
                for e in await session.scalars(
                    select(Equipment).where(Equipment.id.in_(ids.values()))
                )
            }
            service_oee = await equipment_service.oee(session, machines[check], *window)
            sql_oee = await equipment_service.oee(session, machines[main], *window)
        assert as_report(service_oee) == as_report(sql_oee)
        assert_matches(as_report(sql_oee), reference_oee(plant, *window), "3-hour sample")
        return rate, len(events)
    finally:
        await db.dispose()


async def statements_of_one_oee(
    url: str, code: str, start: dt.datetime, end: dt.datetime
) -> StatementLog:
    db = Database(url)
    try:
        async with db.read() as session:
            machine = await session.scalar(select(Equipment).where(Equipment.code == code))
            assert machine is not None
            await equipment_service.oee(session, machine, start, end)  # warm
            log = StatementLog(db.read_engine)
            with log.recording():
                t = time.perf_counter()
                await equipment_service.oee(session, machine, start, end)
                log.seconds["(whole oee(), incl. Python)"] = time.perf_counter() - t
        return log
    finally:
        await db.dispose()


async def time_oee_queries(
    port: int, token: str, windows: dict[str, tuple[dt.datetime, dt.datetime]]
) -> dict[str, tuple[list[float], dict[str, Any]]]:
    results: dict[str, tuple[list[float], dict[str, Any]]] = {}
    async with benchkit.Connection.open(port) as conn:
        for name, (start, end) in windows.items():
            request = benchkit.graphql_request(
                port,
                OEE_QUERY,
                {"code": "OEE-01", "from": start.isoformat(), "to": end.isoformat()},
                token,
            )
            times: list[float] = []
            body = b""
            give_up = time.perf_counter() + 15  # slow windows: fewer requests, not more time
            for k in range(OEE_REPEATS + 2):
                t = time.perf_counter()
                status, body = await conn.exchange(request)
                if k >= 2:
                    times.append(time.perf_counter() - t)
                assert status == 200, body[:300]
                if len(times) >= 5 and time.perf_counter() > give_up:
                    break
            answer = json.loads(body)
            assert not answer.get("errors"), answer
            results[name] = (times, answer["data"]["equipment"]["oee"])
    return results


def test_equipment_oee_30_days(tmp_path: Path) -> None:
    url = prepare_database("eq_oee")
    seconds = int(OEE_DAYS * 86400)
    benchkit.banner(
        f"Equipment OEE on PostgreSQL: 1 machine, {OEE_DAYS:g} days, one event every "
        f"{OEE_STEP} s (STATE on {'every other event' if OEE_STATES == 'every2s' else 'change'},"
        f" COUNTER otherwise); {machine_load()}"
    )
    started = time.perf_counter()
    now = utcnow()
    t0 = (now - dt.timedelta(seconds=seconds + 3600)).replace(minute=0, second=0, microsecond=0)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        ids = runner.run(seed_equipment(url, {"EQ-WC-OEE": ["OEE-01", "OEE-CHECK"]}))
        token = benchkit.mes(
            url, "create-token", "bench-eq", "--role", "EQUIPMENT", cwd=tmp_path
        ).strip()
        t = time.perf_counter()
        gc.disable()
        try:
            plant = generate_plant(ids["OEE-01"], t0, seconds, OEE_STEP, OEE_STATES, seed=30)
        finally:
            gc.enable()
        generated = time.perf_counter() - t
        timings = {
            "generate in Python": generated,
            **runner.run(load_plant(url, plant, ids["OEE-01"])),
        }
        build = time.perf_counter() - t
        service_rate, sample_events = runner.run(check_against_service(url, plant, ids, 3))
        windows = {
            f"{OEE_DAYS:g} days, aligned": (t0, t0 + dt.timedelta(seconds=seconds)),
            f"{OEE_DAYS:g} days, unaligned edges": (
                t0 + dt.timedelta(minutes=17, seconds=23.5),
                t0 + dt.timedelta(seconds=seconds) - dt.timedelta(minutes=42, seconds=6.25),
            ),
            "last 24 h, unaligned": (
                t0 + dt.timedelta(seconds=seconds - 86400 + 181),
                t0 + dt.timedelta(seconds=seconds, minutes=-1),
            ),
        }
        with benchkit.mes_serve(url, tmp_path, tmp_path) as server:
            measured = runner.run(time_oee_queries(server.port, token, windows))
        logs = {
            name: runner.run(statements_of_one_oee(url, "OEE-01", *window))
            for name, window in windows.items()
        }
    benchkit.drop_postgres(url)

    states = len(plant.states)
    benchkit.report(
        f"data set: {len(plant.records):,} events ({states:,} STATE intervals, "
        f"{len(plant.counters):,} COUNTER) built in {build:.1f} s: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    )
    benchkit.report(
        f"service path (record_events, batches of {equipment_service.MAX_BATCH}, in-process) on "
        f"the 3-hour sample: {service_rate:,.0f} events/s -> "
        f"{len(plant.records) / service_rate:,.0f} s for the whole set; the sample's "
        f"{sample_events:,} events matched the bulk load (state_until, hourly rollups, OEE)"
    )
    for name, (times, report) in measured.items():
        benchkit.report(
            f"oee {name:<26} p50 {1000 * pct(times, 50):7.1f} ms  p95 "
            f"{1000 * pct(times, 95):7.1f} ms  min {1000 * min(times):7.1f} ms  "
            f"({len(times)} requests; aim p50 < 200 ms; oee {report['oee']:.3f}, "
            f"availability {report['availability']:.3f}, {len(report['downtimeByReason'])} reasons)"
        )
    for name, log in logs.items():
        benchkit.report(f"statements of one oee() in-process, {name}:")
        for line in log.lines():
            benchkit.report(line)
    benchkit.report(f"whole benchmark {time.perf_counter() - started:.0f} s; {machine_load()}")
    for name, (start, end) in windows.items():
        assert_matches(measured[name][1], reference_oee(plant, start, end), name)
