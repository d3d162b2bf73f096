"""The baseline for the orders read: Starlette + asyncpg + hand-built JSON, no GraphQL, no ORM.

`GET /orders?first=N` answers exactly what
`productionOrders(first: N) { edges { node { number status quantity product { code name }
workCenter { code name } operations { sequence name status workCenter { code } }
components { quantityRequired material { code name } } } } }` answers, from the same data,
with the queries a careful hand would write: the page, then the operations, components,
materials and work centers keyed by the page's ids (5 statements, one pooled connection).

Run: python baseline_orders.py --port P --dsn postgresql://...
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PAGE = (
    "SELECT id, number, status, quantity, product_id, work_center_id FROM production_orders"
    " ORDER BY id LIMIT $1"
)
OPERATIONS = (
    "SELECT order_id, sequence, name, status, work_center_id FROM order_operations"
    " WHERE order_id = ANY($1::int[]) ORDER BY order_id, sequence"
)
COMPONENTS = (
    "SELECT order_id, quantity_required, material_id FROM order_components"
    " WHERE order_id = ANY($1::int[]) ORDER BY order_id, position"
)
MATERIALS = "SELECT id, code, name FROM materials WHERE id = ANY($1::int[])"
WORK_CENTERS = "SELECT id, code, name FROM work_centers WHERE id = ANY($1::int[])"


async def orders_page(pool: asyncpg.Pool, first: int) -> dict[str, Any]:
    async with pool.acquire() as conn:
        # One more row than asked, as the GraphQL server does to know whether a next page exists.
        page = (await conn.fetch(PAGE, first + 1))[:first]
        ids = [r["id"] for r in page]
        operations = await conn.fetch(OPERATIONS, ids)
        components = await conn.fetch(COMPONENTS, ids)
        material_ids = {r["product_id"] for r in page} | {r["material_id"] for r in components}
        center_ids = (
            {r["work_center_id"] for r in page} | {r["work_center_id"] for r in operations}
        ) - {None}
        materials = {
            r["id"]: {"code": r["code"], "name": r["name"]}
            for r in await conn.fetch(MATERIALS, list(material_ids))
        }
        centers = {
            r["id"]: (r["code"], r["name"])
            for r in await conn.fetch(WORK_CENTERS, list(center_ids))
        }

    ops_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in operations:
        wc = r["work_center_id"]
        ops_of[r["order_id"]].append(
            {
                "sequence": r["sequence"],
                "name": r["name"],
                "status": r["status"],
                "workCenter": None if wc is None else {"code": centers[wc][0]},
            }
        )
    comps_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in components:
        comps_of[r["order_id"]].append(
            {
                "quantityRequired": str(r["quantity_required"]),
                "material": materials[r["material_id"]],
            }
        )
    edges = []
    for r in page:
        wc = r["work_center_id"]
        edges.append(
            {
                "node": {
                    "number": r["number"],
                    "status": r["status"],
                    "quantity": str(r["quantity"]),
                    "product": materials[r["product_id"]],
                    "workCenter": None
                    if wc is None
                    else {"code": centers[wc][0], "name": centers[wc][1]},
                    "operations": ops_of.get(r["id"], []),
                    "components": comps_of.get(r["id"], []),
                }
            }
        )
    return {"data": {"productionOrders": {"edges": edges}}}


def create_app(dsn: str) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The same pool size as the server's SQLAlchemy engine.
        app.state.pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
        try:
            yield
        finally:
            await app.state.pool.close()

    async def orders(request: Request) -> Response:
        first = int(request.query_params.get("first", "50"))
        body = await orders_page(request.app.state.pool, first)
        # Compact separators, as Strawberry encodes its responses.
        return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")

    return Starlette(routes=[Route("/orders", orders)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    # The same uvicorn settings as `mes serve` (uvloop, httptools, info log with access lines).
    uvicorn.run(
        create_app(args.dsn), host="127.0.0.1", port=args.port, log_level="info", proxy_headers=True
    )


if __name__ == "__main__":
    main()
