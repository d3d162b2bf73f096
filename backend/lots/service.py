"""Lots: receiving, scanning into orders, producing, genealogy and expiry.

Scanning first refuses input that is wrong whatever the plant's state (a quantity not > 0, a
`scannedAt` without a zone or ahead of the server's clock), all such problems at once. Then the
checks, in this order (BEHAVIOUR.md, "Lots and scanning"): the order is RELEASED or
IN_PROGRESS (and has the operation, when one is named); the lot exists; a GTIN in the code is
the lot's material's; the lot is not past its expiry at scan time; it is AVAILABLE (at scan
time: see `_status_at`); its material is one of the order's components; the lot holds the
quantity. The quantity is then taken with one guarded UPDATE, so two operators scanning the
same lot at the same moment can never take more than it holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Select, case, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from backend import validation
from backend.audit import service as audit
from backend.catalog.models import Characteristic, Material
from backend.db import utcnow
from backend.errors import DomainError, ErrorCode, Problems
from backend.lots.barcode import BarcodeError, ParsedCode, parse_code
from backend.lots.models import Consumption, GenealogyLink, Lot, LotStatus
from backend.orders import service as orders
from backend.orders.models import OrderComponent, OrderOperation, OrderStatus, ProductionOrder
from backend.settings import Settings
from backend.uow import UnitOfWork

CHANNEL = "lot"
RUNNING_ORDER = (OrderStatus.RELEASED, OrderStatus.IN_PROGRESS)
# "Any depth" still needs a bound: genealogy is acyclic by construction (a lot is made from
# lots that existed before it), and the bound keeps a corrupted cycle from running forever.
TRACE_DEPTH_LIMIT = 1000
EXPIRE_ACTION = "lot.expire"
_STATUS_VALUES = frozenset(s.value for s in LotStatus)


def _changed(uow: UnitOfWork, lot: Lot) -> None:
    uow.publish(CHANNEL, {"id": lot.id, "number": lot.number})


def _aware(problems: Problems, field: str, value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        problems.invalid(field, "needs a time zone (for example 2026-12-31T23:59:59Z)")
        return None
    return value


def _default_expiry(material: Material, now: dt.datetime) -> dt.datetime | None:
    return now + dt.timedelta(days=material.shelf_life_days) if material.shelf_life_days else None


async def _unique_number(session: AsyncSession, number: str, field: str) -> None:
    if await session.scalar(select(Lot.id).where(Lot.number == number)) is not None:
        raise DomainError.one(ErrorCode.CONFLICT, f"lot {number} already exists", field)


async def _insert(session: AsyncSession, lot: Lot, field: str) -> None:
    """Writes the new lot. The number was checked free, but a concurrent transaction can take
    it before this one commits (PostgreSQL): the unique index then decides, as a CONFLICT."""
    session.add(lot)
    try:
        await session.flush()
    except IntegrityError as error:
        raise DomainError.one(
            ErrorCode.CONFLICT, f"lot {lot.number} already exists", field
        ) from error


# ---------------------------------------------------------------- receiving


async def receive(
    uow: UnitOfWork,
    *,
    number: str,
    material_code: str,
    quantity: Decimal,
    expires_at: dt.datetime | None,
    supplier_lot: str | None,
) -> Lot:
    """A lot arrives: QUARANTINE when its material has incoming characteristics, else AVAILABLE."""
    problems = Problems()
    number = validation.code(problems, "number", number)
    material_code = validation.code(problems, "materialCode", material_code)
    quantity = validation.positive_quantity(problems, "quantity", quantity)
    expires_at = _aware(problems, "expiresAt", expires_at)
    supplier_lot = validation.text(problems, "supplierLot", supplier_lot, max_length=100)
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        problems.invalid("expiresAt", "this lot has already expired; do not receive it")
    problems.raise_if_any()
    session = uow.session
    # One statement for what a receipt checks (the offline outbox sends them by the hundred):
    # the material, whether its lots are inspected on arrival, whether the number is taken.
    row = (
        await session.execute(
            select(
                Material,
                select(Characteristic.id)
                .where(Characteristic.material_id == Material.id)
                .exists()
                .label("inspected"),
                select(Lot.id).where(Lot.number == number).exists().label("taken"),
            ).where(Material.code == material_code)
        )
    ).first()
    if row is None:
        raise DomainError.one(ErrorCode.NOT_FOUND, f"no material {material_code!r}", "materialCode")
    material, inspected, taken = row
    if taken:
        raise DomainError.one(ErrorCode.CONFLICT, f"lot {number} already exists", "number")
    lot = Lot(
        number=number,
        material_id=material.id,
        quantity=quantity,
        initial_quantity=quantity,
        status=LotStatus.QUARANTINE if inspected else LotStatus.AVAILABLE,
        expires_at=expires_at or _default_expiry(material, now),
        supplier_lot=supplier_lot,
        created_by=uow.actor.name,
        created_at=now,
        updated_at=now,
    )
    await _insert(session, lot, "number")
    uow.audit(
        "lot.receive",
        "Lot",
        lot.id,
        {
            "number": number,
            "material": material.code,
            "quantity": quantity,
            "status": lot.status,
            "expiresAt": lot.expires_at,
            "supplierLot": supplier_lot,
        },
    )
    _changed(uow, lot)
    return lot


# ---------------------------------------------------------------- scanning


@dataclass(frozen=True)
class ScanResult:
    parsed: ParsedCode
    lot: Lot
    consumption: Consumption


def parse(settings: Settings, code: str) -> ParsedCode:
    """What a scanned code says; an unreadable code is UNKNOWN_BARCODE."""
    try:
        return parse_code(code, gs_stand_ins=settings.gs_stand_ins)
    except BarcodeError as error:
        raise DomainError.one(ErrorCode.UNKNOWN_BARCODE, str(error), "code") from error


def _scan_time(
    problems: Problems, settings: Settings, scanned_at: dt.datetime | None, now: dt.datetime
) -> dt.datetime:
    if scanned_at is None:
        return now
    if scanned_at.tzinfo is None:
        problems.invalid("scannedAt", "needs a time zone (for example 2026-05-01T08:30:00Z)")
        return now
    if scanned_at > now + dt.timedelta(seconds=settings.clock_skew_seconds):
        problems.invalid("scannedAt", "is later than the server's clock: check the device's time")
        return now
    return min(scanned_at, now)


async def _status_at(session: AsyncSession, lot: Lot, at: dt.datetime) -> LotStatus:
    """The lot's status as it bears on a scan made at `at`.

    The expiry job marks a lot EXPIRED only because its time has passed. A scan made before
    that (an offline device syncing late) meets the lot as it was then: with the status the
    job replaced, which the job's audit entry records. Any other EXPIRED lot stays EXPIRED.
    """
    if lot.status is not LotStatus.EXPIRED or lot.expires_at is None or at >= lot.expires_at:
        return lot.status
    entries = await session.scalars(audit.trail_query("Lot", str(lot.id)))
    expired = max(
        (e for e in entries if e.action == EXPIRE_ACTION and e.changes),
        key=lambda e: e.sequence,
        default=None,
    )
    if expired is None:
        return lot.status
    before = expired.changes["status"][0] if expired.changes else None
    return LotStatus(before) if before in _STATUS_VALUES else lot.status


async def scan(
    uow: UnitOfWork,
    settings: Settings,
    *,
    code: str,
    order_number: str,
    operation_sequence: int | None,
    quantity: Decimal | None,
    scanned_at: dt.datetime | None,
) -> ScanResult:
    """Consumes (part of) a scanned lot into an order. See the module docstring for the checks."""
    session = uow.session
    now = utcnow()
    # Input that is wrong whatever the plant's state comes back first, all of it at once.
    problems = Problems()
    asked = (
        validation.positive_quantity(problems, "quantity", quantity)
        if quantity is not None
        else None
    )
    at = _scan_time(problems, settings, scanned_at, now)
    problems.raise_if_any()
    order = await session.scalar(
        select(ProductionOrder).where(ProductionOrder.number == order_number.strip())
    )
    if order is None:
        raise DomainError.one(
            ErrorCode.NOT_FOUND, f"no production order {order_number.strip()!r}", "orderNumber"
        )
    if order.status not in RUNNING_ORDER:
        raise DomainError.one(
            ErrorCode.INVALID_TRANSITION,
            f"order {order.number} is {order.status.value}: material can be scanned "
            "only into a RELEASED or IN_PROGRESS order",
            "orderNumber",
        )
    if operation_sequence is not None and (
        await session.scalar(
            select(OrderOperation.id).where(
                OrderOperation.order_id == order.id, OrderOperation.sequence == operation_sequence
            )
        )
        is None
    ):
        raise DomainError.one(
            ErrorCode.NOT_FOUND,
            f"order {order.number} has no operation {operation_sequence}",
            "operationSequence",
        )
    parsed = parse(settings, code)
    if not parsed.lot_number:
        raise DomainError.one(
            ErrorCode.UNKNOWN_BARCODE,
            "the code has no lot number (GS1 AI 10): scan the lot's label",
            "code",
        )
    lot = await session.scalar(select(Lot).where(Lot.number == parsed.lot_number))
    if lot is None:
        raise DomainError.one(
            ErrorCode.UNKNOWN_BARCODE, f"no lot {parsed.lot_number!r} is known here", "code"
        )
    material = await session.get(Material, lot.material_id)
    assert material is not None  # a foreign key
    if parsed.gtin and parsed.gtin != material.gtin:
        raise DomainError.one(
            ErrorCode.WRONG_MATERIAL,
            f"the code's GTIN {parsed.gtin} is not that of lot {lot.number}'s "
            f"material {material.code}",
            "code",
        )
    if lot.expires_at is not None and at >= lot.expires_at:
        raise DomainError.one(
            ErrorCode.LOT_EXPIRED,
            f"lot {lot.number} expired on {lot.expires_at:%Y-%m-%d %H:%M} UTC",
            "code",
        )
    status = await _status_at(session, lot, at)
    if status is not LotStatus.AVAILABLE:
        raise DomainError.one(
            ErrorCode.LOT_UNAVAILABLE,
            f"lot {lot.number} is {lot.status.value}, not AVAILABLE",
            "code",
        )
    components = list(
        await session.scalars(
            select(OrderComponent)
            .where(
                OrderComponent.order_id == order.id, OrderComponent.material_id == lot.material_id
            )
            .order_by(OrderComponent.position)
        )
    )
    if operation_sequence is not None:
        components = [c for c in components if c.operation_sequence in (None, operation_sequence)]
    if not components:
        where = f" for operation {operation_sequence}" if operation_sequence is not None else ""
        raise DomainError.one(
            ErrorCode.WRONG_MATERIAL,
            f"order {order.number} does not use {material.code}{where}",
            "code",
        )
    needed = sum((c.quantity_required - c.quantity_consumed for c in components), Decimal(0))
    component = next(
        (c for c in components if c.quantity_required > c.quantity_consumed), components[0]
    )
    if asked is None:
        if needed <= 0:
            raise DomainError.one(
                ErrorCode.INVALID_INPUT,
                f"order {order.number} has all the {material.code} it needs; "
                "give a quantity to consume more",
                "quantity",
            )
        take = min(needed, lot.quantity)
    else:
        take = asked
    if take > lot.quantity:
        raise DomainError.one(
            ErrorCode.INSUFFICIENT_QUANTITY,
            f"lot {lot.number} holds {lot.quantity} {material.unit}, not {take}",
            "quantity",
        )
    remaining = await _take(session, lot, lot.status, take, now)
    await session.execute(
        update(OrderComponent)
        .where(OrderComponent.id == component.id)
        .values(quantity_consumed=OrderComponent.quantity_consumed + take)
    )
    late = now - at > dt.timedelta(hours=settings.late_entry_hours)
    consumption = Consumption(
        lot_id=lot.id,
        order_id=order.id,
        component_id=component.id,
        operation_sequence=operation_sequence
        if operation_sequence is not None
        else component.operation_sequence,
        quantity=take,
        consumed_at=at,
        recorded_at=now,
        late_entry=late,
        consumed_by_id=uow.actor.user_id,
        consumed_by=uow.actor.name,
        raw_code=code[:512],
    )
    session.add(consumption)
    await session.flush()
    await session.refresh(lot)
    uow.audit(
        "lot.consume",
        "Lot",
        lot.id,
        {
            "order": order.number,
            "material": material.code,
            "quantity": take,
            "remaining": remaining,
            "status": lot.status,
            "scannedAt": at,
            "lateEntry": late,
        },
    )
    _changed(uow, lot)
    uow.publish(orders.CHANNEL, {"id": order.id, "number": order.number})
    return ScanResult(parsed, lot, consumption)


async def _take(
    session: AsyncSession, lot: Lot, status: LotStatus, take: Decimal, now: dt.datetime
) -> Decimal:
    """Takes `take` from the lot in one guarded statement; returns what is left.

    The WHERE clause re-checks status (as read by the scan) and quantity at write time: on
    PostgreSQL a second concurrent UPDATE waits for the first and then sees its result;
    SQLite has one writer. A lot at zero becomes CONSUMED.
    """
    left = Lot.quantity - take
    result = await session.execute(
        update(Lot)
        .where(Lot.id == lot.id, Lot.status == status, Lot.quantity >= take)
        .values(
            quantity=left,
            status=case(
                (left == literal(Decimal(0), Lot.quantity.type), LotStatus.CONSUMED),
                else_=Lot.status,
            ),
            updated_at=now,
        )
        .returning(Lot.quantity)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    if row is None:
        current = await session.scalar(
            select(Lot).where(Lot.id == lot.id).execution_options(populate_existing=True)
        )
        assert current is not None
        if current.status is not status:
            raise DomainError.one(
                ErrorCode.LOT_UNAVAILABLE,
                f"lot {lot.number} is {current.status.value}, not AVAILABLE",
                "code",
            )
        raise DomainError.one(
            ErrorCode.INSUFFICIENT_QUANTITY,
            f"lot {lot.number} holds {current.quantity}, not {take}",
            "quantity",
        )
    remaining: Decimal = row[0]
    return remaining


# ---------------------------------------------------------------- producing


async def produce(
    uow: UnitOfWork,
    *,
    order_number: str,
    quantity: Decimal,
    number: str | None,
    expires_at: dt.datetime | None,
) -> Lot:
    """A new lot of the order's product, AVAILABLE, made from every lot consumed into the order."""
    problems = Problems()
    quantity = validation.positive_quantity(problems, "quantity", quantity)
    expires_at = _aware(problems, "expiresAt", expires_at)
    wanted = validation.code(problems, "number", number) if number and number.strip() else None
    problems.raise_if_any()
    session = uow.session
    order = await orders.get_for_update(session, order_number, "orderNumber")
    if order.status not in RUNNING_ORDER:
        raise DomainError.one(
            ErrorCode.INVALID_TRANSITION,
            f"order {order.number} is {order.status.value}: lots can be produced "
            "only by a RELEASED or IN_PROGRESS order",
            "orderNumber",
        )
    product = await session.get(Material, order.product_id)
    assert product is not None
    now = utcnow()
    if wanted is not None:
        await _unique_number(session, wanted, "number")
        lot_number = wanted
    else:
        lot_number = await _next_number(session, order)
    lot = Lot(
        number=lot_number,
        material_id=product.id,
        quantity=quantity,
        initial_quantity=quantity,
        status=LotStatus.AVAILABLE,
        expires_at=expires_at or _default_expiry(product, now),
        produced_by_order_id=order.id,
        created_by=uow.actor.name,
        created_at=now,
        updated_at=now,
    )
    await _insert(session, lot, "number")
    inputs = (
        await session.execute(
            select(Consumption.lot_id, func.sum(Consumption.quantity))
            .where(Consumption.order_id == order.id)
            .group_by(Consumption.lot_id)
            .order_by(Consumption.lot_id)
        )
    ).all()
    for input_lot_id, used in inputs:
        session.add(
            GenealogyLink(
                input_lot_id=input_lot_id,
                output_lot_id=lot.id,
                order_id=order.id,
                quantity=Decimal(used),
                at=now,
            )
        )
    await session.flush()
    uow.audit(
        "lot.produce",
        "Lot",
        lot.id,
        {
            "number": lot.number,
            "order": order.number,
            "material": product.code,
            "quantity": quantity,
            "expiresAt": lot.expires_at,
            "inputs": [i for i, _ in inputs],
        },
    )
    _changed(uow, lot)
    uow.publish(orders.CHANNEL, {"id": order.id, "number": order.number})
    return lot


