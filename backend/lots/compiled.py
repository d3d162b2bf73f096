"""The lots types and roots that compiled reads may print straight from their tables
(see backend/compiled), declared as their resolvers in schema.py read them. Every field listed
here must be selected by the differential corpus in tests/compiled/test_compiled_lots.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer

from backend.auth import compiled as _auth  # noqa: F401  (User)
from backend.catalog import compiled as _catalog  # noqa: F401  (Material)
from backend.compiled.registry import (
    REGISTRY,
    Arg,
    Col,
    Filter,
    GlobalId,
    ToMany,
    ToManyFrom,
    ToManyThrough,
    ToOne,
)
from backend.lots.models import Consumption, GenealogyLink, Lot, LotStatus
from backend.lots.schema import (
    ConsumptionType,
    GenealogyLinkType,
    LotsQuery,
    LotType,
    TraceDirection,
)
from backend.lots.service import TRACE_DEPTH_LIMIT
from backend.orders import compiled as _orders  # noqa: F401  (ProductionOrder)
from backend.quality.models import DeviationLot


def _backward(value: Any) -> bool:
    return value is TraceDirection.BACKWARD or value == TraceDirection.BACKWARD.value


def _depth_limit(value: int | None) -> int:
    # service.trace: at most TRACE_DEPTH_LIMIT; below 1, no links
    return min(value if value is not None else TRACE_DEPTH_LIMIT, TRACE_DEPTH_LIMIT)


# service.trace, for every parent lot at once (`k`): the links reachable from the lot (backward:
# from the output side to the input side; forward, the other way), UNION over (lot, link, far
# lot, depth) with the depth bound, each link once with its smallest depth; ordered by depth,
# then link id. The direction picks one of the two halves of `trace_edges` (a parameter).
TRACE = """WITH RECURSIVE trace_edges AS NOT MATERIALIZED (
SELECT g."id", g."output_lot_id" AS near, g."input_lot_id" AS far
FROM "genealogy_links" g WHERE {direction}
UNION ALL SELECT g."id", g."input_lot_id", g."output_lot_id"
FROM "genealogy_links" g WHERE NOT {direction}),
trace_walk(k, link, lot, depth) AS (
SELECT e.near, e."id", e.far, 1 FROM trace_edges e WHERE e.near IN ({keys}) AND {max_depth} >= 1
UNION SELECT tw.k, e."id", e.far, tw.depth + 1 FROM trace_edges e
JOIN trace_walk tw ON e.near = tw.lot WHERE tw.depth < {max_depth})
SELECT k, link AS "id", min(depth) AS "depth" FROM trace_walk GROUP BY k, link"""

REGISTRY.table(
    LotType,
    Lot,
    {
        "id": GlobalId("Lot"),
        "number": Col(),
        "quantity": Col(),
        "status": Col(),
        "expires_at": Col(),
        "supplier_lot": Col(),
        "created_at": Col(),
        "material": ToOne("material_id"),
        "produced_by": ToOne("produced_by_order_id"),  # order_by_pk: null when none
        # loaders.inspections_of_lot: by id
        "inspections": ToMany("lot_id"),
        # loaders.deviations_of_lot: the lot's links, by the deviation's id (one link each)
        "deviations": ToManyThrough(
            DeviationLot, "lot_id", "deviation_id", target_order_by=("id",)
        ),
        "trace": ToManyFrom(
            TRACE,
            {"direction": Arg("boolean", _backward), "max_depth": Arg("int4", _depth_limit)},
            order_by=("depth", "id"),
        ),
    },
)

# Lot.trace's links: service.trace reads both lots in the same statement; `order` through
# order_by_pk (null when none); `depth` comes from the trace's rows.
REGISTRY.table(
    GenealogyLinkType,
    GenealogyLink,
    {
        "input_lot": ToOne("input_lot_id"),
        "output_lot": ToOne("output_lot_id"),
        "quantity": Col(),
        "depth": Col(),
        "at": Col(),
        "order": ToOne("order_id"),
    },
    derived={"depth": Integer()},
)

# OrderComponent.consumptions (declared with OrderComponent in backend/orders/compiled.py):
# loaders.consumptions_of_component, by id.
REGISTRY.table(
    ConsumptionType,
    Consumption,
    {
        "quantity": Col(),
        "consumed_at": Col(),
        "lot": ToOne("lot_id"),
        "consumed_by": ToOne("consumed_by_id"),  # null when no user (an API token)
    },
)


def _statuses(value: Sequence[LotStatus] | None) -> list[str] | None:
    # service.lots_query: no condition for null or an empty list
    return [LotStatus(s).value for s in value] if value else None


def _strip(value: str | None) -> str | None:
    return None if value is None else value.strip()


# LotsQuery.lots: paginate(service.lots_query(status, material), id)
REGISTRY.connection(
    LotsQuery,
    "lots",
    Lot,
    filters={
        "status": Filter('{t}."status" = ANY({p})', "varchar[]", _statuses),
        "material": Filter(
            '{t}."material_id" IN (SELECT m."id" FROM "materials" m WHERE m."code" = {p})',
            "varchar",
            _strip,
        ),
    },
)

# LotsQuery.lot: service.by_number (number stripped)
REGISTRY.lookup(
    LotsQuery, "lot", Lot, filters={"number": Filter('{t}."number" = {p}', "varchar", _strip)}
)
