from __future__ import annotations

import datetime as dt
import enum
from collections.abc import AsyncGenerator
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from backend.auth.schema import UserType
from backend.catalog.schema import MaterialType
from backend.errors import DomainError, ErrorCode
from backend.gql import (
    Connection,
    Info,
    MutationError,
    Node,
    NodeKind,
    Replay,
    paginate,
    plain_field,
    public_error,
    register_node,
    run_replayable,
    still_signed_in,
    to_global_id,
)
from backend.lots import service
from backend.lots.barcode import ParsedCode
from backend.lots.models import Consumption, Lot, LotStatus
from backend.orders.schema import ProductionOrderType, order_by_pk
from backend.replay.service import Subject
from backend.uow import UnitOfWork

if TYPE_CHECKING:
    from backend.quality.schema import DeviationType, InspectionType

# Quality builds on lots; these fields point at its types lazily.
InspectionRef = Annotated["InspectionType", strawberry.lazy("backend.quality.schema")]
DeviationRef = Annotated["DeviationType", strawberry.lazy("backend.quality.schema")]

LotStatusType = strawberry.enum(LotStatus, name="LotStatus")


@strawberry.enum
class TraceDirection(enum.Enum):
    BACKWARD = strawberry.enum_value(
        "BACKWARD",
        description=("Where it came from: the lots that went into this one, and theirs."),
    )
    FORWARD = strawberry.enum_value(
        "FORWARD", description=("Where it went: the lots made from this one, and from those.")
    )


async def _lot(info: Info, pk: int) -> LotType:
    row = await info.context.loaders.lot.load(pk)
    assert row is not None  # a foreign key
    return LotType.from_row(row)


@strawberry.type(name="Lot")
class LotType(Node):
    pk: strawberry.Private[int]
    material_pk: strawberry.Private[int]
    order_pk: strawberry.Private[int | None]
    number: str
    quantity: Decimal = strawberry.field(description="What is left of the lot.")
    status: LotStatus
    expires_at: dt.datetime | None
    supplier_lot: str | None
    created_at: dt.datetime

    @plain_field()
    async def material(self, info: Info) -> MaterialType:
        row = await info.context.loaders.material.load(self.material_pk)
        assert row is not None  # a foreign key
        return MaterialType.from_row(row)

    @plain_field()
    async def produced_by(self, info: Info) -> ProductionOrderType | None:
        return await order_by_pk(info, self.order_pk)

    @plain_field()
    async def inspections(self, info: Info) -> list[InspectionRef]:
        from backend.quality.schema import InspectionType

        rows = await info.context.loaders.inspections_of_lot.load(self.pk)
        return [InspectionType.from_row(r) for r in rows]

    @plain_field()
    async def deviations(self, info: Info) -> list[DeviationRef]:
        from backend.quality.schema import DeviationType

        rows = await info.context.loaders.deviations_of_lot.load(self.pk)
        return [DeviationType.from_row(r) for r in rows]

    @strawberry.field
    async def trace(
        self, info: Info, direction: TraceDirection, max_depth: int | None = None
    ) -> list[GenealogyLinkType]:
        """The genealogy from this lot: each link once, with its depth from this lot."""
        async with info.context.db.read() as session:
            steps = await service.trace(
                session, self.pk, direction is TraceDirection.BACKWARD, max_depth
            )
        return [GenealogyLinkType.from_step(s) for s in steps]

    @classmethod
    def from_row(cls, row: Lot) -> LotType:
        return cls(
            id=to_global_id("Lot", row.id),
            pk=row.id,
            material_pk=row.material_id,
            order_pk=row.produced_by_order_id,
            number=row.number,
            quantity=row.quantity,
            status=row.status,
            expires_at=row.expires_at,
            supplier_lot=row.supplier_lot,
            created_at=row.created_at,
        )


register_node("Lot", NodeKind(lambda loaders: loaders.lot, LotType.from_row))


