"""Fault-injection kit for `test_faults.py`.

Real processes (the simulators, the bridge; `mes serve` through the e2e helpers), a TCP proxy
that can partition a link or slow its answers down, and exact readers of the truth on each side:
the simulators' nodes and registers, the bridge's outbox (SQLite), the MES database.

How a test measures exactly (see `take_origin` and `settle`):
- origin: a consistent cut of the bridge: its last raw counter values R (persisted in the outbox
  together with the events they produced) and the ids of every event it had produced by then
  (already in the MES, or still waiting in the outbox);
- end: the machine is standing still (not RUNNING, counters unchanged over the whole
  measurement), the bridge has seen the counters' current values and has nothing left to send;
- then the MES's increments after the origin must equal the machine's count from R to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from asyncua.client.client import Client
from pymodbus.client import AsyncModbusTcpClient
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from backend.audit.models import AuditEntry
from backend.catalog.models import Equipment
from backend.equipment.models import EquipmentEvent
from equipment_bridge.simulators.model import (
    REASON_TEXT,
    TICK_SECONDS,
    Machine,
    MachineProfile,
    MachineState,
)

PYTHON = sys.executable
RUNNING = int(MachineState.RUNNING)
COUNTERS = ("good", "reject")


class Timeout(AssertionError):
    pass


async def until(
    check: Callable[[], Any],
    limit: float,
    what: str,
    describe: Callable[[], str] = lambda: "",
    interval: float = 0.05,
) -> Any:
    """Polls `check` (sync or async) until it returns something truthy; fails after `limit` s."""
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise Timeout(f"not within {limit} s: {what}\n{describe()}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- processes


class Proc:
    """A Python module run in the background in a session of its own; output in a file."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [PYTHON, *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.paused = False
        self.forced = False  # it did not end on SIGTERM

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def describe(self, tail: int = 4000) -> str:
        return f"--- {self.name} (exit {self.process.poll()}):\n{self.output()[-tail:]}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, signum: int) -> None:
        if self.alive:
            os.kill(self.process.pid, signum)

    def pause(self) -> None:
        self.send(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.send(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL to the process and its session, at once; reaps it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.paused = False

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM (after SIGCONT if paused), then SIGKILL if it does not end in `grace` s."""
        if self.alive:
            if self.paused:
                self.resume()
            self.send(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, grace)
            if self.alive:
                self.forced = True
                # with PYTHONFAULTHANDLER set, the stacks of a hung process go to its log
                self.send(signal.SIGABRT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(self.process.wait, 2.0)
        self.close()
        return self.process.returncode

    def close(self) -> None:
        self.kill()
        self._log.close()

    async def wait_output(self, pattern: str, count: int = 1, limit: float = 30.0) -> list[str]:
        def found() -> list[str] | None:
            hits = re.findall(pattern, self.output(), re.MULTILINE)
            if len(hits) >= count:
                return hits
            if not self.alive:
                raise AssertionError(f"{self.name} ended before {pattern!r}:\n{self.describe()}")
            return None

        result: list[str] = await until(found, limit, f"{self.name}: {pattern!r}", self.describe)
        return result


class Simulator:
    """`python -m equipment_bridge.simulators.run` (what `mes simulate` runs)."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        opcua_port: int,
        modbus_port: int,
        seed: int,
        speed: float,
        rollover: int | None = None,
    ) -> None:
        self.workdir, self.name = workdir, name
        self.opcua_port, self.modbus_port = opcua_port, modbus_port
        self.seed, self.speed, self.rollover = seed, speed, rollover
        self.proc: Proc | None = None
        self.runs = 0
        # monotonic time before which the current run's clock cannot have started
        self.started_after = 0.0
        self.longest = 0  # ticks: an upper bound of the longest run before this one

    def start(self) -> None:
        self.runs += 1
        args = [
            "-m", "equipment_bridge.simulators.run",
            "--opcua-port", str(self.opcua_port),
            "--modbus-port", str(self.modbus_port),
            "--seed", str(self.seed),
            "--speed", str(self.speed),
        ]  # fmt: skip
        if self.rollover is not None:
            args += ["--rollover", str(self.rollover)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MES_")}
        if self.proc is not None:
            self.longest = max(self.longest, self.max_tick())
            self.proc.close()
        self.started_after = time.monotonic()
        self.proc = Proc(f"{self.name}-{self.runs}", args, env, self.workdir)

    async def ready(self, limit: float = 30.0) -> None:
        """Waits until both servers listen (their clocks start right after)."""
        proc = self.proc
        assert proc is not None

        def listening() -> bool:
            before = time.monotonic()
            text = proc.output()
            if "(OPC UA): opc.tcp" in text and "(Modbus TCP): " in text:
                return True
            if not proc.alive:
                raise AssertionError(f"the simulator ended:\n{proc.describe()}")
            self.started_after = before
            return False

        await until(listening, limit, "the simulators listen", proc.describe, interval=0.02)

    def max_tick(self) -> int:
        """The simulation cannot be ahead of the wall clock: an upper bound of its tick now."""
        return int((time.monotonic() - self.started_after) * self.speed / TICK_SECONDS) + 1

    def model_ticks(self) -> int:
        """Ticks enough to replay any run of this simulator so far."""
        return max(self.longest, self.max_tick())

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()

    def describe(self) -> str:
        return self.proc.describe() if self.proc else ""


# ---------------------------------------------------------------- a TCP proxy


class TcpProxy:
    """127.0.0.1:port → 127.0.0.1:target, in the test's event loop.

    - `partition()` / `heal()`: nothing passes either way and new connections hang (bytes are
      held, not dropped, as TCP would across a broken link; a peer that gives up closes).
    - `response_delay`: seconds each chunk from the target waits before it is passed on.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.response_delay = 0.0
        self.connections = 0
        # answers that reached the proxy while `response_delay` held them back
        self.answers_held = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def partition(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Known at once: a task cancelled by `close` before it first runs never closes it.
        self._writers.add(writer)
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._open.wait()
            try:
                up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                return
            self._writers.add(upstream)
            self.connections += 1
            pumps = [
                asyncio.ensure_future(self._pump(reader, upstream, answer=False)),
                asyncio.ensure_future(self._pump(up_reader, writer, answer=True)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, answer: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self._open.wait()
                data = await source.read(65536)
                if not data:
                    return
                if answer and self.response_delay > 0:
                    self.answers_held += 1
                    await asyncio.sleep(self.response_delay)
                await self._open.wait()
                sink.write(data)
                await sink.drain()

    async def close(self) -> None:
        self._open.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in list(self._writers):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        self._writers.clear()


# ---------------------------------------------------------------- the bridge's outbox


@dataclass(frozen=True)
class OutboxSnapshot:
    """One read transaction of the outbox: normaliser state, unsent and quarantined events."""

    state: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pending: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def raw(self, equipment: str, signal_name: str) -> int | None:
        row = self.state.get((equipment, signal_name))
        return None if row is None else row.get("raw")

    @property
    def pending_ids(self) -> set[str]:
        return {event_id for _, event_id, _ in self.pending}

    def pending_of(self, equipment: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            body
            for _, _, body in self.pending
            if body["equipmentCode"] == equipment and (kind is None or body["kind"] == kind)
        ]


def read_outbox(path: Path) -> OutboxSnapshot:
    if not path.exists():
        return OutboxSnapshot()
    con = sqlite3.connect(path, timeout=15, isolation_level=None)
    try:
        con.execute("BEGIN")
        try:
            state = {
                (e, s): json.loads(d)
                for e, s, d in con.execute("SELECT equipment, signal, data FROM signal_state")
            }
            pending = [
                (seq, eid, json.loads(body))
                for seq, eid, body in con.execute(
                    "SELECT seq, event_id, body FROM events ORDER BY seq"
                )
            ]
            quarantine = [
                {
                    "event_id": eid,
                    "body": json.loads(body),
                    "code": code,
                    "message": message,
                    "field": fld,
                }
                for eid, body, code, message, fld in con.execute(
                    "SELECT event_id, body, code, message, field FROM quarantine ORDER BY id"
                )
            ]
        except sqlite3.OperationalError as error:  # the bridge has not created its tables yet
            if "no such table" in str(error):
                return OutboxSnapshot()
            raise
        finally:
            con.execute("COMMIT")
    finally:
        con.close()
    return OutboxSnapshot(state, pending, quarantine)


# ---------------------------------------------------------------- the MES database


@dataclass(frozen=True)
class MesEvent:
    id: int
    event_id: str
    kind: str
    occurred_at: dt.datetime
    state: str | None
    reason: str | None
    counter: str | None
    increment: int | None
    alarm_code: str | None
    alarm_active: bool | None
    message: str | None
    state_until: dt.datetime | None


class MesDb:
    """Reads the MES's SQLite file directly (WAL: readers never block the server)."""

    def __init__(self, path: Path) -> None:
        self.engine: Engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 15})

    def events(self, code: str) -> list[MesEvent]:
        e = EquipmentEvent
        columns = [getattr(e, f.name) for f in dataclasses.fields(MesEvent)]
        query = (
            select(*columns)
            .join(Equipment, Equipment.id == e.equipment_id)
            .where(Equipment.code == code)
            .order_by(e.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            MesEvent(
                r.id,
                r.event_id,
                str(r.kind),
                r.occurred_at,
                None if r.state is None else str(r.state),
                r.reason,
                r.counter,
                r.increment,
                r.alarm_code,
                r.alarm_active,
                r.message,
                r.state_until,
            )
            for r in rows
        ]

    def event_ids(self, codes: Iterable[str]) -> set[str]:
        e = EquipmentEvent
        query = (
            select(e.event_id)
            .join(Equipment, Equipment.id == e.equipment_id)
            .where(Equipment.code.in_(list(codes)))
        )
        with self.engine.connect() as conn:
            return set(conn.scalars(query))

    def ingest_audits(self, code: str) -> list[dict[str, Any]]:
        """The `changes` of the audit entries `equipment.events` of a machine (per batch:
        accepted and duplicates)."""
        query = (
            select(AuditEntry.changes)
            .where(AuditEntry.action == "equipment.events", AuditEntry.entity_id == code)
            .order_by(AuditEntry.sequence)
        )
        with self.engine.connect() as conn:
            return [c for c in conn.scalars(query) if c is not None]

    def dispose(self) -> None:
        self.engine.dispose()


# ---------------------------------------------------------------- the machines, read directly


@dataclass(frozen=True)
class Reading:
    state: int
    good: int
    reject: int


class PressReader:
    """Reads PRESS-01's state and counters from the OPC UA simulator (one Read request)."""

    def __init__(self, port: int) -> None:
        self.client = Client(f"opc.tcp://127.0.0.1:{port}/mes/sim", timeout=3)

    async def __aenter__(self) -> PressReader:
        await self.client.connect()
        self.nodes = [
            self.client.get_node(f"ns=2;s=PRESS-01.{n}") for n in ("State", "Good", "Reject")
        ]
        return self

    async def read(self) -> Reading:
        state, good, reject = await self.client.read_values(self.nodes)
        return Reading(int(state), int(good), int(reject))

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 3)


