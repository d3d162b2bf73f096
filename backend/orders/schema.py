from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from backend.catalog.models import Material, WorkCenter
from backend.catalog.schema import (
    CharacteristicInput,
    CharacteristicType,
    MaterialType,
    WorkCenterType,
)
from backend.gql import (
    Connection,
    Info,
    MutationError,
    Node,
    NodeKind,
    Replay,
    paginate,
    plain_field,
    register_node,
    run_mutation,
    run_replayable,
    still_signed_in,
    to_global_id,
)
from backend.orders import service
from backend.orders.models import (
    OperationStatus,
    OrderComponent,
    OrderOperation,
    OrderStatus,
    ProductionOrder,
)
from backend.replay.service import Subject
from backend.uow import UnitOfWork

if TYPE_CHECKING:
    from backend.lots.schema import ConsumptionType, LotType
    from backend.quality.schema import DeviationType, InspectionType

# The lots domain builds on orders; these two fields point back at its types lazily.
LotRef = Annotated["LotType", strawberry.lazy("backend.lots.schema")]
ConsumptionRef = Annotated["ConsumptionType", strawberry.lazy("backend.lots.schema")]
InspectionRef = Annotated["InspectionType", strawberry.lazy("backend.quality.schema")]
DeviationRef = Annotated["DeviationType", strawberry.lazy("backend.quality.schema")]

OrderStatusType = strawberry.enum(OrderStatus, name="OrderStatus")
OperationStatusType = strawberry.enum(OperationStatus, name="OperationStatus")


async def order_by_pk(info: Info, pk: int | None) -> ProductionOrderType | None:
    """The order with this id through the operation's loader (None for None)."""
    if pk is None:
        return None
    row = await info.context.loaders.order.load(pk)
    return ProductionOrderType.from_row(row) if row else None


async def _work_center(info: Info, pk: int | None) -> WorkCenterType | None:
    if pk is None:
        return None
    row = await info.context.loaders.work_center.load(pk)
    return WorkCenterType.from_row(row) if row else None


async def _material(info: Info, pk: int) -> MaterialType:
    row = await info.context.loaders.material.load(pk)
    assert row is not None  # a foreign key
    return MaterialType.from_row(row)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


# Relations a list resolver loaded with its page (see `_order_prefetch`) are plain attributes,
# returned synchronously; anything else (a single order, a payload, `node`) goes through the
# operation's DataLoaders. Same answers either way, but a page resolved without an await per
# field costs far less. UNSET tells "not loaded" from a loaded null.
UNSET: Any = _Unset()


@strawberry.type(name="OrderOperation")
class OrderOperationType(Node):
    pk: strawberry.Private[int]
    work_center_pk: strawberry.Private[int | None]
    sequence: int
    name: str
    instructions: str | None
    status: OperationStatus
    quantity_good: Decimal
    quantity_scrap: Decimal
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    _work_center: strawberry.Private[WorkCenterType | None] = UNSET

    # graphql_type: the resolver answers a value, or an awaitable when nothing was prefetched.
    @plain_field(graphql_type=WorkCenterType | None)
    def work_center(self, info: Info) -> WorkCenterType | Awaitable[WorkCenterType | None] | None:
        if self.work_center_pk is None:
            return None
        if self._work_center is not UNSET:
            return self._work_center
        return _work_center(info, self.work_center_pk)

    @plain_field()
    async def characteristics(self, info: Info) -> list[CharacteristicType]:
        rows = await info.context.loaders.characteristics_of_operation.load(self.pk)
        return [CharacteristicType.from_row(r) for r in rows]

    @plain_field()
    async def inspections(self, info: Info) -> list[InspectionRef]:
        from backend.quality.schema import InspectionType

        rows = await info.context.loaders.inspections_of_operation.load(self.pk)
        return [InspectionType.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, row: OrderOperation) -> OrderOperationType:
        return cls(
            id=to_global_id("OrderOperation", row.id),
            pk=row.id,
            work_center_pk=row.work_center_id,
            sequence=row.sequence,
            name=row.name,
            instructions=row.instructions,
            status=row.status,
            quantity_good=row.quantity_good,
            quantity_scrap=row.quantity_scrap,
            started_at=row.started_at,
            completed_at=row.completed_at,
        )


