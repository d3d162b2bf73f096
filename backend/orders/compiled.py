"""The orders types and roots that compiled reads may print straight from their tables
(see backend/compiled), declared as their resolvers in schema.py read them. Every field of
these types is listed; Consumption is declared in backend/lots/compiled.py, Characteristic in
backend/catalog/compiled.py, Inspection and Deviation in backend/quality/compiled.py. Every
field listed here must be selected by a compiled document of the differential corpora
(tests/compiled/test_compiled_coverage.py)."""

from __future__ import annotations

from collections.abc import Sequence

from backend.catalog import compiled as _catalog  # noqa: F401  (Material, WorkCenter)
from backend.compiled.registry import REGISTRY, Col, Filter, GlobalId, ToMany, ToOne
from backend.orders.models import (
    OrderComponent,
    OrderOperation,
    OrderStatus,
    ProductionOrder,
)
from backend.orders.schema import (
    OrderComponentType,
    OrderOperationType,
    OrdersQuery,
    ProductionOrderType,
)

REGISTRY.table(
    OrderOperationType,
    OrderOperation,
    {
        "id": GlobalId("OrderOperation"),
        "sequence": Col(),
        "name": Col(),
        "instructions": Col(),
        "status": Col(),
        "quantity_good": Col(),
        "quantity_scrap": Col(),
        "started_at": Col(),
        "completed_at": Col(),
        "work_center": ToOne("work_center_id"),
        # loaders.characteristics_of_operation: by position (Characteristic: catalog)
        "characteristics": ToMany("operation_id", order_by=("position",)),
        # loaders.inspections_of_operation: by id (Inspection: backend/quality/compiled.py)
        "inspections": ToMany("operation_id"),
    },
)

REGISTRY.table(
    OrderComponentType,
    OrderComponent,
    {
        "quantity_required": Col(),
        "quantity_consumed": Col(),
        "operation_sequence": Col(),
        "material": ToOne("material_id"),
        # loaders.consumptions_of_component: by id (Consumption: backend/lots/compiled.py)
        "consumptions": ToMany("component_id"),
    },
)

REGISTRY.table(
    ProductionOrderType,
    ProductionOrder,
    {
        "id": GlobalId("ProductionOrder"),
        "number": Col(),
        "external_id": Col(),
        "product": ToOne("product_id"),
        "quantity": Col(),
        "quantity_good": Col(),
        "quantity_scrap": Col(),
        "status": Col(),
        "priority": Col(),
        "due_at": Col(),
        "work_center": ToOne("work_center_id"),
        # loaders.operations_of_order / components_of_order: by sequence / position
        "operations": ToMany("order_id", order_by=("sequence",)),
        "components": ToMany("order_id", order_by=("position",)),
        # loaders.lots_produced_by_order: by id (Lot: backend/lots/compiled.py)
        "produced_lots": ToMany("produced_by_order_id"),
        # loaders.deviations_of_order: by id (Deviation: backend/quality/compiled.py)
        "deviations": ToMany("order_id"),
        "created_at": Col(),
        "updated_at": Col(),
    },
)


def _statuses(value: Sequence[OrderStatus] | None) -> list[str] | None:
    # service.orders_query: no condition for null or an empty list
    return [OrderStatus(s).value for s in value] if value else None


def _strip(value: str | None) -> str | None:
    return None if value is None else value.strip()


# OrdersQuery.production_orders: paginate(service.orders_query(status, work_center), id)
REGISTRY.connection(
    OrdersQuery,
    "production_orders",
    ProductionOrder,
    filters={
        "status": Filter('{t}."status" = ANY({p})', "varchar[]", _statuses),
        "work_center": Filter(
            '{t}."work_center_id" IN (SELECT w."id" FROM "work_centers" w WHERE w."code" = {p})',
            "varchar",
            _strip,
        ),
    },
)

# OrdersQuery.production_order: service.by_number (number stripped)
REGISTRY.lookup(
    OrdersQuery,
    "production_order",
    ProductionOrder,
    filters={"number": Filter('{t}."number" = {p}', "varchar", _strip)},
)