class BlenderReader:
    """Reads BLENDER-01's registers 0-5 from the Modbus simulator (one read: one tick)."""

    def __init__(self, port: int) -> None:
        self.client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=1)

    async def __aenter__(self) -> BlenderReader:
        if not await self.client.connect():
            raise AssertionError("cannot connect to the Modbus simulator")
        return self

    async def read(self) -> Reading:
        response = await self.client.read_holding_registers(0, count=6, device_id=1)
        assert not response.isError(), response
        r = response.registers
        return Reading(r[0], (r[2] << 16) | r[3], (r[4] << 16) | r[5])

    async def __aexit__(self, *exc: object) -> None:
        self.client.close()


# ---------------------------------------------------------------- the seeded model


@dataclass(frozen=True)
class Span:
    """One state of the model: ticks [start, end), state name, reason text (None: none)."""

    start: int
    end: int
    state: str
    reason: str | None

    @property
    def key(self) -> tuple[str, str | None]:
        return self.state, self.reason


def model_spans(profile: MachineProfile, seed: int, ticks: int) -> list[Span]:
    machine = Machine(profile, seed=seed)
    spans: list[Span] = []
    start, current = 0, (machine.state, machine.reason)
    for _ in range(ticks):
        if machine.step():
            spans.append(
                Span(start, machine.tick, current[0].name, REASON_TEXT[current[1]] or None)
            )
            start, current = machine.tick, (machine.state, machine.reason)
    spans.append(Span(start, machine.tick, current[0].name, REASON_TEXT[current[1]] or None))
    return spans