async def _next_number(session: AsyncSession, order: ProductionOrder) -> str:
    made = (
        await session.scalar(
            select(func.count()).select_from(Lot).where(Lot.produced_by_order_id == order.id)
        )
        or 0
    )
    n = int(made) + 1
    while True:
        candidate = f"{order.number}-{n:03d}"
        if len(candidate) > validation.CODE_MAX:
            raise DomainError.one(
                ErrorCode.INVALID_INPUT,
                f"order {order.number}'s number is too long to number its lots after it: "
                "give the lot a number",
                "number",
            )
        if await session.scalar(select(Lot.id).where(Lot.number == candidate)) is None:
            return candidate
        n += 1


# ---------------------------------------------------------------- genealogy


@dataclass(frozen=True)
class TraceStep:
    link: GenealogyLink
    depth: int
    input_lot: Lot
    output_lot: Lot


async def trace(
    session: AsyncSession, lot_id: int, backward: bool, max_depth: int | None
) -> list[TraceStep]:
    """Every genealogy link reachable from the lot, each once with its smallest depth.

    Backward answers "what went into it" (input side); forward, "where did it go" (the recall
    question). One recursive query on both engines; UNION (not UNION ALL) and the depth bound
    make it terminate even on a corrupted cycle.
    """
    limit = min(max_depth if max_depth is not None else TRACE_DEPTH_LIMIT, TRACE_DEPTH_LIMIT)
    if limit < 1:
        return []
    g = GenealogyLink.__table__
    near, far = (
        (g.c.output_lot_id, g.c.input_lot_id) if backward else (g.c.input_lot_id, g.c.output_lot_id)
    )
    start = select(g.c.id.label("link_id"), far.label("lot_id"), literal(1).label("depth")).where(
        near == lot_id
    )
    walk = start.cte("walk", recursive=True)
    step = (
        select(g.c.id, far, walk.c.depth + 1)
        .join(walk, near == walk.c.lot_id)
        .where(walk.c.depth < limit)
    )
    walk = walk.union(step)
    depths = (
        select(walk.c.link_id, func.min(walk.c.depth).label("depth"))
        .group_by(walk.c.link_id)
        .subquery()
    )
    # The links come with both their lots in the same statement: a trace of a few hundred
    # links is then one round trip, and the GraphQL layer has nothing left to fetch.
    inputs, outputs = aliased(Lot), aliased(Lot)
    rows = (
        await session.execute(
            select(GenealogyLink, depths.c.depth, inputs, outputs)
            .join(depths, GenealogyLink.id == depths.c.link_id)
            .join(inputs, inputs.id == GenealogyLink.input_lot_id)
            .join(outputs, outputs.id == GenealogyLink.output_lot_id)
            .order_by(depths.c.depth, GenealogyLink.id)
        )
    ).all()
    return [TraceStep(link, int(depth), lot_in, lot_out) for link, depth, lot_in, lot_out in rows]


