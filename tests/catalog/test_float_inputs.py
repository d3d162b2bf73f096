"""Every Float input refuses NaN and ±infinity, and takes every finite value its rule allows.

graphql-core refuses a non-finite Float in variables (top-level error, nothing runs) but turns
a literal such as `1e999` into infinity and hands it on; a row stored with it could then not be
read back ("Float cannot represent non numeric value"). So each service checks its Float
inputs, and these tests send the literals. `ResultInput.value` is tested with the inspections,
in tests/quality/test_result_values.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from graphql import GraphQLFloat, build_schema, get_named_type, is_input_object_type
from sqlalchemy import func, select

from backend.audit.models import AuditEntry
from backend.catalog import service as catalog
from backend.catalog.models import (
    Characteristic,
    CharacteristicKind,
    Equipment,
    Material,
    WorkCenter,
)
from backend.db import Database
from backend.equipment.models import EquipmentEvent
from backend.errors import Problems
from backend.orders.models import ProductionOrder
from backend.principal import Role


class Caller(Protocol):
    """The root conftest's `Gql`."""

    client: httpx.AsyncClient
    token: str | None

    async def __call__(
        self, query: str, variables: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]: ...


ERRORS = "errors { code message field }"
UPSERT_MATERIALS = f"""
mutation($input: [MaterialInput!]!) {{
  upsertMaterials(input: $input) {{
    materials {{ code incomingCharacteristics {{ nominal lowerLimit upperLimit }} }} {ERRORS}
  }}
}}
"""
UPSERT_WORK_CENTERS = f"""
mutation($input: [WorkCenterInput!]!) {{
  upsertWorkCenters(input: $input) {{ workCenters {{ code }} {ERRORS} }}
}}
"""

NON_FINITE_LITERALS = ["1e999", "-1e999"]
# What a JSON body can carry that is not a finite number (Python's decoder reads the last two).
NON_FINITE_JSON = ["1e999", "-1e999", "Infinity", "NaN"]
FINITE_EDGES = [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308]

# Each Float input of the schema, and the test that sends it a non-finite value.
TESTED_FLOAT_INPUTS = {
    "CharacteristicInput.nominal": "test_a_non_finite_characteristic_limit_is_refused",
    "CharacteristicInput.lowerLimit": "test_a_non_finite_characteristic_limit_is_refused",
    "CharacteristicInput.upperLimit": "test_a_non_finite_characteristic_limit_is_refused",
    "EquipmentInput.idealCycleSeconds": "test_a_non_finite_ideal_cycle_is_refused",
    "EquipmentEventInput.value": "test_a_non_finite_event_value_is_refused",
    "ResultInput.value": "tests/quality/test_result_values.py",
}


class Lit(str):
    """Written into a GraphQL literal as it is: an enum value, or a number such as 1e999."""


def literal(value: object) -> str:
    """`value` as a GraphQL input literal (json.dumps would write infinity as `Infinity`)."""
    if isinstance(value, Lit):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    return json.dumps(value)  # strings, ints, booleans, null


def material(code: str = "RM-1", **changes: Any) -> dict[str, Any]:
    """A material as variables."""
    item = {"code": code, "name": "Lactose", "kind": "RAW", "unit": "kg", "lotControlled": True}
    return {**item, **changes}


