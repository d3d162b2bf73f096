"""The equipment types that compiled reads may print straight from their tables (see
backend/compiled), each field as its resolver in schema.py reads it: EquipmentEvent, and
Equipment.events, the nested connection (declared with Equipment in
backend/catalog/compiled.py). Every field listed here must be selected by the differential
corpus in tests/compiled/test_compiled_equipment.py."""

from __future__ import annotations

from collections.abc import Sequence

from backend.compiled.registry import REGISTRY, Col, Filter, GlobalId, ToManyPage, ToOne
from backend.equipment.models import EquipmentEvent, EquipmentEventKind
from backend.equipment.schema import EquipmentEventType


def _kinds(value: Sequence[EquipmentEventKind] | None) -> list[str] | None:
    # service.events_query: no condition for null or an empty list
    return [EquipmentEventKind(k).value for k in value] if value else None


# EquipmentType.events: paginate(service.events_query(pk, kinds), EquipmentEvent.id) per machine
EVENTS = ToManyPage(
    "equipment_id",
    filters={"kinds": Filter('{t}."kind" = ANY({p})', "varchar[]", _kinds)},
)

REGISTRY.table(
    EquipmentEventType,
    EquipmentEvent,
    {
        "id": GlobalId("EquipmentEvent"),
        "event_id": Col(),
        "kind": Col(),
        "occurred_at": Col(),
        "received_at": Col(),
        "state": Col(),
        "reason": Col(),
        "counter": Col(),
        "increment": Col(),  # a bigint: beyond GraphQL's 32-bit Int, the resolvers answer
        "name": Col(),
        "value": Col(),  # double precision, printed as orjson prints it (or the resolvers)
        "unit": Col(),
        "alarm_code": Col(),
        "alarm_active": Col(),
        "message": Col(),
        "equipment": ToOne("equipment_id"),  # loaders.equipment: a foreign key, never null
    },
)
