from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, UTCDateTime, enum_type, utcnow


class MaterialKind(enum.StrEnum):
    RAW = "RAW"
    INTERMEDIATE = "INTERMEDIATE"
    FINISHED = "FINISHED"
    PACKAGING = "PACKAGING"


class CharacteristicKind(enum.StrEnum):
    NUMERIC = "NUMERIC"
    ATTRIBUTE = "ATTRIBUTE"


class EquipmentState(enum.StrEnum):
    RUNNING = "RUNNING"
    IDLE = "IDLE"
    DOWN = "DOWN"
    PLANNED_STOP = "PLANNED_STOP"
    SETUP = "SETUP"
    OFFLINE = "OFFLINE"


class Material(Base):
    __tablename__ = "materials"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[MaterialKind] = mapped_column(enum_type(MaterialKind, "material_kind"))
    unit: Mapped[str] = mapped_column(String(20))
    gtin: Mapped[str | None] = mapped_column(String(14), unique=True)
    lot_controlled: Mapped[bool] = mapped_column(default=True)
    shelf_life_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Characteristic(Base):
    """What an inspection checks: of a material (incoming) or of an order operation."""

    __tablename__ = "characteristics"
    __table_args__ = (
        CheckConstraint("(material_id IS NULL) <> (operation_id IS NULL)", name="one_owner"),
        Index("ix_characteristics_material_position", "material_id", "position"),
        Index("ix_characteristics_operation_position", "operation_id", "position"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    material_id: Mapped[int | None] = mapped_column(ForeignKey("materials.id", ondelete="CASCADE"))
    operation_id: Mapped[int | None] = mapped_column(
        ForeignKey("order_operations.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[CharacteristicKind] = mapped_column(
        enum_type(CharacteristicKind, "characteristic_kind")
    )
    unit: Mapped[str | None] = mapped_column(String(20))
    nominal: Mapped[float | None] = mapped_column(Float)
    lower_limit: Mapped[float | None] = mapped_column(Float)
    upper_limit: Mapped[float | None] = mapped_column(Float)


class WorkCenter(Base):
    __tablename__ = "work_centers"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Equipment(Base):
    """A machine. Its live state columns are kept by the equipment events."""

    __tablename__ = "equipment"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    work_center_id: Mapped[int | None] = mapped_column(ForeignKey("work_centers.id"), index=True)
    ideal_cycle_seconds: Mapped[float | None] = mapped_column(Float)
    state: Mapped[EquipmentState] = mapped_column(
        enum_type(EquipmentState, "equipment_state"), default=EquipmentState.OFFLINE
    )
    state_reason: Mapped[str | None] = mapped_column(Text)
    state_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