def model_totals(
    profile: MachineProfile, seed: int, rollover: int, max_tick: int, reading: Reading
) -> set[tuple[int, int]]:
    """The (good, reject) totals the machine can have had when it showed `reading`."""
    machine = Machine(profile, seed=seed, rollover=rollover)
    found: set[tuple[int, int]] = set()
    for _ in range(max_tick + 1):
        snap = machine.snapshot()
        if (int(snap.state), snap.good, snap.reject) == (
            reading.state,
            reading.good,
            reading.reject,
        ):
            found.add((machine.good_total, machine.reject_total))
        machine.step()
    return found


def model_total_until(profile: MachineProfile, seed: int, ticks: int) -> int:
    """The good count after `ticks` ticks (unwrapped)."""
    machine = Machine(profile, seed=seed)
    for _ in range(ticks):
        machine.step()
    return machine.good_total


# ---------------------------------------------------------------- origin and end


@dataclass(frozen=True)
class Origin:
    """A consistent cut of the bridge: its raw counter values, and every event produced so far."""

    raw: dict[tuple[str, str], int]
    ids: frozenset[str]
    at: float  # monotonic


async def take_origin(
    outbox: Path,
    mes: MesDb,
    codes: Sequence[str],
    limit: float,
    describe: Callable[[], str] = lambda: "",
) -> Origin:
    """Once the bridge has a baseline for every counter and has sent some events: the MES's
    events read before and after one outbox snapshot. Any event that reached the MES between
    the two reads and is not waiting in the snapshot could have been produced before or after
    it, so then the cut is taken again."""

    def attempt() -> Origin | None:
        before = mes.event_ids(codes)
        snap = read_outbox(outbox)
        after = mes.event_ids(codes)
        raw = {(c, s): snap.raw(c, s) for c in codes for s in COUNTERS}
        if any(v is None for v in raw.values()) or not before:
            return None
        if after - before - snap.pending_ids:
            return None
        return Origin(
            {k: int(v) for k, v in raw.items() if v is not None},
            frozenset(before | snap.pending_ids),
            time.monotonic(),
        )

    result: Origin = await until(attempt, limit, "a baseline of every counter", describe, 0.02)
    return result


