from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from backend.catalog.models import EquipmentState
from backend.db import Base, UTCDateTime, enum_type

_BIG_ID = BigInteger().with_variant(Integer, "sqlite")


class EquipmentEventKind(enum.StrEnum):
    STATE = "STATE"
    COUNTER = "COUNTER"
    VALUE = "VALUE"
    ALARM = "ALARM"


class EquipmentEvent(Base):
    """One machine event as the bridge sent it. Immutable once stored."""

    __tablename__ = "equipment_events"
    __table_args__ = (
        UniqueConstraint("equipment_id", "event_id"),
        Index("ix_equipment_events_timeline", "equipment_id", "kind", "occurred_at"),
        # A machine's page of events in id order (Equipment.events): see migration 0008.
        Index("ix_equipment_events_by_machine", "equipment_id", "id"),
    )

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True)
    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"))
    event_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[EquipmentEventKind] = mapped_column(
        enum_type(EquipmentEventKind, "equipment_event_kind")
    )
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    state: Mapped[EquipmentState | None] = mapped_column(enum_type(EquipmentState, "event_state"))
    reason: Mapped[str | None] = mapped_column(String(200))
    counter: Mapped[str | None] = mapped_column(String(64))
    increment: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(20))
    alarm_code: Mapped[str | None] = mapped_column(String(64))
    alarm_active: Mapped[bool | None] = mapped_column()
    message: Mapped[str | None] = mapped_column(Text)
    # STATE events only: when the next STATE event of this equipment (by occurredAt) began;
    # null while this is the latest. Each STATE event is thus one state interval.
    state_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class StateHour(Base):
    """Seconds spent per state and reason in one clock hour (closed intervals only), and how
    many intervals started in it. OEE over long windows reads these, not raw events."""

    __tablename__ = "equipment_state_hours"

    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"), primary_key=True)
    hour: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    state: Mapped[EquipmentState] = mapped_column(
        enum_type(EquipmentState, "hour_state"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(String(200), primary_key=True)  # "" for none
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    starts: Mapped[int] = mapped_column(Integer, default=0)


class CounterHour(Base):
    """The sum of a counter's increments that occurred in one clock hour."""

    __tablename__ = "equipment_counter_hours"

    equipment_id: Mapped[int] = mapped_column(ForeignKey("equipment.id"), primary_key=True)
    hour: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    counter: Mapped[str] = mapped_column(String(64), primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
