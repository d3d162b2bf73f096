"""The quality gate: an operation with characteristics completes only after a passed
inspection of it, or after the deviation from its failed inspection was approved USE_AS_IS or
REWORK."""

from __future__ import annotations

import pytest
from quality_support import Desk, codes, result

pytestmark = pytest.mark.usefixtures("po1")

IN_SPEC = [result("Viscosity", 2.0), result("Seal intact", passed=True)]
OUT_OF_SPEC = [result("Viscosity", 3.0), result("Seal intact", passed=True)]


async def _refused(otto: Desk, sequence: int = 10) -> None:
    payload = await otto.complete_operation(sequence)
    assert codes(payload) == [("INVALID_TRANSITION", None)], payload
    assert "inspection" in payload["errors"][0]["message"]
    assert payload["operation"] is None


async def _completes(otto: Desk, sequence: int = 10) -> None:
    payload = await otto.complete_operation(sequence)
    assert payload["errors"] == [], payload
    assert payload["operation"] == {"sequence": sequence, "status": "DONE"}


async def test_an_inspected_operation_completes_only_after_a_passed_inspection(
    otto: Desk, quinn: Desk
) -> None:
    assert (await otto.start_operation(10))["errors"] == []
    await _refused(otto)

    number = await quinn.ok_start(order="PO-1", sequence=10)
    await _refused(otto)  # an OPEN inspection does not clear it
    await quinn.ok_record(number, [result("Viscosity", 2.0)])
    await _refused(otto)  # nor does a partly recorded one
    await quinn.ok_record(number, [result("Seal intact", passed=True)])

    await _completes(otto)
    # Operation 20 has no characteristics: nothing holds it.
    assert (await otto.start_operation(20))["errors"] == []
    await _completes(otto, 20)


@pytest.mark.parametrize("disposition", ["USE_AS_IS", "REWORK"])
async def test_after_a_failed_inspection_an_approved_use_or_rework_clears_it(
    otto: Desk, quinn: Desk, sue: Desk, disposition: str
) -> None:
    await otto.start_operation(10)
    number = await quinn.ok_start(order="PO-1", sequence=10)
    deviation = (await quinn.ok_record(number, OUT_OF_SPEC))["deviation"]["number"]
    await _refused(otto)  # failed, deviation still OPEN

    approved = await sue.approve(deviation, disposition=disposition)
    assert approved["errors"] == []

    await _completes(otto)


@pytest.mark.parametrize(
    ("approve", "disposition"),
    [(True, "SCRAP"), (True, "RETURN_TO_SUPPLIER"), (False, None)],
    ids=["approved-scrap", "approved-return", "rejected"],
)
async def test_a_scrap_approval_or_a_rejection_does_not_clear_it(
    otto: Desk, quinn: Desk, sue: Desk, approve: bool, disposition: str | None
) -> None:
    await otto.start_operation(10)
    number = await quinn.ok_start(order="PO-1", sequence=10)
    deviation = (await quinn.ok_record(number, OUT_OF_SPEC))["deviation"]["number"]

    decided = await sue.decide(deviation, approve=approve, disposition=disposition)
    assert decided["errors"] == []
    assert decided["deviation"]["status"] == ("APPROVED" if approve else "REJECTED")

    await _refused(otto)
    # A new inspection that passes clears it.
    again = await quinn.ok_start(order="PO-1", sequence=10)
    await quinn.ok_record(again, IN_SPEC)
    await _completes(otto)


async def test_a_deviation_not_from_this_operations_inspection_does_not_clear_it(
    otto: Desk, quinn: Desk, sue: Desk
) -> None:
    await otto.start_operation(10)
    manual = await quinn.ok_raise("Mixer noisy", order="PO-1")
    assert (await sue.approve(manual))["errors"] == []

    await _refused(otto)
