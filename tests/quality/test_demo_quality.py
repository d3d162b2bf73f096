"""`mes demo`'s quality story (issue 4, part 6): an open deviation waits in the supervisors'
inbox, and PO-1004 is a completed order with a batch record worth reading."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select, text

from backend.db import Database
from backend.demo import BATCH_ORDER, OPEN_DEVIATION_LOT, demo_quality, seed
from backend.quality.models import Deviation
from backend.settings import Settings

INBOX = """{
  deviations(status: [OPEN], first: 50) {
    edges { node { number title status raisedBy { username } lots { number status } } }
  }
}"""
LOGIN = """mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }"""
TABLES = (
    "users",
    "production_orders",
    "lots",
    "consumptions",
    "genealogy_links",
    "inspections",
    "inspection_results",
    "deviations",
    "deviation_lots",
    "signatures",
    "audit_entries",
)


async def counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        return {
            t: int((await session.execute(text(f"SELECT COUNT(*) FROM {t}"))).scalar_one())
            for t in TABLES
        }


async def login(client: httpx.AsyncClient, username: str, password: str) -> str:
    body = (
        await client.post("/graphql", json={"query": LOGIN, "variables": {"u": username,
                                                                           "p": password}})
    ).json()  # fmt: skip
    token: str = body["data"]["login"]["token"]
    return token


async def test_the_demo_has_an_open_deviation_and_a_completed_batch_to_review(
    db: Database, settings: Settings, client: httpx.AsyncClient
) -> None:
    await seed(db, settings)
    once = await counts(db)
    await seed(db, settings)  # again: nothing changes
    assert await counts(db) == once
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Deviation)) == 2

    shown = await demo_quality(db, settings)
    assert shown.batch_order == BATCH_ORDER
    assert shown.open_deviation is not None

    # The supervisor's inbox: the deviation the operator raised, its lot held.
    supervisor = await login(client, "supervisor", "supervisor-demo-pass")
    inbox = (
        await client.post(
            "/graphql", json={"query": INBOX}, headers={"Authorization": f"Bearer {supervisor}"}
        )
    ).json()
    assert "errors" not in inbox, inbox
    (open_one,) = [e["node"] for e in inbox["data"]["deviations"]["edges"]]
    assert open_one["number"] == shown.open_deviation
    assert open_one["title"] == "Torn bag on receipt"
    assert open_one["raisedBy"]["username"] == "operator"
    assert open_one["lots"] == [{"number": OPEN_DEVIATION_LOT, "status": "ON_HOLD"}]

    # The batch record of PO-1004, opened as the printed URL opens it (the reviewer's token).
    response = await client.get(
        f"/orders/{BATCH_ORDER}/batch-record.json", params={"token": shown.reviewer_token}
    )
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["order"]["status"] == "COMPLETED"
    assert record["order"]["externalId"] == "SAP-4714"
    assert (record["order"]["quantityGood"], record["order"]["quantityScrap"]) == ("9.8", "0.2")
    assert [c["lotNumber"] for c in record["consumptions"]] == [
        "API-2610-07",
        "LAC-2610-04",
        "MGS-2610-02",
    ]
    assert {c["consumedBy"] for c in record["consumptions"]} == {"operator"}
    assert [(o["status"], o["startedBy"], o["completedBy"]) for o in record["operations"]] == [
        ("DONE", "operator", "operator"),
        ("DONE", "operator", "operator"),
    ]
    assert record["operations"][1]["scrapReason"] == "Blend left in the discharge chute"
    assert sorted(i["status"] for i in record["inspections"]) == ["FAILED", "PASSED", "PASSED"]
    (deviation,) = record["deviations"]
    assert (deviation["status"], deviation["disposition"]) == ("APPROVED", "USE_AS_IS")
    (signature,) = deviation["signatures"]
    assert (signature["signer"], signature["signerName"]) == ("quality", "Quinn Quality")
    (out_of_spec,) = record["exceptions"]["outOfSpecResults"]
    assert (out_of_spec["characteristic"], out_of_spec["value"]) == ("Moisture", 5.8)
    (produced,) = record["producedLots"]
    assert (produced["quantity"], produced["status"]) == ("9.8", "AVAILABLE")
    assert record["auditTrail"]["valid"] is True

    page = await client.get(
        f"/orders/{BATCH_ORDER}/batch-record", params={"token": shown.reviewer_token}
    )
    assert page.status_code == 200
    assert "Electronic batch record — PO-1004" in page.text