@dataclass(frozen=True)
class End:
    reading: Reading
    events: list[MesEvent]
    snapshot: OutboxSnapshot


async def settle(
    read: Callable[[], Awaitable[Reading]],
    outbox: Path,
    mes: MesDb,
    code: str,
    limit: float,
    describe: Callable[[], str] = lambda: "",
) -> End:
    """Waits for a stop of the machine (not RUNNING) during which the bridge catches up:
    its raw counters equal the machine's, nothing of the machine is left to send; reads the
    MES then, and checks the machine did not move over the whole measurement."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        first = await read()
        if first.state == RUNNING:
            await asyncio.sleep(0.03)
            continue
        caught_up = None
        while time.monotonic() < deadline:
            snap = read_outbox(outbox)
            if (
                snap.raw(code, "good") == first.good
                and snap.raw(code, "reject") == first.reject
                and not snap.pending_of(code)
            ):
                caught_up = snap
                break
            if await read() != first:
                break
            await asyncio.sleep(0.02)
        if caught_up is None:
            continue
        events = mes.events(code)
        if await read() == first:
            return End(first, events, caught_up)
    raise Timeout(
        f"{code}: no stop long enough for the bridge to catch up within {limit} s "
        f"(outbox: {read_outbox(outbox).state})\n{describe()}"
    )


def counted(events: Iterable[MesEvent], counter: str, exclude: frozenset[str] = frozenset()) -> int:
    return sum(
        e.increment or 0
        for e in events
        if e.kind == "COUNTER" and e.counter == counter and e.event_id not in exclude
    )


def comm_loss(events: Iterable[MesEvent]) -> list[MesEvent]:
    return sorted(
        (e for e in events if e.kind == "ALARM" and e.alarm_code == "COMM_LOSS"),
        key=lambda e: e.occurred_at,
    )


def check_comm_loss(events: Sequence[MesEvent], at_least: int, code: str) -> list[MesEvent]:
    """COMM_LOSS raised and cleared in turn, cleared at the end, raised at least `at_least`
    times. Returns the alarm events."""
    alarms = comm_loss(events)
    flags = [e.alarm_active for e in alarms]
    assert flags == [True, False] * (len(flags) // 2), f"{code}: COMM_LOSS edges {flags}"
    assert len(flags) // 2 >= at_least, f"{code}: COMM_LOSS raised {len(flags) // 2} times"
    return alarms


def outage_windows(alarms: Sequence[MesEvent]) -> list[tuple[dt.datetime, dt.datetime]]:
    return [(alarms[i].occurred_at, alarms[i + 1].occurred_at) for i in range(0, len(alarms), 2)]


# ---------------------------------------------------------------- state intervals


def states_of(events: Iterable[MesEvent]) -> list[MesEvent]:
    return sorted((e for e in events if e.kind == "STATE"), key=lambda e: e.occurred_at)


def check_intervals(states: Sequence[MesEvent], code: str) -> None:
    """The MES's intervals chain: each STATE event lasts until the next one began; the last
    one is open."""
    for a, b in itertools.pairwise(states):
        assert a.state_until == b.occurred_at, f"{code}: interval {a} does not end at {b}"
    if states:
        assert states[-1].state_until is None, f"{code}: the last interval is closed"


Window = tuple[dt.datetime, dt.datetime]


def _overlaps(a: dt.datetime, b: dt.datetime, windows: Sequence[Window]) -> bool:
    return any(a <= w_end and b >= w_start for w_start, w_end in windows)


def check_states(
    states: Sequence[MesEvent],
    spans: Sequence[Span],
    code: str,
    *,
    speed: float,
    restarts: int = 0,
    loose: Sequence[Window] = (),
    disturbed: Sequence[Window] = (),
    tolerance_s: float = 0.5,
) -> list[int]:
    """The MES's states are the machine's states: the model's sequence from where the bridge
    first saw the machine (starting over at 0 after each of `restarts` simulator restarts),
    none invented, none twice, none skipped; every interval the MES saw begin and end lasted
    what the model says (± tolerance), except where it overlaps a `disturbed` window.

    Within a `loose` window (a link fault and its recovery) states may be skipped: a poller,
    or a new session, cannot see what happened meanwhile. Returns the model index of each MES
    state."""
    assert states, f"{code}: no STATE events"
    for e in states:
        assert e.state != "OFFLINE", f"{code}: OFFLINE state {e}"
    model = [sp.key for sp in spans]

    def same(j: int, i: int) -> bool:
        return model[j] == (states[i].state, states[i].reason)

    def attempt(start: int) -> tuple[list[int], str]:
        positions, how, left = [start], ["start"], restarts
        for i in range(1, len(states)):
            p = positions[-1]
            if p + 1 < len(model) and same(p + 1, i):
                positions.append(p + 1)
                how.append("next")
                continue
            if left and same(0, i):
                left -= 1
                positions.append(0)
                how.append("restart")
                continue
            if left and same(0, i - 1) and same(1, i):
                left -= 1
                positions.append(1)
                how.append("restart")
                continue
            ahead = next((j for j in range(p + 1, len(model)) if same(j, i)), None)
            if ahead is not None and _overlaps(
                states[i - 1].occurred_at, states[i].occurred_at, loose
            ):
                positions.append(ahead)
                how.append("skip")
                continue
            return positions, (
                f"state #{i} {(states[i].state, states[i].reason)} at "
                f"{states[i].occurred_at:%H:%M:%S.%f} after model #{p} {model[p]}; the model "
                f"goes on {model[p + 1 : p + 4]}"
            )
        for i in range(len(states) - 1):
            if how[i] != "next" or how[i + 1] != "next":
                continue
            a, b = states[i].occurred_at, states[i + 1].occurred_at
            if _overlaps(a, b, disturbed):
                continue
            seen = (b - a).total_seconds()
            span = spans[positions[i]]
            made = (span.end - span.start) * TICK_SECONDS / speed
            if abs(seen - made) > tolerance_s:
                return positions, (
                    f"state #{i} {model[positions[i]]} from {a:%H:%M:%S.%f} lasted {seen:.3f} s "
                    f"in the MES, {made:.3f} s on the machine (model #{positions[i]})"
                )
        return positions, ""

    problems: list[str] = []
    for start in (j for j in range(len(model)) if same(j, 0)):
        positions, problem = attempt(start)
        if not problem:
            return positions
        problems.append(problem)
    raise AssertionError(
        f"{code}: the MES states do not follow the machine: {problems[:6] or 'no start'}\n"
        f"MES: {[(e.state, e.reason, f'{e.occurred_at:%H:%M:%S.%f}') for e in states]}\n"
        f"model: {[(sp.key, sp.start, sp.end) for sp in spans][:80]}"
    )


# ---------------------------------------------------------------- the bridge's config


def press(code: str, port: int, **overrides: Any) -> dict[str, Any]:
    eq: dict[str, Any] = {
        "code": code,
        "protocol": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/mes/sim",
        # a hung link is noticed within ~2 x watchdog_s; 2 s: no false alarm when CI is slow
        "watchdog_s": 2.0,
        "reconnect_max_delay_s": 1.0,
        "backoff": {"base_s": 0.1, "cap_s": 0.5},
        # Publishing faster than the shortest state (50 ms at speed 20), so a notification
        # batch mostly holds one change (a backlog after a resume holds several). A
        # stale-subscription threshold (publishing x keepalive x 1.5 = 6 s) above the link
        # watchdog's detection time: below it asyncua can lose the monitored items when the
        # server hangs. (Both: see the report.)
        "subscription": {
            "publishing_ms": 50,
            "keepalive_count": 80,
            "lifetime_count": 400,
            "queue_size": 100,
        },
        "signals": {
            "state": {
                "kind": "STATE",
                "node": "ns=2;s=PRESS-01.State",
                "map": {1: "RUNNING", 2: "IDLE", 3: "DOWN", 4: "PLANNED_STOP", 5: "SETUP"},
                "reason_node": "ns=2;s=PRESS-01.StateReason",
            },
            "good": {"kind": "COUNTER", "node": "ns=2;s=PRESS-01.Good", "counter": "good"},
            "reject": {"kind": "COUNTER", "node": "ns=2;s=PRESS-01.Reject", "counter": "reject"},
            "temperature": {
                "kind": "VALUE",
                "node": "ns=2;s=PRESS-01.Temperature",
                "unit": "degC",
                "deadband": {"absolute": 0.5},
            },
            "alarm": {
                "kind": "ALARM",
                "code_node": "ns=2;s=PRESS-01.AlarmCode",
                "active_node": "ns=2;s=PRESS-01.AlarmActive",
            },
        },
    }
    eq.update(overrides)
    return eq


def blender(code: str, port: int, **overrides: Any) -> dict[str, Any]:
    eq: dict[str, Any] = {
        "code": code,
        "protocol": "modbus_tcp",
        "host": "127.0.0.1",
        "port": port,
        "device_id": 1,
        "poll_ms": 25,
        "timeout_s": 0.5,
        "retries": 1,
        "failed_polls_offline": 3,
        "backoff": {"base_s": 0.1, "cap_s": 0.5},
        "signals": {
            "state": {
                "kind": "STATE",
                "address": 0,
                "type": "UINT16",
                "map": {1: "RUNNING", 2: "IDLE", 3: "DOWN", 4: "PLANNED_STOP", 5: "SETUP"},
                "reason": {
                    "address": 1,
                    "type": "UINT16",
                    "map": {
                        0: None,
                        1: "Jam",
                        2: "Material starved",
                        3: "Break",
                        4: "Changeover",
                    },
                },
            },
            "good": {"kind": "COUNTER", "address": 2, "type": "UINT32", "counter": "good"},
            "reject": {"kind": "COUNTER", "address": 4, "type": "UINT32", "counter": "reject"},
            "temperature": {
                "kind": "VALUE",
                "address": 6,
                "type": "INT16",
                "scale": 0.1,
                "unit": "degC",
                "deadband": {"absolute": 0.5},
            },
            "alarm": {
                "kind": "ALARM",
                "code": {"address": 7},
                "active": {"address": 8},
                "map": {101: "MOTOR_OVERLOAD", 102: "GUARD_OPEN"},
            },
        },
    }
    eq.update(overrides)
    return eq


def write_config(
    path: Path,
    *,
    outbox: Path,
    url: str,
    equipment: Sequence[dict[str, Any]],
    request_timeout_s: float = 5.0,
    batch_linger_ms: int = 50,
    log_level: str = "INFO",
) -> Path:
    config = {
        "bridge": {
            "id": path.stem,
            "log_level": log_level,
            "outbox": {"path": str(outbox)},
            "mes": {
                "url": url,
                "token_env": "MES_BRIDGE_TOKEN",
                "batch_max": 500,
                "batch_linger_ms": batch_linger_ms,
                "request_timeout_s": request_timeout_s,
                "backoff": {"base_s": 0.1, "cap_s": 0.5},
            },
        },
        "equipment": list(equipment),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_bridge(workdir: Path, config: Path, token: str, name: str = "bridge") -> Proc:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MES_")}
    env["MES_BRIDGE_TOKEN"] = token
    env["PYTHONFAULTHANDLER"] = "1"
    return Proc(name, ["-m", "equipment_bridge", "--config", str(config)], env, workdir)
