"""The catalog types and roots that compiled reads may print straight from their tables
(see backend/compiled). Fields not listed here run through their resolvers:
Material.incomingCharacteristics, the Float fields (Characteristic.nominal, lowerLimit,
upperLimit, Equipment.idealCycleSeconds: Python's shortest repr has no exact SQL printer),
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
    },
)

REGISTRY.table(
    CharacteristicType,
    Characteristic,
    {"id": GlobalId("Characteristic"), "name": Col(), "kind": Col(), "unit": Col()},
)

REGISTRY.table(
    EquipmentType,
    Equipment,
    {
        "id": GlobalId("Equipment"),
        "code": Col(),
        "name": Col(),
        "state": Col(),
        "state_reason": Col(),
        "state_since": Col(),
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
