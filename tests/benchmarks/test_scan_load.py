"""Scanning under load: 50 operators scanning lots into their own orders over HTTP, on PostgreSQL.

Each operator is a user of their own (role OPERATOR, signed token), with a RELEASED order of
their own that uses one raw material, and 20 AVAILABLE lots of that material. Each sends
`scanLot` back to back over one keep-alive connection: a GS1 code `(01)GTIN(10)LOT` for the
next of their lots in turn, an explicit quantity of 1.5 (so no lot runs out), a new
clientMutationId every time. After a warm-up, 10 s measured against a real `mes serve`.

Baselines in the same run, each on a copy of the seeded database, 50 asyncpg tasks with a
connection each, every scan one transaction:
- "guarded UPDATE + INSERT": the writes a scan cannot do without — the guarded UPDATE of the
  lot (status and quantity re-checked at write time), the component's consumed quantity, the
  consumption row;
- "+ outcome + audit": the same plus what the API also writes in that transaction — the
  replay outcome row and one hash-chained audit entry under the chain's advisory lock.
API ÷ baseline is what HTTP, GraphQL, the ORM and the checks cost on top of the writes.

Printed: scans/s, p50/p95/p99, server CPU per scan, PostgreSQL time in statements and
transactions per scan, the same for one operator alone, the ratios, and the SQL statements
the app sends for one scan (counted in-process). Checked afterwards on every database: one
consumption row per successful scan, each lot's quantity = initial - its consumptions (and
what the clients saw accepted), every component's consumed quantity = its consumptions.

Run: MES_BENCH=1 pytest tests/benchmarks/test_scan_load.py -s
MES_BENCH_SECONDS (measured seconds, default 10), MES_BENCH_WARMUP (default 3),
MES_BENCH_OPERATORS (default 50), MES_BENCH_WORKERS (`mes serve --workers`, default 1),
MES_BENCH_PYSPY=FILE (records the server under load with py-spy into FILE: an SVG flame graph,
a speedscope JSON when FILE ends in .json, collapsed stacks when it ends in .txt).
Databases: MES_BENCH_DATABASE_URL with a `_scan*` suffix, dropped at the end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import benchkit
import httpx
import uvloop
from sqlalchemy import event, insert, text

from backend.app import create_app
from backend.audit.service import GENESIS_HASH, entry_hash, jsonable
from backend.auth.models import User
from backend.auth.service import hash_password, issue_user_token
from backend.catalog import service as catalog
from backend.catalog.models import MaterialKind
from backend.db import Database, utcnow
from backend.lots.models import Lot, LotStatus
from backend.migrate import upgrade
from backend.orders import service as orders
from backend.principal import SYSTEM, Role
from backend.settings import Settings
from backend.uow import transaction

OPERATORS = int(os.environ.get("MES_BENCH_OPERATORS", "50"))
WORKERS = int(os.environ.get("MES_BENCH_WORKERS", "1"))
LOTS_PER_OPERATOR = 20
LOT_QUANTITY = Decimal(1000)
SCAN_QUANTITY = Decimal("1.5")

MUTATION = """mutation Scan($input: ScanLotInput!) {
  scanLot(input: $input) {
    lot { number quantity status }
    consumption { quantity consumedAt }
    errors { code field message }
  }
}"""


def gtin(n: int) -> str:
    """A valid GTIN-14 (GS1 check digit) for raw material n."""
    body = f"0735005385{n:03d}"
    total = sum(int(d) * (3 if k % 2 == 0 else 1) for k, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def material_code(op: int) -> str:
    return f"SCAN-RM-{op:03d}"


def order_number(op: int) -> str:
    return f"SCAN-PO-{op:03d}"


def lot_number(op: int, k: int) -> str:
    return f"S{op:03d}-{k:02d}"


@dataclass
class Ledger:
    """What the clients saw accepted: scans and quantity taken per lot number."""

    scans: int = 0
    taken: Counter[str] = field(default_factory=Counter)


class Operator:
    """One operator's script for `benchkit.scripted_loop`: their next scan, and its verdict."""

    def __init__(self, op: int, token: str, port: int, ledger: Ledger, run: str) -> None:
        self.op, self.token, self.port, self.ledger, self.run = op, token, port, ledger, run
        self.count = itertools.count()
        self.pending: str | None = None
        self.refusals: Counter[str] = Counter()

    def next_request(self) -> bytes:
        n = next(self.count)
        self.pending = lot_number(self.op, n % LOTS_PER_OPERATOR)
        variables = {
            "input": {
                "clientMutationId": f"{self.run}-{self.op}-{n}",
                "code": f"(01){gtin(self.op)}(10){self.pending}",
                "orderNumber": order_number(self.op),
                "quantity": str(SCAN_QUANTITY),
            }
        }
        return benchkit.graphql_request(self.port, MUTATION, variables, self.token)

    def accept(self, status: int, body: bytes) -> bool:
        if status != 200:
            self.refusals[f"HTTP {status}"] += 1
            return False
        answer = json.loads(body)
        payload = (answer.get("data") or {}).get("scanLot")
        if answer.get("errors") or payload is None or payload["errors"]:
            problems = answer.get("errors") or (payload or {}).get("errors")
            self.refusals[json.dumps(problems)[:200]] += 1
            return False
        assert payload["lot"]["number"] == self.pending, payload
        assert Decimal(payload["consumption"]["quantity"]) == SCAN_QUANTITY, payload
        self.ledger.scans += 1
        assert self.pending is not None
        self.ledger.taken[self.pending] += SCAN_QUANTITY
        return True