async def upsert_materials(erp: Caller, *items: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = (await erp.data(UPSERT_MATERIALS, {"input": list(items)}))[
        "upsertMaterials"
    ]
    return payload


def characteristic(kind: str = "NUMERIC", **changes: object) -> dict[str, object]:
    item: dict[str, object] = {
        "name": "Moisture",
        "kind": Lit(kind),
        "nominal": 5.0,
        "lowerLimit": 4.5,
        "upperLimit": 5.5,
    }
    item.update(changes)
    return item


def material_literal(*characteristics: dict[str, object]) -> dict[str, object]:
    return {
        "code": "RM-1",
        "name": "Lactose",
        "kind": Lit("RAW"),
        "unit": "kg",
        "lotControlled": True,
        "incomingCharacteristics": list(characteristics),
    }


def upsert_materials_literal(item: dict[str, object]) -> str:
    return f"""mutation {{ upsertMaterials(input: [{literal(item)}]) {{
      materials {{ code incomingCharacteristics {{ nominal lowerLimit upperLimit }} }}
      errors {{ code message field }}
    }} }}"""


async def raw_call(caller: Caller, query: str, variables_json: str) -> dict[str, Any]:
    """A POST whose variables are written by hand: JSON that json.dumps would not write."""
    body = f'{{"query": {json.dumps(query)}, "variables": {variables_json}}}'
    headers = {"Authorization": f"Bearer {caller.token}", "Content-Type": "application/json"}
    response = await caller.client.post("/graphql", content=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_refused_before_running(body: dict[str, Any]) -> None:
    assert body["data"] is None
    [error] = body["errors"]
    assert "Float cannot represent non numeric value" in error["message"]


@pytest.fixture
async def erp(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    return await as_role(Role.ERP, username="erp")


@pytest.fixture
async def bridge(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    return await as_role(Role.EQUIPMENT, username="bridge")


async def count(db: Database, *models: type[Any]) -> dict[str, int]:
    async with db.read() as session:
        return {
            m.__tablename__: int(await session.scalar(select(func.count()).select_from(m)) or 0)
            for m in (*models, AuditEntry)
        }


# ---------------------------------------------------------------- the list is complete


def test_every_float_input_of_the_schema_has_its_test(repo_root: Path) -> None:
    schema = build_schema((repo_root / "schema.graphql").read_text())
    found = set()
    for type_ in schema.type_map.values():
        if is_input_object_type(type_):
            for name, field in type_.fields.items():  # type: ignore[union-attr]
                if get_named_type(field.type) is GraphQLFloat:
                    found.add(f"{type_.name}.{name}")
        for name, field in getattr(type_, "fields", {}).items():
            for arg_name, arg in getattr(field, "args", {}).items():
                if get_named_type(arg.type) is GraphQLFloat:
                    found.add(f"{type_.name}.{name}({arg_name})")
    assert found == set(TESTED_FLOAT_INPUTS), "a Float input without a non-finite test"


# ---------------------------------------------------------------- characteristic limits


@pytest.mark.parametrize("number", NON_FINITE_LITERALS)
@pytest.mark.parametrize("name", ["nominal", "lowerLimit", "upperLimit"])
@pytest.mark.parametrize("kind", ["NUMERIC", "ATTRIBUTE"])
async def test_a_non_finite_characteristic_limit_is_refused(
    erp: Caller, db: Database, kind: str, name: str, number: str
) -> None:
    await upsert_materials(erp, material("RM-1"))
    before = await count(db, Material, Characteristic)
    body = await erp(
        upsert_materials_literal(material_literal(characteristic(kind, **{name: Lit(number)})))
    )
    assert "errors" not in body, body["errors"]
    payload = body["data"]["upsertMaterials"]
    assert payload["materials"] == []
    assert [(e["code"], e["field"], e["message"]) for e in payload["errors"]] == [
        (
            "INVALID_INPUT",
            f"input.0.incomingCharacteristics.0.{name}",
            "must be a finite number",
        )
    ]
    assert await count(db, Material, Characteristic) == before


async def test_every_non_finite_limit_of_a_characteristic_is_named(
    erp: Caller, db: Database
) -> None:
    inf = Lit("1e999")
    body = await erp(
        upsert_materials_literal(
            material_literal(characteristic(nominal=inf, lowerLimit=inf, upperLimit=Lit("-1e999")))
        )
    )
    assert [e["field"] for e in body["data"]["upsertMaterials"]["errors"]] == [
        f"input.0.incomingCharacteristics.0.{n}" for n in ("nominal", "lowerLimit", "upperLimit")
    ]
    assert (await count(db, Material, Characteristic))["materials"] == 0


async def test_a_non_finite_limit_of_an_operation_characteristic_is_refused(
    erp: Caller, db: Database
) -> None:
    await upsert_materials(erp, {**material("FG-1"), "kind": "FINISHED"})
    order = {
        "externalId": "ERP-1",
        "number": "PO-1",
        "productCode": "FG-1",
        "quantity": "10",
        "components": [],
        "operations": [
            {
                "sequence": 10,
                "name": "Mix",
                "characteristics": [characteristic(upperLimit=Lit("1e999"))],
            }
        ],
    }
    before = await count(db, ProductionOrder, Characteristic)
    body = await erp(
        f"mutation {{ upsertProductionOrder(input: {literal(order)}) {{"
        " order { number } errors { code message field } } }"
    )
    payload = body["data"]["upsertProductionOrder"]
    assert payload["order"] is None
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID_INPUT", "operations.0.characteristics.0.upperLimit")
    ]
    assert await count(db, ProductionOrder, Characteristic) == before


@pytest.mark.parametrize("number", NON_FINITE_JSON)
async def test_a_non_finite_limit_in_variables_is_refused_before_anything_runs(
    erp: Caller, db: Database, number: str
) -> None:
    item = material(incomingCharacteristics=[{"name": "M", "kind": "NUMERIC", "lowerLimit": 0.0}])
    variables = json.dumps({"input": [item]}).replace("0.0", number)
    assert number in variables
    body = await raw_call(erp, UPSERT_MATERIALS, variables)
    assert_refused_before_running(body)
    assert (await count(db, Material, Characteristic))["materials"] == 0


@pytest.mark.parametrize("number", FINITE_EDGES)
async def test_finite_edge_limits_are_stored_and_read_back(
    erp: Caller, db: Database, number: float
) -> None:
    same = {"nominal": number, "lowerLimit": number, "upperLimit": number}
    # As a literal and as a variable: both reach the service as the same float.
    body = await erp.data(upsert_materials_literal(material_literal(characteristic(**same))))
    payload = body["upsertMaterials"]
    assert payload["errors"] == []
    assert payload["materials"][0]["incomingCharacteristics"] == [same]
    again = await upsert_materials(
        erp, material("RM-2", incomingCharacteristics=[{"name": "M", "kind": "NUMERIC", **same}])
    )
    assert again["errors"] == []

    read = await erp.data(
        "{ materials { edges { node { code incomingCharacteristics"
        " { nominal lowerLimit upperLimit } } } } }"
    )
    for edge in read["materials"]["edges"]:
        [stored] = edge["node"]["incomingCharacteristics"]
        assert stored == same  # -0.0 == 0.0: SQLite may keep either
    async with db.read() as session:
        rows = list(await session.scalars(select(Characteristic)))
    assert [(r.nominal, r.lower_limit, r.upper_limit) for r in rows] == [(number,) * 3] * 2


def test_nan_is_refused_where_a_python_caller_could_send_it() -> None:
    nan = float("nan")
    problems = Problems()
    catalog.check_characteristics(
        problems,
        "chars",
        [catalog.CharacteristicSpec("M", CharacteristicKind.NUMERIC, None, nan, nan, 1.0)],
    )
    assert [(p.field, p.message) for p in problems.items] == [
        ("chars.0.nominal", "must be a finite number"),
        ("chars.0.lowerLimit", "must be a finite number"),
    ]


# ---------------------------------------------------------------- equipment


def work_center_literal(ideal: Lit | float) -> str:
    item = {
        "code": "WC-1",
        "name": "Tableting",
        "equipment": [{"code": "M-1", "name": "Press", "idealCycleSeconds": ideal}],
    }
    return (
        f"mutation {{ upsertWorkCenters(input: [{literal(item)}]) {{"
        " workCenters { equipment { code idealCycleSeconds } } errors { code message field } } }"
    )


@pytest.mark.parametrize("number", NON_FINITE_LITERALS)
async def test_a_non_finite_ideal_cycle_is_refused(erp: Caller, db: Database, number: str) -> None:
    before = await count(db, WorkCenter, Equipment)
    body = await erp(work_center_literal(Lit(number)))
    payload = body["data"]["upsertWorkCenters"]
    assert payload["workCenters"] == []
    assert [(e["code"], e["field"], e["message"]) for e in payload["errors"]] == [
        ("INVALID_INPUT", "input.0.equipment.0.idealCycleSeconds", "must be a finite number")
    ]
    assert await count(db, WorkCenter, Equipment) == before


@pytest.mark.parametrize("number", NON_FINITE_JSON)
async def test_a_non_finite_ideal_cycle_in_variables_is_refused_before_anything_runs(
    erp: Caller, db: Database, number: str
) -> None:
    item = {
        "code": "WC-1",
        "name": "T",
        "equipment": [{"code": "M-1", "name": "P", "idealCycleSeconds": 0.5}],
    }
    body = await raw_call(
        erp, UPSERT_WORK_CENTERS, json.dumps({"input": [item]}).replace("0.5", number)
    )
    assert_refused_before_running(body)
    assert (await count(db, WorkCenter))["work_centers"] == 0


@pytest.mark.parametrize(
    ("number", "message"),
    [
        (0.0, "must be greater than 0"),
        (-0.0, "must be greater than 0"),
        (-5e-324, "must be greater than 0"),
        (1e6, "must be less than 1000000 seconds"),
        (1.7976931348623157e308, "must be less than 1000000 seconds"),
        (5e-324, None),
        (999_999.999, None),
    ],
)
async def test_finite_ideal_cycles_are_held_to_their_range(
    erp: Caller, db: Database, number: float, message: str | None
) -> None:
    payload = (await erp.data(work_center_literal(number)))["upsertWorkCenters"]
    if message is None:
        assert payload["errors"] == []
        assert payload["workCenters"][0]["equipment"] == [
            {"code": "M-1", "idealCycleSeconds": number}
        ]
    else:
        assert [(e["field"], e["message"]) for e in payload["errors"]] == [
            ("input.0.equipment.0.idealCycleSeconds", message)
        ]
        assert (await count(db, Equipment))["equipment"] == 0


AT = Lit(json.dumps("2026-01-05T08:00:00+00:00"))


def events_literal(*events: dict[str, object]) -> str:
    return (
        f"mutation {{ recordEquipmentEvents(events: {literal(list(events))}) {{"
        " accepted duplicates errors { code message field } } }"
    )


def value_event(event_id: str, number: Lit | float) -> dict[str, object]:
    return {
        "eventId": event_id,
        "equipmentCode": "M-1",
        "kind": Lit("VALUE"),
        "occurredAt": AT,
        "name": "temperature",
        "value": number,
    }


@pytest.fixture
async def press(erp: Caller) -> None:
    assert (await erp.data(work_center_literal(0.5)))["upsertWorkCenters"]["errors"] == []


@pytest.mark.parametrize("number", NON_FINITE_LITERALS)
async def test_a_non_finite_event_value_is_refused(
    bridge: Caller, db: Database, press: None, number: str
) -> None:
    state_with_value = {
        "eventId": "e-2",
        "equipmentCode": "M-1",
        "kind": Lit("STATE"),
        "occurredAt": AT,
        "state": Lit("RUNNING"),
        "value": Lit(number),  # not kept for a STATE event, but a broken sender all the same
    }
    body = await bridge(
        events_literal(value_event("e-1", Lit(number)), state_with_value, value_event("e-3", 21.5))
    )
    payload = body["data"]["recordEquipmentEvents"]
    assert (payload["accepted"], payload["duplicates"]) == (1, 0)
    assert [(e["code"], e["field"], e["message"]) for e in payload["errors"]] == [
        ("INVALID_INPUT", "events.0.value", "must be a finite number"),
        ("INVALID_INPUT", "events.1.value", "must be a finite number"),
    ]
    async with db.read() as session:
        stored = [(e.event_id, e.value) for e in await session.scalars(select(EquipmentEvent))]
    assert stored == [("e-3", 21.5)]


@pytest.mark.parametrize("number", NON_FINITE_JSON)
async def test_a_non_finite_event_value_in_variables_is_refused_before_anything_runs(
    bridge: Caller, db: Database, press: None, number: str
) -> None:
    query = (
        "mutation($events: [EquipmentEventInput!]!) { recordEquipmentEvents(events: $events)"
        " { accepted errors { field } } }"
    )
    event = {
        "eventId": "e-1",
        "equipmentCode": "M-1",
        "kind": "VALUE",
        "occurredAt": "2026-01-05T08:00:00+00:00",
        "name": "temperature",
        "value": 21.5,
    }
    body = await raw_call(bridge, query, json.dumps({"events": [event]}).replace("21.5", number))
    assert_refused_before_running(body)
    assert (await count(db, EquipmentEvent))["equipment_events"] == 0


async def test_finite_edge_event_values_are_stored_and_read_back(
    bridge: Caller, db: Database, press: None
) -> None:
    events = [value_event(f"e-{i}", n) for i, n in enumerate(FINITE_EDGES)]
    payload = (await bridge.data(events_literal(*events)))["recordEquipmentEvents"]
    assert (payload["accepted"], payload["errors"]) == (len(FINITE_EDGES), [])
    read = await bridge.data(
        '{ equipment(code: "M-1") { events(first: 50) { edges { node { eventId value } } } } }'
    )
    got = {e["node"]["eventId"]: e["node"]["value"] for e in read["equipment"]["events"]["edges"]}
    assert got == {f"e-{i}": n for i, n in enumerate(FINITE_EDGES)}
    async with db.read() as session:
        stored = {e.event_id: e.value for e in await session.scalars(select(EquipmentEvent))}
    assert stored == got
