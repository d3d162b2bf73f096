"""Shared by the lot tests: GraphQL documents, a small plant, an operator, row counts."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any, Protocol

from sqlalchemy import select, text, update

from backend.db import Database, utcnow
from backend.lots.models import Consumption, Lot


class Caller(Protocol):
    """The root conftest's `Gql`: a GraphQL caller signed in as someone."""

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]: ...


def gtin(item: int) -> str:
    """A GTIN-14 with a correct check digit, of a made-up company prefix."""
    body = f"0950110154{item:03d}"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


GTIN_RM1, GTIN_RM2, GTIN_RMQ, GTIN_INT, GTIN_FG = (gtin(i) for i in range(1, 6))
GTIN_OTHER = gtin(99)  # valid, but no material has it

GS = "\x1d"
ERRORS = "errors { code message field }"
LOT = "id number status quantity expiresAt supplierLot createdAt material { code }"

UPSERT_MATERIALS = f"""
mutation($input: [MaterialInput!]!) {{ upsertMaterials(input: $input) {{ {ERRORS} }} }}
"""
UPSERT_WORK_CENTERS = f"""
mutation($input: [WorkCenterInput!]!) {{ upsertWorkCenters(input: $input) {{ {ERRORS} }} }}
"""
UPSERT_ORDER = f"""
mutation($input: ProductionOrderInput!) {{
  upsertProductionOrder(input: $input) {{ order {{ number status }} {ERRORS} }}
}}
"""
RELEASE = f"""
mutation($number: String!) {{ releaseProductionOrder(number: $number) {{ {ERRORS} }} }}
"""
RECEIVE = f"""
mutation($input: ReceiveLotInput!) {{ receiveLot(input: $input) {{ lot {{ {LOT} }} {ERRORS} }} }}
"""
SCAN = f"""
mutation($input: ScanLotInput!) {{
  scanLot(input: $input) {{
    parsed {{ raw gtin lotNumber expiresAt serial quantity }}
    lot {{ {LOT} }}
    consumption {{ quantity consumedAt lot {{ number }} consumedBy {{ username }} }}
    {ERRORS}
  }}
}}
"""
PRODUCE = f"""
mutation($input: ProduceLotInput!) {{
  produceLot(input: $input) {{ lot {{ {LOT} producedBy {{ number }} }} {ERRORS} }}
}}
"""
ORDER_COMPONENTS = """
query($number: String!) {
  productionOrder(number: $number) {
    status components { material { code } quantityRequired quantityConsumed }
  }
}
"""

PLANT_MATERIALS: list[dict[str, Any]] = [
    {
        "code": "RM-1",
        "name": "Resin",
        "kind": "RAW",
        "unit": "kg",
        "lotControlled": True,
        "gtin": GTIN_RM1,
        "shelfLifeDays": 365,
    },
    {
        "code": "RM-2",
        "name": "Pigment",
        "kind": "RAW",
        "unit": "kg",
        "lotControlled": True,
        "gtin": GTIN_RM2,
    },
    {
        "code": "RM-Q",
        "name": "Solvent",
        "kind": "RAW",
        "unit": "l",
        "lotControlled": True,
        "gtin": GTIN_RMQ,
        "incomingCharacteristics": [
            {"name": "Purity", "kind": "NUMERIC", "unit": "%", "lowerLimit": 99.0}
        ],
    },
    {
        "code": "INT-1",
        "name": "Blend",
        "kind": "INTERMEDIATE",
        "unit": "kg",
        "lotControlled": True,
        "gtin": GTIN_INT,
        "shelfLifeDays": 30,
    },
    {
        "code": "FG-1",
        "name": "Finished good",
        "kind": "FINISHED",
        "unit": "pcs",
        "lotControlled": True,
        "gtin": GTIN_FG,
    },
    {"code": "PK-1", "name": "Carton", "kind": "PACKAGING", "unit": "pcs", "lotControlled": True},
]

PLANT_WORK_CENTERS = [{"code": "WC-1", "name": "Mixing", "equipment": []}]

COUNTED_TABLES = (
    "lots",
    "consumptions",
    "genealogy_links",
    "audit_entries",
    "mutation_outcomes",
    "production_orders",
)


async def make_plant(erp: Caller) -> None:
    body = await erp.data(UPSERT_MATERIALS, {"input": PLANT_MATERIALS})
    assert body["upsertMaterials"]["errors"] == []
    body = await erp.data(UPSERT_WORK_CENTERS, {"input": PLANT_WORK_CENTERS})
    assert body["upsertWorkCenters"]["errors"] == []


