from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import strawberry
from sqlalchemy import Row
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import InputContext
from strawberry.types.base import get_object_definition

from backend.catalog.models import Equipment, EquipmentState
from backend.catalog.schema import EquipmentType
from backend.equipment import service
from backend.equipment.models import EquipmentEvent, EquipmentEventKind
from backend.errors import DomainError
from backend.gql import (
    Connection,
    Info,
    MutationError,
    Node,
    NodeKind,
    paginate,
    public_error,
    register_node,
    run_mutation,
    still_signed_in,
    to_global_id,
)
from backend.uow import UnitOfWork

EquipmentEventKindType = strawberry.enum(EquipmentEventKind, name="EquipmentEventKind")


@strawberry.type(name="EquipmentEvent")
class EquipmentEventType(Node):
    equipment_pk: strawberry.Private[int]
    event_id: str = strawberry.field(
        description=(
            "Chosen by the sender; unique per equipment, so a resent event is counted once."
        )
    )
    kind: EquipmentEventKind
    occurred_at: dt.datetime
    received_at: dt.datetime
    state: EquipmentState | None
    reason: str | None
    counter: str | None = strawberry.field(
        description=(
            "COUNTER: which count (`good`, `reject`, or another name) and by how much it grew "
            "since the last event."
        )
    )
    increment: int | None
    name: str | None = strawberry.field(description="VALUE: a process value such as `temperature`.")
    value: float | None
    unit: str | None
    alarm_code: str | None = strawberry.field(description="ALARM: raised (active) or cleared.")
    alarm_active: bool | None
    message: str | None

    @strawberry.field
    async def equipment(self, info: Info) -> EquipmentType:
        row = await info.context.loaders.equipment.load(self.equipment_pk)
        assert row is not None  # a foreign key
        return EquipmentType.from_row(row)

    @classmethod
    def from_row(cls, row: EquipmentEvent | Row[Any]) -> EquipmentEventType:
        return cls(
            id=to_global_id("EquipmentEvent", row.id),
            equipment_pk=row.equipment_id,
            event_id=row.event_id,
            kind=row.kind,
            occurred_at=row.occurred_at,
            received_at=row.received_at,
            state=row.state,
            reason=row.reason,
            counter=row.counter,
            increment=row.increment,
            name=row.name,
            value=row.value,
            unit=row.unit,
            alarm_code=row.alarm_code,
            alarm_active=row.alarm_active,
            message=row.message,
        )


@strawberry.type(name="EquipmentEventConnection")
class EquipmentEventConnection(Connection[EquipmentEventType]):
    """A concrete class, so that the catalog's Equipment type can refer to it lazily."""


register_node(
    "EquipmentEvent", NodeKind(lambda loaders: loaders.equipment_event, EquipmentEventType.from_row)
)


@strawberry.type
class DowntimeTotal:
    reason: str
    seconds: float
    occurrences: int


@strawberry.type
class OeeReport:
    from_: dt.datetime = strawberry.field(name="from")
    to: dt.datetime
    planned_seconds: float
    run_seconds: float
    down_seconds: float
    good_count: int
    reject_count: int
    availability: float
    performance: float
    quality: float
    oee: float
    downtime_by_reason: list[DowntimeTotal]

    @classmethod
    def of(cls, report: service.Oee) -> OeeReport:
        return cls(
            from_=report.start,
            to=report.end,
            planned_seconds=report.planned_seconds,
            run_seconds=report.run_seconds,
            down_seconds=report.down_seconds,
            good_count=report.good,
            reject_count=report.reject,
            availability=report.availability,
            performance=report.performance,
            quality=report.quality,
            oee=report.oee,
            downtime_by_reason=[
                DowntimeTotal(reason=d.reason, seconds=d.seconds, occurrences=d.occurrences)
                for d in report.downtime
            ],
        )


async def equipment_oee(info: Info, pk: int, start: dt.datetime, end: dt.datetime) -> OeeReport:
    async with info.context.db.read() as session:
        machine = await session.get(Equipment, pk)
        assert machine is not None
        try:
            report = await service.oee(session, machine, start, end)
        except DomainError as error:
            raise public_error(str(error), "INVALID_INPUT") from error
    return OeeReport.of(report)


async def equipment_events(
    info: Info,
    pk: int,
    first: int | None,
    after: str | None,
    kinds: list[EquipmentEventKind] | None,
) -> EquipmentEventConnection:
    page = await paginate(
        info,
        service.events_query(pk, kinds),
        EquipmentEvent.id,
        first,
        after,
        EquipmentEventType.from_row,
        EquipmentEventConnection,
    )
    assert isinstance(page, EquipmentEventConnection)
    return page


@strawberry.input
class EquipmentEventInput:
    event_id: str
    equipment_code: str
    kind: EquipmentEventKind
    occurred_at: dt.datetime
    state: EquipmentState | None = None
    reason: str | None = None
    counter: str | None = None
    increment: int | None = None
    name: str | None = None
    value: float | None = None
    unit: str | None = None
    alarm_code: str | None = None
    alarm_active: bool | None = None
    message: str | None = None


_input_names: dict[int, tuple[StrawberryConfig, tuple[tuple[str, str], ...]]] = {}


