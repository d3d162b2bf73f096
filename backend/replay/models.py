from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, UTCDateTime, utcnow


class MutationOutcome(Base):
    """What a shop-floor mutation answered, under (principal, clientMutationId)."""

    __tablename__ = "mutation_outcomes"
    __table_args__ = (
        UniqueConstraint("principal", "client_mutation_id"),
        Index("ix_mutation_outcomes_subject", "subject_type", "subject_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    principal: Mapped[str] = mapped_column(String(120))
    client_mutation_id: Mapped[str] = mapped_column(String(100))
    operation: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    # The payload's objects (by id) and errors; a replay rebuilds the payload from these.
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON)
    # What was asked (never a password), for records such as the code of a refused scan.
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    succeeded: Mapped[bool] = mapped_column(default=True)
    # What the mutation was about, for records such as "scans refused for this order".
    subject_type: Mapped[str | None] = mapped_column(String(64))
    subject_key: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
