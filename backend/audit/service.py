"""Appends to and verifies the hash-chained audit trail.

Each entry's hash is SHA-256 over a canonical JSON of its content and the previous entry's
hash, so editing, inserting or deleting any row breaks the chain from that row on. Entries
are appended at the very end of a unit of work, under a lock (PostgreSQL advisory lock;
SQLite's single writer), so sequences have no gaps and the lock is held only until commit.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from backend.audit.models import AuditEntry
from backend.db import utcnow

if TYPE_CHECKING:
    from backend.uow import PendingAudit

GENESIS_HASH = "0" * 64
_LOCK_KEY = 0x4D45_5341  # "MESA": one advisory lock for the whole chain


def jsonable(value: Any) -> Any:
    """The value in plain JSON types, the same way every time (hashes depend on it)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no Infinity or NaN (PostgreSQL's json refuses them): a refused request
        # that carried one is still kept, with the number as text ("inf", "nan").
        return repr(value)
    return value


def entry_hash(
    *,
    sequence: int,
    at: dt.datetime,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    changes: Any,
    prev_hash: str,
) -> str:
    content = {
        "sequence": sequence,
        "at": at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "entityType": entity_type,
        "entityId": entity_id,
        "changes": changes,
        "prev": prev_hash,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def append(session: AsyncSession, actor: str, pending: Sequence[PendingAudit]) -> None:
    """Writes the pending entries at the end of the chain, inside the caller's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    last = (
        await session.execute(
            select(AuditEntry.sequence, AuditEntry.hash)
            .order_by(AuditEntry.sequence.desc())
            .limit(1)
        )
    ).first()
    sequence, prev_hash = (last[0], last[1]) if last else (0, GENESIS_HASH)
    at = utcnow()
    rows = []
    for item in pending:
        sequence += 1
        changes = jsonable(item.changes) if item.changes is not None else None
        digest = entry_hash(
            sequence=sequence,
            at=at,
            actor=actor,
            action=item.action,
            entity_type=item.entity_type,
            entity_id=item.entity_id,
            changes=changes,
            prev_hash=prev_hash,
        )
        rows.append(
            {
                "sequence": sequence,
                "at": at,
                "actor": actor,
                "action": item.action,
                "entity_type": item.entity_type,
                "entity_id": item.entity_id,
                "changes": changes,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
    # A Core INSERT: the entries are never read back in this transaction, so the ORM's
    # identity map and RETURNING would be pure cost on every change.
    await session.execute(insert(AuditEntry), rows)


@dataclass(frozen=True)
class Verification:
    valid: bool
    entries: int
    first_invalid_sequence: int | None


async def verify(session: AsyncSession, batch: int = 2000) -> Verification:
    """Recomputes the whole chain in sequence order; names the first entry that does not match.

    A deleted entry shows as a gap: the first missing sequence number is reported.
    """
    expected_sequence, prev_hash, count, after = 1, GENESIS_HASH, 0, 0
    while True:
        rows = (
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.sequence > after)
                .order_by(AuditEntry.sequence)
                .limit(batch)
            )
        ).all()
        if not rows:
            return Verification(True, count, None)
        for row in rows:
            count += 1
            if row.sequence != expected_sequence or row.prev_hash != prev_hash:
                return Verification(False, await _count(session), expected_sequence)
            digest = entry_hash(
                sequence=row.sequence,
                at=row.at,
                actor=row.actor,
                action=row.action,
                entity_type=row.entity_type,
                entity_id=row.entity_id,
                changes=row.changes,
                prev_hash=row.prev_hash,
            )
            if digest != row.hash:
                return Verification(False, await _count(session), row.sequence)
            prev_hash, expected_sequence, after = row.hash, row.sequence + 1, row.sequence
        session.expunge_all()


async def _count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def trail_query(entity_type: str | None, entity_id: str | None) -> Select[AuditEntry]:
    """The audit entries, optionally of one entity type or one entity, oldest first."""
    stmt = select(AuditEntry)
    if entity_type:
        stmt = stmt.where(AuditEntry.entity_type == entity_type)
    if entity_id:
        stmt = stmt.where(AuditEntry.entity_id == entity_id)
    return stmt
