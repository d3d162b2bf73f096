"""The nested orders read over HTTP, against a hand-written baseline, on PostgreSQL.

500 stored orders, each with a product, a work center, 4 operations and 5 components. Two
real server processes on loopback: `mes serve`, and `baseline_orders.py` (Starlette + asyncpg,
the same queries keyed by the page's ids, JSON built by hand). Both must return the same
`data`; then each takes 20 concurrent keep-alive clients, after a warm-up, in alternating
rounds (so that a burst of other load on the machine hits both alike). Printed: requests/s,
p50, p95, server CPU per request, and GraphQL ÷ baseline; the same with 1 client; what
PostgreSQL spent per request for each server (each reads its own copy of the database, so
pg_stat_database tells them apart); and the SQL statements per request for 10 and for 50
orders, counted in-process.

Run: MES_BENCH=1 pytest tests/benchmarks/test_orders_read.py -s
MES_BENCH_DATABASE_URL names the PostgreSQL server (the database gets an `_orders` suffix and
is dropped at the end); MES_BENCH_SECONDS (measured seconds per server, default 10),
MES_BENCH_ROUNDS (default 2), MES_BENCH_WARMUP and MES_BENCH_CLIENTS change the load.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import benchkit
import httpx
import uvloop
from sqlalchemy import event

from backend.app import create_app
from backend.db import Database
from backend.migrate import upgrade
from backend.orders import service as orders
from backend.principal import SYSTEM
from backend.settings import Settings
from backend.uow import transaction

ORDERS = 500
CLIENTS = int(os.environ.get("MES_BENCH_CLIENTS", "20"))
ROUNDS = int(os.environ.get("MES_BENCH_ROUNDS", "2"))

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


async def seed(url: str) -> None:
    db = Database(url)
    try:
        await benchkit.seed_master_data(db)
        for batch in range(0, ORDERS, 50):
            async with transaction(db, SYSTEM) as uow:
                for i in range(batch, batch + 50):
                    await orders.upsert(uow, benchkit.order_spec(i))
    finally:
        await db.dispose()


async def statement_counts(url: str, token: str) -> dict[int, int]:
    """SQL statements the app sends for one read of `first` orders (in-process, same app)."""
    settings = Settings(
        database_url=url,
        secret_key=benchkit.SECRET_KEY,
        _env_file=None,  # type: ignore[call-arg]
    )
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
                        "/graphql",
                        json={"query": QUERY, "variables": {"first": first}},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    body = response.json()
                    assert "errors" not in body, body
                    assert len(body["data"]["productionOrders"]["edges"]) == first
                    counts[first] = len(seen)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    return counts


def compare(gql: bytes, base: bytes) -> dict[str, Any]:
    gql_json, base_json = json.loads(gql), json.loads(base)
    assert "errors" not in gql_json, gql_json["errors"]
    assert len(gql_json["data"]["productionOrders"]["edges"]) == 50
    return {
        "same_data": gql_json["data"] == base_json["data"],
        "same_bytes": gql == base,
        "bytes": len(gql),
    }


async def measure(
    gql: benchkit.Server, base: benchkit.Server, token: str
) -> tuple[dict[str, Any], list[benchkit.LoadResult], list[int]]:
    """(the response check, the load results, requests sent to each server in all)."""
    gql_request = benchkit.graphql_request(gql.port, QUERY, {"first": 50}, token)
    base_request = benchkit.http_request("GET", "/orders?first=50", base.port)
    status, gql_body = await benchkit.fetch(gql.port, gql_request)
    assert status == 200, gql_body[:500]
    status, base_body = await benchkit.fetch(base.port, base_request)
    assert status == 200, base_body[:500]
    check = compare(gql_body, base_body)
    assert check["same_data"], "the baseline must answer exactly what GraphQL answers"

    warmup = benchkit.seconds("MES_BENCH_WARMUP", 3)
    duration = benchkit.seconds("MES_BENCH_SECONDS", 10) / ROUNDS
    plan = [
        (benchkit.LoadResult("GraphQL (mes serve)", 0), gql, gql_request),
        (benchkit.LoadResult("baseline (asyncpg)", 0), base, base_request),
    ]
    sent = [1, 1]
    for k, (_, server, request) in enumerate(plan):
        warm = await benchkit.closed_loop("warm-up", server.port, request, CLIENTS, warmup)
        sent[k] += warm.requests + warm.errors
    for _ in range(ROUNDS):
        for total, server, request in plan:
            total.add(
                await benchkit.closed_loop(
                    total.name, server.port, request, CLIENTS, duration, server
                )
            )
    single = [
        await benchkit.closed_loop(f"{total.name}, 1 client", server.port, request, 1, 3, server)
        for total, server, request in plan
    ]
    for k, result in enumerate([plan[0][0], plan[1][0]]):
        sent[k] += result.requests + result.errors + single[k].requests + single[k].errors
    return check, [plan[0][0], plan[1][0], *single], sent


def test_orders_read(tmp_path: Path) -> None:
    url = benchkit.postgres_url("orders")
    # The baseline reads a copy: PostgreSQL's per-database figures then belong to one server.
    base_url = benchkit.postgres_url("orders_baseline")
    benchkit.banner(
        f"productionOrders(first: 50) over HTTP: {ORDERS} orders on PostgreSQL, {CLIENTS} clients"
    )
    started = time.perf_counter()
    benchkit.recreate_postgres(url)
    upgrade(url)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(seed(url))
        benchkit.report(f"seeded {ORDERS} orders in {time.perf_counter() - started:.1f} s")
        token = benchkit.mes(url, "create-token", "bench", "--role", "INTEGRATOR", cwd=tmp_path)
        counts = runner.run(statement_counts(url, token.strip()))
        benchkit.clone_postgres(url, base_url)
        before = [runner.run(benchkit.database_activity(u)) for u in (url, base_url)]
        base_port = benchkit.free_port()
        baseline_argv = [
            sys.executable,
            str(Path(__file__).with_name("baseline_orders.py")),
            f"--dsn={benchkit.asyncpg_dsn(base_url)}",
            f"--port={base_port}",
        ]
        env = benchkit.server_env(base_url)
        with (
            benchkit.mes_serve(url, tmp_path, tmp_path) as gql,
            benchkit.serve("baseline", baseline_argv, base_port, env, tmp_path, tmp_path) as base,
        ):
            check, results, sent = runner.run(measure(gql, base, token.strip()))
        # The servers have stopped, so their connections have reported everything.
        used = [
            runner.run(benchkit.database_activity(u)) - b
            for u, b in zip((url, base_url), before, strict=True)
        ]
    for u in (url, base_url):
        benchkit.drop_postgres(u)

    benchkit.report(
        f"response {check['bytes']} bytes; same data as the baseline: {check['same_data']}; "
        f"byte-identical: {check['same_bytes']}"
    )
    for result in results:
        benchkit.report(result.line())
    graphql, baseline, graphql_1, baseline_1 = results
    for name, activity, requests in zip(("GraphQL", "baseline"), used, sent, strict=True):
        benchkit.report(
            f"PostgreSQL for the {name} server, over all its {requests} requests: in statements "
            f"{activity.active_ms / requests:.2f} ms/req, {activity.sessions} connections opened"
        )
    benchkit.report(
        f"ratio GraphQL / baseline: {graphql.rate / baseline.rate:.3f} in requests/s "
        f"(aim >= 0.5); 1 client: {graphql_1.rate / baseline_1.rate:.3f}"
    )
    benchkit.report(
        f"SQL statements per request: {counts[10]} for 10 orders, {counts[50]} for 50 orders "
        f"(baseline: 5); whole benchmark {time.perf_counter() - started:.0f} s"
    )
    assert graphql.errors == 0
    assert baseline.errors == 0
    # 50 orders may need fewer statements than 10: when the orders' work centers already cover
    # every operation's, the operations' work-center batch is all DataLoader cache hits.
    assert counts[50] <= counts[10], "the statement count must not grow with the page"