@strawberry.type(name="GenealogyLink")
class GenealogyLinkType:
    input_lot: LotType
    output_lot: LotType
    order_pk: strawberry.Private[int | None]
    quantity: Decimal
    depth: int = strawberry.field(
        description=("1 for a direct link to the lot traced from, 2 for the next level, and so on.")
    )
    at: dt.datetime

    @plain_field()
    async def order(self, info: Info) -> ProductionOrderType | None:
        return await order_by_pk(info, self.order_pk)

    @classmethod
    def from_step(cls, step: service.TraceStep) -> GenealogyLinkType:
        row = step.link
        return cls(
            input_lot=LotType.from_row(step.input_lot),
            output_lot=LotType.from_row(step.output_lot),
            order_pk=row.order_id,
            quantity=row.quantity,
            depth=step.depth,
            at=row.at,
        )


@strawberry.type(name="Consumption")
class ConsumptionType:
    lot_pk: strawberry.Private[int]
    user_pk: strawberry.Private[int | None]
    quantity: Decimal
    consumed_at: dt.datetime

    @plain_field()
    async def lot(self, info: Info) -> LotType:
        return await _lot(info, self.lot_pk)

    @plain_field()
    async def consumed_by(self, info: Info) -> UserType | None:
        if self.user_pk is None:
            return None
        row = await info.context.loaders.user.load(self.user_pk)
        return UserType.from_row(row) if row else None

    @classmethod
    def from_row(cls, row: Consumption) -> ConsumptionType:
        return cls(
            lot_pk=row.lot_id,
            user_pk=row.consumed_by_id,
            quantity=row.quantity,
            consumed_at=row.consumed_at,
        )


@strawberry.type(name="ParsedBarcode")
class ParsedBarcodeType:
    raw: str
    gtin: str | None
    lot_number: str | None
    expires_at: dt.datetime | None
    serial: str | None
    quantity: Decimal | None

    @classmethod
    def of(cls, parsed: ParsedCode) -> ParsedBarcodeType:
        return cls(
            raw=parsed.raw,
            gtin=parsed.gtin,
            lot_number=parsed.lot_number,
            expires_at=parsed.expires_at,
            serial=parsed.serial,
            quantity=parsed.quantity,
        )


# ---------------------------------------------------------------- mutations


@strawberry.input
class ReceiveLotInput:
    client_mutation_id: strawberry.ID
    number: str
    material_code: str
    quantity: Decimal
    expires_at: dt.datetime | None = None
    supplier_lot: str | None = None


@strawberry.input
class ScanLotInput:
    client_mutation_id: strawberry.ID
    code: str = strawberry.field(
        description="What the scanner read: a lot number or GS1 element strings."
    )
    order_number: str
    operation_sequence: int | None = None
    quantity: Decimal | None = strawberry.field(
        default=None,
        description=(
            "Left out: as much as the order still needs of that material, "
            "at most what the lot holds."
        ),
    )
    scanned_at: dt.datetime | None = strawberry.field(
        default=None,
        description=(
            "When the operator scanned, which can be long before an offline device syncs."
        ),
    )


@strawberry.input
class ProduceLotInput:
    client_mutation_id: strawberry.ID
    order_number: str
    quantity: Decimal
    number: str | None = strawberry.field(
        default=None, description="Left out: the server numbers the lot."
    )
    expires_at: dt.datetime | None = None


@strawberry.type
class LotPayload:
    lot: LotType | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class ScanPayload:
    parsed: ParsedBarcodeType | None = None
    lot: LotType | None = None
    consumption: ConsumptionType | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


def _request(data: object) -> dict[str, Any]:
    fields = dict(vars(data))
    fields.pop("client_mutation_id", None)
    return fields


async def _present_lot(info: Info, refs: dict[str, Any]) -> dict[str, Any]:
    async with info.context.db.read() as session:
        lot = await session.get(Lot, refs["lot"])
    return {"lot": LotType.from_row(lot) if lot else None}


