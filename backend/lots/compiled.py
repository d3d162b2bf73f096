"""The lots types and roots that compiled reads may print straight from their tables
(see backend/compiled), declared as their resolvers in schema.py read them. Fields not listed
(Lot.deviations, Lot.trace, GenealogyLink) run through their resolvers. Every field listed
here must be selected by the differential corpus in tests/compiled/test_compiled_lots.py."""

from __future__ import annotations

from collections.abc import Sequence

from backend.auth import compiled as _auth  # noqa: F401  (User)
from backend.catalog import compiled as _catalog  # noqa: F401  (Material)
from backend.compiled.registry import REGISTRY, Col, Filter, GlobalId, ToMany, ToOne
from backend.lots.models import Consumption, Lot, LotStatus
from backend.lots.schema import ConsumptionType, LotsQuery, LotType
from backend.orders import compiled as _orders  # noqa: F401  (ProductionOrder)

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
    },
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
