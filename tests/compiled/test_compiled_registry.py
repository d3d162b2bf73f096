"""`Registry.bind` refuses declarations it could not print exactly: a Float from anything but
a double precision column read as a float, a ToOne fallback that does not give every field
the target type declares."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import (
    DOUBLE_PRECISION,
    REAL,
    Column,
    Double,
    Float,
    Integer,
    MetaData,
    Numeric,
    Table,
)

from backend.auth.models import User
from backend.auth.schema import UserType
from backend.catalog.schema import CharacteristicType
from backend.compiled.registry import Col, FixedId, GlobalId, MappingError, Registry, ToOne
from backend.graphql import build_schema
from backend.quality.models import Deviation
from backend.quality.schema import DeviationType
from backend.settings import Settings


def _model(column_type: Any) -> Any:
    """A stand-in model: what `bind` reads of one (its table and the table's name)."""
    table = Table("limits", MetaData(), Column("id", Integer, primary_key=True))
    table.append_column(Column("nominal", column_type))
    return SimpleNamespace(__table__=table, __tablename__=table.name)


@pytest.mark.parametrize("column_type", [Float(), Float(53), Double(), DOUBLE_PRECISION()])
def test_a_float_from_a_double_precision_column(settings: Settings, column_type: Any) -> None:
    registry = Registry()
    registry.table(CharacteristicType, _model(column_type), {"nominal": Col()})
    bound = registry.bind(build_schema(settings))
    assert bound.tables["Characteristic"].fields["nominal"].printer == "float"


@pytest.mark.parametrize(
    "column_type", [REAL(), Float(24), Float(asdecimal=True), Numeric(10, 2), Integer()]
)
def test_no_float_from_other_columns(settings: Settings, column_type: Any) -> None:
    """A real's value reaches Python widened to a double (its shortest digits are not the
    real's); asdecimal and numeric give Decimals; an integer column is not a Float."""
    registry = Registry()
    registry.table(CharacteristicType, _model(column_type), {"nominal": Col()})
    with pytest.raises(MappingError, match="a Float field from"):
        registry.bind(build_schema(settings))


def test_a_fallback_gives_every_field_of_the_target(settings: Settings) -> None:
    schema = build_schema(settings)
    complete = {
        "id": FixedId("User", 0),
        "username": Col("raised_by"),
        "display_name": Col("raised_by"),
    }
    for fallback, error in [
        (complete, None),
        ({"id": FixedId("User", 0), "username": Col("raised_by")}, "must give each"),
        ({**complete, "username": Col("no_such_column")}, "no column"),
        ({**complete, "username": FixedId("User", 0)}, "a fixed id is an ID"),
    ]:
        registry = Registry()
        registry.table(
            UserType, User, {"id": GlobalId("User"), "username": Col(), "display_name": Col()}
        )
        registry.table(
            DeviationType, Deviation, {"raised_by": ToOne("raised_by_id", fallback=fallback)}
        )
        if error is None:
            bound = registry.bind(schema)
            assert bound.tables["Deviation"].fields["raisedBy"].fallback is not None
        else:
            with pytest.raises(MappingError, match=error):
                registry.bind(schema)
