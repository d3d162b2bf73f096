"""The catalog types that compiled reads may print straight from their tables
(see backend/compiled). Fields not listed here (incomingCharacteristics, equipment) run
through their resolvers."""

from __future__ import annotations

from backend.catalog.models import Material, WorkCenter
from backend.catalog.schema import MaterialType, WorkCenterType
from backend.compiled.registry import REGISTRY, Col, GlobalId

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
    WorkCenterType,
    WorkCenter,
    {"id": GlobalId("WorkCenter"), "code": Col(), "name": Col()},
)
