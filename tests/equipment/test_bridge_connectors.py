"""The connectors against real OPC UA (asyncua) and Modbus TCP (pymodbus) servers on
loopback, through the real pipeline into the outbox. The servers here are minimal stand-ins
with the spec's variables/registers, driven directly by the tests (the simulators of
`mes simulate` are tested on their own)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.server import Server
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from equipment_bridge.app import Pipeline
from equipment_bridge.config import ModbusEquipment, OpcUaEquipment, parse_config
from equipment_bridge.connectors.modbus import ModbusConnector, channels_of, plan_blocks
from equipment_bridge.connectors.opcua import OpcUaConnector
from equipment_bridge.outbox import Outbox

DT = AsyncModbusTcpClient.DATATYPE
STATES = {1: "RUNNING", 2: "IDLE", 3: "DOWN", 4: "PLANNED_STOP", 5: "SETUP"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine(eq: dict[str, Any]) -> Any:
    config = parse_config(
        {
            "bridge": {
                "id": "t",
                "outbox": {"path": "x.sqlite"},
                "mes": {"url": "http://127.0.0.1/graphql", "token_env": "T"},
            },
            "equipment": [eq],
        },
        {},
    )
    return config.equipment[0]


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


@pytest.fixture
async def tasks() -> AsyncIterator[list[asyncio.Task[None]]]:
    running: list[asyncio.Task[None]] = []
    yield running
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def bodies(outbox: Outbox, code: str) -> list[dict[str, Any]]:
    return [p.body for p in outbox.peek(100_000) if p.body["equipmentCode"] == code]


def total(outbox: Outbox, code: str, counter: str) -> int:
    return sum(
        b["increment"]
        for b in bodies(outbox, code)
        if b["kind"] == "COUNTER" and b["counter"] == counter
    )


def comm(outbox: Outbox, code: str) -> list[bool]:
    return [
        b["alarmActive"]
        for b in bodies(outbox, code)
        if b["kind"] == "ALARM" and b["alarmCode"] == "COMM_LOSS"
    ]


def states(outbox: Outbox, code: str) -> list[tuple[str, str | None]]:
    return [(b["state"], b.get("reason")) for b in bodies(outbox, code) if b["kind"] == "STATE"]


async def until(check: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- Modbus TCP


class ModbusMachine:
    """A Modbus TCP device with the blender's holding registers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: ModbusTcpServer | None = None

    async def start(self, good: int = 0, state: int = 1) -> None:
        device = SimDevice(
            id=1, simdata=[SimData(address=0, count=20, values=0, datatype=DataType.REGISTERS)]
        )
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)
        await self.set(0, [state, 0])
        await self.set_good(good)

    async def set(self, address: int, words: list[int]) -> None:
        assert self.server is not None
        await self.server.async_setValues(1, 3, address, words)

    async def set_good(self, value: int) -> None:
        await self.set(2, AsyncModbusTcpClient.convert_to_registers(value, DT.UINT32))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


@pytest.fixture
async def modbus_machine() -> AsyncIterator[ModbusMachine]:
    device = ModbusMachine(free_port())
    yield device
    await device.stop()


def blender(port: int, **extra_signals: Any) -> ModbusEquipment:
    eq = machine(
        {
            "code": "BLENDER-01",
            "protocol": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "poll_ms": 50,
            "timeout_s": 0.3,
            "retries": 0,
            "backoff": {"base_s": 0.05, "cap_s": 0.2},
            "signals": {
                "state": {
                    "kind": "STATE",
                    "address": 0,
                    "map": STATES,
                    "reason": {"address": 1, "map": {0: None, 1: "Jam", 3: "Break"}},
                },
                "good": {
                    "kind": "COUNTER",
                    "address": 2,
                    "type": "UINT32",
                    "counter": "good",
                    "rollover": 1000,
                    "max_per_s": 500,
                },
                "alarm": {
                    "kind": "ALARM",
                    "code": {"address": 7},
                    "active": {"address": 8},
                    "map": {101: {"code": "MOTOR_OVERLOAD", "message": "Motor overload"}},
                },
                **extra_signals,
            },
        }
    )
    assert isinstance(eq, ModbusEquipment)
    return eq


def test_register_blocks_are_planned_within_125_registers() -> None:
    eq = blender(
        5020,
        far={"kind": "VALUE", "address": 200, "type": "FLOAT32"},
        big={"kind": "VALUE", "table": "input", "address": 0, "type": "FLOAT64"},
    )
    blocks = plan_blocks([register for _, register in channels_of(eq)])
    assert [(b.table, b.address, b.count) for b in blocks] == [
        ("holding", 0, 9),  # state, reason, good (2 registers), alarm code 7 and active 8
        ("holding", 200, 2),
        ("input", 0, 4),
    ]


