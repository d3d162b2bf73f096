from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, UTCDateTime, enum_type, utcnow


class InspectionStatus(enum.StrEnum):
    OPEN = "OPEN"
    PASSED = "PASSED"
    FAILED = "FAILED"


class DeviationSeverity(enum.StrEnum):
    MINOR = "MINOR"
    MAJOR = "MAJOR"
    CRITICAL = "CRITICAL"


class DeviationStatus(enum.StrEnum):
    OPEN = "OPEN"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"


class DeviationSource(enum.StrEnum):
    MANUAL = "MANUAL"
    INSPECTION = "INSPECTION"
    SCAN = "SCAN"
    EQUIPMENT = "EQUIPMENT"


class Disposition(enum.StrEnum):
    USE_AS_IS = "USE_AS_IS"
    REWORK = "REWORK"
    SCRAP = "SCRAP"
    RETURN_TO_SUPPLIER = "RETURN_TO_SUPPLIER"


class Inspection(Base):
    """An inspection of a lot (incoming) or of an order operation."""

    __tablename__ = "inspections"
    # Exactly one subject: its characteristics come from the lot's material or from the
    # operation, and with neither (or both) there is no telling which to inspect against.
    __table_args__ = (
        CheckConstraint("(lot_id IS NULL) <> (operation_id IS NULL)", name="one_subject"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[InspectionStatus] = mapped_column(
        enum_type(InspectionStatus, "inspection_status"), index=True
    )
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("lots.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("production_orders.id"), index=True)
    operation_id: Mapped[int | None] = mapped_column(ForeignKey("order_operations.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class InspectionResult(Base):
    """One characteristic's result. Recorded once; a correction is a deviation, not an edit."""

    __tablename__ = "inspection_results"
    __table_args__ = (UniqueConstraint("inspection_id", "characteristic_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspections.id"), index=True)
    characteristic_id: Mapped[int] = mapped_column(ForeignKey("characteristics.id"))
    value: Mapped[float | None] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column()
    note: Mapped[str | None] = mapped_column(Text)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_by: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Deviation(Base):
    __tablename__ = "deviations"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[DeviationSeverity] = mapped_column(
        enum_type(DeviationSeverity, "deviation_severity")
    )
    status: Mapped[DeviationStatus] = mapped_column(
        enum_type(DeviationStatus, "deviation_status"), index=True
    )
    source: Mapped[DeviationSource] = mapped_column(enum_type(DeviationSource, "deviation_source"))
    disposition: Mapped[Disposition | None] = mapped_column(enum_type(Disposition, "disposition"))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("production_orders.id"), index=True)
    inspection_id: Mapped[int | None] = mapped_column(ForeignKey("inspections.id"), index=True)
    raised_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    raised_by: Mapped[str] = mapped_column(String(100))
    raised_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class DeviationLot(Base):
    __tablename__ = "deviation_lots"
    __table_args__ = (UniqueConstraint("deviation_id", "lot_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    deviation_id: Mapped[int] = mapped_column(ForeignKey("deviations.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)


class Signature(Base):
    """An electronic signature: who, when, what it means, why, and the hash of what was signed."""

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(primary_key=True)
    deviation_id: Mapped[int] = mapped_column(ForeignKey("deviations.id"), index=True)
    signer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    signer: Mapped[str] = mapped_column(String(100))
    signer_display_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # SHA-256 of the canonical signed content (the record as decided, the meaning, the signer).
    content_hash: Mapped[str] = mapped_column(String(64))


class SigningLock(Base):
    """Wrong signing passwords in a row per user; too many lock signing for a while."""

    __tablename__ = "signing_locks"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
