"""Background jobs: the registry, the in-process runner, and a real arq worker on Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import pickle
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis
from arq.connections import RedisSettings
from arq.worker import Worker

from backend.events import InProcessBroadcast, PrefixedBroadcast, RedisBroadcast
from backend.jobs import (
    ArqJobQueue,
    InProcessJobQueue,
    JobContext,
    JobRegistry,
    WorkerSettings,
    create_job_queue,
    registry,
    run_worker,
)
from backend.settings import ConfigurationError, get_settings

REDIS_URL = os.environ.get("MES_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
WAIT = 5.0  # seconds; generous, only reached when a test is failing


@pytest.fixture(scope="module")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {error}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def context() -> JobContext:
    # Jobs here only check that they were handed this database: no connection is made.
    return JobContext(db=cast(Any, SimpleNamespace(name="test db")), broadcast=InProcessBroadcast())


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Lets a test set MES_* variables; the cached settings are dropped before and after."""
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


# Registry


def test_cron_schedules_are_clock_aligned() -> None:
    reg = JobRegistry()

    async def tick(ctx: JobContext) -> None: ...

    five_minutes = reg.cron_job(tick, every_seconds=300, name="five")
    assert five_minutes.minute == {0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55}
    assert five_minutes.second == {0}
    at = dt.datetime(2026, 3, 1, 10, 2, 30, tzinfo=dt.UTC)
    assert five_minutes.next_run(at).replace(microsecond=0) == at.replace(minute=5, second=0)

    assert reg.cron_job(tick, every_seconds=20, name="twenty").second == {0, 20, 40}
    eight_hours = reg.cron_job(tick, every_seconds=8 * 3600, name="shift")
    assert (eight_hours.hour, eight_hours.minute) == ({0, 8, 16}, {0})
    six = reg.cron_job(tick, hour=6, name="six")
    assert (six.hour, six.minute, six.second) == ({6}, {0}, {0})

    with pytest.raises(ValueError, match="divide"):
        reg.cron_job(tick, every_seconds=90, name="bad")
    with pytest.raises(ValueError, match="needs"):
        reg.cron_job(tick, name="unscheduled")

    # arq gets the same schedule, unique per time, with no result kept to block the next id
    arq_five = next(c for c in reg.arq_cron_jobs if c.name == "cron:five")
    assert arq_five.minute == five_minutes.minute
    assert arq_five.unique is True
    assert arq_five.keep_result_s == 0


def test_a_name_belongs_to_one_job() -> None:
    reg = JobRegistry()

    @reg.job
    async def recalculate(ctx: JobContext) -> None: ...

    async def other(ctx: JobContext) -> None: ...

    reg.job(recalculate)  # the same function again (a re-import): accepted
    with pytest.raises(ValueError, match="recalculate"):
        reg.job(name="recalculate")(other)
    assert list(reg.jobs) == ["recalculate"]
    assert [f.name for f in reg.arq_functions] == ["recalculate"]


def test_worker_settings_use_the_application_registry() -> None:
    assert WorkerSettings.functions is registry.arq_functions
    assert WorkerSettings.cron_jobs is registry.arq_cron_jobs


# In-process runner


async def test_in_process_queue_runs_an_enqueued_job(context: JobContext) -> None:
    reg = JobRegistry()
    done = asyncio.Event()
    calls: list[tuple[JobContext, list[str]]] = []

    @reg.job
    async def record(ctx: JobContext, values: list[str]) -> None:
        calls.append((ctx, values))
        done.set()

    queue = InProcessJobQueue(context, registry=reg)
    await queue.start()
    sent = ["a"]
    await queue.enqueue("record", sent)
    sent.append("changed after enqueue")
    await asyncio.wait_for(done.wait(), WAIT)
    await queue.close()

    assert calls == [(context, ["a"])]  # its own copy of the arguments, as in arq


async def test_in_process_queue_refuses_unknown_jobs_and_unpicklable_arguments(
    context: JobContext,
) -> None:
    reg = JobRegistry()

    @reg.job
    async def record(ctx: JobContext, value: Any) -> None: ...

    queue = InProcessJobQueue(context, registry=reg)
    with pytest.raises(LookupError, match="nope"):
        await queue.enqueue("nope")
    with pytest.raises((pickle.PicklingError, AttributeError)):
        await queue.enqueue("record", lambda: None)
    await queue.close()


async def test_a_failing_job_is_logged_and_the_queue_goes_on(
    context: JobContext, caplog: pytest.LogCaptureFixture
) -> None:
    reg = JobRegistry()
    done = asyncio.Event()

    @reg.job
    async def explode(ctx: JobContext) -> None:
        raise RuntimeError("boom")

    @reg.job
    async def finish(ctx: JobContext) -> None:
        done.set()

    queue = InProcessJobQueue(context, registry=reg)
    with caplog.at_level(logging.ERROR, logger="backend.jobs"):
        await queue.enqueue("explode")
        await queue.enqueue("finish")
        await asyncio.wait_for(done.wait(), WAIT)
        await queue.close()
    assert [r.getMessage() for r in caplog.records] == ["job explode failed"]
    assert "boom" in caplog.text


