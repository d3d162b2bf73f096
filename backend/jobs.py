"""Background jobs: a registry, an in-process runner, and the arq worker.

A job is `async def fn(ctx: JobContext, *args) -> Any`, registered with `@job` (run on
demand: `await job_queue.enqueue("name", *args)`, after the commit) or `cron_job(...)`
(run on a schedule). Jobs live in `backend/<domain>/tasks.py`; `load_job_modules()`
imports those so that the worker and the in-process runner know every job.

Without Redis, `InProcessJobQueue` runs jobs as tasks of the server process. With Redis,
`ArqJobQueue` hands them to arq and `mes worker` runs them, cron jobs included.
arq may run a job again after a worker dies mid-job: make jobs idempotent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import importlib.util
import logging
import pickle
import pkgutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Protocol, TypeVar, overload

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.cron import CronJob, cron, next_cron
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, func
from arq.worker import run_worker as arq_run_worker

import backend
from backend.events import Broadcast, create_broadcast
from backend.settings import ConfigurationError, get_settings

if TYPE_CHECKING:
    from backend.db import Database

logger = logging.getLogger(__name__)

QUEUE_NAME = "mes:queue"
"""The arq queue (a Redis key), named for this project so a shared Redis stays tidy."""

DEFAULT_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class JobContext:
    """What a job receives: the database and the broadcast of the process running it."""

    db: Database
    broadcast: Broadcast


JobFunction = Callable[Concatenate[JobContext, ...], Awaitable[Any]]
F = TypeVar("F", bound=JobFunction)


@dataclass(frozen=True)
class JobSpec:
    """A job run on demand."""

    name: str
    fn: JobFunction
    timeout_seconds: float


@dataclass(eq=False)
class CronSpec:
    """A job run on a schedule, as arq's cron reads it (None means "every")."""

    name: str
    fn: JobFunction
    hour: set[int] | None
    minute: set[int] | None
    second: set[int]
    run_at_startup: bool
    timeout_seconds: float

    def next_run(self, after: dt.datetime) -> dt.datetime:
        """The first scheduled time after `after`, computed exactly as the arq worker does."""
        return next_cron(after, hour=self.hour, minute=self.minute, second=self.second)


def _as_set(value: int | set[int], upper: int, what: str) -> set[int]:
    values = {value} if isinstance(value, int) else set(value)
    if not values or not all(0 <= v < upper for v in values):
        raise ValueError(f"{what} must be within 0..{upper - 1}")
    return values