@strawberry.type(name="OrderComponent")
class OrderComponentType:
    pk: strawberry.Private[int]
    material_pk: strawberry.Private[int]
    quantity_required: Decimal
    quantity_consumed: Decimal
    operation_sequence: int | None
    _material: strawberry.Private[MaterialType | None] = None

    @plain_field(graphql_type=MaterialType)
    def material(self, info: Info) -> MaterialType | Awaitable[MaterialType]:
        if self._material is not None:
            return self._material
        return _material(info, self.material_pk)

    @plain_field()
    async def consumptions(self, info: Info) -> list[ConsumptionRef]:
        from backend.lots.schema import ConsumptionType

        rows = await info.context.loaders.consumptions_of_component.load(self.pk)
        return [ConsumptionType.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, row: OrderComponent) -> OrderComponentType:
        return cls(
            pk=row.id,
            material_pk=row.material_id,
            quantity_required=row.quantity_required,
            quantity_consumed=row.quantity_consumed,
            operation_sequence=row.operation_sequence,
        )


@strawberry.type(name="ProductionOrder")
class ProductionOrderType(Node):
    pk: strawberry.Private[int]
    product_pk: strawberry.Private[int]
    work_center_pk: strawberry.Private[int | None]
    number: str
    external_id: str | None
    quantity: Decimal
    quantity_good: Decimal
    quantity_scrap: Decimal
    status: OrderStatus
    priority: int
    due_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    _product: strawberry.Private[MaterialType | None] = None
    _work_center: strawberry.Private[WorkCenterType | None] = UNSET
    _operations: strawberry.Private[list[OrderOperationType] | None] = None
    _components: strawberry.Private[list[OrderComponentType] | None] = None

    @plain_field(graphql_type=MaterialType)
    def product(self, info: Info) -> MaterialType | Awaitable[MaterialType]:
        if self._product is not None:
            return self._product
        return _material(info, self.product_pk)

    @plain_field(graphql_type=WorkCenterType | None)
    def work_center(self, info: Info) -> WorkCenterType | Awaitable[WorkCenterType | None] | None:
        if self.work_center_pk is None:
            return None
        if self._work_center is not UNSET:
            return self._work_center
        return _work_center(info, self.work_center_pk)

    @plain_field(graphql_type=list[OrderOperationType])
    def operations(
        self, info: Info
    ) -> list[OrderOperationType] | Awaitable[list[OrderOperationType]]:
        if self._operations is not None:
            return self._operations
        return self._load_operations(info)

    async def _load_operations(self, info: Info) -> list[OrderOperationType]:
        rows = await info.context.loaders.operations_of_order.load(self.pk)
        return [OrderOperationType.from_row(r) for r in rows]

    @plain_field(graphql_type=list[OrderComponentType])
    def components(
        self, info: Info
    ) -> list[OrderComponentType] | Awaitable[list[OrderComponentType]]:
        if self._components is not None:
            return self._components
        return self._load_components(info)

    async def _load_components(self, info: Info) -> list[OrderComponentType]:
        rows = await info.context.loaders.components_of_order.load(self.pk)
        return [OrderComponentType.from_row(r) for r in rows]

    @plain_field()
    async def produced_lots(self, info: Info) -> list[LotRef]:
        from backend.lots.schema import LotType

        rows = await info.context.loaders.lots_produced_by_order.load(self.pk)
        return [LotType.from_row(r) for r in rows]

    @plain_field()
    async def deviations(self, info: Info) -> list[DeviationRef]:
        from backend.quality.schema import DeviationType

        rows = await info.context.loaders.deviations_of_order.load(self.pk)
        return [DeviationType.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, row: ProductionOrder) -> ProductionOrderType:
        return cls(
            id=to_global_id("ProductionOrder", row.id),
            pk=row.id,
            product_pk=row.product_id,
            work_center_pk=row.work_center_id,
            number=row.number,
            external_id=row.external_id,
            quantity=row.quantity,
            quantity_good=row.quantity_good,
            quantity_scrap=row.quantity_scrap,
            status=row.status,
            priority=row.priority,
            due_at=row.due_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


register_node(
    "ProductionOrder", NodeKind(lambda loaders: loaders.order, ProductionOrderType.from_row)
)
register_node(
    "OrderOperation", NodeKind(lambda loaders: loaders.operation, OrderOperationType.from_row)
)


@strawberry.input
class ComponentInput:
    material_code: str
    quantity: Decimal = strawberry.field(description="For the whole order.")
    operation_sequence: int | None = None


@strawberry.input
class OperationDefinitionInput:
    sequence: int
    name: str
    work_center_code: str | None = None
    instructions: str | None = None
    characteristics: list[CharacteristicInput] | None = None


@strawberry.input
class ProductionOrderInput:
    external_id: str = strawberry.field(
        description=(
            "The ERP's own key: sending the same order again updates it (while PLANNED) "
            "or changes nothing."
        )
    )
    number: str
    product_code: str
    quantity: Decimal
    components: list[ComponentInput]
    operations: list[OperationDefinitionInput]
    due_at: dt.datetime | None = None
    priority: int | None = None
    work_center_code: str | None = None

    def spec(self) -> service.OrderSpec:
        return service.OrderSpec(
            external_id=self.external_id,
            number=self.number,
            product_code=self.product_code,
            quantity=self.quantity,
            due_at=self.due_at,
            priority=self.priority,
            work_center_code=self.work_center_code,
            components=[
                service.ComponentSpec(c.material_code, c.quantity, c.operation_sequence)
                for c in self.components
            ],
            operations=[
                service.OperationSpec(
                    o.sequence,
                    o.name,
                    o.work_center_code,
                    o.instructions,
                    [c.spec() for c in o.characteristics or []],
                )
                for o in self.operations
            ],
        )


@strawberry.type
class ProductionOrderPayload:
    order: ProductionOrderType | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


def _order_payload(order: ProductionOrder) -> dict[str, Any]:
    return {"order": ProductionOrderType.from_row(order)}


@strawberry.input
class OperationActionInput:
    client_mutation_id: strawberry.ID
    order_number: str
    sequence: int


@strawberry.input
class CompleteOperationInput:
    client_mutation_id: strawberry.ID
    order_number: str
    sequence: int
    quantity_good: Decimal
    quantity_scrap: Decimal
    scrap_reason: str | None = strawberry.field(
        default=None, description="Why the scrap happened; needed when quantityScrap > 0."
    )


@strawberry.type
class OperationPayload:
    operation: OrderOperationType | None = None
    order: ProductionOrderType | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


def _same(value: Decimal) -> str:
    """A quantity as the replay key sees it: "5", "5.0" and "5.000" are one request."""
    return str(value.normalize()) if value.is_finite() else str(value)


def _operation_replay(
    input: OperationActionInput | CompleteOperationInput, request: dict[str, Any]
) -> Replay:
    number = input.order_number.strip()
    return Replay(
        client_mutation_id=input.client_mutation_id,
        request={"orderNumber": number, "sequence": input.sequence, **request},
        subject=Subject("ProductionOrder", number),
    )


def _operation_refs(order: ProductionOrder, operation: OrderOperation) -> dict[str, Any]:
    return {"order": order.id, "operation": operation.id}


def _present_operation(info: Info) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    async def present(refs: dict[str, Any]) -> dict[str, Any]:
        operation = await info.context.loaders.operation.load(refs["operation"])
        order = await info.context.loaders.order.load(refs["order"])
        return {
            "operation": OrderOperationType.from_row(operation) if operation else None,
            "order": ProductionOrderType.from_row(order) if order else None,
        }

    return present


def _subselections(selections: Sequence[Selection], name: str) -> list[Selection] | None:
    """What the fields called `name` among `selections` (fragments included) select in all;
    None when no field is called that."""
    found: list[Selection] | None = None
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name == name:
                found = (found or []) + list(selection.selections)
        elif isinstance(selection, FragmentSpread | InlineFragment):
            inner = _subselections(selection.selections, name)
            if inner is not None:
                found = (found or []) + inner
    return found


def _order_prefetch(
    info: Info,
) -> Callable[[AsyncSession, list[ProductionOrderType]], Awaitable[None]]:
    """Loads, for a page of orders and in the page's session, the relations the query selects
    under `edges.node` (product, workCenter, operations with their work centers, components
    with their materials): one Core statement per table, no ORM objects, in the orders the
    DataLoaders use, so the answers are the same as theirs."""
    # selected_fields: the productionOrders field itself (each node of it, when merged).
    connection = [s for field in info.selected_fields for s in field.selections]
    node = _subselections(_subselections(connection, "edges") or [], "node") or []
    want_product = _subselections(node, "product") is not None
    want_work_center = _subselections(node, "workCenter") is not None
    operations = _subselections(node, "operations")
    components = _subselections(node, "components")
    want_operation_wc = (
        operations is not None and _subselections(operations, "workCenter") is not None
    )
    want_material = components is not None and _subselections(components, "material") is not None

    async def prefetch(session: AsyncSession, orders: list[ProductionOrderType]) -> None:
        if not orders:
            return
        ids = [o.pk for o in orders]
        ops: dict[int, list[OrderOperationType]] = defaultdict(list)
        if operations is not None:
            table = OrderOperation.__table__
            for row in await session.execute(
                select(table).where(table.c.order_id.in_(ids)).order_by(table.c.sequence)
            ):
                ops[row.order_id].append(OrderOperationType.from_row(row))  # type: ignore[arg-type]
        comps: dict[int, list[OrderComponentType]] = defaultdict(list)
        if components is not None:
            table = OrderComponent.__table__
            for row in await session.execute(
                select(table).where(table.c.order_id.in_(ids)).order_by(table.c.position)
            ):
                comps[row.order_id].append(OrderComponentType.from_row(row))  # type: ignore[arg-type]
        material_ids: set[int] = set()
        if want_product:
            material_ids.update(o.product_pk for o in orders)
        if want_material:
            material_ids.update(c.material_pk for cs in comps.values() for c in cs)
        center_ids: set[int] = set()
        if want_work_center:
            center_ids.update(o.work_center_pk for o in orders if o.work_center_pk is not None)
        if want_operation_wc:
            center_ids.update(
                op.work_center_pk
                for os in ops.values()
                for op in os
                if op.work_center_pk is not None
            )
        materials: dict[int, MaterialType] = {}
        if material_ids:
            table = Material.__table__
            for row in await session.execute(
                select(table).where(table.c.id.in_(sorted(material_ids)))
            ):
                materials[row.id] = MaterialType.from_row(row)  # type: ignore[arg-type]
        centers: dict[int, WorkCenterType] = {}
        if center_ids:
            table = WorkCenter.__table__
            for row in await session.execute(
                select(table).where(table.c.id.in_(sorted(center_ids)))
            ):
                centers[row.id] = WorkCenterType.from_row(row)  # type: ignore[arg-type]
        for order in orders:
            if want_product:
                order._product = materials.get(order.product_pk)
            if want_work_center and order.work_center_pk is not None:
                order._work_center = centers.get(order.work_center_pk)
            if operations is not None:
                order._operations = ops.get(order.pk, [])
                if want_operation_wc:
                    for op in order._operations:
                        if op.work_center_pk is not None:
                            op._work_center = centers.get(op.work_center_pk)
            if components is not None:
                order._components = comps.get(order.pk, [])
                if want_material:
                    for component in order._components:
                        component._material = materials.get(component.material_pk)

    return prefetch


@strawberry.type
class OrdersQuery:
    @strawberry.field
    async def production_order(self, info: Info, number: str) -> ProductionOrderType | None:
        async with info.context.db.read() as session:
            row = await service.by_number(session, number)
        return ProductionOrderType.from_row(row) if row else None

    @strawberry.field
    async def production_orders(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: list[OrderStatus] | None = None,
        work_center: str | None = None,
    ) -> Connection[ProductionOrderType]:
        """Orders in the order the ERP created them; filter by status and work center code."""
        return await paginate(
            info,
            service.orders_query(status, work_center),
            ProductionOrder.id,
            first,
            after,
            ProductionOrderType.from_row,
            prefetch=_order_prefetch(info),
        )


@strawberry.type
class OrdersMutation:
    @strawberry.mutation
    async def upsert_production_order(
        self, info: Info, input: ProductionOrderInput
    ) -> ProductionOrderPayload:
        spec = input.spec()

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            return _order_payload(await service.upsert(uow, spec))

        return await run_mutation(info, ProductionOrderPayload, work)

    @strawberry.mutation
    async def release_production_order(self, info: Info, number: str) -> ProductionOrderPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            return _order_payload(await service.release(uow, number))

        return await run_mutation(info, ProductionOrderPayload, work)

    @strawberry.mutation
    async def hold_production_order(
        self, info: Info, number: str, reason: str
    ) -> ProductionOrderPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            return _order_payload(await service.hold(uow, number, reason))

        return await run_mutation(info, ProductionOrderPayload, work)

    @strawberry.mutation
    async def resume_production_order(self, info: Info, number: str) -> ProductionOrderPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            return _order_payload(await service.resume(uow, number))

        return await run_mutation(info, ProductionOrderPayload, work)

    @strawberry.mutation
    async def cancel_production_order(
        self, info: Info, number: str, reason: str
    ) -> ProductionOrderPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            return _order_payload(await service.cancel(uow, number, reason))

        return await run_mutation(info, ProductionOrderPayload, work)

    @strawberry.mutation
    async def close_production_order(self, info: Info, number: str) -> ProductionOrderPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            return _order_payload(await service.close(uow, number))

        return await run_mutation(info, ProductionOrderPayload, work)

    @strawberry.mutation
    async def start_operation(self, info: Info, input: OperationActionInput) -> OperationPayload:
        """Shop floor: READY → RUNNING. Safe to resend with the same clientMutationId."""

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            return _operation_refs(
                *await service.start_operation(uow, input.order_number, input.sequence)
            )

        return await run_replayable(
            info, OperationPayload, _operation_replay(input, {}), work, _present_operation(info)
        )

    @strawberry.mutation
    async def complete_operation(
        self, info: Info, input: CompleteOperationInput
    ) -> OperationPayload:
        """Shop floor: RUNNING → DONE. Safe to resend with the same clientMutationId."""

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            return _operation_refs(
                *await service.complete_operation(
                    uow,
                    input.order_number,
                    input.sequence,
                    input.quantity_good,
                    input.quantity_scrap,
                    input.scrap_reason,
                )
            )

        request = {
            "quantityGood": _same(input.quantity_good),
            "quantityScrap": _same(input.quantity_scrap),
            "scrapReason": (input.scrap_reason or "").strip() or None,
        }
        return await run_replayable(
            info,
            OperationPayload,
            _operation_replay(input, request),
            work,
            _present_operation(info),
        )


@strawberry.type
class OrdersSubscription:
    @strawberry.subscription
    async def production_order_changed(
        self, info: Info, number: str | None = None
    ) -> AsyncGenerator[ProductionOrderType, None]:
        """Each committed change of an order (or of the one with `number`), as committed."""
        wanted = number.strip() if number else None
        async with info.context.services.broadcast.subscribe(service.CHANNEL) as events:
            async for event in events:
                if wanted is not None and event.get("number") != wanted:
                    continue
                async with info.context.db.read() as session:
                    row = await session.get(ProductionOrder, event["id"])
                if row is not None:
                    await still_signed_in(info)
                    info.context.renew_loaders()
                    yield ProductionOrderType.from_row(row)
