"""The quality types and roots that compiled reads may print straight from their tables
(see backend/compiled), declared as their resolvers in schema.py read them. Not listed, so
served by their resolvers: `InspectionResult.value` (a Float: Python's shortest repr has no
exact SQL printer), `InspectionResult.recordedBy` and `Deviation.raisedBy` (a missing user
becomes a made-up User named after the API token), `Inspection.characteristics` (the
operation's or the lot material's). Every field
listed here must be selected by the differential corpus in
tests/compiled/test_compiled_quality.py."""

from __future__ import annotations

from collections.abc import Sequence

from backend.auth import compiled as _auth  # noqa: F401  (User)
from backend.catalog import compiled as _catalog  # noqa: F401  (Characteristic)
from backend.compiled.registry import (
    REGISTRY,
    Col,
    Filter,
    GlobalId,
    ToMany,
    ToManyThrough,
    ToOne,
)
from backend.lots import compiled as _lots  # noqa: F401  (Lot)
from backend.orders import compiled as _orders  # noqa: F401  (ProductionOrder, OrderOperation)
from backend.quality.models import (
    Deviation,
    DeviationLot,
    DeviationStatus,
    Inspection,
    InspectionResult,
    InspectionStatus,
    Signature,
)
from backend.quality.schema import (
    DeviationType,
    InspectionResultType,
    InspectionType,
    QualityQuery,
    SignatureType,
)

REGISTRY.table(
    InspectionResultType,
    InspectionResult,
    {
        "passed": Col(),
        "note": Col(),
        "recorded_at": Col(),
        "characteristic": ToOne("characteristic_id"),
    },
)

REGISTRY.table(
    InspectionType,
    Inspection,
    {
        "id": GlobalId("Inspection"),
        "number": Col(),
        "status": Col(),
        "created_at": Col(),
        "completed_at": Col(),
        "lot": ToOne("lot_id"),
        "order": ToOne("order_id"),
        "operation": ToOne("operation_id"),
        # loaders.results_of_inspection: by id
        "results": ToMany("inspection_id"),
    },
)

REGISTRY.table(
    SignatureType,
    Signature,
    {
        "meaning": Col(),
        "reason": Col(),
        "signed_at": Col(),
        "content_hash": Col(),
        "signer": ToOne("signer_id"),
    },
)

REGISTRY.table(
    DeviationType,
    Deviation,
    {
        "id": GlobalId("Deviation"),
        "number": Col(),
        "title": Col(),
        "description": Col(),
        "severity": Col(),
        "status": Col(),
        "source": Col(),
        "disposition": Col(),
        "raised_at": Col(),
        # loaders.lots_of_deviation: the deviation's links by position
        "lots": ToManyThrough(DeviationLot, "deviation_id", "lot_id", order_by=("position",)),
        "order": ToOne("order_id"),
        "inspection": ToOne("inspection_id"),
        # loaders.signatures_of_deviation: by id
        "signatures": ToMany("deviation_id"),
    },
)


def _inspection_statuses(value: Sequence[InspectionStatus] | None) -> list[str] | None:
    # service.inspections_query: no condition for null or an empty list
    return [InspectionStatus(s).value for s in value] if value else None


def _deviation_statuses(value: Sequence[DeviationStatus] | None) -> list[str] | None:
    # service.deviations_query: no condition for null or an empty list
    return [DeviationStatus(s).value for s in value] if value else None


def _strip(value: str | None) -> str | None:
    return None if value is None else value.strip()


# QualityQuery.inspections / deviations: paginate(service.*_query(status), id)
REGISTRY.connection(
    QualityQuery,
    "inspections",
    Inspection,
    filters={"status": Filter('{t}."status" = ANY({p})', "varchar[]", _inspection_statuses)},
)
REGISTRY.connection(
    QualityQuery,
    "deviations",
    Deviation,
    filters={"status": Filter('{t}."status" = ANY({p})', "varchar[]", _deviation_statuses)},
)

# QualityQuery.inspection / deviation: service.*_by_number (number stripped)
REGISTRY.lookup(
    QualityQuery,
    "inspection",
    Inspection,
    filters={"number": Filter('{t}."number" = {p}', "varchar", _strip)},
)
REGISTRY.lookup(
    QualityQuery,
    "deviation",
    Deviation,
    filters={"number": Filter('{t}."number" = {p}', "varchar", _strip)},
)
