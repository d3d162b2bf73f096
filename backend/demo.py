"""The demo plant: a small tablet line with its master data, orders and users."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from backend.auth import service as auth_service
from backend.auth.models import User
from backend.auth.service import principal_of
from backend.catalog import service as catalog
from backend.catalog.models import CharacteristicKind, Material, MaterialKind
from backend.db import Database, utcnow
from backend.lots import service as lots
from backend.lots.models import Lot, LotStatus
from backend.orders import service as orders
from backend.orders.models import OrderStatus, ProductionOrder
from backend.principal import SYSTEM, Principal, Role
from backend.quality import service as quality
from backend.quality.models import Deviation, DeviationSeverity, DeviationStatus, Disposition
from backend.settings import Settings
from backend.uow import transaction


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    password: str
    roles: tuple[Role, ...]


DEMO_USERS = (
    DemoUser("admin", "Ada Admin", "admin-demo-pass", (Role.ADMIN,)),
    DemoUser("operator", "Otto Operator", "operator-demo-pass", (Role.OPERATOR,)),
    DemoUser("supervisor", "Sue Supervisor", "supervisor-demo-pass", (Role.SUPERVISOR,)),
    DemoUser("quality", "Quinn Quality", "quality-demo-pass", (Role.QUALITY,)),
    DemoUser("erp", "ERP interface", "erp-demo-pass", (Role.ERP,)),
)

# A made-up GS1 company prefix; the check digits are computed.
_PREFIX = "0950110153"


def demo_gtin(item: int) -> str:
    body = f"{_PREFIX}{item:03d}"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def _char(
    name: str, low: float | None, high: float | None, unit: str | None, nominal: float | None = None
) -> catalog.CharacteristicSpec:
    kind = (
        CharacteristicKind.NUMERIC
        if (low is not None or high is not None)
        else CharacteristicKind.ATTRIBUTE
    )
    return catalog.CharacteristicSpec(name, kind, unit, nominal, low, high)


MATERIALS = [
    catalog.MaterialSpec(
        "PARA-API",
        "Paracetamol API",
        MaterialKind.RAW,
        "kg",
        True,
        demo_gtin(1),
        730,
        [_char("Assay", 98.0, 102.0, "%", 100.0), _char("Appearance", None, None, None)],
    ),
    catalog.MaterialSpec(
        "LACTOSE",
        "Lactose monohydrate",
        MaterialKind.RAW,
        "kg",
        True,
        demo_gtin(2),
        1095,
        [_char("Moisture", 4.5, 5.5, "%", 5.0)],
    ),
    catalog.MaterialSpec(
        "MG-STEARATE", "Magnesium stearate", MaterialKind.RAW, "kg", True, demo_gtin(3), 1095
    ),
    catalog.MaterialSpec(
        "BLEND-500",
        "Paracetamol blend 500",
        MaterialKind.INTERMEDIATE,
        "kg",
        True,
        demo_gtin(4),
        90,
    ),
    catalog.MaterialSpec(
        "TAB-500",
        "Paracetamol 500 mg tablets",
        MaterialKind.FINISHED,
        "pcs",
        True,
        demo_gtin(5),
        1095,
    ),
    catalog.MaterialSpec(
        "FOIL-ALU", "Aluminium blister foil", MaterialKind.PACKAGING, "m", True, demo_gtin(6)
    ),
]

WORK_CENTERS = [
    catalog.WorkCenterSpec(
        "WC-BLEND", "Blending", [catalog.EquipmentSpec("BLENDER-01", "V-blender 1", 3.0)]
    ),
    catalog.WorkCenterSpec(
        "WC-PRESS", "Tableting", [catalog.EquipmentSpec("PRESS-01", "Tablet press 1", 0.05)]
    ),
    catalog.WorkCenterSpec("WC-PACK", "Packaging", []),
]


def _orders(now: dt.datetime) -> list[tuple[orders.OrderSpec, OrderStatus]]:
    blend = orders.OrderSpec(
        external_id="SAP-4711",
        number="PO-1001",
        product_code="BLEND-500",
        quantity=Decimal("120"),
        due_at=now + dt.timedelta(days=1),
        priority=10,
        work_center_code="WC-BLEND",
        components=[
            orders.ComponentSpec("PARA-API", Decimal("100"), 10),
            orders.ComponentSpec("LACTOSE", Decimal("19"), 10),
            orders.ComponentSpec("MG-STEARATE", Decimal("1"), 20),
        ],
        operations=[
            orders.OperationSpec(
                10,
                "Charge and blend",
                "WC-BLEND",
                "Scan each lot into the blender. Blend 15 minutes at 12 rpm.",
            ),
            orders.OperationSpec(
                20,
                "Lubricate",
                "WC-BLEND",
                "Add magnesium stearate; blend 3 minutes.",
                [_char("Blend uniformity RSD", None, 5.0, "%")],
            ),
        ],
    )
    press = orders.OrderSpec(
        external_id="SAP-4712",
        number="PO-1002",
        product_code="TAB-500",
        quantity=Decimal("200000"),
        due_at=now + dt.timedelta(days=2),
        priority=5,
        work_center_code="WC-PRESS",
        components=[orders.ComponentSpec("BLEND-500", Decimal("120"), 10)],
        operations=[
            orders.OperationSpec(
                10,
                "Compress",
                "WC-PRESS",
                "Set press to 500 mg target weight.",
                [
                    _char("Tablet weight", 490.0, 510.0, "mg", 500.0),
                    _char("Hardness", 60.0, 120.0, "N"),
                ],
            ),
            orders.OperationSpec(20, "Deduster and metal check", "WC-PRESS"),
        ],
    )
    pack = orders.OrderSpec(
        external_id="SAP-4713",
        number="PO-1003",
        product_code="TAB-500",
        quantity=Decimal("50000"),
        due_at=now + dt.timedelta(days=5),
        work_center_code="WC-PACK",
        components=[orders.ComponentSpec("FOIL-ALU", Decimal("800"))],
        operations=[orders.OperationSpec(10, "Blister and carton", "WC-PACK")],
    )
    return [
        (blend, OrderStatus.RELEASED),
        (press, OrderStatus.RELEASED),
        (pack, OrderStatus.PLANNED),
    ]


@dataclass(frozen=True)
class DemoLot:
    number: str
    material_code: str
    quantity: Decimal
    expires_in_days: int
    supplier_lot: str | None = None


DEMO_LOTS = (
    DemoLot("API-2611-01", "PARA-API", Decimal("60"), 700, "SUP-A-7781"),
    DemoLot("API-2611-02", "PARA-API", Decimal("60"), 700, "SUP-A-7782"),
    DemoLot("LAC-2611-01", "LACTOSE", Decimal("25"), 1000, "LAC-99120"),
    DemoLot("MGS-2610-01", "MG-STEARATE", Decimal("5"), 3, "MGS-4410"),  # expires soon
    DemoLot("BLD-2611-01", "BLEND-500", Decimal("80"), 80),
    DemoLot("BLD-2611-02", "BLEND-500", Decimal("60"), 80),
    DemoLot("FOIL-2611-01", "FOIL-ALU", Decimal("2000"), 900),
)


@dataclass(frozen=True)
class DemoCode:
    lot: str
    status: str
    printable: str  # with parentheses: what a person can type
    raw: str  # element strings as a scanner sends them (GS before a following field)


def gs1_codes(lots: list[Lot], gtins: dict[int, str | None]) -> list[DemoCode]:
    """GS1 element strings for the demo lots' labels: GTIN, expiry and lot number."""
    codes = []
    for lot in lots:
        gtin = gtins.get(lot.material_id)
        if not gtin or lot.expires_at is None:
            continue
        expiry = f"{lot.expires_at:%y%m%d}"
        codes.append(
            DemoCode(
                lot.number,
                lot.status.value,
                f"(01){gtin}(17){expiry}(10){lot.number}",
                f"01{gtin}17{expiry}10{lot.number}",
            )
        )
    return codes


