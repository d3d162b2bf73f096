"""The electronic batch record of a production order: one document, as data and as HTML.

What a reviewer releasing a batch reads: the order, every lot consumed into it (who scanned
it, when it was scanned and when the server received it), the operations with who started
and completed them, every inspection and result, every deviation with its signatures, the
lots produced — and, first, the review by exception: what departs from the normal path
(out-of-spec results, deviations, late entries, expired or held material refused at scan),
so a reviewer checks those and need not re-read every line.

`build` reads everything with a fixed number of statements whatever the size of the order
(no query per consumption, inspection or deviation), and returns plain JSON-able data;
`render_html` prints that data as a self-contained, print-friendly page.
"""

from __future__ import annotations

import datetime as dt
import html
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from backend.audit import service as audit_service
from backend.audit.models import AuditEntry
from backend.auth.models import ApiToken, User
from backend.catalog.models import Characteristic, Material, WorkCenter
from backend.db import utcnow
from backend.lots.barcode import BarcodeError, parse_code
from backend.lots.models import Consumption, Lot
from backend.orders.models import OrderComponent, OrderOperation, ProductionOrder
from backend.quality.models import (
    Deviation,
    DeviationLot,
    Inspection,
    InspectionResult,
    Signature,
)
from backend.replay import service as replay_service
from backend.replay.models import MutationOutcome
from backend.replay.service import Subject

# Refusals that mean "this material must not be used": the review-by-exception kind.
REFUSED_MATERIAL_CODES = ("LOT_EXPIRED", "LOT_UNAVAILABLE")
_OPERATION_ACTIONS = ("operation.start", "operation.complete")

Record = dict[str, Any]


def _at(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def _qty(value: Decimal | None) -> str | None:
    """A quantity exactly, without the storage's trailing zeros ("12.5", not "12.500000")."""
    if value is None:
        return None
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "") else text


# ---------------------------------------------------------------- reading