async def test_modbus_counts_states_alarms_and_survives_a_device_restart(
    modbus_machine: ModbusMachine, outbox: Outbox, tasks: list[asyncio.Task[None]]
) -> None:
    await modbus_machine.start(good=990)
    eq = blender(modbus_machine.port)
    tasks.append(asyncio.create_task(ModbusConnector(eq, Pipeline(eq, outbox)).run()))
    await until(lambda: states(outbox, "BLENDER-01") == [("RUNNING", None)], what="first state")

    await modbus_machine.set_good(995)
    await until(lambda: total(outbox, "BLENDER-01", "good") == 5)
    await modbus_machine.set_good(7)  # rolled over at 1000
    await until(lambda: total(outbox, "BLENDER-01", "good") == 17)
    await modbus_machine.set(0, [3, 1])
    await modbus_machine.set(7, [101, 1])
    await until(lambda: states(outbox, "BLENDER-01")[-1] == ("DOWN", "Jam"))
    await until(
        lambda: any(b.get("alarmCode") == "MOTOR_OVERLOAD" for b in bodies(outbox, "BLENDER-01"))
    )

    # The device restarts: link lost (an alarm, not a state), then back with its counter at 3.
    await modbus_machine.stop()
    await until(lambda: comm(outbox, "BLENDER-01") == [True], what="COMM_LOSS raised")
    await modbus_machine.start(good=3, state=1)
    await until(lambda: comm(outbox, "BLENDER-01") == [True, False], what="COMM_LOSS cleared")
    await until(lambda: total(outbox, "BLENDER-01", "good") == 20)
    assert [s for s, _ in states(outbox, "BLENDER-01")] == ["RUNNING", "DOWN", "RUNNING"]
    assert "OFFLINE" not in [s for s, _ in states(outbox, "BLENDER-01")]


async def test_modbus_device_down_at_start_and_a_missing_register(
    modbus_machine: ModbusMachine, outbox: Outbox, tasks: list[asyncio.Task[None]]
) -> None:
    eq = blender(
        modbus_machine.port,
        ghost={"kind": "VALUE", "address": 15, "type": "FLOAT32"},
        missing={"kind": "VALUE", "address": 600, "type": "UINT16"},
    )
    tasks.append(asyncio.create_task(ModbusConnector(eq, Pipeline(eq, outbox)).run()))
    await until(lambda: comm(outbox, "BLENDER-01") == [True], what="COMM_LOSS while down")
    await asyncio.sleep(0.3)
    await modbus_machine.start(good=40)
    await until(lambda: comm(outbox, "BLENDER-01") == [True, False], what="connected")
    await until(
        lambda: any(b.get("alarmCode") == "CONFIG_ERROR" for b in bodies(outbox, "BLENDER-01"))
    )
    (config_error,) = [
        b for b in bodies(outbox, "BLENDER-01") if b.get("alarmCode") == "CONFIG_ERROR"
    ]
    assert config_error["message"] == (
        "signal missing: the device has no holding register 600 (1 register)"
    )
    # The other signals keep working.
    await modbus_machine.set_good(52)
    await until(lambda: total(outbox, "BLENDER-01", "good") == 12)


# ---------------------------------------------------------------- OPC UA


