"""Stores and finds the outcomes of shop-floor mutations by (principal, clientMutationId).

An offline device resends what it is not sure got through. The first call's outcome is
stored in the same transaction as its change (or, for a refusal, right after the rollback),
so a resend finds it and changes nothing. The outcome holds ids, not rendered objects:
a replay renders the same objects again, in whatever shape the client asks for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.audit.service import jsonable
from backend.replay.models import MutationOutcome

ID_MAX = 100
SUBJECT_TYPE_MAX, SUBJECT_KEY_MAX = 64, 100  # the columns' lengths


def request_hash(operation: str, request: dict[str, Any]) -> str:
    """A fingerprint of what was asked, to tell a true resend from a reused id."""
    canonical = json.dumps({"op": operation, "input": jsonable(request)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _without_secrets(value: Any) -> Any:
    """The request as stored: every `password` key dropped, at any depth (a signature's
    password must never be written anywhere, whichever mutation forgot to strip it)."""
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if k != "password"}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


@dataclass(frozen=True)
class Subject:
    """What a mutation was about (for records such as the refused scans of an order)."""

    type: str
    key: str


async def find(
    session: AsyncSession, principal: str, client_mutation_id: str
) -> MutationOutcome | None:
    return await session.scalar(
        select(MutationOutcome).where(
            MutationOutcome.principal == principal,
            MutationOutcome.client_mutation_id == client_mutation_id,
        )
    )


def store(
    session: AsyncSession,
    *,
    principal: str,
    client_mutation_id: str,
    operation: str,
    digest: str,
    outcome: dict[str, Any],
    succeeded: bool,
    subject: Subject | None,
    request: dict[str, Any] | None = None,
) -> None:
    session.add(
        MutationOutcome(
            principal=principal,
            client_mutation_id=client_mutation_id,
            operation=operation,
            request_hash=digest,
            outcome=jsonable(outcome),
            request=_without_secrets(jsonable(request)) if request is not None else None,
            succeeded=succeeded,
            # Bounded like the columns: the key comes from the client's input, which may be
            # the over-long value the refusal being stored is about.
            subject_type=subject.type[:SUBJECT_TYPE_MAX] if subject else None,
            subject_key=subject.key[:SUBJECT_KEY_MAX] if subject else None,
        )
    )


async def refusals(
    session: AsyncSession, operation: str, subject: Subject
) -> list[MutationOutcome]:
    """Refused calls of `operation` about `subject`, oldest first."""
    return list(
        await session.scalars(
            select(MutationOutcome)
            .where(
                MutationOutcome.operation == operation,
                MutationOutcome.succeeded.is_(False),
                MutationOutcome.subject_type == subject.type,
                MutationOutcome.subject_key == subject.key,
            )
            .order_by(MutationOutcome.id)
        )
    )
