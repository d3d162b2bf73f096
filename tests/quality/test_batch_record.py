"""The electronic batch record (issue 4, part 5): `GET /orders/{number}/batch-record` (HTML)
and `….json`, for an order made through the API from goods-in to the produced lot."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest
from sqlalchemy import event, select, update

from backend.db import Database, utcnow
from backend.lots.models import Lot
from backend.principal import Role
from backend.replay.models import MutationOutcome


class Caller(Protocol):
    """The root conftest's `Gql`: a GraphQL caller signed in as someone."""

    token: str | None

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]: ...


ERRORS = "errors { code message field }"
UPSERT_MATERIALS = (
    f"mutation($i: [MaterialInput!]!) {{ upsertMaterials(input: $i) {{ {ERRORS} }} }}"
)
UPSERT_WORK_CENTERS = (
    f"mutation($i: [WorkCenterInput!]!) {{ upsertWorkCenters(input: $i) {{ {ERRORS} }} }}"
)
UPSERT_ORDER = (
    f"mutation($i: ProductionOrderInput!) {{ upsertProductionOrder(input: $i) {{ {ERRORS} }} }}"
)
RELEASE = f"mutation($n: String!) {{ releaseProductionOrder(number: $n) {{ {ERRORS} }} }}"
RECEIVE = f"mutation($i: ReceiveLotInput!) {{ receiveLot(input: $i) {{ {ERRORS} }} }}"
SCAN = f"mutation($i: ScanLotInput!) {{ scanLot(input: $i) {{ {ERRORS} }} }}"
PRODUCE = (
    f"mutation($i: ProduceLotInput!) {{ produceLot(input: $i) {{ lot {{ number }} {ERRORS} }} }}"
)
START_OPERATION = (
    f"mutation($i: OperationActionInput!) {{ startOperation(input: $i) {{ {ERRORS} }} }}"
)
COMPLETE_OPERATION = (
    f"mutation($i: CompleteOperationInput!) {{ completeOperation(input: $i) {{ {ERRORS} }} }}"
)
START_INSPECTION = (
    f"mutation($i: StartInspectionInput!) {{ startInspection(input: $i) {{ "
    f"inspection {{ number }} {ERRORS} }} }}"
)
RECORD_RESULTS = (
    f"mutation($i: RecordResultsInput!) {{ recordInspectionResults(input: $i) {{ "
    f"inspection {{ status }} deviation {{ number }} {ERRORS} }} }}"
)
RAISE = (
    f"mutation($i: RaiseDeviationInput!) {{ raiseDeviation(input: $i) {{ "
    f"deviation {{ number }} {ERRORS} }} }}"
)
APPROVE = (
    f"mutation($i: DecideDeviationInput!) {{ approveDeviation(input: $i) {{ "
    f"deviation {{ status signatures {{ contentHash }} }} {ERRORS} }} }}"
)
CREATE_TOKEN = (
    f"mutation($i: CreateApiTokenInput!) {{ createApiToken(input: $i) {{ token {ERRORS} }} }}"
)


def gtin(item: int) -> str:
    body = f"0950110155{item:03d}"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


GTIN_A, GTIN_B, GTIN_FG = gtin(1), gtin(2), gtin(3)
MATERIALS = [
    {
        "code": "RM-A",
        "name": "Resin",
        "kind": "RAW",
        "unit": "kg",
        "lotControlled": True,
        "gtin": GTIN_A,
        "incomingCharacteristics": [
            {
                "name": "Purity",
                "kind": "NUMERIC",
                "unit": "%",
                "lowerLimit": 98.5,
                "upperLimit": 100.0,
            }
        ],
    },
    {"code": "RM-B", "name": "Pigment", "kind": "RAW", "unit": "kg", "lotControlled": True,
     "gtin": GTIN_B},
    {"code": "FG-1", "name": "Paint", "kind": "FINISHED", "unit": "l", "lotControlled": True,
     "gtin": GTIN_FG},
]  # fmt: skip
VISCOSITY = {"name": "Viscosity", "kind": "NUMERIC", "unit": "Pa.s", "lowerLimit": 1.5,
             "upperLimit": 2.5}  # fmt: skip

_ids = itertools.count(1)


def cmid() -> str:
    return f"ebr-{next(_ids)}"


