"""`equipmentEvents` fires for every stored event (never for a duplicate or a rejected one),
filtered by equipment; `equipmentStateChanged` fires when a machine's current state changes
(not for a late event that leaves it), filtered by work center."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import strawberry
from equipment_events_support import (
    EQUIPMENT,
    Caller,
    counter,
    floor_hour,
    make_plant,
    record,
    state,
    value,
)

from backend.events import Broadcast
from backend.gql import Context, Services
from backend.graphql import build_schema
from backend.principal import Principal, Role
from backend.settings import Settings

WAIT = 5.0  # seconds; only reached when a test is failing
QUIET = 0.3  # how long "nothing arrives" is watched for
T0 = floor_hour(dt.datetime.now(dt.UTC)) - dt.timedelta(hours=3)

EVENTS = """
subscription Events($code: String) {
  equipmentEvents(equipmentCode: $code) {
    eventId kind state counter increment equipment { code }
  }
}
"""
STATE_CHANGED = f"""
subscription States($workCenter: String) {{
  equipmentStateChanged(workCenterCode: $workCenter) {{ {EQUIPMENT} }}
}}
"""


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


class Isolated:
    """The app's broadcast (Redis on that leg), tagging what this test run publishes and
    hearing only that: other test runs on the same Redis publish on the same channels.
    Tells the test when a subscription is in place."""

    def __init__(self, inner: Broadcast) -> None:
        self.inner = inner
        self.tag = secrets.token_hex(8)
        self.subscribed = asyncio.Event()

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        await self.inner.publish(channel, {**payload, "testRun": self.tag})

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        async with self.inner.subscribe(channel) as events:

            async def ours() -> AsyncIterator[dict[str, Any]]:
                async for event in events:
                    if event.get("testRun") == self.tag:
                        yield event

            self.subscribed.set()
            yield ours()

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        """The app closes the real broadcast."""


class Subscriber:
    """One running subscription, read one result at a time."""

    def __init__(self, stream: AsyncIterator[Any], field: str) -> None:
        self.stream, self.field = stream, field
        self.pending: asyncio.Future[Any] | None = None

    def _next(self) -> asyncio.Future[Any]:
        if self.pending is None:
            self.pending = asyncio.ensure_future(anext(self.stream))
        return self.pending

    async def next(self) -> dict[str, Any]:
        result = await asyncio.wait_for(asyncio.shield(self._next()), WAIT)
        self.pending = None
        assert result.errors is None, result.errors
        item: dict[str, Any] = result.data[self.field]
        return item

    async def take(self, n: int) -> list[dict[str, Any]]:
        return [await self.next() for _ in range(n)]

    async def nothing(self) -> None:
        done, _ = await asyncio.wait([self._next()], timeout=QUIET)
        assert not done, self._next().result()

    async def close(self) -> None:
        if self.pending is not None:
            self.pending.cancel()
            await asyncio.gather(self.pending, return_exceptions=True)
        await self.stream.aclose()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def schema(settings: Settings) -> strawberry.Schema:
    return build_schema(settings)


@pytest.fixture
async def bridge(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    await make_plant(await as_role(Role.ERP, username="erp"))
    return await as_role(Role.EQUIPMENT, username="bridge")


@pytest.fixture
async def subscribe(app: Any, schema: strawberry.Schema) -> AsyncIterator[Any]:
    """`await subscribe(document, field, variables)`: a supervisor's subscription, returned
    once it listens."""
    services: Services = app.state.services
    isolated = Isolated(services.broadcast)
    app.state.services = dataclasses.replace(services, broadcast=isolated)
    opened: list[Subscriber] = []

    async def start(document: str, field: str, variables: dict[str, Any]) -> Subscriber:
        isolated.subscribed.clear()
        context = Context(
            services=app.state.services,
            principal=Principal(name="sue", roles=frozenset({Role.SUPERVISOR}), user_id=1),
        )
        stream = await schema.subscribe(document, variables, context_value=context)
        subscriber = Subscriber(stream, field)  # type: ignore[arg-type]
        opened.append(subscriber)
        subscriber._next()
        await asyncio.wait_for(isolated.subscribed.wait(), WAIT)
        return subscriber

    try:
        yield start
    finally:
        for subscriber in opened:
            await subscriber.close()
        app.state.services = services


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["eventId"] for e in events]


async def test_equipment_events_fire_for_stored_events_only_filtered_by_machine(
    bridge: Caller, subscribe: Any
) -> None:
    everything = await subscribe(EVENTS, "equipmentEvents", {"code": None})
    press = await subscribe(EVENTS, "equipmentEvents", {"code": "M-1"})
    padded = await subscribe(EVENTS, "equipmentEvents", {"code": " M-2 "})

    batch = [
        state("e-1", "M-1", at(0), "RUNNING"),
        counter("e-2", "M-1", at(1), "good", 4),
        value("e-3", "M-2", at(1), "speed", 3.5),
        counter("e-1", "M-1", at(2), "good", 9),  # duplicate in the batch
        counter("e-4", "M-1", at(2), "good", -9),  # rejected
        counter("e-5", "NOPE", at(2), "good", 1),  # rejected
    ]
    payload = await record(bridge, batch)
    assert (payload["accepted"], payload["duplicates"]) == (3, 1)

    got = await press.take(2)
    assert ids(got) == ["e-1", "e-2"]
    assert got[0] == {
        "eventId": "e-1",
        "kind": "STATE",
        "state": "RUNNING",
        "counter": None,
        "increment": None,
        "equipment": {"code": "M-1"},
    }
    assert got[1]["increment"] == 4
    assert ids(await padded.take(1)) == ["e-3"]
    assert ids(await everything.take(3)) == ["e-1", "e-2", "e-3"]
    for subscriber in (everything, press, padded):
        await subscriber.nothing()

    # The same batch again: all duplicates or rejected, nothing to announce.
    payload = await record(bridge, batch)
    assert (payload["accepted"], payload["duplicates"]) == (0, 4)
    await everything.nothing()

    await record(bridge, [counter("e-6", "M-3", at(3), "good", 1)])
    assert ids(await everything.take(1)) == ["e-6"]
    await press.nothing()
    await padded.nothing()


async def test_no_subscriber_misses_an_event_of_a_big_batch(bridge: Caller, subscribe: Any) -> None:
    press = await subscribe(EVENTS, "equipmentEvents", {"code": "M-1"})
    batch = [counter(f"c-{i}", "M-1", at(i / 60), "good", 1) for i in range(500)]
    batch += [state(f"s-{i}", "M-2", at(i), "RUNNING") for i in range(5)]
    assert (await record(bridge, batch))["accepted"] == 505
    got = await press.take(500)
    assert sorted(ids(got)) == sorted(f"c-{i}" for i in range(500))
    await press.nothing()


async def test_machines_and_work_centers_created_after_subscribing_are_heard(
    as_role: Callable[..., Awaitable[Caller]], bridge: Caller, subscribe: Any
) -> None:
    machine = await subscribe(EVENTS, "equipmentEvents", {"code": "M-9"})
    center = await subscribe(STATE_CHANGED, "equipmentStateChanged", {"workCenter": "WC-9"})
    # Before they exist, nothing passes for them: not a new machine elsewhere, nor an old one.
    await make_plant(
        await as_role(Role.ERP),
        [{"code": "WC-1", "name": "Tableting", "equipment": [{"code": "M-4", "name": "Spare"}]}],
    )
    await record(
        bridge, [state("s-1", "M-1", at(0), "RUNNING"), state("s-2", "M-4", at(0), "RUNNING")]
    )
    await machine.nothing()
    await center.nothing()

    await make_plant(
        await as_role(Role.ERP),
        [{"code": "WC-9", "name": "New line", "equipment": [{"code": "M-9", "name": "Press 9"}]}],
    )
    await record(bridge, [state("s-1", "M-9", at(0), "DOWN", "commissioning")])
    assert ids(await machine.take(1)) == ["s-1"]
    found = await center.next()
    assert (found["code"], found["state"], found["workCenter"]) == ("M-9", "DOWN", {"code": "WC-9"})


async def test_state_changed_fires_when_the_current_state_changes(
    bridge: Caller, subscribe: Any
) -> None:
    tableting = await subscribe(STATE_CHANGED, "equipmentStateChanged", {"workCenter": "WC-1"})
    packing = await subscribe(STATE_CHANGED, "equipmentStateChanged", {"workCenter": " WC-2 "})
    everything = await subscribe(STATE_CHANGED, "equipmentStateChanged", {"workCenter": None})
    events = await subscribe(EVENTS, "equipmentEvents", {"code": "M-1"})

    await record(bridge, [state("s-1", "M-1", at(10), "RUNNING")])
    machine = await tableting.next()
    assert (machine["code"], machine["state"], machine["stateReason"]) == ("M-1", "RUNNING", None)
    assert dt.datetime.fromisoformat(machine["stateSince"]) == at(10)
    assert machine["workCenter"] == {"code": "WC-1"}
    assert (await everything.next())["code"] == "M-1"
    await packing.nothing()
    assert ids(await events.take(1)) == ["s-1"]

    # Late: stored and announced as an event, but the current state does not change.
    await record(bridge, [state("s-2", "M-1", at(5), "DOWN", "jam")])
    assert ids(await events.take(1)) == ["s-2"]
    await tableting.nothing()
    await everything.nothing()

    # Newer, with a reason: a change.
    await record(bridge, [state("s-3", "M-1", at(20), "DOWN", "jam")])
    machine = await tableting.next()
    assert (machine["state"], machine["stateReason"]) == ("DOWN", "jam")
    assert (await everything.next())["state"] == "DOWN"

    # Counters and values never change the state.
    await record(
        bridge, [counter("c-1", "M-1", at(21), "good", 1), value("v-1", "M-1", at(21), "t", 1.0)]
    )
    await tableting.nothing()

    # Another work center.
    await record(bridge, [state("s-4", "M-3", at(1), "SETUP")])
    machine = await packing.next()
    assert (machine["code"], machine["state"]) == ("M-3", "SETUP")
    assert (await everything.next())["code"] == "M-3"
    await tableting.nothing()

    # Several STATE events of one machine in one batch: one announcement, of the latest.
    await record(
        bridge,
        [
            state("s-5", "M-1", at(30), "IDLE"),
            state("s-6", "M-1", at(40), "RUNNING"),
            state("s-7", "M-1", at(35), "SETUP"),
            state("s-8", "M-2", at(1), "RUNNING"),
        ],
    )
    announced = await tableting.take(2)
    assert sorted((m["code"], m["state"]) for m in announced) == [
        ("M-1", "RUNNING"),
        ("M-2", "RUNNING"),
    ]
    await tableting.nothing()
    await packing.nothing()