async def seed(db: Database, settings: Settings) -> list[DemoUser]:
    """Creates the demo plant; running it again changes nothing. Returns the demo logins."""
    async with db.read() as session:
        existing = set(await session.scalars(select(User.username)))
    async with transaction(db, SYSTEM) as uow:
        for user in DEMO_USERS:
            if user.username not in existing:
                await auth_service.create_user(
                    uow,
                    settings,
                    username=user.username,
                    display_name=user.display_name,
                    password=user.password,
                    roles=list(user.roles),
                )
    erp = Principal(name="erp", roles=frozenset({Role.ERP}))
    async with transaction(db, erp) as uow:
        await catalog.upsert_materials(uow, MATERIALS)
        await catalog.upsert_work_centers(uow, WORK_CENTERS)
    async with db.read() as session:
        known = set(await session.scalars(select(ProductionOrder.external_id)))
    for spec, status in _orders(utcnow()):
        if spec.external_id in known:
            continue
        async with transaction(db, erp) as uow:
            order = await orders.upsert(uow, spec)
            if status is OrderStatus.RELEASED and order.status is OrderStatus.PLANNED:
                await orders.release(uow, order.number)
    async with db.read() as session:
        known_lots = set(await session.scalars(select(Lot.number)))
    stores = Principal(name="stores", roles=frozenset({Role.OPERATOR}))
    now = utcnow()
    for demo_lot in DEMO_LOTS:
        if demo_lot.number in known_lots:
            continue
        async with transaction(db, stores) as uow:
            await lots.receive(
                uow,
                number=demo_lot.number,
                material_code=demo_lot.material_code,
                quantity=demo_lot.quantity,
                expires_at=now + dt.timedelta(days=demo_lot.expires_in_days),
                supplier_lot=demo_lot.supplier_lot,
            )
    await _seed_open_deviation(db)
    await _seed_completed_order(db, settings)
    return list(DEMO_USERS)


