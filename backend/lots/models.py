from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, Quantity, UTCDateTime, enum_type, utcnow


class LotStatus(enum.StrEnum):
    QUARANTINE = "QUARANTINE"
    AVAILABLE = "AVAILABLE"
    ON_HOLD = "ON_HOLD"
    CONSUMED = "CONSUMED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class Lot(Base):
    """A quantity of one material with one history: received, or produced by an order."""

    __tablename__ = "lots"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id"), index=True)
    # What is left; `initial_quantity` is what was received or produced.
    quantity: Mapped[Decimal] = mapped_column(Quantity)
    initial_quantity: Mapped[Decimal] = mapped_column(Quantity)
    status: Mapped[LotStatus] = mapped_column(enum_type(LotStatus, "lot_status"), index=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    supplier_lot: Mapped[str | None] = mapped_column(String(100))
    produced_by_order_id: Mapped[int | None] = mapped_column(
        ForeignKey("production_orders.id"), index=True
    )
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Consumption(Base):
    """Part of a lot scanned into an order's component."""

    __tablename__ = "consumptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("production_orders.id"), index=True)
    component_id: Mapped[int] = mapped_column(ForeignKey("order_components.id"), index=True)
    operation_sequence: Mapped[int | None] = mapped_column(Integer)
    quantity: Mapped[Decimal] = mapped_column(Quantity)
    # When the operator scanned (an offline device may sync much later) and when it arrived.
    consumed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    late_entry: Mapped[bool] = mapped_column(default=False)
    consumed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    consumed_by: Mapped[str] = mapped_column(String(100))
    raw_code: Mapped[str] = mapped_column(String(512))


class GenealogyLink(Base):
    """`input_lot` went into `output_lot` (through `order`)."""

    __tablename__ = "genealogy_links"
    __table_args__ = (UniqueConstraint("input_lot_id", "output_lot_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    input_lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    output_lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("production_orders.id"), index=True)
    quantity: Mapped[Decimal] = mapped_column(Quantity)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
