"""receiveLot through GraphQL: status by the incoming plan, expiry, supplier lot, bad input."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from lots_support import RECEIVE, Caller, Floor, codes, lot_row, row_counts
from sqlalchemy import select

from backend.audit.models import AuditEntry
from backend.db import Database, utcnow
from backend.lots.models import LotStatus
from backend.principal import Role

pytestmark = pytest.mark.usefixtures("plant")


async def test_a_lot_waits_in_quarantine_only_when_its_material_has_incoming_checks(
    floor: Floor, db: Database
) -> None:
    resin = await floor.ok_receive("L-RESIN", "RM-1", "250.5", supplierLot="  SUP-77  ")
    solvent = await floor.ok_receive("L-SOLV", "RM-Q", "40")

    assert (resin["status"], solvent["status"]) == ("AVAILABLE", "QUARANTINE")
    assert resin["material"] == {"code": "RM-1"}
    assert Decimal(resin["quantity"]) == Decimal("250.5")
    assert resin["supplierLot"] == "SUP-77"
    row = await lot_row(db, "L-SOLV")
    assert row.status is LotStatus.QUARANTINE
    assert (row.quantity, row.initial_quantity) == (Decimal(40), Decimal(40))
    assert row.created_by == "otto"
    async with db.read() as session:
        entries = list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "lot.receive").order_by(AuditEntry.id)
            )
        )
    assert [(e.actor, e.entity_id, e.changes["status"]) for e in entries if e.changes] == [
        ("otto", str((await lot_row(db, "L-RESIN")).id), "AVAILABLE"),
        ("otto", str(row.id), "QUARANTINE"),
    ]


async def test_expiry_defaults_from_the_shelf_life_and_a_given_expiry_wins(floor: Floor) -> None:
    before = utcnow()
    defaulted = await floor.ok_receive("L-1", "RM-1")  # RM-1 keeps 365 days
    given_at = (before + dt.timedelta(days=10)).replace(microsecond=0)
    given = await floor.ok_receive("L-2", "RM-1", expiresAt=given_at.isoformat())
    unlimited = await floor.ok_receive("L-3", "RM-2")  # RM-2 has no shelf life

    expires = dt.datetime.fromisoformat(defaulted["expiresAt"])
    assert before + dt.timedelta(days=365) <= expires <= utcnow() + dt.timedelta(days=365)
    assert dt.datetime.fromisoformat(given["expiresAt"]) == given_at
    assert unlimited["expiresAt"] is None


def _soon() -> str:
    return (utcnow() + dt.timedelta(days=3)).isoformat()


BAD_INPUT: list[tuple[str, dict[str, Any], str, str]] = [
    ("duplicate number", {"number": "L-TAKEN"}, "CONFLICT", "number"),
    ("duplicate after trimming", {"number": "  L-TAKEN "}, "CONFLICT", "number"),
    ("unknown material", {"materialCode": "NOPE"}, "NOT_FOUND", "materialCode"),
    ("zero quantity", {"quantity": "0"}, "INVALID_INPUT", "quantity"),
    ("negative quantity", {"quantity": "-5"}, "INVALID_INPUT", "quantity"),
    ("seven decimals", {"quantity": "1.0000001"}, "INVALID_INPUT", "quantity"),
    ("naive expiry", {"expiresAt": "2030-01-01T00:00:00"}, "INVALID_INPUT", "expiresAt"),
    ("past expiry", {"expiresAt": "2020-01-01T00:00:00+00:00"}, "INVALID_INPUT", "expiresAt"),
    ("empty number", {"number": "   "}, "INVALID_INPUT", "number"),
    ("long supplier lot", {"supplierLot": "S" * 101}, "INVALID_INPUT", "supplierLot"),
    ("empty clientMutationId", {"clientMutationId": " "}, "INVALID_INPUT", "clientMutationId"),
]


async def test_bad_input_is_refused_with_its_field_and_writes_nothing(
    floor: Floor, db: Database
) -> None:
    await floor.ok_receive("L-TAKEN", "RM-1", "5")
    for n, (name, change, code, field) in enumerate(BAD_INPUT):
        before = await row_counts(db)
        variables = {
            "clientMutationId": f"receive-bad-{n}",
            "number": "L-NEW",
            "materialCode": "RM-1",
            "quantity": "5",
            "expiresAt": _soon(),
        }
        body = await floor.caller.data(RECEIVE, {"input": variables | change})
        payload = body["receiveLot"]

        assert codes(payload) == [(code, field)], name
        assert payload["lot"] is None, name
        assert payload["errors"][0]["message"], name
        # Only the refusal is kept (for a resend); no lot and no audit entry.
        refusal = 0 if field == "clientMutationId" else 1
        after = await row_counts(db)
        assert after == before | {"mutation_outcomes": before["mutation_outcomes"] + refusal}, name


async def test_a_naive_expiry_is_refused_even_for_a_material_with_shelf_life(floor: Floor) -> None:
    payload = await floor.receive("L-N", "RM-1", expiresAt="2031-05-01T08:00:00")
    assert codes(payload) == [("INVALID_INPUT", "expiresAt")]
    assert "zone" in payload["errors"][0]["message"]


async def test_only_floor_roles_may_receive(erp: Caller, db: Database) -> None:
    payload = await Floor(erp).receive("L-ERP", "RM-1")
    assert codes(payload) == [("FORBIDDEN", None)]
    assert (await row_counts(db))["lots"] == 0


async def test_an_over_long_number_is_invalid_input(floor: Floor, db: Database) -> None:
    before = await row_counts(db)
    payload = await floor.receive("L" * 150, "RM-1")
    assert codes(payload) == [("INVALID_INPUT", "number")]
    after = await row_counts(db)
    assert after == before | {"mutation_outcomes": before["mutation_outcomes"] + 1}


async def test_two_receipts_of_one_number_at_once_give_one_lot_and_one_conflict(
    floor: Floor, as_role: Callable[..., Awaitable[Caller]], db: Database
) -> None:
    other = Floor(await as_role(Role.OPERATOR, username="olga"))
    for attempt in range(5):
        number = f"L-TWICE-{attempt}"
        results = await asyncio.gather(
            floor.receive(number, "RM-1", "10"), other.receive(number, "RM-2", "20")
        )
        assert sorted(codes(r) for r in results) == [[], [("CONFLICT", "number")]], results
    assert (await row_counts(db))["lots"] == 5
