"""Electronic signatures on deviation decisions: a wrong password changes nothing but the
failure record, repeated wrong passwords lock signing for that user, a signature is bound to
what it signs through the audit trail, the password is never stored, and decisions replay
safely by clientMutationId."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from quality_support import (
    DEVIATION_QUERY,
    Desk,
    actions_since,
    audit_since,
    codes,
    last_audit_sequence,
    lot_status,
    row_counts,
)
from sqlalchemy import select, text, update

from backend.auth.models import User
from backend.db import Database, utcnow
from backend.lots.models import Lot, LotStatus
from backend.quality.models import Deviation, DeviationLot, Signature, SigningLock
from backend.quality.service import signed_content
from backend.settings import Settings

pytestmark = pytest.mark.usefixtures("po1")

WRONG = "not my password at all"
INVALID = [("SIGNATURE_INVALID", "signature.password")]


async def _deviation_on_a_lot(otto: Desk, lot: str = "L-1", title: str = "Dented drum") -> str:
    await otto.receive(lot, "RM-1")
    return await otto.ok_raise(title, lots=[lot])


async def _failures(db: Database, username: str) -> SigningLock | None:
    async with db.read() as session:
        return await session.scalar(
            select(SigningLock)
            .join(User, User.id == SigningLock.user_id)
            .where(User.username == username)
        )


async def _status(desk: Desk, number: str) -> str:
    deviation = (await desk.caller.data(DEVIATION_QUERY, {"n": number}))["deviation"]
    status: str = deviation["status"]
    return status


async def test_a_wrong_password_changes_nothing_but_the_failure_record(
    otto: Desk, sue: Desk, db: Database
) -> None:
    number = await _deviation_on_a_lot(otto)
    counts = await row_counts(db)
    before = await last_audit_sequence(db)

    payload = await sue.approve(number, password=WRONG)

    assert codes(payload) == INVALID
    assert payload["deviation"] is None
    assert await _status(sue, number) == "OPEN"
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD
    after = await row_counts(db)
    # The failure is counted for the user, and audited; no other row is written.
    assert after == {
        **counts,
        "signing_locks": counts["signing_locks"] + 1,
        "audit_entries": counts["audit_entries"] + 1,
    }
    assert after["signatures"] == 0
    # The only new audit entry is the failed attempt, naming the user, never the password.
    entries = await audit_since(db, before)
    assert [(e.action, e.entity_type, e.actor) for e in entries] == [
        ("signature.failed", "User", "sue")
    ]
    assert entries[0].changes == {"username": "sue", "failures": 1}
    lock = await _failures(db, "sue")
    assert lock is not None
    assert (lock.failures, lock.locked_until) == (1, None)
    # Not even the refusal is kept for replay (backend/gql.py, NOT_REPLAYED): a retry with
    # the right password under the same clientMutationId must sign.


async def test_a_wrong_password_on_a_rejection_changes_nothing_either(
    otto: Desk, sue: Desk, db: Database
) -> None:
    number = await _deviation_on_a_lot(otto)
    before = await last_audit_sequence(db)

    payload = await sue.reject(number, password=WRONG)

    assert codes(payload) == INVALID
    assert await _status(sue, number) == "OPEN"
    assert await actions_since(db, before) == ["signature.failed"]
    assert (await row_counts(db))["signatures"] == 0


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        ({"meaning": ""}, [("INVALID_INPUT", "signature.meaning")]),
        ({"meaning": "   "}, [("INVALID_INPUT", "signature.meaning")]),
        ({"meaning": "m" * 201}, [("INVALID_INPUT", "signature.meaning")]),
        ({"reason": None}, [("INVALID_INPUT", "signature.reason")]),
        ({"reason": "  "}, [("INVALID_INPUT", "signature.reason")]),
        ({"reason": "r" * 10_001}, [("INVALID_INPUT", "signature.reason")]),
        (
            {"meaning": "", "reason": None, "password": WRONG},
            [("INVALID_INPUT", "signature.meaning"), ("INVALID_INPUT", "signature.reason")],
        ),
    ],
    ids=[
        "no-meaning",
        "blank-meaning",
        "meaning-too-long",
        "no-reason",
        "blank-reason",
        "reason-too-long",
        "both-and-a-wrong-password",
    ],
)
async def test_a_signature_needs_a_meaning_and_a_reason(
    otto: Desk, sue: Desk, db: Database, signature: dict[str, Any], expected: list[Any]
) -> None:
    number = await _deviation_on_a_lot(otto)
    counts = await row_counts(db)

    payload = await sue.approve(number, **signature)

    assert codes(payload) == expected
    assert await _status(sue, number) == "OPEN"
    after = await row_counts(db)
    # Refused before the password is looked at: no failure is counted.
    assert (after["signatures"], after["signing_locks"]) == (0, 0)
    assert after["audit_entries"] == counts["audit_entries"]


async def test_repeated_wrong_passwords_lock_signing_for_that_user(
    otto: Desk, sue: Desk, sam: Desk, db: Database, settings: Settings
) -> None:
    assert settings.signing_max_failures == 3
    number = await _deviation_on_a_lot(otto)
    other = await _deviation_on_a_lot(otto, "L-2", "Torn label")
    before = await last_audit_sequence(db)

    for _ in range(settings.signing_max_failures):
        assert codes(await sue.approve(number, password=WRONG)) == INVALID

    entries = await audit_since(db, before)
    assert [e.action for e in entries] == [
        "signature.failed",
        "signature.failed",
        "signature.failed",
        "signature.locked",
    ]
    locked = entries[-1]
    assert (locked.entity_type, locked.changes["username"]) == ("User", "sue")
    lock = await _failures(db, "sue")
    assert lock is not None
    assert lock.locked_until is not None
    expected_until = utcnow() + dt.timedelta(minutes=settings.signing_lock_minutes)
    assert abs(lock.locked_until - expected_until) < dt.timedelta(minutes=1)

    # Locked: even the right password is refused, and nothing is signed.
    mark = await last_audit_sequence(db)
    refused = await sue.approve(number)
    assert codes(refused) == INVALID
    assert "locked" in refused["errors"][0]["message"]
    assert codes(await sue.reject(other)) == INVALID
    assert await _status(sue, number) == "OPEN"
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD
    assert (await row_counts(db))["signatures"] == 0
    # Attempts while locked are audited (21 CFR 11.300(d)), and change nothing else.
    assert await actions_since(db, mark) == ["signature.refused", "signature.refused"]

    # The lock is per user: another supervisor signs.
    assert (await sam.approve(other))["deviation"]["status"] == "APPROVED"

    # Once the lock has run out, the right password signs again and clears the record.
    async with db.write() as session:
        await session.execute(
            update(SigningLock)
            .where(SigningLock.user_id == lock.user_id)
            .values(locked_until=utcnow() - dt.timedelta(seconds=1))
        )
    approved = await sue.approve(number)
    assert approved["errors"] == []
    assert approved["deviation"]["status"] == "APPROVED"
    assert await _failures(db, "sue") is None


async def test_a_correct_signature_clears_the_failure_count(
    otto: Desk, sue: Desk, db: Database
) -> None:
    first = await _deviation_on_a_lot(otto)
    second = await _deviation_on_a_lot(otto, "L-2", "Torn label")
    for _ in range(2):
        assert codes(await sue.approve(first, password=WRONG)) == INVALID
    lock = await _failures(db, "sue")
    assert lock is not None
    assert lock.failures == 2

    assert (await sue.approve(first))["errors"] == []
    assert await _failures(db, "sue") is None

    # Two more wrong passwords are two, not four: the right one still signs.
    for _ in range(2):
        assert codes(await sue.reject(second, password=WRONG)) == INVALID
    rejected = await sue.reject(second)
    assert rejected["errors"] == []
    assert rejected["deviation"]["status"] == "REJECTED"


async def test_the_signature_shows_who_when_what_and_why(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    number = await _deviation_on_a_lot(otto)
    started = utcnow()

    payload = await quinn.approve(
        number,
        disposition="USE_AS_IS",
        meaning="Released for use by quality",
        reason="Dent is cosmetic; drum seal intact",
    )

    assert payload["errors"] == []
    [signature] = payload["deviation"]["signatures"]
    assert signature["signer"] == {"username": "quinn", "displayName": "Quinn"}
    assert signature["meaning"] == "Released for use by quality"
    assert signature["reason"] == "Dent is cosmetic; drum seal intact"
    signed_at = dt.datetime.fromisoformat(signature["signedAt"])
    assert started - dt.timedelta(seconds=1) <= signed_at <= utcnow()
    assert re.fullmatch(r"[0-9a-f]{64}", signature["contentHash"])
    # The same on a fresh read.
    found = (await quinn.caller.data(DEVIATION_QUERY, {"n": number}))["deviation"]
    assert found["signatures"] == [signature]


AUDIT = """
query($id: String!) {
  auditTrail(entityType: "Deviation", entityId: $id) { edges { node { action actor changes } } }
  verifyAuditTrail { valid }
}
"""


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
async def test_the_signature_is_bound_to_the_record_through_its_audit_entry(
    otto: Desk, quinn: Desk, db: Database, approve: bool
) -> None:
    await otto.receive("L-2", "RM-1")
    await otto.receive("L-1", "RM-1")
    number = await otto.ok_raise("Two drums dented", lots=["L-2", "L-1"], description="Pallet 4")

    payload = await quinn.decide(number, approve=approve, disposition="REWORK")

    assert payload["errors"] == []
    content_hash = payload["deviation"]["signatures"][0]["contentHash"]
    async with db.read() as session:
        deviation = await session.scalar(select(Deviation).where(Deviation.number == number))
        assert deviation is not None
        signature = await session.scalar(
            select(Signature).where(Signature.deviation_id == deviation.id)
        )
        assert signature is not None
        signer = await session.get(User, signature.signer_id)
        assert signer is not None
        lots = list(
            await session.scalars(
                select(Lot.number)
                .join(DeviationLot, DeviationLot.lot_id == Lot.id)
                .where(DeviationLot.deviation_id == deviation.id)
                .order_by(DeviationLot.position)
            )
        )
    assert lots == ["L-2", "L-1"]
    assert signature.content_hash == content_hash

    body = await quinn.caller.data(AUDIT, {"id": str(deviation.id)})
    assert body["verifyAuditTrail"]["valid"] is True
    entries = [e["node"] for e in body["auditTrail"]["edges"]]
    action = "deviation.approve" if approve else "deviation.reject"
    assert [e["action"] for e in entries] == ["deviation.raise", action]
    decision = entries[1]
    assert decision["actor"] == "quinn"
    assert decision["changes"]["signature"]["contentHash"] == content_hash
    assert decision["changes"]["signature"]["signer"] == "quinn"

    # Recomputed from the stored record, the hash is the one in the audit entry...
    content, recomputed = signed_content(
        deviation,
        lots,
        deviation.status,
        deviation.disposition,
        signer,
        signature.meaning,
        signature.reason or "",
        signature.signed_at,
    )
    assert recomputed == content_hash
    assert content == decision["changes"]["signedContent"]
    assert content["disposition"] == ("REWORK" if approve else None)
    # ...and any change to what was signed gives another hash.
    deviation.title = "Two drums dented slightly"
    _, altered = signed_content(
        deviation,
        lots,
        deviation.status,
        deviation.disposition,
        signer,
        signature.meaning,
        signature.reason or "",
        signature.signed_at,
    )
    assert altered != content_hash


async def _stored_text(db: Database, table: str) -> str:
    async with db.read() as session:
        rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
    return "\n".join(repr(tuple(row)) for row in rows)


async def test_the_password_is_never_stored(
    otto: Desk, sue: Desk, sam: Desk, db: Database, password: str
) -> None:
    number = await _deviation_on_a_lot(otto)
    other = await _deviation_on_a_lot(otto, "L-2", "Torn label")
    assert codes(await sue.approve(number, password=WRONG, cmid="sign-1")) == INVALID
    assert codes(await sue.approve(number, password=WRONG, cmid="sign-1")) == INVALID
    for _ in range(3):
        assert codes(await sam.reject(other, password=WRONG)) == INVALID  # sam gets locked
    assert codes(await sam.reject(other)) == INVALID
    assert (await sue.approve(number, cmid="sign-2"))["errors"] == []
    assert (await sue.approve(number, cmid="sign-2"))["errors"] == []

    for table in ("audit_entries", "mutation_outcomes", "signatures", "signing_locks"):
        stored = await _stored_text(db, table)
        assert stored, table
        assert password not in stored, table
        assert WRONG not in stored, table


# ---------------------------------------------------------------- replay


async def test_a_replayed_approval_returns_the_same_outcome_and_signs_once(
    otto: Desk, sue: Desk, db: Database
) -> None:
    number = await _deviation_on_a_lot(otto)
    first = await sue.approve(number, cmid="approve-1")
    assert first["errors"] == []
    counts = await row_counts(db)

    again = await sue.approve(number, cmid="approve-1")

    assert again == first
    assert await row_counts(db) == counts
    assert counts["signatures"] == 1
    # The same id for another decision is a conflict, not a replay.
    other = await sue.approve(number, cmid="approve-1", disposition="SCRAP")
    assert codes(other) == [("CONFLICT", "clientMutationId")]


async def test_a_resent_wrong_password_is_checked_and_counted_again(
    otto: Desk, sue: Desk, db: Database, settings: Settings
) -> None:
    """A signature refusal is not kept for replay (backend/gql.py, NOT_REPLAYED): resending
    under the same clientMutationId checks the password again. So each wrong password counts,
    and one id cannot be used to guess past the lock."""
    number = await _deviation_on_a_lot(otto)
    before = await last_audit_sequence(db)

    answers = [
        await sue.approve(number, password=WRONG, cmid="approve-1")
        for _ in range(settings.signing_max_failures)
    ]

    assert [codes(a) for a in answers] == [INVALID] * settings.signing_max_failures
    assert await actions_since(db, before) == [
        *["signature.failed"] * settings.signing_max_failures,
        "signature.locked",
    ]
    assert codes(await sue.approve(number, cmid="approve-1")) == INVALID  # locked
    assert await _status(sue, number) == "OPEN"
    assert (await row_counts(db))["signatures"] == 0


async def test_after_a_wrong_password_the_same_id_signs_with_the_right_one_then_replays(
    otto: Desk, sue: Desk, db: Database
) -> None:
    number = await _deviation_on_a_lot(otto)
    assert codes(await sue.approve(number, password=WRONG, cmid="approve-1")) == INVALID

    signed = await sue.approve(number, cmid="approve-1")
    assert signed["errors"] == []
    assert signed["deviation"]["status"] == "APPROVED"
    assert await _failures(db, "sue") is None
    counts = await row_counts(db)

    # From now on the id answers the approval, whatever password comes with it.
    assert await sue.approve(number, cmid="approve-1") == signed
    assert await sue.approve(number, password=WRONG, cmid="approve-1") == signed
    assert await row_counts(db) == counts
    assert counts["signatures"] == 1