# ---------------------------------------------------------------- quality: the inbox and a batch

OPEN_DEVIATION_TITLE = "Torn bag on receipt"
OPEN_DEVIATION_LOT = "LAC-2611-01"
BATCH_ORDER = "PO-1004"
_BATCH_EXTERNAL_ID = "SAP-4714"
# The pilot batch's own lots, so the lots printed for people to scan stay as they are.
_BATCH_LOTS = (
    DemoLot("API-2610-07", "PARA-API", Decimal("8"), 700, "SUP-A-7650"),
    DemoLot("LAC-2610-04", "LACTOSE", Decimal("1.9"), 1000, "LAC-98877"),
    DemoLot("MGS-2610-02", "MG-STEARATE", Decimal("0.1"), 900, "MGS-4398"),
)


def _password(username: str) -> str:
    return next(u.password for u in DEMO_USERS if u.username == username)


async def _people(db: Database, *usernames: str) -> dict[str, Principal]:
    """The demo users as principals, so their work is recorded under their own names."""
    async with db.read() as session:
        users = await session.scalars(select(User).where(User.username.in_(usernames)))
        return {user.username: principal_of(user) for user in users}


async def _seed_open_deviation(db: Database) -> None:
    """An OPEN deviation raised from the floor, waiting in the supervisors' inbox."""
    async with db.read() as session:
        if await session.scalar(
            select(Deviation.id).where(Deviation.title == OPEN_DEVIATION_TITLE).limit(1)
        ):
            return
        lot = await lots.by_number(session, OPEN_DEVIATION_LOT)
    if lot is None or lot.status not in (LotStatus.QUARANTINE, LotStatus.AVAILABLE):
        return  # the lot has moved on (consumed, rejected): no story to tell
    operator = (await _people(db, "operator"))["operator"]
    async with transaction(db, operator) as uow:
        await quality.raise_deviation(
            uow,
            title=OPEN_DEVIATION_TITLE,
            description=(
                f"One bag of lot {OPEN_DEVIATION_LOT} arrived torn; powder spilled on the "
                "pallet. Bag set aside and taped; the other bags look intact."
            ),
            severity=DeviationSeverity.MINOR,
            lot_numbers=[OPEN_DEVIATION_LOT],
            order_number=None,
        )


def _batch_order(now: dt.datetime) -> orders.OrderSpec:
    return orders.OrderSpec(
        external_id=_BATCH_EXTERNAL_ID,
        number=BATCH_ORDER,
        product_code="BLEND-500",
        quantity=Decimal("10"),
        due_at=now,
        priority=1,
        work_center_code="WC-BLEND",
        components=[
            orders.ComponentSpec("PARA-API", Decimal("8"), 10),
            orders.ComponentSpec("LACTOSE", Decimal("1.9"), 10),
            orders.ComponentSpec("MG-STEARATE", Decimal("0.1"), 20),
        ],
        operations=[
            orders.OperationSpec(10, "Charge and blend", "WC-BLEND", "Pilot batch: 10 kg."),
            orders.OperationSpec(
                20,
                "Lubricate",
                "WC-BLEND",
                "Add magnesium stearate; blend 3 minutes.",
                [_char("Blend uniformity RSD", None, 5.0, "%")],
            ),
        ],
    )