async def build(
    session: AsyncSession,
    order_number: str,
    *,
    gs_stand_ins: str = "",
    generated_by: str | None = None,
) -> Record | None:
    """The batch record of the order numbered `order_number`, or None when there is none.

    `gs_stand_ins` (the server's setting) reads the codes of refused scans as the scan did;
    `generated_by` names who asked for the record.
    """
    found = (
        await session.execute(
            select(ProductionOrder, Material, WorkCenter)
            .join(Material, Material.id == ProductionOrder.product_id)
            .outerjoin(WorkCenter, WorkCenter.id == ProductionOrder.work_center_id)
            .where(ProductionOrder.number == order_number.strip())
        )
    ).first()
    if found is None:
        return None
    order, product, work_center = found

    consumed_lot_ids = select(Consumption.lot_id).where(Consumption.order_id == order.id)
    produced_lot_ids = select(Lot.id).where(Lot.produced_by_order_id == order.id)
    # Every lot the record is about: consumed into the order or produced by it.
    lot_ids = union(consumed_lot_ids, produced_lot_ids)

    components = (
        await session.execute(
            select(OrderComponent, Material)
            .join(Material, Material.id == OrderComponent.material_id)
            .where(OrderComponent.order_id == order.id)
            .order_by(OrderComponent.position)
        )
    ).all()
    consumptions = (
        await session.execute(
            select(Consumption, Lot, Material)
            .join(Lot, Lot.id == Consumption.lot_id)
            .join(Material, Material.id == Lot.material_id)
            .where(Consumption.order_id == order.id)
            .order_by(Consumption.consumed_at, Consumption.id)
        )
    ).all()
    consumption_rows = [_consumption(c, lot, material) for c, lot, material in consumptions]
    produced = [
        _produced(lot, product)
        for lot in await session.scalars(
            select(Lot).where(Lot.produced_by_order_id == order.id).order_by(Lot.id)
        )
    ]
    operations = await _operations(session, order)
    inspections = await _inspections(session, order, lot_ids)
    deviations = await _deviations(session, order, lot_ids)
    refused = await _refused_scans(session, order, gs_stand_ins)

    out_of_spec = [
        {
            "inspection": inspection["number"],
            "subject": inspection["subject"],
            **result,
        }
        for inspection in inspections
        for result in inspection["results"]
        if not result["passed"]
    ]
    exceptions: Record = {
        "outOfSpecResults": out_of_spec,
        "deviations": [
            {k: d[k] for k in ("number", "title", "severity", "status", "disposition", "source")}
            | {"raisedBy": d["raisedBy"], "raisedAt": d["raisedAt"], "lots": d["lots"]}
            for d in deviations
        ],
        "lateEntries": [
            {
                k: c[k]
                for k in (
                    "lotNumber",
                    "material",
                    "quantity",
                    "unit",
                    "consumedBy",
                    "consumedAt",
                    "recordedAt",
                    "lateByHours",
                )
            }
            for c in consumption_rows
            if c["lateEntry"]
        ],
        "refusedScans": refused,
    }
    exceptions["count"] = sum(len(v) for v in exceptions.values())
    verification = await audit_service.verify(session)
    return {
        "generatedAt": _at(utcnow()),
        "generatedBy": generated_by,
        "order": {
            "number": order.number,
            "externalId": order.external_id,
            "product": {"code": product.code, "name": product.name, "unit": product.unit},
            "quantityPlanned": _qty(order.quantity),
            "quantityGood": _qty(order.quantity_good),
            "quantityScrap": _qty(order.quantity_scrap),
            "unit": product.unit,
            "status": order.status.value,
            "priority": order.priority,
            "workCenter": (
                {"code": work_center.code, "name": work_center.name} if work_center else None
            ),
            "dueAt": _at(order.due_at),
            "createdAt": _at(order.created_at),
            "updatedAt": _at(order.updated_at),
        },
        "auditTrail": {
            "valid": verification.valid,
            "entries": verification.entries,
            "firstInvalidSequence": verification.first_invalid_sequence,
        },
        "exceptions": exceptions,
        "components": [
            {
                "position": component.position,
                "material": {"code": material.code, "name": material.name},
                "quantityRequired": _qty(component.quantity_required),
                "quantityConsumed": _qty(component.quantity_consumed),
                "unit": material.unit,
                "operationSequence": component.operation_sequence,
            }
            for component, material in components
        ],
        "consumptions": consumption_rows,
        "operations": operations,
        "inspections": inspections,
        "deviations": deviations,
        "producedLots": produced,
    }


def _consumption(c: Consumption, lot: Lot, material: Material) -> Record:
    late_by = (c.recorded_at - c.consumed_at).total_seconds() / 3600
    return {
        "lotNumber": lot.number,
        "material": {"code": material.code, "name": material.name},
        "quantity": _qty(c.quantity),
        "unit": material.unit,
        "lotExpiresAt": _at(lot.expires_at),
        "supplierLot": lot.supplier_lot,
        "operationSequence": c.operation_sequence,
        "consumedBy": c.consumed_by,
        "consumedAt": _at(c.consumed_at),
        "recordedAt": _at(c.recorded_at),
        "lateEntry": c.late_entry,
        "lateByHours": round(late_by, 1) if c.late_entry else None,
    }


def _produced(lot: Lot, product: Material) -> Record:
    return {
        "number": lot.number,
        "material": {"code": product.code, "name": product.name},
        "quantity": _qty(lot.initial_quantity),
        "quantityLeft": _qty(lot.quantity),
        "unit": product.unit,
        "expiresAt": _at(lot.expires_at),
        "status": lot.status.value,
        "createdBy": lot.created_by,
        "createdAt": _at(lot.created_at),
    }


