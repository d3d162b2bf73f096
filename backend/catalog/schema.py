from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from backend.catalog import service
from backend.catalog.models import (
    Characteristic,
    CharacteristicKind,
    Equipment,
    EquipmentState,
    Material,
    MaterialKind,
    WorkCenter,
)
from backend.gql import (
    Connection,
    Info,
    MutationError,
    Node,
    NodeKind,
    paginate,
    plain_field,
    register_node,
    run_mutation,
    to_global_id,
)
from backend.uow import UnitOfWork

if TYPE_CHECKING:
    from backend.equipment.models import EquipmentEventKind
    from backend.equipment.schema import EquipmentEventConnection, OeeReport

# Equipment events build on the catalog; these fields point at their types lazily.
OeeRef = Annotated["OeeReport", strawberry.lazy("backend.equipment.schema")]
EventConnectionRef = Annotated[
    "EquipmentEventConnection", strawberry.lazy("backend.equipment.schema")
]
EquipmentEventKindRef = Annotated["EquipmentEventKind", strawberry.lazy("backend.equipment.schema")]

MaterialKindType = strawberry.enum(MaterialKind, name="MaterialKind")
CharacteristicKindType = strawberry.enum(CharacteristicKind, name="CharacteristicKind")
EquipmentStateType = strawberry.enum(EquipmentState, name="EquipmentState")


@strawberry.type(name="Characteristic")
class CharacteristicType(Node):
    name: str
    kind: CharacteristicKind
    unit: str | None
    nominal: float | None
    lower_limit: float | None
    upper_limit: float | None

    @classmethod
    def from_row(cls, row: Characteristic) -> CharacteristicType:
        return cls(
            id=to_global_id("Characteristic", row.id),
            name=row.name,
            kind=row.kind,
            unit=row.unit,
            nominal=row.nominal,
            lower_limit=row.lower_limit,
            upper_limit=row.upper_limit,
        )


@strawberry.type(name="Material")
class MaterialType(Node):
    pk: strawberry.Private[int]
    code: str
    name: str
    kind: MaterialKind
    unit: str
    gtin: str | None
    lot_controlled: bool
    shelf_life_days: int | None

    # strawberry.field(...) with arguments is typed as returning Any, hence the ignore.
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="What incoming inspection checks on each received lot of this material."
    )
    async def incoming_characteristics(self, info: Info) -> list[CharacteristicType]:
        rows = await info.context.loaders.characteristics_of_material.load(self.pk)
        return [CharacteristicType.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, row: Material) -> MaterialType:
        return cls(
            id=to_global_id("Material", row.id),
            pk=row.id,
            code=row.code,
            name=row.name,
            kind=row.kind,
            unit=row.unit,
            gtin=row.gtin,
            lot_controlled=row.lot_controlled,
            shelf_life_days=row.shelf_life_days,
        )


@strawberry.type(name="Equipment")
class EquipmentType(Node):
    pk: strawberry.Private[int]
    work_center_pk: strawberry.Private[int | None]
    code: str
    name: str
    ideal_cycle_seconds: float | None
    state: EquipmentState
    state_reason: str | None
    state_since: dt.datetime | None

    @plain_field()
    async def work_center(self, info: Info) -> WorkCenterType | None:
        if self.work_center_pk is None:
            return None
        row = await info.context.loaders.work_center.load(self.work_center_pk)
        return WorkCenterType.from_row(row) if row else None

    @strawberry.field
    async def oee(
        self,
        info: Info,
        from_: Annotated[dt.datetime, strawberry.argument(name="from")],
        to: dt.datetime,
    ) -> OeeRef:
        from backend.equipment.schema import equipment_oee

        return await equipment_oee(info, self.pk, from_, to)

    @strawberry.field
    async def events(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        kinds: list[EquipmentEventKindRef] | None = None,
    ) -> EventConnectionRef:
        from backend.equipment.schema import equipment_events

        return await equipment_events(info, self.pk, first, after, kinds)

    @classmethod
    def from_row(cls, row: Equipment) -> EquipmentType:
        return cls(
            id=to_global_id("Equipment", row.id),
            pk=row.id,
            work_center_pk=row.work_center_id,
            code=row.code,
            name=row.name,
            ideal_cycle_seconds=row.ideal_cycle_seconds,
            state=row.state,
            state_reason=row.state_reason,
            state_since=row.state_since,
        )


