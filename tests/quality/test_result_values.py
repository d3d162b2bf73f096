"""An inspection result's `value` must be finite, for NUMERIC and ATTRIBUTE characteristics
alike: graphql-core turns the literal `1e999` into infinity, and a stored infinity could not
be read back. Finite edge values are recorded and judged as any other."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from quality_support import (
    INSPECTION_QUERY,
    RECORD,
    Desk,
    codes,
    lot_status,
    new_cmid,
    result,
    row_counts,
)

from backend.catalog.models import Characteristic, CharacteristicKind
from backend.db import Database
from backend.errors import Problems
from backend.lots.models import LotStatus
from backend.quality.service import ResultSpec, judge

FINITE_EDGES = [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308]


def record_literal(number: str, results: str) -> str:
    """recordInspectionResults with its results written as a literal (numbers as given)."""
    return f"""mutation {{ recordInspectionResults(input: {{
      clientMutationId: {json.dumps(new_cmid("literal"))},
      inspectionNumber: {json.dumps(number)},
      results: [{results}]
    }}) {{ inspection {{ number status }} errors {{ code message field }} }} }}"""


async def inspect_lot(otto: Desk, quinn: Desk) -> str:
    await otto.receive("L-1")  # RM-Q: Purity (NUMERIC, 98.5-99.5 %) and Clear (ATTRIBUTE)
    return await quinn.ok_start(lot="L-1")


async def assert_nothing_recorded(
    quinn: Desk, db: Database, number: str, before: dict[str, int], *, ran: bool = True
) -> None:
    after = await row_counts(db)
    # A refusal in the payload is kept under its clientMutationId, so a resend gets it back.
    assert after.pop("mutation_outcomes") == before["mutation_outcomes"] + ran
    assert after == {k: v for k, v in before.items() if k != "mutation_outcomes"}
    inspection = (await quinn.caller.data(INSPECTION_QUERY, {"n": number}))["inspection"]
    assert (inspection["status"], inspection["results"]) == ("OPEN", [])
    assert await lot_status(db, "L-1") is LotStatus.QUARANTINE


@pytest.mark.parametrize("value", ["1e999", "-1e999"])
@pytest.mark.parametrize(
    "results",
    [
        '{characteristic: "Purity", value: %s}',
        '{characteristic: "Clear", passed: true, value: %s}',
    ],
    ids=["numeric", "attribute"],
)
async def test_a_non_finite_value_is_refused_and_nothing_is_recorded(
    otto: Desk, quinn: Desk, db: Database, results: str, value: str
) -> None:
    number = await inspect_lot(otto, quinn)
    before = await row_counts(db)

    body = await quinn.caller(record_literal(number, results % value))

    assert "errors" not in body, body["errors"]
    payload = body["data"]["recordInspectionResults"]
    assert payload["inspection"] is None
    assert [(e["code"], e["field"], e["message"]) for e in payload["errors"]] == [
        ("INVALID_INPUT", "results.0.value", "must be a finite number")
    ]
    await assert_nothing_recorded(quinn, db, number, before)


@pytest.mark.parametrize("value", ["1e999", "-1e999"])
async def test_a_non_finite_value_beside_good_results_fails_the_whole_call(
    otto: Desk, quinn: Desk, db: Database, value: str
) -> None:
    number = await inspect_lot(otto, quinn)
    before = await row_counts(db)

    payload = (
        await quinn.caller.data(
            record_literal(
                number,
                '{characteristic: "Purity", value: 99.0},'
                f' {{characteristic: "Clear", passed: true, value: {value}}}',
            )
        )
    )["recordInspectionResults"]

    assert codes(payload) == [("INVALID_INPUT", "results.1.value")]
    await assert_nothing_recorded(quinn, db, number, before)


@pytest.mark.parametrize("value", ["1e999", "-1e999", "Infinity", "NaN"])
async def test_a_non_finite_value_in_variables_is_refused_before_anything_runs(
    otto: Desk, quinn: Desk, db: Database, value: str
) -> None:
    number = await inspect_lot(otto, quinn)
    before = await row_counts(db)
    variables = {
        "input": {
            "clientMutationId": new_cmid("vars"),
            "inspectionNumber": number,
            "results": [result("Purity", 99.25), result("Clear", passed=True)],
        }
    }
    sent = json.dumps(variables).replace("99.25", value)
    body_text = f'{{"query": {json.dumps(RECORD)}, "variables": {sent}}}'
    caller: Any = quinn.caller
    response = await caller.client.post(
        "/graphql",
        content=body_text,
        headers={"Authorization": f"Bearer {caller.token}", "Content-Type": "application/json"},
    )

    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert "Float cannot represent non numeric value" in error["message"]
    await assert_nothing_recorded(quinn, db, number, before, ran=False)


@pytest.mark.parametrize("value", FINITE_EDGES)
async def test_finite_edge_values_are_recorded_and_judged(
    otto: Desk, quinn: Desk, db: Database, value: float
) -> None:
    number = await inspect_lot(otto, quinn)

    payload = (
        await quinn.caller.data(
            record_literal(
                number,
                f'{{characteristic: "Purity", value: {value!r}}},'
                f' {{characteristic: "Clear", passed: true, value: {value!r}}}',
            )
        )
    )["recordInspectionResults"]

    assert payload["errors"] == []
    assert payload["inspection"]["status"] == "FAILED"  # every edge is outside 98.5-99.5
    inspection = (await quinn.caller.data(INSPECTION_QUERY, {"n": number}))["inspection"]
    recorded = [
        (r["characteristic"]["name"], r["value"], r["passed"]) for r in inspection["results"]
    ]
    assert recorded == [("Purity", value, False), ("Clear", value, True)]


@pytest.mark.parametrize("kind", [CharacteristicKind.NUMERIC, CharacteristicKind.ATTRIBUTE])
def test_nan_from_a_python_caller_is_refused_for_either_kind(kind: CharacteristicKind) -> None:
    characteristic = Characteristic(name="Purity", kind=kind, lower_limit=98.5, upper_limit=99.5)
    problems = Problems()

    spec = ResultSpec("Purity", math.nan, True, None)

    passed = judge(characteristic, spec, problems, "results.0")

    assert passed is False
    assert [(p.field, p.message) for p in problems.items] == [
        ("results.0.value", "must be a finite number")
    ]
