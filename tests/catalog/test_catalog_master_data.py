"""Master data from the ERP: upsertMaterials, upsertWorkCenters, and reading them back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pytest
from sqlalchemy import func, select

from backend.audit.models import AuditEntry
from backend.catalog.models import Characteristic, Equipment, Material, WorkCenter
from backend.db import Database
from backend.principal import Role


class Caller(Protocol):
    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]: ...


ERRORS = "errors { code message field }"
CHARACTERISTIC = "name kind unit nominal lowerLimit upperLimit"
MATERIAL = f"""
  id code name kind unit gtin lotControlled shelfLifeDays
  incomingCharacteristics {{ {CHARACTERISTIC} }}
"""
UPSERT_MATERIALS = f"""
mutation($input: [MaterialInput!]!) {{
  upsertMaterials(input: $input) {{ materials {{ {MATERIAL} }} {ERRORS} }}
}}
"""
EQUIPMENT = "id code name idealCycleSeconds state stateReason stateSince workCenter { code }"
UPSERT_WORK_CENTERS = f"""
mutation($input: [WorkCenterInput!]!) {{
  upsertWorkCenters(input: $input) {{
    workCenters {{ id code name equipment {{ code }} }} {ERRORS}
  }}
}}
"""
WORK_CENTERS = f"{{ workCenters {{ id code name equipment {{ {EQUIPMENT} }} }} }}"
EQUIPMENT_BY_CODE = f"query($code: String!) {{ equipment(code: $code) {{ {EQUIPMENT} }} }}"
MATERIALS = f"""
query($search: String, $first: Int, $after: String) {{
  materials(search: $search, first: $first, after: $after) {{
    totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {MATERIAL} }} }}
  }}
}}
"""

MOISTURE = {
    "name": "Moisture",
    "kind": "NUMERIC",
    "unit": "%",
    "nominal": 5.0,
    "lowerLimit": 4.5,
    "upperLimit": 5.5,
}
APPEARANCE = {
    "name": "Appearance",
    "kind": "ATTRIBUTE",
    "unit": None,
    "nominal": None,
    "lowerLimit": None,
    "upperLimit": None,
}


def material(code: str = "RM-1", **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "code": code,
        "name": "Lactose monohydrate",
        "kind": "RAW",
        "unit": "kg",
        "lotControlled": True,
    }
    item.update(changes)
    return item


@pytest.fixture
async def erp(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    return await as_role(Role.ERP, username="erp")


async def upsert_materials(erp: Caller, *items: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = (await erp.data(UPSERT_MATERIALS, {"input": list(items)}))[
        "upsertMaterials"
    ]
    return payload


async def upsert_work_centers(erp: Caller, *items: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = (await erp.data(UPSERT_WORK_CENTERS, {"input": list(items)}))[
        "upsertWorkCenters"
    ]
    return payload


async def counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        return {
            model.__tablename__: int(
                await session.scalar(select(func.count()).select_from(model)) or 0
            )
            for model in (Material, Characteristic, WorkCenter, Equipment, AuditEntry)
        }


async def actions(db: Database) -> list[tuple[str, str]]:
    async with db.read() as session:
        rows = await session.execute(
            select(AuditEntry.action, AuditEntry.entity_type).order_by(AuditEntry.sequence)
        )
        return [(a, e) for a, e in rows]


# ---------------------------------------------------------------- materials


async def test_materials_are_created_then_updated_by_their_trimmed_code(
    erp: Caller, db: Database
) -> None:
    created = await upsert_materials(
        erp,
        material(
            "  RM-1 ",
            name=" Lactose ",
            unit=" kg ",
            gtin=" 4006381333931 ",
            shelfLifeDays=365,
            incomingCharacteristics=[MOISTURE, {"name": "Appearance", "kind": "ATTRIBUTE"}],
        ),
    )
    assert created["errors"] == []
    [row] = created["materials"]
    assert (row["code"], row["name"], row["unit"], row["gtin"], row["shelfLifeDays"]) == (
        "RM-1",
        "Lactose",
        "kg",
        "04006381333931",
        365,
    )
    assert row["incomingCharacteristics"] == [MOISTURE, APPEARANCE]

    seal = {"name": "Seal", "kind": "ATTRIBUTE"}
    updated = await upsert_materials(
        erp,
        material(
            "RM-1",
            name="Lactose DC",
            kind="INTERMEDIATE",
            lotControlled=False,
            incomingCharacteristics=[seal],
        ),
    )
    assert updated["errors"] == []
    [again] = updated["materials"]
    assert again["id"] == row["id"]
    assert (
        again["name"],
        again["kind"],
        again["lotControlled"],
        again["gtin"],
        again["shelfLifeDays"],
    ) == ("Lactose DC", "INTERMEDIATE", False, None, None)
    assert [c["name"] for c in again["incomingCharacteristics"]] == ["Seal"]
    assert (await counts(db))["materials"] == 1
    assert (await counts(db))["characteristics"] == 1
    assert await actions(db) == [("material.create", "Material"), ("material.update", "Material")]


async def test_characteristics_left_out_are_kept_and_an_empty_list_clears_them(
    erp: Caller, db: Database
) -> None:
    await upsert_materials(erp, material(incomingCharacteristics=[MOISTURE]))

    kept = await upsert_materials(erp, material(name="Renamed"))
    assert kept["materials"][0]["incomingCharacteristics"] == [MOISTURE]

    cleared = await upsert_materials(erp, material(name="Renamed", incomingCharacteristics=[]))
    assert cleared["materials"][0]["incomingCharacteristics"] == []
    assert (await counts(db))["characteristics"] == 0


async def test_sending_a_material_unchanged_writes_no_audit_entry(
    erp: Caller, db: Database
) -> None:
    item = material(gtin="96385074", incomingCharacteristics=[MOISTURE])
    await upsert_materials(erp, item)
    before = await counts(db)
    again = await upsert_materials(erp, {**item, "gtin": "00000096385074", "code": " RM-1"})
    assert again["errors"] == []
    assert await counts(db) == before


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("96385074", "00000096385074"),  # GTIN-8
        ("036000291452", "00036000291452"),  # GTIN-12 (UPC-A)
        ("4006381333931", "04006381333931"),  # GTIN-13 (EAN)
        ("10614141000415", "10614141000415"),  # GTIN-14
        ("   ", None),  # blank: no GTIN
    ],
)
async def test_gtins_are_stored_as_14_digits(erp: Caller, sent: str, stored: str | None) -> None:
    payload = await upsert_materials(erp, material(gtin=sent))
    assert payload["errors"] == []
    assert payload["materials"][0]["gtin"] == stored


@pytest.mark.parametrize("gtin", ["4006381333932", "12345", "40063813339310000", "ABCDEFGHIJKLM"])
async def test_a_bad_gtin_is_invalid_input_and_nothing_is_written(
    erp: Caller, db: Database, gtin: str
) -> None:
    before = await counts(db)
    payload = await upsert_materials(erp, material("RM-1"), material("RM-2", gtin=gtin))
    assert payload["materials"] == []
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID_INPUT", "input.1.gtin")
    ]
    assert await counts(db) == before


async def test_a_check_digit_error_names_the_field(erp: Caller) -> None:
    payload = await upsert_materials(erp, material(gtin="4006381333932"))
    [error] = payload["errors"]
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "input.0.gtin")
    assert "check digit" in error["message"]


async def test_a_gtin_of_another_material_is_a_conflict(erp: Caller, db: Database) -> None:
    await upsert_materials(erp, material("RM-1", gtin="4006381333931"))
    before = await counts(db)

    # Written as GTIN-14: the same number once normalised.
    payload = await upsert_materials(erp, material("RM-2", gtin="04006381333931"))

    assert payload["materials"] == []
    [error] = payload["errors"]
    assert (error["code"], error["field"]) == ("CONFLICT", "input.0.gtin")
    assert "RM-1" in error["message"]
    assert await counts(db) == before
    # The owner may send its own GTIN again.
    assert (await upsert_materials(erp, material("RM-1", gtin="04006381333931")))["errors"] == []


async def test_one_gtin_twice_in_a_batch_is_invalid_input(erp: Caller, db: Database) -> None:
    payload = await upsert_materials(
        erp, material("RM-1", gtin="96385074"), material("RM-2", gtin="00000096385074")
    )
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID_INPUT", "input.1.gtin")
    ]
    assert (await counts(db))["materials"] == 0


async def test_one_code_twice_in_a_batch_is_invalid_input(erp: Caller, db: Database) -> None:
    payload = await upsert_materials(erp, material("RM-1"), material("RM-2"), material(" RM-1 "))
    assert payload["materials"] == []
    [error] = payload["errors"]
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "input.2.code")
    assert "input.0.code" in error["message"]
    assert (await counts(db))["materials"] == 0


@pytest.mark.parametrize(
    ("characteristic", "field"),
    [
        (
            {"name": "Moisture", "kind": "NUMERIC", "lowerLimit": 6.0, "upperLimit": 5.0},
            "input.1.incomingCharacteristics.1.lowerLimit",
        ),
        ({"name": "Moisture", "kind": "NUMERIC"}, "input.1.incomingCharacteristics.1"),
        ({"name": "  ", "kind": "ATTRIBUTE"}, "input.1.incomingCharacteristics.1.name"),
        ({"name": " appearance", "kind": "ATTRIBUTE"}, "input.1.incomingCharacteristics.1.name"),
    ],
)
async def test_a_bad_characteristic_is_invalid_input_with_its_dotted_field(
    erp: Caller, db: Database, characteristic: dict[str, Any], field: str
) -> None:
    await upsert_materials(erp, material("RM-2", incomingCharacteristics=[MOISTURE]))
    before = await counts(db)
    payload = await upsert_materials(
        erp,
        material("RM-1"),
        material(
            "RM-2",
            incomingCharacteristics=[{"name": "Appearance", "kind": "ATTRIBUTE"}, characteristic],
        ),
    )
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID_INPUT", field)]
    assert await counts(db) == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"code": "  "}, "input.0.code"),
        ({"code": "X" * 65}, "input.0.code"),
        ({"name": ""}, "input.0.name"),
        ({"name": "N" * 201}, "input.0.name"),
        ({"shelfLifeDays": 0}, "input.0.shelfLifeDays"),
    ],
)
async def test_bad_material_fields_are_invalid_input(
    erp: Caller, db: Database, changes: dict[str, Any], field: str
) -> None:
    payload = await upsert_materials(erp, material(**changes))
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID_INPUT", field)]
    assert (await counts(db))["materials"] == 0


async def test_only_the_erp_and_admins_may_change_master_data(
    as_role: Callable[..., Awaitable[Caller]], db: Database
) -> None:
    for role in (Role.OPERATOR, Role.SUPERVISOR, Role.QUALITY, Role.INTEGRATOR):
        caller = await as_role(role)
        refused = await upsert_materials(caller, material())
        assert [e["code"] for e in refused["errors"]] == ["FORBIDDEN"]
        refused = await upsert_work_centers(caller, {"code": "WC-1", "name": "Mixing"})
        assert [e["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    assert sum((await counts(db)).values()) == 0
    admin = await as_role(Role.ADMIN)
    assert (await upsert_materials(admin, material()))["errors"] == []


async def test_materials_search_matches_code_or_name_case_insensitively(erp: Caller) -> None:
    await upsert_materials(
        erp,
        material("RM-1", name="Lactose"),
        material("RM-2", name="Magnesium stearate"),
        material("FG-1", name="Tablets 50% strength", kind="FINISHED"),
        material("PK_1", name="Blister foil", kind="PACKAGING"),
    )

    async def search(term: str | None) -> tuple[list[str], int]:
        connection = (await erp.data(MATERIALS, {"search": term}))["materials"]
        return [e["node"]["code"] for e in connection["edges"]], connection["totalCount"]

    assert await search(None) == (["RM-1", "RM-2", "FG-1", "PK_1"], 4)
    assert await search("  ") == (["RM-1", "RM-2", "FG-1", "PK_1"], 4)
    assert await search("rm-") == (["RM-1", "RM-2"], 2)
    assert await search(" STEAR ") == (["RM-2"], 1)
    assert await search("lactose") == (["RM-1"], 1)
    assert await search("nothing like it") == ([], 0)
    # LIKE wildcards in the search are plain characters.
    assert await search("%") == (["FG-1"], 1)
    assert await search("_") == (["PK_1"], 1)


async def test_materials_are_paged(erp: Caller) -> None:
    await upsert_materials(erp, *(material(f"RM-{i:02d}") for i in range(7)))
    first = (await erp.data(MATERIALS, {"first": 5}))["materials"]
    assert [e["node"]["code"] for e in first["edges"]] == [f"RM-{i:02d}" for i in range(5)]
    assert (first["totalCount"], first["pageInfo"]["hasNextPage"]) == (7, True)
    rest = await erp.data(MATERIALS, {"first": 5, "after": first["pageInfo"]["endCursor"]})
    assert [e["node"]["code"] for e in rest["materials"]["edges"]] == ["RM-05", "RM-06"]


# ---------------------------------------------------------------- work centers and equipment


async def test_work_centers_and_their_equipment_are_created_updated_and_moved(
    erp: Caller, db: Database
) -> None:
    created = await upsert_work_centers(
        erp,
        {
            "code": " WC-1 ",
            "name": "Mixing",
            "equipment": [
                {"code": " EQ-1 ", "name": "Mixer 1", "idealCycleSeconds": 2.5},
                {"code": "EQ-2", "name": "Mixer 2"},
            ],
        },
        {"code": "WC-2", "name": "Filling"},
    )
    assert created["errors"] == []
    assert [(w["code"], [e["code"] for e in w["equipment"]]) for w in created["workCenters"]] == [
        ("WC-1", ["EQ-1", "EQ-2"]),
        ("WC-2", []),
    ]

    listed = (await erp.data(WORK_CENTERS))["workCenters"]
    assert [w["code"] for w in listed] == ["WC-1", "WC-2"]
    eq1 = listed[0]["equipment"][0]
    assert {k: v for k, v in eq1.items() if k != "id"} == {
        "code": "EQ-1",
        "name": "Mixer 1",
        "idealCycleSeconds": 2.5,
        "state": "OFFLINE",
        "stateReason": None,
        "stateSince": None,
        "workCenter": {"code": "WC-1"},
    }

    # Rename WC-1, change EQ-1, move EQ-2 to WC-2 and add EQ-3 there.
    updated = await upsert_work_centers(
        erp,
        {
            "code": "WC-1",
            "name": "Mixing hall",
            "equipment": [{"code": "EQ-1", "name": "Mixer 1", "idealCycleSeconds": 3.0}],
        },
        {
            "code": "WC-2",
            "name": "Filling",
            "equipment": [
                {"code": "EQ-2", "name": "Mixer 2"},
                {"code": "EQ-3", "name": "Filler 1"},
            ],
        },
    )
    assert updated["errors"] == []

    listed = (await erp.data(WORK_CENTERS))["workCenters"]
    assert [(w["code"], w["name"], [e["code"] for e in w["equipment"]]) for w in listed] == [
        ("WC-1", "Mixing hall", ["EQ-1"]),
        ("WC-2", "Filling", ["EQ-2", "EQ-3"]),
    ]
    assert listed[0]["id"] == created["workCenters"][0]["id"]
    assert listed[0]["equipment"][0]["id"] == eq1["id"]
    assert listed[0]["equipment"][0]["idealCycleSeconds"] == 3.0
    moved = (await erp.data(EQUIPMENT_BY_CODE, {"code": " EQ-2 "}))["equipment"]
    assert (moved["workCenter"], moved["state"]) == ({"code": "WC-2"}, "OFFLINE")

    entries = await actions(db)
    assert entries.count(("workCenter.create", "WorkCenter")) == 2
    assert entries.count(("equipment.create", "Equipment")) == 3
    assert entries.count(("workCenter.update", "WorkCenter")) == 1
    assert entries.count(("equipment.update", "Equipment")) == 2  # EQ-1 changed, EQ-2 moved
    c = await counts(db)
    assert (c["work_centers"], c["equipment"]) == (2, 3)


async def test_equipment_left_out_stays_where_it_is(erp: Caller, db: Database) -> None:
    await upsert_work_centers(
        erp, {"code": "WC-1", "name": "Mixing", "equipment": [{"code": "EQ-1", "name": "Mixer 1"}]}
    )
    before = await counts(db)
    payload = await upsert_work_centers(erp, {"code": "WC-1", "name": "Mixing"})
    assert [e["code"] for e in payload["workCenters"][0]["equipment"]] == ["EQ-1"]
    assert await counts(db) == before  # nothing changed, so no audit entry either


async def test_unknown_equipment_is_null(erp: Caller) -> None:
    assert (await erp.data(EQUIPMENT_BY_CODE, {"code": "EQ-404"}))["equipment"] is None


@pytest.mark.parametrize(
    ("centers", "field"),
    [
        ([{"code": "WC-1", "name": "A"}, {"code": " WC-1", "name": "B"}], "input.1.code"),
        (
            [
                {"code": "WC-1", "name": "A", "equipment": [{"code": "EQ-1", "name": "M"}]},
                {"code": "WC-2", "name": "B", "equipment": [{"code": "EQ-1 ", "name": "M"}]},
            ],
            "input.1.equipment.0.code",
        ),
        (
            [
                {
                    "code": "WC-1",
                    "name": "A",
                    "equipment": [{"code": "EQ-1", "name": "M", "idealCycleSeconds": 0}],
                }
            ],
            "input.0.equipment.0.idealCycleSeconds",
        ),
        ([{"code": "WC-1", "name": " "}], "input.0.name"),
    ],
)
async def test_bad_work_center_batches_are_invalid_input_and_write_nothing(
    erp: Caller, db: Database, centers: list[dict[str, Any]], field: str
) -> None:
    payload = await upsert_work_centers(erp, *centers)
    assert payload["workCenters"] == []
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [("INVALID_INPUT", field)]
    assert sum((await counts(db)).values()) == 0


# ---------------------------------------------------------------- at the same time


async def test_the_same_new_material_sent_several_times_at_once_is_created_once(
    erp: Caller, db: Database
) -> None:
    item = material(gtin="4006381333931")
    bodies = await asyncio.gather(*(erp(UPSERT_MATERIALS, {"input": [item]}) for _ in range(5)))

    assert all("errors" not in b for b in bodies), bodies
    assert all(b["data"]["upsertMaterials"]["errors"] == [] for b in bodies)
    assert (await counts(db))["materials"] == 1
    assert await actions(db) == [("material.create", "Material")]


async def test_one_gtin_sent_for_two_new_materials_at_once_goes_to_one(
    erp: Caller, db: Database
) -> None:
    bodies = await asyncio.gather(
        *(
            erp(UPSERT_MATERIALS, {"input": [material(f"RM-{i}", gtin="4006381333931")]})
            for i in range(4)
        )
    )

    assert all("errors" not in b for b in bodies), bodies
    payloads = [b["data"]["upsertMaterials"] for b in bodies]
    assert sum(len(p["materials"]) for p in payloads) == 1
    assert (
        sorted((e["code"], e["field"]) for p in payloads for e in p["errors"])
        == [("CONFLICT", "input.0.gtin")] * 3
    )


async def test_the_same_new_work_center_sent_several_times_at_once_is_created_once(
    erp: Caller, db: Database
) -> None:
    center = {"code": "WC-1", "name": "Mixing", "equipment": [{"code": "EQ-1", "name": "Mixer"}]}
    bodies = await asyncio.gather(
        *(erp(UPSERT_WORK_CENTERS, {"input": [center]}) for _ in range(5))
    )

    assert all("errors" not in b for b in bodies), bodies
    c = await counts(db)
    assert (c["work_centers"], c["equipment"]) == (1, 1)
