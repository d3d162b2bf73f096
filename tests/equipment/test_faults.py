"""Fault tests of the equipment path with everything real: the simulators (`mes simulate`), the
bridge (`mes bridge`) and `mes serve` on a migrated SQLite file, each a subprocess on loopback.

Each test injects one fault and then checks, in the MES database:
- exact totals: the COUNTER increments the MES stored after a consistent cut of the bridge (its
  raw counters and every event it had produced, `faultkit.take_origin`) equal what the machine
  counted from those raw values to the end, read from the simulator itself while the machine
  stands still and the bridge has nothing left to send (`faultkit.settle`);
- the state intervals: the machine's states in order with their reasons (the seeded model
  replayed), none invented (no DOWN or OFFLINE for a lost link), none skipped, each lasting
  what it lasted on the machine; within a link fault and its recovery, states the source did
  not retain may be missing where the test says so (`check_machine(strict=False)`);
- COMM_LOSS raised and cleared where the link broke; nothing quarantined that should not be.

Every equipment code is the test's own (PRESS-01-<case>, BLENDER-01-<case> in the demo's work
centres), so the tests share one server and one steady simulator where their fault allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2e.conftest import MesProcess, free_port, mes_env
from faultkit import (
    COUNTERS,
    BlenderReader,
    End,
    MesDb,
    MesEvent,
    Origin,
    PressReader,
    Proc,
    Simulator,
    TcpProxy,
    Window,
    blender,
    check_comm_loss,
    check_intervals,
    check_states,
    counted,
    model_spans,
    model_total_until,
    model_totals,
    outage_windows,
    press,
    read_outbox,
    settle,
    start_bridge,
    states_of,
    take_origin,
    until,
    write_config,
)

from backend.auth import service as auth_service
from backend.catalog import service as catalog
from backend.db import Database
from backend.demo import WORK_CENTERS
from backend.migrate import upgrade
from backend.principal import SYSTEM, Principal, Role
from backend.uow import transaction
from equipment_bridge.events import MachineEvent
from equipment_bridge.outbox import Outbox
from equipment_bridge.simulators.model import BLENDER, PRESS, MachineProfile

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(os.environ.get("MES_TEST_DATABASE_URL")),
        reason="fault tests run in the SQLite leg only",
    ),
]

SEED = 42
SPEED = 20.0
ROLLOVER_SEED = 11  # the press stays under 1000 for ~4.5 s of wall time, then wraps often
CASES = ("KILL", "PAUSE", "PART", "LATE", "ROLL", "OUT", "SLOW", "BKILL", "CONF")
BATCH_CASES = ("RULE", "SCHEMA")
WAIT = 30.0  # any single wait
SETTLE = 25.0  # waiting for both machines to stand still with the bridge caught up
BATCH_WAIT = 12.0  # a bridge starting and sending 500 events, twice if one is refused
SLACK = dt.timedelta(seconds=2.5)  # after a fault: reconnect, resync, backlog


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------- module rig


async def _prepare(db_path: Path) -> str:
    """Migrates, creates the demo work centres with every test's own machines, returns an
    EQUIPMENT token."""
    url = f"sqlite+aiosqlite:///{db_path}"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    try:
        presses = [f"PRESS-01-{c}" for c in CASES]
        blenders = [f"BLENDER-01-{c}" for c in (*CASES, *(f"BATCH-{b}" for b in BATCH_CASES))]
        extra = {
            "WC-PRESS": [catalog.EquipmentSpec(c, c, PRESS.ideal_cycle_seconds) for c in presses],
            "WC-BLEND": [
                catalog.EquipmentSpec(c, c, BLENDER.ideal_cycle_seconds) for c in blenders
            ],
        }
        centres = [
            catalog.WorkCenterSpec(
                wc.code, wc.name, [*(wc.equipment or []), *extra.get(wc.code, [])]
            )
            for wc in WORK_CENTERS
        ]
        erp = Principal(name="erp", roles=frozenset({Role.ERP}))
        async with transaction(db, erp) as uow:
            await catalog.upsert_work_centers(uow, centres)
        async with transaction(db, SYSTEM) as uow:
            _, token = await auth_service.create_api_token(
                uow, name="fault-bridge", roles=[Role.EQUIPMENT]
            )
    finally:
        await db.dispose()
    return token


@dataclass
class Rig:
    root: Path
    token: str
    port: int
    env: dict[str, str]
    mes: MesDb
    sim: Simulator  # the steady simulator: seed SEED, speed SPEED, never killed
    servers: list[MesProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    @property
    def server(self) -> MesProcess:
        return self.servers[-1]

    def start_server(self) -> MesProcess:
        """`mes serve` on the rig's port (again, after a stop)."""
        n = len(self.servers) + 1
        server = MesProcess(
            ["serve", "--port", str(self.port)], self.env, self.root / f"serve-{n}", self.port
        )
        self.servers.append(server)
        return server

    async def wait_ready(self) -> None:
        await asyncio.to_thread(self.server.wait_for, "/readyz", 60.0)


