"""The machine simulators as a user of `mes simulate` sees them: a real subprocess on loopback
ports, read with a real OPC UA client (asyncua) and a real Modbus TCP client (pymodbus).

Two runs with the same seed on the same ports are recorded once per module: run A (stopped with
SIGTERM), then run B (a restart, stopped with SIGINT while a client is still connected). What
each run published is compared with the seeded model (`Machine`), tick by tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, Subscription
from pymodbus.client import AsyncModbusTcpClient

from equipment_bridge.simulators.modbus_blender import registers
from equipment_bridge.simulators.model import (
    BLENDER,
    PRESS,
    TICK_SECONDS,
    Machine,
    MachineProfile,
    MachineState,
    Reason,
    Snapshot,
)

pytestmark = pytest.mark.slow

SEED = 7
ROLLOVER = 1000
SPEED = 20.0
PRESS_CHANGES = 6  # the first state changes compared between runs (about 5 s of wall time)
BLENDER_CHANGES = 2
READY_TIMEOUT = 20.0
RECORD_TIMEOUT = 15.0
MODEL_TICKS = int(RECORD_TIMEOUT * 2 * SPEED / TICK_SECONDS)

VARIABLES = {
    "State": ua.VariantType.Int32,
    "StateReason": ua.VariantType.String,
    "Good": ua.VariantType.UInt32,
    "Reject": ua.VariantType.UInt32,
    "Temperature": ua.VariantType.Double,
    "AlarmCode": ua.VariantType.String,
    "AlarmActive": ua.VariantType.Boolean,
}
NODE_NAMES = {f"ns=2;s=PRESS-01.{name}": name for name in VARIABLES}
FIRST_READ = ("State", "StateReason", "Good", "Reject", "Temperature", "AlarmCode")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Recording:
    """What one simulator process showed to its clients."""

    namespace_index: int = -1
    browse_names: set[str] = field(default_factory=set)
    value_types: dict[str, ua.VariantType] = field(default_factory=dict)
    data_types: dict[str, ua.VariantType] = field(default_factory=dict)
    first_press: tuple[Any, ...] = ()
    first_registers: list[int] = field(default_factory=list)
    max_ticks_at_first_read: int = 0
    beyond_block_exception: int | None = None
    write_exception: int | None = None
    notifications: list[tuple[datetime, str, Any]] = field(default_factory=list)
    polls: list[list[int]] = field(default_factory=list)
    exit_code: int | None = None
    stop_seconds: float = 0.0
    stderr: str = ""

    def replay(self) -> list[tuple[str, Any, dict[str, Any]]]:
        """The OPC UA writes in the order they were made (timestamps strictly increase), each
        with the values current before it; a node's first notification is its initial value."""
        seen: set[str] = set()
        current: dict[str, Any] = {}
        out = []
        for _, name, value in sorted(self.notifications, key=lambda n: n[0]):
            if name in seen:
                out.append((name, value, dict(current)))
            seen.add(name)
            current[name] = value
        return out

    def press_changes(self) -> list[tuple[MachineState, str, int, int]]:
        return [
            (MachineState(value), before["StateReason"], before["Good"], before["Reject"])
            for name, value, before in self.replay()
            if name == "State"
        ]

    def blender_changes(self) -> list[tuple[MachineState, Reason]]:
        changes: list[tuple[MachineState, Reason]] = []
        for previous, regs in itertools.pairwise(self.polls):
            if regs[:2] != previous[:2]:
                changes.append((MachineState(regs[0]), Reason(regs[1])))
        return changes


def model_run(profile: MachineProfile) -> tuple[list[Snapshot], list[Snapshot]]:
    """(snapshot at every tick, snapshot at every state change) of the seeded model."""
    machine = Machine(profile, seed=SEED, rollover=ROLLOVER)
    ticks = [machine.snapshot()]
    changes = []
    for _ in range(MODEL_TICKS):
        changed = machine.step()
        ticks.append(machine.snapshot())
        if changed:
            changes.append(ticks[-1])
    return ticks, changes


PRESS_TICKS, PRESS_MODEL_CHANGES = model_run(PRESS)
BLENDER_TICKS, BLENDER_MODEL_CHANGES = model_run(BLENDER)


