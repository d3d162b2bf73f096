"""Per-operation DataLoaders: every relation in the API is fetched in batches through these.

Each batch opens its own short read session: Strawberry dispatches batches as separate
tasks, and an AsyncSession must never be used by two coroutines at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from strawberry.dataloader import DataLoader

from backend.auth.models import User
from backend.catalog.models import Characteristic, Equipment, Material, WorkCenter
from backend.db import Base, Database, largest_key
from backend.equipment.models import EquipmentEvent
from backend.lots.models import Consumption, Lot
from backend.orders.models import OrderComponent, OrderOperation, ProductionOrder
from backend.quality.models import (
    Deviation,
    DeviationLot,
    Inspection,
    InspectionResult,
    Signature,
)

M = TypeVar("M", bound=Base)


class Loaders:
    def __init__(self, db: Database) -> None:
        self._db = db

    def by_id(self, model: type[M]) -> DataLoader[int, M | None]:
        largest = largest_key(model.__table__.c.id.type)

        async def load(ids: Sequence[int]) -> list[M | None]:
            # Keys come from clients (`node(id)`): one beyond the column's range matches no
            # row, and sending it to the database would fail the whole batch.
            wanted = [i for i in ids if 0 < i <= largest]
            found: dict[int, M] = {}
            if wanted:
                async with self._db.read() as session:
                    rows = await session.scalars(select(model).where(model.id.in_(wanted)))  # type: ignore[attr-defined]
                    found = {row.id: row for row in rows}  # type: ignore[attr-defined]
            return [found.get(i) for i in ids]

        return DataLoader(load_fn=load)

    def grouped(
        self, model: type[M], key: InstrumentedAttribute[Any], *order: InstrumentedAttribute[Any]
    ) -> DataLoader[int, list[M]]:
        async def load(keys: Sequence[int]) -> list[list[M]]:
            async with self._db.read() as session:
                rows = await session.scalars(select(model).where(key.in_(keys)).order_by(*order))
                groups: dict[int, list[M]] = defaultdict(list)
                for row in rows:
                    groups[getattr(row, key.key)].append(row)
            return [groups.get(k, []) for k in keys]

        return DataLoader(load_fn=load)

    def custom(
        self, fn: Callable[[AsyncSession, Sequence[Any]], Awaitable[list[Any]]]
    ) -> DataLoader[Any, Any]:
        async def load(keys: Sequence[Any]) -> list[Any]:
            async with self._db.read() as session:
                return await fn(session, keys)

        return DataLoader(load_fn=load)

    # ---- catalog
    @cached_property
    def material(self) -> DataLoader[int, Material | None]:
        return self.by_id(Material)

    @cached_property
    def work_center(self) -> DataLoader[int, WorkCenter | None]:
        return self.by_id(WorkCenter)

    @cached_property
    def equipment(self) -> DataLoader[int, Equipment | None]:
        return self.by_id(Equipment)

    @cached_property
    def equipment_of_work_center(self) -> DataLoader[int, list[Equipment]]:
        return self.grouped(Equipment, Equipment.work_center_id, Equipment.code)

    @cached_property
    def characteristic(self) -> DataLoader[int, Characteristic | None]:
        return self.by_id(Characteristic)

    @cached_property
    def characteristics_of_material(self) -> DataLoader[int, list[Characteristic]]:
        return self.grouped(Characteristic, Characteristic.material_id, Characteristic.position)

    @cached_property
    def characteristics_of_operation(self) -> DataLoader[int, list[Characteristic]]:
        return self.grouped(Characteristic, Characteristic.operation_id, Characteristic.position)

    # ---- orders
    @cached_property
    def order(self) -> DataLoader[int, ProductionOrder | None]:
        return self.by_id(ProductionOrder)

    @cached_property
    def operation(self) -> DataLoader[int, OrderOperation | None]:
        return self.by_id(OrderOperation)

    @cached_property
    def operations_of_order(self) -> DataLoader[int, list[OrderOperation]]:
        return self.grouped(OrderOperation, OrderOperation.order_id, OrderOperation.sequence)

    @cached_property
    def components_of_order(self) -> DataLoader[int, list[OrderComponent]]:
        return self.grouped(OrderComponent, OrderComponent.order_id, OrderComponent.position)

    # ---- people
    @cached_property
    def user(self) -> DataLoader[int, User | None]:
        return self.by_id(User)

    # ---- lots
    @cached_property
    def lot(self) -> DataLoader[int, Lot | None]:
        return self.by_id(Lot)

    @cached_property
    def lots_produced_by_order(self) -> DataLoader[int, list[Lot]]:
        return self.grouped(Lot, Lot.produced_by_order_id, Lot.id)

    @cached_property
    def consumptions_of_component(self) -> DataLoader[int, list[Consumption]]:
        return self.grouped(Consumption, Consumption.component_id, Consumption.id)

    # ---- quality
    @cached_property
    def inspection(self) -> DataLoader[int, Inspection | None]:
        return self.by_id(Inspection)

    @cached_property
    def deviation(self) -> DataLoader[int, Deviation | None]:
        return self.by_id(Deviation)

    @cached_property
    def results_of_inspection(self) -> DataLoader[int, list[InspectionResult]]:
        return self.grouped(InspectionResult, InspectionResult.inspection_id, InspectionResult.id)

    @cached_property
    def inspections_of_lot(self) -> DataLoader[int, list[Inspection]]:
        return self.grouped(Inspection, Inspection.lot_id, Inspection.id)

    @cached_property
    def inspections_of_operation(self) -> DataLoader[int, list[Inspection]]:
        return self.grouped(Inspection, Inspection.operation_id, Inspection.id)

    @cached_property
    def deviations_of_order(self) -> DataLoader[int, list[Deviation]]:
        return self.grouped(Deviation, Deviation.order_id, Deviation.id)

    @cached_property
    def signatures_of_deviation(self) -> DataLoader[int, list[Signature]]:
        return self.grouped(Signature, Signature.deviation_id, Signature.id)

    @cached_property
    def lots_of_deviation(self) -> DataLoader[int, list[Lot]]:
        async def load(session: AsyncSession, keys: Sequence[int]) -> list[list[Lot]]:
            rows = await session.execute(
                select(DeviationLot.deviation_id, Lot)
                .join(Lot, Lot.id == DeviationLot.lot_id)
                .where(DeviationLot.deviation_id.in_(keys))
                .order_by(DeviationLot.position)
            )
            groups: dict[int, list[Lot]] = defaultdict(list)
            for deviation_id, lot in rows:
                groups[deviation_id].append(lot)
            return [groups.get(k, []) for k in keys]

        return self.custom(load)

    @cached_property
    def deviations_of_lot(self) -> DataLoader[int, list[Deviation]]:
        async def load(session: AsyncSession, keys: Sequence[int]) -> list[list[Deviation]]:
            rows = await session.execute(
                select(DeviationLot.lot_id, Deviation)
                .join(Deviation, Deviation.id == DeviationLot.deviation_id)
                .where(DeviationLot.lot_id.in_(keys))
                .order_by(Deviation.id)
            )
            groups: dict[int, list[Deviation]] = defaultdict(list)
            for lot_id, deviation in rows:
                groups[lot_id].append(deviation)
            return [groups.get(k, []) for k in keys]

        return self.custom(load)

    # ---- equipment
    @cached_property
    def equipment_event(self) -> DataLoader[int, EquipmentEvent | None]:
        return self.by_id(EquipmentEvent)
