from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from backend.auth.schema import UserType, user_by_pk
from backend.catalog.schema import CharacteristicType
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
    request_of,
    run_replayable,
    still_signed_in,
    to_global_id,
)
from backend.orders.schema import OrderOperationType, ProductionOrderType, order_by_pk
from backend.quality import service
from backend.quality.models import (
    Deviation,
    DeviationSeverity,
    DeviationSource,
    DeviationStatus,
    Disposition,
    Inspection,
    InspectionResult,
    InspectionStatus,
    Signature,
)
from backend.replay.service import Subject
from backend.uow import UnitOfWork

if TYPE_CHECKING:
    from backend.lots.schema import LotType

LotRef = Annotated["LotType", strawberry.lazy("backend.lots.schema")]

InspectionStatusType = strawberry.enum(InspectionStatus, name="InspectionStatus")
DeviationSeverityType = strawberry.enum(DeviationSeverity, name="DeviationSeverity")
DeviationStatusType = strawberry.enum(DeviationStatus, name="DeviationStatus")
DeviationSourceType = strawberry.enum(DeviationSource, name="DeviationSource")
DispositionType = strawberry.enum(Disposition, name="Disposition")


async def _lot(info: Info, pk: int | None) -> LotType | None:
    from backend.lots.schema import LotType

    if pk is None:
        return None
    row = await info.context.loaders.lot.load(pk)
    return LotType.from_row(row) if row else None


@strawberry.type(name="InspectionResult")
class InspectionResultType:
    characteristic_pk: strawberry.Private[int]
    user_pk: strawberry.Private[int | None]
    user_name: strawberry.Private[str]
    value: float | None
    passed: bool
    note: str | None
    recorded_at: dt.datetime

    @plain_field()
    async def characteristic(self, info: Info) -> CharacteristicType:
        row = await info.context.loaders.characteristic.load(self.characteristic_pk)
        assert row is not None  # a foreign key
        return CharacteristicType.from_row(row)

    @plain_field()
    async def recorded_by(self, info: Info) -> UserType:
        user = await user_by_pk(info, self.user_pk)
        # Results recorded with an API token name the token, not a person.
        return user or UserType(
            id=to_global_id("User", 0),
            username=self.user_name,
            display_name=self.user_name,
            roles=[],
        )

    @classmethod
    def from_row(cls, row: InspectionResult) -> InspectionResultType:
        return cls(
            characteristic_pk=row.characteristic_id,
            user_pk=row.recorded_by_id,
            user_name=row.recorded_by,
            value=row.value,
            passed=row.passed,
            note=row.note,
            recorded_at=row.recorded_at,
        )


@strawberry.type(name="Inspection")
class InspectionType(Node):
    pk: strawberry.Private[int]
    lot_pk: strawberry.Private[int | None]
    order_pk: strawberry.Private[int | None]
    operation_pk: strawberry.Private[int | None]
    number: str
    status: InspectionStatus
    created_at: dt.datetime
    completed_at: dt.datetime | None

    @plain_field()
    async def lot(self, info: Info) -> LotRef | None:
        return await _lot(info, self.lot_pk)

    @plain_field()
    async def order(self, info: Info) -> ProductionOrderType | None:
        return await order_by_pk(info, self.order_pk)

    @plain_field()
    async def operation(self, info: Info) -> OrderOperationType | None:
        if self.operation_pk is None:
            return None
        row = await info.context.loaders.operation.load(self.operation_pk)
        return OrderOperationType.from_row(row) if row else None

    @plain_field()
    async def characteristics(self, info: Info) -> list[CharacteristicType]:
        loaders = info.context.loaders
        if self.operation_pk is not None:
            rows = await loaders.characteristics_of_operation.load(self.operation_pk)
        else:
            assert self.lot_pk is not None
            lot = await loaders.lot.load(self.lot_pk)
            assert lot is not None
            rows = await loaders.characteristics_of_material.load(lot.material_id)
        return [CharacteristicType.from_row(r) for r in rows]

    @plain_field()
    async def results(self, info: Info) -> list[InspectionResultType]:
        rows = await info.context.loaders.results_of_inspection.load(self.pk)
        return [InspectionResultType.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, row: Inspection) -> InspectionType:
        return cls(
            id=to_global_id("Inspection", row.id),
            pk=row.id,
            lot_pk=row.lot_id,
            order_pk=row.order_id,
            operation_pk=row.operation_id,
            number=row.number,
            status=row.status,
            created_at=row.created_at,
            completed_at=row.completed_at,
        )


@strawberry.type(
    name="Signature",
    description=("An electronic signature: who signed, what the signature means, and when."),
)
class SignatureType:
    signer_pk: strawberry.Private[int]
    meaning: str
    reason: str | None
    signed_at: dt.datetime
    content_hash: str = strawberry.field(
        description=(
            "SHA-256 of the signed content; the decision's audit entry holds the same hash."
        )
    )

    @plain_field()
    async def signer(self, info: Info) -> UserType:
        user = await user_by_pk(info, self.signer_pk)
        assert user is not None  # a foreign key
        return user

    @classmethod
    def from_row(cls, row: Signature) -> SignatureType:
        return cls(
            signer_pk=row.signer_id,
            meaning=row.meaning,
            reason=row.reason,
            signed_at=row.signed_at,
            content_hash=row.content_hash,
        )