async def ok(caller: Caller, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The payload of a mutation that must succeed."""
    body = await caller.data(query, variables)
    (payload,) = body.values()
    assert payload["errors"] == [], payload
    result: dict[str, Any] = payload
    return result


async def refused(caller: Caller, query: str, variables: dict[str, Any]) -> list[str]:
    body = await caller.data(query, variables)
    (payload,) = body.values()
    return [e["code"] for e in payload["errors"]]


@dataclass
class Plant:
    erp: Caller
    otto: Caller  # operator
    quinn: Caller  # quality
    password: str

    async def order(self, number: str, components: list[tuple[str, str, int]]) -> None:
        await ok(
            self.erp,
            UPSERT_ORDER,
            {
                "i": {
                    "externalId": f"ERP-{number}",
                    "number": number,
                    "productCode": "FG-1",
                    "quantity": "20",
                    "workCenterCode": "WC-1",
                    "components": [
                        {"materialCode": m, "quantity": q, "operationSequence": s}
                        for m, q, s in components
                    ],
                    "operations": [
                        {"sequence": 10, "name": "Mix", "characteristics": [VISCOSITY]},
                        {"sequence": 20, "name": "Fill"},
                    ],
                }
            },
        )
        await ok(self.erp, RELEASE, {"n": number})

    async def receive(self, number: str, material: str, quantity: str) -> None:
        await ok(
            self.otto,
            RECEIVE,
            {
                "i": {
                    "clientMutationId": cmid(),
                    "number": number,
                    "materialCode": material,
                    "quantity": quantity,
                    "supplierLot": f"SUP-{number}",
                }
            },
        )

    def scan_input(self, code: str, order: str, **extra: Any) -> dict[str, Any]:
        return {"i": {"clientMutationId": cmid(), "code": code, "orderNumber": order, **extra}}

    async def inspect_lot(self, lot: str, purity: float, note: str | None = None) -> str | None:
        """Inspects a lot; the number of the deviation a failure raised."""
        started = await ok(self.otto, START_INSPECTION, {"i": {"clientMutationId": cmid(),
                                                              "lotNumber": lot}})  # fmt: skip
        recorded = await ok(
            self.otto,
            RECORD_RESULTS,
            {
                "i": {
                    "clientMutationId": cmid(),
                    "inspectionNumber": started["inspection"]["number"],
                    "results": [{"characteristic": "Purity", "value": purity, "note": note}],
                }
            },
        )
        deviation = recorded["deviation"]
        return deviation["number"] if deviation else None

    async def approve(self, number: str, reason: str) -> str:
        payload = await ok(
            self.quinn,
            APPROVE,
            {
                "i": {
                    "clientMutationId": cmid(),
                    "number": number,
                    "disposition": "USE_AS_IS",
                    "signature": {
                        "password": self.password,
                        "meaning": "Approved for use",
                        "reason": reason,
                    },
                }
            },
        )
        content_hash: str = payload["deviation"]["signatures"][0]["contentHash"]
        return content_hash

    async def raise_deviation(self, title: str, **extra: Any) -> str:
        payload = await ok(
            self.otto,
            RAISE,
            {"i": {"clientMutationId": cmid(), "title": title, "severity": "MINOR", **extra}},
        )
        number: str = payload["deviation"]["number"]
        return number


@pytest.fixture
async def ebr_plant(as_role: Callable[..., Awaitable[Caller]], password: str) -> Plant:
    plant = Plant(
        erp=await as_role(Role.ERP, username="erp"),
        otto=await as_role(Role.OPERATOR, username="otto"),
        quinn=await as_role(Role.QUALITY, username="quinn"),
        password=password,
    )
    await ok(plant.erp, UPSERT_MATERIALS, {"i": MATERIALS})
    await ok(plant.erp, UPSERT_WORK_CENTERS, {"i": [{"code": "WC-1", "name": "Mixing",
                                                     "equipment": []}]})  # fmt: skip
    return plant


@dataclass
class Batch:
    inspection_deviation: str
    content_hash: str
    floor_deviation: str
    produced: str


SCRIPT_TITLE = "<script>alert(1)</script> Spill at the mixer"


@pytest.fixture
async def batch(ebr_plant: Plant, db: Database) -> Batch:
    """PO-7, COMPLETED: lot A-1 failed incoming inspection and was accepted by a signed
    USE_AS_IS deviation; B-1 scanned two days before it synced (a late entry); B-2 refused
    as expired, A-2 as still in quarantine; operation 10 inspected and scrapped 1; FG-7-1
    produced; and a floor deviation on the order with markup in its title."""
    p = ebr_plant
    await p.order("PO-7", [("RM-A", "10", 10), ("RM-B", "5", 10)])
    for number, material, quantity in (
        ("A-1", "RM-A", "10"),
        ("A-2", "RM-A", "5"),
        ("B-1", "RM-B", "5"),
        ("B-2", "RM-B", "5"),
    ):
        await p.receive(number, material, quantity)

    failed = await p.inspect_lot("A-1", 97.9, "Below spec")
    assert failed is not None
    content_hash = await p.approve(failed, "Purity 97.9 % is fine for a primer coat")
    floor = await p.raise_deviation(SCRIPT_TITLE, orderNumber="PO-7")

    two_days_ago = (utcnow() - dt.timedelta(days=2)).isoformat()
    await ok(p.otto, SCAN, p.scan_input(f"(01){GTIN_B}(10)B-1", "PO-7", scannedAt=two_days_ago))
    await ok(p.otto, SCAN, p.scan_input(f"(01){GTIN_A}(10)A-1", "PO-7"))
    # B-2 passed its expiry while it waited (the expiry time as the expiry job meets it).
    async with db.write() as session:
        await session.execute(
            update(Lot)
            .where(Lot.number == "B-2")
            .values(expires_at=utcnow() - dt.timedelta(hours=1))
        )
    assert await refused(p.otto, SCAN, p.scan_input("B-2", "PO-7")) == ["LOT_EXPIRED"]
    assert await refused(p.otto, SCAN, p.scan_input(f"(01){GTIN_A}(10)A-2", "PO-7")) == [
        "LOT_UNAVAILABLE"
    ]

    operation = {"orderNumber": "PO-7", "sequence": 10}
    await ok(p.otto, START_OPERATION, {"i": {"clientMutationId": cmid(), **operation}})
    started = await ok(
        p.otto,
        START_INSPECTION,
        {"i": {"clientMutationId": cmid(), "orderNumber": "PO-7", "operationSequence": 10}},
    )
    await ok(
        p.otto,
        RECORD_RESULTS,
        {
            "i": {
                "clientMutationId": cmid(),
                "inspectionNumber": started["inspection"]["number"],
                "results": [{"characteristic": "Viscosity", "value": 2.0}],
            }
        },
    )
    await ok(
        p.otto,
        COMPLETE_OPERATION,
        {
            "i": {
                "clientMutationId": cmid(),
                **operation,
                "quantityGood": "19",
                "quantityScrap": "1",
                "scrapReason": "Spilled at the mixer",
            }
        },
    )
    operation = {"orderNumber": "PO-7", "sequence": 20}
    await ok(p.otto, START_OPERATION, {"i": {"clientMutationId": cmid(), **operation}})
    produced = await ok(
        p.otto,
        PRODUCE,
        {"i": {"clientMutationId": cmid(), "orderNumber": "PO-7", "quantity": "19",
               "number": "FG-7-1"}},
    )  # fmt: skip
    await ok(
        p.otto,
        COMPLETE_OPERATION,
        {"i": {"clientMutationId": cmid(), **operation, "quantityGood": "19",
               "quantityScrap": "0"}},
    )  # fmt: skip
    return Batch(failed, content_hash, floor, produced["lot"]["number"])


async def get_record(
    client: httpx.AsyncClient, number: str, token: str | None, *, json_form: bool = True
) -> httpx.Response:
    path = f"/orders/{number}/batch-record{'.json' if json_form else ''}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.get(path, headers=headers)


# ---------------------------------------------------------------- the record's content


async def test_the_json_record_has_every_section_of_the_batch(
    batch: Batch, ebr_plant: Plant, client: httpx.AsyncClient
) -> None:
    response = await get_record(client, "PO-7", ebr_plant.quinn.token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    record = response.json()

    order = record["order"]
    assert (order["number"], order["externalId"], order["status"]) == (
        "PO-7",
        "ERP-PO-7",
        "COMPLETED",
    )
    assert order["product"] == {"code": "FG-1", "name": "Paint", "unit": "l"}
    assert (order["quantityPlanned"], order["quantityGood"], order["quantityScrap"]) == (
        "20",
        "19",
        "0",
    )
    assert order["workCenter"] == {"code": "WC-1", "name": "Mixing"}
    assert record["generatedBy"] == "quinn"
    assert record["auditTrail"]["valid"] is True
    assert record["auditTrail"]["entries"] > 20

    # Consumptions in scan order: B-1 was scanned two days before the server received it.
    consumed = record["consumptions"]
    assert [
        (c["lotNumber"], c["material"]["code"], c["quantity"], c["unit"]) for c in consumed
    ] == [
        ("B-1", "RM-B", "5", "kg"),
        ("A-1", "RM-A", "10", "kg"),
    ]
    assert {c["consumedBy"] for c in consumed} == {"otto"}
    assert [c["lateEntry"] for c in consumed] == [True, False]
    late_by = dt.datetime.fromisoformat(consumed[0]["recordedAt"]) - dt.datetime.fromisoformat(
        consumed[0]["consumedAt"]
    )
    assert dt.timedelta(hours=47, minutes=59) < late_by < dt.timedelta(hours=48, minutes=5)
    assert consumed[0]["lateByHours"] == pytest.approx(48.0, abs=0.1)
    assert consumed[1]["supplierLot"] == "SUP-A-1"
    assert consumed[1]["lotExpiresAt"] is None  # RM-A has no shelf life and none was given

    operations = record["operations"]
    assert [
        (o["sequence"], o["status"], o["startedBy"], o["completedBy"], o["quantityGood"],
         o["quantityScrap"], o["scrapReason"])
        for o in operations
    ] == [
        (10, "DONE", "otto", "otto", "19", "1", "Spilled at the mixer"),
        (20, "DONE", "otto", "otto", "19", "0", None),
    ]  # fmt: skip
    assert all(o["startedAt"] and o["completedAt"] for o in operations)

    inspections = {i["subject"]: i for i in record["inspections"]}
    assert set(inspections) == {"lot A-1 (RM-A)", "operation 10 Mix"}
    incoming = inspections["lot A-1 (RM-A)"]
    assert incoming["status"] == "FAILED"
    (purity,) = incoming["results"]
    assert purity | {"recordedAt": None} == {
        "characteristic": "Purity",
        "kind": "NUMERIC",
        "value": 97.9,
        "unit": "%",
        "nominal": None,
        "lowerLimit": 98.5,
        "upperLimit": 100.0,
        "passed": False,
        "note": "Below spec",
        "recordedBy": "otto",
        "recordedAt": None,
    }
    in_process = inspections["operation 10 Mix"]
    assert (in_process["status"], in_process["operationSequence"]) == ("PASSED", 10)
    assert [(r["characteristic"], r["value"], r["passed"]) for r in in_process["results"]] == [
        ("Viscosity", 2.0, True)
    ]

    deviations = {d["number"]: d for d in record["deviations"]}
    assert set(deviations) == {batch.inspection_deviation, batch.floor_deviation}
    approved = deviations[batch.inspection_deviation]
    assert (approved["status"], approved["disposition"], approved["source"]) == (
        "APPROVED",
        "USE_AS_IS",
        "INSPECTION",
    )
    assert approved["lots"] == ["A-1"]
    (signature,) = approved["signatures"]
    assert signature["signer"] == "quinn"
    assert signature["signerName"] == "Quinn"
    assert signature["meaning"] == "Approved for use"
    assert signature["reason"] == "Purity 97.9 % is fine for a primer coat"
    assert signature["contentHash"] == batch.content_hash
    assert re.fullmatch(r"[0-9a-f]{64}", signature["contentHash"])
    floor = deviations[batch.floor_deviation]
    assert (floor["title"], floor["status"], floor["signatures"]) == (SCRIPT_TITLE, "OPEN", [])

    (produced,) = record["producedLots"]
    assert (produced["number"], produced["quantity"], produced["unit"], produced["status"]) == (
        "FG-7-1",
        "19",
        "l",
        "AVAILABLE",
    )

    components = [(c["material"]["code"], c["quantityConsumed"]) for c in record["components"]]
    assert components == [("RM-A", "10"), ("RM-B", "5")]


async def test_the_review_by_exception_lists_what_departs_from_the_normal_path(
    batch: Batch, ebr_plant: Plant, client: httpx.AsyncClient
) -> None:
    record = (await get_record(client, "PO-7", ebr_plant.quinn.token)).json()
    keys = list(record)
    assert keys.index("exceptions") < keys.index("consumptions")  # at the top
    exceptions = record["exceptions"]

    (out_of_spec,) = exceptions["outOfSpecResults"]
    assert (out_of_spec["subject"], out_of_spec["characteristic"], out_of_spec["value"]) == (
        "lot A-1 (RM-A)",
        "Purity",
        97.9,
    )
    assert {(d["number"], d["status"]) for d in exceptions["deviations"]} == {
        (batch.inspection_deviation, "APPROVED"),
        (batch.floor_deviation, "OPEN"),
    }
    (late,) = exceptions["lateEntries"]
    assert (late["lotNumber"], late["consumedBy"]) == ("B-1", "otto")

    refusals = exceptions["refusedScans"]
    assert [(r["code"], r["lotNumber"], r["by"]) for r in refusals] == [
        ("LOT_EXPIRED", "B-2", "otto"),
        ("LOT_UNAVAILABLE", "A-2", "otto"),
    ]
    assert refusals[0]["scannedCode"] == "B-2"
    assert refusals[1]["scannedCode"] == f"(01){GTIN_A}(10)A-2"
    assert refusals[1]["material"] == {"code": "RM-A", "name": "Resin"}
    assert "A-2 is QUARANTINE" in refusals[1]["message"]
    assert all(r["at"] and r["scannedAt"] for r in refusals)
    assert exceptions["count"] == 1 + 2 + 1 + 2


async def test_stored_requests_keep_the_scanned_code_but_never_a_password(
    batch: Batch, ebr_plant: Plant, db: Database
) -> None:
    async with db.read() as session:
        outcomes = list(await session.scalars(select(MutationOutcome)))
    decided = [o for o in outcomes if o.operation == "approveDeviation"]
    assert len(decided) == 1
    assert decided[0].request is not None
    assert decided[0].request["signature"]["meaning"] == "Approved for use"
    assert "password" not in decided[0].request["signature"]
    assert all(ebr_plant.password not in json.dumps(o.request) for o in outcomes)
    scans = [o.request["code"] for o in outcomes if o.operation == "scanLot" and o.request]
    assert "B-2" in scans


async def test_the_html_record_prints_the_batch_with_every_value_escaped(
    batch: Batch, ebr_plant: Plant, client: httpx.AsyncClient
) -> None:
    response = await client.get(
        "/orders/PO-7/batch-record", params={"token": ebr_plant.quinn.token}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    page = response.text
    for value in (
        "PO-7",
        "ERP-PO-7",
        "Paint",
        "A-1",
        "B-1",
        "FG-7-1",
        batch.inspection_deviation,
        batch.content_hash,
        "Spilled at the mixer",
        "Purity 97.9 % is fine for a primer coat",
        "LOT_EXPIRED",
        "@media print",
    ):
        assert value in page, value
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Spill at the mixer" in page
    assert "<script" not in page
    # The exceptions come first, before the record's own sections.
    assert page.index("Review by exception") < page.index("Consumed lots")
    assert page.index("Review by exception") < page.index("<h2>Deviations</h2>")
    # No external assets: nothing is fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page)


# ---------------------------------------------------------------- who may read it


async def test_reading_a_record_needs_a_valid_token_and_a_reviewing_role(
    ebr_plant: Plant,
    client: httpx.AsyncClient,
    make_user: Callable[..., Awaitable[tuple[Any, str]]],
    as_role: Callable[..., Awaitable[Caller]],
) -> None:
    await ebr_plant.order("PO-8", [("RM-B", "1", 10)])

    for json_form in (True, False):
        response = await get_record(client, "PO-8", None, json_form=json_form)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        response = await get_record(client, "PO-8", "not-a-token", json_form=json_form)
        assert response.status_code == 401
    assert "sign in" in (await get_record(client, "PO-8", None)).json()["error"]

    for role in (Role.OPERATOR, Role.ERP, Role.EQUIPMENT):
        _, token = await make_user(f"user-{role.value.lower()}", role)
        response = await get_record(client, "PO-8", token)
        assert response.status_code == 403, role
        assert response.json() == {"error": "your roles do not allow reading batch records"}
        assert "PO-8" not in response.text

    for role in (Role.QUALITY, Role.SUPERVISOR, Role.ADMIN, Role.INTEGRATOR):
        _, token = await make_user(f"reviewer-{role.value.lower()}", role)
        response = await get_record(client, "PO-8", token)
        assert response.status_code == 200, role
        assert response.json()["order"]["number"] == "PO-8"
        by_query = await client.get("/orders/PO-8/batch-record", params={"token": token})
        assert by_query.status_code == 200, role

    # An integrator's API token, as an archive system would hold.
    admin = await as_role(Role.ADMIN, username="ada")
    created = await ok(admin, CREATE_TOKEN, {"i": {"name": "archive", "roles": ["INTEGRATOR"]}})
    response = await get_record(client, "PO-8", created["token"])
    assert response.status_code == 200
    assert response.json()["generatedBy"] == "archive"

    quinn = ebr_plant.quinn.token
    response = await get_record(client, "PO-404", quinn)
    assert response.status_code == 404
    assert response.json() == {"error": "no production order 'PO-404'"}
    response = await get_record(client, "PO-404", quinn, json_form=False)
    assert response.status_code == 404
    assert "no production order" in response.text


async def test_a_token_in_the_url_does_not_reach_the_access_log(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        # What uvicorn logs for each request: client, method, path with query, version, status.
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:50000",
            "GET",
            "/orders/PO-7/batch-record?token=eyJ1IjoxfQ.secret&x=1",
            "1.1",
            200,
        )
    assert "eyJ1IjoxfQ.secret" not in caplog.text
    assert "/orders/PO-7/batch-record?token=[redacted]&x=1" in caplog.text


# ---------------------------------------------------------------- no N+1


@contextmanager
def statements_on(db: Database) -> Iterator[list[str]]:
    """Every SQL statement sent through the database's engines while the block runs."""
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


async def make_order_of(p: Plant, number: str, lots: int) -> None:
    """`number` with `lots` lots of RM-A, each refused once at scan (still in quarantine),
    inspected, scanned in (1 of its 2 kg) and then held by a deviation; the first
    deviation is signed."""
    await p.order(number, [("RM-A", str(lots), 10)])
    for i in range(lots):
        lot = f"{number}-A{i}"
        await p.receive(lot, "RM-A", "2")
        assert await refused(p.otto, SCAN, p.scan_input(lot, number)) == ["LOT_UNAVAILABLE"]
        assert await p.inspect_lot(lot, 99.0) is None
        await ok(p.otto, SCAN, p.scan_input(lot, number, quantity="1"))
        deviation = await p.raise_deviation(f"Lid of {lot} found open", lotNumbers=[lot])
        if i == 0:
            await p.approve(deviation, "Checked: contents intact")


async def test_the_record_costs_the_same_statements_for_2_and_10_consumptions(
    ebr_plant: Plant, client: httpx.AsyncClient, app: Any
) -> None:
    served: Database = app.state.services.db
    await make_order_of(ebr_plant, "PO-S", 2)
    await make_order_of(ebr_plant, "PO-L", 10)
    token = ebr_plant.quinn.token
    await get_record(client, "PO-S", token)  # warm-up: pools and first connections

    with statements_on(served) as small:
        record_small = (await get_record(client, "PO-S", token)).json()
    with statements_on(served) as large:
        record_large = (await get_record(client, "PO-L", token)).json()

    for record, lots in ((record_small, 2), (record_large, 10)):
        assert len(record["consumptions"]) == lots
        assert len(record["inspections"]) == lots
        assert len(record["deviations"]) == lots
        assert len(record["exceptions"]["refusedScans"]) == lots
        assert sum(len(d["signatures"]) for d in record["deviations"]) == 1
    assert len(large) == len(small), (small, large)
    # BEGIN, sign-in, order, components, consumptions, produced, operations and their
    # audit entries, inspections, results, deviations, their lots and signatures, refusals,
    # who refused, the refused lots, and the audit chain (one batch and its end).
    assert len(small) <= 18, small
