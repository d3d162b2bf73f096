"""Shared by the quality tests: GraphQL documents, a small plant, people at the quality desk,
and direct looks at the database (statuses, the audit trail, row counts)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from sqlalchemy import func, select, text, update

from backend.audit.models import AuditEntry
from backend.db import Database
from backend.lots.models import Lot, LotStatus


class Caller(Protocol):
    """The root conftest's `Gql`: a GraphQL caller signed in as someone."""

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]: ...


class Bearer:
    """A GraphQL caller with any bearer token (an API token, say)."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client, self.token = client, token

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.token}"},
            **kw,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self(query, variables)
        assert "errors" not in body, body["errors"]
        result: dict[str, Any] = body["data"]
        return result


ERRORS = "errors { code message field }"
LOT = "number status"
CHARACTERISTIC = "name kind unit lowerLimit upperLimit"
INSPECTION = f"""
  id number status createdAt completedAt
  lot {{ {LOT} }}
  order {{ number }}
  operation {{ sequence name }}
  characteristics {{ {CHARACTERISTIC} }}
  results {{
    characteristic {{ name }} value passed note recordedBy {{ username }} recordedAt
  }}
"""
SIGNATURE = "signer { username displayName } meaning reason signedAt contentHash"
DEVIATION = f"""
  id number title description severity status source disposition raisedAt
  raisedBy {{ username }}
  lots {{ {LOT} }}
  order {{ number }}
  inspection {{ number status }}
  signatures {{ {SIGNATURE} }}
"""

START = f"""
mutation($input: StartInspectionInput!) {{
  startInspection(input: $input) {{ inspection {{ {INSPECTION} }} {ERRORS} }}
}}
"""
RECORD = f"""
mutation($input: RecordResultsInput!) {{
  recordInspectionResults(input: $input) {{
    inspection {{ {INSPECTION} }} deviation {{ {DEVIATION} }} {ERRORS}
  }}
}}
"""
RAISE = f"""
mutation($input: RaiseDeviationInput!) {{
  raiseDeviation(input: $input) {{ deviation {{ {DEVIATION} }} {ERRORS} }}
}}
"""
APPROVE = f"""
mutation($input: DecideDeviationInput!) {{
  approveDeviation(input: $input) {{ deviation {{ {DEVIATION} }} {ERRORS} }}
}}
"""
REJECT = f"""
mutation($input: DecideDeviationInput!) {{
  rejectDeviation(input: $input) {{ deviation {{ {DEVIATION} }} {ERRORS} }}
}}
"""
INSPECTION_QUERY = f"query($n: String!) {{ inspection(number: $n) {{ {INSPECTION} }} }}"
DEVIATION_QUERY = f"query($n: String!) {{ deviation(number: $n) {{ {DEVIATION} }} }}"

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
OPERATION_PAYLOAD = f"operation {{ sequence status }} {ERRORS}"
START_OPERATION = f"""
mutation($input: OperationActionInput!) {{
  startOperation(input: $input) {{ {OPERATION_PAYLOAD} }}
}}
"""
COMPLETE_OPERATION = f"""
mutation($input: CompleteOperationInput!) {{
  completeOperation(input: $input) {{ {OPERATION_PAYLOAD} }}
}}
"""

# RM-Q is inspected on arrival (Purity within [98.5, 99.5] %, and Clear); RM-1 is not.
PLANT_MATERIALS: list[dict[str, Any]] = [
    {
        "code": "RM-Q",
        "name": "Solvent",
        "kind": "RAW",
        "unit": "l",
        "lotControlled": True,
        "incomingCharacteristics": [
            {
                "name": "Purity",
                "kind": "NUMERIC",
                "unit": "%",
                "lowerLimit": 98.5,
                "upperLimit": 99.5,
            },
            {"name": "Clear", "kind": "ATTRIBUTE"},
        ],
    },
    {"code": "RM-1", "name": "Resin", "kind": "RAW", "unit": "kg", "lotControlled": True},
    {"code": "FG-1", "name": "Finished", "kind": "FINISHED", "unit": "pcs", "lotControlled": True},
]
PLANT_WORK_CENTERS = [{"code": "WC-1", "name": "Mixing", "equipment": []}]


def order_input(number: str = "PO-1") -> dict[str, Any]:
    """Operation 10 is inspected (Viscosity within [1.5, 2.5] Pa.s, Seal intact); 20 is not."""
    return {
        "externalId": f"ERP-{number}",
        "number": number,
        "productCode": "FG-1",
        "quantity": "100",
        "components": [{"materialCode": "RM-1", "quantity": "50", "operationSequence": 10}],
        "operations": [
            {
                "sequence": 10,
                "name": "Mix",
                "workCenterCode": "WC-1",
                "characteristics": [
                    {
                        "name": "Viscosity",
                        "kind": "NUMERIC",
                        "unit": "Pa.s",
                        "nominal": 2.0,
                        "lowerLimit": 1.5,
                        "upperLimit": 2.5,
                    },
                    {"name": "Seal intact", "kind": "ATTRIBUTE"},
                ],
            },
            {"sequence": 20, "name": "Fill", "workCenterCode": "WC-1"},
        ],
    }


async def make_plant(erp: Caller) -> None:
    body = await erp.data(UPSERT_MATERIALS, {"input": PLANT_MATERIALS})
    assert body["upsertMaterials"]["errors"] == [], body
    body = await erp.data(UPSERT_WORK_CENTERS, {"input": PLANT_WORK_CENTERS})
    assert body["upsertWorkCenters"]["errors"] == [], body


async def make_order(erp: Caller, number: str = "PO-1", *, release: bool = True) -> str:
    body = await erp.data(UPSERT_ORDER, {"input": order_input(number)})
    assert body["upsertProductionOrder"]["errors"] == [], body
    if release:
        body = await erp.data(RELEASE, {"number": number})
        assert body["releaseProductionOrder"]["errors"] == [], body
    return number


_ids = itertools.count(1)


def new_cmid(prefix: str = "q") -> str:
    return f"{prefix}-{next(_ids)}"


def codes(payload: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(code, field) of each error in a payload."""
    return [(e["code"], e["field"]) for e in payload["errors"]]


