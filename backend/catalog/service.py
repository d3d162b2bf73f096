"""Master data from the ERP: materials with incoming characteristics, work centers, equipment."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from biip import ParseError
from biip.gtin import Gtin
from sqlalchemy import Select, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from backend import validation
from backend.catalog.models import (
    Characteristic,
    CharacteristicKind,
    Equipment,
    Material,
    MaterialKind,
    WorkCenter,
)
from backend.db import utcnow
from backend.errors import DomainError, ErrorCode, Problems
from backend.uow import UnitOfWork

MAX_BATCH = 500
MAX_CYCLE_SECONDS = 1e6


@dataclass
class CharacteristicSpec:
    name: str
    kind: CharacteristicKind
    unit: str | None = None
    nominal: float | None = None
    lower_limit: float | None = None
    upper_limit: float | None = None


@dataclass
class MaterialSpec:
    code: str
    name: str
    kind: MaterialKind
    unit: str
    lot_controlled: bool
    gtin: str | None = None
    shelf_life_days: int | None = None
    incoming_characteristics: list[CharacteristicSpec] | None = None


@dataclass
class EquipmentSpec:
    code: str
    name: str
    ideal_cycle_seconds: float | None = None


@dataclass
class WorkCenterSpec:
    code: str
    name: str
    equipment: list[EquipmentSpec] | None = None


@dataclass
class _Seen:
    codes: dict[str, str] = field(default_factory=dict)

    def once(self, problems: Problems, path: str, key: str, what: str) -> None:
        if key in self.codes:
            problems.invalid(path, f"{what} {key!r} appears twice (also at {self.codes[key]})")
        else:
            self.codes[key] = path


_LOCK_KEYS = text(
    "SELECT pg_advisory_xact_lock(hashtext(:namespace), h) FROM ("
    " SELECT DISTINCT hashtext(k) AS h FROM unnest(CAST(:keys AS text[])) AS k"
    ") AS hashed ORDER BY h"
)


async def serialise(uow: UnitOfWork, namespace: str, keys: Iterable[str]) -> None:
    """Makes transactions that write the same keys (codes, GTINs) wait for each other.

    Without it, two requests creating the same new code at once (an ERP retrying after a
    timeout) both find nothing, both insert, and one fails on the unique index with a fault
    instead of an answer. Locks are taken in hash order, so batches cannot deadlock, and are
    held until commit. SQLite needs none: its writers already run one at a time.
    """
    wanted = sorted(set(keys))
    if wanted and uow.dialect == "postgresql":
        await uow.session.execute(_LOCK_KEYS, {"namespace": namespace, "keys": wanted})


def normalise_gtin(problems: Problems, path: str, value: str | None) -> str | None:
    """A GTIN-8/12/13/14 with a valid check digit, stored as its 14-digit form."""
    if value is None or not value.strip():
        return None
    try:
        return Gtin.parse(value.strip()).as_gtin_14()
    except ParseError as error:
        problems.invalid(path, f"not a valid GTIN: {error}")
        return None


def check_characteristics(
    problems: Problems, path: str, specs: Sequence[CharacteristicSpec]
) -> list[CharacteristicSpec]:
    """Trimmed names, unique per owner; limits finite (of any kind), NUMERIC ones in order."""
    seen = _Seen()
    cleaned = []
    for i, spec in enumerate(specs):
        at = f"{path}.{i}"
        name = validation.name(problems, f"{at}.name", spec.name, max_length=100)
        seen.once(problems, f"{at}.name", name.casefold(), "characteristic")
        unit = validation.text(problems, f"{at}.unit", spec.unit, max_length=20)
        limits_finite = all(
            [  # a list, not a generator: each bad limit is reported
                validation.finite(problems, f"{at}.nominal", spec.nominal),
                validation.finite(problems, f"{at}.lowerLimit", spec.lower_limit),
                validation.finite(problems, f"{at}.upperLimit", spec.upper_limit),
            ]
        )
        if spec.kind is CharacteristicKind.NUMERIC:
            if spec.lower_limit is None and spec.upper_limit is None:
                problems.invalid(at, "a NUMERIC characteristic needs a lower or an upper limit")
            if (
                limits_finite
                and spec.lower_limit is not None
                and spec.upper_limit is not None
                and spec.lower_limit > spec.upper_limit
            ):
                problems.invalid(f"{at}.lowerLimit", "must not be above upperLimit")
        cleaned.append(
            CharacteristicSpec(
                name, spec.kind, unit, spec.nominal, spec.lower_limit, spec.upper_limit
            )
        )
    return cleaned


def characteristic_rows(specs: Sequence[CharacteristicSpec]) -> list[Characteristic]:
    return [
        Characteristic(
            position=i,
            name=s.name,
            kind=s.kind,
            unit=s.unit,
            nominal=s.nominal,
            lower_limit=s.lower_limit,
            upper_limit=s.upper_limit,
        )
        for i, s in enumerate(specs)
    ]


def characteristics_snapshot(rows: Sequence[Characteristic]) -> list[dict[str, object]]:
    return [
        {
            "name": c.name,
            "kind": c.kind.value,
            "unit": c.unit,
            "nominal": c.nominal,
            "lowerLimit": c.lower_limit,
            "upperLimit": c.upper_limit,
        }
        for c in rows
    ]


async def upsert_materials(uow: UnitOfWork, specs: Sequence[MaterialSpec]) -> list[Material]:
    """Creates or updates materials by code, in input order. All or nothing."""
    problems = Problems()
    if len(specs) > MAX_BATCH:
        raise DomainError.one(
            ErrorCode.INVALID_INPUT, f"send at most {MAX_BATCH} materials at once"
        )
    seen_codes, seen_gtins = _Seen(), _Seen()
    cleaned: list[tuple[MaterialSpec, list[CharacteristicSpec] | None]] = []
    for i, spec in enumerate(specs):
        at = f"input.{i}"
        code = validation.code(problems, f"{at}.code", spec.code)
        seen_codes.once(problems, f"{at}.code", code, "material code")
        name = validation.name(problems, f"{at}.name", spec.name)
        unit = validation.code(problems, f"{at}.unit", spec.unit, max_length=20)
        gtin = normalise_gtin(problems, f"{at}.gtin", spec.gtin)
        if gtin:
            seen_gtins.once(problems, f"{at}.gtin", gtin, "GTIN")
        if spec.shelf_life_days is not None and not 0 < spec.shelf_life_days <= 36_500:
            problems.invalid(f"{at}.shelfLifeDays", "must be between 1 and 36500 days")
        chars = (
            None
            if spec.incoming_characteristics is None
            else check_characteristics(
                problems, f"{at}.incomingCharacteristics", spec.incoming_characteristics
            )
        )
        cleaned.append(
            (
                MaterialSpec(
                    code, name, spec.kind, unit, spec.lot_controlled, gtin, spec.shelf_life_days
                ),
                chars,
            )
        )
    problems.raise_if_any()

    session = uow.session
    codes = [s.code for s, _ in cleaned]
    await serialise(
        uow,
        "material",
        [*(f"code:{c}" for c in codes), *(f"gtin:{s.gtin}" for s, _ in cleaned if s.gtin)],
    )
    existing = {
        m.code: m for m in await session.scalars(select(Material).where(Material.code.in_(codes)))
    }
    gtins = [s.gtin for s, _ in cleaned if s.gtin]
    gtin_owner: dict[str, str] = {}
    if gtins:
        rows = await session.execute(
            select(Material.gtin, Material.code).where(Material.gtin.in_(gtins))
        )
        gtin_owner = {gtin: code for gtin, code in rows if gtin is not None}
    for i, (spec, _) in enumerate(cleaned):
        owner = gtin_owner.get(spec.gtin) if spec.gtin else None
        if owner is not None and owner != spec.code:
            problems.add(
                ErrorCode.CONFLICT,
                f"GTIN {spec.gtin} belongs to material {owner}",
                f"input.{i}.gtin",
            )
    problems.raise_if_any()

    now = utcnow()
    materials = dict(existing)
    for spec, _ in cleaned:
        if spec.code not in existing:
            materials[spec.code] = Material(
                code=spec.code, created_at=now, updated_at=now, **_material_fields(spec)
            )
            session.add(materials[spec.code])
    if len(materials) > len(existing):
        await session.flush()  # one batched INSERT gives every new material its id
    replaced = [
        existing[s.code].id for s, chars in cleaned if chars is not None and s.code in existing
    ]
    old_characteristics: dict[int, list[Characteristic]] = {i: [] for i in replaced}
    if replaced:
        for row in await session.scalars(
            select(Characteristic)
            .where(Characteristic.material_id.in_(replaced))
            .order_by(Characteristic.position)
        ):
            old_characteristics[row.material_id].append(row)  # type: ignore[index]

    result = []
    for spec, chars in cleaned:
        material = materials[spec.code]
        fields = _material_fields(spec)
        if spec.code not in existing:
            changes: dict[str, object] = {"code": spec.code, **_camel(fields)}
            action = "material.create"
        else:
            changes = {k: v for k, v in _camel(fields).items() if getattr(material, _snake(k)) != v}
            for key, value in fields.items():
                setattr(material, key, value)
            action = "material.update"
        if chars is not None:
            new_snapshot = characteristics_snapshot(characteristic_rows(chars))
            old = old_characteristics.get(material.id, [])
            if characteristics_snapshot(old) != new_snapshot:
                if old:
                    await session.execute(
                        delete(Characteristic).where(Characteristic.material_id == material.id)
                    )
                for row in characteristic_rows(chars):
                    row.material_id = material.id
                    session.add(row)
                changes["incomingCharacteristics"] = new_snapshot
        if changes or action == "material.create":
            material.updated_at = now
            uow.audit(action, "Material", material.id, changes)
            uow.publish("material", {"id": material.id})
        result.append(material)
    await session.flush()
    return result


def _material_fields(spec: MaterialSpec) -> dict[str, object]:
    return {
        "name": spec.name,
        "kind": spec.kind,
        "unit": spec.unit,
        "gtin": spec.gtin,
        "lot_controlled": spec.lot_controlled,
        "shelf_life_days": spec.shelf_life_days,
    }


async def upsert_work_centers(uow: UnitOfWork, specs: Sequence[WorkCenterSpec]) -> list[WorkCenter]:
    """Creates or updates work centers and their equipment by code.

    Equipment listed under a work center is created or updated and assigned to it (moving it
    from another work center if need be); equipment not listed is left as it is.
    """
    problems = Problems()
    if len(specs) > MAX_BATCH:
        raise DomainError.one(
            ErrorCode.INVALID_INPUT, f"send at most {MAX_BATCH} work centers at once"
        )
    seen_wc, seen_eq = _Seen(), _Seen()
    cleaned: list[tuple[WorkCenterSpec, list[EquipmentSpec] | None]] = []
    for i, spec in enumerate(specs):
        at = f"input.{i}"
        code = validation.code(problems, f"{at}.code", spec.code)
        seen_wc.once(problems, f"{at}.code", code, "work center code")
        name = validation.name(problems, f"{at}.name", spec.name)
        equipment: list[EquipmentSpec] | None = None
        if spec.equipment is not None:
            equipment = []
            for j, eq in enumerate(spec.equipment):
                eat = f"{at}.equipment.{j}"
                eq_code = validation.code(problems, f"{eat}.code", eq.code)
                seen_eq.once(problems, f"{eat}.code", eq_code, "equipment code")
                eq_name = validation.name(problems, f"{eat}.name", eq.name)
                cycle = eq.ideal_cycle_seconds
                cycle_field = f"{eat}.idealCycleSeconds"
                if validation.finite(problems, cycle_field, cycle) and cycle is not None:
                    if cycle <= 0:
                        problems.invalid(f"{eat}.idealCycleSeconds", "must be greater than 0")
                    elif cycle >= MAX_CYCLE_SECONDS:
                        problems.invalid(
                            f"{eat}.idealCycleSeconds",
                            f"must be less than {MAX_CYCLE_SECONDS:.0f} seconds",
                        )
                equipment.append(EquipmentSpec(eq_code, eq_name, eq.ideal_cycle_seconds))
        cleaned.append((WorkCenterSpec(code, name), equipment))
    problems.raise_if_any()

    session = uow.session
    eq_codes = [e.code for _, eqs in cleaned for e in eqs or []]
    await serialise(
        uow, "workCenter", [*(f"wc:{s.code}" for s, _ in cleaned), *(f"eq:{c}" for c in eq_codes)]
    )
    existing = {
        w.code: w
        for w in await session.scalars(
            select(WorkCenter).where(WorkCenter.code.in_([s.code for s, _ in cleaned]))
        )
    }
    existing_eq = (
        {
            e.code: e
            for e in await session.scalars(select(Equipment).where(Equipment.code.in_(eq_codes)))
        }
        if eq_codes
        else {}
    )
    result = []
    for spec, equipment in cleaned:
        wc = existing.get(spec.code)
        if wc is None:
            wc = WorkCenter(code=spec.code, name=spec.name)
            session.add(wc)
            await session.flush()
            uow.audit(
                "workCenter.create", "WorkCenter", wc.id, {"code": spec.code, "name": spec.name}
            )
        elif wc.name != spec.name:
            uow.audit("workCenter.update", "WorkCenter", wc.id, {"name": spec.name})
            wc.name = spec.name
        for eq in equipment or []:
            row = existing_eq.get(eq.code)
            if row is None:
                row = Equipment(
                    code=eq.code,
                    name=eq.name,
                    ideal_cycle_seconds=eq.ideal_cycle_seconds,
                    work_center_id=wc.id,
                )
                session.add(row)
                await session.flush()
                uow.audit(
                    "equipment.create",
                    "Equipment",
                    row.id,
                    {
                        "code": eq.code,
                        "name": eq.name,
                        "idealCycleSeconds": eq.ideal_cycle_seconds,
                        "workCenter": wc.code,
                    },
                )
                continue
            changes: dict[str, object] = {}
            if row.name != eq.name:
                changes["name"] = row.name = eq.name
            if row.ideal_cycle_seconds != eq.ideal_cycle_seconds:
                changes["idealCycleSeconds"] = row.ideal_cycle_seconds = eq.ideal_cycle_seconds
            if row.work_center_id != wc.id:
                row.work_center_id = wc.id
                changes["workCenter"] = wc.code
            if changes:
                uow.audit("equipment.update", "Equipment", row.id, changes)
        result.append(wc)
    await session.flush()
    return result


def _camel(fields: dict[str, object]) -> dict[str, object]:
    out = {}
    for key, value in fields.items():
        head, *rest = key.split("_")
        out[head + "".join(p.title() for p in rest)] = value
    return out


def _snake(key: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in key)


# ---------------------------------------------------------------- reads


def materials_query(search: str | None) -> Select[Material]:
    stmt = select(Material)
    if search and search.strip():
        # autoescape: a `%` or `_` typed by a user is a character to find, not a wildcard.
        term = search.strip().lower()
        stmt = stmt.where(
            or_(
                func.lower(Material.code).contains(term, autoescape=True),
                func.lower(Material.name).contains(term, autoescape=True),
            )
        )
    return stmt


async def material_by_code(session: AsyncSession, code: str) -> Material | None:
    return await session.scalar(select(Material).where(Material.code == code.strip()))


async def work_centers(session: AsyncSession) -> list[WorkCenter]:
    return list(await session.scalars(select(WorkCenter).order_by(WorkCenter.code)))


async def equipment_by_code(session: AsyncSession, code: str) -> Equipment | None:
    return await session.scalar(select(Equipment).where(Equipment.code == code.strip()))