@strawberry.type(name="Deviation")
class DeviationType(Node):
    pk: strawberry.Private[int]
    order_pk: strawberry.Private[int | None]
    inspection_pk: strawberry.Private[int | None]
    raiser_pk: strawberry.Private[int | None]
    raiser_name: strawberry.Private[str]
    number: str
    title: str
    description: str | None
    severity: DeviationSeverity
    status: DeviationStatus
    source: DeviationSource
    disposition: Disposition | None
    raised_at: dt.datetime

    @plain_field()
    async def lots(self, info: Info) -> list[LotRef]:
        from backend.lots.schema import LotType

        rows = await info.context.loaders.lots_of_deviation.load(self.pk)
        return [LotType.from_row(r) for r in rows]

    @plain_field()
    async def order(self, info: Info) -> ProductionOrderType | None:
        return await order_by_pk(info, self.order_pk)

    @plain_field()
    async def inspection(self, info: Info) -> InspectionType | None:
        if self.inspection_pk is None:
            return None
        row = await info.context.loaders.inspection.load(self.inspection_pk)
        return InspectionType.from_row(row) if row else None

    @plain_field()
    async def raised_by(self, info: Info) -> UserType:
        user = await user_by_pk(info, self.raiser_pk)
        return user or UserType(
            id=to_global_id("User", 0),
            username=self.raiser_name,
            display_name=self.raiser_name,
            roles=[],
        )

    @plain_field()
    async def signatures(self, info: Info) -> list[SignatureType]:
        rows = await info.context.loaders.signatures_of_deviation.load(self.pk)
        return [SignatureType.from_row(r) for r in rows]

    @classmethod
    def from_row(cls, row: Deviation) -> DeviationType:
        return cls(
            id=to_global_id("Deviation", row.id),
            pk=row.id,
            order_pk=row.order_id,
            inspection_pk=row.inspection_id,
            raiser_pk=row.raised_by_id,
            raiser_name=row.raised_by,
            number=row.number,
            title=row.title,
            description=row.description,
            severity=row.severity,
            status=row.status,
            source=row.source,
            disposition=row.disposition,
            raised_at=row.raised_at,
        )


register_node("Inspection", NodeKind(lambda loaders: loaders.inspection, InspectionType.from_row))
register_node("Deviation", NodeKind(lambda loaders: loaders.deviation, DeviationType.from_row))


# ---------------------------------------------------------------- mutations


@strawberry.input
class StartInspectionInput:
    client_mutation_id: strawberry.ID
    lot_number: str | None = None
    order_number: str | None = None
    operation_sequence: int | None = None


@strawberry.input
class ResultInput:
    characteristic: str = strawberry.field(description="The characteristic's name.")
    value: float | None = None
    passed: bool | None = strawberry.field(
        default=None,
        description=(
            "For ATTRIBUTE characteristics; NUMERIC ones are judged against their limits."
        ),
    )
    note: str | None = None


@strawberry.input
class RecordResultsInput:
    client_mutation_id: strawberry.ID
    inspection_number: str
    results: list[ResultInput]


@strawberry.input
class RaiseDeviationInput:
    client_mutation_id: strawberry.ID
    title: str
    severity: DeviationSeverity
    description: str | None = None
    lot_numbers: list[str] | None = None
    order_number: str | None = None


@strawberry.input
class SignatureInput:
    password: str = strawberry.field(
        description=("The signer's password, asked for again at the moment of signing.")
    )
    meaning: str
    reason: str | None = None


@strawberry.input
class DecideDeviationInput:
    client_mutation_id: strawberry.ID
    number: str
    signature: SignatureInput
    disposition: Disposition | None = None


@strawberry.type
class InspectionPayload:
    inspection: InspectionType | None = None
    deviation: DeviationType | None = strawberry.field(
        default=None, description=("Raised when the inspection failed.")
    )
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class DeviationPayload:
    deviation: DeviationType | None = None
    errors: list[MutationError] = strawberry.field(default_factory=list)


