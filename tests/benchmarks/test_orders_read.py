"""The nested orders read over HTTP, against a hand-written baseline, on PostgreSQL.

500 stored orders, each with a product, a work center, 4 operations and 5 components. Two
real server processes on loopback: `mes serve`, and `baseline_orders.py` (Starlette + asyncpg,
the same queries keyed by the page's ids, JSON built by hand). Both must return the same
`data`; then each takes 20 concurrent keep-alive clients for a warm-up and a measured run.
Printed: requests/s, p50, p95, server CPU per request, and GraphQL ÷ baseline. Also the SQL
statements per request for 10 and for 50 orders, counted in-process.

Run: MES_BENCH=1 pytest tests/benchmarks/test_orders_read.py -s
(MES_BENCH_DATABASE_URL names the PostgreSQL server; MES_BENCH_SECONDS, MES_BENCH_WARMUP and
MES_BENCH_CLIENTS change the load.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import uvloop
from sqlalchemy import event

import benchkit
from backend.app import create_app
from backend.catalog import service as catalog
from backend.catalog.models import MaterialKind
from backend.db import Database
from backend.migrate import upgrade
from backend.orders import service as orders
from backend.principal import SYSTEM
from backend.settings import Settings
from backend.uow import transaction

ORDERS = 500
PRODUCTS = 20
RAW_MATERIALS = 60
WORK_CENTERS = 8
CLIENTS = int(os.environ.get("MES_BENCH_CLIENTS", "20"))

QUERY = """query Orders($first: Int) {
  productionOrders(first: $first) {
    edges { node {
      number status quantity
      product { code name }
      workCenter { code name }
      operations { sequence name status workCenter { code } }
      components { quantityRequired material { code name } }
    } }
  }
}"""


def order_spec(i: int) -> orders.OrderSpec:
    """Order i: every 7th without a work center, every 3rd with an operation without one."""
    wc = lambda k: f"WC-{k % WORK_CENTERS:02d}"  # noqa: E731
    return orders.OrderSpec(
        external_id=f"ERP-{i:05d}", number=f"PO-{i:05d}", product_code=f"FG-{i % PRODUCTS:03d}",
        quantity=Decimal(100 + i % 37) + Decimal("0.25") * (i % 4),
        work_center_code=None if i % 7 == 0 else wc(i),
        operations=[orders.OperationSpec(sequence=10 * (s + 1), name=f"Step {s + 1} of PO-{i:05d}",
                                         work_center_code=None if (s == 3 and i % 3 == 0) else wc(i + s))
                    for s in range(4)],
        components=[orders.ComponentSpec(material_code=f"RM-{(i * 5 + c) % RAW_MATERIALS:03d}",
                                         quantity=Decimal(c + 1) * Decimal("1.5"),
                                         operation_sequence=10 * (c % 4 + 1))
                    for c in range(5)],
    )


async def seed(url: str) -> None:
    db = Database(url)
    try:
        async with transaction(db, SYSTEM) as uow:
            await catalog.upsert_materials(uow, [
                *(catalog.MaterialSpec(f"FG-{p:03d}", f"Finished good {p}", MaterialKind.FINISHED, "pcs",
                                       lot_controlled=True) for p in range(PRODUCTS)),
                *(catalog.MaterialSpec(f"RM-{m:03d}", f"Raw material {m}", MaterialKind.RAW, "kg",
                                       lot_controlled=True) for m in range(RAW_MATERIALS)),
            ])
            await catalog.upsert_work_centers(uow, [
                catalog.WorkCenterSpec(f"WC-{w:02d}", f"Work center {w}") for w in range(WORK_CENTERS)])
        for batch in range(0, ORDERS, 50):
            async with transaction(db, SYSTEM) as uow:
                for i in range(batch, batch + 50):
                    await orders.upsert(uow, order_spec(i))
    finally:
        await db.dispose()


async def statement_counts(url: str, token: str) -> dict[int, int]:
    """SQL statements the app sends for one read of `first` orders (in-process, same app)."""
    settings = Settings(database_url=url, secret_key=benchkit.SECRET_KEY,
                        _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings)
    counts: dict[int, int] = {}
    async with app.router.lifespan_context(app):
        engine = app.state.services.db.engine.sync_engine
        seen: list[str] = []

        def count(*args: Any) -> None:
            seen.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for first in (10, 50, 10, 50):  # the first pair warms the caches
                    seen.clear()
                    response = await client.post(
                        "/graphql", json={"query": QUERY, "variables": {"first": first}},
                        headers={"Authorization": f"Bearer {token}"})
                    body = response.json()
                    assert "errors" not in body, body
                    assert len(body["data"]["productionOrders"]["edges"]) == first
                    counts[first] = len(seen)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    return counts


async def measure(gql: benchkit.Server, base: benchkit.Server, token: str
                  ) -> tuple[dict[str, Any], list[benchkit.LoadResult]]:
    gql_request = benchkit.graphql_request(gql.port, QUERY, {"first": 50}, token)
    base_request = benchkit.http_request("GET", "/orders?first=50", base.port)

    status, gql_body = await benchkit.fetch(gql.port, gql_request)
    assert status == 200, gql_body[:500]
    status, base_body = await benchkit.fetch(base.port, base_request)
    assert status == 200, base_body[:500]
    gql_json, base_json = json.loads(gql_body), json.loads(base_body)
    assert "errors" not in gql_json, gql_json["errors"]
    assert len(gql_json["data"]["productionOrders"]["edges"]) == 50
    check = {"same_data": gql_json["data"] == base_json["data"],
             "same_bytes": gql_body == base_body, "bytes": len(gql_body)}
    assert check["same_data"], "the baseline must answer exactly what GraphQL answers"

    warmup, duration = benchkit.seconds("MES_BENCH_WARMUP", 3), benchkit.seconds("MES_BENCH_SECONDS", 10)
    results = []
    for name, server, request in (("GraphQL (mes serve)", gql, gql_request),
                                  ("baseline (asyncpg)", base, base_request)):
        await benchkit.closed_loop("warm-up", server.port, request, CLIENTS, warmup)
        results.append(await benchkit.closed_loop(name, server.port, request, CLIENTS, duration, server))
    for name, server, request in (("GraphQL, 1 client", gql, gql_request),
                                  ("baseline, 1 client", base, base_request)):
        results.append(await benchkit.closed_loop(name, server.port, request, 1, 2.0, server))
    return check, results


def test_orders_read(tmp_path: Path) -> None:
    url = benchkit.postgres_url("orders")
    benchkit.banner(f"productionOrders(first: 50), {ORDERS} orders on PostgreSQL, {CLIENTS} clients")
    started = time.perf_counter()
    benchkit.recreate_postgres(url)
    upgrade(url)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(seed(url))
        print(f"seeded {ORDERS} orders in {time.perf_counter() - started:.1f} s", flush=True)
        token = benchkit.mes(url, "create-token", "bench", "--role", "INTEGRATOR", cwd=tmp_path).strip()
        counts = runner.run(statement_counts(url, token))
        baseline_argv = [sys.executable, str(Path(__file__).with_name("baseline_orders.py")),
                         "--dsn", benchkit.asyncpg_dsn(url)]
        base_port = benchkit.free_port()
        with benchkit.mes_serve(url, tmp_path, tmp_path) as gql, benchkit.serve(
                "baseline", [*baseline_argv, "--port", str(base_port)], base_port,
                benchkit.server_env(url), tmp_path, tmp_path) as base:
            check, results = runner.run(measure(gql, base, token))

    print(f"response: {check['bytes']} bytes; same data as the baseline: {check['same_data']}; "
          f"byte-identical: {check['same_bytes']}")
    for result in results:
        print(result.line())
    graphql, baseline, graphql_1, baseline_1 = results
    print(f"ratio GraphQL / baseline: {graphql.rate / baseline.rate:.2f} in requests/s (aim >= 0.5); "
          f"p50 {graphql.percentile(50) / baseline.percentile(50):.1f}x; "
          f"1 client p50 {graphql_1.percentile(50) / baseline_1.percentile(50):.1f}x")
    print(f"SQL statements per request: {counts[10]} for 10 orders, {counts[50]} for 50 orders "
          f"(baseline: 5); total time {time.perf_counter() - started:.0f} s")
    benchkit.drop_postgres(url)
    assert graphql.errors == 0 and baseline.errors == 0
    # 50 orders can need fewer statements than 10: when the orders' work centers already cover
    # every operation's, the second work-center batch is all DataLoader cache hits.
    assert counts[50] <= counts[10], "the statement count must not grow with the page"