def result(
    characteristic: str,
    value: float | None = None,
    passed: bool | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"characteristic": characteristic}
    if value is not None:
        item["value"] = value
    if passed is not None:
        item["passed"] = passed
    if note is not None:
        item["note"] = note
    return item


class Desk:
    """Someone calling the quality mutations (and, as an operator, the floor ones)."""

    def __init__(self, caller: Caller, password: str) -> None:
        self.caller, self.password = caller, password

    async def _call(self, document: str, name: str, variables: dict[str, Any]) -> dict[str, Any]:
        body = await self.caller.data(document, {"input": variables})
        payload: dict[str, Any] = body[name]
        return payload

    async def receive(self, number: str, material: str = "RM-Q", quantity: str = "100") -> str:
        payload = await self._call(
            RECEIVE,
            "receiveLot",
            {
                "clientMutationId": new_cmid("receive"),
                "number": number,
                "materialCode": material,
                "quantity": quantity,
            },
        )
        assert payload["errors"] == [], payload
        return number

    async def start(
        self,
        *,
        lot: str | None = None,
        order: str | None = None,
        sequence: int | None = None,
        cmid: str | None = None,
    ) -> dict[str, Any]:
        variables: dict[str, Any] = {"clientMutationId": cmid or new_cmid("start")}
        if lot is not None:
            variables["lotNumber"] = lot
        if order is not None:
            variables["orderNumber"] = order
        if sequence is not None:
            variables["operationSequence"] = sequence
        return await self._call(START, "startInspection", variables)

    async def ok_start(self, **target: Any) -> str:
        payload = await self.start(**target)
        assert payload["errors"] == [], payload
        number: str = payload["inspection"]["number"]
        return number

    async def record(
        self, number: str, results: Sequence[dict[str, Any]], *, cmid: str | None = None
    ) -> dict[str, Any]:
        return await self._call(
            RECORD,
            "recordInspectionResults",
            {
                "clientMutationId": cmid or new_cmid("record"),
                "inspectionNumber": number,
                "results": list(results),
            },
        )

    async def ok_record(self, number: str, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
        payload = await self.record(number, results)
        assert payload["errors"] == [], payload
        return payload

    async def raise_deviation(
        self,
        title: str = "Resin smells of solvent",
        lots: Sequence[str] = (),
        *,
        severity: str = "MAJOR",
        description: str | None = None,
        order: str | None = None,
        cmid: str | None = None,
    ) -> dict[str, Any]:
        variables: dict[str, Any] = {
            "clientMutationId": cmid or new_cmid("raise"),
            "title": title,
            "severity": severity,
            "lotNumbers": list(lots),
        }
        if description is not None:
            variables["description"] = description
        if order is not None:
            variables["orderNumber"] = order
        return await self._call(RAISE, "raiseDeviation", variables)

    async def ok_raise(self, title: str = "Resin smells of solvent", **kw: Any) -> str:
        payload = await self.raise_deviation(title, **kw)
        assert payload["errors"] == [], payload
        number: str = payload["deviation"]["number"]
        return number

    async def decide(
        self,
        number: str,
        *,
        approve: bool = True,
        disposition: str | None = "USE_AS_IS",
        password: str | None = None,
        meaning: str = "Approved by quality",
        reason: str | None = "Within the validated range",
        cmid: str | None = None,
    ) -> dict[str, Any]:
        signature: dict[str, Any] = {
            "password": self.password if password is None else password,
            "meaning": meaning,
        }
        if reason is not None:
            signature["reason"] = reason
        variables: dict[str, Any] = {
            "clientMutationId": cmid or new_cmid("decide"),
            "number": number,
            "signature": signature,
        }
        if disposition is not None:
            variables["disposition"] = disposition
        if approve:
            return await self._call(APPROVE, "approveDeviation", variables)
        return await self._call(REJECT, "rejectDeviation", variables)

    async def approve(self, number: str, **kw: Any) -> dict[str, Any]:
        return await self.decide(number, approve=True, **kw)

    async def reject(self, number: str, **kw: Any) -> dict[str, Any]:
        kw.setdefault("disposition", None)
        kw.setdefault("meaning", "Rejected by quality")
        return await self.decide(number, approve=False, **kw)

    async def start_operation(self, sequence: int, order: str = "PO-1") -> dict[str, Any]:
        return await self._call(
            START_OPERATION,
            "startOperation",
            {"clientMutationId": new_cmid("op"), "orderNumber": order, "sequence": sequence},
        )

    async def complete_operation(self, sequence: int, order: str = "PO-1") -> dict[str, Any]:
        return await self._call(
            COMPLETE_OPERATION,
            "completeOperation",
            {
                "clientMutationId": new_cmid("op"),
                "orderNumber": order,
                "sequence": sequence,
                "quantityGood": "10",
                "quantityScrap": "0",
            },
        )


# ---------------------------------------------------------------- the database, directly


async def lot_status(db: Database, number: str) -> LotStatus:
    async with db.read() as session:
        status = await session.scalar(select(Lot.status).where(Lot.number == number))
    assert status is not None, number
    return status


async def set_lot_status(db: Database, number: str, status: LotStatus) -> None:
    """Puts a lot in a state other issues bring about (consumed, say)."""
    async with db.write() as session:
        await session.execute(update(Lot).where(Lot.number == number).values(status=status))


async def last_audit_sequence(db: Database) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.coalesce(func.max(AuditEntry.sequence), 0))))


async def audit_since(db: Database, sequence: int) -> list[AuditEntry]:
    """The audit entries written after `sequence`, in order."""
    async with db.read() as session:
        return list(
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.sequence > sequence)
                .order_by(AuditEntry.sequence)
            )
        )


async def actions_since(db: Database, sequence: int) -> list[str]:
    return [entry.action for entry in await audit_since(db, sequence)]


COUNTED_TABLES = (
    "inspections",
    "inspection_results",
    "deviations",
    "deviation_lots",
    "signatures",
    "signing_locks",
    "lots",
    "audit_entries",
    "mutation_outcomes",
)


async def row_counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        return {
            table: int((await session.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())
            for table in COUNTED_TABLES
        }
