"""Inspections, deviations and their signed decisions (BEHAVIOUR.md, "Quality").

    startInspection ─▶ OPEN ─recordInspectionResults─▶ PASSED  (incoming: lot → AVAILABLE)
                                                     └▶ FAILED  (deviation raised, lot → ON_HOLD)
    raiseDeviation ─▶ OPEN (lots → ON_HOLD) ─approve─▶ APPROVED: USE_AS_IS → AVAILABLE,
                                             │          REWORK → stays ON_HOLD,
                                             │          SCRAP / RETURN_TO_SUPPLIER → REJECTED
                                             └reject──▶ REJECTED (lots stay ON_HOLD)

A decision is an electronic signature: the signer's password again, what the signature means
and why. The signature is stored with a hash of the signed content and that hash goes into
the decision's audit entry, so the signature stays bound to the record it signs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend import validation
from backend.audit.service import jsonable
from backend.auth import service as auth_service
from backend.auth.models import User
from backend.catalog.models import Characteristic, CharacteristicKind, Material
from backend.db import utcnow
from backend.errors import DomainError, ErrorCode, Problems
from backend.lots.models import Lot, LotStatus
from backend.lots.service import CHANNEL as LOT_CHANNEL
from backend.orders.models import OrderOperation, OrderStatus, ProductionOrder
from backend.quality.models import (
    Deviation,
    DeviationLot,
    DeviationSeverity,
    DeviationSource,
    DeviationStatus,
    Disposition,
    Inspection,
    InspectionResult,
    InspectionStatus,
    Signature,
    SigningLock,
)
from backend.settings import Settings
from backend.uow import UnitOfWork

INSPECTION_CHANNEL = "inspection"
DEVIATION_CHANNEL = "deviation"
# Lots whose state quality may still change; consumed, rejected or expired lots stay as they are.
_HOLDABLE = (LotStatus.QUARANTINE, LotStatus.AVAILABLE, LotStatus.ON_HOLD)


def _lot_changed(uow: UnitOfWork, lot: Lot) -> None:
    uow.publish(LOT_CHANNEL, {"id": lot.id, "number": lot.number})


def _deviation_changed(uow: UnitOfWork, deviation: Deviation) -> None:
    uow.publish(
        DEVIATION_CHANNEL,
        {"id": deviation.id, "number": deviation.number, "status": deviation.status.value},
    )


async def _numbered(session: AsyncSession, row: Inspection | Deviation, prefix: str) -> None:
    # Numbers come from the row id, so two requests at once can never draw the same one.
    row.number = f"tmp-{secrets.token_hex(8)}"
    session.add(row)
    await session.flush()
    row.number = f"{prefix}-{row.id:06d}"


def _set_lot_status(
    uow: UnitOfWork, lot: Lot, status: LotStatus, action: str, **details: object
) -> None:
    if lot.status is status:
        return
    before = lot.status
    lot.status = status
    lot.updated_at = utcnow()
    uow.audit(action, "Lot", lot.id, {"status": [before.value, status.value], **details})
    _lot_changed(uow, lot)


# ---------------------------------------------------------------- inspections


async def _characteristics_of(
    session: AsyncSession, inspection: Inspection
) -> list[Characteristic]:
    if inspection.operation_id is not None:
        owner = Characteristic.operation_id == inspection.operation_id
    else:
        lot = await session.get(Lot, inspection.lot_id)
        assert lot is not None
        owner = Characteristic.material_id == lot.material_id
    return list(
        await session.scalars(select(Characteristic).where(owner).order_by(Characteristic.position))
    )


async def start_inspection(
    uow: UnitOfWork,
    *,
    lot_number: str | None,
    order_number: str | None,
    operation_sequence: int | None,
) -> Inspection:
    """An inspection of a lot (its material's incoming characteristics) or of an order
    operation (that operation's characteristics)."""
    session = uow.session
    by_lot = bool(lot_number and lot_number.strip())
    by_operation = bool(order_number and order_number.strip())
    if by_lot == by_operation:
        raise DomainError.one(
            ErrorCode.INVALID_INPUT,
            "give either lotNumber, or orderNumber with operationSequence",
            "lotNumber",
        )
    inspection = Inspection(
        status=InspectionStatus.OPEN, created_by=uow.actor.name, created_at=utcnow()
    )
    subject: dict[str, object]
    if by_lot:
        assert lot_number is not None
        lot = await session.scalar(select(Lot).where(Lot.number == lot_number.strip()))
        if lot is None:
            raise DomainError.one(
                ErrorCode.NOT_FOUND, f"no lot {lot_number.strip()!r}", "lotNumber"
            )
        if lot.status not in _HOLDABLE:
            raise DomainError.one(
                ErrorCode.INVALID_TRANSITION,
                f"lot {lot.number} is {lot.status.value}: it cannot be inspected",
                "lotNumber",
            )
        material = await session.get(Material, lot.material_id)
        assert material is not None
        if (
            await session.scalar(
                select(Characteristic.id)
                .where(Characteristic.material_id == lot.material_id)
                .limit(1)
            )
            is None
        ):
            raise DomainError.one(
                ErrorCode.INVALID_INPUT,
                f"material {material.code} has no incoming characteristics to inspect",
                "lotNumber",
            )
        inspection.lot_id = lot.id
        subject = {"lot": lot.number}
    else:
        assert order_number is not None
        if operation_sequence is None:
            raise DomainError.one(
                ErrorCode.INVALID_INPUT, "give the operation's sequence", "operationSequence"
            )
        order = await session.scalar(
            select(ProductionOrder).where(ProductionOrder.number == order_number.strip())
        )
        if order is None:
            raise DomainError.one(
                ErrorCode.NOT_FOUND, f"no production order {order_number.strip()!r}", "orderNumber"
            )
        if order.status not in (OrderStatus.RELEASED, OrderStatus.IN_PROGRESS):
            raise DomainError.one(
                ErrorCode.INVALID_TRANSITION,
                f"order {order.number} is {order.status.value}: its operations cannot be inspected",
                "orderNumber",
            )
        operation = await session.scalar(
            select(OrderOperation).where(
                OrderOperation.order_id == order.id, OrderOperation.sequence == operation_sequence
            )
        )
        if operation is None:
            raise DomainError.one(
                ErrorCode.NOT_FOUND,
                f"order {order.number} has no operation {operation_sequence}",
                "operationSequence",
            )
        if (
            await session.scalar(
                select(Characteristic.id)
                .where(Characteristic.operation_id == operation.id)
                .limit(1)
            )
            is None
        ):
            raise DomainError.one(
                ErrorCode.INVALID_INPUT,
                f"operation {operation.sequence} has no characteristics to inspect",
                "operationSequence",
            )
        inspection.order_id, inspection.operation_id = order.id, operation.id
        subject = {"order": order.number, "operationSequence": operation.sequence}
    await _numbered(session, inspection, "INS")
    uow.audit(
        "inspection.start", "Inspection", inspection.id, {"number": inspection.number, **subject}
    )
    uow.publish(INSPECTION_CHANNEL, {"id": inspection.id, "number": inspection.number})
    return inspection


@dataclass(frozen=True)
class ResultSpec:
    characteristic: str
    value: float | None
    passed: bool | None
    note: str | None


def judge(characteristic: Characteristic, spec: ResultSpec, problems: Problems, at: str) -> bool:
    """NUMERIC: within its limits, limits included. ATTRIBUTE: as recorded.

    A value is stored for either kind (an ATTRIBUTE result may carry a reading too), so it
    must be finite for either: infinity or NaN could not be read back.
    """
    if not validation.finite(problems, f"{at}.value", spec.value):
        return False
    if characteristic.kind is CharacteristicKind.NUMERIC:
        if spec.value is None:
            problems.invalid(
                f"{at}.value", f"{characteristic.name} is NUMERIC: give its measured value"
            )
            return False
        low, high = characteristic.lower_limit, characteristic.upper_limit
        return (low is None or spec.value >= low) and (high is None or spec.value <= high)
    if spec.passed is None:
        problems.invalid(
            f"{at}.passed", f"{characteristic.name} is ATTRIBUTE: say whether it passed"
        )
        return False
    return spec.passed


async def record_results(
    uow: UnitOfWork, number: str, results: Sequence[ResultSpec]
) -> tuple[Inspection, Deviation | None]:
    """Records results; when every characteristic has one, the inspection is decided."""
    session = uow.session
    stmt = select(Inspection).where(Inspection.number == number.strip())
    if uow.dialect == "postgresql":
        stmt = stmt.with_for_update()
    inspection = await session.scalar(stmt)
    if inspection is None:
        raise DomainError.one(
            ErrorCode.NOT_FOUND, f"no inspection {number.strip()!r}", "inspectionNumber"
        )
    if inspection.status is not InspectionStatus.OPEN:
        raise DomainError.one(
            ErrorCode.INVALID_TRANSITION,
            f"inspection {inspection.number} is {inspection.status.value}: "
            "its results can no longer change",
            "inspectionNumber",
        )
    if not results:
        raise DomainError.one(ErrorCode.INVALID_INPUT, "give at least one result", "results")
    characteristics = await _characteristics_of(session, inspection)
    by_name = {c.name.casefold(): c for c in characteristics}
    recorded = set(
        await session.scalars(
            select(InspectionResult.characteristic_id).where(
                InspectionResult.inspection_id == inspection.id
            )
        )
    )
    problems, seen, now = Problems(), set(), utcnow()
    rows: list[InspectionResult] = []
    for i, spec in enumerate(results):
        at = f"results.{i}"
        characteristic = by_name.get(spec.characteristic.strip().casefold())
        if characteristic is None:
            known = ", ".join(c.name for c in characteristics)
            problems.invalid(
                f"{at}.characteristic",
                f"{spec.characteristic!r} is not a characteristic of this inspection ({known})",
            )
            continue
        if characteristic.id in recorded or characteristic.id in seen:
            problems.invalid(f"{at}.characteristic", f"{characteristic.name} already has a result")
            continue
        seen.add(characteristic.id)
        passed = judge(characteristic, spec, problems, at)
        note = validation.text(problems, f"{at}.note", spec.note)
        rows.append(
            InspectionResult(
                inspection_id=inspection.id,
                characteristic_id=characteristic.id,
                value=spec.value,
                passed=passed,
                note=note,
                recorded_by_id=uow.actor.user_id,
                recorded_by=uow.actor.name,
                recorded_at=now,
            )
        )
    problems.raise_if_any()
    session.add_all(rows)
    await session.flush()
    names = {c.id: c.name for c in characteristics}
    uow.audit(
        "inspection.results",
        "Inspection",
        inspection.id,
        {
            "number": inspection.number,
            "results": [
                {
                    "characteristic": names[r.characteristic_id],
                    "value": r.value,
                    "passed": r.passed,
                    "note": r.note,
                }
                for r in rows
            ],
        },
    )
    deviation = None
    if len(recorded) + len(rows) == len(characteristics):
        deviation = await _decide_inspection(uow, inspection)
    uow.publish(INSPECTION_CHANNEL, {"id": inspection.id, "number": inspection.number})
    return inspection, deviation


async def _decide_inspection(uow: UnitOfWork, inspection: Inspection) -> Deviation | None:
    session = uow.session
    failing = await session.scalar(
        select(InspectionResult)
        .where(InspectionResult.inspection_id == inspection.id, InspectionResult.passed.is_(False))
        .order_by(InspectionResult.id)
        .limit(1)
    )
    inspection.status = InspectionStatus.FAILED if failing else InspectionStatus.PASSED
    inspection.completed_at = utcnow()
    uow.audit(
        "inspection.complete",
        "Inspection",
        inspection.id,
        {"number": inspection.number, "status": inspection.status.value},
    )
    lot = await session.get(Lot, inspection.lot_id) if inspection.lot_id is not None else None
    if failing is None:
        if lot is not None and lot.status is LotStatus.QUARANTINE:
            _set_lot_status(
                uow, lot, LotStatus.AVAILABLE, "lot.release", inspection=inspection.number
            )
        return None
    order = (
        await session.get(ProductionOrder, inspection.order_id)
        if inspection.order_id is not None
        else None
    )
    if lot is not None:
        title = f"Incoming inspection {inspection.number} of lot {lot.number} failed"
    else:
        operation = await session.get(OrderOperation, inspection.operation_id)
        assert operation is not None
        assert order is not None
        title = (
            f"Inspection {inspection.number} of order {order.number} "
            f"operation {operation.sequence} failed"
        )
    # Raised by whoever recorded the failing result (not whoever recorded the last one), so
    # that person cannot decide it; a lot consumed or expired meanwhile is named, not held.
    return await _open_deviation(
        uow,
        title=title,
        description=None,
        severity=DeviationSeverity.MAJOR,
        lots=[lot] if lot is not None else [],
        order=order,
        source=DeviationSource.INSPECTION,
        inspection=inspection,
        raised_by_id=failing.recorded_by_id,
        raised_by=failing.recorded_by,
    )


async def operation_cleared(session: AsyncSession, operation_id: int) -> bool:
    """The quality gate: an inspection of the operation PASSED, or a deviation raised from
    its failed inspection was APPROVED with USE_AS_IS or REWORK."""
    passed = await session.scalar(
        select(Inspection.id)
        .where(
            Inspection.operation_id == operation_id, Inspection.status == InspectionStatus.PASSED
        )
        .limit(1)
    )
    if passed is not None:
        return True
    approved = await session.scalar(
        select(Deviation.id)
        .join(Inspection, Deviation.inspection_id == Inspection.id)
        .where(
            Inspection.operation_id == operation_id,
            Deviation.status == DeviationStatus.APPROVED,
            Deviation.disposition.in_([Disposition.USE_AS_IS, Disposition.REWORK]),
        )
        .limit(1)
    )
    return approved is not None


# ---------------------------------------------------------------- deviations


async def raise_deviation(
    uow: UnitOfWork,
    *,
    title: str,
    description: str | None,
    severity: DeviationSeverity,
    lot_numbers: Sequence[str],
    order_number: str | None,
    source: DeviationSource = DeviationSource.MANUAL,
    inspection: Inspection | None = None,
) -> Deviation:
    """Opens a deviation; its lots go ON_HOLD until it is decided."""
    session = uow.session
    problems = Problems()
    title = validation.name(problems, "title", title)
    description = validation.text(problems, "description", description)
    numbers = [validation.code(problems, f"lotNumbers.{i}", n) for i, n in enumerate(lot_numbers)]
    if len(numbers) > 100:
        problems.invalid("lotNumbers", "at most 100 lots per deviation")
    problems.raise_if_any()
    lots_by_number = (
        {
            lot.number: lot
            for lot in await session.scalars(select(Lot).where(Lot.number.in_(numbers)))
        }
        if numbers
        else {}
    )
    for i, n in enumerate(numbers):
        if n not in lots_by_number:
            problems.add(ErrorCode.NOT_FOUND, f"no lot {n!r}", f"lotNumbers.{i}")
        elif lots_by_number[n].status not in _HOLDABLE:
            problems.add(
                ErrorCode.INVALID_TRANSITION,
                f"lot {n} is {lots_by_number[n].status.value}: it cannot be put on hold",
                f"lotNumbers.{i}",
            )
    order = None
    if order_number and order_number.strip():
        order = await session.scalar(
            select(ProductionOrder).where(ProductionOrder.number == order_number.strip())
        )
        if order is None:
            problems.add(
                ErrorCode.NOT_FOUND, f"no production order {order_number.strip()!r}", "orderNumber"
            )
    elif inspection is not None and inspection.order_id is not None:
        order = await session.get(ProductionOrder, inspection.order_id)
    problems.raise_if_any()
    return await _open_deviation(
        uow,
        title=title,
        description=description,
        severity=severity,
        lots=[lots_by_number[n] for n in dict.fromkeys(numbers)],
        order=order,
        source=source,
        inspection=inspection,
        raised_by_id=uow.actor.user_id,
        raised_by=uow.actor.name,
    )


async def _open_deviation(
    uow: UnitOfWork,
    *,
    title: str,
    description: str | None,
    severity: DeviationSeverity,
    lots: Sequence[Lot],
    order: ProductionOrder | None,
    source: DeviationSource,
    inspection: Inspection | None,
    raised_by_id: int | None,
    raised_by: str,
) -> Deviation:
    """Writes an OPEN deviation and holds those of its lots that can still be held."""
    session = uow.session
    deviation = Deviation(
        title=title,
        description=description,
        severity=severity,
        status=DeviationStatus.OPEN,
        source=source,
        order_id=order.id if order else None,
        inspection_id=inspection.id if inspection else None,
        raised_by_id=raised_by_id,
        raised_by=raised_by,
        raised_at=utcnow(),
    )
    await _numbered(session, deviation, "DEV")
    for position, lot in enumerate(lots):
        session.add(DeviationLot(deviation_id=deviation.id, lot_id=lot.id, position=position))
        if lot.status in _HOLDABLE:
            _set_lot_status(uow, lot, LotStatus.ON_HOLD, "lot.hold", deviation=deviation.number)
    await session.flush()
    uow.audit(
        "deviation.raise",
        "Deviation",
        deviation.id,
        {
            "number": deviation.number,
            "title": title,
            "description": description,
            "severity": severity,
            "source": source,
            "lots": [lot.number for lot in lots],
            "order": order.number if order else None,
            "inspection": inspection.number if inspection else None,
            "raisedBy": raised_by,
        },
    )
    _deviation_changed(uow, deviation)
    return deviation


@dataclass(frozen=True)
class SignatureSpec:
    password: str
    meaning: str
    reason: str | None


def signed_content(
    deviation: Deviation,
    lots: Sequence[str],
    decision: DeviationStatus,
    disposition: Disposition | None,
    signer: User,
    meaning: str,
    reason: str,
    at: dt.datetime,
) -> tuple[dict[str, object], str]:
    """What a decision signs, and its SHA-256 (the binding of signature to record)."""
    content: dict[str, object] = jsonable(
        {
            "record": {
                "type": "Deviation",
                "number": deviation.number,
                "title": deviation.title,
                "description": deviation.description,
                "severity": deviation.severity,
                "source": deviation.source,
                "lots": list(lots),
            },
            "decision": decision,
            "disposition": disposition,
            "signer": {"username": signer.username, "displayName": signer.display_name},
            "meaning": meaning,
            "reason": reason,
            "signedAt": at,
        }
    )
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return content, hashlib.sha256(canonical.encode()).hexdigest()


async def _check_signer(uow: UnitOfWork, settings: Settings, password: str) -> User:
    """The signer, re-authenticated by password; failures are counted even though refused."""
    user_id = uow.actor.user_id
    if user_id is None:
        raise DomainError.one(
            ErrorCode.SIGNATURE_INVALID,
            "an electronic signature needs a person signed in, not an API token",
            "signature.password",
        )
    session = uow.session
    user = await session.get(User, user_id)
    assert user is not None
    now = utcnow()
    lock = await session.get(SigningLock, user_id)
    if lock is not None and lock.locked_until is not None and lock.locked_until > now:
        locked_until, username = lock.locked_until, user.username

        async def note_refusal(record: UnitOfWork) -> None:
            # 21 CFR 11.300(d): attempts while locked are reported too, not only the lockout.
            record.audit(
                "signature.refused",
                "User",
                user_id,
                {"username": username, "lockedUntil": locked_until},
            )

        uow.record_even_if_refused(note_refusal)
        raise DomainError.one(
            ErrorCode.SIGNATURE_INVALID,
            f"signing is locked until {lock.locked_until:%H:%M} UTC after repeated wrong passwords",
            "signature.password",
        )
    if await asyncio.to_thread(auth_service.verify_password, user.password_hash, password):
        if lock is not None:
            await session.delete(lock)
        return user

    username = user.username  # the rollback expires `user`; the record runs after it

    async def count_failure(record: UnitOfWork) -> None:
        # Two wrong passwords at once must both count: make sure the row exists, then
        # increment it under a row lock (PostgreSQL; SQLite writers take turns anyway).
        insert = sqlite_insert if record.dialect == "sqlite" else postgresql_insert
        await record.session.execute(
            insert(SigningLock)
            .values(user_id=user_id, failures=0, last_failure_at=now)
            .on_conflict_do_nothing(index_elements=[SigningLock.user_id])
        )
        stmt = select(SigningLock).where(SigningLock.user_id == user_id)
        if record.dialect == "postgresql":
            stmt = stmt.with_for_update()
        row = (await record.session.scalars(stmt.execution_options(populate_existing=True))).one()
        row.failures = (row.failures or 0) + 1
        row.last_failure_at = now
        record.audit(
            "signature.failed", "User", user_id, {"username": username, "failures": row.failures}
        )
        if row.failures >= settings.signing_max_failures:
            row.locked_until = now + dt.timedelta(minutes=settings.signing_lock_minutes)
            row.failures = 0
            record.audit(
                "signature.locked",
                "User",
                user_id,
                {"username": username, "lockedUntil": row.locked_until},
            )

    uow.record_even_if_refused(count_failure)
    raise DomainError.one(
        ErrorCode.SIGNATURE_INVALID,
        "the password is wrong: nothing was signed",
        "signature.password",
    )


async def decide(
    uow: UnitOfWork,
    settings: Settings,
    *,
    number: str,
    approve: bool,
    disposition: Disposition | None,
    signature: SignatureSpec,
) -> Deviation:
    """Approves (with a disposition) or rejects an OPEN deviation, signed by the decider."""
    session = uow.session
    stmt = select(Deviation).where(Deviation.number == number.strip())
    if uow.dialect == "postgresql":
        stmt = stmt.with_for_update()
    deviation = await session.scalar(stmt)
    if deviation is None:
        raise DomainError.one(ErrorCode.NOT_FOUND, f"no deviation {number.strip()!r}", "number")
    if deviation.status is not DeviationStatus.OPEN:
        raise DomainError.one(
            ErrorCode.INVALID_TRANSITION,
            f"deviation {deviation.number} is {deviation.status.value}: "
            "it has been decided already",
            "number",
        )
    problems = Problems()
    if approve and disposition is None:
        problems.invalid("disposition", "say what happens to the material: give a disposition")
    meaning = validation.name(problems, "signature.meaning", signature.meaning)
    reason = validation.text(problems, "signature.reason", signature.reason)
    if reason is None:
        problems.invalid("signature.reason", "say why")
    problems.raise_if_any()
    assert reason is not None
    if (deviation.raised_by_id is not None and deviation.raised_by_id == uow.actor.user_id) or (
        deviation.raised_by_id is None and deviation.raised_by == uow.actor.name
    ):
        raise DomainError.one(
            ErrorCode.SELF_APPROVAL, f"you raised {deviation.number}: another person must decide it"
        )
    signer = await _check_signer(uow, settings, signature.password)
    now = utcnow()
    lots = list(
        await session.scalars(
            select(Lot)
            .join(DeviationLot, DeviationLot.lot_id == Lot.id)
            .where(DeviationLot.deviation_id == deviation.id)
            .order_by(DeviationLot.position)
        )
    )
    decision = DeviationStatus.APPROVED if approve else DeviationStatus.REJECTED
    content, content_hash = signed_content(
        deviation,
        [lot.number for lot in lots],
        decision,
        disposition if approve else None,
        signer,
        meaning,
        reason,
        now,
    )
    deviation.status = decision
    deviation.disposition = disposition if approve else None
    deviation.decided_at = now
    session.add(
        Signature(
            deviation_id=deviation.id,
            signer_id=signer.id,
            signer=signer.username,
            signer_display_name=signer.display_name,
            meaning=meaning,
            reason=reason,
            signed_at=now,
            content_hash=content_hash,
        )
    )
    if approve:
        for lot in lots:
            await _apply_disposition(uow, lot, deviation, disposition)
    await session.flush()
    uow.audit(
        f"deviation.{'approve' if approve else 'reject'}",
        "Deviation",
        deviation.id,
        {
            "number": deviation.number,
            "status": decision,
            "disposition": deviation.disposition,
            "signature": {
                "signer": signer.username,
                "meaning": meaning,
                "reason": reason,
                "signedAt": now,
                "contentHash": content_hash,
            },
            "signedContent": content,
        },
    )
    _deviation_changed(uow, deviation)
    return deviation


async def _apply_disposition(
    uow: UnitOfWork, lot: Lot, deviation: Deviation, disposition: Disposition | None
) -> None:
    if lot.status is not LotStatus.ON_HOLD:
        return  # consumed, expired or already decided elsewhere: leave it
    if disposition in (Disposition.SCRAP, Disposition.RETURN_TO_SUPPLIER):
        _set_lot_status(
            uow,
            lot,
            LotStatus.REJECTED,
            "lot.reject",
            deviation=deviation.number,
            disposition=disposition,
        )
    elif disposition is Disposition.USE_AS_IS:
        # Another open deviation on the same lot still holds it.
        other = await uow.session.scalar(
            select(Deviation.id)
            .join(DeviationLot, DeviationLot.deviation_id == Deviation.id)
            .where(
                DeviationLot.lot_id == lot.id,
                Deviation.status == DeviationStatus.OPEN,
                Deviation.id != deviation.id,
            )
            .limit(1)
        )
        if other is None:
            _set_lot_status(
                uow,
                lot,
                LotStatus.AVAILABLE,
                "lot.release",
                deviation=deviation.number,
                disposition=disposition,
            )


# ---------------------------------------------------------------- reads


async def inspection_by_number(session: AsyncSession, number: str) -> Inspection | None:
    return await session.scalar(select(Inspection).where(Inspection.number == number.strip()))


async def deviation_by_number(session: AsyncSession, number: str) -> Deviation | None:
    return await session.scalar(select(Deviation).where(Deviation.number == number.strip()))


def inspections_query(statuses: Sequence[InspectionStatus] | None) -> Select[Inspection]:
    stmt = select(Inspection)
    if statuses:
        stmt = stmt.where(Inspection.status.in_(list(statuses)))
    return stmt


def deviations_query(statuses: Sequence[DeviationStatus] | None) -> Select[Deviation]:
    stmt = select(Deviation)
    if statuses:
        stmt = stmt.where(Deviation.status.in_(list(statuses)))
    return stmt
