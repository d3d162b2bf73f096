"""Genealogy: `Lot.trace` both ways through GraphQL over HTTP, beside the same SQL, on PostgreSQL.

100,000 lots in 10 levels of 10,000 (level 1: received lots, levels 2-10: produced lots),
loaded with COPY. Lot j of level k+1 is made from lots j and j+1 of level k, and also j+2
when j is even (indices modulo 10,000): fan-in 2-3, fan-out 2-3, 225,000 links. The inputs
of a batch are neighbours in time, as on a real line (a raw lot is used by the next few
batches, not by batches spread over the year), so a trace widens by 2-3 lots per level
instead of exponentially: 207 links and 99 lots each way from the middle of the graph —
the size of a realistic recall. The links are loaded in shuffled order so that no trace
finds its rows conveniently side by side on disk.

Measured in the same run, one request at a time, interleaved, after a warm-up:
- GraphQL over HTTP to a real `mes serve`:
  `lot(number) { trace(direction) { depth inputLot { number } outputLot { number } } }`
  from a leaf (level 10) BACKWARD and from a root (level 1) FORWARD;
- the recursive SQL `backend.lots.service.trace` sends, captured as the app sends it
  (statement and parameters), run directly with asyncpg;
- every statement one GraphQL request sends (token, lot, trace, lot numbers), run directly
  with asyncpg one after the other: what PostgreSQL alone needs for the whole answer.
Printed: p50 (and p95) of each, the server's CPU per request, GraphQL ÷ trace SQL, the links
and lots each trace returns. Checked: every answer gives exactly the links (and depths) a
breadth-first walk of the generated graph gives, and the SQL returns as many rows.

Run: MES_BENCH=1 pytest tests/benchmarks/test_genealogy.py -s
MES_BENCH_TRACES (requests per measurement, default 30); MES_BENCH_DATABASE_URL names the
PostgreSQL server (database with a `_genealogy` suffix, dropped at the end).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import benchkit
import httpx
import uvloop
from sqlalchemy import event

from backend.app import create_app
from backend.catalog import service as catalog
from backend.catalog.models import MaterialKind
from backend.db import Database, utcnow
from backend.lots import service as lots
from backend.migrate import upgrade
from backend.principal import SYSTEM
from backend.settings import Settings
from backend.uow import transaction

LEVELS = 10
PER_LEVEL = 10_000
TRACES = int(os.environ.get("MES_BENCH_TRACES", "30"))
WARMUP = 5
LEAF = (LEVELS, PER_LEVEL // 2)  # (level, index)
ROOT = (1, PER_LEVEL // 2)

QUERY = """query Trace($number: String!, $direction: TraceDirection!) {
  lot(number: $number) {
    trace(direction: $direction) { depth inputLot { number } outputLot { number } }
  }
}"""


DEPTH_ONLY = """query Trace($number: String!, $direction: TraceDirection!) {
  lot(number: $number) { trace(direction: $direction) { depth } }
}"""
FLOOR = """query Lot($number: String!) { lot(number: $number) { number } }"""


def number(level: int, j: int) -> str:
    return f"G{level:02d}-{j:05d}"


def lot_id(level: int, j: int) -> int:
    return (level - 1) * PER_LEVEL + j + 1


def inputs(j: int) -> list[int]:
    """The lots of the level below that lot j is made from."""
    made_from = [j, (j + 1) % PER_LEVEL]
    if j % 2 == 0:
        made_from.append((j + 2) % PER_LEVEL)
    return made_from


def links() -> list[tuple[int, int]]:
    """(input lot id, output lot id) of the whole graph."""
    return [
        (lot_id(level, i), lot_id(level + 1, j))
        for level in range(1, LEVELS)
        for j in range(PER_LEVEL)
        for i in inputs(j)
    ]


def expected_trace(start: tuple[int, int], backward: bool) -> set[tuple[str, str, int]]:
    """(input number, output number, depth) of every link reachable, by breadth-first walk."""
    found: dict[tuple[str, str], int] = {}
    frontier = {start}
    depth = 0
    while frontier:
        depth += 1
        reached: set[tuple[int, int]] = set()
        for level, j in frontier:
            if backward and level > 1:
                pairs = [((level - 1, i), (level, j)) for i in inputs(j)]
                reached.update(p[0] for p in pairs)
            elif not backward and level < LEVELS:
                pairs = [
                    ((level, j), (level + 1, out))
                    for out in ((j - 2) % PER_LEVEL, (j - 1) % PER_LEVEL, j)
                    if j in inputs(out)
                ]
                reached.update(p[1] for p in pairs)
            else:
                pairs = []
            for a, b in pairs:
                found.setdefault((number(*a), number(*b)), depth)
        frontier = reached
    return {(a, b, d) for (a, b), d in found.items()}


# ---------------------------------------------------------------- seeding


async def seed(url: str) -> float:
    """Materials through the service layer; lots and links with COPY. Returns seconds."""
    db = Database(url)
    try:
        async with transaction(db, SYSTEM) as uow:
            await catalog.upsert_materials(
                uow,
                [
                    catalog.MaterialSpec(
                        f"GEN-L{level:02d}",
                        f"Genealogy level {level}",
                        MaterialKind.RAW if level == 1 else MaterialKind.INTERMEDIATE,
                        "kg",
                        lot_controlled=True,
                    )
                    for level in range(1, LEVELS + 1)
                ],
            )
    finally:
        await db.dispose()
    started = time.perf_counter()
    conn = await asyncpg.connect(benchkit.asyncpg_dsn(url))
    try:
        materials = dict(await conn.fetch("SELECT code, id FROM materials"))
        now = utcnow()
        expires = now + dt.timedelta(days=365)
        quantity = Decimal(100)
        await conn.copy_records_to_table(
            "lots",
            columns=[
                "id",
                "number",
                "material_id",
                "quantity",
                "initial_quantity",
                "status",
                "expires_at",
                "created_by",
                "created_at",
                "updated_at",
            ],
            records=[
                (
                    lot_id(level, j),
                    number(level, j),
                    materials[f"GEN-L{level:02d}"],
                    quantity,
                    quantity,
                    "AVAILABLE",
                    expires,
                    "bench",
                    now,
                    now,
                )
                for level in range(1, LEVELS + 1)
                for j in range(PER_LEVEL)
            ],
        )
        await conn.execute("SELECT setval(pg_get_serial_sequence('lots', 'id'), max(id)) FROM lots")
        pairs = links()
        random.Random(7).shuffle(pairs)
        await conn.copy_records_to_table(
            "genealogy_links",
            columns=["input_lot_id", "output_lot_id", "quantity", "at"],
            records=[(i, o, Decimal(10), now) for i, o in pairs],
        )
        await conn.execute("ANALYZE lots")
        await conn.execute("ANALYZE genealogy_links")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM lots) AS lots, "
            "(SELECT count(*) FROM genealogy_links) AS links"
        )
        assert counts["lots"] == LEVELS * PER_LEVEL
        assert counts["links"] == len(pairs)
    finally:
        await conn.close()
    return time.perf_counter() - started


# ---------------------------------------------------------------- the SQL the app sends


@dataclass
class Statement:
    sql: str
    parameters: tuple[Any, ...]


@dataclass
class Captured:
    trace: Statement  # the recursive query of `backend.lots.service.trace`
    request: list[Statement]  # everything one GraphQL request sends


async def capture(url: str, token: str, start: tuple[int, int], backward: bool) -> Captured:
    """The statements as the app sends them to asyncpg (text and bound parameters)."""
    settings = Settings(
        database_url=url,
        secret_key=benchkit.SECRET_KEY,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings)
    seen: list[Statement] = []
    async with app.router.lifespan_context(app):
        db = app.state.services.db
        engine = db.engine.sync_engine

        def record(*args: Any) -> None:
            # The in-process expiry job may run meanwhile: its statements are not ours.
            if "SKIP LOCKED" not in args[2]:
                seen.append(Statement(args[2], tuple(args[3] or ())))

        event.listen(engine, "before_cursor_execute", record)
        try:
            async with db.read() as session:
                steps = await lots.trace(session, lot_id(*start), backward, None)
            assert steps, "the trace must find links"
            assert len(seen) == 1, [s.sql for s in seen]
            trace = seen[0]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for _ in range(2):  # the first warms the caches
                    seen.clear()
                    response = await client.post(
                        "/graphql",
                        json={"query": QUERY, "variables": variables(start, backward)},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    body = response.json()
                    assert "errors" not in body, body
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert any(s.sql == trace.sql and s.parameters == trace.parameters for s in seen)
    return Captured(trace, list(seen))


def variables(start: tuple[int, int], backward: bool) -> dict[str, str]:
    return {"number": number(*start), "direction": "BACKWARD" if backward else "FORWARD"}


# ---------------------------------------------------------------- measuring


@dataclass
class Series:
    name: str
    seconds: list[float]
    cpu: float | None = None

    def p(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def line(self, links: int) -> str:
        cpu = f"; server CPU {1000 * self.cpu / len(self.seconds):.2f} ms/req" if self.cpu else ""
        return (
            f"{self.name:<48} p50 {self.p(50):7.2f} ms  p95 {self.p(95):7.2f} ms  "
            f"mean {1000 * statistics.fmean(self.seconds):7.2f} ms  ({links} links{cpu})"
        )


def answer_links(body: bytes) -> set[tuple[str, str, int]]:
    answer = json.loads(body)
    assert "errors" not in answer, answer["errors"]
    trace = answer["data"]["lot"]["trace"]
    found = {(t["inputLot"]["number"], t["outputLot"]["number"], t["depth"]) for t in trace}
    assert len(found) == len(trace), "each link once"
    return found


async def measure(
    server: benchkit.Server, token: str, captured: dict[bool, Captured], dsn: str
) -> tuple[dict[str, Series], dict[bool, int]]:
    """Interleaved: each round sends every measurement once, so noise hits them alike."""
    conn = await asyncpg.connect(dsn)
    results: dict[str, Series] = {}
    rows: dict[bool, int] = {}
    try:
        async with benchkit.Connection.open(server.port) as http:
            plan: list[tuple[str, Callable[[], Awaitable[Any]], bool]] = []
            for backward, start, label in (
                (True, LEAF, "leaf BACKWARD"),
                (False, ROOT, "root FORWARD"),
            ):
                request = benchkit.graphql_request(
                    server.port, QUERY, variables(start, backward), token
                )
                expected = expected_trace(start, backward)

                async def graphql(request: bytes = request, expected: Any = expected) -> None:
                    status, body = await http.exchange(request)
                    assert status == 200, body[:300]
                    assert answer_links(body) == expected

                trace = captured[backward].trace

                async def trace_sql(trace: Statement = trace, backward: bool = backward) -> None:
                    found = await conn.fetch(trace.sql, *trace.parameters)
                    rows[backward] = len(found)

                async def whole(statements: list[Statement] = captured[backward].request) -> None:
                    for statement in statements:
                        await conn.fetch(statement.sql, *statement.parameters)

                plan += [
                    (f"GraphQL over HTTP, {label}", graphql, True),
                    (f"trace SQL via asyncpg, {label}", trace_sql, False),
                    (
                        f"all {len(captured[backward].request)} statements via asyncpg, {label}",
                        whole,
                        False,
                    ),
                ]
            # Where the time goes: the same trace without the nested lots, and a request that
            # reads one lot (what any GraphQL request over HTTP costs here at least).
            depth_only = benchkit.graphql_request(
                server.port, DEPTH_ONLY, variables(LEAF, True), token
            )
            depths = sorted(d for _, _, d in expected_trace(LEAF, True))
            floor = benchkit.graphql_request(server.port, FLOOR, {"number": number(*LEAF)}, token)

            async def graphql_depths() -> None:
                status, body = await http.exchange(depth_only)
                assert status == 200, body[:300]
                found = json.loads(body)["data"]["lot"]["trace"]
                assert sorted(t["depth"] for t in found) == depths

            async def graphql_floor() -> None:
                status, body = await http.exchange(floor)
                assert status == 200, body[:300]
                assert json.loads(body)["data"]["lot"]["number"] == number(*LEAF)

            plan += [
                ("GraphQL, trace { depth } only, leaf BACKWARD", graphql_depths, True),
                ("GraphQL, lot(number) { number } only", graphql_floor, True),
            ]
            for _, call, _ in plan * WARMUP:
                await call()
            for name, _, _ in plan:
                results[name] = Series(name, [], 0.0)
            for _ in range(TRACES):
                for name, call, on_server in plan:
                    cpu = server.cpu_seconds() if on_server else 0.0
                    started = time.perf_counter()
                    await call()
                    results[name].seconds.append(time.perf_counter() - started)
                    if on_server:
                        results[name].cpu = (results[name].cpu or 0.0) + server.cpu_seconds() - cpu
    finally:
        await conn.close()
    return results, rows


def test_genealogy(tmp_path: Path) -> None:
    url = benchkit.postgres_url("genealogy")
    benchkit.banner(
        f"Lot.trace over HTTP: {LEVELS * PER_LEVEL:,} lots in {LEVELS} levels, fan-in and "
        "fan-out 2-3, on PostgreSQL"
    )
    started = time.perf_counter()
    benchkit.recreate_postgres(url)
    upgrade(url)
    expected = {True: expected_trace(LEAF, True), False: expected_trace(ROOT, False)}
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        loading = runner.run(seed(url))
        total_links = len(links())
        benchkit.report(
            f"loaded {LEVELS * PER_LEVEL:,} lots and {total_links:,} links with COPY in "
            f"{loading:.1f} s (whole setup {time.perf_counter() - started:.1f} s)"
        )
        token = benchkit.mes(url, "create-token", "recall", "--role", "QUALITY", cwd=tmp_path)
        token = token.strip()
        captured = {
            backward: runner.run(capture(url, token, start, backward))
            for backward, start in ((True, LEAF), (False, ROOT))
        }
        with benchkit.mes_serve(url, tmp_path, tmp_path) as server:
            results, rows = runner.run(measure(server, token, captured, benchkit.asyncpg_dsn(url)))
    benchkit.drop_postgres(url)

    for backward, start, label in ((True, LEAF, "leaf"), (False, ROOT, "root")):
        links_found = expected[backward]
        lots_reached = {a if backward else b for a, b, _ in links_found}
        depth = max(d for _, _, d in links_found)
        benchkit.report(
            f"from the {label} {number(*start)} {'BACKWARD' if backward else 'FORWARD'}: "
            f"{len(links_found)} links, {len(lots_reached)} lots reached, depth {depth}; "
            f"the trace SQL returns {rows[backward]} rows"
        )
    for name, series in results.items():
        links_in_answer = 0 if "only" in name and "depth" not in name else None
        backward = "BACKWARD" in name
        benchkit.report(
            series.line(len(expected[backward]) if links_in_answer is None else links_in_answer)
        )
    for label in ("leaf BACKWARD", "root FORWARD"):
        gql = results[f"GraphQL over HTTP, {label}"]
        sql = results[f"trace SQL via asyncpg, {label}"]
        whole = next(s for n, s in results.items() if n.startswith("all ") and n.endswith(label))
        benchkit.report(
            f"{label}: GraphQL / trace SQL p50 {gql.p(50) / sql.p(50):.2f} (aim <= 2), "
            f"GraphQL / all its statements {gql.p(50) / whole.p(50):.2f}; "
            f"GraphQL p50 {gql.p(50):.1f} ms (aim < 50 ms)"
        )
    for backward in (True, False):
        benchkit.report(
            f"statements of one {'BACKWARD' if backward else 'FORWARD'} request: "
            + "; ".join(" ".join(s.sql.split())[:60] for s in captured[backward].request)
        )
    benchkit.report(f"whole benchmark {time.perf_counter() - started:.0f} s")
    for backward in (True, False):
        assert rows[backward] == len(expected[backward])