def aligned(observed: list[Any], expected: list[Any], count: int) -> list[Any]:
    """`expected[k:k+count]` where observed[0] is expected[k] (the run may have changed state
    before the client subscribed)."""
    assert observed, "no state change observed"
    assert observed[0] in expected, f"{observed[0]} is not a state change of the model"
    start = expected.index(observed[0])
    assert start <= 1, f"the client subscribed only after {start} state changes"
    return expected[start : start + count]


def press_tuple(snap: Snapshot) -> tuple[Any, ...]:
    return (
        int(snap.state),
        snap.reason_text,
        snap.good,
        snap.reject,
        snap.temperature,
        snap.alarm_code,
    )


def change_tuple(snap: Snapshot) -> tuple[MachineState, str, int, int]:
    return (snap.state, snap.reason_text, snap.good, snap.reject)


async def _read_first(
    opcua: Client, modbus: AsyncModbusTcpClient, recording: Recording, spawned: float
) -> None:
    ns = recording.namespace_index
    nodes = [opcua.get_node(f"ns={ns};s=PRESS-01.{name}") for name in FIRST_READ]
    values, registers_read = await asyncio.gather(
        opcua.read_values(nodes), modbus.read_holding_registers(0, count=9, device_id=1)
    )
    ticks = (time.monotonic() - spawned) * SPEED / TICK_SECONDS
    recording.max_ticks_at_first_read = int(ticks) + 1
    recording.first_press = tuple(values)
    assert not registers_read.isError(), registers_read
    recording.first_registers = list(registers_read.registers)


async def _inspect(opcua: Client, modbus: AsyncModbusTcpClient, recording: Recording) -> None:
    ns = recording.namespace_index
    press = await opcua.nodes.objects.get_child(f"{ns}:PRESS-01")
    for child in await press.get_children():
        recording.browse_names.add((await child.read_browse_name()).Name)
    for name in VARIABLES:
        node = opcua.get_node(f"ns={ns};s=PRESS-01.{name}")
        value = await node.read_data_value()
        assert value.Value is not None
        recording.value_types[name] = value.Value.VariantType
        recording.data_types[name] = await node.read_data_type_as_variant_type()
    beyond = await modbus.read_holding_registers(0, count=10, device_id=1)
    recording.beyond_block_exception = beyond.exception_code if beyond.isError() else None
    written = await modbus.write_register(0, 1, device_id=1)
    recording.write_exception = written.exception_code if written.isError() else None


async def _subscribe(opcua: Client) -> Subscription:
    """Subscribes to every press variable, keeping every notification (the server queues them)."""
    sub = await opcua.create_subscription(20, queue_maxsize=100_000)
    results = await sub.subscribe_data_change(
        [opcua.get_node(nodeid) for nodeid in NODE_NAMES], queuesize=10_000, sampling_interval=0
    )
    assert all(isinstance(result, int) for result in results), results
    return sub


async def _collect(sub: Subscription, modbus: AsyncModbusTcpClient, recording: Recording) -> None:
    """Records every press write and polls the blender until enough changes were seen."""

    def done() -> bool:
        # Every State write is a change; the first notification is the initial value.
        states = sum(1 for _, name, _ in recording.notifications if name == "State")
        return states > PRESS_CHANGES and len(recording.blender_changes()) >= BLENDER_CHANGES

    async def poll() -> None:
        while True:
            result = await modbus.read_holding_registers(0, count=9, device_id=1)
            assert not result.isError(), result
            recording.polls.append(list(result.registers))
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll())
    deadline = time.monotonic() + RECORD_TIMEOUT
    try:
        while not done() and time.monotonic() < deadline:
            event = await sub.next_event(timeout=0.5)
            if isinstance(event, DataChangeEvent):
                data_value = event.data.monitored_item.Value
                assert data_value is not None
                stamp = data_value.SourceTimestamp
                assert stamp is not None, "every write carries a SourceTimestamp"
                recording.notifications.append(
                    (stamp, NODE_NAMES[event.node.nodeid.to_string()], event.value)
                )
        assert done(), "too few state changes before the deadline"
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        with contextlib.suppress(Exception):
            await sub.delete()


