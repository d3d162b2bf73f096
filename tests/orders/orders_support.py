"""Shared by the order tests: GraphQL documents, a default ERP order, row counts, bulk setup."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import insert, select, text, update

from backend.catalog.models import Material, WorkCenter
from backend.db import Database, utcnow
from backend.orders.models import OrderStatus, ProductionOrder


class Caller(Protocol):
    """The root conftest's `Gql`: a GraphQL caller signed in as someone."""

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]: ...


ERROR_FIELDS = "errors { code message field }"

ORDER_FIELDS = """
  id number externalId quantity quantityGood quantityScrap status priority dueAt
  createdAt updatedAt
  product { code }
  workCenter { code }
  components { material { code } quantityRequired quantityConsumed operationSequence }
  operations {
    id sequence name instructions status workCenter { code }
    characteristics { name kind unit nominal lowerLimit upperLimit }
  }
"""

UPSERT = f"""
mutation Upsert($input: ProductionOrderInput!) {{
  upsertProductionOrder(input: $input) {{ order {{ {ORDER_FIELDS} }} {ERROR_FIELDS} }}
}}
"""

ORDER = f"query Order($number: String!) {{ productionOrder(number: $number) {{ {ORDER_FIELDS} }} }}"

# The state-machine mutations, each with the variables it needs besides `number`.
ACTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "release": (
        f"mutation($number: String!) {{ releaseProductionOrder(number: $number) "
        f"{{ order {{ number status operations {{ sequence status }} }} {ERROR_FIELDS} }} }}",
        {},
    ),
    "hold": (
        f"mutation($number: String!, $reason: String!) {{ holdProductionOrder(number: $number, "
        f"reason: $reason) {{ order {{ number status }} {ERROR_FIELDS} }} }}",
        {"reason": "Mixer blade inspection"},
    ),
    "resume": (
        f"mutation($number: String!) {{ resumeProductionOrder(number: $number) "
        f"{{ order {{ number status }} {ERROR_FIELDS} }} }}",
        {},
    ),
    "cancel": (
        f"mutation($number: String!, $reason: String!) {{ cancelProductionOrder(number: $number, "
        f"reason: $reason) {{ order {{ number status }} {ERROR_FIELDS} }} }}",
        {"reason": "Customer order withdrawn"},
    ),
    "close": (
        f"mutation($number: String!) {{ closeProductionOrder(number: $number) "
        f"{{ order {{ number status }} {ERROR_FIELDS} }} }}",
        {},
    ),
}

MUTATION_FIELD = {
    "release": "releaseProductionOrder",
    "hold": "holdProductionOrder",
    "resume": "resumeProductionOrder",
    "cancel": "cancelProductionOrder",
    "close": "closeProductionOrder",
}

UPSERT_MATERIALS = f"""
mutation($input: [MaterialInput!]!) {{
  upsertMaterials(input: $input) {{ materials {{ code }} {ERROR_FIELDS} }}
}}
"""

UPSERT_WORK_CENTERS = f"""
mutation($input: [WorkCenterInput!]!) {{
  upsertWorkCenters(input: $input) {{ workCenters {{ code }} {ERROR_FIELDS} }}
}}
"""

PLANT_MATERIALS = [
    {
        "code": "FG-1",
        "name": "Finished good",
        "kind": "FINISHED",
        "unit": "pcs",
        "lotControlled": True,
    },
    {"code": "RM-1", "name": "Resin", "kind": "RAW", "unit": "kg", "lotControlled": True},
    {"code": "RM-2", "name": "Pigment", "kind": "RAW", "unit": "kg", "lotControlled": True},
    {"code": "PK-1", "name": "Carton", "kind": "PACKAGING", "unit": "pcs", "lotControlled": False},
]

PLANT_WORK_CENTERS = [
    {"code": "WC-1", "name": "Mixing", "equipment": [{"code": "EQ-1", "name": "Mixer 1"}]},
    {"code": "WC-2", "name": "Filling", "equipment": []},
]

COUNTED_TABLES = (
    "production_orders",
    "order_components",
    "order_operations",
    "characteristics",
    "audit_entries",
)


def order_input(external_id: str = "ERP-1", number: str = "PO-1", **changes: Any) -> dict[str, Any]:
    """An ERP order for the plant: two components, two operations with characteristics."""
    order: dict[str, Any] = {
        "externalId": external_id,
        "number": number,
        "productCode": "FG-1",
        "quantity": "100",
        "dueAt": "2030-01-31T12:00:00+00:00",
        "priority": 5,
        "workCenterCode": "WC-1",
        "components": [
            {"materialCode": "RM-1", "quantity": "200.5", "operationSequence": 10},
            {"materialCode": "RM-2", "quantity": "3"},
        ],
        "operations": [
            {
                "sequence": 10,
                "name": "Mix",
                "workCenterCode": "WC-1",
                "instructions": "Mix for 20 minutes",
                "characteristics": [
                    {
                        "name": "Viscosity",
                        "kind": "NUMERIC",
                        "unit": "Pa.s",
                        "nominal": 2.0,
                        "lowerLimit": 1.5,
                        "upperLimit": 2.5,
                    },
                ],
            },
            {
                "sequence": 20,
                "name": "Fill",
                "workCenterCode": "WC-2",
                "characteristics": [{"name": "Seal intact", "kind": "ATTRIBUTE"}],
            },
        ],
    }
    order.update(changes)
    return order


async def row_counts(db: Database) -> dict[str, int]:
    """How many rows each order-related table holds (and the audit trail)."""
    async with db.read() as session:
        return {
            table: int((await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())
            for table in COUNTED_TABLES
        }


async def set_status(
    db: Database, number: str, status: OrderStatus, held_from: OrderStatus | None = None
) -> None:
    """Puts an order in a state directly (the shop-floor moves come in a later issue)."""
    async with db.write() as session:
        await session.execute(
            update(ProductionOrder)
            .where(ProductionOrder.number == number)
            .values(status=status, held_from=held_from)
        )


async def insert_orders(
    db: Database,
    count: int,
    *,
    prefix: str = "BULK",
    statuses: list[OrderStatus] | None = None,
    work_centers: list[str | None] | None = None,
) -> list[str]:
    """`count` bare orders of FG-1 in one statement; status and work center cycle through the lists.

    For paging tests only: no components or operations, no audit entries.
    """
    statuses = statuses or [OrderStatus.PLANNED]
    work_centers = work_centers or [None]
    now = utcnow()
    async with db.write() as session:
        product_id = (
            await session.execute(select(Material.id).where(Material.code == "FG-1"))
        ).scalar_one()
        centers = dict((await session.execute(select(WorkCenter.code, WorkCenter.id))).all())
        rows = [
            {
                "number": f"{prefix}-{i:04d}",
                "external_id": f"{prefix}-EXT-{i:04d}",
                "product_id": product_id,
                "quantity": Decimal(10),
                "quantity_good": Decimal(0),
                "quantity_scrap": Decimal(0),
                "status": statuses[i % len(statuses)],
                "priority": 0,
                "content_hash": "0" * 64,
                "work_center_id": centers[wc]
                if (wc := work_centers[i % len(work_centers)])
                else None,
                "created_at": now + dt.timedelta(microseconds=i),
                "updated_at": now,
            }
            for i in range(count)
        ]
        await session.execute(insert(ProductionOrder), rows)
    return [r["number"] for r in rows]