class OpcUaMachine:
    """An OPC UA server with the press's variables; every write stamps SourceTimestamp."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Server | None = None
        self.nodes: dict[str, Any] = {}

    async def start(self, good: int = 0) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/mes/sim")
        ns = await server.register_namespace("urn:mes:simulator")
        press = await server.nodes.objects.add_object(ua.NodeId("PRESS-01", ns), "PRESS-01")
        for name, vt, value in (
            ("State", ua.VariantType.Int32, 1),
            ("StateReason", ua.VariantType.String, ""),
            ("Good", ua.VariantType.UInt32, good),
            ("Temperature", ua.VariantType.Double, 20.0),
        ):
            self.nodes[name] = (
                await press.add_variable(
                    ua.NodeId(f"PRESS-01.{name}", ns), name, ua.Variant(value, vt)
                ),
                vt,
            )
        self.server = server
        await server.start()
        for name in ("State", "Good"):
            await self.write(name, await self.nodes[name][0].read_value())

    async def write(self, name: str, value: Any) -> None:
        assert self.server is not None
        node, vt = self.nodes[name]
        now = dt.datetime.now(dt.UTC)
        await self.server.write_attribute_value(
            node.nodeid,
            ua.DataValue(ua.Variant(value, vt), SourceTimestamp=now, ServerTimestamp=now),
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


@pytest.fixture
async def opcua_machine() -> AsyncIterator[OpcUaMachine]:
    device = OpcUaMachine(free_port())
    yield device
    await device.stop()


def press(port: int) -> OpcUaEquipment:
    eq = machine(
        {
            "code": "PRESS-01",
            "protocol": "opcua",
            "endpoint": f"opc.tcp://127.0.0.1:{port}/mes/sim",
            "watchdog_s": 0.5,
            "reconnect_max_delay_s": 0.5,
            "backoff": {"base_s": 0.1, "cap_s": 0.3},
            "subscription": {"publishing_ms": 50, "keepalive_count": 10, "lifetime_count": 30},
            "signals": {
                "state": {
                    "kind": "STATE",
                    "node": "ns=2;s=PRESS-01.State",
                    "map": STATES,
                    "reason_node": "ns=2;s=PRESS-01.StateReason",
                },
                "good": {
                    "kind": "COUNTER",
                    "node": "ns=2;s=PRESS-01.Good",
                    "counter": "good",
                    "max_per_s": 1000,
                },
                "temp": {
                    "kind": "VALUE",
                    "node": "ns=2;s=PRESS-01.Temperature",
                    "name": "temperature",
                    "unit": "degC",
                    "deadband": {"absolute": 0.5},
                },
                "ghost": {"kind": "VALUE", "node": "ns=2;s=PRESS-01.NoSuchThing"},
            },
        }
    )
    assert isinstance(eq, OpcUaEquipment)
    return eq


async def test_opcua_first_connect_retry_subscription_and_server_restart(
    opcua_machine: OpcUaMachine, outbox: Outbox, tasks: list[asyncio.Task[None]]
) -> None:
    eq = press(opcua_machine.port)
    tasks.append(asyncio.create_task(OpcUaConnector(eq, Pipeline(eq, outbox)).run()))
    # The server is not there yet: reported, and retried (asyncua never retries a first connect).
    await until(lambda: comm(outbox, "PRESS-01") == [True], what="COMM_LOSS before start")
    await opcua_machine.start(good=100)
    await until(lambda: comm(outbox, "PRESS-01") == [True, False], within=15, what="connect")
    await until(lambda: states(outbox, "PRESS-01") == [("RUNNING", None)])
    (config_error,) = [
        b for b in bodies(outbox, "PRESS-01") if b.get("alarmCode") == "CONFIG_ERROR"
    ]
    assert (
        config_error["message"] == "signal ghost: node ns=2;s=PRESS-01.NoSuchThing: "
        "BadNodeIdUnknown"
    )

    write: Callable[[str, Any], Awaitable[None]] = opcua_machine.write
    for value in range(101, 121):
        await write("Good", value)
    await write("State", 3)
    await write("StateReason", "Jam")
    await write("Temperature", 20.3)  # inside the deadband
    await write("Temperature", 21.0)
    await until(lambda: total(outbox, "PRESS-01", "good") == 20)
    # Every notification arrived, in order (one COUNTER event per change).
    counters = [b for b in bodies(outbox, "PRESS-01") if b["kind"] == "COUNTER"]
    assert [b["increment"] for b in counters] == [1] * 20
    assert [b["occurredAt"] for b in counters] == sorted(b["occurredAt"] for b in counters)
    await until(lambda: states(outbox, "PRESS-01")[-1] == ("DOWN", "Jam"))
    await until(
        lambda: (
            [b["value"] for b in bodies(outbox, "PRESS-01") if b["kind"] == "VALUE"] == [20.0, 21.0]
        )
    )

    # The server goes away and comes back on the same port with its counter restarted at 5.
    await opcua_machine.stop()
    await until(lambda: comm(outbox, "PRESS-01") == [True, False, True], what="loss")
    await opcua_machine.start(good=5)
    await until(
        lambda: comm(outbox, "PRESS-01") == [True, False, True, False], within=15, what="restore"
    )
    await until(lambda: total(outbox, "PRESS-01", "good") == 25)
    await write("Good", 9)
    await until(lambda: total(outbox, "PRESS-01", "good") == 29)
    assert "DOWN" not in [s for s, r in states(outbox, "PRESS-01") if r is None]