def _event_from_input(
    cls: type[EquipmentEventInput], value: Mapping[str, Any], context: InputContext
) -> EquipmentEventInput:
    """An `EquipmentEventInput` straight from graphql-core's coerced value.

    graphql-core has already coerced and checked every field (enums to their members,
    DateTime to datetime, nulls filled in for omitted fields), so only the names are left
    to map. Strawberry's generic conversion resolves each field's type again for every event:
    about 0.1 ms per event, most of a 500-event batch's time on the server.
    """
    config = context.config
    cached = _input_names.get(id(config))
    if cached is None or cached[0] is not config:
        definition = get_object_definition(cls, strict=True)
        names = tuple(
            (config.name_converter.from_field(f), f.python_name) for f in definition.fields
        )
        _input_names[id(config)] = cached = (config, names)
    return cls(**{python: value[name] for name, python in cached[1] if name in value})


get_object_definition(EquipmentEventInput, strict=True).from_input = _event_from_input


@strawberry.type
class RecordEquipmentEventsPayload:
    accepted: int = 0
    duplicates: int = 0
    errors: list[MutationError] = strawberry.field(default_factory=list)


@strawberry.type
class EquipmentMutation:
    @strawberry.mutation
    async def record_equipment_events(
        self, info: Info, events: list[EquipmentEventInput]
    ) -> RecordEquipmentEventsPayload:
        """Stores a batch of machine events; each is checked on its own (see BEHAVIOUR.md)."""
        specs = [
            service.EventSpec(
                event_id=e.event_id,
                equipment_code=e.equipment_code,
                kind=e.kind,
                occurred_at=e.occurred_at,
                state=e.state,
                reason=e.reason,
                counter=e.counter,
                increment=e.increment,
                name=e.name,
                value=e.value,
                unit=e.unit,
                alarm_code=e.alarm_code,
                alarm_active=e.alarm_active,
                message=e.message,
            )
            for e in events
        ]

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            result = await service.record_events(uow, specs)
            return {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "errors": [MutationError.of(p) for p in result.problems],
            }

        return await run_mutation(info, RecordEquipmentEventsPayload, work)


class _ReadAhead:
    """A subscription's messages, taken off the broadcast as they come (up to `size` held)
    and handed out in groups: all those that arrived since the previous group."""

    _END = object()

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(size)
        self.error: BaseException | None = None

    async def pump(self, events: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for event in events:
                await self.queue.put(event)
        except Exception as error:  # handed to the subscriber, which raises it
            self.error = error
        await self.queue.put(self._END)

    async def next_messages(self) -> list[dict[str, Any]] | None:
        """The messages waiting (at least one), or None once the broadcast has ended."""
        first = await self.queue.get()
        messages = [] if first is self._END else [first]
        ended = first is self._END
        while not ended and not self.queue.empty():
            message = self.queue.get_nowait()
            if message is self._END:
                ended = True
            else:
                messages.append(message)
        if ended:
            self.queue.put_nowait(self._END)  # stays ended
            if not messages:
                if self.error is not None:
                    raise self.error
                return None
        return messages


@asynccontextmanager
async def _read_ahead(
    events: AsyncIterator[dict[str, Any]], size: int = 100
) -> AsyncIterator[_ReadAhead]:
    pending = _ReadAhead(size)
    task = asyncio.create_task(pending.pump(events))
    try:
        yield pending
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@strawberry.type
class EquipmentSubscription:
    @strawberry.subscription
    async def equipment_events(
        self, info: Info, equipment_code: str | None = None
    ) -> AsyncGenerator[EquipmentEventType, None]:
        """Every stored (not duplicate) event, of one equipment or of all."""
        code = equipment_code.strip() if equipment_code else None
        wanted: int | None = None
        async with (
            info.context.services.broadcast.subscribe(service.EVENTS_CHANNEL) as events,
            _read_ahead(events) as pending,
        ):
            while (messages := await pending.next_messages()) is not None:
                if code is not None:
                    if wanted is None:  # the machine may be created after the subscription
                        async with info.context.db.read() as session:
                            wanted = await service.equipment_id(session, code)
                    if wanted is None:
                        continue
                    messages = [m for m in messages if m.get("equipmentId") == wanted]
                ids = [list(m.get("ids") or ()) for m in messages]
                if not any(ids):
                    continue
                # One read for every message that arrived meanwhile (a batch sends one per
                # machine): under load the messages pile up, and each read costs more than
                # many events.
                async with info.context.db.read() as session:
                    found = await service.events_by_ids(session, [i for m in ids for i in m])
                rows = {row.id: row for row in found}
                await still_signed_in(info)  # once per batch: events come by the thousand
                info.context.renew_loaders()
                for message_ids in ids:
                    for event_id in sorted(message_ids):
                        if (row := rows.get(event_id)) is not None:
                            yield EquipmentEventType.from_row(row)

    @strawberry.subscription
    async def equipment_state_changed(
        self, info: Info, work_center_code: str | None = None
    ) -> AsyncGenerator[EquipmentType, None]:
        """Equipment whose current state changed (of one work center, or all)."""
        code = work_center_code.strip() if work_center_code else None
        wanted: int | None = None
        async with info.context.services.broadcast.subscribe(service.STATE_CHANNEL) as events:
            async for event in events:
                if code is not None:
                    # Checked per event: equipment may join the work center later.
                    if wanted is None:
                        async with info.context.db.read() as session:
                            wanted = await service.work_center_id(session, code)
                    if wanted is None or event.get("workCenterId") != wanted:
                        continue
                async with info.context.db.read() as session:
                    row = await session.get(Equipment, event["id"])
                if row is not None:
                    await still_signed_in(info)
                    info.context.renew_loaders()
                    yield EquipmentType.from_row(row)
