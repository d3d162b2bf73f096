"""Decisions at the same moment, on PostgreSQL: one deviation is decided once, and wrong
passwords sent at once all count."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from quality_support import Caller, Desk, codes, lot_status, row_counts
from sqlalchemy import select

from backend.audit.models import AuditEntry
from backend.auth.models import User
from backend.db import Database
from backend.lots.models import LotStatus
from backend.principal import Role
from backend.quality.models import SigningLock
from backend.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("po1")]


async def test_two_supervisors_approving_at_once_decide_it_once(
    otto: Desk, sue: Desk, sam: Desk, db: Database
) -> None:
    for round_ in range(3):
        lot = f"L-{round_}"
        await otto.receive(lot, "RM-1")
        number = await otto.ok_raise(f"Dented drum {round_}", lots=[lot])
        before = await row_counts(db)

        answers = await asyncio.gather(
            sue.approve(number, disposition="USE_AS_IS"),
            sam.approve(number, disposition="SCRAP"),
        )

        succeeded = [a for a in answers if not a["errors"]]
        refused = [a for a in answers if a["errors"]]
        assert len(succeeded) == 1, answers
        assert [codes(a) for a in refused] == [[("INVALID_TRANSITION", "number")]]
        deviation = succeeded[0]["deviation"]
        assert len(deviation["signatures"]) == 1
        after = await row_counts(db)
        assert after["signatures"] == before["signatures"] + 1
        expected = (
            LotStatus.AVAILABLE if deviation["disposition"] == "USE_AS_IS" else (LotStatus.REJECTED)
        )
        assert await lot_status(db, lot) is expected
        async with db.read() as session:
            decisions = list(
                await session.scalars(
                    select(AuditEntry.action).where(AuditEntry.action == "deviation.approve")
                )
            )
        assert len(decisions) == round_ + 1


async def test_wrong_passwords_sent_at_once_all_count(
    as_role: Callable[..., Awaitable[Caller]],
    password: str,
    otto: Desk,
    db: Database,
    settings: Settings,
) -> None:
    attempts = settings.signing_max_failures
    numbers = [await otto.ok_raise(f"Deviation {i}") for i in range(attempts)]
    # Several rounds, each with a new signer: the race is on that signer's first failure.
    for round_ in range(4):
        username = f"sup-{round_}"
        signer = Desk(await as_role(Role.SUPERVISOR, username=username), password)

        answers = await asyncio.gather(
            *(signer.approve(n, password="not the password") for n in numbers)
        )

        assert [codes(a) for a in answers] == [
            [("SIGNATURE_INVALID", "signature.password")]
        ] * attempts
        async with db.read() as session:
            lock = await session.scalar(
                select(SigningLock)
                .join(User, User.id == SigningLock.user_id)
                .where(User.username == username)
            )
            actions = list(
                await session.scalars(
                    select(AuditEntry.action)
                    .where(AuditEntry.action.like("signature.%"), AuditEntry.actor == username)
                    .order_by(AuditEntry.sequence)
                )
            )
        assert actions == [*["signature.failed"] * attempts, "signature.locked"]
        assert lock is not None
        assert lock.locked_until is not None
        assert codes(await signer.approve(numbers[0])) == [
            ("SIGNATURE_INVALID", "signature.password")
        ]
