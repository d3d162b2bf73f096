"""Deviations through GraphQL: raising one holds its lots; an approval's disposition or a
rejection decides what becomes of them; who may decide; and the deviation queries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from quality_support import (
    DEVIATION_QUERY,
    Bearer,
    Caller,
    Desk,
    actions_since,
    codes,
    last_audit_sequence,
    lot_status,
    result,
    row_counts,
    set_lot_status,
)

from backend.db import Database
from backend.lots.models import LotStatus
from backend.principal import Role

pytestmark = pytest.mark.usefixtures("po1")


async def test_raising_a_deviation_holds_its_lots(otto: Desk, quinn: Desk, db: Database) -> None:
    await otto.receive("L-1", "RM-1")  # AVAILABLE
    await otto.receive("L-Q")  # QUARANTINE
    before = await last_audit_sequence(db)

    payload = await otto.raise_deviation(
        "Resin drums dented",
        ["L-1", " L-Q ", "L-1"],
        severity="MINOR",
        description="Two drums on pallet 4",
        order="PO-1",
    )

    assert payload["errors"] == []
    deviation = payload["deviation"]
    assert deviation["number"].startswith("DEV-")
    assert (deviation["title"], deviation["description"]) == (
        "Resin drums dented",
        "Two drums on pallet 4",
    )
    assert (deviation["status"], deviation["source"], deviation["severity"]) == (
        "OPEN",
        "MANUAL",
        "MINOR",
    )
    assert deviation["disposition"] is None
    assert deviation["raisedBy"] == {"username": "otto"}
    assert deviation["raisedAt"] is not None
    assert deviation["lots"] == [
        {"number": "L-1", "status": "ON_HOLD"},
        {"number": "L-Q", "status": "ON_HOLD"},
    ]
    assert deviation["order"] == {"number": "PO-1"}
    assert (deviation["inspection"], deviation["signatures"]) == (None, [])
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD
    assert await lot_status(db, "L-Q") is LotStatus.ON_HOLD
    assert await actions_since(db, before) == ["lot.hold", "lot.hold", "deviation.raise"]

    found = (await quinn.caller.data(DEVIATION_QUERY, {"n": deviation["number"]}))["deviation"]
    assert found == deviation
    order = await quinn.caller.data(
        '{ productionOrder(number: "PO-1") { deviations { number title } } }'
    )
    assert order["productionOrder"]["deviations"] == [
        {"number": deviation["number"], "title": "Resin drums dented"}
    ]
    assert (await quinn.caller.data(DEVIATION_QUERY, {"n": "DEV-404"}))["deviation"] is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"lots": ["L-1", "L-404"]}, [("NOT_FOUND", "lotNumbers.1")]),
        ({"lots": ["L-1", "L-USED"]}, [("INVALID_TRANSITION", "lotNumbers.1")]),
        ({"lots": ["L-1", ""]}, [("INVALID_INPUT", "lotNumbers.1")]),
        ({"order": "PO-404"}, [("NOT_FOUND", "orderNumber")]),
        ({"title": ""}, [("INVALID_INPUT", "title")]),
        ({"title": "   "}, [("INVALID_INPUT", "title")]),
        ({"title": "x" * 201}, [("INVALID_INPUT", "title")]),
        ({"description": "x" * 10_001}, [("INVALID_INPUT", "description")]),
        (
            {"title": "", "description": "x" * 10_001},
            [("INVALID_INPUT", "title"), ("INVALID_INPUT", "description")],
        ),
    ],
    ids=[
        "unknown-lot",
        "consumed-lot",
        "blank-lot",
        "unknown-order",
        "empty-title",
        "blank-title",
        "title-too-long",
        "description-too-long",
        "all-at-once",
    ],
)
async def test_a_bad_deviation_is_refused_and_holds_nothing(
    otto: Desk, db: Database, changes: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    await otto.receive("L-1", "RM-1")
    await otto.receive("L-USED", "RM-1")
    await set_lot_status(db, "L-USED", LotStatus.CONSUMED)
    counts = await row_counts(db)

    payload = await otto.raise_deviation(
        changes.get("title", "Dented drum"),
        changes.get("lots", ["L-1"]),
        description=changes.get("description"),
        order=changes.get("order"),
    )

    assert payload["deviation"] is None
    assert codes(payload) == expected
    after = await row_counts(db)
    assert after["deviations"] == after["deviation_lots"] == 0
    assert after["audit_entries"] == counts["audit_entries"]
    assert await lot_status(db, "L-1") is LotStatus.AVAILABLE


async def test_the_longest_title_and_description_are_accepted(otto: Desk) -> None:
    payload = await otto.raise_deviation("t" * 200, description="d" * 10_000)
    assert payload["errors"] == []
    assert len(payload["deviation"]["title"]) == 200
    assert len(payload["deviation"]["description"]) == 10_000


@pytest.mark.parametrize(
    ("disposition", "lot_after"),
    [
        ("USE_AS_IS", LotStatus.AVAILABLE),
        ("REWORK", LotStatus.ON_HOLD),
        ("SCRAP", LotStatus.REJECTED),
        ("RETURN_TO_SUPPLIER", LotStatus.REJECTED),
    ],
)
async def test_an_approval_applies_its_disposition_to_the_lots(
    otto: Desk, sue: Desk, db: Database, disposition: str, lot_after: LotStatus
) -> None:
    await otto.receive("L-1", "RM-1")
    await otto.receive("L-2", "RM-1")
    number = await otto.ok_raise(lots=["L-1", "L-2"])
    before = await last_audit_sequence(db)

    payload = await sue.approve(number, disposition=disposition)

    assert payload["errors"] == []
    deviation = payload["deviation"]
    assert (deviation["status"], deviation["disposition"]) == ("APPROVED", disposition)
    assert deviation["lots"] == [
        {"number": "L-1", "status": lot_after.value},
        {"number": "L-2", "status": lot_after.value},
    ]
    assert [s["signer"]["username"] for s in deviation["signatures"]] == ["sue"]
    assert await lot_status(db, "L-1") is lot_after
    assert await lot_status(db, "L-2") is lot_after
    lot_action = {
        LotStatus.AVAILABLE: ["lot.release", "lot.release"],
        LotStatus.ON_HOLD: [],
        LotStatus.REJECTED: ["lot.reject", "lot.reject"],
    }[lot_after]
    assert await actions_since(db, before) == [*lot_action, "deviation.approve"]


async def test_a_rejection_keeps_the_lots_on_hold(otto: Desk, quinn: Desk, db: Database) -> None:
    await otto.receive("L-1", "RM-1")
    number = await otto.ok_raise(lots=["L-1"])
    before = await last_audit_sequence(db)

    payload = await quinn.reject(number, reason="Supplier must explain")

    assert payload["errors"] == []
    deviation = payload["deviation"]
    assert (deviation["status"], deviation["disposition"]) == ("REJECTED", None)
    assert deviation["lots"] == [{"number": "L-1", "status": "ON_HOLD"}]
    assert [(s["signer"]["username"], s["reason"]) for s in deviation["signatures"]] == [
        ("quinn", "Supplier must explain")
    ]
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD
    assert await actions_since(db, before) == ["deviation.reject"]


async def test_an_approval_needs_a_disposition(otto: Desk, sue: Desk, db: Database) -> None:
    await otto.receive("L-1", "RM-1")
    number = await otto.ok_raise(lots=["L-1"])
    counts = await row_counts(db)

    payload = await sue.approve(number, disposition=None)

    assert codes(payload) == [("INVALID_INPUT", "disposition")]
    assert payload["deviation"] is None
    after = await row_counts(db)
    assert (after["signatures"], after["audit_entries"]) == (0, counts["audit_entries"])
    assert (await sue.caller.data(DEVIATION_QUERY, {"n": number}))["deviation"]["status"] == "OPEN"


@pytest.mark.parametrize("first", ["approve", "reject"])
async def test_a_decided_deviation_cannot_be_decided_again(
    otto: Desk, sue: Desk, sam: Desk, db: Database, first: str
) -> None:
    await otto.receive("L-1", "RM-1")
    number = await otto.ok_raise(lots=["L-1"])
    decided = await (sue.approve(number) if first == "approve" else sue.reject(number))
    assert decided["errors"] == []
    counts = await row_counts(db)
    status = await lot_status(db, "L-1")

    again = [
        await sam.approve(number, disposition="SCRAP"),
        await sam.reject(number),
        await sue.approve(number),
    ]

    assert [codes(p) for p in again] == [[("INVALID_TRANSITION", "number")]] * 3
    after = await row_counts(db)
    assert after["signatures"] == counts["signatures"] == 1
    assert after["audit_entries"] == counts["audit_entries"]
    assert await lot_status(db, "L-1") is status
    deviation = (await sam.caller.data(DEVIATION_QUERY, {"n": number}))["deviation"]
    assert deviation["status"] == ("APPROVED" if first == "approve" else "REJECTED")


async def test_an_unknown_deviation_cannot_be_decided(sue: Desk) -> None:
    assert codes(await sue.approve("DEV-404")) == [("NOT_FOUND", "number")]
    assert codes(await sue.reject("DEV-404")) == [("NOT_FOUND", "number")]


async def test_whoever_raised_a_deviation_cannot_decide_it(
    otto: Desk, quinn: Desk, sue: Desk, db: Database
) -> None:
    await otto.receive("L-1", "RM-1")
    number = await quinn.ok_raise(lots=["L-1"])
    counts = await row_counts(db)

    approve = await quinn.approve(number)
    reject = await quinn.reject(number)

    assert codes(approve) == [("SELF_APPROVAL", None)]
    assert codes(reject) == [("SELF_APPROVAL", None)]
    after = await row_counts(db)
    assert after["signatures"] == 0
    assert after["audit_entries"] == counts["audit_entries"]
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD
    # Someone else may.
    assert (await sue.approve(number))["deviation"]["status"] == "APPROVED"


async def test_whoever_recorded_the_failing_result_cannot_decide_its_deviation(
    otto: Desk, quinn: Desk, sue: Desk
) -> None:
    await otto.receive("L-Q")
    inspection = await sue.ok_start(lot="L-Q")
    await quinn.ok_record(inspection, [result("Clear", passed=False)])
    payload = await sue.ok_record(inspection, [result("Purity", 99.0)])
    number = payload["deviation"]["number"]
    assert payload["deviation"]["raisedBy"] == {"username": "quinn"}

    assert codes(await quinn.approve(number)) == [("SELF_APPROVAL", None)]
    # Sue recorded only a passing result and completed the inspection: she may decide.
    approved = await sue.approve(number, disposition="SCRAP")
    assert approved["errors"] == []
    assert approved["deviation"]["lots"] == [{"number": "L-Q", "status": "REJECTED"}]


async def test_an_operator_cannot_decide(otto: Desk, quinn: Desk) -> None:
    number = await quinn.ok_raise()

    assert codes(await otto.approve(number)) == [("FORBIDDEN", None)]
    assert codes(await otto.reject(number)) == [("FORBIDDEN", None)]
    deviation = (await otto.caller.data(DEVIATION_QUERY, {"n": number}))["deviation"]
    assert deviation["status"] == "OPEN"


async def test_an_api_token_cannot_sign(
    as_role: Callable[..., Awaitable[Caller]],
    client: httpx.AsyncClient,
    otto: Desk,
    password: str,
    db: Database,
) -> None:
    admin = await as_role(Role.ADMIN, username="ada")
    created = await admin.data(
        """mutation { createApiToken(input: {name: "qms-bridge", roles: [QUALITY]}) {
             token errors { code field } } }"""
    )
    assert created["createApiToken"]["errors"] == []
    bridge = Desk(Bearer(client, created["createApiToken"]["token"]), password)
    await otto.receive("L-1", "RM-1")
    number = await otto.ok_raise(lots=["L-1"])
    counts = await row_counts(db)

    approve = await bridge.approve(number)
    reject = await bridge.reject(number)

    assert codes(approve) == [("SIGNATURE_INVALID", "signature.password")]
    assert codes(reject) == [("SIGNATURE_INVALID", "signature.password")]
    after = await row_counts(db)
    assert (after["signatures"], after["signing_locks"]) == (0, 0)
    assert after["audit_entries"] == counts["audit_entries"]
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD
    # The token may still raise deviations (QUALITY) — just not sign.
    assert (await bridge.raise_deviation("From the QMS"))["errors"] == []


async def test_a_lot_held_by_two_open_deviations_stays_on_hold_until_both_are_decided(
    otto: Desk, sue: Desk, db: Database
) -> None:
    await otto.receive("L-1", "RM-1")
    first = await otto.ok_raise("Dented drum", lots=["L-1"])
    second = await otto.ok_raise("Label smudged", lots=["L-1"])

    payload = await sue.approve(first, disposition="USE_AS_IS")
    assert payload["deviation"]["lots"] == [{"number": "L-1", "status": "ON_HOLD"}]
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD

    payload = await sue.approve(second, disposition="USE_AS_IS")
    assert payload["deviation"]["lots"] == [{"number": "L-1", "status": "AVAILABLE"}]
    assert await lot_status(db, "L-1") is LotStatus.AVAILABLE


DEVIATIONS = """
query($first: Int, $after: String, $status: [DeviationStatus!]) {
  deviations(first: $first, after: $after, status: $status) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { number status } }
  }
}
"""


async def test_deviations_are_listed_by_status_and_paged(otto: Desk, sue: Desk) -> None:
    numbers = [await otto.ok_raise(f"Deviation {i}") for i in range(4)]
    await sue.approve(numbers[0])
    await sue.reject(numbers[1])

    def listed(body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(e["node"]["number"], e["node"]["status"]) for e in body["edges"]]

    page = (await sue.caller.data(DEVIATIONS, {"first": 3}))["deviations"]
    assert page["totalCount"] == 4
    assert page["pageInfo"]["hasNextPage"] is True
    assert listed(page) == [
        (numbers[0], "APPROVED"),
        (numbers[1], "REJECTED"),
        (numbers[2], "OPEN"),
    ]
    rest = (
        await sue.caller.data(DEVIATIONS, {"first": 3, "after": page["pageInfo"]["endCursor"]})
    )["deviations"]
    assert (listed(rest), rest["pageInfo"]["hasNextPage"]) == ([(numbers[3], "OPEN")], False)

    inbox = (await sue.caller.data(DEVIATIONS, {"status": ["OPEN"]}))["deviations"]
    assert (inbox["totalCount"], listed(inbox)) == (
        2,
        [(numbers[2], "OPEN"), (numbers[3], "OPEN")],
    )
    decided = (await sue.caller.data(DEVIATIONS, {"status": ["APPROVED", "REJECTED"]}))[
        "deviations"
    ]
    assert decided["totalCount"] == 2