# ---------------------------------------------------------------- expiry


async def expire_due(uow: UnitOfWork, now: dt.datetime | None = None) -> list[Lot]:
    """Marks AVAILABLE and QUARANTINE lots past their expiry EXPIRED.

    Lots ON_HOLD keep that status (a deviation decides them) but can no longer be scanned.
    """
    now = now or utcnow()
    due = list(
        await uow.session.scalars(
            select(Lot)
            .where(
                Lot.expires_at <= now, Lot.status.in_([LotStatus.AVAILABLE, LotStatus.QUARANTINE])
            )
            .order_by(Lot.id)
            .with_for_update(skip_locked=True)
        )
    )
    for lot in due:
        before = lot.status
        lot.status = LotStatus.EXPIRED
        lot.updated_at = now
        uow.audit(
            EXPIRE_ACTION,
            "Lot",
            lot.id,
            {"status": [before.value, LotStatus.EXPIRED.value], "expiresAt": lot.expires_at},
        )
        _changed(uow, lot)
    return due


# ---------------------------------------------------------------- reads


async def by_number(session: AsyncSession, number: str) -> Lot | None:
    return await session.scalar(select(Lot).where(Lot.number == number.strip()))


def lots_query(statuses: Sequence[LotStatus] | None, material_code: str | None) -> Select[Lot]:
    stmt = select(Lot)
    if statuses:
        stmt = stmt.where(Lot.status.in_(list(statuses)))
    if material_code is not None:
        stmt = stmt.where(
            Lot.material_id.in_(select(Material.id).where(Material.code == material_code.strip()))
        )
    return stmt
