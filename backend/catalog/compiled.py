"""The catalog types and roots that compiled reads may print straight from their tables
(see backend/compiled), each field as its resolver reads it (the Float fields are the
double precision columns as they are: the compiler's Float printer prints them as orjson
does, and a value it cannot print exactly -- NaN, an infinity, a huge value whose shortest
digits are a rounding boundary -- fails the statement, so the resolvers answer).
Material.incomingCharacteristics is the material's own characteristics (an operation's have no
material), by position. Fields not listed here run through their resolvers:
Equipment.workCenter and Equipment.oee."""

from __future__ import annotations

from backend.catalog.models import Characteristic, Equipment, Material, WorkCenter
from backend.catalog.schema import (
    CatalogQuery,
    CharacteristicType,
    EquipmentType,
    MaterialType,
    WorkCenterType,
)
from backend.compiled.registry import REGISTRY, Col, GlobalId, ToMany
from backend.equipment.compiled import EVENTS

REGISTRY.table(
    MaterialType,
    Material,
    {
        "id": GlobalId("Material"),
        "code": Col(),
        "name": Col(),
        "kind": Col(),
        "unit": Col(),
        "gtin": Col(),
        "lot_controlled": Col(),
        "shelf_life_days": Col(),
        # loaders.characteristics_of_material: by position
        "incoming_characteristics": ToMany("material_id", order_by=("position",)),
    },
)

REGISTRY.table(
    CharacteristicType,
    Characteristic,
    {
        "id": GlobalId("Characteristic"),
        "name": Col(),
        "kind": Col(),
        "unit": Col(),
        "nominal": Col(),
        "lower_limit": Col(),
        "upper_limit": Col(),
    },
)

REGISTRY.table(
    EquipmentType,
    Equipment,
    {
        "id": GlobalId("Equipment"),
        "code": Col(),
        "name": Col(),
        "ideal_cycle_seconds": Col(),
        "state": Col(),
        "state_reason": Col(),
        "state_since": Col(),
        "events": EVENTS,  # the nested connection: backend/equipment/compiled.py
    },
)

REGISTRY.table(
    WorkCenterType,
    WorkCenter,
    {
        "id": GlobalId("WorkCenter"),
        "code": Col(),
        "name": Col(),
        # loaders.equipment_of_work_center: by code
        "equipment": ToMany("work_center_id", order_by=("code",)),
    },
)

# CatalogQuery.work_centers: service.work_centers, every work centre by code
REGISTRY.listing(CatalogQuery, "work_centers", WorkCenter, order_by=("code",))
