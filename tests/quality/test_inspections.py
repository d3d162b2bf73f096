"""Inspections through GraphQL: what startInspection inspects and refuses, how
recordInspectionResults judges results (inclusive limits, attributes), what a passed or failed
inspection does to its lot, and the inspection queries."""

from __future__ import annotations

from typing import Any

import pytest
from quality_support import (
    INSPECTION_QUERY,
    Caller,
    Desk,
    actions_since,
    codes,
    last_audit_sequence,
    lot_status,
    make_order,
    result,
    row_counts,
    set_lot_status,
)

from backend.db import Database
from backend.lots.models import LotStatus

pytestmark = pytest.mark.usefixtures("po1")

PASSING = [result("Purity", 99.0), result("Clear", passed=True)]


async def test_an_incoming_inspection_checks_the_materials_incoming_characteristics(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    assert await lot_status(db, "L-1") is LotStatus.QUARANTINE
    before = await last_audit_sequence(db)

    payload = await quinn.start(lot="L-1")

    assert payload["errors"] == []
    inspection = payload["inspection"]
    assert inspection["number"].startswith("INS-")
    assert inspection["status"] == "OPEN"
    assert inspection["completedAt"] is None
    assert inspection["lot"] == {"number": "L-1", "status": "QUARANTINE"}
    assert (inspection["order"], inspection["operation"]) == (None, None)
    assert [
        (c["name"], c["kind"], c["lowerLimit"], c["upperLimit"])
        for c in inspection["characteristics"]
    ] == [("Purity", "NUMERIC", 98.5, 99.5), ("Clear", "ATTRIBUTE", None, None)]
    assert inspection["results"] == []
    assert await actions_since(db, before) == ["inspection.start"]


async def test_an_operation_inspection_checks_that_operations_characteristics(
    quinn: Desk,
) -> None:
    payload = await quinn.start(order="PO-1", sequence=10)

    assert payload["errors"] == []
    inspection = payload["inspection"]
    assert inspection["lot"] is None
    assert inspection["order"] == {"number": "PO-1"}
    assert inspection["operation"] == {"sequence": 10, "name": "Mix"}
    assert [c["name"] for c in inspection["characteristics"]] == ["Viscosity", "Seal intact"]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"lot": "L-Q", "order": "PO-1", "sequence": 10}, ("INVALID_INPUT", "lotNumber")),
        ({}, ("INVALID_INPUT", "lotNumber")),
        ({"sequence": 10}, ("INVALID_INPUT", "lotNumber")),
        ({"lot": "  "}, ("INVALID_INPUT", "lotNumber")),
        ({"lot": "L-404"}, ("NOT_FOUND", "lotNumber")),
        ({"lot": "L-1"}, ("INVALID_INPUT", "lotNumber")),  # RM-1: nothing to inspect
        ({"lot": "L-USED"}, ("INVALID_TRANSITION", "lotNumber")),
        ({"order": "PO-404", "sequence": 10}, ("NOT_FOUND", "orderNumber")),
        ({"order": "PO-1"}, ("INVALID_INPUT", "operationSequence")),
        ({"order": "PO-1", "sequence": 30}, ("NOT_FOUND", "operationSequence")),
        ({"order": "PO-1", "sequence": 20}, ("INVALID_INPUT", "operationSequence")),
        ({"order": "PO-2", "sequence": 10}, ("INVALID_TRANSITION", "orderNumber")),
    ],
    ids=[
        "both",
        "neither",
        "sequence-alone",
        "blank-lot",
        "unknown-lot",
        "material-without-characteristics",
        "consumed-lot",
        "unknown-order",
        "order-without-sequence",
        "unknown-sequence",
        "operation-without-characteristics",
        "planned-order",
    ],
)
async def test_a_bad_target_is_refused_and_nothing_is_written(
    erp: Caller,
    otto: Desk,
    quinn: Desk,
    db: Database,
    target: dict[str, Any],
    expected: tuple[str, str],
) -> None:
    await otto.receive("L-Q")
    await otto.receive("L-1", "RM-1")
    await otto.receive("L-USED")
    await set_lot_status(db, "L-USED", LotStatus.CONSUMED)
    await make_order(erp, "PO-2", release=False)
    counts = await row_counts(db)

    payload = await quinn.start(**target)

    assert payload["inspection"] is None
    assert codes(payload) == [expected]
    after = await row_counts(db)
    assert after["inspections"] == counts["inspections"] == 0
    assert after["audit_entries"] == counts["audit_entries"]


