"""`deviationChanged`, the supervisors' inbox: it fires when a deviation is raised (by hand or
by a failed inspection) and when it is decided, filtered by status, with the deviation as
committed; a refused decision announces nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import strawberry
from quality_support import DEVIATION, Desk, codes, result

from backend.events import Broadcast
from backend.gql import Context, Services
from backend.graphql import build_schema
from backend.principal import Principal, Role
from backend.settings import Settings

pytestmark = pytest.mark.usefixtures("po1")

WAIT = 5.0  # seconds; only reached when a test is failing
QUIET = 0.3  # how long "nothing arrives" is watched for

SUBSCRIPTION = f"""
subscription Inbox($status: [DeviationStatus!]) {{
  deviationChanged(status: $status) {{ {DEVIATION} }}
}}
"""


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
        deviation: dict[str, Any] = result.data["deviationChanged"]
        return deviation

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
    """`await subscribe(statuses)`: a supervisor's inbox, returned once it listens."""
    services: Services = app.state.services
    isolated = Isolated(services.broadcast)
    app.state.services = dataclasses.replace(services, broadcast=isolated)
    opened: list[Subscriber] = []

    async def start(status: list[str] | None = None) -> Subscriber:
        isolated.subscribed.clear()
        context = Context(
            services=app.state.services,
            principal=Principal(name="sue", roles=frozenset({Role.SUPERVISOR}), user_id=1),
        )
        stream = await schema.subscribe(SUBSCRIPTION, {"status": status}, context_value=context)
        subscriber = Subscriber(stream)  # type: ignore[arg-type]
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


async def test_it_fires_on_raise_and_on_decisions_filtered_by_status(
    otto: Desk, sue: Desk, subscribe: Any
) -> None:
    inbox = await subscribe(["OPEN"])
    decided = await subscribe(["APPROVED", "REJECTED"])
    everything = await subscribe()
    await otto.receive("L-1", "RM-1")

    raised = (await otto.raise_deviation("Dented drum", ["L-1"]))["deviation"]
    event = await inbox.next()
    assert event == raised
    assert (event["status"], event["lots"]) == ("OPEN", [{"number": "L-1", "status": "ON_HOLD"}])
    assert (await everything.next())["status"] == "OPEN"
    await decided.nothing()

    approved = (await sue.approve(raised["number"], disposition="USE_AS_IS"))["deviation"]
    event = await decided.next()
    assert event == approved
    assert (event["status"], event["disposition"]) == ("APPROVED", "USE_AS_IS")
    assert event["lots"] == [{"number": "L-1", "status": "AVAILABLE"}]
    assert [s["signer"]["username"] for s in event["signatures"]] == ["sue"]
    assert (await everything.next())["status"] == "APPROVED"
    await inbox.nothing()

    other = await otto.ok_raise("Torn label")
    assert (await inbox.next())["number"] == other
    assert (await everything.next())["number"] == other
    rejected = (await sue.reject(other))["deviation"]
    assert await decided.next() == rejected
    assert (await everything.next())["status"] == "REJECTED"
    await inbox.nothing()


async def test_a_failed_inspection_lands_in_the_inbox(quinn: Desk, subscribe: Any) -> None:
    inbox = await subscribe(["OPEN"])
    number = await quinn.ok_start(order="PO-1", sequence=10)

    payload = await quinn.ok_record(
        number, [result("Viscosity", 0.5), result("Seal intact", passed=True)]
    )

    event = await inbox.next()
    assert event["number"] == payload["deviation"]["number"]
    assert (event["source"], event["inspection"]) == (
        "INSPECTION",
        {"number": number, "status": "FAILED"},
    )


async def test_a_refused_decision_announces_nothing(
    otto: Desk, sue: Desk, quinn: Desk, subscribe: Any
) -> None:
    number = await quinn.ok_raise("Dented drum")
    everything = await subscribe()

    assert codes(await sue.approve(number, password="wrong password")) == [
        ("SIGNATURE_INVALID", "signature.password")
    ]
    assert codes(await quinn.approve(number)) == [("SELF_APPROVAL", None)]
    assert codes(await sue.approve(number, disposition=None)) == [("INVALID_INPUT", "disposition")]

    await everything.nothing()