def _component(material: str, quantity: str, sequence: int | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"materialCode": material, "quantity": quantity}
    if sequence is not None:
        line["operationSequence"] = sequence
    return line


async def make_order(
    erp: Caller,
    number: str,
    components: list[tuple[str, str] | tuple[str, str, int]],
    *,
    product: str = "FG-1",
    quantity: str = "100",
    release: bool = True,
) -> None:
    """An order of `product` using (material, quantity[, operation sequence]) components."""
    order = {
        "externalId": f"ERP-{number}",
        "number": number,
        "productCode": product,
        "quantity": quantity,
        "components": [_component(*c) for c in components],
        "operations": [
            {"sequence": 10, "name": "Mix", "workCenterCode": "WC-1"},
            {"sequence": 20, "name": "Fill", "workCenterCode": "WC-1"},
        ],
    }
    body = await erp.data(UPSERT_ORDER, {"input": order})
    assert body["upsertProductionOrder"]["errors"] == [], body
    if release:
        body = await erp.data(RELEASE, {"number": number})
        assert body["releaseProductionOrder"]["errors"] == [], body


_ids = itertools.count(1)


def new_cmid(prefix: str = "m") -> str:
    return f"{prefix}-{next(_ids)}"


class Floor:
    """Someone at the line (or at the goods-in desk) calling the lot mutations."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    async def receive(
        self,
        number: str,
        material: str = "RM-1",
        quantity: str = "100",
        *,
        cmid: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        variables = {
            "clientMutationId": cmid or new_cmid("receive"),
            "number": number,
            "materialCode": material,
            "quantity": quantity,
            **extra,
        }
        body = await self.caller.data(RECEIVE, {"input": variables})
        payload: dict[str, Any] = body["receiveLot"]
        return payload

    async def ok_receive(
        self, number: str, material: str = "RM-1", quantity: str = "100", **extra: Any
    ) -> dict[str, Any]:
        payload = await self.receive(number, material, quantity, **extra)
        assert payload["errors"] == [], payload
        lot: dict[str, Any] = payload["lot"]
        return lot

    async def scan(
        self,
        code: str,
        order: str = "PO-1",
        *,
        cmid: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        variables = {
            "clientMutationId": cmid or new_cmid("scan"),
            "code": code,
            "orderNumber": order,
            **extra,
        }
        body = await self.caller.data(SCAN, {"input": variables})
        payload: dict[str, Any] = body["scanLot"]
        return payload

    async def ok_scan(self, code: str, order: str = "PO-1", **extra: Any) -> dict[str, Any]:
        payload = await self.scan(code, order, **extra)
        assert payload["errors"] == [], payload
        return payload

    async def produce(
        self, order: str = "PO-1", quantity: str = "10", *, cmid: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        variables = {
            "clientMutationId": cmid or new_cmid("produce"),
            "orderNumber": order,
            "quantity": quantity,
            **extra,
        }
        body = await self.caller.data(PRODUCE, {"input": variables})
        payload: dict[str, Any] = body["produceLot"]
        return payload

    async def ok_produce(self, order: str = "PO-1", quantity: str = "10", **extra: Any) -> str:
        payload = await self.produce(order, quantity, **extra)
        assert payload["errors"] == [], payload
        number: str = payload["lot"]["number"]
        return number


def codes(payload: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(code, field) of each error in a payload."""
    return [(e["code"], e["field"]) for e in payload["errors"]]


async def row_counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        return {
            table: int((await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())
            for table in COUNTED_TABLES
        }


async def lot_row(db: Database, number: str) -> Lot:
    async with db.read() as session:
        lot = await session.scalar(select(Lot).where(Lot.number == number))
    assert lot is not None, number
    return lot


async def consumptions_of(db: Database, number: str) -> list[Consumption]:
    async with db.read() as session:
        return list(
            await session.scalars(
                select(Consumption)
                .join(Lot, Lot.id == Consumption.lot_id)
                .where(Lot.number == number)
                .order_by(Consumption.id)
            )
        )


async def set_lot(db: Database, number: str, **values: Any) -> None:
    """Changes a lot straight in the database (states other issues bring about)."""
    async with db.write() as session:
        await session.execute(update(Lot).where(Lot.number == number).values(**values))


async def expire_in_past(db: Database, number: str, ago: dt.timedelta) -> dt.datetime:
    """Sets the lot's expiry `ago` before now; returns it."""
    at = utcnow() - ago
    await set_lot(db, number, expires_at=at)
    return at
