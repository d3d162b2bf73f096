"""The role table of BEHAVIOUR.md ("Roles"), checked against the schema the server serves.

Every Mutation field of the served schema is called as a user holding each single role the
contract does not allow: the answer must be FORBIDDEN in the payload, and nothing written.
The arguments are built from the introspected input types, so a new mutation is covered as
soon as it is in the schema (and must be in the contract table below and in policy.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
)
from graphql import (
    build_schema as build_graphql_schema,
)
from sqlalchemy import func, select

from backend.auth import policy
from backend.db import Base, Database
from backend.graphql import build_schema
from backend.principal import Role
from backend.settings import Settings

Gql = Any  # tests/conftest.py's caller
AsRole = Callable[..., Awaitable[Gql]]

_ERP = {Role.ERP, Role.ADMIN}
_FLOOR = {Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN}
_INSPECT = {Role.OPERATOR, Role.SUPERVISOR, Role.QUALITY, Role.ADMIN}

# Written from ../shared/contract/BEHAVIOUR.md, not from policy.py: the test compares them.
CONTRACT: dict[str, set[Role]] = {
    "createUser": {Role.ADMIN},
    "createApiToken": {Role.ADMIN},
    "upsertMaterials": _ERP,
    "upsertWorkCenters": _ERP,
    "upsertProductionOrder": _ERP,
    "releaseProductionOrder": _ERP,
    "cancelProductionOrder": _ERP,
    "closeProductionOrder": _ERP,
    "holdProductionOrder": {Role.ERP, Role.SUPERVISOR, Role.ADMIN},
    "resumeProductionOrder": {Role.ERP, Role.SUPERVISOR, Role.ADMIN},
    "startOperation": _FLOOR,
    "completeOperation": _FLOOR,
    "receiveLot": _FLOOR,
    "scanLot": _FLOOR,
    "produceLot": _FLOOR,
    "startInspection": _INSPECT,
    "recordInspectionResults": _INSPECT,
    "raiseDeviation": _INSPECT,
    "approveDeviation": {Role.SUPERVISOR, Role.QUALITY},
    "rejectDeviation": {Role.SUPERVISOR, Role.QUALITY},
    "recordEquipmentEvents": {Role.EQUIPMENT, Role.ADMIN},
}
AUDIT_READERS = {Role.QUALITY, Role.ADMIN}

# From the SDL: strawberry's Schema.introspect() runs synchronously, which the async
# AccessControl extension refuses. test_the_served_schema_has_these_mutations ties this to
# what the app answers to an introspection query.
_SCHEMA = build_graphql_schema(
    build_schema(
        Settings(
            secret_key="unused",
            _env_file=None,  # type: ignore[call-arg]
        )
    ).as_str()
)
_MUTATION = _SCHEMA.mutation_type
assert _MUTATION is not None
SERVED_MUTATIONS = sorted(name for name in _MUTATION.fields if name not in policy.PUBLIC)

_SCALARS: dict[str, Any] = {
    "String": "X-1",
    "ID": "X-1",
    "Int": 1,
    "Float": 1.5,
    "Boolean": True,
    "Decimal": "1",
    "DateTime": "2030-01-01T00:00:00+00:00",
    "JSON": {},
}


def _type_ref(kind: GraphQLInputType) -> str:
    if isinstance(kind, GraphQLNonNull):
        return _type_ref(kind.of_type) + "!"
    if isinstance(kind, GraphQLList):
        return f"[{_type_ref(kind.of_type)}]"
    return str(kind.name)  # type: ignore[union-attr]


def _value(kind: GraphQLInputType) -> Any:
    """A plausible value of an input type: required fields only, one item per list."""
    if isinstance(kind, GraphQLNonNull):
        return _value(kind.of_type)
    if isinstance(kind, GraphQLList):
        return [_value(kind.of_type)]
    if isinstance(kind, GraphQLEnumType):
        return next(iter(kind.values))
    if isinstance(kind, GraphQLInputObjectType):
        return {
            name: _value(f.type)
            for name, f in kind.fields.items()
            if isinstance(f.type, GraphQLNonNull)
        }
    assert isinstance(kind, GraphQLScalarType)
    return _SCALARS[kind.name]


def mutation_call(name: str) -> tuple[str, dict[str, Any]]:
    """A document calling mutation `name` with every required argument, and its variables."""
    field = _MUTATION.fields[name]  # type: ignore[union-attr]
    args = {a: arg for a, arg in field.args.items() if isinstance(arg.type, GraphQLNonNull)}
    declared = ", ".join(f"${a}: {_type_ref(arg.type)}" for a, arg in args.items())
    passed = ", ".join(f"{a}: ${a}" for a in args)
    payload = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
    assert isinstance(payload, GraphQLObjectType)
    assert "errors" in payload.fields, f"{name}'s payload has no errors field"
    declared = f"({declared})" if declared else ""
    passed = f"({passed})" if passed else ""
    document = f"mutation Call{declared} {{ {name}{passed} {{ errors {{ code message field }} }} }}"
    return document, {a: _value(arg.type) for a, arg in args.items()}


def _forbidden_cases() -> list[Any]:
    return [
        pytest.param(name, role, id=f"{name}-{role}")
        for name in SERVED_MUTATIONS
        for role in Role
        if role not in CONTRACT.get(name, set(Role))
    ]


async def row_counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        return {
            table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def test_every_served_mutation_is_in_the_role_table() -> None:
    assert SERVED_MUTATIONS, "introspection found no mutations"
    missing_policy = [name for name in SERVED_MUTATIONS if name not in policy.MUTATIONS]
    missing_contract = [name for name in SERVED_MUTATIONS if name not in CONTRACT]
    assert missing_policy == [], "add these to backend/auth/policy.py MUTATIONS"
    assert missing_contract == [], "mutations the contract's role table does not name"


async def test_the_served_schema_has_these_mutations(anonymous: Gql) -> None:
    data = await anonymous.data("{ __schema { mutationType { fields { name } } } }")
    served = sorted(f["name"] for f in data["__schema"]["mutationType"]["fields"])
    assert [name for name in served if name not in policy.PUBLIC] == SERVED_MUTATIONS
    assert "login" in served


def test_the_policy_is_the_contract_role_table() -> None:
    assert {k: set(v) for k, v in policy.MUTATIONS.items()} == CONTRACT
    assert {k: set(v) for k, v in policy.QUERIES.items()} == {
        "auditTrail": AUDIT_READERS,
        "verifyAuditTrail": AUDIT_READERS,
    }
    assert set(policy.PUBLIC) == {"login"}


@pytest.mark.parametrize(("name", "role"), _forbidden_cases())
async def test_a_role_outside_the_table_is_forbidden_and_nothing_is_written(
    as_role: AsRole, db: Database, name: str, role: Role
) -> None:
    caller = await as_role(role)
    document, variables = mutation_call(name)
    before = await row_counts(db)

    data = await caller.data(document, variables)

    errors = data[name]["errors"]
    assert [e["code"] for e in errors] == ["FORBIDDEN"], errors
    assert name in errors[0]["message"]
    after = await row_counts(db)
    assert after == before
    assert after["audit_entries"] == 0


@pytest.mark.parametrize("name", SERVED_MUTATIONS)
async def test_a_role_in_the_table_gets_past_the_role_check(as_role: AsRole, name: str) -> None:
    """The other side: the same call by an allowed role reaches the operation itself."""
    for role in sorted(CONTRACT[name]):
        caller = await as_role(role)
        document, variables = mutation_call(name)
        data = await caller.data(document, variables)
        assert "FORBIDDEN" not in [e["code"] for e in data[name]["errors"]], (role, data)


async def test_anonymous_mutations_are_top_level_errors(anonymous: Gql, db: Database) -> None:
    for name in SERVED_MUTATIONS:
        document, variables = mutation_call(name)
        body = await anonymous(document, variables)
        assert body["data"] is None, name
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", name
    assert sum((await row_counts(db)).values()) == 0


# ---------------------------------------------------------------- queries

AUDIT_QUERIES = [
    "{ auditTrail { totalCount edges { node { sequence } } } }",
    "{ verifyAuditTrail { valid entries firstInvalidSequence } }",
]


@pytest.mark.parametrize("role", [r for r in Role if r not in AUDIT_READERS], ids=str)
@pytest.mark.parametrize("query", AUDIT_QUERIES, ids=["auditTrail", "verifyAuditTrail"])
async def test_audit_queries_are_forbidden_to_other_roles(
    as_role: AsRole, role: Role, query: str
) -> None:
    caller = await as_role(role)
    body = await caller(query)
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize("role", sorted(AUDIT_READERS), ids=str)
async def test_quality_and_admin_read_the_audit_trail(as_role: AsRole, role: Role) -> None:
    admin = await as_role(Role.ADMIN)
    created = await admin.data(
        'mutation { createApiToken(input: {name: "erp", roles: [ERP]}) { errors { code } } }'
    )
    assert created["createApiToken"]["errors"] == []
    reader = await as_role(role)

    trail = await reader.data(AUDIT_QUERIES[0])
    check = await reader.data(AUDIT_QUERIES[1])

    assert trail["auditTrail"] == {"totalCount": 1, "edges": [{"node": {"sequence": 1}}]}
    assert check["verifyAuditTrail"] == {"valid": True, "entries": 1, "firstInvalidSequence": None}


async def test_an_audit_entry_is_hidden_from_node_for_other_roles(as_role: AsRole) -> None:
    admin = await as_role(Role.ADMIN)
    await admin.data('mutation { createApiToken(input: {name: "erp", roles: [ERP]}) { token } }')
    [edge] = (await admin.data("{ auditTrail { edges { node { id } } } }"))["auditTrail"]["edges"]
    query = "query($id: ID!) { node(id: $id) { id } }"
    entry_id = edge["node"]["id"]

    assert (await admin.data(query, {"id": entry_id}))["node"] == {"id": entry_id}
    operator = await as_role(Role.OPERATOR)
    assert (await operator.data(query, {"id": entry_id}))["node"] is None


@pytest.mark.parametrize("role", list(Role), ids=str)
async def test_every_signed_in_role_reads_materials(as_role: AsRole, role: Role) -> None:
    erp = await as_role(Role.ERP)
    await erp.data(
        'mutation { upsertMaterials(input: [{code: "FLOUR", name: "Flour", kind: RAW, '
        'unit: "kg", lotControlled: true}]) { errors { code } } }'
    )
    reader = await as_role(role)
    data = await reader.data("{ materials { totalCount edges { node { code } } } }")
    assert data["materials"] == {"totalCount": 1, "edges": [{"node": {"code": "FLOUR"}}]}


async def test_anonymous_cannot_read_materials(anonymous: Gql) -> None:
    body = await anonymous("{ materials { totalCount } }")
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