# ---------------------------------------------------------------- seeding


async def seed(url: str) -> dict[int, str]:
    """Materials, released orders, operators and lots; returns each operator's token."""
    db = Database(url)
    try:
        async with transaction(db, SYSTEM) as uow:
            await catalog.upsert_materials(
                uow,
                [
                    catalog.MaterialSpec(
                        "SCAN-FG", "Scanned product", MaterialKind.FINISHED, "pcs", True
                    ),
                    *(
                        catalog.MaterialSpec(
                            material_code(op),
                            f"Scanned material {op}",
                            MaterialKind.RAW,
                            "kg",
                            lot_controlled=True,
                            gtin=gtin(op),
                        )
                        for op in range(OPERATORS)
                    ),
                ],
            )
        async with transaction(db, SYSTEM) as uow:
            for op in range(OPERATORS):
                await orders.upsert(
                    uow,
                    orders.OrderSpec(
                        external_id=f"ERP-{order_number(op)}",
                        number=order_number(op),
                        product_code="SCAN-FG",
                        quantity=Decimal(100),
                        components=[orders.ComponentSpec(material_code(op), Decimal(5000), 10)],
                        operations=[orders.OperationSpec(10, "Mix")],
                    ),
                )
        async with transaction(db, SYSTEM) as uow:
            for op in range(OPERATORS):
                await orders.release(uow, order_number(op))
        password_hash = hash_password("bench-password-0123")  # once: argon2 is slow on purpose
        now = utcnow()
        async with db.write() as session:
            await session.execute(
                insert(User),
                [
                    {
                        "username": f"operator-{op:03d}",
                        "display_name": f"Operator {op}",
                        "password_hash": password_hash,
                        "roles": [Role.OPERATOR.value],
                        "active": True,
                        "created_at": now,
                    }
                    for op in range(OPERATORS)
                ],
            )
            materials = dict(
                (
                    await session.execute(
                        text("SELECT code, id FROM materials WHERE code LIKE 'SCAN-RM-%'")
                    )
                ).all()
            )
            await session.execute(
                insert(Lot),
                [
                    {
                        "number": lot_number(op, k),
                        "material_id": materials[material_code(op)],
                        "quantity": LOT_QUANTITY,
                        "initial_quantity": LOT_QUANTITY,
                        "status": LotStatus.AVAILABLE,
                        "expires_at": now + dt.timedelta(days=365),
                        "created_by": "bench",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for op in range(OPERATORS)
                    for k in range(LOTS_PER_OPERATOR)
                ],
            )
            users = (
                await session.execute(
                    text("SELECT id, username FROM users WHERE username LIKE 'operator-%'")
                )
            ).all()
        settings = Settings(
            database_url=url,
            secret_key=benchkit.SECRET_KEY,
            _env_file=None,  # type: ignore[call-arg]
        )
        tokens = {}
        for user_id, username in users:
            user = User(id=user_id, username=username)
            tokens[int(username.split("-")[1])] = issue_user_token(settings, user)
        return tokens
    finally:
        await db.dispose()


# ---------------------------------------------------------------- in-process count


async def statements_per_scan(url: str, token: str, ledger: Ledger) -> tuple[int, list[str]]:
    """SQL statements the app sends for one scan (operator 0, in-process, warmed up)."""
    settings = Settings(
        database_url=url,
        secret_key=benchkit.SECRET_KEY,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings)
    seen: list[str] = []
    async with app.router.lifespan_context(app):
        engine = app.state.services.db.engine.sync_engine

        def count(*args: Any) -> None:
            seen.append(" ".join(str(args[2]).split())[:90])

        event.listen(engine, "before_cursor_execute", count)
        try:
            transport = httpx.ASGITransport(app=app)
            script = Operator(0, token, 0, ledger, "inproc")
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                for _ in range(3):  # the first ones warm the caches
                    seen.clear()
                    request = script.next_request()
                    body = request.split(b"\r\n\r\n", 1)[1]
                    response = await client.post(
                        "/graphql",
                        content=body,
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Content-Type": "application/json",
                        },
                    )
                    assert script.accept(response.status_code, response.content), response.text
        finally:
            event.remove(engine, "before_cursor_execute", count)
    return len(seen), list(seen)


