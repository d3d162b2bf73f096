"""Who may call what: the role table of the contract (BEHAVIOUR.md, "Roles"), in one place.

`backend.graphql_support.run_mutation` checks every mutation against MUTATIONS; the
`AccessControl` extension checks every query and subscription (HTTP and WebSocket alike)
against QUERIES. A mutation missing from the table is refused: new ones fail closed.
"""

from __future__ import annotations

from backend.principal import Principal, Role

_ERP = frozenset({Role.ERP, Role.ADMIN})
_FLOOR = frozenset({Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN})
_INSPECT = frozenset({Role.OPERATOR, Role.SUPERVISOR, Role.QUALITY, Role.ADMIN})
_DECIDE = frozenset({Role.SUPERVISOR, Role.QUALITY})
_ADMIN = frozenset({Role.ADMIN})

# Anyone, signed in or not.
PUBLIC: frozenset[str] = frozenset({"login"})

MUTATIONS: dict[str, frozenset[Role]] = {
    "createUser": _ADMIN,
    "createApiToken": _ADMIN,
    "upsertMaterials": _ERP,
    "upsertWorkCenters": _ERP,
    "upsertProductionOrder": _ERP,
    "releaseProductionOrder": _ERP,
    "cancelProductionOrder": _ERP,
    "closeProductionOrder": _ERP,
    "holdProductionOrder": frozenset({Role.ERP, Role.SUPERVISOR, Role.ADMIN}),
    "resumeProductionOrder": frozenset({Role.ERP, Role.SUPERVISOR, Role.ADMIN}),
    "startOperation": _FLOOR,
    "completeOperation": _FLOOR,
    "receiveLot": _FLOOR,
    "scanLot": _FLOOR,
    "produceLot": _FLOOR,
    "startInspection": _INSPECT,
    "recordInspectionResults": _INSPECT,
    "raiseDeviation": _INSPECT,
    "approveDeviation": _DECIDE,
    "rejectDeviation": _DECIDE,
    "recordEquipmentEvents": frozenset({Role.EQUIPMENT, Role.ADMIN}),
}

# Queries not listed here are open to any signed-in user or token.
QUERIES: dict[str, frozenset[Role]] = {
    "auditTrail": frozenset({Role.QUALITY, Role.ADMIN}),
    "verifyAuditTrail": frozenset({Role.QUALITY, Role.ADMIN}),
}

# HTTP reports outside GraphQL (backend/app.py). Batch records show who did what to which
# material: people who review or release batches, and integrators that archive them.
REPORTS: dict[str, frozenset[Role]] = {
    "batchRecord": frozenset({Role.QUALITY, Role.SUPERVISOR, Role.ADMIN, Role.INTEGRATOR}),
}


def may_mutate(principal: Principal | None, field: str) -> bool:
    if field in PUBLIC:
        return True
    roles = MUTATIONS.get(field)
    return principal is not None and roles is not None and principal.has_any(roles)


def may_query(principal: Principal | None, field: str) -> bool:
    if field in PUBLIC or field.startswith("__"):
        return True
    if principal is None:
        return False
    roles = QUERIES.get(field)
    return roles is None or principal.has_any(roles)