async def _operations(session: AsyncSession, order: ProductionOrder) -> list[Record]:
    rows = (
        await session.execute(
            select(OrderOperation, WorkCenter.code)
            .outerjoin(WorkCenter, WorkCenter.id == OrderOperation.work_center_id)
            .where(OrderOperation.order_id == order.id)
            .order_by(OrderOperation.sequence)
        )
    ).all()
    operations = list(rows)
    # Operation rows keep when, not who: the audit trail's entries say who started and who
    # completed each operation.
    actors: dict[tuple[str, str], tuple[str, dt.datetime]] = {}
    if operations:
        entries = await session.execute(
            select(AuditEntry.entity_id, AuditEntry.action, AuditEntry.actor, AuditEntry.at)
            .where(
                AuditEntry.entity_type == "OrderOperation",
                AuditEntry.entity_id.in_([str(op.id) for op, _ in operations]),
                AuditEntry.action.in_(_OPERATION_ACTIONS),
            )
            .order_by(AuditEntry.sequence)
        )
        for entity_id, action, actor, at in entries.all():
            actors[(entity_id, action)] = (actor, at)
    result = []
    for op, work_center_code in operations:
        started = actors.get((str(op.id), "operation.start"))
        completed = actors.get((str(op.id), "operation.complete"))
        result.append(
            {
                "sequence": op.sequence,
                "name": op.name,
                "workCenter": work_center_code,
                "status": op.status.value,
                "startedBy": started[0] if started else None,
                "startedAt": _at(op.started_at or (started[1] if started else None)),
                "completedBy": completed[0] if completed else None,
                "completedAt": _at(op.completed_at or (completed[1] if completed else None)),
                "quantityGood": _qty(op.quantity_good),
                "quantityScrap": _qty(op.quantity_scrap),
                "scrapReason": op.scrap_reason,
            }
        )
    return result


async def _inspections(session: AsyncSession, order: ProductionOrder, lot_ids: Any) -> list[Record]:
    """Inspections of the order's operations and of the lots it consumed or produced."""
    rows = list(
        (
            await session.execute(
                select(Inspection, Lot.number, Material.code, OrderOperation)
                .outerjoin(Lot, Lot.id == Inspection.lot_id)
                .outerjoin(Material, Material.id == Lot.material_id)
                .outerjoin(OrderOperation, OrderOperation.id == Inspection.operation_id)
                .where(or_(Inspection.order_id == order.id, Inspection.lot_id.in_(lot_ids)))
                .order_by(Inspection.id)
            )
        ).all()
    )
    results: dict[int, list[Record]] = defaultdict(list)
    if rows:
        found = await session.execute(
            select(InspectionResult, Characteristic)
            .join(Characteristic, Characteristic.id == InspectionResult.characteristic_id)
            .where(InspectionResult.inspection_id.in_([i.id for i, *_ in rows]))
            .order_by(InspectionResult.inspection_id, Characteristic.position, InspectionResult.id)
        )
        for result, characteristic in found.all():
            results[result.inspection_id].append(
                {
                    "characteristic": characteristic.name,
                    "kind": characteristic.kind.value,
                    "value": result.value,
                    "unit": characteristic.unit,
                    "nominal": characteristic.nominal,
                    "lowerLimit": characteristic.lower_limit,
                    "upperLimit": characteristic.upper_limit,
                    "passed": result.passed,
                    "note": result.note,
                    "recordedBy": result.recorded_by,
                    "recordedAt": _at(result.recorded_at),
                }
            )
    inspections = []
    for inspection, lot_number, material_code, operation in rows:
        if operation is not None:
            subject = f"operation {operation.sequence} {operation.name}"
        else:
            subject = f"lot {lot_number} ({material_code})"
        inspections.append(
            {
                "number": inspection.number,
                "kind": "OPERATION" if inspection.operation_id is not None else "LOT",
                "subject": subject,
                "lotNumber": lot_number,
                "operationSequence": operation.sequence if operation is not None else None,
                "status": inspection.status.value,
                "createdBy": inspection.created_by,
                "createdAt": _at(inspection.created_at),
                "completedAt": _at(inspection.completed_at),
                "results": results.get(inspection.id, []),
            }
        )
    return inspections