async def test_results_in_one_call_pass_the_inspection_and_release_the_lot(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    number = await quinn.ok_start(lot="L-1")
    before = await last_audit_sequence(db)

    payload = await quinn.record(
        number, [result("Purity", 99.2, note="HPLC run 7"), result("Clear", passed=True)]
    )

    assert payload["errors"] == []
    assert payload["deviation"] is None
    inspection = payload["inspection"]
    assert inspection["status"] == "PASSED"
    assert inspection["completedAt"] is not None
    assert inspection["lot"] == {"number": "L-1", "status": "AVAILABLE"}
    assert [
        (r["characteristic"]["name"], r["value"], r["passed"], r["note"], r["recordedBy"])
        for r in inspection["results"]
    ] == [
        ("Purity", 99.2, True, "HPLC run 7", {"username": "quinn"}),
        ("Clear", None, True, None, {"username": "quinn"}),
    ]
    assert await lot_status(db, "L-1") is LotStatus.AVAILABLE
    assert await actions_since(db, before) == [
        "inspection.results",
        "inspection.complete",
        "lot.release",
    ]


async def test_results_in_several_calls_decide_the_inspection_with_the_last_one(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    number = await quinn.ok_start(lot="L-1")

    first = await quinn.ok_record(number, [result("Purity", 98.9)])
    assert first["inspection"]["status"] == "OPEN"
    assert first["inspection"]["completedAt"] is None
    assert [r["characteristic"]["name"] for r in first["inspection"]["results"]] == ["Purity"]
    assert await lot_status(db, "L-1") is LotStatus.QUARANTINE

    second = await otto.ok_record(number, [result("Clear", passed=True)])
    assert second["inspection"]["status"] == "PASSED"
    assert [
        (r["characteristic"]["name"], r["recordedBy"]["username"])
        for r in second["inspection"]["results"]
    ] == [("Purity", "quinn"), ("Clear", "otto")]
    assert await lot_status(db, "L-1") is LotStatus.AVAILABLE


@pytest.mark.parametrize(
    ("value", "passed"),
    [
        (98.5, True),  # exactly the lower limit
        (99.5, True),  # exactly the upper limit
        (99.0, True),
        (98.49, False),
        (99.51, False),
        (-1e9, False),
    ],
)
async def test_a_numeric_result_passes_within_its_limits_inclusive(
    otto: Desk, quinn: Desk, value: float, passed: bool
) -> None:
    await otto.receive("L-1")
    number = await quinn.ok_start(lot="L-1")

    payload = await quinn.ok_record(
        number, [result("Purity", value, passed=not passed), result("Clear", passed=True)]
    )

    inspection = payload["inspection"]
    # The `passed` a client sends for a NUMERIC result is ignored: the limits judge.
    assert [(r["value"], r["passed"]) for r in inspection["results"]] == [
        (value, passed),
        (None, True),
    ]
    assert inspection["status"] == ("PASSED" if passed else "FAILED")
    assert inspection["lot"]["status"] == ("AVAILABLE" if passed else "ON_HOLD")


async def test_an_operations_numeric_limits_are_inclusive_too(quinn: Desk) -> None:
    low = await quinn.ok_start(order="PO-1", sequence=10)
    high = await quinn.ok_start(order="PO-1", sequence=10)
    payloads = [
        await quinn.ok_record(low, [result("Viscosity", 1.5), result("Seal intact", passed=True)]),
        await quinn.ok_record(high, [result("Viscosity", 2.5), result("Seal intact", passed=True)]),
    ]
    assert [p["inspection"]["status"] for p in payloads] == ["PASSED", "PASSED"]


async def test_an_attribute_result_is_judged_by_passed(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    number = await quinn.ok_start(lot="L-1")

    payload = await quinn.ok_record(number, [result("Purity", 99.0), result("Clear", passed=False)])

    assert [r["passed"] for r in payload["inspection"]["results"]] == [True, False]
    assert payload["inspection"]["status"] == "FAILED"
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([result("Clear", passed=True), result("Purity")], [("INVALID_INPUT", "results.1.value")]),
        ([result("Purity", 99.0), result("Clear")], [("INVALID_INPUT", "results.1.passed")]),
        ([result("Clear", 1.0)], [("INVALID_INPUT", "results.0.passed")]),
        (
            [result("Purity", 99.0), result("Colour", passed=True)],
            [("INVALID_INPUT", "results.1.characteristic")],
        ),
        (
            [result("Purity", 99.0), result("purity", 99.1)],
            [("INVALID_INPUT", "results.1.characteristic")],
        ),
        (
            [result("Purity"), result("Viscosity", 2.0)],
            [("INVALID_INPUT", "results.0.value"), ("INVALID_INPUT", "results.1.characteristic")],
        ),
        ([], [("INVALID_INPUT", "results")]),
    ],
    ids=[
        "numeric-without-value",
        "attribute-without-passed",
        "attribute-with-only-a-value",
        "unknown-characteristic",
        "same-characteristic-twice",
        "all-problems-at-once",
        "no-results",
    ],
)
async def test_bad_results_are_refused_and_none_is_recorded(
    otto: Desk,
    quinn: Desk,
    db: Database,
    results: list[dict[str, Any]],
    expected: list[tuple[str, str]],
) -> None:
    await otto.receive("L-1")
    number = await quinn.ok_start(lot="L-1")
    counts = await row_counts(db)

    payload = await quinn.record(number, results)

    assert payload["inspection"] is None
    assert codes(payload) == expected
    after = await row_counts(db)
    assert after["inspection_results"] == 0
    assert after["audit_entries"] == counts["audit_entries"]
    inspection = (await quinn.caller.data(INSPECTION_QUERY, {"n": number}))["inspection"]
    assert (inspection["status"], inspection["results"]) == ("OPEN", [])


async def test_a_second_result_for_a_characteristic_is_refused(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    number = await quinn.ok_start(lot="L-1")
    await quinn.ok_record(number, [result("Purity", 99.0)])

    payload = await quinn.record(number, [result("Clear", passed=True), result("Purity", 98.0)])

    assert codes(payload) == [("INVALID_INPUT", "results.1.characteristic")]
    assert "already has a result" in payload["errors"][0]["message"]
    inspection = (await quinn.caller.data(INSPECTION_QUERY, {"n": number}))["inspection"]
    assert inspection["status"] == "OPEN"
    assert [(r["characteristic"]["name"], r["value"]) for r in inspection["results"]] == [
        ("Purity", 99.0)
    ]


async def test_results_for_a_finished_or_unknown_inspection_are_refused(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    number = await quinn.ok_start(lot="L-1")
    await quinn.ok_record(number, PASSING)
    counts = await row_counts(db)

    finished = await quinn.record(number, [result("Purity", 99.0)])
    unknown = await quinn.record("INS-404", [result("Purity", 99.0)])

    assert codes(finished) == [("INVALID_TRANSITION", "inspectionNumber")]
    assert codes(unknown) == [("NOT_FOUND", "inspectionNumber")]
    after = await row_counts(db)
    assert after["inspection_results"] == counts["inspection_results"] == 2
    assert after["audit_entries"] == counts["audit_entries"]


async def test_a_failed_incoming_inspection_raises_a_deviation_and_holds_the_lot(
    otto: Desk, quinn: Desk, sue: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    number = await sue.ok_start(lot="L-1")
    await quinn.ok_record(number, [result("Purity", 97.0)])  # the failing result
    before = await last_audit_sequence(db)

    payload = await sue.ok_record(number, [result("Clear", passed=True)])

    assert payload["inspection"]["status"] == "FAILED"
    deviation = payload["deviation"]
    assert deviation["number"].startswith("DEV-")
    assert deviation["status"] == "OPEN"
    assert (deviation["source"], deviation["severity"]) == ("INSPECTION", "MAJOR")
    assert deviation["disposition"] is None
    # Raised by whoever recorded the failing result, not by whoever recorded the last one.
    assert deviation["raisedBy"] == {"username": "quinn"}
    assert deviation["lots"] == [{"number": "L-1", "status": "ON_HOLD"}]
    assert deviation["inspection"] == {"number": number, "status": "FAILED"}
    assert deviation["order"] is None
    assert deviation["signatures"] == []
    assert number in deviation["title"]
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD
    assert await actions_since(db, before) == [
        "inspection.results",
        "inspection.complete",
        "lot.hold",
        "deviation.raise",
    ]


async def test_a_failed_operation_inspection_raises_a_deviation_on_the_order(
    quinn: Desk,
) -> None:
    number = await quinn.ok_start(order="PO-1", sequence=10)

    payload = await quinn.ok_record(
        number, [result("Viscosity", 2.6), result("Seal intact", passed=True)]
    )

    deviation = payload["deviation"]
    assert (deviation["source"], deviation["status"]) == ("INSPECTION", "OPEN")
    assert deviation["order"] == {"number": "PO-1"}
    assert deviation["lots"] == []
    assert deviation["raisedBy"] == {"username": "quinn"}
    order = await quinn.caller.data(
        '{ productionOrder(number: "PO-1") { deviations { number source } } }'
    )
    assert order["productionOrder"]["deviations"] == [
        {"number": deviation["number"], "source": "INSPECTION"}
    ]


async def test_a_lot_consumed_during_its_inspection_is_named_on_the_deviation_not_held(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    number = await quinn.ok_start(lot="L-1")
    await set_lot_status(db, "L-1", LotStatus.CONSUMED)

    payload = await quinn.record(number, [result("Purity", 90.0), result("Clear", passed=True)])

    assert payload["errors"] == []
    assert payload["inspection"]["status"] == "FAILED"
    assert payload["deviation"]["lots"] == [{"number": "L-1", "status": "CONSUMED"}]
    assert await lot_status(db, "L-1") is LotStatus.CONSUMED


async def test_a_passed_inspection_does_not_release_a_lot_on_hold(
    otto: Desk, quinn: Desk, db: Database
) -> None:
    await otto.receive("L-1")
    await otto.ok_raise("Drum dented", lots=["L-1"])
    number = await quinn.ok_start(lot="L-1")

    payload = await quinn.ok_record(number, PASSING)

    assert payload["inspection"]["status"] == "PASSED"
    assert await lot_status(db, "L-1") is LotStatus.ON_HOLD


async def test_start_inspection_is_replayable(otto: Desk, quinn: Desk, db: Database) -> None:
    await otto.receive("L-1")
    first = await quinn.start(lot="L-1", cmid="start-L-1")
    again = await quinn.start(lot="L-1", cmid="start-L-1")

    assert first["errors"] == again["errors"] == []
    assert again["inspection"]["number"] == first["inspection"]["number"]
    assert (await row_counts(db))["inspections"] == 1


INSPECTIONS = """
query($first: Int, $after: String, $status: [InspectionStatus!]) {
  inspections(first: $first, after: $after, status: $status) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { number status } }
  }
}
"""


async def test_inspections_are_listed_by_status_and_paged(otto: Desk, quinn: Desk) -> None:
    for lot in ("L-1", "L-2", "L-3", "L-4"):
        await otto.receive(lot)
    numbers = [await quinn.ok_start(lot=lot) for lot in ("L-1", "L-2", "L-3", "L-4")]
    await quinn.ok_record(numbers[0], PASSING)
    await quinn.ok_record(numbers[1], [result("Purity", 1.0), result("Clear", passed=True)])

    def listed(body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(e["node"]["number"], e["node"]["status"]) for e in body["edges"]]

    everything = (await quinn.caller.data(INSPECTIONS, {"first": 3}))["inspections"]
    assert everything["totalCount"] == 4
    assert everything["pageInfo"]["hasNextPage"] is True
    assert listed(everything) == [
        (numbers[0], "PASSED"),
        (numbers[1], "FAILED"),
        (numbers[2], "OPEN"),
    ]
    rest = (
        await quinn.caller.data(
            INSPECTIONS, {"first": 3, "after": everything["pageInfo"]["endCursor"]}
        )
    )["inspections"]
    assert listed(rest) == [(numbers[3], "OPEN")]
    assert rest["pageInfo"]["hasNextPage"] is False

    open_ = (await quinn.caller.data(INSPECTIONS, {"status": ["OPEN"]}))["inspections"]
    assert (open_["totalCount"], listed(open_)) == (2, [(numbers[2], "OPEN"), (numbers[3], "OPEN")])
    done = (await quinn.caller.data(INSPECTIONS, {"status": ["PASSED", "FAILED"]}))["inspections"]
    assert done["totalCount"] == 2


async def test_an_inspection_is_found_by_number_and_on_its_operation(quinn: Desk) -> None:
    number = await quinn.ok_start(order="PO-1", sequence=10)

    found = (await quinn.caller.data(INSPECTION_QUERY, {"n": f" {number} "}))["inspection"]
    missing = (await quinn.caller.data(INSPECTION_QUERY, {"n": "INS-404"}))["inspection"]
    order = await quinn.caller.data(
        """{ productionOrder(number: "PO-1") {
              operations { sequence inspections { number status operation { sequence } } }
        } }"""
    )

    assert found["number"] == number
    assert missing is None
    assert order["productionOrder"]["operations"] == [
        {
            "sequence": 10,
            "inspections": [{"number": number, "status": "OPEN", "operation": {"sequence": 10}}],
        },
        {"sequence": 20, "inspections": []},
    ]