async def _present(info: Info, refs: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    async with info.context.db.read() as session:
        if "inspection" in refs:
            row = await session.get(Inspection, refs["inspection"])
            fields["inspection"] = InspectionType.from_row(row) if row else None
        if refs.get("deviation") is not None:
            deviation = await session.get(Deviation, refs["deviation"])
            fields["deviation"] = DeviationType.from_row(deviation) if deviation else None
    return fields


def _without_password(input: DecideDeviationInput) -> dict[str, Any]:
    # The password never goes into the stored request fingerprint.
    request = request_of(input)
    request["signature"].pop("password", None)
    return request


@strawberry.type
class QualityQuery:
    @strawberry.field
    async def inspection(self, info: Info, number: str) -> InspectionType | None:
        async with info.context.db.read() as session:
            row = await service.inspection_by_number(session, number)
        return InspectionType.from_row(row) if row else None

    @strawberry.field
    async def inspections(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: list[InspectionStatus] | None = None,
    ) -> Connection[InspectionType]:
        return await paginate(
            info,
            service.inspections_query(status),
            Inspection.id,
            first,
            after,
            InspectionType.from_row,
        )

    @strawberry.field
    async def deviation(self, info: Info, number: str) -> DeviationType | None:
        async with info.context.db.read() as session:
            row = await service.deviation_by_number(session, number)
        return DeviationType.from_row(row) if row else None

    @strawberry.field
    async def deviations(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: list[DeviationStatus] | None = None,
    ) -> Connection[DeviationType]:
        return await paginate(
            info,
            service.deviations_query(status),
            Deviation.id,
            first,
            after,
            DeviationType.from_row,
        )


@strawberry.type
class QualityMutation:
    @strawberry.mutation
    async def start_inspection(self, info: Info, input: StartInspectionInput) -> InspectionPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            inspection = await service.start_inspection(
                uow,
                lot_number=input.lot_number,
                order_number=input.order_number,
                operation_sequence=input.operation_sequence,
            )
            return {"inspection": inspection.id, "deviation": None}

        subject = (
            Subject("Lot", input.lot_number.strip())
            if input.lot_number
            else Subject("ProductionOrder", (input.order_number or "").strip())
        )
        return await run_replayable(
            info,
            InspectionPayload,
            Replay(input.client_mutation_id, request_of(input), subject),
            work,
            lambda refs: _present(info, refs),
        )

    @strawberry.mutation
    async def record_inspection_results(
        self, info: Info, input: RecordResultsInput
    ) -> InspectionPayload:
        specs = [
            service.ResultSpec(r.characteristic, r.value, r.passed, r.note) for r in input.results
        ]

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            inspection, deviation = await service.record_results(
                uow, input.inspection_number, specs
            )
            return {"inspection": inspection.id, "deviation": deviation.id if deviation else None}

        return await run_replayable(
            info,
            InspectionPayload,
            Replay(
                input.client_mutation_id,
                request_of(input),
                Subject("Inspection", input.inspection_number.strip()),
            ),
            work,
            lambda refs: _present(info, refs),
        )

    @strawberry.mutation
    async def raise_deviation(self, info: Info, input: RaiseDeviationInput) -> DeviationPayload:
        async def work(uow: UnitOfWork) -> dict[str, Any]:
            deviation = await service.raise_deviation(
                uow,
                title=input.title,
                description=input.description,
                severity=input.severity,
                lot_numbers=input.lot_numbers or [],
                order_number=input.order_number,
            )
            return {"deviation": deviation.id}

        return await run_replayable(
            info,
            DeviationPayload,
            Replay(input.client_mutation_id, request_of(input)),
            work,
            lambda refs: _present(info, refs),
        )

    @strawberry.mutation
    async def approve_deviation(self, info: Info, input: DecideDeviationInput) -> DeviationPayload:
        return await _decide(info, input, approve=True)

    @strawberry.mutation
    async def reject_deviation(self, info: Info, input: DecideDeviationInput) -> DeviationPayload:
        return await _decide(info, input, approve=False)


async def _decide(info: Info, input: DecideDeviationInput, *, approve: bool) -> DeviationPayload:
    signature = service.SignatureSpec(
        input.signature.password, input.signature.meaning, input.signature.reason
    )

    async def work(uow: UnitOfWork) -> dict[str, Any]:
        deviation = await service.decide(
            uow,
            info.context.settings,
            number=input.number,
            approve=approve,
            disposition=input.disposition,
            signature=signature,
        )
        return {"deviation": deviation.id}

    return await run_replayable(
        info,
        DeviationPayload,
        Replay(
            input.client_mutation_id,
            _without_password(input),
            Subject("Deviation", input.number.strip()),
        ),
        work,
        lambda refs: _present(info, refs),
    )


@strawberry.type
class QualitySubscription:
    @strawberry.subscription
    async def deviation_changed(
        self, info: Info, status: list[DeviationStatus] | None = None
    ) -> AsyncGenerator[DeviationType, None]:
        """Deviations as they are raised and decided (the supervisors' inbox), as committed."""
        wanted = {s.value for s in status} if status else None
        async with info.context.services.broadcast.subscribe(service.DEVIATION_CHANNEL) as events:
            async for event in events:
                async with info.context.db.read() as session:
                    row = await session.get(Deviation, event["id"])
                if row is None or (wanted is not None and row.status.value not in wanted):
                    continue
                await still_signed_in(info)
                info.context.renew_loaders()
                yield DeviationType.from_row(row)
