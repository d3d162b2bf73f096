"""The bridge's forwarder against a small fake of the MES's HTTP contract for
`recordEquipmentEvents` (eventId dedupe, per-item errors with `events.N.field`), served by
uvicorn on a loopback port, with programmable faults. The real MES is used by the fault
tests of the whole system; this pins the forwarder's side of the contract."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from equipment_bridge.app import Bridge
from equipment_bridge.config import Backoff, MesConfig, parse_config
from equipment_bridge.events import MachineEvent
from equipment_bridge.forwarder import Forwarder
from equipment_bridge.outbox import Outbox

TOKEN = "equipment-token"
T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


@dataclass
class FakeMes:
    """The MES as the bridge sees it, with faults to order."""

    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    requests: list[list[str]] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    duplicates: int = 0
    token: str = TOKEN
    fail_next: int = 0  # answer HTTP 500 to this many requests
    throttle_next: float | None = None  # answer 429 with this Retry-After once
    delay_after_commit: float = 0.0  # store the next batch, then answer this late (once)
    unknown: set[str] = field(default_factory=set)  # event ids answered NOT_FOUND
    http_status: int | None = None  # answer every request with this status

    async def graphql(self, request: Request) -> Response:
        body = await request.json()
        events: list[dict[str, Any]] = body["variables"]["events"]
        self.requests.append([e["eventId"] for e in events])
        self.request_times.append(time.monotonic())
        assert "recordEquipmentEvents(events: $events)" in body["query"]
        if self.http_status is not None:
            return PlainTextResponse("refused", status_code=self.http_status)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            # What the real MES answers to a bad token: a top-level error, no data.
            return JSONResponse(
                {
                    "data": None,
                    "errors": [
                        {"message": "sign in first", "extensions": {"code": "UNAUTHENTICATED"}}
                    ],
                }
            )
        if self.fail_next > 0:
            self.fail_next -= 1
            return PlainTextResponse("database unavailable", status_code=500)
        if self.throttle_next is not None:
            after, self.throttle_next = self.throttle_next, None
            return PlainTextResponse("slow down", 429, headers={"Retry-After": str(after)})
        bad_state = [i for i, e in enumerate(events) if e.get("state") == "EXPLODED"]
        if bad_state:
            return JSONResponse(
                {
                    "data": None,
                    "errors": [
                        {
                            # graphql-core 3.3's wording, as the real server answers
                            "message": f"Variable '$events' has invalid value at [{i}].state: "
                            f"Value 'EXPLODED' does not exist in 'EquipmentState' enum."
                        }
                        for i in bad_state
                    ],
                }
            )
        accepted, duplicates, errors = 0, 0, []
        for i, event in enumerate(events):
            if event["eventId"] in self.unknown:
                errors.append(
                    {
                        "code": "NOT_FOUND",
                        "message": "no equipment 'GHOST'",
                        "field": f"events.{i}.equipmentCode",
                    }
                )
            elif event["eventId"] in self.stored:
                duplicates += 1
            else:
                self.stored[event["eventId"]] = event
                self.order.append(event["eventId"])
                accepted += 1
        self.duplicates += duplicates
        if self.delay_after_commit:
            delay, self.delay_after_commit = self.delay_after_commit, 0.0
            await asyncio.sleep(delay)
        return JSONResponse(
            {
                "data": {
                    "recordEquipmentEvents": {
                        "accepted": accepted,
                        "duplicates": duplicates,
                        "errors": errors,
                    }
                }
            }
        )


class Served:
    def __init__(self) -> None:
        self.fake = FakeMes()
        app = Starlette(routes=[Route("/graphql", self.route, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            loop="asyncio",
            ws="none",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def route(self, request: Request) -> Response:
        return await self.fake.graphql(request)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the fake MES did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/graphql"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Served, str]]:
    server = Served()
    url = server.start()
    yield server, url
    server.stop()


@pytest.fixture
def mes(served: tuple[Served, str]) -> FakeMes:
    server, _ = served
    server.fake = FakeMes()
    return server.fake


@pytest.fixture
def url(served: tuple[Served, str]) -> str:
    return served[1]


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


def settings(url: str, **overrides: Any) -> MesConfig:
    values: dict[str, Any] = {
        "url": url,
        "token_env": "MES_BRIDGE_TOKEN",
        "batch_max": 500,
        "batch_linger_ms": 20,
        "request_timeout_s": 2.0,
        "backoff": Backoff(base_s=0.01, cap_s=0.05),
        "auth_retry_s": 60,
    }
    values.update(overrides)
    return MesConfig(**values)


def events(start: int, count: int) -> list[MachineEvent]:
    return [
        MachineEvent(
            f"ev-{n:05d}",
            "PRESS-01",
            "COUNTER",
            T0 + dt.timedelta(milliseconds=n),
            {"counter": "good", "increment": 1},
        )
        for n in range(start, start + count)
    ]


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def start(forwarder: Forwarder, running: list[asyncio.Task[None]]) -> None:
    running.append(asyncio.create_task(forwarder.run()))


async def drained(outbox: Outbox, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while outbox.pending_count():
        assert time.monotonic() < deadline, f"{outbox.pending_count()} events still waiting"
        await asyncio.sleep(0.02)


async def test_batches_go_in_order_and_at_most_500(
    mes: FakeMes, url: str, outbox: Outbox, running: list[asyncio.Task[None]]
) -> None:
    for start_at in (0, 400, 800):
        outbox.append(events(start_at, 400))
    forwarder = Forwarder(outbox, settings(url), TOKEN)
    start(forwarder, running)
    await drained(outbox)

    assert [len(r) for r in mes.requests] == [500, 500, 200]
    assert mes.order == [f"ev-{n:05d}" for n in range(1200)]
    assert mes.duplicates == 0
    # Events arriving while it runs go out too, after the earlier ones.
    outbox.append(events(1200, 3))
    forwarder.notify()
    await drained(outbox)
    assert mes.order[-3:] == ["ev-01200", "ev-01201", "ev-01202"]
    assert len(mes.stored) == 1203


async def test_a_refused_event_is_quarantined_alone(
    mes: FakeMes, url: str, outbox: Outbox, running: list[asyncio.Task[None]]
) -> None:
    outbox.append(events(0, 500))
    mes.unknown = {"ev-00137"}
    start(Forwarder(outbox, settings(url), TOKEN), running)
    await drained(outbox)

    assert len(mes.requests) == 1  # not retried: the other 499 were stored
    assert len(mes.stored) == 499
    assert "ev-00137" not in mes.stored
    (kept,) = outbox.quarantined()
    assert (kept.event_id, kept.code, kept.field) == (
        "ev-00137",
        "NOT_FOUND",
        "events.137.equipmentCode",
    )
    assert kept.message == "no equipment 'GHOST'"


async def test_an_event_the_schema_cannot_parse_is_quarantined_alone(
    mes: FakeMes, url: str, outbox: Outbox, running: list[asyncio.Task[None]]
) -> None:
    batch = events(0, 5)
    batch[2] = MachineEvent("ev-bad", "PRESS-01", "STATE", T0, {"state": "EXPLODED"})
    outbox.append(batch)
    start(Forwarder(outbox, settings(url), TOKEN), running)
    await drained(outbox)

    assert sorted(mes.stored) == ["ev-00000", "ev-00001", "ev-00003", "ev-00004"]
    (kept,) = outbox.quarantined()
    assert (kept.event_id, kept.code, kept.field) == ("ev-bad", "INVALID_INPUT", "events.2")


async def test_server_errors_are_retried_and_every_event_arrives_once(
    mes: FakeMes, url: str, outbox: Outbox, running: list[asyncio.Task[None]]
) -> None:
    outbox.append(events(0, 300))
    mes.fail_next = 3
    forwarder = Forwarder(outbox, settings(url), TOKEN)
    start(forwarder, running)
    await drained(outbox)

    assert len(mes.requests) == 4
    # The same batch, with the same ids, each time.
    assert all(r == mes.requests[0] for r in mes.requests)
    assert sorted(mes.stored) == [f"ev-{n:05d}" for n in range(300)]
    assert mes.duplicates == 0
    assert forwarder.stats.failures == 3
    assert forwarder.stats.accepted == 300


async def test_a_timeout_after_the_commit_is_resent_and_counted_as_duplicates(
    mes: FakeMes, url: str, outbox: Outbox, running: list[asyncio.Task[None]]
) -> None:
    outbox.append(events(0, 700))
    mes.delay_after_commit = 1.5  # the first batch is stored, then the answer is too late
    forwarder = Forwarder(outbox, settings(url, request_timeout_s=0.5), TOKEN)
    start(forwarder, running)
    await drained(outbox)

    assert [len(r) for r in mes.requests] == [500, 500, 200]
    assert mes.requests[0] == mes.requests[1]
    assert mes.duplicates == 500  # the resend changed nothing
    assert len(mes.stored) == 700  # exact totals
    assert sum(e["increment"] for e in mes.stored.values()) == 700
    assert mes.order == [f"ev-{n:05d}" for n in range(700)]
    assert forwarder.stats.duplicates == 500


async def test_retry_after_is_honoured(
    mes: FakeMes, url: str, outbox: Outbox, running: list[asyncio.Task[None]]
) -> None:
    outbox.append(events(0, 10))
    mes.throttle_next = 0.4
    start(Forwarder(outbox, settings(url), TOKEN), running)
    await drained(outbox)

    assert len(mes.requests) == 2
    assert mes.request_times[1] - mes.request_times[0] >= 0.4
    assert len(mes.stored) == 10


async def test_a_refused_token_stops_sending_and_keeps_the_events(
    mes: FakeMes, url: str, outbox: Outbox, running: list[asyncio.Task[None]]
) -> None:
    outbox.append(events(0, 50))
    mes.token = "another-token"
    forwarder = Forwarder(outbox, settings(url, auth_retry_s=0.6), TOKEN)
    start(forwarder, running)
    deadline = time.monotonic() + 5
    while not forwarder.auth_blocked:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    outbox.append(events(50, 5))
    forwarder.notify()
    await asyncio.sleep(0.3)

    assert len(mes.requests) == 1  # no hammering with a bad token
    assert mes.stored == {}
    assert outbox.pending_count() == 55

    # The token is accepted again: after auth_retry_s, everything goes, once.
    mes.token = TOKEN
    await drained(outbox)
    assert len(mes.stored) == 55
    assert forwarder.auth_blocked is False


async def test_http_401_stops_sending(
    mes: FakeMes, url: str, outbox: Outbox, running: list[asyncio.Task[None]]
) -> None:
    # A proxy in front of the MES may refuse the token with HTTP 401 itself.
    mes.http_status = 401
    outbox.append(events(0, 5))
    forwarder = Forwarder(outbox, settings(url), TOKEN)
    start(forwarder, running)
    await asyncio.sleep(0.4)

    assert forwarder.auth_blocked
    assert len(mes.requests) == 1
    assert mes.stored == {}
    assert outbox.pending_count() == 5
    assert outbox.quarantined() == []


async def test_the_whole_bridge_delivers_a_machines_counts_exactly(
    mes: FakeMes, url: str, tmp_path: Path
) -> None:
    """Config → Modbus connector → pipeline → outbox → forwarder → MES, through Bridge.run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    device = ModbusTcpServer(
        SimDevice(
            id=1, simdata=[SimData(address=0, count=10, values=0, datatype=DataType.REGISTERS)]
        ),
        address=("127.0.0.1", port),
    )
    await device.serve_forever(background=True)
    words = AsyncModbusTcpClient.convert_to_registers
    uint32 = AsyncModbusTcpClient.DATATYPE.UINT32
    await device.async_setValues(1, 3, 0, [1, 0, *words(1000, uint32)])
    config = parse_config(
        {
            "bridge": {
                "id": "e2e",
                "outbox": {"path": str(tmp_path / "outbox.sqlite")},
                "mes": {
                    "url": url,
                    "token_env": "MES_BRIDGE_TOKEN",
                    "batch_linger_ms": 20,
                    "backoff": {"base_s": 0.01, "cap_s": 0.05},
                },
            },
            "equipment": [
                {
                    "code": "BLENDER-01",
                    "protocol": "modbus_tcp",
                    "host": "127.0.0.1",
                    "port": port,
                    "poll_ms": 30,
                    "timeout_s": 0.3,
                    "retries": 0,
                    "signals": {
                        "state": {"kind": "STATE", "address": 0, "map": {1: "RUNNING", 3: "DOWN"}},
                        "good": {
                            "kind": "COUNTER",
                            "address": 2,
                            "type": "UINT32",
                            "counter": "good",
                        },
                    },
                }
            ],
        },
        {},
    )
    stop = asyncio.Event()
    bridge = Bridge(config, TOKEN)
    run = asyncio.create_task(bridge.run(stop))

    def delivered() -> int:
        return sum(e.get("increment", 0) for e in list(mes.stored.values()))

    try:
        # The first sample is the counter's baseline: count from when the bridge is in.
        deadline = time.monotonic() + 10
        while not any(e["kind"] == "STATE" for e in list(mes.stored.values())):
            assert time.monotonic() < deadline, "the bridge did not report the machine"
            await asyncio.sleep(0.02)
        for value in range(1001, 1041):
            await device.async_setValues(1, 3, 2, words(value, uint32))
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 10
        while delivered() < 40:
            assert time.monotonic() < deadline, f"only {delivered()} counted"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
        await device.shutdown()
    assert delivered() == 40
    kinds = [e["kind"] for e in mes.stored.values()]
    assert kinds.count("STATE") == 1
    assert mes.duplicates == 0
    # The outbox was closed cleanly, and holds nothing unsent.
    outbox = Outbox(tmp_path / "outbox.sqlite")
    try:
        assert outbox.pending_count() == 0
    finally:
        outbox.close()