async def _seed_completed_order(db: Database, settings: Settings) -> None:
    """PO-1004, a pilot blend made start to finish, with a batch record worth reading: two
    incoming inspections (one moisture result out of spec, accepted by a signed USE_AS_IS
    deviation), three lots scanned in, an in-process inspection, scrap with its reason, and
    the lot produced. Seeded once: a PO-1004 already there is left as it is."""
    async with db.read() as session:
        if await orders.by_number(session, BATCH_ORDER) is not None:
            return
    people = await _people(db, "operator", "quality")
    operator, quality_lead = people["operator"], people["quality"]
    erp = Principal(name="erp", roles=frozenset({Role.ERP}))
    now = utcnow()
    async with transaction(db, erp) as uow:
        await orders.upsert(uow, _batch_order(now))
        await orders.release(uow, BATCH_ORDER)
    for demo_lot in _BATCH_LOTS:
        async with transaction(db, operator) as uow:
            await lots.receive(
                uow,
                number=demo_lot.number,
                material_code=demo_lot.material_code,
                quantity=demo_lot.quantity,
                expires_at=now + dt.timedelta(days=demo_lot.expires_in_days),
                supplier_lot=demo_lot.supplier_lot,
            )

    async def inspect(
        results: list[quality.ResultSpec], lot: str | None = None, sequence: int | None = None
    ) -> str | None:
        """Inspects a lot or an operation of PO-1004; the number of a deviation it raised."""
        async with transaction(db, operator) as uow:
            inspection = await quality.start_inspection(
                uow,
                lot_number=lot,
                order_number=BATCH_ORDER if sequence is not None else None,
                operation_sequence=sequence,
            )
        async with transaction(db, operator) as uow:
            _, deviation = await quality.record_results(uow, inspection.number, results)
            return deviation.number if deviation is not None else None

    await inspect(
        [
            quality.ResultSpec("Assay", 99.6, None, None),
            quality.ResultSpec("Appearance", None, True, "White crystalline powder"),
        ],
        lot="API-2610-07",
    )
    raised = await inspect(
        [quality.ResultSpec("Moisture", 5.8, None, "Karl Fischer, two determinations")],
        lot="LAC-2610-04",
    )
    if raised is not None:
        async with transaction(db, quality_lead) as uow:
            await quality.decide(
                uow,
                settings,
                number=raised,
                approve=True,
                disposition=Disposition.USE_AS_IS,
                signature=quality.SignatureSpec(
                    password=_password("quality"),
                    meaning="Approved: use as is",
                    reason=(
                        "Moisture 5.8 % is within the validated range of the blend process "
                        "(up to 6.5 %); lactose is 19 % of the blend."
                    ),
                ),
            )

    async def scan(lot: str, sequence: int) -> None:
        async with transaction(db, operator) as uow:
            await lots.scan(
                uow,
                settings,
                code=lot,
                order_number=BATCH_ORDER,
                operation_sequence=sequence,
                quantity=None,
                scanned_at=None,
            )

    async with transaction(db, operator) as uow:
        await orders.start_operation(uow, BATCH_ORDER, 10)
    await scan("API-2610-07", 10)
    await scan("LAC-2610-04", 10)
    async with transaction(db, operator) as uow:
        await orders.complete_operation(uow, BATCH_ORDER, 10, Decimal("9.9"), Decimal("0"), None)
    async with transaction(db, operator) as uow:
        await orders.start_operation(uow, BATCH_ORDER, 20)
    await scan("MGS-2610-02", 20)
    await inspect([quality.ResultSpec("Blend uniformity RSD", 2.1, None, None)], sequence=20)
    async with transaction(db, operator) as uow:
        await lots.produce(
            uow, order_number=BATCH_ORDER, quantity=Decimal("9.8"), number=None, expires_at=None
        )
    async with transaction(db, operator) as uow:
        await orders.complete_operation(
            uow,
            BATCH_ORDER,
            20,
            Decimal("9.8"),
            Decimal("0.2"),
            "Blend left in the discharge chute",
        )


@dataclass(frozen=True)
class DemoQuality:
    """What `mes demo` points people to: the open deviation and a batch record to read."""

    open_deviation: str | None
    batch_order: str | None
    reviewer_token: str | None  # a token of the demo quality user, for opening the record


async def demo_quality(db: Database, settings: Settings) -> DemoQuality:
    async with db.read() as session:
        deviation = await session.scalar(
            select(Deviation.number)
            .where(
                Deviation.title == OPEN_DEVIATION_TITLE, Deviation.status == DeviationStatus.OPEN
            )
            .order_by(Deviation.id)
            .limit(1)
        )
        order = await orders.by_number(session, BATCH_ORDER)
        reviewer = await session.scalar(select(User).where(User.username == "quality"))
    return DemoQuality(
        open_deviation=deviation,
        batch_order=order.number
        if order is not None and order.status is OrderStatus.COMPLETED
        else None,
        reviewer_token=auth_service.issue_user_token(settings, reviewer) if reviewer else None,
    )


async def demo_codes(db: Database) -> list[DemoCode]:
    """The GS1 codes of the demo lots, to type or to print as labels."""
    async with db.read() as session:
        rows = list(
            await session.scalars(
                select(Lot).where(Lot.number.in_([d.number for d in DEMO_LOTS])).order_by(Lot.id)
            )
        )
        gtins = dict((await session.execute(select(Material.id, Material.gtin))).all())
    return gs1_codes(rows, gtins)