# ---------------------------------------------------------------- baselines


@dataclass
class Target:
    op: int
    order_id: int
    component_id: int
    user_id: int
    username: str
    lots: list[tuple[int, str]]  # (id, number)


async def targets(conn: asyncpg.Connection) -> list[Target]:
    rows = await conn.fetch(
        """SELECT o.number, o.id AS order_id, c.id AS component_id, u.id AS user_id,
                  u.username, l.id AS lot_id, l.number AS lot_number
           FROM production_orders o
           JOIN order_components c ON c.order_id = o.id
           JOIN lots l ON l.material_id = c.material_id
           JOIN users u ON u.username = 'operator-' || substr(o.number, 9)
           WHERE o.number LIKE 'SCAN-PO-%'
           ORDER BY o.number, l.number"""
    )
    found: dict[int, Target] = {}
    for row in rows:
        op = int(row["number"].rsplit("-", 1)[1])
        target = found.setdefault(
            op,
            Target(op, row["order_id"], row["component_id"], row["user_id"], row["username"], []),
        )
        target.lots.append((row["lot_id"], row["lot_number"]))
    assert len(found) == OPERATORS
    assert all(len(t.lots) == LOTS_PER_OPERATOR for t in found.values())
    return [found[op] for op in range(OPERATORS)]


TAKE = """UPDATE lots SET quantity = quantity - $2,
    status = CASE WHEN quantity - $2 = 0 THEN 'CONSUMED' ELSE status END, updated_at = $3
WHERE id = $1 AND status = 'AVAILABLE' AND quantity >= $2 RETURNING quantity, status"""
COMPONENT = "UPDATE order_components SET quantity_consumed = quantity_consumed + $2 WHERE id = $1"
CONSUME = """INSERT INTO consumptions (lot_id, order_id, component_id, operation_sequence,
    quantity, consumed_at, recorded_at, late_entry, consumed_by_id, consumed_by, raw_code)
VALUES ($1, $2, $3, 10, $4, $5, $5, false, $6, $7, $8) RETURNING id"""
OUTCOME = """INSERT INTO mutation_outcomes (principal, client_mutation_id, operation,
    request_hash, outcome, succeeded, subject_type, subject_key, created_at)
VALUES ($1, $2, 'scanLot', $3, $4, true, 'ProductionOrder', $5, $6)"""
LOCK = "SELECT pg_advisory_xact_lock(1296388929)"  # backend.audit.service._LOCK_KEY
LAST = "SELECT sequence, hash FROM audit_entries ORDER BY sequence DESC LIMIT 1"
AUDIT = """INSERT INTO audit_entries (sequence, at, actor, action, entity_type, entity_id,
    changes, prev_hash, hash) VALUES ($1, $2, $3, 'lot.consume', 'Lot', $4, $5, $6, $7)"""


