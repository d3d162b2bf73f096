from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, Quantity, UTCDateTime, enum_type, to_quantity, utcnow

# Quantised like every stored quantity, so a row fresh from an insert reads as it will reload.
ZERO = to_quantity(0)


class OrderStatus(enum.StrEnum):
    PLANNED = "PLANNED"
    RELEASED = "RELEASED"
    IN_PROGRESS = "IN_PROGRESS"
    ON_HOLD = "ON_HOLD"
    COMPLETED = "COMPLETED"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"


class OperationStatus(enum.StrEnum):
    PENDING = "PENDING"
    READY = "READY"
    RUNNING = "RUNNING"
    DONE = "DONE"


class ProductionOrder(Base):
    __tablename__ = "production_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("materials.id"), index=True)
    quantity: Mapped[Decimal] = mapped_column(Quantity)
    quantity_good: Mapped[Decimal] = mapped_column(Quantity, default=ZERO)
    quantity_scrap: Mapped[Decimal] = mapped_column(Quantity, default=ZERO)
    status: Mapped[OrderStatus] = mapped_column(
        enum_type(OrderStatus, "order_status"), default=OrderStatus.PLANNED, index=True
    )
    # The state a held order returns to on resume.
    held_from: Mapped[OrderStatus | None] = mapped_column(enum_type(OrderStatus, "order_held_from"))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    work_center_id: Mapped[int | None] = mapped_column(ForeignKey("work_centers.id"), index=True)
    # SHA-256 of the ERP content as last accepted: a resend after release is compared to it.
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class OrderComponent(Base):
    __tablename__ = "order_components"
    __table_args__ = (UniqueConstraint("order_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(
        ForeignKey("production_orders.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    material_id: Mapped[int] = mapped_column(ForeignKey("materials.id"), index=True)
    quantity_required: Mapped[Decimal] = mapped_column(Quantity)
    quantity_consumed: Mapped[Decimal] = mapped_column(Quantity, default=ZERO)
    operation_sequence: Mapped[int | None] = mapped_column(Integer)


class OrderOperation(Base):
    __tablename__ = "order_operations"
    __table_args__ = (UniqueConstraint("order_id", "sequence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(
        ForeignKey("production_orders.id", ondelete="CASCADE"), index=True
    )
    sequence: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str | None] = mapped_column(Text)
    status: Mapped[OperationStatus] = mapped_column(
        enum_type(OperationStatus, "operation_status"), default=OperationStatus.PENDING
    )
    work_center_id: Mapped[int | None] = mapped_column(ForeignKey("work_centers.id"), index=True)
    quantity_good: Mapped[Decimal] = mapped_column(Quantity, default=ZERO)
    quantity_scrap: Mapped[Decimal] = mapped_column(Quantity, default=ZERO)
    scrap_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