async def _deviations(session: AsyncSession, order: ProductionOrder, lot_ids: Any) -> list[Record]:
    """Deviations raised on the order (or its operations' inspections) or on its lots."""
    rows = list(
        (
            await session.execute(
                select(Deviation, Inspection.number)
                .outerjoin(Inspection, Inspection.id == Deviation.inspection_id)
                .where(
                    or_(
                        Deviation.order_id == order.id,
                        Deviation.id.in_(
                            select(DeviationLot.deviation_id).where(
                                DeviationLot.lot_id.in_(lot_ids)
                            )
                        ),
                    )
                )
                .order_by(Deviation.id)
            )
        ).all()
    )
    lots: dict[int, list[str]] = defaultdict(list)
    signatures: dict[int, list[Record]] = defaultdict(list)
    if rows:
        ids = [d.id for d, _ in rows]
        for deviation_id, number in (
            await session.execute(
                select(DeviationLot.deviation_id, Lot.number)
                .join(Lot, Lot.id == DeviationLot.lot_id)
                .where(DeviationLot.deviation_id.in_(ids))
                .order_by(DeviationLot.deviation_id, DeviationLot.position)
            )
        ).all():
            lots[deviation_id].append(number)
        for signature in await session.scalars(
            select(Signature).where(Signature.deviation_id.in_(ids)).order_by(Signature.id)
        ):
            signatures[signature.deviation_id].append(
                {
                    "signer": signature.signer,
                    "signerName": signature.signer_display_name,
                    "meaning": signature.meaning,
                    "reason": signature.reason,
                    "signedAt": _at(signature.signed_at),
                    "contentHash": signature.content_hash,
                }
            )
    return [
        {
            "number": d.number,
            "title": d.title,
            "description": d.description,
            "severity": d.severity.value,
            "status": d.status.value,
            "source": d.source.value,
            "disposition": d.disposition.value if d.disposition else None,
            "inspection": inspection_number,
            "lots": lots.get(d.id, []),
            "raisedBy": d.raised_by,
            "raisedAt": _at(d.raised_at),
            "decidedAt": _at(d.decided_at),
            "signatures": signatures.get(d.id, []),
        }
        for d, inspection_number in rows
    ]


async def _refused_scans(
    session: AsyncSession, order: ProductionOrder, gs_stand_ins: str
) -> list[Record]:
    """Scans into the order refused because the material was expired or not AVAILABLE."""
    outcomes = [
        (outcome, error)
        for outcome in await replay_service.refusals(
            session, "scanLot", Subject("ProductionOrder", order.number)
        )
        for error in outcome.outcome.get("errors", [])
        if error.get("code") in REFUSED_MATERIAL_CODES
    ]
    if not outcomes:
        return []
    who = await _principal_names(session, [o.principal for o, _ in outcomes])
    codes = {id(o): _scanned_code(o) for o, _ in outcomes}
    numbers = {
        key: _lot_number(code, gs_stand_ins) for key, code in codes.items() if code is not None
    }
    materials: dict[str, tuple[str, str]] = {}
    wanted = sorted({n for n in numbers.values() if n})
    if wanted:
        found = await session.execute(
            select(Lot.number, Material.code, Material.name)
            .join(Material, Material.id == Lot.material_id)
            .where(Lot.number.in_(wanted))
        )
        materials = {number: (code, name) for number, code, name in found.all()}
    refused = []
    for outcome, error in outcomes:
        request = outcome.request or {}
        number = numbers.get(id(outcome))
        material = materials.get(number) if number else None
        refused.append(
            {
                "code": error["code"],
                "message": error.get("message"),
                "scannedCode": codes[id(outcome)],
                "lotNumber": number,
                "material": {"code": material[0], "name": material[1]} if material else None,
                "by": who.get(outcome.principal, outcome.principal),
                # No scannedAt: the scan was made when the server received it.
                "scannedAt": request.get("scanned_at") or _at(outcome.created_at),
                "at": _at(outcome.created_at),
            }
        )
    return refused


def _scanned_code(outcome: MutationOutcome) -> str | None:
    code = (outcome.request or {}).get("code")
    return code if isinstance(code, str) else None


def _lot_number(code: str, gs_stand_ins: str) -> str | None:
    try:
        return parse_code(code, gs_stand_ins=gs_stand_ins).lot_number
    except (BarcodeError, ValueError):
        return None


async def _principal_names(session: AsyncSession, keys: Iterable[str]) -> dict[str, str]:
    """User and token names for stored principal keys ("user:12", "token:3")."""
    users: set[int] = set()
    tokens: set[int] = set()
    for key in keys:
        kind, _, pk = key.partition(":")
        if pk.isdigit() and kind == "user":
            users.add(int(pk))
        elif pk.isdigit() and kind == "token":
            tokens.add(int(pk))
    names: dict[str, str] = {}
    if users:
        for user_id, username in (
            await session.execute(select(User.id, User.username).where(User.id.in_(users)))
        ).all():
            names[f"user:{user_id}"] = username
    if tokens:
        for token_id, name in (
            await session.execute(select(ApiToken.id, ApiToken.name).where(ApiToken.id.in_(tokens)))
        ).all():
            names[f"token:{token_id}"] = name
    return names