async def test_close_cancels_jobs_still_running_after_the_grace_period(
    context: JobContext,
) -> None:
    reg = JobRegistry()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @reg.job
    async def forever(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    queue = InProcessJobQueue(context, registry=reg, shutdown_grace_seconds=0.05)
    await queue.enqueue("forever")
    await asyncio.wait_for(started.wait(), WAIT)
    await asyncio.wait_for(queue.close(), WAIT)
    assert cancelled.is_set()
    with pytest.raises(RuntimeError, match="closed"):
        await queue.enqueue("forever")


async def test_in_process_queue_runs_cron_jobs_on_a_timer_until_closed(
    context: JobContext,
) -> None:
    reg = JobRegistry()
    ticks: list[JobContext] = []
    ticked = asyncio.Event()

    async def tick(ctx: JobContext) -> None:
        ticks.append(ctx)
        ticked.set()

    reg.cron_job(tick, every_seconds=1)
    queue = InProcessJobQueue(context, registry=reg)
    await queue.start()
    assert ticks == []  # no run_at_startup: the first run waits for the next second
    await asyncio.wait_for(ticked.wait(), 3)
    await asyncio.wait_for(queue.close(), WAIT)

    assert ticks[0] is context
    count = len(ticks)
    await asyncio.sleep(1.2)
    assert len(ticks) == count  # the timer stopped


async def test_create_job_queue_runs_in_process_without_redis(context: JobContext) -> None:
    queue = create_job_queue(None, context)
    assert isinstance(queue, InProcessJobQueue)
    await queue.close()
    assert isinstance(create_job_queue("redis://127.0.0.1:6379/5", context), ArqJobQueue)


# The arq worker


def test_run_worker_needs_redis(settings_env: pytest.MonkeyPatch) -> None:
    settings_env.delenv("MES_REDIS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="MES_REDIS_URL") as error:
        run_worker()
    assert "\n" not in str(error.value)


async def test_worker_startup_and_shutdown_make_and_release_the_job_context(
    settings_env: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    settings_env.setenv("MES_REDIS_URL", "redis://127.0.0.1:6379/5")
    settings_env.setenv("MES_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}")
    ctx: dict[str, Any] = {}
    assert WorkerSettings.on_startup is not None
    assert WorkerSettings.on_shutdown is not None
    await WorkerSettings.on_startup(ctx)
    # Redis events carry the channel prefix of this database (see Settings.channel_prefix).
    assert isinstance(ctx["broadcast"], PrefixedBroadcast)
    assert isinstance(ctx["broadcast"]._inner, RedisBroadcast)
    assert ctx["db"].url.endswith("worker.db")
    await WorkerSettings.on_shutdown(ctx)
    assert ctx == {}


@pytest.mark.redis
# arq 0.28's Worker.close() calls redis-py's deprecated Redis.close()
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_arq_worker_runs_jobs_enqueued_through_arq_job_queue(
    redis_url: str, context: JobContext
) -> None:
    reg = JobRegistry()
    ran: list[tuple[str, Any]] = []

    @reg.job
    async def announce(ctx: JobContext, lot: str) -> None:
        ran.append((lot, ctx.db))
        await ctx.broadcast.publish("lots", {"lot": lot})

    async def hourly(ctx: JobContext) -> None:
        ran.append(("cron", ctx.db))

    # Unique names: arq's cron job ids ("cron:<name>:<time>") are global to the database.
    test_id = uuid.uuid4().hex
    reg.cron_job(hourly, every_seconds=3600, run_at_startup=True, name=f"hourly-{test_id}")

    queue_name = f"mes-test:{test_id}"
    jobs = ArqJobQueue(redis_url, queue_name=queue_name)
    await jobs.start()
    await jobs.enqueue("announce", "L-7")
    await jobs.close()

    worker = Worker(
        functions=reg.arq_functions,
        cron_jobs=reg.arq_cron_jobs,
        queue_name=queue_name,
        redis_settings=RedisSettings.from_dsn(redis_url),
        ctx={"db": context.db, "broadcast": context.broadcast},
        burst=True,
        poll_delay=0,
        handle_signals=False,
        keep_result=0,
    )
    async with context.broadcast.subscribe("lots") as events:
        try:
            await asyncio.wait_for(worker.main(), 30)
        finally:
            await worker.close()
        assert await asyncio.wait_for(anext(events), WAIT) == {"lot": "L-7"}

    assert (worker.jobs_complete, worker.jobs_failed) == (2, 0)
    assert sorted(ran, key=lambda r: r[0]) == [("L-7", context.db), ("cron", context.db)]
