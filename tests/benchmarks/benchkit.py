"""What the benchmarks share: databases of their own, real server processes, a lean HTTP load
generator, and figures (throughput, latency percentiles, CPU per request).

The load generator speaks HTTP/1.1 keep-alive over raw asyncio streams rather than through
httpx: on a 2-core machine the client shares the CPU with the servers, and httpx spends about
2.3 ms of CPU per 50 KB response (this client 0.16 ms), as much as the baseline server itself,
which would flatten every ratio towards 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend.catalog import service as catalog
from backend.catalog.models import MaterialKind
from backend.db import Database
from backend.orders import service as orders
from backend.principal import SYSTEM
from backend.uow import transaction

BIN = Path(sys.executable).parent
SECRET_KEY = "bench-secret-key-0123456789abcdef"
PG_BASE_URL = os.environ.get(
    "MES_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/mes_bench"
)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def seconds(name: str, default: float) -> float:
    """A duration that can be shortened or lengthened from the environment."""
    return float(os.environ.get(name, default))


# ---------------------------------------------------------------- databases


def postgres_url(suffix: str) -> str:
    """The benchmark database `<MES_BENCH_DATABASE_URL's name>_<suffix>`."""
    url = make_url(PG_BASE_URL)
    return url.set(database=f"{url.database}_{suffix}").render_as_string(hide_password=False)


def recreate_postgres(url: str) -> None:
    """Drops and creates the database at `url`; fails with the reason when PostgreSQL is down."""
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql+psycopg", database="postgres")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    except Exception as error:  # the benchmark was asked for: say why it cannot run
        pytest.fail(
            f"PostgreSQL at {parsed.host}:{parsed.port} is not usable: "
            f"{str(error).splitlines()[0]}",
            pytrace=False,
        )
    finally:
        engine.dispose()


def drop_postgres(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql+psycopg", database="postgres")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    finally:
        engine.dispose()


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL as a plain libpq DSN for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# ---------------------------------------------------------------- data

PRODUCTS = 20
RAW_MATERIALS = 60
WORK_CENTERS = 8


async def seed_master_data(db: Database) -> None:
    """Finished goods FG-000.., raw materials RM-000.., work centers WC-00.."""
    async with transaction(db, SYSTEM) as uow:
        await catalog.upsert_materials(
            uow,
            [
                *(
                    catalog.MaterialSpec(
                        f"FG-{p:03d}",
                        f"Finished good {p}",
                        MaterialKind.FINISHED,
                        "pcs",
                        lot_controlled=True,
                    )
                    for p in range(PRODUCTS)
                ),
                *(
                    catalog.MaterialSpec(
                        f"RM-{m:03d}",
                        f"Raw material {m}",
                        MaterialKind.RAW,
                        "kg",
                        lot_controlled=True,
                    )
                    for m in range(RAW_MATERIALS)
                ),
            ],
        )
        await catalog.upsert_work_centers(
            uow,
            [
                catalog.WorkCenterSpec(f"WC-{w:02d}", f"Work center {w}")
                for w in range(WORK_CENTERS)
            ],
        )


def _wc(k: int) -> str:
    return f"WC-{k % WORK_CENTERS:02d}"


def order_spec(i: int) -> orders.OrderSpec:
    """Order i: 4 operations, 5 components; every 7th order without a work center, every 3rd
    with a last operation without one (so that the reads also return nulls)."""
    return orders.OrderSpec(
        external_id=f"ERP-{i:05d}",
        number=f"PO-{i:05d}",
        product_code=f"FG-{i % PRODUCTS:03d}",
        quantity=Decimal(100 + i % 37) + Decimal("0.25") * (i % 4),
        work_center_code=None if i % 7 == 0 else _wc(i),
        operations=[
            orders.OperationSpec(
                sequence=10 * (s + 1),
                name=f"Step {s + 1} of PO-{i:05d}",
                work_center_code=None if (s == 3 and i % 3 == 0) else _wc(i + s),
            )
            for s in range(4)
        ],
        components=[
            orders.ComponentSpec(
                material_code=f"RM-{(i * 5 + c) % RAW_MATERIALS:03d}",
                quantity=Decimal(c + 1) * Decimal("1.5"),
                operation_sequence=10 * (c % 4 + 1),
            )
            for c in range(5)
        ],
    )


def order_input(i: int) -> dict[str, Any]:
    """Order i as the ERP sends it: the `ProductionOrderInput` of `upsertProductionOrder`."""
    spec = order_spec(i)
    return {
        "externalId": spec.external_id,
        "number": spec.number,
        "productCode": spec.product_code,
        "quantity": str(spec.quantity),
        "workCenterCode": spec.work_center_code,
        "operations": [
            {"sequence": o.sequence, "name": o.name, "workCenterCode": o.work_center_code}
            for o in spec.operations
        ],
        "components": [
            {
                "materialCode": c.material_code,
                "quantity": str(c.quantity),
                "operationSequence": c.operation_sequence,
            }
            for c in spec.components
        ],
    }


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_env(database_url: str, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server process: none of the caller's MES_* variables, the database,
    the secret key, and `settings` (MES_* variables of this server only, such as
    MES_COMPILED_READS, so that two servers with different settings can run side by side)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MES_")}
    env.update(MES_DATABASE_URL=database_url, MES_SECRET_KEY=SECRET_KEY)
    env.update(settings or {})
    return env


def mes(database_url: str, *args: str, cwd: Path) -> str:
    """Runs `mes ARGS` against the database; returns its stdout."""
    done = subprocess.run(
        [str(BIN / "mes"), *args],
        env=server_env(database_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"mes {' '.join(args)} failed: {done.stderr.strip()}", pytrace=False)
    return done.stdout


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@contextlib.contextmanager
def serve(
    name: str, argv: Sequence[str], port: int, env: dict[str, str], cwd: Path, log_dir: Path
) -> Iterator[Server]:
    """Starts a server process, waits for it to answer on `port`, stops it at the end."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(name, port, process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"{name} exited with {process.returncode}:\n{log.read_text()[-2000:]}",
                    pytrace=False,
                )
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} did not listen on {port} within 30 s", pytrace=False)
                time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def mes_serve(
    database_url: str,
    cwd: Path,
    log_dir: Path,
    workers: int = 1,
    *,
    name: str = "mes-serve",
    settings: dict[str, str] | None = None,
) -> contextlib.AbstractContextManager[Server]:
    """`mes serve` on a free port; `settings` are MES_* variables for this server only (e.g.
    {"MES_COMPILED_READS": "false"}); give servers that run together different names (logs)."""
    port = free_port()
    return serve(
        name,
        [str(BIN / "mes"), "serve", "--port", str(port), "--workers", str(workers)],
        port,
        server_env(database_url, settings),
        cwd,
        log_dir,
    )