def _schedule(
    every_seconds: int | None, hour: int | set[int] | None, minute: int | set[int] | None
) -> tuple[set[int] | None, set[int] | None, set[int]]:
    """(hour, minute, second) sets for arq's cron."""
    if every_seconds is not None:
        if hour is not None or minute is not None:
            raise ValueError("give every_seconds, or hour and/or minute, not both")
        n = every_seconds
        # Clock-aligned, as arq's cron can only express: every 300 s is :00, :05, :10 ...
        if n > 0 and 60 % n == 0:
            return None, None, set(range(0, 60, n))
        if n > 0 and n % 60 == 0 and 3600 % n == 0:
            return None, set(range(0, 60, n // 60)), {0}
        if n > 0 and n % 3600 == 0 and 86400 % n == 0:
            return set(range(0, 24, n // 3600)), {0}, {0}
        raise ValueError(f"every_seconds={n} must divide a minute, an hour or a day evenly")
    if hour is None and minute is None:
        raise ValueError("a cron job needs every_seconds, hour or minute")
    hours = None if hour is None else _as_set(hour, 24, "hour")
    # hour=6 alone means 06:00, not every minute from 06:00 to 06:59.
    minutes = {0} if minute is None else _as_set(minute, 60, "minute")
    return hours, minutes, {0}


def _context_from_arq(ctx: dict[Any, Any]) -> JobContext:
    return JobContext(db=ctx["db"], broadcast=ctx["broadcast"])


class JobRegistry:
    """The jobs of the application, by name.

    `arq_functions` and `arq_cron_jobs` are kept in step with `jobs` and `crons`; they are the
    very lists `WorkerSettings` holds, so jobs registered after this module was imported are
    still seen when the worker starts.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, JobSpec] = {}
        self.crons: dict[str, CronSpec] = {}
        self.arq_functions: list[Function] = []
        self.arq_cron_jobs: list[CronJob] = []

    @overload
    def job(self, fn: F, /) -> F: ...

    @overload
    def job(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Callable[[F], F]: ...

    def job(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> F | Callable[[F], F]:
        """Registers a job run on demand: `@job` or `@job(name=..., timeout_seconds=...)`.

        The name (the function's name by default) is what `JobQueue.enqueue` takes.
        """

        def register(fn: F) -> F:
            spec = JobSpec(name or fn.__name__, fn, timeout_seconds)
            if self._known(self.jobs.get(spec.name), fn):
                return fn
            self.jobs[spec.name] = spec
            self.arq_functions.append(_arq_function(spec))
            return fn

        return register if fn is None else register(fn)

    def cron_job(
        self,
        fn: JobFunction,
        *,
        every_seconds: int | None = None,
        hour: int | set[int] | None = None,
        minute: int | set[int] | None = None,
        name: str | None = None,
        run_at_startup: bool = False,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> CronSpec:
        """Registers a job run on a schedule, called with the context only.

        Either `every_seconds` (a divisor of a minute, an hour or a day; runs are aligned to
        the clock) or `hour` and/or `minute` (local time of the server; `hour` alone means
        on the hour). With arq, one worker runs each scheduled time even when several run.
        """
        hours, minutes, seconds = _schedule(every_seconds, hour, minute)
        spec = CronSpec(
            name or fn.__name__, fn, hours, minutes, seconds, run_at_startup, timeout_seconds
        )
        if self._known(self.crons.get(spec.name), fn):
            return self.crons[spec.name]
        self.crons[spec.name] = spec
        self.arq_cron_jobs.append(_arq_cron(spec))
        return spec

    @staticmethod
    def _known(existing: JobSpec | CronSpec | None, fn: JobFunction) -> bool:
        """True when `fn` is registered already; an error when another job has its name."""
        if existing is None:
            return False
        if existing.fn is fn:
            return True
        raise ValueError(f"another job is already registered as {existing.name!r}")


def _arq_function(spec: JobSpec) -> Function:
    async def run(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        return await spec.fn(_context_from_arq(ctx), *args, **kwargs)

    run.__qualname__ = run.__name__ = spec.name
    return func(run, name=spec.name, timeout=spec.timeout_seconds)


def _arq_cron(spec: CronSpec) -> CronJob:
    async def run(ctx: dict[Any, Any]) -> Any:
        return await spec.fn(_context_from_arq(ctx))

    run.__qualname__ = run.__name__ = f"cron:{spec.name}"
    # unique: the job id is "cron:<name>:<scheduled time>", so with several workers each
    # scheduled run happens once. keep_result=0: arq refuses a job id while its result is
    # kept, and nothing reads these results (pitfall 16).
    return cron(
        run,
        name=f"cron:{spec.name}",
        hour=spec.hour,
        minute=spec.minute,
        second=spec.second,
        run_at_startup=spec.run_at_startup,
        unique=True,
        keep_result=0,
        timeout=spec.timeout_seconds,
    )


registry = JobRegistry()
"""The application's jobs; `job` and `cron_job` register here."""

job = registry.job
cron_job = registry.cron_job


def load_job_modules() -> list[str]:
    """Imports `backend.<domain>.tasks` for every domain that has one; returns their names.

    Importing them registers their jobs. The API process does not otherwise import them,
    and the worker imports nothing else of the application.
    """
    loaded = []
    for module in pkgutil.iter_modules(backend.__path__):
        name = f"backend.{module.name}.tasks"
        if module.ispkg and importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
            loaded.append(name)
    return loaded


class JobQueue(Protocol):
    """Where the API hands work over to run in the background."""

    async def enqueue(self, name: str, *args: Any) -> None:
        """Schedules the job `name` with picklable `args`; returns before it runs."""

    async def start(self) -> None:
        """Connects, and starts the cron timers of the in-process runner."""

    async def close(self) -> None:
        """Stops timers and releases connections."""


def _local_now() -> dt.datetime:
    # arq's worker evaluates cron schedules in the server's local zone; so do we.
    return dt.datetime.now(dt.UTC).astimezone()


class InProcessJobQueue:
    """Runs jobs as asyncio tasks of the server process, and cron jobs on timers.

    A failing job is logged and forgotten; nothing is retried. Arguments are pickled and
    unpickled as arq would, so a job that runs here also runs in the worker, and it never
    shares a mutable object (an ORM row, say) with the request that enqueued it.
    """

    def __init__(
        self,
        ctx: JobContext,
        *,
        registry: JobRegistry = registry,
        max_jobs: int = 10,
        shutdown_grace_seconds: float = 10.0,
        schedule: bool = True,
    ) -> None:
        self._ctx = ctx
        self._schedule = schedule
        self._registry = registry
        self._slots = asyncio.Semaphore(max_jobs)
        self._grace = shutdown_grace_seconds
        self._running: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.Task[None]] = []
        self._closed = False

    async def enqueue(self, name: str, *args: Any) -> None:
        """Starts the job as a task; raises LookupError for a job that is not registered."""
        if self._closed:
            raise RuntimeError("the job queue is closed")
        spec = self._registry.jobs.get(name)
        if spec is None:
            raise LookupError(f"no job is registered as {name!r}")
        copied: tuple[Any, ...] = pickle.loads(pickle.dumps(args))
        self._spawn(spec.name, spec.fn, copied, spec.timeout_seconds)

    async def start(self) -> None:
        """Starts one timer per registered cron job."""
        if self._closed:
            raise RuntimeError("the job queue is closed")
        if not self._timers and self._schedule:
            self._timers = [
                asyncio.create_task(self._every(spec), name=f"cron:{spec.name}")
                for spec in self._registry.crons.values()
            ]

    async def close(self) -> None:
        """Stops the timers; waits up to the grace period for running jobs, then cancels them."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        self._timers = []
        if not self._running:
            return
        _done, pending = await asyncio.wait(set(self._running), timeout=self._grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            logger.warning("cancelled %d jobs still running at shutdown", len(pending))

    def _spawn(
        self, name: str, fn: JobFunction, args: tuple[Any, ...], timeout: float
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(name, fn, args, timeout), name=f"job:{name}")
        # The event loop keeps only weak references to tasks.
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _run(self, name: str, fn: JobFunction, args: tuple[Any, ...], seconds: float) -> None:
        async with self._slots:
            try:
                async with asyncio.timeout(seconds):
                    await fn(self._ctx, *args)
            except Exception:
                logger.exception("job %s failed", name)

    async def _every(self, spec: CronSpec) -> None:
        if spec.run_at_startup:
            await self._run_cron(spec)
        while True:
            now = _local_now()
            await asyncio.sleep((spec.next_run(now) - now).total_seconds())
            await self._run_cron(spec)

    async def _run_cron(self, spec: CronSpec) -> None:
        task = self._spawn(f"cron:{spec.name}", spec.fn, (), spec.timeout_seconds)
        # wait() rather than await: cancelling the timer at close must not cancel the run,
        # which close() lets finish within the grace period. Waiting here also means runs
        # of one cron job never overlap: a slow run skips the times it overran.
        await asyncio.wait({task})


class ArqJobQueue:
    """Enqueues jobs to arq in Redis, for `mes worker` to run; cron jobs run there too."""

    def __init__(self, redis_url: str, *, queue_name: str = QUEUE_NAME) -> None:
        self._redis_settings = RedisSettings.from_dsn(redis_url)
        self._queue_name = queue_name
        self._pool: ArqRedis | None = None

    async def enqueue(self, name: str, *args: Any) -> None:
        """Adds the job to the arq queue. The name is not checked here: the worker's is."""
        if self._pool is None:
            raise RuntimeError("ArqJobQueue.start() was not called")
        await self._pool.enqueue_job(name, *args)

    async def start(self) -> None:
        """Connects to Redis (arq retries a few times before giving up)."""
        if self._pool is None:
            self._pool = await create_pool(
                self._redis_settings, default_queue_name=self._queue_name
            )

    async def close(self) -> None:
        """Closes the Redis connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


def create_job_queue(redis_url: str | None, ctx: JobContext, *, schedule: bool = True) -> JobQueue:
    """arq when a Redis URL is configured; else jobs (and, with `schedule`, cron jobs) run in
    this process."""
    if redis_url:
        return ArqJobQueue(redis_url)
    load_job_modules()
    return InProcessJobQueue(ctx, schedule=schedule)


async def _worker_startup(ctx: dict[Any, Any]) -> None:
    from backend.db import Database

    settings = get_settings()
    if not settings.redis_url:
        raise ConfigurationError(_NO_REDIS)
    ctx["db"] = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    ctx["broadcast"] = create_broadcast(settings.redis_url, settings.event_channel_prefix)


async def _worker_shutdown(ctx: dict[Any, Any]) -> None:
    broadcast = ctx.pop("broadcast", None)
    if broadcast is not None:
        await broadcast.close()
    db = ctx.pop("db", None)
    if db is not None:
        await db.dispose()


def _redis_settings(url: str | None) -> RedisSettings:
    return RedisSettings.from_dsn(url) if url else RedisSettings()


_NO_REDIS = (
    "MES_REDIS_URL is not set: the worker takes its jobs from Redis "
    "(without Redis, `mes serve` runs jobs itself and needs no worker)"
)


class WorkerSettings:
    """arq's settings, for `mes worker` (or `arq backend.jobs.WorkerSettings`)."""

    functions: Sequence[WorkerCoroutine | Function] = registry.arq_functions
    cron_jobs: Sequence[CronJob] | None = registry.arq_cron_jobs
    redis_settings = _redis_settings(get_settings().redis_url)
    queue_name = QUEUE_NAME
    on_startup: StartupShutdown | None = _worker_startup
    on_shutdown: StartupShutdown | None = _worker_shutdown
    job_timeout = DEFAULT_TIMEOUT_SECONDS
    # Results are read by nobody; kept briefly for debugging, and so that job ids free up.
    keep_result = 60
    max_jobs = 10


def run_worker() -> None:
    """Runs the arq worker until SIGINT/SIGTERM (the `mes worker` command)."""
    settings = get_settings()
    if not settings.redis_url:
        raise ConfigurationError(_NO_REDIS)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    load_job_modules()
    # The URL is read again here: WorkerSettings read it at import, perhaps before the CLI
    # loaded its environment.
    arq_run_worker(WorkerSettings, redis_settings=RedisSettings.from_dsn(settings.redis_url))
