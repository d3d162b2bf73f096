"""lotChanged (schema level), the expiry job called directly, and the job run by a real arq
worker against Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
import strawberry
from arq.connections import RedisSettings
from arq.worker import Worker
from lots_support import Floor, codes, expire_in_past, lot_row, make_order, set_lot
from sqlalchemy import select

from backend.audit.models import AuditEntry
from backend.db import Database
from backend.events import Broadcast
from backend.gql import Context, Services
from backend.graphql import build_schema
from backend.jobs import JobContext, JobRegistry, registry
from backend.lots.models import LotStatus
from backend.lots.tasks import expire_lots
from backend.principal import Principal, Role
from backend.settings import Settings

pytestmark = pytest.mark.usefixtures("plant")

REDIS_URL = os.environ.get("MES_TEST_REDIS_URL")

WAIT = 5.0  # seconds; only reached when a test is failing
QUIET = 0.3  # how long "nothing arrives" is watched for

SUBSCRIPTION = """
subscription Changed($number: String) {
  lotChanged(number: $number) { number status quantity material { code } producedBy { number } }
}
"""


class Namespaced:
    """A broadcast whose channels carry a prefix of their own.

    Redis pub/sub channels are global to a Redis server (whatever the database number), so
    other test runs sharing the server would otherwise reach these subscribers.
    """

    def __init__(self, inner: Broadcast, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        await self.inner.publish(self.prefix + channel, payload)

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return self.inner.subscribe(self.prefix + channel)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        """The app closes the real broadcast."""


@pytest.fixture(autouse=True)
def private_channels(app: Any) -> Iterator[None]:
    """The app publishes and the tests subscribe on channels no other run uses."""
    services: Services = app.state.services
    prefix = f"test-{uuid.uuid4().hex}:"
    app.state.services = dataclasses.replace(
        services, broadcast=Namespaced(services.broadcast, prefix)
    )
    yield
    app.state.services = services


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
        lot: dict[str, Any] = result.data["lotChanged"]
        return lot

    async def seen(self, count: int) -> list[tuple[str, str, Decimal]]:
        """The next `count` results as (number, status, quantity)."""
        return [
            (lot["number"], lot["status"], Decimal(lot["quantity"]))
            for lot in [await self.next() for _ in range(count)]
        ]

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
    """`await subscribe(number)`: a supervisor's lotChanged, returned once it listens."""
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


def job_context(app: Any) -> JobContext:
    services: Services = app.state.services
    return JobContext(db=services.db, broadcast=services.broadcast)


async def test_lot_changed_fires_on_receive_scan_and_produce_with_the_committed_lot(
    floor: Floor, erp: Any, subscribe: Any
) -> None:
    await make_order(erp, "PO-B", [("RM-1", "100")], product="INT-1")
    every = await subscribe()
    only_a = await subscribe("L-A")

    # Events are hints: a subscriber shows the lot as committed when it reads the hint, so
    # each change is read before the next is made.
    steps: list[tuple[Callable[[], Awaitable[Any]], tuple[str, str, Decimal]]] = [
        (lambda: floor.ok_receive("L-A", "RM-1", "50"), ("L-A", "AVAILABLE", Decimal(50))),
        (lambda: floor.ok_receive("L-Q", "RM-Q", "5"), ("L-Q", "QUARANTINE", Decimal(5))),
        (lambda: floor.ok_scan("L-A", "PO-B", quantity="20"), ("L-A", "AVAILABLE", Decimal(30))),
        (lambda: floor.ok_scan("L-A", "PO-B"), ("L-A", "CONSUMED", Decimal(0))),  # the rest of it
        (lambda: floor.ok_produce("PO-B", "70"), ("PO-B-001", "AVAILABLE", Decimal(70))),
    ]
    for change, expected in steps:
        await change()
        assert await every.seen(1) == [expected]
        if expected[0] == "L-A":
            assert await only_a.seen(1) == [expected]
    await only_a.nothing()


async def test_lot_changed_shows_the_product_and_its_order(
    floor: Floor, erp: Any, subscribe: Any
) -> None:
    await make_order(erp, "PO-B", [("RM-1", "100")], product="INT-1")
    watcher = await subscribe("PO-B-001")
    await floor.ok_produce("PO-B", "70")
    lot = await watcher.next()
    assert lot["material"] == {"code": "INT-1"}
    assert lot["producedBy"] == {"number": "PO-B"}