# ---------------------------------------------------------------- HTTP


def http_request(
    method: str, path: str, port: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One HTTP/1.1 keep-alive request, ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def graphql_request(
    port: int, query: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> bytes:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    return http_request("POST", "/graphql", port, body, headers)


class Connection:
    """One keep-alive connection; responses must carry Content-Length (uvicorn's do)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, port: int) -> AsyncIterator[Connection]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        try:
            yield cls(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = None
        for line in header_lines:
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"no Content-Length in {head!r}")
        return int(status_line.split()[1]), await self.reader.readexactly(length)


async def fetch(port: int, request: bytes) -> tuple[int, bytes]:
    async with Connection.open(port) as conn:
        return await conn.exchange(request)


@dataclass
class LoadResult:
    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_seconds: float | None = None
    database: Activity | None = None

    def add(self, other: LoadResult) -> None:
        """Merges another run of the same server (rounds alternate between servers)."""
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.errors += other.errors
        if other.cpu_seconds is not None:
            self.cpu_seconds = (self.cpu_seconds or 0.0) + other.cpu_seconds

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return (
            ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")
        )

    def line(self) -> str:
        per = max(1, self.requests)
        extra = ""
        if self.cpu_seconds is not None:
            extra += f"; server CPU {1000 * self.cpu_seconds / per:.2f} ms/req"
        if self.database is not None:
            extra += f"; PostgreSQL in statements {self.database.active_ms / per:.2f} ms/req"
        return (
            f"{self.name:<32} {self.rate:7.1f} req/s  p50 {1000 * self.percentile(50):7.1f} ms  "
            f"p95 {1000 * self.percentile(95):7.1f} ms  ({self.requests} requests, "
            f"{self.errors} errors{extra})"
        )


async def closed_loop(
    name: str,
    port: int,
    request: bytes,
    clients: int,
    duration: float,
    server: Server | None = None,
    max_requests: int = 1_000_000,
) -> LoadResult:
    """`clients` connections each sending `request` back to back for `duration` seconds."""
    result = LoadResult(name, duration)
    deadline = time.perf_counter() + duration
    budget = [max_requests]

    async def client() -> None:
        async with Connection.open(port) as conn:
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                start = time.perf_counter()
                status, _ = await conn.exchange(request)
                if status == 200:
                    result.latencies.append(time.perf_counter() - start)
                else:
                    result.errors += 1

    cpu_before = server.cpu_seconds() if server else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    if server is not None:
        result.cpu_seconds = server.cpu_seconds() - cpu_before
    return result


class Script(Protocol):
    """What one client of `scripted_loop` sends: a new request each time, and its verdict."""

    def next_request(self) -> bytes: ...

    def accept(self, status: int, body: bytes) -> bool:
        """Whether the response is a success (its latency counts) or an error."""
        ...


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (`mes serve --workers N`)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, IndexError):
            total += _process_cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
    return total


async def scripted_loop(
    name: str,
    port: int,
    scripts: Sequence[Script],
    duration: float,
    server: Server | None = None,
) -> LoadResult:
    """One keep-alive connection per script, each sending the script's next request as soon as
    the previous answer is in, for `duration` seconds (requests that differ every time, such as
    mutations with a unique clientMutationId). CPU is counted over the server's process tree."""
    result = LoadResult(name, duration)
    deadline = time.perf_counter() + duration

    async def client(script: Script) -> None:
        async with Connection.open(port) as conn:
            while time.perf_counter() < deadline:
                request = script.next_request()
                start = time.perf_counter()
                status, body = await conn.exchange(request)
                elapsed = time.perf_counter() - start
                if script.accept(status, body):
                    result.latencies.append(elapsed)
                else:
                    result.errors += 1

    pid = server.process.pid if server else None
    cpu_before = process_tree_cpu_seconds(pid) if pid else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(client(script) for script in scripts))
    result.seconds = time.perf_counter() - started
    if pid is not None:
        result.cpu_seconds = process_tree_cpu_seconds(pid) - cpu_before
    return result


async def task_loop(
    name: str, tasks: Sequence[Callable[[], Awaitable[bool]]], duration: float
) -> LoadResult:
    """Like `scripted_loop` for in-process work: each task's call repeated back to back for
    `duration` seconds, all tasks at once; a call returning False counts as an error."""
    result = LoadResult(name, duration)
    deadline = time.perf_counter() + duration

    async def worker(call: Callable[[], Awaitable[bool]]) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            ok = await call()
            elapsed = time.perf_counter() - start
            if ok:
                result.latencies.append(elapsed)
            else:
                result.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(call) for call in tasks))
    result.seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True)