@strawberry.type(name="WorkCenter")
class WorkCenterType(Node):
    pk: strawberry.Private[int]
    code: str
    name: str

    @plain_field()
    async def equipment(self, info: Info) -> list[EquipmentType]:
        rows = await info.context.loaders.equipment_of_work_center.load(self.pk)
        return [EquipmentType.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, row: WorkCenter) -> WorkCenterType:
        return cls(id=to_global_id("WorkCenter", row.id), pk=row.id, code=row.code, name=row.name)


register_node("Material", NodeKind(lambda loaders: loaders.material, MaterialType.from_row))
register_node("WorkCenter", NodeKind(lambda loaders: loaders.work_center, WorkCenterType.from_row))
register_node("Equipment", NodeKind(lambda loaders: loaders.equipment, EquipmentType.from_row))
register_node(
    "Characteristic", NodeKind(lambda loaders: loaders.characteristic, CharacteristicType.from_row)
)


@strawberry.input
class CharacteristicInput:
    name: str
    kind: CharacteristicKind
    unit: str | None = None
    nominal: float | None = None
    lower_limit: float | None = None
    upper_limit: float | None = None

    def spec(self) -> service.CharacteristicSpec:
        return service.CharacteristicSpec(
            self.name, self.kind, self.unit, self.nominal, self.lower_limit, self.upper_limit
        )


@strawberry.input
class MaterialInput:
    code: str
    name: str
    kind: MaterialKind
    unit: str
    lot_controlled: bool
    gtin: str | None = None
    shelf_life_days: int | None = None
    incoming_characteristics: list[CharacteristicInput] | None = None


@strawberry.input
class EquipmentInput:
    code: str
    name: str
    ideal_cycle_seconds: float | None = None


@strawberry.input
class WorkCenterInput:
    code: str
    name: str
    equipment: list[EquipmentInput] | None = None


@strawberry.type
class MaterialsPayload:
    materials: list[MaterialType] = strawberry.field(default_factory=list)
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class WorkCentersPayload:
    work_centers: list[WorkCenterType] = strawberry.field(default_factory=list)
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class CatalogQuery:
    @strawberry.field
    async def materials(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        search: str | None = None,
    ) -> Connection[MaterialType]:
        """Materials by code or name (`search` matches either, case-insensitively)."""
        return await paginate(
            info, service.materials_query(search), Material.id, first, after, MaterialType.from_row
        )

    @plain_field()
    async def work_centers(self, info: Info) -> list[WorkCenterType]:
        async with info.context.db.read() as session:
            rows = await service.work_centers(session)
        return [WorkCenterType.from_row(r) for r in rows]

    @strawberry.field
    async def equipment(self, info: Info, code: str) -> EquipmentType | None:
        async with info.context.db.read() as session:
            row = await service.equipment_by_code(session, code)
        return EquipmentType.from_row(row) if row else None


@strawberry.type
class CatalogMutation:
    @strawberry.mutation
    async def upsert_materials(self, info: Info, input: list[MaterialInput]) -> MaterialsPayload:
        specs = [
            service.MaterialSpec(
                code=m.code,
                name=m.name,
                kind=m.kind,
                unit=m.unit,
                lot_controlled=m.lot_controlled,
                gtin=m.gtin,
                shelf_life_days=m.shelf_life_days,
                incoming_characteristics=None
                if m.incoming_characteristics is None
                else [c.spec() for c in m.incoming_characteristics],
            )
            for m in input
        ]

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            rows = await service.upsert_materials(uow, specs)
            return {"materials": [MaterialType.from_row(r) for r in rows]}

        return await run_mutation(info, MaterialsPayload, work)

    @strawberry.mutation
    async def upsert_work_centers(
        self, info: Info, input: list[WorkCenterInput]
    ) -> WorkCentersPayload:
        specs = [
            service.WorkCenterSpec(
                code=w.code,
                name=w.name,
                equipment=None
                if w.equipment is None
                else [
                    service.EquipmentSpec(e.code, e.name, e.ideal_cycle_seconds)
                    for e in w.equipment
                ],
            )
            for w in input
        ]

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            rows = await service.upsert_work_centers(uow, specs)
            return {"work_centers": [WorkCenterType.from_row(r) for r in rows]}

        return await run_mutation(info, WorkCentersPayload, work)