def direct_scanner(pool: asyncpg.Pool, target: Target, ledger: Ledger, full: bool, run: str) -> Any:
    """One operator's scan as plain SQL in one transaction; `full` adds outcome and audit."""
    count = itertools.count()

    async def scan() -> bool:
        n = next(count)
        lot_id, number = target.lots[n % LOTS_PER_OPERATOR]
        now = utcnow()
        code = f"(01){gtin(target.op)}(10){number}"
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(TAKE, lot_id, SCAN_QUANTITY, now)
            if row is None:
                return False
            await conn.execute(COMPONENT, target.component_id, SCAN_QUANTITY)
            consumption_id = await conn.fetchval(
                CONSUME,
                lot_id,
                target.order_id,
                target.component_id,
                SCAN_QUANTITY,
                now,
                target.user_id,
                target.username,
                code,
            )
            if full:
                await conn.execute(
                    OUTCOME,
                    f"user:{target.user_id}",
                    f"{run}-{target.op}-{n}",
                    hashlib.sha256(code.encode()).hexdigest(),
                    json.dumps({"refs": {"lot": lot_id, "consumption": consumption_id}}),
                    order_number(target.op),
                    now,
                )
                changes = jsonable(
                    {
                        "order": order_number(target.op),
                        "material": material_code(target.op),
                        "quantity": SCAN_QUANTITY,
                        "remaining": row["quantity"],
                        "status": row["status"],
                        "scannedAt": now,
                        "lateEntry": False,
                    }
                )
                await conn.execute(LOCK)
                last = await conn.fetchrow(LAST)
                sequence, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
                digest = entry_hash(
                    sequence=sequence,
                    at=now,
                    actor=target.username,
                    action="lot.consume",
                    entity_type="Lot",
                    entity_id=str(lot_id),
                    changes=changes,
                    prev_hash=prev,
                )
                await conn.execute(
                    AUDIT,
                    sequence,
                    now,
                    target.username,
                    str(lot_id),
                    json.dumps(changes),
                    prev,
                    digest,
                )
        ledger.scans += 1
        ledger.taken[number] += SCAN_QUANTITY
        return True

    return scan


async def run_baseline(
    url: str, name: str, full: bool, warmup: float, duration: float
) -> tuple[benchkit.LoadResult, Ledger]:
    ledger = Ledger()
    pool = await asyncpg.create_pool(
        benchkit.asyncpg_dsn(url), min_size=OPERATORS, max_size=OPERATORS
    )
    try:
        async with pool.acquire() as conn:
            found = await targets(conn)
        tasks = [direct_scanner(pool, t, ledger, full, "warm") for t in found]
        await benchkit.task_loop("warm-up", tasks, warmup)
        tasks = [direct_scanner(pool, t, ledger, full, "run") for t in found]
        cpu = time.process_time()
        result = await benchkit.task_loop(name, tasks, duration)
        result.cpu_seconds = time.process_time() - cpu
    finally:
        await pool.close()
    return result, ledger


# ---------------------------------------------------------------- checks and figures


