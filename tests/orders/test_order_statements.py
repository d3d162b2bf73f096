"""The issue's statement count: reading a page of orders with everything an order screen shows
costs the same number of SQL statements for 10 orders as for 50 (DataLoaders, no N+1)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from orders_support import Caller
from sqlalchemy import event

from backend.catalog.models import CharacteristicKind
from backend.catalog.service import CharacteristicSpec
from backend.db import Database
from backend.orders import service
from backend.principal import SYSTEM
from backend.uow import transaction

pytestmark = pytest.mark.usefixtures("plant")

PAGE = """
{
  productionOrders(first: 50) {
    edges {
      node {
        number status quantity
        product { code name }
        workCenter { code name }
        operations {
          sequence name status
          workCenter { code }
          characteristics { name kind lowerLimit upperLimit }
        }
        components { quantityRequired material { code name } }
      }
    }
  }
}
"""


async def add_orders(db: Database, first: int, count: int) -> None:
    """`count` orders with two components and three operations, all in one transaction."""
    async with transaction(db, SYSTEM) as uow:
        for i in range(first, first + count):
            await service.upsert(
                uow,
                service.OrderSpec(
                    external_id=f"ERP-{i}",
                    number=f"PO-{i:03d}",
                    product_code="FG-1",
                    quantity=Decimal(10 + i),
                    work_center_code=("WC-1", "WC-2", None)[i % 3],
                    components=[
                        service.ComponentSpec("RM-1", Decimal(5), 10),
                        service.ComponentSpec(("RM-2", "PK-1")[i % 2], Decimal(1)),
                    ],
                    operations=[
                        service.OperationSpec(
                            10,
                            "Mix",
                            "WC-1",
                            characteristics=[
                                CharacteristicSpec(
                                    "Viscosity", CharacteristicKind.NUMERIC, "Pa.s", 2.0, 1.5, 2.5
                                )
                            ],
                        ),
                        service.OperationSpec(
                            20,
                            "Fill",
                            "WC-2",
                            characteristics=[
                                CharacteristicSpec("Seal", CharacteristicKind.ATTRIBUTE)
                            ],
                        ),
                        service.OperationSpec(30, "Pack"),
                    ],
                ),
            )


@contextmanager
def statements_on(db: Database) -> Iterator[list[str]]:
    """Records every SQL statement sent through the database's engines while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engines = {id(e.sync_engine): e.sync_engine for e in (db.engine, db.read_engine)}
    for engine in engines.values():
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines.values():
            event.remove(engine, "before_cursor_execute", record)


async def measure(erp: Caller, db: Database) -> tuple[list[str], dict[str, Any]]:
    await erp.data(PAGE)  # warm-up: pools, caches and first connections are not the point
    with statements_on(db) as seen:
        data = await erp.data(PAGE)
    return seen, data


async def test_a_page_of_orders_costs_the_same_statements_for_10_and_50_orders(
    erp: Caller, db: Database, app: Any
) -> None:
    # The server has its own Database (built in the app's lifespan): count on its engines.
    served: Database = app.state.services.db
    await add_orders(db, 0, 10)
    small, data = await measure(erp, served)
    orders = data["productionOrders"]["edges"]
    assert len(orders) == 10
    assert all(
        len(o["node"]["operations"]) == 3 and len(o["node"]["components"]) == 2 for o in orders
    )
    assert orders[1]["node"]["operations"][0]["characteristics"][0]["name"] == "Viscosity"
    assert orders[1]["node"]["components"][1]["material"]["code"] == "PK-1"

    await add_orders(db, 10, 40)
    large, data = await measure(erp, served)
    assert len(data["productionOrders"]["edges"]) == 50

    selects = [s for s in small if s.lstrip().upper().startswith("SELECT")]
    assert len(large) == len(small), (small, large)
    # sign-in, the page, then one batch per relation and depth: product and component
    # materials, order and operation work centers, operations, components, characteristics.
    assert len(selects) <= 8, selects