# ---------------------------------------------------------------- printing

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 10.5pt/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #111; margin: 1.5rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .4rem; border-bottom: 2px solid #222;
     padding-bottom: .15rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
table { border-collapse: collapse; width: 100%; margin: .3rem 0 .8rem; }
th, td { border: 1px solid #999; padding: .2rem .35rem; text-align: left;
         vertical-align: top; }
th { background: #eee; font-weight: 600; }
.title { display: grid; grid-template-columns: max-content 1fr max-content 1fr;
         gap: .15rem .8rem; border: 2px solid #222; padding: .6rem .8rem; }
.title dt { font-weight: 600; }
.title dd { margin: 0; }
.exceptions { border: 2px solid #a00; padding: .2rem .8rem .6rem; }
.exceptions h2 { border-color: #a00; color: #a00; }
.ok { color: #065f17; font-weight: 600; }
.bad { color: #a00; font-weight: 600; }
.muted { color: #555; }
.hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 8.5pt;
        word-break: break-all; }
footer { margin-top: 2rem; font-size: 9pt; color: #555; }
@media print {
  body { margin: 0; max-width: none; font-size: 9.5pt; }
  h2 { break-after: avoid; }
  tr, .signature { break-inside: avoid; }
  thead { display: table-header-group; }
  th { background: #eee !important; -webkit-print-color-adjust: exact;
       print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
  @page { size: A4 landscape; margin: 12mm; }
}
"""


def _e(value: object) -> str:
    """Any value as escaped text; control characters (a GS separator) made visible."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value).replace("\x1d", "<GS>")
    return html.escape(text, quote=True)


def _when(value: str | None) -> str:
    if not value:
        return "—"
    moment = dt.datetime.fromisoformat(value).astimezone(dt.UTC)
    return html.escape(f"{moment:%Y-%m-%d %H:%M:%S} UTC")


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """A table of already-escaped cells, or the `empty` sentence when there are no rows."""
    body = []
    for row in rows:
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    if not body:
        return f'<p class="muted">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _limits(result: Record) -> str:
    low, high, unit = result["lowerLimit"], result["upperLimit"], result["unit"]
    if low is None and high is None:
        return "—"
    text = f"{'' if low is None else low} … {'' if high is None else high}"
    return _e(f"{text} {unit}" if unit else text)


def _value(result: Record) -> str:
    if result["kind"] == "ATTRIBUTE" and result["value"] is None:
        return _e("pass" if result["passed"] else "fail")
    unit = result["unit"]
    return _e(f"{result['value']} {unit}" if unit else result["value"])


def _passed(passed: bool) -> str:
    return '<span class="ok">pass</span>' if passed else '<span class="bad">FAIL</span>'


def _exceptions_html(exceptions: Record) -> str:
    parts = [
        '<section class="exceptions"><h2>Review by exception</h2>',
        f"<p>{_e(exceptions['count'])} exception(s) to review before release.</p>",
        "<h3>Out-of-spec results</h3>",
        _table(
            ["Inspection", "Subject", "Characteristic", "Value", "Limits", "Note", "By", "At"],
            (
                [
                    _e(r["inspection"]),
                    _e(r["subject"]),
                    _e(r["characteristic"]),
                    _value(r),
                    _limits(r),
                    _e(r["note"]),
                    _e(r["recordedBy"]),
                    _when(r["recordedAt"]),
                ]
                for r in exceptions["outOfSpecResults"]
            ),
            "None.",
        ),
        "<h3>Deviations</h3>",
        _table(
            ["Number", "Title", "Severity", "Status", "Disposition", "Lots", "Raised by", "At"],
            (
                [
                    _e(d["number"]),
                    _e(d["title"]),
                    _e(d["severity"]),
                    _e(d["status"]),
                    _e(d["disposition"]),
                    _e(", ".join(d["lots"])),
                    _e(d["raisedBy"]),
                    _when(d["raisedAt"]),
                ]
                for d in exceptions["deviations"]
            ),
            "None.",
        ),
        "<h3>Late entries (scanned long before the server received them)</h3>",
        _table(
            ["Lot", "Material", "Quantity", "By", "Scanned", "Received", "Late by (h)"],
            (
                [
                    _e(c["lotNumber"]),
                    _e(c["material"]["code"]),
                    f"{_e(c['quantity'])} {_e(c['unit'])}",
                    _e(c["consumedBy"]),
                    _when(c["consumedAt"]),
                    _when(c["recordedAt"]),
                    _e(c["lateByHours"]),
                ]
                for c in exceptions["lateEntries"]
            ),
            "None.",
        ),
        "<h3>Expired or unavailable material refused at scan</h3>",
        _table(
            ["Refusal", "Lot", "Material", "Message", "By", "Scanned", "Refused at"],
            (
                [
                    _e(r["code"]),
                    _e(r["lotNumber"] or r["scannedCode"]),
                    _e(r["material"]["code"] if r["material"] else None),
                    _e(r["message"]),
                    _e(r["by"]),
                    _when(r["scannedAt"]),
                    _when(r["at"]),
                ]
                for r in exceptions["refusedScans"]
            ),
            "None.",
        ),
        "</section>",
    ]
    return "".join(parts)


def _inspection_html(inspection: Record) -> str:
    i = inspection
    return (
        f"<h3>{_e(i['number'])}: {_e(i['subject'])} — {_e(i['status'])}</h3>"
        f'<p class="muted">Started by {_e(i["createdBy"])} at {_when(i["createdAt"])}; '
        f"decided {_when(i['completedAt'])}.</p>"
    ) + _table(
        ["Characteristic", "Value", "Limits", "Result", "Note", "By", "At"],
        (
            [
                _e(r["characteristic"]),
                _value(r),
                _limits(r),
                _passed(r["passed"]),
                _e(r["note"]),
                _e(r["recordedBy"]),
                _when(r["recordedAt"]),
            ]
            for r in i["results"]
        ),
        "No results recorded.",
    )


def _deviation_html(deviation: Record) -> str:
    d = deviation
    facts = [_e(d["severity"]), _e(d["status"])]
    if d["disposition"]:
        facts.append(f"disposition {_e(d['disposition'])}")
    facts.append(f"source {_e(d['source'])}")
    if d["inspection"]:
        facts.append(f"inspection {_e(d['inspection'])}")
    facts.append(f"lots {_e(', '.join(d['lots']))}")
    facts.append(f"raised by {_e(d['raisedBy'])} at {_when(d['raisedAt'])}")
    description = f"<p>{_e(d['description'])}</p>" if d["description"] else ""
    return (
        f"<h3>{_e(d['number'])}: {_e(d['title'])}</h3><p>{'; '.join(facts)}.</p>{description}"
    ) + _table(
        ["Signed by", "Meaning", "Reason", "Signed at", "Content hash (SHA-256)"],
        (
            [
                f"{_e(s['signerName'])} ({_e(s['signer'])})",
                _e(s["meaning"]),
                _e(s["reason"]),
                _when(s["signedAt"]),
                f'<span class="hash">{_e(s["contentHash"])}</span>',
            ]
            for s in d["signatures"]
        ),
        "Not signed: the deviation is still open.",
    )


def render_html(record: Record) -> str:
    """The record as a self-contained HTML page to read on screen or print (no scripts, no
    external assets; every value escaped)."""
    order = record["order"]
    trail = record["auditTrail"]
    title = f"Batch record {order['number']}"
    trail_text = (
        f'<span class="ok">intact</span> ({_e(trail["entries"])} entries verified)'
        if trail["valid"]
        else f'<span class="bad">BROKEN at entry {_e(trail["firstInvalidSequence"])}</span>'
    )
    work_center = order["workCenter"]
    fields = [
        ("Order", _e(order["number"])),
        ("ERP id", _e(order["externalId"])),
        ("Product", f"{_e(order['product']['code'])} — {_e(order['product']['name'])}"),
        ("Status", _e(order["status"])),
        ("Planned", f"{_e(order['quantityPlanned'])} {_e(order['unit'])}"),
        ("Good / scrap", f"{_e(order['quantityGood'])} / {_e(order['quantityScrap'])}"),
        (
            "Work center",
            f"{_e(work_center['code'])} — {_e(work_center['name'])}" if work_center else "—",
        ),
        ("Due", _when(order["dueAt"])),
        ("Created", _when(order["createdAt"])),
        ("Last change", _when(order["updatedAt"])),
        ("Generated", _when(record["generatedAt"])),
        ("Generated for", _e(record["generatedBy"])),
        ("Audit trail", trail_text),
    ]
    title_block = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in fields)

    components = _table(
        ["Pos.", "Material", "Required", "Consumed", "Operation"],
        (
            [
                _e(c["position"]),
                f"{_e(c['material']['code'])} — {_e(c['material']['name'])}",
                f"{_e(c['quantityRequired'])} {_e(c['unit'])}",
                f"{_e(c['quantityConsumed'])} {_e(c['unit'])}",
                _e(c["operationSequence"]),
            ]
            for c in record["components"]
        ),
        "The order has no components.",
    )
    consumptions = _table(
        ["Lot", "Material", "Quantity", "Lot expiry", "Op.", "By", "Scanned", "Received", "Late"],
        (
            [
                _e(c["lotNumber"]),
                f"{_e(c['material']['code'])} — {_e(c['material']['name'])}",
                f"{_e(c['quantity'])} {_e(c['unit'])}",
                _when(c["lotExpiresAt"]),
                _e(c["operationSequence"]),
                _e(c["consumedBy"]),
                _when(c["consumedAt"]),
                _when(c["recordedAt"]),
                '<span class="bad">LATE</span>' if c["lateEntry"] else "no",
            ]
            for c in record["consumptions"]
        ),
        "No material was consumed.",
    )
    operations = _table(
        [
            "Seq.",
            "Operation",
            "Status",
            "Started by",
            "Started",
            "Completed by",
            "Completed",
            "Good",
            "Scrap",
            "Scrap reason",
        ],
        (
            [
                _e(o["sequence"]),
                _e(o["name"]),
                _e(o["status"]),
                _e(o["startedBy"]),
                _when(o["startedAt"]),
                _e(o["completedBy"]),
                _when(o["completedAt"]),
                _e(o["quantityGood"]),
                _e(o["quantityScrap"]),
                _e(o["scrapReason"]),
            ]
            for o in record["operations"]
        ),
        "The order has no operations.",
    )
    inspections = "".join(_inspection_html(i) for i in record["inspections"]) or (
        '<p class="muted">No inspections.</p>'
    )
    deviations = "".join(_deviation_html(d) for d in record["deviations"]) or (
        '<p class="muted">No deviations.</p>'
    )
    produced = _table(
        ["Lot", "Material", "Quantity", "Left", "Expiry", "Status", "By", "At"],
        (
            [
                _e(p["number"]),
                _e(p["material"]["code"]),
                f"{_e(p['quantity'])} {_e(p['unit'])}",
                _e(p["quantityLeft"]),
                _when(p["expiresAt"]),
                _e(p["status"]),
                _e(p["createdBy"]),
                _when(p["createdAt"]),
            ]
            for p in record["producedLots"]
        ),
        "No lots produced.",
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Electronic batch record — {_e(order['number'])}</h1>"
        f'<dl class="title">{title_block}</dl></header>'
        f"{_exceptions_html(record['exceptions'])}"
        f"<h2>Bill of materials</h2>{components}"
        f"<h2>Consumed lots</h2>{consumptions}"
        f"<h2>Operations</h2>{operations}"
        f"<h2>Inspections</h2>{inspections}"
        f"<h2>Deviations</h2>{deviations}"
        f"<h2>Produced lots</h2>{produced}"
        f"<footer>Generated {_when(record['generatedAt'])} from the MES records of order "
        f"{_e(order['number'])}. Times are UTC. Each signature's content hash binds it to the "
        "signed record; the audit trail's hash chain was verified when this page was made."
        "</footer></body></html>\n"
    )