@strawberry.type
class LotsQuery:
    @strawberry.field
    async def lot(self, info: Info, number: str) -> LotType | None:
        async with info.context.db.read() as session:
            row = await service.by_number(session, number)
        return LotType.from_row(row) if row else None

    @strawberry.field
    async def lots(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: list[LotStatus] | None = None,
        material: str | None = None,
    ) -> Connection[LotType]:
        """Lots, oldest first; filter by status and material code."""
        return await paginate(
            info, service.lots_query(status, material), Lot.id, first, after, LotType.from_row
        )

    @strawberry.field
    def parse_barcode(self, info: Info, code: str) -> ParsedBarcodeType:
        """Reads a scanned code (a plain lot number, or GS1 element strings with or without parentheses and FNC1/GS separators) without changing anything."""  # noqa: E501
        try:
            return ParsedBarcodeType.of(service.parse(info.context.settings, code))
        except DomainError as error:
            raise public_error(str(error), ErrorCode.UNKNOWN_BARCODE.value) from error


@strawberry.type
class LotsMutation:
    @strawberry.mutation
    async def receive_lot(self, info: Info, input: ReceiveLotInput) -> LotPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            lot = await service.receive(
                uow,
                number=input.number,
                material_code=input.material_code,
                quantity=input.quantity,
                expires_at=input.expires_at,
                supplier_lot=input.supplier_lot,
            )
            return {"lot": lot.id}

        replay = Replay(
            input.client_mutation_id, _request(input), Subject("Lot", input.number.strip())
        )
        return await run_replayable(
            info, LotPayload, replay, work, lambda refs: _present_lot(info, refs)
        )

    @strawberry.mutation
    async def scan_lot(self, info: Info, input: ScanLotInput) -> ScanPayload:
        settings = info.context.settings

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            result = await service.scan(
                uow,
                settings,
                code=input.code,
                order_number=input.order_number,
                operation_sequence=input.operation_sequence,
                quantity=input.quantity,
                scanned_at=input.scanned_at,
            )
            parsed_once.append(result.parsed)
            return {"lot": result.lot.id, "consumption": result.consumption.id}

        parsed_once: list[ParsedCode] = []

        async def present(refs: dict[str, Any]) -> dict[str, Any]:
            async with info.context.db.read() as session:
                lot = await session.get(Lot, refs["lot"])
                consumption = await session.get(Consumption, refs["consumption"])
            # A replay did not parse the code in this request: parse it now.
            parsed = parsed_once[0] if parsed_once else service.parse(settings, input.code)
            return {
                "parsed": ParsedBarcodeType.of(parsed),
                "lot": LotType.from_row(lot) if lot else None,
                "consumption": ConsumptionType.from_row(consumption) if consumption else None,
            }

        replay = Replay(
            input.client_mutation_id,
            _request(input),
            Subject("ProductionOrder", input.order_number.strip()),
        )
        return await run_replayable(info, ScanPayload, replay, work, present)

    @strawberry.mutation
    async def produce_lot(self, info: Info, input: ProduceLotInput) -> LotPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            lot = await service.produce(
                uow,
                order_number=input.order_number,
                quantity=input.quantity,
                number=input.number,
                expires_at=input.expires_at,
            )
            return {"lot": lot.id}

        replay = Replay(
            input.client_mutation_id,
            _request(input),
            Subject("ProductionOrder", input.order_number.strip()),
        )
        return await run_replayable(
            info, LotPayload, replay, work, lambda refs: _present_lot(info, refs)
        )


@strawberry.type
class LotsSubscription:
    @strawberry.subscription
    async def lot_changed(
        self, info: Info, number: str | None = None
    ) -> AsyncGenerator[LotType, None]:
        """Each committed change of a lot (or of the one with `number`), as committed."""
        wanted = number.strip() if number else None
        async with info.context.services.broadcast.subscribe(service.CHANNEL) as events:
            async for event in events:
                if wanted is not None and event.get("number") != wanted:
                    continue
                async with info.context.db.read() as session:
                    row = await session.get(Lot, event["id"])
                if row is not None:
                    await still_signed_in(info)
                    info.context.renew_loaders()
                    yield LotType.from_row(row)