async def record_run(opcua_port: int, modbus_port: int, stop_with: signal.Signals) -> Recording:
    recording = Recording()
    spawned = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "equipment_bridge.simulators.run",
        "--opcua-port", str(opcua_port),
        "--modbus-port", str(modbus_port),
        "--seed", str(SEED),
        "--rollover", str(ROLLOVER),
        "--speed", str(SPEED),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    opcua = Client(f"opc.tcp://127.0.0.1:{opcua_port}/mes/sim", timeout=4)
    modbus = AsyncModbusTcpClient(
        "127.0.0.1", port=modbus_port, timeout=1, retries=0, reconnect_delay=0
    )
    connected = False
    try:
        lines = [
            (await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)).decode()
            for _ in range(2)
        ]
        assert any(f"opc.tcp://127.0.0.1:{opcua_port}/mes/sim" in line for line in lines), lines
        assert any(f"127.0.0.1:{modbus_port}" in line for line in lines), lines
        await opcua.connect()
        connected = True
        sub = await _subscribe(opcua)  # first: the first state change comes after 1.25 s
        assert await modbus.connect()
        recording.namespace_index = await opcua.get_namespace_index("urn:mes:simulator")
        await _read_first(opcua, modbus, recording, spawned)
        await _collect(sub, modbus, recording)
        await _inspect(opcua, modbus, recording)
        if stop_with is signal.SIGTERM:  # stop with the clients gone; SIGINT with them connected
            modbus.close()
            await opcua.disconnect()
            connected = False
        stopping = time.monotonic()
        process.send_signal(stop_with)
        recording.exit_code = await asyncio.wait_for(process.wait(), 10)
        recording.stop_seconds = time.monotonic() - stopping
        recording.stderr = (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        modbus.close()
        if connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(opcua.disconnect(), 3)
    return recording


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
async def run_a(ports: tuple[int, int]) -> Recording:
    return await record_run(*ports, stop_with=signal.SIGTERM)


@pytest.fixture(scope="module")
async def run_b(run_a: Recording, ports: tuple[int, int]) -> Recording:
    """The same simulator restarted on the same ports after run A ended."""
    return await record_run(*ports, stop_with=signal.SIGINT)


async def test_press_serves_the_spec_nodes_with_their_types(run_a: Recording) -> None:
    assert run_a.namespace_index == 2
    assert run_a.browse_names >= set(VARIABLES)
    assert run_a.value_types == VARIABLES
    assert run_a.data_types == VARIABLES


async def test_blender_serves_holding_registers_0_to_8_read_only(run_a: Recording) -> None:
    state, reason, good_hi, good_lo, rej_hi, rej_lo, temp, alarm, active = run_a.first_registers
    assert state in {s.value for s in MachineState}
    assert reason in {r.value for r in Reason}
    assert (good_hi << 16 | good_lo) < ROLLOVER
    assert (rej_hi << 16 | rej_lo) < ROLLOVER
    assert 150 <= temp <= 400, "temperature x 10, about 21-27 °C"
    assert (alarm, active) in {(0, 0), (101, 1), (102, 1)}
    assert run_a.beyond_block_exception == 2, "a read past register 8 is ILLEGAL_ADDRESS"
    assert run_a.write_exception == 1, "a write is ILLEGAL_FUNCTION"


async def test_counters_grow_while_running_and_only_then(run_a: Recording) -> None:
    counted = [
        (name, before["State"]) for name, _, before in run_a.replay() if name in {"Good", "Reject"}
    ]
    assert sum(1 for name, _ in counted if name == "Good") > 20
    assert {state for _, state in counted} == {MachineState.RUNNING}

    good = [regs[2] << 16 | regs[3] for regs in run_a.polls]
    assert good[-1] > good[0], "the blender made good units (no wrap at this rate)"
    for previous, regs, before, after in zip(
        run_a.polls, run_a.polls[1:], good, good[1:], strict=False
    ):
        assert after >= before
        if after > before:
            assert MachineState.RUNNING in (previous[0], regs[0]), (previous, regs)


async def test_press_counter_wraps_at_the_rollover(run_a: Recording) -> None:
    goods = [value for name, value, _ in run_a.replay() if name == "Good"]
    wraps = [(a, b) for a, b in itertools.pairwise(goods) if b < a]
    assert wraps, f"no wrap at {ROLLOVER} in {len(goods)} good counts"
    for before, after in wraps:
        assert (after - before) % ROLLOVER < 100, "a wrap is a small step forward modulo rollover"
    assert all(0 <= value < ROLLOVER for value in goods)


async def test_states_include_jams_with_alarms_raised_and_cleared(run_a: Recording) -> None:
    changes = run_a.press_changes()
    assert (MachineState.DOWN, "Jam") in {(state, reason) for state, reason, *_ in changes}
    assert (MachineState.DOWN, Reason.JAM) in run_a.blender_changes()
    alarms = [(value, before) for name, value, before in run_a.replay() if name == "AlarmActive"]
    raised = [before for value, before in alarms if value]
    cleared = [before for value, before in alarms if not value]
    assert raised, "the seeded run raises an alarm on a jam"
    for before in raised:
        assert (before["State"], before["StateReason"]) == (MachineState.DOWN, "Jam")
        assert before["AlarmCode"] in {"MOTOR_OVERLOAD", "GUARD_OPEN"}
    assert len(cleared) >= len(raised) - 1, "every alarm but a current one was cleared"
    for before in cleared:
        assert before["State"] == MachineState.DOWN, "cleared when the jam ends"


async def test_published_changes_are_the_seeded_model(run_a: Recording) -> None:
    observed = run_a.press_changes()[:PRESS_CHANGES]
    expected = [change_tuple(s) for s in PRESS_MODEL_CHANGES]
    assert observed == aligned(observed, expected, PRESS_CHANGES)

    blender = run_a.blender_changes()
    expected_blender = [(s.state, s.reason) for s in BLENDER_MODEL_CHANGES]
    assert blender == aligned(blender, expected_blender, len(blender))


async def test_same_seed_gives_the_same_first_state_changes(
    run_a: Recording, run_b: Recording
) -> None:
    first_a = run_a.press_changes()[:PRESS_CHANGES]
    first_b = run_b.press_changes()[:PRESS_CHANGES]
    assert len(first_a) == len(first_b) == PRESS_CHANGES
    assert first_a == first_b
    assert run_a.blender_changes()[:BLENDER_CHANGES] == run_b.blender_changes()[:BLENDER_CHANGES]


async def test_a_restarted_simulator_counts_from_zero_again(
    run_a: Recording, run_b: Recording
) -> None:
    last_a = run_a.polls[-1]
    first_b = run_b.first_registers
    assert first_b[2] << 16 | first_b[3] < last_a[2] << 16 | last_a[3]
    # B's first reads are the model's values at some tick since B started: its counters began at 0.
    early = range(run_b.max_ticks_at_first_read + 1)
    assert run_b.first_press in [press_tuple(PRESS_TICKS[t]) for t in early]
    assert first_b in [registers(BLENDER_TICKS[t]) for t in early]


async def test_sigterm_and_sigint_stop_it_cleanly_and_quickly(
    run_a: Recording, run_b: Recording
) -> None:
    assert (run_a.exit_code, run_b.exit_code) == (0, 0)
    # Typically 0.2-0.9 s, most of it the interpreter's own teardown; bounded for a busy CI host.
    assert run_a.stop_seconds < 5
    assert run_b.stop_seconds < 5, "a connected client does not hold up the shutdown"
    assert (run_a.stderr, run_b.stderr) == ("", "")


async def test_a_busy_port_or_bad_argument_is_one_line_and_exit_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args, message in (
            (["--modbus-port", str(port)], f"cannot serve Modbus TCP on 127.0.0.1:{port}"),
            (["--speed", "0"], "--speed must be above 0"),
        ):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "equipment_bridge.simulators.run",
                "--opcua-port", str(free_port()),
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                out, err = await asyncio.wait_for(process.communicate(), 20)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            assert process.returncode == 1
            assert out == b""
            lines = err.decode().splitlines()
            assert len(lines) == 1, lines
            assert message in lines[0]
