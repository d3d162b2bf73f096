"""The quality types and roots that compiled reads may print straight from their tables
(see backend/compiled), declared as their resolvers in schema.py read them: every field of
these types. `InspectionResult.value` is the double precision column as it is (the Float
printer refuses what it cannot print exactly, and the resolvers answer); `recordedBy` and
`raisedBy` are the user, or -- recorded with an API token, no user -- the resolver's made-up
User named after the token (a ToOne fallback); `Inspection.characteristics` are the
operation's, or for an inspection of a lot its material's. Every field listed here must be
selected by the differential corpus in tests/compiled/test_compiled_quality.py."""

from __future__ import annotations

from collections.abc import Sequence

from backend.auth import compiled as _auth  # noqa: F401  (User)
from backend.catalog import compiled as _catalog  # noqa: F401  (Characteristic)
from backend.compiled.registry import (
    REGISTRY,
    Col,
    Filter,
    FixedId,
    GlobalId,
    ToMany,
    ToManyFrom,
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


def _user_or_token(user_fk: str, token_name: str) -> ToOne:
    """schema.py's recorded_by / raised_by: the user, or, when there is none (an API token
    did it), a User with id to_global_id("User", 0) and the token's name as its username and
    display name (its roles, [], are not compilable: a document selecting them falls back)."""
    return ToOne(
        user_fk,
        fallback={
            "id": FixedId("User", 0),
            "username": Col(token_name),
            "display_name": Col(token_name),
        },
    )


# Inspection.characteristics: the operation's (loaders.characteristics_of_operation), or, for
# an inspection of a lot, the lot material's (loaders.characteristics_of_material); both by
# position. The service starts an inspection of a lot or of an operation, never neither.
INSPECTION_CHARACTERISTICS = """SELECT i."id" AS k, c."id" FROM "inspections" i
JOIN "characteristics" c ON c."operation_id" = i."operation_id" WHERE i."id" IN ({keys})
UNION ALL SELECT i."id", c."id" FROM "inspections" i JOIN "lots" l ON l."id" = i."lot_id"
JOIN "characteristics" c ON c."material_id" = l."material_id"
WHERE i."id" IN ({keys}) AND i."operation_id" IS NULL"""

REGISTRY.table(
    InspectionResultType,
    InspectionResult,
    {
        "value": Col(),
        "passed": Col(),
        "note": Col(),
        "recorded_at": Col(),
        "characteristic": ToOne("characteristic_id"),
        "recorded_by": _user_or_token("recorded_by_id", "recorded_by"),
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
        "characteristics": ToManyFrom(INSPECTION_CHARACTERISTICS, {}, order_by=("position", "id")),
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
        "raised_by": _user_or_token("raised_by_id", "raised_by"),
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
