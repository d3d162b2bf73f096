"""The audit trail: one entry per change, in order, hash-chained; tampering is found."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from backend.audit.models import AuditEntry
from backend.auth.models import User
from backend.db import Database
from backend.principal import Role

Gql = Any  # tests/conftest.py's caller
MakeUser = Callable[..., Awaitable[tuple[User, str]]]

ENTRY_FIELDS = "id sequence at actor action entityType entityId changes hash"
TRAIL = f"""
query Trail($first: Int, $after: String, $type: String, $id: String) {{
  auditTrail(first: $first, after: $after, entityType: $type, entityId: $id) {{
    totalCount
    pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
    edges {{ cursor node {{ {ENTRY_FIELDS} }} }}
  }}
}}
"""
VERIFY = "{ verifyAuditTrail { valid entries firstInvalidSequence } }"
CREATE_USER = """
mutation($input: CreateUserInput!) { createUser(input: $input) { user { id } errors { code } } }
"""
CREATE_TOKEN = """
mutation($name: String!) {
  createApiToken(input: {name: $name, roles: [ERP]}) { token errors { code } }
}
"""
UPSERT_MATERIALS = """
mutation($input: [MaterialInput!]!) {
  upsertMaterials(input: $input) { materials { id code } errors { code message field } }
}
"""
UPSERT_WORK_CENTERS = """
mutation($input: [WorkCenterInput!]!) {
  upsertWorkCenters(input: $input) {
    workCenters { id code equipment { id code } } errors { code message field }
  }
}
"""
UPSERT_ORDER = """
mutation($input: ProductionOrderInput!) {
  upsertProductionOrder(input: $input) { order { id number status } errors { code message field } }
}
"""
ORDER_INPUT = {
    "externalId": "ERP-7",
    "number": "PO-7",
    "productCode": "BREAD",
    "quantity": "100",
    "workCenterCode": "OVEN",
    "components": [{"materialCode": "FLOUR", "quantity": "50.5"}],
    "operations": [{"sequence": 10, "name": "Bake", "workCenterCode": "OVEN"}],
}


def bearer(anonymous: Gql, token: str) -> Gql:
    return type(anonymous)(anonymous.client, token)


def pk(global_id: str) -> str:
    """The database id inside a global id ("Type:pk"), as the audit trail records it."""
    padded = global_id + "=" * (-len(global_id) % 4)
    return base64.urlsafe_b64decode(padded).decode().partition(":")[2]


def material(code: str, name: str | None = None) -> dict[str, Any]:
    return {
        "code": code,
        "name": name or code.title(),
        "kind": "RAW",
        "unit": "kg",
        "lotControlled": True,
    }


async def order_call(gql: Gql, mutation: str, number: str = "PO-7", **args: str) -> dict[str, Any]:
    extra = "".join(f", {k}: {v!r}".replace("'", '"') for k, v in args.items())
    data = await gql.data(
        f'mutation {{ {mutation}(number: "{number}"{extra}) '
        "{ order { status } errors { code message field } } }"
    )
    payload: dict[str, Any] = data[mutation]
    return payload


async def trail(reader: Gql, **variables: Any) -> list[dict[str, Any]]:
    """Every entry (optionally filtered), fetched page by page."""
    entries: list[dict[str, Any]] = []
    after = None
    while True:
        data = await reader.data(TRAIL, {"first": 100, "after": after, **variables})
        page = data["auditTrail"]
        entries += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return entries
        after = page["pageInfo"]["endCursor"]


async def verify(reader: Gql) -> dict[str, Any]:
    result: dict[str, Any] = (await reader.data(VERIFY))["verifyAuditTrail"]
    return result


async def test_every_change_is_recorded_in_order_with_actor_entity_and_changes(
    anonymous: Gql, make_user: MakeUser
) -> None:
    _, admin_token = await make_user("root", Role.ADMIN)
    _, supervisor_token = await make_user("sam", Role.SUPERVISOR)
    _, quality_token = await make_user("quinn", Role.QUALITY)
    admin = bearer(anonymous, admin_token)
    supervisor = bearer(anonymous, supervisor_token)
    quality = bearer(anonymous, quality_token)

    user = (
        await admin.data(
            CREATE_USER,
            {
                "input": {
                    "username": "carol",
                    "displayName": "Carol",
                    "password": "s3cret-enough",
                    "roles": ["OPERATOR"],
                }
            },
        )
    )["createUser"]["user"]
    token = (await admin.data(CREATE_TOKEN, {"name": "erp-link"}))["createApiToken"]["token"]
    erp = bearer(anonymous, token)
    materials = (
        await erp.data(UPSERT_MATERIALS, {"input": [material("BREAD"), material("FLOUR")]})
    )["upsertMaterials"]["materials"]
    [center] = (
        await erp.data(
            UPSERT_WORK_CENTERS,
            {
                "input": [
                    {
                        "code": "OVEN",
                        "name": "Oven line",
                        "equipment": [
                            {"code": "OVEN-1", "name": "Oven 1", "idealCycleSeconds": 30}
                        ],
                    }
                ]
            },
        )
    )["upsertWorkCenters"]["workCenters"]
    order = (await erp.data(UPSERT_ORDER, {"input": ORDER_INPUT}))["upsertProductionOrder"]["order"]
    # The same content again changes nothing, and records nothing.
    assert (await erp.data(UPSERT_ORDER, {"input": ORDER_INPUT}))["upsertProductionOrder"][
        "errors"
    ] == []
    assert (await order_call(erp, "releaseProductionOrder"))["errors"] == []
    # A refused change records nothing either.
    refused = await order_call(erp, "releaseProductionOrder")
    assert [e["code"] for e in refused["errors"]] == ["INVALID_TRANSITION"]
    assert (await order_call(supervisor, "holdProductionOrder", reason="oven down"))["errors"] == []
    assert (await order_call(supervisor, "resumeProductionOrder"))["errors"] == []
    assert (await order_call(erp, "cancelProductionOrder", reason="customer cancelled"))[
        "errors"
    ] == []

    entries = await trail(quality)

    order_id = pk(order["id"])
    assert [
        (e["sequence"], e["actor"], e["action"], e["entityType"], e["entityId"]) for e in entries
    ] == [
        (1, "root", "user.create", "User", pk(user["id"])),
        (2, "root", "token.create", "ApiToken", entries[1]["entityId"]),
        (3, "erp-link", "material.create", "Material", pk(materials[0]["id"])),
        (4, "erp-link", "material.create", "Material", pk(materials[1]["id"])),
        (5, "erp-link", "workCenter.create", "WorkCenter", pk(center["id"])),
        (6, "erp-link", "equipment.create", "Equipment", pk(center["equipment"][0]["id"])),
        (7, "erp-link", "order.create", "ProductionOrder", order_id),
        (8, "erp-link", "order.release", "ProductionOrder", order_id),
        (9, "sam", "order.hold", "ProductionOrder", order_id),
        (10, "sam", "order.resume", "ProductionOrder", order_id),
        (11, "erp-link", "order.cancel", "ProductionOrder", order_id),
    ]
    changes = [e["changes"] for e in entries]
    assert changes[0] == {"username": "carol", "displayName": "Carol", "roles": ["OPERATOR"]}
    assert "password" not in str(changes[0]).lower()
    assert changes[1] == {"name": "erp-link", "roles": ["ERP"]}
    assert token not in str(entries)
    assert changes[2]["code"] == "BREAD"
    assert changes[2]["kind"] == "RAW"
    assert changes[4] == {"code": "OVEN", "name": "Oven line"}
    assert changes[5]["idealCycleSeconds"] == 30
    assert changes[6]["number"] == "PO-7"
    assert changes[6]["quantity"] == "100.000000"  # exact decimals, as text
    assert changes[6]["components"] == [
        {"material": "FLOUR", "quantity": "50.500000", "operationSequence": None}
    ]
    assert changes[7] == {"status": ["PLANNED", "RELEASED"]}
    assert changes[8] == {"status": ["RELEASED", "ON_HOLD"], "reason": "oven down"}
    assert changes[9] == {"status": ["ON_HOLD", "RELEASED"]}
    assert changes[10] == {"status": ["RELEASED", "CANCELLED"], "reason": "customer cancelled"}

    times = [dt.datetime.fromisoformat(e["at"]) for e in entries]
    assert all(t.utcoffset() == dt.timedelta(0) for t in times)
    assert times == sorted(times)
    hashes = [e["hash"] for e in entries]
    assert len(set(hashes)) == len(hashes)
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes)

    assert await verify(quality) == {"valid": True, "entries": 11, "firstInvalidSequence": None}


async def test_an_empty_trail_is_valid(as_role: Callable[..., Awaitable[Gql]]) -> None:
    quality = await as_role(Role.QUALITY)
    assert await verify(quality) == {"valid": True, "entries": 0, "firstInvalidSequence": None}


# ---------------------------------------------------------------- tampering


@pytest.fixture
async def seven_entries(as_role: Callable[..., Awaitable[Gql]]) -> Gql:
    """A trail of seven entries (in four transactions); returns a QUALITY caller."""
    erp = await as_role(Role.ERP)
    batches = [["A1", "A2"], ["B1"], ["C1", "C2", "C3"], ["D1"]]
    for codes in batches:
        data = await erp.data(UPSERT_MATERIALS, {"input": [material(c) for c in codes]})
        assert data["upsertMaterials"]["errors"] == []
    quality = await as_role(Role.QUALITY)
    assert await verify(quality) == {"valid": True, "entries": 7, "firstInvalidSequence": None}
    return quality


async def execute(db: Database, sql: str, **params: Any) -> None:
    async with db.write() as session:
        result = await session.execute(text(sql), params)
        assert result.rowcount == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("sql", "sequence"),
    [
        ('UPDATE audit_entries SET changes = \'{"code": "FORGED"}\' WHERE sequence = 4', 4),
        ("UPDATE audit_entries SET changes = NULL WHERE sequence = 1", 1),
        ("UPDATE audit_entries SET actor = 'mallory' WHERE sequence = 3", 3),
        ("UPDATE audit_entries SET action = 'material.update' WHERE sequence = 7", 7),
        ("UPDATE audit_entries SET entity_type = 'Lot' WHERE sequence = 2", 2),
        ("UPDATE audit_entries SET entity_id = '999' WHERE sequence = 5", 5),
        ("UPDATE audit_entries SET hash = prev_hash WHERE sequence = 6", 6),
    ],
    ids=["changes", "changes-null", "actor", "action", "entity-type", "entity-id", "hash"],
)
async def test_an_edited_entry_is_named(
    seven_entries: Gql, db: Database, sql: str, sequence: int
) -> None:
    await execute(db, sql)
    assert await verify(seven_entries) == {
        "valid": False,
        "entries": 7,
        "firstInvalidSequence": sequence,
    }


async def test_an_edited_time_is_found(seven_entries: Gql, db: Database) -> None:
    async with db.write() as session:
        await session.execute(
            update(AuditEntry)
            .where(AuditEntry.sequence == 5)
            .values(at=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        )
    assert (await verify(seven_entries))["firstInvalidSequence"] == 5


async def test_an_entry_rehashed_after_editing_breaks_the_link_to_the_next(
    seven_entries: Gql, db: Database
) -> None:
    """Whoever edits an entry and recomputes its hash still breaks the chain at the next one."""
    from backend.audit.service import entry_hash

    async with db.write() as session:
        row = await session.scalar(select(AuditEntry).where(AuditEntry.sequence == 3))
        assert row is not None
        row.actor = "mallory"
        row.hash = entry_hash(
            sequence=row.sequence,
            at=row.at,
            actor=row.actor,
            action=row.action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            changes=row.changes,
            prev_hash=row.prev_hash,
        )
    assert await verify(seven_entries) == {"valid": False, "entries": 7, "firstInvalidSequence": 4}


@pytest.mark.parametrize("sequence", [1, 4, 6])
async def test_a_deleted_entry_is_named_by_its_missing_sequence(
    seven_entries: Gql, db: Database, sequence: int
) -> None:
    await execute(db, "DELETE FROM audit_entries WHERE sequence = :s", s=sequence)
    assert await verify(seven_entries) == {
        "valid": False,
        "entries": 6,
        "firstInvalidSequence": sequence,
    }


async def test_an_inserted_entry_is_found(seven_entries: Gql, db: Database) -> None:
    """A row slipped in with the next sequence but a made-up hash does not verify."""
    await execute(db, "UPDATE audit_entries SET sequence = 8 WHERE sequence = 7")
    async with db.write() as session:
        row = await session.scalar(select(AuditEntry).where(AuditEntry.sequence == 6))
        assert row is not None
        session.add(
            AuditEntry(
                sequence=7,
                at=row.at,
                actor="mallory",
                action="material.create",
                entity_type="Material",
                entity_id="1",
                changes=None,
                prev_hash=row.hash,
                hash="f" * 64,
            )
        )
    assert (await verify(seven_entries))["firstInvalidSequence"] == 7


# ---------------------------------------------------------------- reading the trail


async def test_the_trail_filters_by_entity_and_pages(
    anonymous: Gql, as_role: Callable[..., Awaitable[Gql]]
) -> None:
    erp = await as_role(Role.ERP)
    quality = await as_role(Role.QUALITY)
    await erp.data(UPSERT_MATERIALS, {"input": [material("BREAD"), material("FLOUR")]})
    await erp.data(UPSERT_WORK_CENTERS, {"input": [{"code": "OVEN", "name": "Oven"}]})
    order = (await erp.data(UPSERT_ORDER, {"input": ORDER_INPUT}))["upsertProductionOrder"]["order"]
    other = (
        await erp.data(
            UPSERT_ORDER, {"input": {**ORDER_INPUT, "externalId": "ERP-8", "number": "PO-8"}}
        )
    )["upsertProductionOrder"]["order"]
    for action in ("releaseProductionOrder", "cancelProductionOrder"):
        args = {"reason": "no flour"} if action.startswith("cancel") else {}
        assert (await order_call(erp, action, **args))["errors"] == []
    await erp.data(UPSERT_MATERIALS, {"input": [material("FLOUR", "Wheat flour")]})
    everything = await trail(quality)
    assert [e["sequence"] for e in everything] == list(range(1, 9))

    orders = await trail(quality, type="ProductionOrder")
    assert [e["action"] for e in orders] == [
        "order.create",
        "order.create",
        "order.release",
        "order.cancel",
    ]
    one = await trail(quality, type="ProductionOrder", id=pk(order["id"]))
    assert [e["action"] for e in one] == ["order.create", "order.release", "order.cancel"]
    assert [
        e["sequence"] for e in await trail(quality, type="ProductionOrder", id=pk(other["id"]))
    ] == [5]
    materials = await trail(quality, type="Material")
    assert [(e["action"], e["changes"].get("code")) for e in materials] == [
        ("material.create", "BREAD"),
        ("material.create", "FLOUR"),
        ("material.update", None),
    ]
    assert materials[2]["changes"] == {"name": "Wheat flour"}
    assert await trail(quality, type="Lot") == []

    # Pages of 2 over the four order entries.
    first = (await quality.data(TRAIL, {"first": 2, "type": "ProductionOrder"}))["auditTrail"]
    assert first["totalCount"] == 4
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    assert first["pageInfo"]["endCursor"] == first["edges"][-1]["cursor"]
    second = (
        await quality.data(
            TRAIL, {"first": 2, "after": first["pageInfo"]["endCursor"], "type": "ProductionOrder"}
        )
    )["auditTrail"]
    assert second["totalCount"] == 4
    assert second["pageInfo"]["hasNextPage"] is False
    assert second["pageInfo"]["hasPreviousPage"] is True
    paged = [e["node"]["sequence"] for e in first["edges"] + second["edges"]]
    assert paged == [e["sequence"] for e in orders]
    empty = (await quality.data(TRAIL, {"first": 0}))["auditTrail"]
    assert empty["edges"] == []
    assert empty["totalCount"] == 8

    # A node fetched by its global id is the same entry.
    node = await quality.data(
        "query($id: ID!) { node(id: $id) { ... on AuditEntry { sequence hash } } }",
        {"id": orders[0]["id"]},
    )
    assert node["node"] == {"sequence": orders[0]["sequence"], "hash": orders[0]["hash"]}


async def test_a_bad_cursor_is_a_top_level_error(as_role: Callable[..., Awaitable[Gql]]) -> None:
    quality = await as_role(Role.QUALITY)
    body = await quality(TRAIL, {"after": "not-a-cursor"})
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


# ---------------------------------------------------------------- concurrency


async def test_concurrent_changes_keep_one_gapless_valid_chain(
    as_role: Callable[..., Awaitable[Gql]], db: Database
) -> None:
    admin = await as_role(Role.ADMIN)
    erp = await as_role(Role.ERP)
    quality = await as_role(Role.QUALITY)
    calls = [
        admin.data(
            CREATE_USER,
            {
                "input": {
                    "username": f"user-{i}",
                    "displayName": f"User {i}",
                    "password": "s3cret-enough",
                    "roles": ["OPERATOR"],
                }
            },
        )
        for i in range(10)
    ]
    calls += [
        erp.data(UPSERT_MATERIALS, {"input": [material(f"M{i}-A"), material(f"M{i}-B")]})
        for i in range(10)
    ]
    calls += [
        erp.data(UPSERT_WORK_CENTERS, {"input": [{"code": f"WC-{i}", "name": f"Line {i}"}]})
        for i in range(10)
    ]

    results = await asyncio.gather(*calls)

    for result in results:
        [payload] = result.values()
        assert payload["errors"] == []
    entries = await trail(quality)
    assert [e["sequence"] for e in entries] == list(range(1, 41))
    assert sum(1 for e in entries if e["action"] == "user.create") == 10
    assert sum(1 for e in entries if e["action"] == "material.create") == 20
    # The two entries of one transaction sit next to each other in the chain.
    by_code = {
        e["changes"]["code"]: e["sequence"] for e in entries if e["action"] == "material.create"
    }
    assert all(by_code[f"M{i}-B"] == by_code[f"M{i}-A"] + 1 for i in range(10))
    assert await verify(quality) == {"valid": True, "entries": 40, "firstInvalidSequence": None}
    async with db.read() as session:
        assert await session.scalar(select(func.count(func.distinct(AuditEntry.prev_hash)))) == 40
