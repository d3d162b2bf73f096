"""Compiled reads (issue #7) over HTTP on PostgreSQL: the 50-order nested read through
`mes serve` with compiled reads on and off, the hand-written floor (baseline_orders.py:
Starlette + asyncpg + hand-built JSON) and PostGraphile 4.14, in one run with the servers
alternating; then the 500-item lot and deviation list reads with compiled reads on and off.

500 orders (test_orders_read.py's data), 1,000 lots and 500 deviations of 2 lots each. Four
server processes run side by side, each on its own copy of the database (so that PostgreSQL's
work can be told apart per server): `mes serve` with MES_COMPILED_READS=true, the same with
false, the floor, and PostGraphile (`node postgraphile/cli.js`, installed with npm into
~/.cache/mes-bench/postgraphile, outside the repository; skipped with a message when it cannot be
installed or started). All must answer the same data (PostGraphile's query, with aliases, gives
the same JSON shape from its own schema); then each takes CLIENTS keep-alive clients in ROUNDS
alternating rounds (A B C D, A B C D, ...). Printed per server: requests/s, p50, p95, server CPU
per request, PostgreSQL backend CPU per request (the /proc CPU of the server's backends) and
the ratios compiled/floor, compiled/PostGraphile, resolvers/floor. GET /metrics before and after
says which path served each read (compiled, or resolvers with the fallback reason).

Run: MES_BENCH=1 pytest tests/benchmarks/test_compiled_reads.py -s
MES_BENCH_DATABASE_URL names the PostgreSQL server (databases with `_compiled*` suffixes,
dropped at the end); MES_BENCH_SECONDS (measured seconds per server for the orders read,
default 12), MES_BENCH_ROUNDS (default 3), MES_BENCH_WARMUP (default 2), MES_BENCH_CLIENTS
(default 20), MES_BENCH_LIST_SECONDS (per server and list read, default 4),
MES_BENCH_LIST_CLIENTS (default 4); MES_BENCH_POSTGRAPHILE=0 leaves PostGraphile out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import benchkit
import pytest
import uvloop
from sqlalchemy.engine import make_url
from test_orders_read import ORDERS, QUERY
from test_orders_read import seed as seed_orders

from backend.db import Database
from backend.lots import service as lots
from backend.migrate import upgrade
from backend.principal import SYSTEM
from backend.quality import service as quality
from backend.quality.models import DeviationSeverity
from backend.uow import transaction

CLIENTS = int(os.environ.get("MES_BENCH_CLIENTS", "20"))
ROUNDS = int(os.environ.get("MES_BENCH_ROUNDS", "3"))
LIST_CLIENTS = int(os.environ.get("MES_BENCH_LIST_CLIENTS", "4"))
LOTS = 1000
DEVIATIONS = 500  # 2 lots each
LIST_PAGE = 500
POSTGRAPHILE_VERSION = "4.14"
POSTGRAPHILE_DIR = Path(
    os.environ.get("MES_BENCH_POSTGRAPHILE_DIR", Path.home() / ".cache/mes-bench/postgraphile")
)

# PostGraphile's own schema (tables and foreign keys reflected), aliased to the shape of QUERY.
POSTGRAPHILE_QUERY = """query Orders($first: Int) {
  productionOrders: allProductionOrders(first: $first, orderBy: PRIMARY_KEY_ASC) {
    edges { node {
      number status quantity
      product: materialByProductId { code name }
      workCenter: workCenterByWorkCenterId { code name }
      operations: orderOperationsByOrderIdList(orderBy: SEQUENCE_ASC) {
        sequence name status workCenter: workCenterByWorkCenterId { code }
      }
      components: orderComponentsByOrderIdList(orderBy: POSITION_ASC) {
        quantityRequired material: materialByMaterialId { code name }
      }
    } }
  }
}"""

LOTS_QUERY = """query Lots($first: Int) {
  lots(first: $first) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      id number quantity status expiresAt supplierLot createdAt
      material { code name unit }
    } }
  }
}"""

DEVIATIONS_QUERY = """query Deviations($first: Int) {
  deviations(first: $first) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      id number title description severity status source raisedAt
      lots { number status quantity material { code } }
    } }
  }
}"""


# ---------------------------------------------------------------- data


async def seed_lots_and_deviations(url: str) -> None:
    """LOTS lots (nulls, unicode, microsecond expiry times) and DEVIATIONS deviations holding
    two lots each (some with an order, some without a description)."""
    db = Database(url)
    now = dt.datetime.now(dt.UTC)
    try:
        for batch in range(0, LOTS, 100):
            async with transaction(db, SYSTEM) as uow:
                for i in range(batch, batch + 100):
                    await lots.receive(
                        uow,
                        number=f"LOT-{i:05d}",
                        material_code=f"RM-{i % benchkit.RAW_MATERIALS:03d}",
                        quantity=Decimal("12.5") + i % 7,
                        expires_at=None
                        if i % 5 == 0
                        else now + dt.timedelta(days=30 + i % 100, microseconds=1 + i),
                        supplier_lot=None if i % 3 == 0 else f"SUP-{i}-Übergabe «{i % 11}»",
                    )
        severities = list(DeviationSeverity)
        for batch in range(0, DEVIATIONS, 100):
            async with transaction(db, SYSTEM) as uow:
                for d in range(batch, batch + 100):
                    await quality.raise_deviation(
                        uow,
                        title=f"Abweichung {d}: Temperatur über Grenzwert",
                        description=None if d % 4 == 0 else f"Deviation {d}\nline two\tand a tab",
                        severity=severities[d % len(severities)],
                        lot_numbers=[f"LOT-{2 * d:05d}", f"LOT-{2 * d + 1:05d}"],
                        order_number=f"PO-{d % ORDERS:05d}" if d % 3 == 0 else None,
                    )
    finally:
        await db.dispose()


# ---------------------------------------------------------------- PostgreSQL backend CPU


def _admin_dsn() -> str:
    return benchkit.asyncpg_dsn(
        make_url(benchkit.PG_BASE_URL).set(database="postgres").render_as_string(False)
    )


async def postmaster_pid() -> int | None:
    """The PostgreSQL server's process id when it runs on this machine (else None)."""
    conn = await asyncpg.connect(_admin_dsn())
    try:
        # Read while the connection lives: its backend process ends with it.
        return _parent_pid(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # PostgreSQL on another machine (or in a container)
    return int(stat.rsplit(")", 1)[1].split()[1])


class BackendCpu:
    """CPU of the PostgreSQL backends connected to one database, sampled from /proc every
    0.1 s while a run lasts (the process title names the database), so that the CPU of a
    connection closed mid-run (a pool's overflow) is counted up to its last sample."""

    def __init__(self, postmaster: int, database: str) -> None:
        self.postmaster, self.tag = postmaster, f" {database} "
        self.last: dict[int, float] = {}

    def sample(self) -> dict[int, float]:
        found: dict[int, float] = {}
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children")
            for pid in map(int, children.read_text().split()):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if self.tag in Path(f"/proc/{pid}/cmdline").read_bytes().decode():
                        found[pid] = benchkit.process_tree_cpu_seconds(pid)
        return found

    @contextlib.asynccontextmanager
    async def measuring(self) -> AsyncIterator[list[float]]:
        """Yields [CPU seconds, backends opened]: filled in when the block ends."""
        before = self.sample()
        seen = dict(before)
        figures = [0.0, 0.0]

        async def poll() -> None:
            while True:
                await asyncio.sleep(0.1)
                seen.update(self.sample())

        poller = asyncio.create_task(poll())
        try:
            yield figures
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            seen.update(self.sample())
            figures[0] = sum(cpu - before.get(pid, 0.0) for pid, cpu in seen.items())
            figures[1] = len(seen.keys() - before.keys())


# ---------------------------------------------------------------- servers


@dataclass
class Target:
    """One server and the request it answers, with its totals over the rounds."""

    label: str
    server: benchkit.Server
    request: bytes
    database: str
    result: benchkit.LoadResult = field(init=False)
    pg_cpu: float = 0.0
    pg_opened: int = 0  # connections opened during the runs (a pool's overflow)

    def __post_init__(self) -> None:
        self.result = benchkit.LoadResult(self.label, 0)

    async def run(self, clients: int, duration: float, postmaster: int | None) -> None:
        if postmaster is None:
            part = await benchkit.closed_loop(
                self.label, self.server.port, self.request, clients, duration, self.server
            )
            self.pg_cpu = float("nan")
        else:
            async with BackendCpu(postmaster, self.database).measuring() as figures:
                part = await benchkit.closed_loop(
                    self.label, self.server.port, self.request, clients, duration, self.server
                )
            self.pg_cpu += figures[0]
            self.pg_opened += int(figures[1])
        self.result.add(part)

    def line(self) -> str:
        per = max(1, self.result.requests)
        opened = f", {self.pg_opened} connections opened" if self.pg_opened else ""
        return (
            f"{self.result.line()[:-1]}; PostgreSQL backends "
            f"{1000 * self.pg_cpu / per:.2f} ms/req{opened})"
        )


def postgraphile_cli() -> Path | None:
    """PostGraphile 4.14's cli.js, installed into the cache folder if needed; None (with the
    reason printed) when it cannot be had."""
    if os.environ.get("MES_BENCH_POSTGRAPHILE", "1") == "0":
        benchkit.report("PostGraphile: left out (MES_BENCH_POSTGRAPHILE=0)")
        return None
    cli = POSTGRAPHILE_DIR / "node_modules/postgraphile/cli.js"
    package = cli.with_name("package.json")
    if not cli.exists():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            benchkit.report("PostGraphile: skipped, node/npm not found")
            return None
        POSTGRAPHILE_DIR.mkdir(parents=True, exist_ok=True)
        manifest = POSTGRAPHILE_DIR / "package.json"
        if not manifest.exists():
            manifest.write_text('{"name": "mes-bench-postgraphile", "private": true}\n')
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", f"postgraphile@{POSTGRAPHILE_VERSION}"],
                cwd=POSTGRAPHILE_DIR,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
        except subprocess.TimeoutExpired:
            benchkit.report("PostGraphile: skipped, npm install did not finish in 240 s")
            return None
        if done.returncode != 0 or not cli.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            benchkit.report(f"PostGraphile: skipped, npm install failed: {' / '.join(tail)}")
            return None
    version = json.loads(package.read_text())["version"]
    if not version.startswith(POSTGRAPHILE_VERSION + "."):
        benchkit.report(f"PostGraphile: skipped, {POSTGRAPHILE_DIR} holds {version}")
        return None
    return cli


def postgraphile_argv(cli: Path, url: str, port: int) -> list[str]:
    return [
        shutil.which("node") or "node",
        str(cli),
        f"--connection={benchkit.asyncpg_dsn(url)}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--disable-graphiql",
        "--disable-query-log",
        "--dynamic-json",
        "--no-setof-functions-contain-nulls",
        "--disable-default-mutations",
        "--simple-collections=both",  # plain lists for operations and components, as ours
        "--legacy-relations=omit",
    ]


# ---------------------------------------------------------------- checks


def _data(body: bytes) -> Any:
    answer = json.loads(body)
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


async def metrics(server: benchkit.Server) -> dict[str, int]:
    """mes serve's GET /metrics counters: {"compiled": n, "resolvers": n, "fallback:<r>": n}."""
    status, body = await benchkit.fetch(
        server.port, benchkit.http_request("GET", "/metrics", server.port)
    )
    assert status == 200, body[:300]
    counts: dict[str, int] = {}
    for line in body.decode().splitlines():
        if m := re.match(r'mes_graphql_reads_total\{path="(\w+)"\} (\d+)', line):
            counts[m[1]] = int(m[2])
        elif m := re.match(r'mes_compiled_fallbacks_total\{reason="([^"]*)"\} (\d+)', line):
            counts[f"fallback:{m[1]}"] = int(m[2])
    return counts


def served_by(before: dict[str, int], after: dict[str, int]) -> str:
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    parts = [f"{k} {v}" for k, v in sorted(delta.items()) if v]
    return ", ".join(parts) or "nothing counted"


# ---------------------------------------------------------------- the benchmark


async def measure(
    token: str,
    mes_on: benchkit.Server,
    mes_off: benchkit.Server,
    floor: benchkit.Server,
    postgraphile: benchkit.Server | None,
    databases: dict[str, str],
) -> None:
    postmaster = await postmaster_pid()
    if postmaster is None:
        benchkit.report("PostgreSQL is not on this machine: its CPU is not measured")

    def gql(server: benchkit.Server, query: str, first: int) -> bytes:
        return benchkit.graphql_request(server.port, query, {"first": first}, token)

    targets = [
        Target("compiled on (mes serve)", mes_on, gql(mes_on, QUERY, 50), databases["on"]),
        Target("compiled off (resolvers)", mes_off, gql(mes_off, QUERY, 50), databases["off"]),
        Target(
            "floor (Starlette+asyncpg)",
            floor,
            benchkit.http_request("GET", "/orders?first=50", floor.port),
            databases["floor"],
        ),
    ]
    if postgraphile is not None:
        pg_request = benchkit.graphql_request(postgraphile.port, POSTGRAPHILE_QUERY, {"first": 50})
        targets.append(Target("PostGraphile 4.14", postgraphile, pg_request, databases["pg"]))

    # Same answers first.
    bodies = {}
    for t in targets:
        status, body = await benchkit.fetch(t.server.port, t.request)
        assert status == 200, (t.label, body[:500])
        bodies[t.label] = body
    floor_body = bodies[targets[2].label]
    floor_data = _data(floor_body)
    assert len(floor_data["productionOrders"]["edges"]) == 50
    for t in targets:
        body = bodies[t.label]
        same = _data(body) == floor_data
        benchkit.report(
            f"{t.label:<28} {len(body)} bytes; same data as the floor: {same}; "
            f"byte-identical: {body == floor_body}"
        )
        assert same, f"{t.label} must answer what the floor answers"

    warmup = benchkit.seconds("MES_BENCH_WARMUP", 2)
    duration = benchkit.seconds("MES_BENCH_SECONDS", 12) / ROUNDS
    counters = {s.name: await metrics(s) for s in (mes_on, mes_off)}
    for t in targets:
        await benchkit.closed_loop("warm-up", t.server.port, t.request, CLIENTS, warmup)
    for _ in range(ROUNDS):
        for t in targets:
            await t.run(CLIENTS, duration, postmaster)
    for s in (mes_on, mes_off):
        benchkit.report(
            f"{s.name}: orders read served by {served_by(counters[s.name], await metrics(s))}"
        )

    benchkit.report(
        f"\nproductionOrders(first: 50), {CLIENTS} clients, {ROUNDS} rounds of "
        f"{duration:.1f} s per server:"
    )
    for t in targets:
        benchkit.report(t.line())
    on, off, base = (t.result for t in targets[:3])
    ratios = [
        f"compiled / floor {on.rate / base.rate:.3f} (aim >= 0.8)",
        f"resolvers / floor {off.rate / base.rate:.3f} (aim >= 0.1)",
        f"compiled / resolvers {on.rate / off.rate:.2f}",
    ]
    if postgraphile is not None:
        ratios.insert(
            1, f"compiled / PostGraphile {on.rate / targets[3].result.rate:.2f} (aim >= 3)"
        )
    benchkit.report("ratios in requests/s: " + "; ".join(ratios))
    for t in targets:
        assert t.result.errors == 0, t.label

    # The list reads at 500 items: compiled on and off.
    list_duration = benchkit.seconds("MES_BENCH_LIST_SECONDS", 4) / 2
    for name, query in (("lots", LOTS_QUERY), ("deviations", DEVIATIONS_QUERY)):
        pair = [
            Target(
                f"{name}({LIST_PAGE}) compiled on",
                mes_on,
                gql(mes_on, query, LIST_PAGE),
                databases["on"],
            ),
            Target(
                f"{name}({LIST_PAGE}) compiled off",
                mes_off,
                gql(mes_off, query, LIST_PAGE),
                databases["off"],
            ),
        ]
        answers = [(await benchkit.fetch(t.server.port, t.request)) for t in pair]
        for (status, body), t in zip(answers, pair, strict=True):
            assert status == 200, (t.label, body[:500])
        (_, body_on), (_, body_off) = answers
        data = _data(body_on)
        assert len(data[name]["edges"]) == LIST_PAGE, name
        assert data == _data(body_off), f"{name}: compiled on and off must answer the same data"
        counters = {s.name: await metrics(s) for s in (mes_on, mes_off)}
        for t in pair:
            await benchkit.closed_loop("warm-up", t.server.port, t.request, LIST_CLIENTS, 1)
        for _ in range(2):
            for t in pair:
                await t.run(LIST_CLIENTS, list_duration, postmaster)
        paths = [served_by(counters[s.name], await metrics(s)) for s in (mes_on, mes_off)]
        benchkit.report(
            f"\n{name}(first: {LIST_PAGE}), {len(body_on)} bytes, {LIST_CLIENTS} clients; "
            f"byte-identical on/off: {body_on == body_off}"
        )
        for t, path in zip(pair, paths, strict=True):
            benchkit.report(f"{t.line()}\n    served by: {path}")
        benchkit.report(f"ratio on / off: {pair[0].result.rate / pair[1].result.rate:.2f}")
        for t in pair:
            assert t.result.errors == 0, t.label


def test_compiled_reads(tmp_path: Path) -> None:
    url = benchkit.postgres_url("compiled")
    copies = {k: benchkit.postgres_url(f"compiled_{k}") for k in ("off", "floor", "pg")}
    benchkit.banner(
        f"compiled reads: {ORDERS} orders, {LOTS} lots, {DEVIATIONS} deviations on PostgreSQL"
    )
    started = time.perf_counter()
    load = os.getloadavg()
    benchkit.report(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    cli = postgraphile_cli()
    benchkit.recreate_postgres(url)
    upgrade(url)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(seed_orders(url))
        runner.run(seed_lots_and_deviations(url))
        benchkit.report(f"seeded in {time.perf_counter() - started:.1f} s")
        token = benchkit.mes(url, "create-token", "bench", "--role", "INTEGRATOR", cwd=tmp_path)
        benchkit.analyze_postgres(url)  # the copies inherit the statistics
        for copy in copies.values():
            benchkit.clone_postgres(url, copy)
        databases = {"on": url, **copies}
        names = {k: make_url(u).database or "" for k, u in databases.items()}
        floor_port = benchkit.free_port()
        floor_argv = [
            sys.executable,
            str(Path(__file__).with_name("baseline_orders.py")),
            f"--dsn={benchkit.asyncpg_dsn(copies['floor'])}",
            f"--port={floor_port}",
        ]
        with contextlib.ExitStack() as stack:
            mes_on = stack.enter_context(
                benchkit.mes_serve(
                    url,
                    tmp_path,
                    tmp_path,
                    name="mes-compiled-on",
                    settings={"MES_COMPILED_READS": "true"},
                )
            )
            mes_off = stack.enter_context(
                benchkit.mes_serve(
                    copies["off"],
                    tmp_path,
                    tmp_path,
                    name="mes-compiled-off",
                    settings={"MES_COMPILED_READS": "false"},
                )
            )
            floor = stack.enter_context(
                benchkit.serve(
                    "floor",
                    floor_argv,
                    floor_port,
                    benchkit.server_env(copies["floor"]),
                    tmp_path,
                    tmp_path,
                )
            )
            postgraphile = None
            if cli is not None:
                pg_port = benchkit.free_port()
                env = {k: v for k, v in os.environ.items() if not k.startswith("MES_")}
                env["NODE_ENV"] = "production"
                try:
                    postgraphile = stack.enter_context(
                        benchkit.serve(
                            "postgraphile",
                            postgraphile_argv(cli, copies["pg"], pg_port),
                            pg_port,
                            env,
                            tmp_path,
                            tmp_path,
                        )
                    )
                except pytest.fail.Exception as error:
                    benchkit.report(f"PostGraphile: skipped, it did not start: {error}")
            if postgraphile is not None:
                status, body = runner.run(
                    benchkit.fetch(
                        postgraphile.port,
                        benchkit.graphql_request(
                            postgraphile.port, POSTGRAPHILE_QUERY, {"first": 1}
                        ),
                    )
                )
                if status != 200 or b'"errors"' in body:
                    benchkit.report(f"PostGraphile: skipped, its query failed: {body[:300]!r}")
                    postgraphile = None
            runner.run(measure(token.strip(), mes_on, mes_off, floor, postgraphile, names))
    for u in databases.values():
        benchkit.drop_postgres(u)
    load = os.getloadavg()
    benchkit.report(
        f"whole benchmark {time.perf_counter() - started:.0f} s; load average after: "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