class Activity:
    """What PostgreSQL counted for one database (pg_stat_database)."""

    sessions: int
    active_ms: float

    def __sub__(self, other: Activity) -> Activity:
        return Activity(self.sessions - other.sessions, self.active_ms - other.active_ms)


async def database_activity(url: str) -> Activity:
    """Sessions ever opened in the database at `url`, and ms spent executing statements.

    A backend reports these when it exits, and while it runs at most every second (possibly
    10 s late): read them once the processes that used the database have closed their
    connections, and give each server a database of its own.
    """
    await asyncio.sleep(0.5)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT sessions, active_time FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    assert row is not None
    # This connection counts as a session already: leave it out.
    return Activity(int(row["sessions"]) - 1, float(row["active_time"]))


def analyze_postgres(url: str) -> None:
    """ANALYZE the whole database: the planner then knows the seeded tables' sizes, as it
    would on a plant's database (autovacuum may not have run before the measurement)."""
    engine = create_engine(
        make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def clone_postgres(source: str, target: str) -> None:
    """Creates the database `target` as a copy of `source` (nobody may be connected to it)."""
    engine = create_engine(
        make_url(source).set(drivername="postgresql+psycopg", database="postgres"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            name = make_url(target).database
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(source).database}"'))
    finally:
        engine.dispose()


def report(line: str = "") -> None:
    """Benchmarks exist to print their figures (run them with -s)."""
    print(line, flush=True)  # noqa: T201


def banner(title: str) -> None:
    report(f"\n==== {title}")
