"""`productionOrderChanged` at the schema level: it fires on create and on every committed
change, filters by number, and yields the order as committed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import strawberry
from orders_support import ACTIONS, ORDER, UPSERT, Caller, order_input

from backend.events import Broadcast
from backend.gql import Context, Services
from backend.graphql import build_schema
from backend.orders import service
from backend.principal import SYSTEM, Principal, Role
from backend.settings import Settings
from backend.uow import transaction

pytestmark = pytest.mark.usefixtures("plant")

WAIT = 5.0  # seconds; only reached when a test is failing
QUIET = 0.3  # how long "nothing arrives" is watched for

SUBSCRIPTION = """
subscription Changed($number: String) {
  productionOrderChanged(number: $number) {
    number status updatedAt
    operations { sequence status }
    components { material { code } }
  }
}
"""


class Watched:
    """The app's broadcast, telling the test when a subscription is in place."""

    def __init__(self, inner: Broadcast) -> None:
        self.inner = inner
        self.subscribed = asyncio.Event()

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        await self.inner.publish(channel, payload)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        async with self.inner.subscribe(channel) as events:
            self.subscribed.set()
            yield events

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        """The app closes the real broadcast."""


class Subscriber:
    """One running subscription, read one result at a time."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self.stream = stream
        self.pending: asyncio.Future[Any] | None = None

    def _next(self) -> asyncio.Future[Any]:
        if self.pending is None:
            self.pending = asyncio.ensure_future(anext(self.stream))
        return self.pending

    async def next(self) -> dict[str, Any]:
        result = await asyncio.wait_for(asyncio.shield(self._next()), WAIT)
        self.pending = None
        assert result.errors is None, result.errors
        order: dict[str, Any] = result.data["productionOrderChanged"]
        return order

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
async def subscribe(app: Any, schema: strawberry.Schema) -> AsyncIterator[Any]:
    """`await subscribe(number)`: a supervisor's subscription, returned once it listens."""
    services: Services = app.state.services
    opened: list[Subscriber] = []

    async def start(number: str | None = None) -> Subscriber:
        watched = Watched(services.broadcast)
        context = Context(
            services=dataclasses.replace(services, broadcast=watched),
            principal=Principal(name="sue", roles=frozenset({Role.SUPERVISOR}), user_id=1),
        )
        stream = await schema.subscribe(SUBSCRIPTION, {"number": number}, context_value=context)
        subscriber = Subscriber(stream)  # type: ignore[arg-type]
        opened.append(subscriber)
        subscriber._next()
        await asyncio.wait_for(watched.subscribed.wait(), WAIT)
        return subscriber

    yield start
    for subscriber in opened:
        await subscriber.close()


async def mutate(erp: Caller, action: str, number: str = "PO-1") -> dict[str, Any]:
    document, defaults = ACTIONS[action]
    body = await erp.data(document, {"number": number, **defaults})
    payload: dict[str, Any] = next(iter(body.values()))
    return payload


async def test_it_fires_on_create_release_and_hold_with_the_committed_order(
    erp: Caller, subscribe: Any
) -> None:
    subscriber = await subscribe("PO-1")

    created = (await erp.data(UPSERT, {"input": order_input()}))["upsertProductionOrder"]["order"]
    event = await subscriber.next()
    assert (event["number"], event["status"]) == ("PO-1", "PLANNED")
    assert event["updatedAt"] == created["updatedAt"]
    assert [c["material"]["code"] for c in event["components"]] == ["RM-1", "RM-2"]
    assert [o["status"] for o in event["operations"]] == ["PENDING", "PENDING"]

    await mutate(erp, "release")
    event = await subscriber.next()
    assert event["status"] == "RELEASED"
    assert [o["status"] for o in event["operations"]] == ["READY", "PENDING"]

    await mutate(erp, "hold")
    event = await subscriber.next()
    stored = (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"]
    assert (event["status"], event["updatedAt"]) == ("ON_HOLD", stored["updatedAt"])
    await subscriber.nothing()


async def test_it_filters_by_number(erp: Caller, subscribe: Any) -> None:
    only_two = await subscribe(" PO-2 ")
    every = await subscribe()

    await erp.data(UPSERT, {"input": order_input("ERP-1", "PO-1")})
    await erp.data(UPSERT, {"input": order_input("ERP-2", "PO-2")})
    await mutate(erp, "release", "PO-1")

    assert (await only_two.next())["number"] == "PO-2"
    await only_two.nothing()
    assert [(await every.next())["number"] for _ in range(3)] == ["PO-1", "PO-2", "PO-1"]


async def test_refused_and_rolled_back_changes_fire_nothing(
    erp: Caller, subscribe: Any, app: Any
) -> None:
    await erp.data(UPSERT, {"input": order_input()})
    subscriber = await subscribe("PO-1")

    refused = await mutate(erp, "resume")  # a PLANNED order cannot be resumed
    assert [e["code"] for e in refused["errors"]] == ["INVALID_TRANSITION"]
    same = await erp.data(UPSERT, {"input": order_input()})  # no change: no event either
    assert same["upsertProductionOrder"]["errors"] == []

    services: Services = app.state.services

    async def release_then_fail() -> None:
        async with transaction(services.db, SYSTEM, services.broadcast) as uow:
            await service.release(uow, "PO-1")
            raise RuntimeError("something failed after the release")

    with pytest.raises(RuntimeError, match="after the release"):
        await release_then_fail()
    await subscriber.nothing()
    assert (await erp.data(ORDER, {"number": "PO-1"}))["productionOrder"]["status"] == "PLANNED"

    await mutate(erp, "cancel")
    assert (await subscriber.next())["status"] == "CANCELLED"


async def test_a_subscription_without_a_principal_is_refused(
    app: Any, schema: strawberry.Schema
) -> None:
    context = Context(services=app.state.services, principal=None)
    stream = await schema.subscribe(SUBSCRIPTION, {}, context_value=context)
    results = [r async for r in stream]  # type: ignore[union-attr]
    assert len(results) == 1
    assert results[0].data is None
    assert "sign in" in results[0].errors[0].message