@pytest.fixture(scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    root = tmp_path_factory.mktemp("faults")
    db_path = root / "mes.db"
    token = await _prepare(db_path)
    port = free_port()
    env = mes_env(
        MES_DATABASE_URL=f"sqlite+aiosqlite:///{db_path}",
        MES_SECRET_KEY="fault-test-secret-key-0123456789",
    )
    sim = Simulator(
        root, "steady-sim", opcua_port=free_port(), modbus_port=free_port(), seed=SEED, speed=SPEED
    )
    mes = MesDb(db_path)
    rig = Rig(root, token, port, env, mes, sim)
    try:
        rig.start_server()
        sim.start()
        await asyncio.gather(rig.wait_ready(), sim.ready())
        yield rig
    finally:
        await sim.stop()
        for server in rig.servers:
            server.kill()
        mes.dispose()


# ---------------------------------------------------------------- one test's processes


class Run:
    """One test's bridge (and its own simulators and proxies), all ended at the end."""

    def __init__(self, rig: Rig, case: str, workdir: Path) -> None:
        self.rig, self.case, self.workdir = rig, case, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.press_code, self.blender_code = f"PRESS-01-{case}", f"BLENDER-01-{case}"
        self.outbox = workdir / "outbox.sqlite"
        self.config = workdir / "bridge.yaml"
        self.bridges: list[Proc] = []
        self.sims: list[Simulator] = []
        self.proxies: list[TcpProxy] = []
        self.faults: list[Window] = []

    @property
    def codes(self) -> tuple[str, str]:
        return self.press_code, self.blender_code

    @property
    def bridge(self) -> Proc:
        return self.bridges[-1]

    def describe(self) -> str:
        parts = [b.describe(3000) for b in self.bridges]
        parts += [s.describe() for s in self.sims]
        return "\n".join(parts)

    def configure(
        self,
        opcua_port: int,
        modbus_port: int,
        *,
        url: str | None = None,
        press_extra: dict[str, Any] | None = None,
        blender_extra: dict[str, Any] | None = None,
        rollover: int | None = None,
        **mes: Any,
    ) -> None:
        p = press(self.press_code, opcua_port)
        b = blender(self.blender_code, modbus_port)
        for eq, limit in ((p, 2000), (b, 100)):
            for name in COUNTERS:
                eq["signals"][name]["max_per_s"] = limit
                if rollover is not None:
                    eq["signals"][name]["rollover"] = rollover
        p["signals"].update(press_extra or {})
        b["signals"].update(blender_extra or {})
        write_config(
            self.config, outbox=self.outbox, url=url or self.rig.url, equipment=[p, b], **mes
        )

    def start_bridge(self) -> Proc:
        proc = start_bridge(
            self.workdir, self.config, self.rig.token, f"bridge-{len(self.bridges) + 1}"
        )
        self.bridges.append(proc)
        return proc

    def simulator(self, name: str, **kwargs: Any) -> Simulator:
        sim = Simulator(
            self.workdir, name, opcua_port=free_port(), modbus_port=free_port(), **kwargs
        )
        self.sims.append(sim)
        return sim

    async def proxy(self, target: int, port: int = 0) -> TcpProxy:
        proxy = TcpProxy(target)
        self.proxies.append(proxy)
        return await proxy.start(port)

    @contextlib.asynccontextmanager
    async def fault(self) -> AsyncIterator[None]:
        """Records the wall-clock window of a fault (extended by SLACK for the recovery)."""
        start = utcnow()
        try:
            yield
        finally:
            self.faults.append((start - dt.timedelta(seconds=0.2), utcnow() + SLACK))

    async def origin(self) -> Origin:
        return await take_origin(self.outbox, self.rig.mes, self.codes, WAIT, self.describe)

    async def settle(self, sim: Simulator) -> tuple[End, End]:
        async with PressReader(sim.opcua_port) as p, BlenderReader(sim.modbus_port) as b:
            ends = await asyncio.gather(
                settle(p.read, self.outbox, self.rig.mes, self.press_code, SETTLE, self.describe),
                settle(b.read, self.outbox, self.rig.mes, self.blender_code, SETTLE, self.describe),
            )
        return ends[0], ends[1]

    def lost(self, code: str) -> bool:
        return bool(read_outbox(self.outbox).state.get((code, "#comm"), {}).get("lost"))

    async def close(self) -> None:
        for proc in self.bridges:
            # A bridge ends within a second of SIGTERM, except when its shutdown hangs (see
            # the report): then it is killed.
            await proc.stop(grace=3.0)
        for sim in self.sims:
            await sim.stop()
        for proxy in self.proxies:
            await proxy.close()


@pytest.fixture
async def runs(rig: Rig, tmp_path: Path) -> AsyncIterator[Callable[[str], Run]]:
    """`runs(CASE)`: a Run whose processes and proxies are ended after the test."""
    made: list[Run] = []

    def make(case: str) -> Run:
        made.append(Run(rig, case, tmp_path / case))
        return made[-1]

    try:
        yield make
    finally:
        for r in made:
            await r.close()


# ---------------------------------------------------------------- the checks


def check_machine(
    run: Run,
    sim: Simulator,
    profile: MachineProfile,
    end: End,
    origin: Origin,
    expected: dict[str, int],
    *,
    comm_losses: int = 0,
    restarts: int = 0,
    strict: bool = True,
) -> list[MesEvent]:
    """Exact totals, no quarantine, COMM_LOSS edges, and the state intervals.

    `strict`: every state of the machine, with its reason, everywhere. Else, within the test's
    fault windows and the COMM_LOSS outages, states may be missing (what the source does not
    retain is lost: a poller, a new session, a republish the simulator cannot serve); outside
    them, still every state. Reasons are always the machine's."""
    code = next(c for c in run.codes if c.startswith(profile.code))
    events = end.events
    for name in COUNTERS:
        got = counted(events, name, origin.ids)
        assert got == expected[name], (
            f"{code}: the MES counted {got} {name} after the origin, the machine made "
            f"{expected[name]} (origin raw {origin.raw[(code, name)]}, end {end.reading})\n"
            f"{run.describe()}"
        )
    quarantined = [q for q in end.snapshot.quarantine if q["body"]["equipmentCode"] == code]
    assert quarantined == [], f"{code}: quarantined {quarantined}"
    alarms = check_comm_loss(events, comm_losses, code)
    states = states_of(events)
    check_intervals(states, code)
    loose: list[Window] = []
    if not strict:
        loose = [*run.faults, *((a - SLACK, b + SLACK) for a, b in outage_windows(alarms))]
    check_states(
        states,
        model_spans(profile, sim.seed, sim.model_ticks()),
        code,
        speed=sim.speed,
        restarts=restarts,
        loose=loose,
        disturbed=[*run.faults, *outage_windows(alarms)],
    )
    return events


def expected_from(origin: Origin, end: End, code: str) -> dict[str, int]:
    """What the machine counted from the bridge's raw values at the origin to the end (no
    rollover, no reset in between)."""
    return {name: getattr(end.reading, name) - origin.raw[(code, name)] for name in COUNTERS}


# ---------------------------------------------------------------- machine-side faults


async def test_simulator_killed_and_restarted(runs: Callable[[str], Run]) -> None:
    """SIGKILL mid-run, restart on the same ports: counters restart at 0 → counted as a reset;
    COMM_LOSS raised and cleared, never a DOWN state."""
    run = runs("KILL")
    sim = run.simulator("sim", seed=SEED, speed=SPEED)
    sim.start()
    await sim.ready()
    run.configure(sim.opcua_port, sim.modbus_port)
    run.start_bridge()
    origin = await run.origin()
    # Let both machines count well past what they count in the first seconds after a restart
    # (same seed: same counts at the same age), so the restart shows as a drop to a reset.
    await until(lambda: sim.max_tick() > 1100, WAIT, "the simulation runs 5.5 s")
    assert sim.proc is not None
    async with run.fault():
        sim.proc.kill()
        await until(
            lambda: all(run.lost(c) for c in run.codes), WAIT, "link loss noticed", run.describe
        )

        async def stable() -> dict[tuple[str, str], int] | None:
            first = read_outbox(run.outbox)
            await asyncio.sleep(0.3)
            second = read_outbox(run.outbox)
            if first.state != second.state:
                return None
            return {(c, n): int(second.raw(c, n) or 0) for c in run.codes for n in COUNTERS}

        at_kill = await until(stable, WAIT, "the bridge's last counts before the kill")
        sim.start()
        await sim.ready()
        await until(
            lambda: not any(run.lost(c) for c in run.codes), WAIT, "links back", run.describe
        )
    press_end, blender_end = await run.settle(sim)
    for code, end, profile in (
        (run.press_code, press_end, PRESS),
        (run.blender_code, blender_end, BLENDER),
    ):
        expected = {
            name: at_kill[(code, name)] - origin.raw[(code, name)] + getattr(end.reading, name)
            for name in COUNTERS
        }
        check_machine(
            run, sim, profile, end, origin, expected,
            comm_losses=1, restarts=1, strict=profile is PRESS,
        )  # fmt: skip
    log = run.bridge.output()
    for code in run.codes:
        assert f"{code}: counter good went back from" in log, log[-3000:]


async def test_simulator_paused_five_seconds(runs: Callable[[str], Run], rig: Rig) -> None:
    """SIGSTOP 5 s, SIGCONT: the hung peer is noticed (COMM_LOSS), nothing happens on the
    machines while they are frozen, and the counters catch up exactly afterwards."""
    run = runs("PAUSE")
    sim = rig.sim
    run.configure(sim.opcua_port, sim.modbus_port)
    run.start_bridge()
    origin = await run.origin()
    assert sim.proc is not None
    async with run.fault():
        frozen = utcnow()
        sim.proc.pause()
        try:
            await asyncio.sleep(5.0)
            await until(
                lambda: all(run.lost(c) for c in run.codes), WAIT, "the hang noticed",
                run.describe,
            )  # fmt: skip
        finally:
            thawed = utcnow()
            sim.proc.resume()
        await until(
            lambda: not any(run.lost(c) for c in run.codes), WAIT, "links back", run.describe
        )
    press_end, blender_end = await run.settle(sim)
    # The press's session resumes and gets the backlog in one batch (several changes, each
    # reason with its state).
    check_machine(
        run, sim, PRESS, press_end, origin, expected_from(origin, press_end, run.press_code),
        comm_losses=1, strict=False,
    )  # fmt: skip
    check_machine(
        run, sim, BLENDER, blender_end, origin,
        expected_from(origin, blender_end, run.blender_code), comm_losses=1, strict=False,
    )  # fmt: skip
    # A frozen machine changes nothing: a state stamped while it was stopped is invented (a
    # DOWN for the lost link, say).
    calm = (frozen + dt.timedelta(seconds=0.1), thawed - dt.timedelta(seconds=0.1))
    for end in (press_end, blender_end):
        invented = [e for e in states_of(end.events) if calm[0] < e.occurred_at < calm[1]]
        assert invented == [], invented


async def test_network_partition(runs: Callable[[str], Run], rig: Rig) -> None:
    """Both machine links partitioned by a proxy (bytes held, no reset) until the bridge has
    noticed both, then 1 s more (3-5 s in all): COMM_LOSS after the timeouts, then recovery
    with exact totals."""
    run = runs("PART")
    sim = rig.sim
    opcua = await run.proxy(sim.opcua_port)
    modbus = await run.proxy(sim.modbus_port)
    run.configure(opcua.port, modbus.port)
    run.start_bridge()
    origin = await run.origin()
    async with run.fault():
        opcua.partition()
        modbus.partition()
        try:
            await until(
                lambda: all(run.lost(c) for c in run.codes), WAIT, "partition noticed",
                run.describe,
            )  # fmt: skip
            await asyncio.sleep(1.0)
        finally:
            opcua.heal()
            modbus.heal()
        await until(
            lambda: not any(run.lost(c) for c in run.codes), WAIT, "links back", run.describe
        )
    press_end, blender_end = await run.settle(sim)
    # States that change during the partition can be lost on both links: Modbus is polled, and
    # the asyncua simulator answers the held Publish requests into the dead connection and
    # does not republish them (see the report).
    check_machine(
        run, sim, PRESS, press_end, origin, expected_from(origin, press_end, run.press_code),
        comm_losses=1, strict=False,
    )  # fmt: skip
    check_machine(
        run, sim, BLENDER, blender_end, origin,
        expected_from(origin, blender_end, run.blender_code), comm_losses=1, strict=False,
    )  # fmt: skip


async def test_machines_down_when_the_bridge_starts(runs: Callable[[str], Run], rig: Rig) -> None:
    """The bridge starts while nothing answers at the machines' addresses; they come up later
    (already counting): COMM_LOSS raised then cleared, the first reading is only a baseline."""
    run = runs("LATE")
    sim = rig.sim
    opcua_port, modbus_port = free_port(), free_port()
    run.configure(opcua_port, modbus_port)
    run.start_bridge()
    await until(
        lambda: all(run.lost(c) for c in run.codes), WAIT, "machines reported unreachable",
        run.describe,
    )  # fmt: skip
    async with PressReader(sim.opcua_port) as p, BlenderReader(sim.modbus_port) as b:
        before = {run.press_code: await p.read(), run.blender_code: await b.read()}
    await run.proxy(sim.opcua_port, opcua_port)
    await run.proxy(sim.modbus_port, modbus_port)
    origin = await run.origin()
    press_end, blender_end = await run.settle(sim)
    for code, end, profile in (
        (run.press_code, press_end, PRESS),
        (run.blender_code, blender_end, BLENDER),
    ):
        events = check_machine(
            run, sim, profile, end, origin, expected_from(origin, end, code), comm_losses=1
        )
        for name in COUNTERS:
            # What the bridge counted before the origin leads back to its first reading, which
            # cannot be below what the machine showed before the link came up.
            baseline = origin.raw[(code, name)] - counted(
                (e for e in events if e.event_id in origin.ids), name
            )
            shown = getattr(before[code], name)
            assert shown <= baseline <= origin.raw[(code, name)], (code, name, shown, baseline)


async def test_counter_rollover(runs: Callable[[str], Run]) -> None:
    """`--rollover 1000 --speed 20`: the press wraps every ~3 s; increments across each wrap are
    exact (the machine's unwrapped total from the seeded model)."""
    run = runs("ROLL")
    sim = run.simulator("sim", seed=ROLLOVER_SEED, speed=SPEED, rollover=1000)
    # The bridge starts while the simulator does, so that it reads the press before its
    # first wrap.
    sim.start()
    run.configure(sim.opcua_port, sim.modbus_port, rollover=1000)
    run.start_bridge()
    await sim.ready()
    origin = await run.origin()
    bound = sim.max_tick()
    assert model_total_until(PRESS, sim.seed, bound) < 1000, (
        f"the origin came too late to be before the first wrap (tick ≤ {bound})"
    )
    await until(lambda: sim.max_tick() > 2400, WAIT, "three wraps of the press")
    press_end, blender_end = await run.settle(sim)
    totals = model_totals(PRESS, sim.seed, 1000, sim.max_tick(), press_end.reading)
    assert len(totals) == 1, f"the press's end reading {press_end.reading} matches {totals}"
    good, reject = totals.pop()
    assert good >= 2000, f"the press wrapped only {good // 1000} times"
    expected = {
        "good": good - origin.raw[(run.press_code, "good")],
        "reject": reject - origin.raw[(run.press_code, "reject")],
    }
    check_machine(run, sim, PRESS, press_end, origin, expected)
    check_machine(
        run, sim, BLENDER, blender_end, origin,
        expected_from(origin, blender_end, run.blender_code),
    )  # fmt: skip


# ---------------------------------------------------------------- MES-side faults


async def test_mes_unreachable_for_a_while(runs: Callable[[str], Run], rig: Rig) -> None:
    """`mes serve` stopped while the bridge runs, restarted on the same port: the outbox holds
    everything meanwhile; nothing lost, nothing counted twice."""
    run = runs("OUT")
    sim = rig.sim
    run.configure(sim.opcua_port, sim.modbus_port)
    run.start_bridge()
    origin = await run.origin()
    status = await asyncio.to_thread(rig.server.stop, signal.SIGTERM)
    # uvicorn shuts down gracefully, then ends by the signal it got
    assert status in (0, -signal.SIGTERM), rig.server.describe()
    await asyncio.sleep(3.0)
    waiting = read_outbox(run.outbox).pending
    assert len(waiting) > 20, f"the outbox should fill while the MES is away: {len(waiting)}"
    rig.start_server()
    await rig.wait_ready()
    press_end, blender_end = await run.settle(sim)
    assert {e for _, e, _ in waiting} <= rig.mes.event_ids(run.codes)
    check_machine(
        run, sim, PRESS, press_end, origin, expected_from(origin, press_end, run.press_code)
    )
    check_machine(
        run, sim, BLENDER, blender_end, origin,
        expected_from(origin, blender_end, run.blender_code),
    )  # fmt: skip
    assert "retrying in" in run.bridge.output()


async def test_mes_slow_answers_after_commit(runs: Callable[[str], Run], rig: Rig) -> None:
    """A proxy holds the MES's answers past the bridge's request timeout (1 s): the MES has
    committed, the bridge resends the same ids → duplicates, and totals stay exact."""
    run = runs("SLOW")
    sim = rig.sim
    mes_proxy = await run.proxy(rig.port)
    run.configure(
        sim.opcua_port, sim.modbus_port,
        url=f"http://127.0.0.1:{mes_proxy.port}/graphql", request_timeout_s=1.0,
    )  # fmt: skip
    run.start_bridge()
    origin = await run.origin()
    held = mes_proxy.answers_held
    mes_proxy.response_delay = 1.6
    # two answers held past the timeout: the bridge gave up on two committed batches
    await until(lambda: mes_proxy.answers_held >= held + 2, WAIT, "two answers held back")
    await asyncio.sleep(1.0)
    mes_proxy.response_delay = 0.0
    press_end, blender_end = await run.settle(sim)
    check_machine(
        run, sim, PRESS, press_end, origin, expected_from(origin, press_end, run.press_code)
    )
    check_machine(
        run, sim, BLENDER, blender_end, origin,
        expected_from(origin, blender_end, run.blender_code),
    )  # fmt: skip
    duplicates = sum(a.get("duplicates", 0) for c in run.codes for a in rig.mes.ingest_audits(c))
    assert duplicates > 0, "a batch the MES committed was not sent again"
    assert "(timed out); retrying" in run.bridge.output()


async def test_bridge_killed_during_a_send(runs: Callable[[str], Run], rig: Rig) -> None:
    """SIGKILL of the bridge while the MES's answer to a committed batch is on its way; a new
    bridge on the same outbox resends it (duplicates) and goes on: totals exact."""
    run = runs("BKILL")
    sim = rig.sim
    mes_proxy = await run.proxy(rig.port)
    run.configure(sim.opcua_port, sim.modbus_port, url=f"http://127.0.0.1:{mes_proxy.port}/graphql")
    run.start_bridge()
    origin = await run.origin()
    held = mes_proxy.answers_held
    mes_proxy.response_delay = 3.0
    async with run.fault():
        await until(lambda: mes_proxy.answers_held > held, WAIT, "an answer on its way")
        run.bridge.kill()
        mes_proxy.response_delay = 0.0
        unsent = read_outbox(run.outbox).pending
        assert unsent, "the killed bridge left nothing to resend"
        run.start_bridge()
        await until(
            lambda: "connected to" in run.bridge.output(), WAIT, "the new bridge connects",
            run.describe,
        )  # fmt: skip
    press_end, blender_end = await run.settle(sim)
    assert {e for _, e, _ in unsent} <= rig.mes.event_ids(run.codes)
    check_machine(
        run, sim, PRESS, press_end, origin, expected_from(origin, press_end, run.press_code),
        strict=False,
    )  # fmt: skip
    check_machine(
        run, sim, BLENDER, blender_end, origin,
        expected_from(origin, blender_end, run.blender_code), strict=False,
    )  # fmt: skip
    duplicates = sum(a.get("duplicates", 0) for c in run.codes for a in rig.mes.ingest_audits(c))
    assert duplicates > 0, "the batch in flight at the kill was not sent again"


@pytest.mark.parametrize(
    ("variant", "bad", "field"),
    [
        # refused by the MES's rules: the batch is answered, one item in `errors`
        ("RULE", {"counter": "good", "increment": -1}, "events.250.increment"),
        # refused by the GraphQL schema (Int is 32 bits): the whole request fails, naming it
        ("SCHEMA", {"counter": "good", "increment": 2**40}, "events.250"),
    ],
)
async def test_one_bad_event_in_a_batch_of_500(
    rig: Rig, tmp_path: Path, variant: str, bad: dict[str, Any], field: str
) -> None:
    """500 events waiting in the outbox when the bridge starts, the 251st bad: it alone is
    quarantined, the other 499 are stored (once)."""
    code = f"BLENDER-01-BATCH-{variant}"
    outbox_path = tmp_path / "outbox.sqlite"
    start = utcnow() - dt.timedelta(minutes=10)
    events = [
        MachineEvent(
            str(uuid.uuid4()),
            code,
            "COUNTER",
            start + dt.timedelta(milliseconds=i),
            bad if i == 250 else {"counter": "good", "increment": 1 + i % 7},
        )
        for i in range(500)
    ]
    outbox = Outbox(outbox_path)
    try:
        outbox.append(events)
    finally:
        outbox.close()
    config = write_config(
        tmp_path / "bridge.yaml",
        outbox=outbox_path,
        url=rig.url,
        # a machine that is not there: the bridge only forwards
        equipment=[blender(code, free_port(), poll_ms=1000)],
    )
    bridge = start_bridge(tmp_path, config, rig.token)
    try:
        good_ids = {e.event_id for i, e in enumerate(events) if i != 250}

        def stored() -> set[str] | None:
            ids = {e.event_id for e in rig.mes.events(code) if e.kind == "COUNTER"}
            return ids if ids >= good_ids else None

        await until(stored, BATCH_WAIT, "499 events stored", bridge.describe)
        snapshot = await until(
            lambda: (s := read_outbox(outbox_path)).quarantine and s, WAIT, "the quarantine"
        )
        assert [q["event_id"] for q in snapshot.quarantine] == [events[250].event_id]
        assert snapshot.quarantine[0]["field"] == field
        assert bridge.alive, bridge.describe()
    finally:
        await bridge.stop(grace=3.0)
    counters = [e for e in rig.mes.events(code) if e.kind == "COUNTER"]
    assert {e.event_id for e in counters} == good_ids
    assert sum(e.increment or 0 for e in counters) == sum(1 + i % 7 for i in range(500) if i != 250)
    # The 499 went in with the first batch the MES stored (after the bridge took the refused
    # one out, for a request the schema refused as a whole; events the bridge made meanwhile,
    # its COMM_LOSS alarm, may ride along).
    first = rig.mes.ingest_audits(code)[0]["accepted"]
    assert first == 499 if variant == "RULE" else first >= 499, first


async def test_bad_node_and_register_in_the_config(runs: Callable[[str], Run], rig: Rig) -> None:
    """A node the press does not have, a malformed node id and a register the blender does not
    have: the bridge keeps running, the other signals flow exactly, CONFIG_ERROR alarms arrive."""
    run = runs("CONF")
    sim = rig.sim
    run.configure(
        sim.opcua_port,
        sim.modbus_port,
        press_extra={
            "missing": {"kind": "VALUE", "node": "ns=2;s=PRESS-01.NoSuchNode"},
            "garbled": {"kind": "VALUE", "node": "ns=2;x=PRESS-01"},
        },
        blender_extra={"missing": {"kind": "VALUE", "address": 100, "type": "UINT16"}},
    )
    run.start_bridge()
    origin = await run.origin()
    press_end, blender_end = await run.settle(sim)
    assert run.bridge.alive, run.describe()
    for code, end, profile, bad in (
        (run.press_code, press_end, PRESS, {"missing", "garbled"}),
        (run.blender_code, blender_end, BLENDER, {"missing"}),
    ):
        events = check_machine(run, sim, profile, end, origin, expected_from(origin, end, code))
        errors = [e for e in events if e.kind == "ALARM" and e.alarm_code == "CONFIG_ERROR"]
        named = {s for s in bad for e in errors if f"signal {s}:" in (e.message or "")}
        assert named == bad, f"{code}: CONFIG_ERROR alarms {[e.message for e in errors]}"
        assert all(e.alarm_active for e in errors)
