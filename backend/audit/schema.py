from __future__ import annotations

import datetime as dt
from typing import cast

import strawberry
from strawberry.scalars import JSON

from backend.audit import service
from backend.audit.models import AuditEntry
from backend.auth.policy import QUERIES
from backend.gql import Connection, Info, Node, NodeKind, paginate, register_node, to_global_id


@strawberry.type(name="AuditEntry")
class AuditEntryType(Node):
    sequence: int
    at: dt.datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    changes: JSON | None
    hash: str = strawberry.field(
        description=(
            "Hash of this entry and the one before it: "
            "editing or deleting any entry breaks the chain."
        )
    )

    @classmethod
    def from_row(cls, row: AuditEntry) -> AuditEntryType:
        return cls(
            id=to_global_id("AuditEntry", row.id),
            sequence=row.sequence,
            at=row.at,
            actor=row.actor,
            action=row.action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            changes=cast(JSON, row.changes),
            hash=row.hash,
        )


register_node(
    "AuditEntry",
    NodeKind(
        lambda loaders: loaders.by_id(AuditEntry),
        AuditEntryType.from_row,
        roles=QUERIES["auditTrail"],
    ),
)


@strawberry.type
class AuditVerification:
    valid: bool
    entries: int
    first_invalid_sequence: int | None


@strawberry.type
class AuditQuery:
    @strawberry.field
    async def audit_trail(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        entity_type: str | None = None,
        entity_id: str | None = None,
    ) -> Connection[AuditEntryType]:
        """Every change, oldest first; filter by entity type (`ProductionOrder`) and id."""
        return await paginate(
            info,
            service.trail_query(entity_type, entity_id),
            AuditEntry.sequence,
            first,
            after,
            AuditEntryType.from_row,
        )

    @strawberry.field
    async def verify_audit_trail(self, info: Info) -> AuditVerification:
        """Recomputes the hash chain; names the first entry that does not match."""
        async with info.context.db.read() as session:
            result = await service.verify(session)
        return AuditVerification(
            valid=result.valid,
            entries=result.entries,
            first_invalid_sequence=result.first_invalid_sequence,
        )
