"""The unit of work: one transaction per business change, with its audit entries and events.

A service receives a `UnitOfWork`, changes rows through `uow.session`, records what it did
with `uow.audit(...)` and what to announce with `uow.publish(...)`. Services never commit:
`transaction()` appends the audit entries, commits, and only then publishes, so no
subscriber or job ever sees a change that could still roll back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.db import Database
from backend.errors import DomainError
from backend.principal import Principal

if TYPE_CHECKING:
    from backend.events import Broadcast

log = logging.getLogger(__name__)


@dataclass
class PendingAudit:
    action: str
    entity_type: str
    entity_id: str
    changes: dict[str, Any] | None


@dataclass
class UnitOfWork:
    session: AsyncSession
    actor: Principal
    audits: list[PendingAudit] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    after_commit_calls: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    refusal_records: list[Callable[[UnitOfWork], Awaitable[None]]] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def audit(
        self,
        action: str,
        entity_type: str,
        entity_id: object,
        changes: dict[str, Any] | None = None,
    ) -> None:
        """Records a change; written to the hash chain just before the commit."""
        self.audits.append(PendingAudit(action, entity_type, str(entity_id), changes))

    def publish(self, channel: str, payload: dict[str, Any]) -> None:
        """Announces a change to subscribers once the transaction has committed."""
        self.events.append((channel, payload))

    def after_commit(self, call: Callable[[], Awaitable[None]]) -> None:
        self.after_commit_calls.append(call)

    def record_even_if_refused(self, record: Callable[[UnitOfWork], Awaitable[None]]) -> None:
        """Keeps a record although the change is refused (a failed signature attempt, say).

        When the unit of work ends in a DomainError, everything it did rolls back; then each
        such record runs in a transaction of its own, with its own audit entries.
        """
        self.refusal_records.append(record)


@asynccontextmanager
async def transaction(
    db: Database, actor: Principal, broadcast: Broadcast | None = None
) -> AsyncIterator[UnitOfWork]:
    """Runs a block as one unit of work; on any exception nothing is written or published."""
    from backend.audit import service as audit_service  # the audit domain sits on top of db

    uow: UnitOfWork | None = None
    try:
        async with db.write() as session:
            uow = UnitOfWork(session=session, actor=actor)
            yield uow
            await session.flush()
            if uow.audits:
                await audit_service.append(session, actor.name, uow.audits)
    except DomainError:
        if uow is not None and uow.refusal_records:
            async with transaction(db, actor, broadcast) as record_uow:
                for record in uow.refusal_records:
                    await record(record_uow)
        raise
    assert uow is not None
    for channel, payload in uow.events:
        if broadcast is None:
            break
        try:
            await broadcast.publish(channel, payload)
        except Exception:  # the change is committed; a lost hint must not fail the request
            log.exception("publishing %s failed", channel)
    for call in uow.after_commit_calls:
        try:
            await call()
        except Exception:
            log.exception("after-commit call failed")