async def verify(url: str, ledger: Ledger) -> str:
    """Consumptions = accepted scans; each lot = initial - its consumptions = what was seen."""
    conn = await asyncpg.connect(benchkit.asyncpg_dsn(url))
    try:
        consumptions = await conn.fetchval("SELECT count(*) FROM consumptions")
        assert consumptions == ledger.scans, (consumptions, ledger.scans)
        lots = await conn.fetch(
            """SELECT l.number, l.initial_quantity, l.quantity, l.status,
                      coalesce(sum(c.quantity), 0) AS used
               FROM lots l LEFT JOIN consumptions c ON c.lot_id = l.id
               GROUP BY l.id"""
        )
        assert len(lots) == OPERATORS * LOTS_PER_OPERATOR
        for lot in lots:
            assert lot["quantity"] == lot["initial_quantity"] - lot["used"], dict(lot)
            assert lot["used"] == ledger.taken[lot["number"]], dict(lot)
            assert lot["status"] == LotStatus.AVAILABLE.value, dict(lot)
        components = await conn.fetch(
            """SELECT c.id, c.quantity_consumed, coalesce(sum(k.quantity), 0) AS used
               FROM order_components c LEFT JOIN consumptions k ON k.component_id = c.id
               GROUP BY c.id"""
        )
        for component in components:
            assert component["quantity_consumed"] == component["used"], dict(component)
        taken = sum(lot["used"] for lot in lots)
    finally:
        await conn.close()
    return f"{consumptions} consumption rows = {ledger.scans} accepted scans; {taken} taken"


async def transactions(url: str) -> int:
    """Committed + rolled-back transactions so far in the database (pg_stat_database)."""
    conn = await asyncpg.connect(benchkit.asyncpg_dsn(url))
    try:
        value = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(value)


def figures(result: benchkit.LoadResult, extra: str = "") -> str:
    ms = [1000 * result.percentile(p) for p in (50, 95, 99)]
    per = max(1, result.requests)
    cpu = (
        f"; CPU {1000 * result.cpu_seconds / per:.2f} ms/scan"
        if result.cpu_seconds is not None
        else ""
    )
    return (
        f"{result.name:<40} {result.rate:7.1f} scans/s  p50 {ms[0]:6.1f}  p95 {ms[1]:6.1f}  "
        f"p99 {ms[2]:6.1f} ms  ({result.requests} scans, {result.errors} errors{cpu}{extra})"
    )