def _bridge_config(tmp_path: Path, mes_url: str) -> Any:
    """One machine nobody answers for (a closed port), the outbox in tmp_path."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    return parse_config(
        {
            "bridge": {
                "id": "stop",
                "outbox": {"path": str(tmp_path / "outbox.sqlite")},
                "mes": {
                    "url": mes_url,
                    "token_env": "MES_BRIDGE_TOKEN",
                    "batch_linger_ms": 20,
                    "backoff": {"base_s": 0.01, "cap_s": 0.05},
                },
            },
            "equipment": [
                {
                    "code": "PRESS-01",
                    "protocol": "modbus_tcp",
                    "host": "127.0.0.1",
                    "port": closed,
                    "poll_ms": 30,
                    "timeout_s": 0.3,
                    "retries": 0,
                    "signals": {"t": {"kind": "VALUE", "address": 0}},
                }
            ],
        },
        {},
    )


async def test_a_planned_stop_sends_what_waits_when_the_mes_answers(
    mes: FakeMes, url: str, tmp_path: Path
) -> None:
    """Events written just before the stop are sent before the bridge ends."""
    config = _bridge_config(tmp_path, url)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.append(events(0, 30))
    outbox.close()
    stop = asyncio.Event()
    stop.set()  # stop at once: only the drain can send them
    await asyncio.wait_for(Bridge(config, TOKEN).run(stop), 10)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    try:
        assert outbox.pending_count() == 0
    finally:
        outbox.close()
    assert sorted(mes.stored) == [f"ev-{n:05d}" for n in range(30)]


async def test_a_planned_stop_keeps_what_waits_when_the_mes_is_down(tmp_path: Path) -> None:
    """With the MES unreachable the stop waits a bounded time, and nothing is lost."""
    from equipment_bridge.app import DRAIN_S

    config = _bridge_config(tmp_path, "http://127.0.0.1:9/graphql")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.append(events(0, 30))
    outbox.close()
    stop = asyncio.Event()
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(Bridge(config, TOKEN).run(stop), DRAIN_S + 8)
    assert time.monotonic() - started >= DRAIN_S  # it did try
    outbox = Outbox(tmp_path / "outbox.sqlite")
    try:
        assert outbox.pending_count() == 30
    finally:
        outbox.close()