async def test_a_refused_or_replayed_change_fires_nothing(
    floor: Floor, subscribe: Any, po1: str
) -> None:
    await floor.ok_receive("L-A", "RM-1", "50", cmid="r-1")
    watcher = await subscribe()
    payload = await floor.scan("L-A", quantity="51")
    assert codes(payload) == [("INSUFFICIENT_QUANTITY", "quantity")]
    payload = await floor.receive("L-A", "RM-1", "50", cmid="r-1")  # a resend
    assert payload["errors"] == []
    await watcher.nothing()


async def test_the_expiry_job_expires_available_and_quarantined_lots_only(
    floor: Floor, app: Any, db: Database, subscribe: Any
) -> None:
    for number, material in (
        ("L-AVAIL", "RM-1"),
        ("L-QUAR", "RM-Q"),
        ("L-HOLD", "RM-1"),
        ("L-USED", "RM-1"),
        ("L-LATER", "RM-1"),
        ("L-NEVER", "RM-2"),  # no shelf life: never expires
    ):
        await floor.ok_receive(number, material, "10")
    await set_lot(db, "L-HOLD", status=LotStatus.ON_HOLD)
    await set_lot(db, "L-USED", status=LotStatus.CONSUMED, quantity=Decimal(0))
    watcher = await subscribe()
    for number in ("L-AVAIL", "L-QUAR", "L-HOLD", "L-USED"):
        await expire_in_past(db, number, dt.timedelta(seconds=1))

    assert await expire_lots(job_context(app)) == 2

    statuses = {n: (await lot_row(db, n)).status.value for n in ("L-AVAIL", "L-QUAR", "L-HOLD")}
    assert statuses == {"L-AVAIL": "EXPIRED", "L-QUAR": "EXPIRED", "L-HOLD": "ON_HOLD"}
    for number in ("L-USED", "L-LATER", "L-NEVER"):
        assert (await lot_row(db, number)).status is not LotStatus.EXPIRED
    assert sorted(await watcher.seen(2)) == [
        ("L-AVAIL", "EXPIRED", Decimal(10)),
        ("L-QUAR", "EXPIRED", Decimal(10)),
    ]
    async with db.read() as session:
        entries = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "lot.expire"))
        )
    assert sorted((e.actor, e.changes["status"][0]) for e in entries if e.changes) == [
        ("system", "AVAILABLE"),
        ("system", "QUARANTINE"),
    ]

    # Again: nothing is due, nothing is written or announced.
    assert await expire_lots(job_context(app)) == 0
    await watcher.nothing()
    async with db.read() as session:
        count = len(
            list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "lot.expire")))
        )
    assert count == 2


def test_the_expiry_job_is_scheduled_every_minute() -> None:
    spec = registry.crons["expire_lots"]
    assert spec.fn is expire_lots
    assert spec.run_at_startup is True
    assert (spec.hour, spec.minute, spec.second) == (None, None, {0})


@pytest.mark.redis
# arq 0.28's Worker.close() calls redis-py's deprecated Redis.close()
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_a_real_arq_worker_expires_lots(
    floor: Floor, app: Any, db: Database, subscribe: Any
) -> None:
    assert REDIS_URL
    await floor.ok_receive("L-OLD", "RM-1", "10")
    await expire_in_past(db, "L-OLD", dt.timedelta(minutes=1))
    watcher = await subscribe("L-OLD")

    # The application's job, under a name of its own: arq's cron job ids are global to Redis.
    test_id = uuid.uuid4().hex
    jobs = JobRegistry()
    jobs.cron_job(expire_lots, every_seconds=60, run_at_startup=True, name=f"expire-{test_id}")
    ctx = job_context(app)
    worker = Worker(
        functions=jobs.arq_functions,
        cron_jobs=jobs.arq_cron_jobs,
        queue_name=f"mes-test:{test_id}",
        redis_settings=RedisSettings.from_dsn(REDIS_URL),
        # What backend.jobs.WorkerSettings' startup puts in arq's context.
        ctx={"db": ctx.db, "broadcast": ctx.broadcast},
        burst=True,
        poll_delay=0,
        handle_signals=False,
        keep_result=0,
    )
    try:
        await asyncio.wait_for(worker.main(), 30)
    finally:
        await worker.close()

    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    assert (await lot_row(db, "L-OLD")).status is LotStatus.EXPIRED
    assert await watcher.seen(1) == [("L-OLD", "EXPIRED", Decimal(10))]
