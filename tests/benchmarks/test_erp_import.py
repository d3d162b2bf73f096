"""ERP import: 1,000 orders (5 components and 4 operations each) through `upsertProductionOrder`.

Over HTTP to a real `mes serve` process, from 4 concurrent clients as an ERP connector would
send them, on SQLite and on PostgreSQL. The baseline, measured in the same run on a database
of its own with the same master data: the same 1,000 orders through the service layer
(`orders.upsert` inside `backend.uow.transaction`, one transaction per order, 4 concurrent
tasks) in one process, without GraphQL or HTTP. API ÷ baseline is what the API layer costs.
Printed: orders/s for both, the ratio, latency per order over HTTP and the server's CPU per order.

Run: MES_BENCH=1 pytest tests/benchmarks/test_erp_import.py -s
MES_BENCH_ORDERS (default 1000) and MES_BENCH_IMPORT_CLIENTS (default 4) change the load;
MES_BENCH_DATABASE_URL names the PostgreSQL server (databases with an `_import_*` suffix,
dropped at the end).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import benchkit
import pytest
import uvloop
from sqlalchemy import func, select

from backend.db import Database
from backend.migrate import upgrade
from backend.orders import service as orders
from backend.orders.models import OrderComponent, OrderOperation, ProductionOrder
from backend.principal import SYSTEM
from backend.uow import transaction

ORDERS = int(os.environ.get("MES_BENCH_ORDERS", "1000"))
CLIENTS = int(os.environ.get("MES_BENCH_IMPORT_CLIENTS", "4"))

MUTATION = """mutation Upsert($input: ProductionOrderInput!) {
  upsertProductionOrder(input: $input) {
    order { number status }
    errors { code field message }
  }
}"""


async def prepare(url: str) -> None:
    db = Database(url)
    try:
        await benchkit.seed_master_data(db)
    finally:
        await db.dispose()


async def totals(url: str) -> tuple[int, int, int]:
    """(orders, components, operations) stored."""
    db = Database(url)
    try:
        async with db.read() as session:
            return (
                int(await session.scalar(select(func.count()).select_from(ProductionOrder)) or 0),
                int(await session.scalar(select(func.count()).select_from(OrderComponent)) or 0),
                int(await session.scalar(select(func.count()).select_from(OrderOperation)) or 0),
            )
    finally:
        await db.dispose()


async def import_by_service(url: str) -> benchkit.LoadResult:
    """The baseline: `orders.upsert` in its own transaction per order, CLIENTS tasks at once."""
    db = Database(url)
    result = benchkit.LoadResult("service layer", 0)
    todo = iter(range(ORDERS))

    async def worker() -> None:
        for i in todo:
            spec = benchkit.order_spec(i)
            start = time.perf_counter()
            async with transaction(db, SYSTEM) as uow:
                await orders.upsert(uow, spec)
            result.latencies.append(time.perf_counter() - start)

    try:
        # Connections and statement caches warm, as in a server that has been up for a while.
        async with db.read() as session:
            await session.scalar(select(func.count()).select_from(ProductionOrder))
        before = await benchkit.database_activity(url) if db.dialect_name == "postgresql" else None
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
        result.seconds = time.perf_counter() - started
    finally:
        await db.dispose()
    if before is not None:  # after dispose: closed connections have reported everything
        result.database = await benchkit.database_activity(url) - before
    return result


async def import_over_http(server: benchkit.Server, token: str) -> benchkit.LoadResult:
    """CLIENTS keep-alive connections sending the orders one after another."""
    result = benchkit.LoadResult("GraphQL over HTTP", 0)
    requests: Iterator[tuple[int, bytes]] = (
        (
            i,
            benchkit.graphql_request(
                server.port, MUTATION, {"input": benchkit.order_input(i)}, token
            ),
        )
        for i in range(ORDERS)
    )
    failures: list[str] = []

    async def client() -> None:
        async with benchkit.Connection.open(server.port) as conn:
            for i, request in requests:
                start = time.perf_counter()
                status, body = await conn.exchange(request)
                result.latencies.append(time.perf_counter() - start)
                payload = json.loads(body) if status == 200 else {}
                upsert = (payload.get("data") or {}).get("upsertProductionOrder") or {}
                number = (upsert.get("order") or {}).get("number")
                if upsert.get("errors") != [] or number != f"PO-{i:05d}":
                    result.errors += 1
                    failures.append(f"order {i}: HTTP {status} {body[:300]!r}")

    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = server.cpu_seconds() - cpu_before
    assert not failures, failures[:3]
    return result


def line(result: benchkit.LoadResult) -> str:
    cpu = ""
    if result.cpu_seconds is not None:
        cpu += f"; server CPU {1000 * result.cpu_seconds / result.requests:.2f} ms/order"
    if result.database is not None:
        in_statements = result.database.active_ms / result.requests
        cpu += f"; PostgreSQL in statements (incl. lock waits) {in_statements:.2f} ms/order"
    return (
        f"{result.name:<18} {result.requests} orders in {result.seconds:5.1f} s = "
        f"{result.rate:6.1f} orders/s; per order p50 {1000 * result.percentile(50):6.1f} ms, "
        f"p95 {1000 * result.percentile(95):6.1f} ms{cpu}"
    )


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_erp_import(engine: str, tmp_path: Path) -> None:
    if engine == "sqlite":
        service_url = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
        api_url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    else:
        service_url = benchkit.postgres_url("import_service")
        api_url = benchkit.postgres_url("import_api")
        for url in (service_url, api_url):
            benchkit.recreate_postgres(url)
    benchkit.banner(
        f"ERP import on {engine}: {ORDERS} orders x (5 components + 4 operations), "
        f"{CLIENTS} concurrent clients"
    )
    started = time.perf_counter()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for url in (service_url, api_url):
            upgrade(url)
            runner.run(prepare(url))
        baseline = runner.run(import_by_service(service_url))
        token = benchkit.mes(api_url, "create-token", "erp", "--role", "ERP", cwd=tmp_path).strip()
        on_postgres = engine == "postgresql"
        before = runner.run(benchkit.database_activity(api_url)) if on_postgres else None
        with benchkit.mes_serve(api_url, tmp_path, tmp_path) as server:
            api = runner.run(import_over_http(server, token))
        if before is not None:  # the server has stopped: its connections reported everything
            api.database = runner.run(benchkit.database_activity(api_url)) - before
        stored = {url: runner.run(totals(url)) for url in (service_url, api_url)}
    if engine == "postgresql":
        for url in (service_url, api_url):
            benchkit.drop_postgres(url)

    benchkit.report(line(api))
    benchkit.report(line(baseline))
    aim = " (aim >= 200 orders/s on PostgreSQL)" if engine == "postgresql" else ""
    benchkit.report(
        f"ratio API / service layer: {api.rate / baseline.rate:.2f}{aim}; "
        f"whole benchmark {time.perf_counter() - started:.0f} s"
    )
    expected = (ORDERS, 5 * ORDERS, 4 * ORDERS)
    assert stored[api_url] == expected
    assert stored[service_url] == expected
