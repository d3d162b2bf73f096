"""Every table of every domain, imported in one place so that Alembic sees the whole schema."""

from backend.audit.models import AuditEntry
from backend.auth.models import ApiToken, LoginThrottle, User
from backend.catalog.models import Characteristic, Equipment, Material, WorkCenter
from backend.db import Base
from backend.equipment.models import CounterHour, EquipmentEvent, StateHour
from backend.lots.models import Consumption, GenealogyLink, Lot
from backend.orders.models import OrderComponent, OrderOperation, ProductionOrder
from backend.quality.models import (
    Deviation,
    DeviationLot,
    Inspection,
    InspectionResult,
    Signature,
    SigningLock,
)
from backend.replay.models import MutationOutcome

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "Characteristic",
    "Consumption",
    "CounterHour",
    "Deviation",
    "DeviationLot",
    "Equipment",
    "EquipmentEvent",
    "GenealogyLink",
    "Inspection",
    "InspectionResult",
    "LoginThrottle",
    "Lot",
    "Material",
    "MutationOutcome",
    "OrderComponent",
    "OrderOperation",
    "ProductionOrder",
    "Signature",
    "SigningLock",
    "StateHour",
    "User",
    "WorkCenter",
]
