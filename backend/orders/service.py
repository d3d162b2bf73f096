"""Production orders: the ERP upsert and the order state machine.

    PLANNED → RELEASED → IN_PROGRESS → COMPLETED → CLOSED
    RELEASED | IN_PROGRESS → ON_HOLD → (back to where it was held)
    PLANNED | RELEASED | ON_HOLD → CANCELLED

IN_PROGRESS and COMPLETED are reached through the operations (shop floor):

    operation  PENDING → READY → RUNNING → DONE
    the first operation is READY on release; completing one readies the next;
    the first start makes the order IN_PROGRESS; the last completion makes it COMPLETED.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Select, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend import validation
from backend.catalog import service as catalog
from backend.catalog.models import Characteristic, Material, WorkCenter
from backend.db import utcnow
from backend.errors import DomainError, ErrorCode, Problems
from backend.orders.models import (
    OperationStatus,
    OrderComponent,
    OrderOperation,
    OrderStatus,
    ProductionOrder,
)
from backend.uow import UnitOfWork

CHANNEL = "order"
MAX_LINES = 200


@dataclass
class ComponentSpec:
    material_code: str
    quantity: Decimal
    operation_sequence: int | None = None


@dataclass
class OperationSpec:
    sequence: int
    name: str
    work_center_code: str | None = None
    instructions: str | None = None
    characteristics: list[catalog.CharacteristicSpec] | None = None


@dataclass
class OrderSpec:
    external_id: str
    number: str
    product_code: str
    quantity: Decimal
    components: list[ComponentSpec]
    operations: list[OperationSpec]
    due_at: dt.datetime | None = None
    priority: int | None = None
    work_center_code: str | None = None


def _clean(spec: OrderSpec) -> OrderSpec:
    """Validates the shape of the input; raises with every problem found."""
    problems = Problems()
    external_id = validation.code(problems, "externalId", spec.external_id, max_length=100)
    number = validation.code(problems, "number", spec.number)
    product_code = validation.code(problems, "productCode", spec.product_code)
    quantity = validation.positive_quantity(problems, "quantity", spec.quantity)
    wc_code = (
        validation.code(problems, "workCenterCode", spec.work_center_code)
        if spec.work_center_code is not None and spec.work_center_code.strip()
        else None
    )
    priority = spec.priority if spec.priority is not None else 0
    if not -1_000_000 <= priority <= 1_000_000:
        problems.invalid("priority", "must be between -1000000 and 1000000")
    if spec.due_at is not None and spec.due_at.tzinfo is None:
        problems.invalid("dueAt", "needs a time zone")
    if len(spec.components) > MAX_LINES:
        problems.invalid("components", f"at most {MAX_LINES} components")
    if len(spec.operations) > MAX_LINES:
        problems.invalid("operations", f"at most {MAX_LINES} operations")

    operations, sequences = [], set()
    for i, op in enumerate(spec.operations):
        at = f"operations.{i}"
        if op.sequence < 1 or op.sequence > 1_000_000:
            problems.invalid(f"{at}.sequence", "must be a positive number")
        elif op.sequence in sequences:
            problems.invalid(f"{at}.sequence", f"sequence {op.sequence} appears twice")
        sequences.add(op.sequence)
        operations.append(
            OperationSpec(
                sequence=op.sequence,
                name=validation.name(problems, f"{at}.name", op.name),
                work_center_code=(
                    validation.code(problems, f"{at}.workCenterCode", op.work_center_code)
                    if op.work_center_code is not None and op.work_center_code.strip()
                    else None
                ),
                instructions=validation.text(problems, f"{at}.instructions", op.instructions),
                characteristics=catalog.check_characteristics(
                    problems, f"{at}.characteristics", op.characteristics or []
                ),
            )
        )
    components = []
    for i, comp in enumerate(spec.components):
        at = f"components.{i}"
        if comp.operation_sequence is not None and comp.operation_sequence not in sequences:
            problems.invalid(
                f"{at}.operationSequence",
                f"no operation with sequence {comp.operation_sequence} in this order",
            )
        components.append(
            ComponentSpec(
                material_code=validation.code(problems, f"{at}.materialCode", comp.material_code),
                quantity=validation.positive_quantity(problems, f"{at}.quantity", comp.quantity),
                operation_sequence=comp.operation_sequence,
            )
        )
    problems.raise_if_any()
    operations.sort(key=lambda o: o.sequence)
    return OrderSpec(
        external_id,
        number,
        product_code,
        quantity,
        components,
        operations,
        spec.due_at,
        priority,
        wc_code,
    )


def content_hash(spec: OrderSpec) -> str:
    """A fingerprint of what the ERP sent, normalised (trimmed codes, exact decimals, UTC)."""
    content = {
        "number": spec.number,
        "product": spec.product_code,
        "quantity": str(spec.quantity),
        "dueAt": spec.due_at.astimezone(dt.UTC).isoformat() if spec.due_at else None,
        "priority": spec.priority,
        "workCenter": spec.work_center_code,
        "components": [
            [c.material_code, str(c.quantity), c.operation_sequence] for c in spec.components
        ],
        "operations": [
            [
                o.sequence,
                o.name,
                o.work_center_code,
                o.instructions,
                catalog.characteristics_snapshot(
                    catalog.characteristic_rows(o.characteristics or [])
                ),
            ]
            for o in spec.operations
        ],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


async def _resolve_codes(
    session: AsyncSession, spec: OrderSpec
) -> tuple[dict[str, Material], dict[str, WorkCenter]]:
    material_codes = {spec.product_code, *(c.material_code for c in spec.components)}
    wc_codes = {
        c for c in [spec.work_center_code, *(o.work_center_code for o in spec.operations)] if c
    }
    materials = {
        m.code: m
        for m in await session.scalars(select(Material).where(Material.code.in_(material_codes)))
    }
    centers = (
        {
            w.code: w
            for w in await session.scalars(select(WorkCenter).where(WorkCenter.code.in_(wc_codes)))
        }
        if wc_codes
        else {}
    )
    problems = Problems()
    if spec.product_code not in materials:
        problems.add(ErrorCode.NOT_FOUND, f"no material {spec.product_code!r}", "productCode")
    if spec.work_center_code and spec.work_center_code not in centers:
        problems.add(
            ErrorCode.NOT_FOUND, f"no work center {spec.work_center_code!r}", "workCenterCode"
        )
    for i, comp in enumerate(spec.components):
        if comp.material_code not in materials:
            problems.add(
                ErrorCode.NOT_FOUND,
                f"no material {comp.material_code!r}",
                f"components.{i}.materialCode",
            )
    for i, op in enumerate(spec.operations):
        if op.work_center_code and op.work_center_code not in centers:
            problems.add(
                ErrorCode.NOT_FOUND,
                f"no work center {op.work_center_code!r}",
                f"operations.{i}.workCenterCode",
            )
    problems.raise_if_any()
    return materials, centers


async def upsert(uow: UnitOfWork, raw: OrderSpec) -> ProductionOrder:
    """Creates an order from the ERP, or updates it while PLANNED (see BEHAVIOUR.md).

    After release, sending the same content again changes nothing and different content is
    a CONFLICT: the shop floor may already be working to it.
    """
    spec = _clean(raw)
    session = uow.session
    await catalog.serialise(uow, "order", [f"ext:{spec.external_id}", f"number:{spec.number}"])
    materials, centers = await _resolve_codes(session, spec)
    digest = content_hash(spec)
    known = list(
        await session.scalars(
            select(ProductionOrder).where(
                or_(
                    ProductionOrder.external_id == spec.external_id,
                    ProductionOrder.number == spec.number,
                )
            )
        )
    )
    order = next((o for o in known if o.external_id == spec.external_id), None)
    holder = next((o for o in known if o.number == spec.number), None)
    if holder is not None and (order is None or holder.id != order.id):
        raise DomainError.one(
            ErrorCode.CONFLICT,
            f"order number {spec.number} is taken by another ERP order",
            "number",
        )
    if order is not None:
        if order.content_hash == digest:
            return order
        if order.status is not OrderStatus.PLANNED:
            raise DomainError.one(
                ErrorCode.CONFLICT,
                f"order {order.number} is {order.status.value}: the ERP can no longer change it",
                "externalId",
            )
    now = utcnow()
    header = {
        "number": spec.number,
        "product_id": materials[spec.product_code].id,
        "quantity": spec.quantity,
        "due_at": spec.due_at,
        "priority": spec.priority,
        "work_center_id": centers[spec.work_center_code].id if spec.work_center_code else None,
        "content_hash": digest,
        "updated_at": now,
    }
    if order is None:
        order = ProductionOrder(
            external_id=spec.external_id, status=OrderStatus.PLANNED, created_at=now, **header
        )
        session.add(order)
        await session.flush()
        action = "order.create"
    else:
        await session.execute(delete(OrderComponent).where(OrderComponent.order_id == order.id))
        await session.execute(delete(OrderOperation).where(OrderOperation.order_id == order.id))
        for key, value in header.items():
            setattr(order, key, value)
        action = "order.update"
    for position, comp in enumerate(spec.components):
        session.add(
            OrderComponent(
                order_id=order.id,
                position=position,
                material_id=materials[comp.material_code].id,
                quantity_required=comp.quantity,
                operation_sequence=comp.operation_sequence,
            )
        )
    operations = [
        OrderOperation(
            order_id=order.id,
            sequence=op.sequence,
            name=op.name,
            instructions=op.instructions,
            status=OperationStatus.PENDING,
            work_center_id=centers[op.work_center_code].id if op.work_center_code else None,
        )
        for op in spec.operations
    ]
    session.add_all(operations)
    await session.flush()  # one batched INSERT for the lines, which gives the operations ids
    for op, row in zip(spec.operations, operations, strict=True):
        for char in catalog.characteristic_rows(op.characteristics or []):
            char.operation_id = row.id
            session.add(char)
    await session.flush()
    uow.audit(
        action,
        "ProductionOrder",
        order.id,
        {
            "externalId": spec.external_id,
            "number": spec.number,
            "product": spec.product_code,
            "quantity": spec.quantity,
            "dueAt": spec.due_at,
            "priority": spec.priority,
            "workCenter": spec.work_center_code,
            "components": [
                {
                    "material": c.material_code,
                    "quantity": c.quantity,
                    "operationSequence": c.operation_sequence,
                }
                for c in spec.components
            ],
            "operations": [
                {
                    "sequence": o.sequence,
                    "name": o.name,
                    "workCenter": o.work_center_code,
                    "characteristics": [c.name for c in o.characteristics or []],
                }
                for o in spec.operations
            ],
        },
    )
    uow.publish(CHANNEL, {"id": order.id, "number": order.number})
    return order


# ---------------------------------------------------------------- state machine


async def get_for_update(
    session: AsyncSession, number: str, field: str = "number"
) -> ProductionOrder:
    """The order by number, row-locked on PostgreSQL; NOT_FOUND otherwise."""
    stmt = select(ProductionOrder).where(ProductionOrder.number == number.strip())
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    order = await session.scalar(stmt)
    if order is None:
        raise DomainError.one(ErrorCode.NOT_FOUND, f"no production order {number.strip()!r}", field)
    return order


def _refuse(order: ProductionOrder, verb: str) -> DomainError:
    return DomainError.one(
        ErrorCode.INVALID_TRANSITION,
        f"order {order.number} is {order.status.value}: it cannot be {verb}",
    )


def set_status(
    uow: UnitOfWork,
    order: ProductionOrder,
    status: OrderStatus,
    action: str,
    *,
    publish: bool = True,
    **details: object,
) -> None:
    """Moves the order to `status`, with its audit entry and (unless the caller announces the
    order itself) its change event."""
    before = order.status
    order.status = status
    order.updated_at = utcnow()
    uow.audit(
        action, "ProductionOrder", order.id, {"status": [before.value, status.value], **details}
    )
    if publish:
        uow.publish(CHANNEL, {"id": order.id, "number": order.number})


def _reason(reason: str) -> str:
    problems = Problems()
    text = validation.text(problems, "reason", reason)
    if text is None:
        problems.invalid("reason", "say why")
    problems.raise_if_any()
    assert text is not None
    return text


async def release(uow: UnitOfWork, number: str) -> ProductionOrder:
    order = await get_for_update(uow.session, number)
    if order.status is not OrderStatus.PLANNED:
        raise _refuse(order, "released")
    first = await uow.session.scalar(
        select(OrderOperation)
        .where(OrderOperation.order_id == order.id)
        .order_by(OrderOperation.sequence)
        .limit(1)
    )
    if first is not None:
        first.status = OperationStatus.READY
    set_status(uow, order, OrderStatus.RELEASED, "order.release")
    return order


async def hold(uow: UnitOfWork, number: str, reason: str) -> ProductionOrder:
    text = _reason(reason)
    order = await get_for_update(uow.session, number)
    if order.status not in (OrderStatus.RELEASED, OrderStatus.IN_PROGRESS):
        raise _refuse(order, "put on hold")
    order.held_from = order.status
    set_status(uow, order, OrderStatus.ON_HOLD, "order.hold", reason=text)
    return order


async def resume(uow: UnitOfWork, number: str) -> ProductionOrder:
    order = await get_for_update(uow.session, number)
    if order.status is not OrderStatus.ON_HOLD or order.held_from is None:
        raise _refuse(order, "resumed")
    back_to = order.held_from
    order.held_from = None
    set_status(uow, order, back_to, "order.resume")
    return order


async def cancel(uow: UnitOfWork, number: str, reason: str) -> ProductionOrder:
    text = _reason(reason)
    order = await get_for_update(uow.session, number)
    if order.status not in (OrderStatus.PLANNED, OrderStatus.RELEASED, OrderStatus.ON_HOLD):
        raise _refuse(order, "cancelled")
    order.held_from = None
    set_status(uow, order, OrderStatus.CANCELLED, "order.cancel", reason=text)
    return order


async def close(uow: UnitOfWork, number: str) -> ProductionOrder:
    order = await get_for_update(uow.session, number)
    if order.status is not OrderStatus.COMPLETED:
        raise _refuse(order, "closed")
    set_status(uow, order, OrderStatus.CLOSED, "order.close")
    return order


# ---------------------------------------------------------------- operations (shop floor)

# Orders whose operations may be started and completed: not PLANNED (not released yet),
# not ON_HOLD (held means stop work), not finished.
_WORKING = (OrderStatus.RELEASED, OrderStatus.IN_PROGRESS)


async def _working_order(session: AsyncSession, number: str, verb: str) -> ProductionOrder:
    """The order, row-locked so two operators cannot move its operations at once."""
    order = await get_for_update(session, number, field="orderNumber")
    if order.status not in _WORKING:
        raise DomainError.one(
            ErrorCode.INVALID_TRANSITION,
            f"order {order.number} is {order.status.value}: its operations cannot be {verb} "
            f"(only while the order is RELEASED or IN_PROGRESS)",
        )
    return order


async def _operations(session: AsyncSession, order: ProductionOrder) -> list[OrderOperation]:
    return list(
        await session.scalars(
            select(OrderOperation)
            .where(OrderOperation.order_id == order.id)
            .order_by(OrderOperation.sequence)
        )
    )


def _operation(
    order: ProductionOrder, operations: Sequence[OrderOperation], sequence: int
) -> OrderOperation:
    found = next((op for op in operations if op.sequence == sequence), None)
    if found is None:
        raise DomainError.one(
            ErrorCode.NOT_FOUND, f"order {order.number} has no operation {sequence}", "sequence"
        )
    return found


def _refuse_operation(operation: OrderOperation, verb: str, needed: OperationStatus) -> DomainError:
    return DomainError.one(
        ErrorCode.INVALID_TRANSITION,
        f"operation {operation.sequence} is {operation.status.value}: only a "
        f"{needed.value} operation can be {verb}",
    )


async def quality_gate(session: AsyncSession, operation: OrderOperation) -> str | None:
    """Why `operation` may not be completed yet, or None when it may (BEHAVIOUR.md, quality gate).

    An operation with characteristics completes only after an inspection of it has PASSED,
    or a deviation raised from its failed inspection has been APPROVED with USE_AS_IS or
    REWORK. Operations without characteristics always pass.
    """
    # Quality builds on orders; its rule is asked here, at the one place operations complete.
    from backend.quality.service import operation_cleared

    has_characteristics = await session.scalar(
        select(Characteristic.id).where(Characteristic.operation_id == operation.id).limit(1)
    )
    if has_characteristics is None or await operation_cleared(session, operation.id):
        return None
    return (
        f"operation {operation.sequence} needs a passed inspection, or an approved deviation, "
        f"before it can be completed"
    )


async def start_operation(
    uow: UnitOfWork, number: str, sequence: int
) -> tuple[ProductionOrder, OrderOperation]:
    """READY → RUNNING; the first start of an order makes it IN_PROGRESS."""
    session = uow.session
    order = await _working_order(session, number, "started")
    operation = _operation(order, await _operations(session, order), sequence)
    if operation.status is not OperationStatus.READY:
        raise _refuse_operation(operation, "started", OperationStatus.READY)
    now = utcnow()
    operation.status = OperationStatus.RUNNING
    operation.started_at = now
    uow.audit(
        "operation.start",
        "OrderOperation",
        operation.id,
        {
            "order": order.number,
            "sequence": operation.sequence,
            "status": [OperationStatus.READY.value, OperationStatus.RUNNING.value],
        },
    )
    if order.status is OrderStatus.RELEASED:
        set_status(uow, order, OrderStatus.IN_PROGRESS, "order.start", publish=False)
    order.updated_at = now
    await session.flush()
    uow.publish(CHANNEL, {"id": order.id, "number": order.number})
    return order, operation


async def complete_operation(
    uow: UnitOfWork,
    number: str,
    sequence: int,
    good: Decimal,
    scrap: Decimal,
    scrap_reason: str | None,
) -> tuple[ProductionOrder, OrderOperation]:
    """RUNNING → DONE with its good and scrap quantities (scrap needs a reason).

    The next operation becomes READY; when every operation is DONE the order is COMPLETED
    and takes the good and scrap quantities of its last operation. Refused while the
    quality gate holds the operation.
    """
    problems = Problems()
    good = validation.non_negative_quantity(problems, "quantityGood", good)
    scrap = validation.non_negative_quantity(problems, "quantityScrap", scrap)
    reason = validation.text(problems, "scrapReason", scrap_reason)
    if scrap > 0 and reason is None:
        problems.invalid("scrapReason", "say why there is scrap")
    problems.raise_if_any()

    session = uow.session
    order = await _working_order(session, number, "completed")
    operations = await _operations(session, order)
    operation = _operation(order, operations, sequence)
    if operation.status is not OperationStatus.RUNNING:
        raise _refuse_operation(operation, "completed", OperationStatus.RUNNING)
    if (refusal := await quality_gate(session, operation)) is not None:
        raise DomainError.one(ErrorCode.INVALID_TRANSITION, refusal)

    now = utcnow()
    operation.status = OperationStatus.DONE
    operation.completed_at = now
    operation.quantity_good = good
    operation.quantity_scrap = scrap
    operation.scrap_reason = reason
    changes: dict[str, object] = {
        "order": order.number,
        "sequence": operation.sequence,
        "status": [OperationStatus.RUNNING.value, OperationStatus.DONE.value],
        "quantityGood": good,
        "quantityScrap": scrap,
        "scrapReason": reason,
    }
    following = next((op for op in operations if op.sequence > operation.sequence), None)
    if following is not None and following.status is OperationStatus.PENDING:
        following.status = OperationStatus.READY
        changes["next"] = {
            "sequence": following.sequence,
            "status": [OperationStatus.PENDING.value, OperationStatus.READY.value],
        }
    uow.audit("operation.complete", "OrderOperation", operation.id, changes)
    if all(op.status is OperationStatus.DONE for op in operations):
        last = operations[-1]
        before = {"quantityGood": order.quantity_good, "quantityScrap": order.quantity_scrap}
        order.quantity_good = last.quantity_good
        order.quantity_scrap = last.quantity_scrap
        set_status(
            uow,
            order,
            OrderStatus.COMPLETED,
            "order.complete",
            publish=False,
            quantityGood=[before["quantityGood"], order.quantity_good],
            quantityScrap=[before["quantityScrap"], order.quantity_scrap],
        )
    order.updated_at = now
    await session.flush()
    uow.publish(CHANNEL, {"id": order.id, "number": order.number})
    return order, operation


# ---------------------------------------------------------------- reads


async def by_number(session: AsyncSession, number: str) -> ProductionOrder | None:
    return await session.scalar(
        select(ProductionOrder).where(ProductionOrder.number == number.strip())
    )


def orders_query(
    statuses: Sequence[OrderStatus] | None, work_center_code: str | None
) -> Select[ProductionOrder]:
    stmt = select(ProductionOrder)
    if statuses:
        stmt = stmt.where(ProductionOrder.status.in_(list(statuses)))
    if work_center_code is not None:
        stmt = stmt.where(
            ProductionOrder.work_center_id.in_(
                select(WorkCenter.id).where(WorkCenter.code == work_center_code.strip())
            )
        )
    return stmt


async def components_of(session: AsyncSession, order_ids: Sequence[int]) -> list[OrderComponent]:
    return list(
        await session.scalars(
            select(OrderComponent)
            .where(OrderComponent.order_id.in_(order_ids))
            .order_by(OrderComponent.order_id, OrderComponent.position)
        )
    )


async def operations_of(session: AsyncSession, order_ids: Sequence[int]) -> list[OrderOperation]:
    return list(
        await session.scalars(
            select(OrderOperation)
            .where(OrderOperation.order_id.in_(order_ids))
            .order_by(OrderOperation.order_id, OrderOperation.sequence)
        )
    )


async def characteristics_of_operations(
    session: AsyncSession, operation_ids: Sequence[int]
) -> list[Characteristic]:
    return list(
        await session.scalars(
            select(Characteristic)
            .where(Characteristic.operation_id.in_(operation_ids))
            .order_by(Characteristic.operation_id, Characteristic.position)
        )
    )