def start_py_spy(pid: int, duration: float) -> subprocess.Popen[bytes] | None:
    target = os.environ.get("MES_BENCH_PYSPY")
    if not target:
        return None
    formats = {".json": "speedscope", ".txt": "raw"}
    fmt = ["--format", formats.get(Path(target).suffix, "flamegraph")]
    return subprocess.Popen(
        [
            str(benchkit.BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--duration",
            str(int(duration)),
            "--rate",
            "200",
            "--output",
            target,
            *fmt,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class ApiRun:
    many: benchkit.LoadResult
    alone: benchkit.LoadResult
    operators: list[Operator]
    client_cpu: float  # the load generator's CPU during the measured run


async def load(
    server: benchkit.Server, tokens: dict[int, str], ledger: Ledger, warmup: float, duration: float
) -> ApiRun:
    def scripts(run: str, count: int) -> list[Operator]:
        return [Operator(op, tokens[op], server.port, ledger, run) for op in range(count)]

    await benchkit.scripted_loop("warm-up", server.port, scripts("warm", OPERATORS), warmup)
    operators = scripts("run", OPERATORS)
    spy = start_py_spy(server.process.pid, duration)
    client_cpu = time.process_time()
    many = await benchkit.scripted_loop(
        f"GraphQL scanLot, {OPERATORS} operators", server.port, operators, duration, server
    )
    client_cpu = time.process_time() - client_cpu
    if spy is not None:
        spy.wait(30)
    alone = await benchkit.scripted_loop(
        "GraphQL scanLot, 1 operator", server.port, scripts("alone", 1), 3, server
    )
    return ApiRun(many, alone, operators, client_cpu)


def test_scan_load(tmp_path: Path) -> None:
    url = benchkit.postgres_url("scan")
    copies = {
        "minimal": benchkit.postgres_url("scan_minimal"),
        "full": benchkit.postgres_url("scan_full"),
    }
    warmup = benchkit.seconds("MES_BENCH_WARMUP", 3)
    duration = benchkit.seconds("MES_BENCH_SECONDS", 10)
    benchkit.banner(
        f"scanLot over HTTP: {OPERATORS} operators, each into their own order, on PostgreSQL "
        f"(mes serve --workers {WORKERS})"
    )
    started = time.perf_counter()
    benchkit.recreate_postgres(url)
    upgrade(url)
    ledger = Ledger()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        tokens = runner.run(seed(url))
        for copy in copies.values():
            benchkit.clone_postgres(url, copy)
        benchkit.report(
            f"seeded {OPERATORS} operators, orders and {OPERATORS * LOTS_PER_OPERATOR} lots "
            f"in {time.perf_counter() - started:.1f} s"
        )
        statements, sql = runner.run(statements_per_scan(url, tokens[0], ledger))
        before = runner.run(benchkit.database_activity(url))
        xacts = runner.run(transactions(url))
        scans_before = ledger.scans
        with benchkit.mes_serve(url, tmp_path, tmp_path, workers=WORKERS) as server:
            api = runner.run(load(server, tokens, ledger, warmup, duration))
        used = runner.run(benchkit.database_activity(url)) - before
        xacts = runner.run(transactions(url)) - xacts
        api_check = runner.run(verify(url, ledger))

        baselines = []
        for kind, name in (
            ("minimal", "baseline: guarded UPDATE + INSERT"),
            ("full", "baseline: + outcome + audit entry"),
        ):
            copy_before = runner.run(benchkit.database_activity(copies[kind]))
            result, copy_ledger = runner.run(
                run_baseline(copies[kind], name, kind == "full", warmup, duration)
            )
            result.database = runner.run(benchkit.database_activity(copies[kind])) - copy_before
            check = runner.run(verify(copies[kind], copy_ledger))
            baselines.append((result, copy_ledger, check))
    for u in (url, *copies.values()):
        benchkit.drop_postgres(u)

    many, alone = api.many, api.alone
    sent = ledger.scans - scans_before + sum(sum(o.refusals.values()) for o in api.operators)
    per_scan = 1000 * api.client_cpu / max(1, many.requests)
    benchkit.report(figures(many, f"; load generator CPU {per_scan:.2f} ms/scan"))
    benchkit.report(figures(alone))
    for result, _, _ in baselines:
        active = result.database.active_ms / max(1, result.requests) if result.database else 0
        benchkit.report(
            figures(result, f"; PostgreSQL in statements {active:.2f} ms/scan").replace(
                "; CPU", "; client CPU"
            )
        )
    benchkit.report(
        f"PostgreSQL for the API, over all its {sent} scans and the warm-up: in statements "
        f"{used.active_ms / max(1, sent):.2f} ms/scan, {xacts / max(1, sent):.2f} "
        f"transactions/scan, {used.sessions} connections opened"
    )
    benchkit.report(
        f"SQL statements the app sends for one scan: {statements} (BEGIN/COMMIT and pool "
        "pings not counted)"
    )
    for line in sql:
        benchkit.report(f"    {line}")
    (minimal, _, minimal_check), (full, _, full_check) = baselines
    benchkit.report(
        f"ratio API / baseline in scans/s: {many.rate / minimal.rate:.3f} against the guarded "
        f"UPDATE + INSERT, {many.rate / full.rate:.3f} against the same writes as the API"
    )
    benchkit.report(
        f"aim >= 300 scans/s with p95 < 100 ms: {many.rate:.0f} scans/s, "
        f"p95 {1000 * many.percentile(95):.1f} ms -> "
        f"{'met' if many.rate >= 300 and many.percentile(95) < 0.1 else 'MISSED'}"
    )
    benchkit.report(f"checked: API {api_check}")
    benchkit.report(f"checked: baseline (minimal) {minimal_check}")
    benchkit.report(f"checked: baseline (full) {full_check}")
    benchkit.report(f"whole benchmark {time.perf_counter() - started:.0f} s")
    refusals = Counter[str]()
    for operator in api.operators:
        refusals.update(operator.refusals)
    assert many.errors == 0, refusals.most_common(5)
    assert alone.errors == 0, refusals.most_common(5)
    assert minimal.errors == 0
    assert full.errors == 0
