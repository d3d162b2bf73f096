"""The declarative mapping from GraphQL types and root fields to tables and columns.

Each domain declares its part once, next to its types (`backend/<domain>/compiled.py`):

    REGISTRY.table(MaterialType, Material, {"id": GlobalId("Material"), "code": Col(), ...})
    REGISTRY.table(ProductionOrderType, ProductionOrder, {
        "product": ToOne("product_id"),
        "operations": ToMany("order_id", order_by=("sequence",)), ...})
    REGISTRY.connection(OrdersQuery, "production_orders", ProductionOrder, filters={...})
    REGISTRY.lookup(OrdersQuery, "production_order", ProductionOrder, filters={...})
    REGISTRY.listing(CatalogQuery, "work_centers", WorkCenter, order_by=("code",))
    "lots": ToManyThrough(DeviationLot, "deviation_id", "lot_id", order_by=("position",))
    "trace": ToManyFrom(TRACE_SQL, {"max_depth": Arg("int4", convert)}, order_by=("depth", "id"))
    "raised_by": ToOne("raised_by_id", fallback={"id": FixedId("User", 0), "username": Col(...)})
    "events": ToManyPage("equipment_id", filters={"kinds": Filter('{t}."kind" = ANY({p})', ...)})

Names are the Python attribute names of the Strawberry types. A field that is not declared is
not compilable: a document that selects it runs through the resolvers. `bind` checks every
declaration against the schema and the models (the column exists, its type prints exactly as
Strawberry serialises the field) and fails loudly at startup when one does not.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
)
from sqlalchemy import REAL, Float, Integer, String, Text
from sqlalchemy import Boolean as SqlBoolean
from sqlalchemy import Enum as SqlEnum

from backend.db import Quantity, UTCDateTime, largest_key


class MappingError(RuntimeError):
    """A declaration that does not fit the schema or the models."""


@dataclass(frozen=True)
class Col:
    """A scalar field read from a column (by default the field's own Python name)."""

    column: str | None = None


@dataclass(frozen=True)
class GlobalId:
    """The `id` of a Node: `to_global_id(type_name, <column>)`."""

    type_name: str
    column: str = "id"


@dataclass(frozen=True)
class FixedId:
    """A global id with a fixed key, `to_global_id(type_name, key)`: in a ToOne's fallback."""

    type_name: str
    key: int


@dataclass(frozen=True)
class ToOne:
    """An object field through a foreign key on this table (to the target's `id`). Without a
    `fallback` it is null when there is no target row; with one, the resolver's stand-in
    object is printed instead: each of the target's compilable fields (Python names) from a
    column of *this* row (`Col`) or a fixed id (`FixedId`)."""

    fk: str
    fallback: dict[str, Col | FixedId] | None = None


@dataclass(frozen=True)
class ToMany:
    """A list field: the target's rows whose `fk` is this row's `id`, in the resolver's order
    (`order_by` columns, then `id` as the tiebreaker)."""

    fk: str
    order_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToManyThrough:
    """A list field through a link table: the target rows whose ids the link rows with
    `parent_fk` = this row's `id` hold in `child_fk`, in the link's `order_by` (then its `id`)."""

    link: Any  # the link table's model
    parent_fk: str
    child_fk: str
    order_by: tuple[str, ...] = ()
    target_order_by: tuple[str, ...] = ()  # the target's columns, after the link's `order_by`


@dataclass(frozen=True)
class Arg:
    """An argument of a nested field: `convert` turns graphql-core's coerced value into the
    value of the statement parameter `{name}` (cast to `cast`), as the resolver reads it."""

    cast: str
    convert: Callable[[Any], Any]


@dataclass(frozen=True)
class ToManyFrom:
    """A list field whose rows a declared query picks: `sql` gives rows (`k`, `id`,
    `*derived`) -- `k` the parent's id among `{keys}` (a subquery of parent ids), `id` the
    target's id, `derived` the target's columns that are not in its table -- in the resolver's
    order `order_by` (columns of those rows). Each argument is `{name}` in `sql` (its Python
    name), a statement parameter bound per request: never a literal."""

    sql: str
    args: dict[str, Arg]
    order_by: tuple[str, ...]


@dataclass(frozen=True)
class Filter:
    """A root argument as a condition: `sql` with `{t}` (the table alias) and `{p}` (the
    parameter, cast to `cast`); `convert` turns the argument into the parameter's value, or
    None when the resolver applies no condition for that value."""

    sql: str
    cast: str
    convert: Callable[[Any], Any]


@dataclass(frozen=True)
class ToManyPage:
    """A nested connection field (`first`, `after` read as `paginate` reads them, plus
    `filters`): per parent row, one keyset page of the target's rows whose `fk` is the
    parent's `id`, in `id` order, with `totalCount` and `pageInfo` per parent. Its arguments
    are statement parameters bound per request; a filter whose value converts to None applies
    no condition (the parameter is null), so one statement serves every value."""

    fk: str
    filters: dict[str, Filter] = field(default_factory=dict)


FieldMap = Col | GlobalId | ToOne | ToMany | ToManyThrough | ToManyFrom | ToManyPage


@dataclass(frozen=True)
class _Table:
    gql_type: type
    model: Any
    fields: dict[str, FieldMap]
    derived: dict[str, Any]  # column name -> SQLAlchemy type, supplied by a ToManyFrom


@dataclass(frozen=True)
class _Root:
    kind: str  # "connection" | "lookup" | "list"
    owner: type
    field: str
    model: Any
    filters: dict[str, Filter]
    order_by: tuple[str, ...] = ()


# ------------------------------------------------------------------ bound (checked) mapping


@dataclass(frozen=True)
class BoundField:
    kind: str  # "scalar" | "id" | "fixed_id" | "one" | "many" | "from" | "page"
    column: str  # a fixed id's key, as text; a page's foreign key
    printer: str = "plain"  # "plain" | "decimal" | "datetime" | "float" | "int32"
    target: str = ""  # GraphQL type name of an object field
    order_by: tuple[str, ...] = ()
    type_name: str = ""  # for global ids
    link: tuple[str, str, str] | None = None  # (link table, parent fk, child fk) of a through
    target_order_by: tuple[str, ...] = ()  # a through's order by the target's columns
    source: str = ""  # a ToManyFrom's query
    # (GraphQL name, Python name, Arg) of a ToManyFrom; a ToManyPage's filters
    args: tuple[tuple[str, str, Arg | Filter], ...] = ()
    fallback: dict[str, BoundField] | None = None  # a ToOne's stand-in, by GraphQL name
    largest_key: int = 0  # a page's target key: the largest a cursor may hold


@dataclass(frozen=True)
class BoundTable:
    type_name: str
    table: str
    fields: dict[str, BoundField]
    derived: frozenset[str] = frozenset()  # columns only a ToManyFrom's rows have


@dataclass(frozen=True)
class BoundRoot:
    kind: str
    name: str  # GraphQL field name on Query
    table: str
    type_name: str  # node type
    key_column: str
    largest_key: int
    filters: dict[str, Filter]  # GraphQL argument name -> filter
    order_by: tuple[str, ...] = ()  # a list root's order (then `id`)


@dataclass
class Bound:
    tables: dict[str, BoundTable] = field(default_factory=dict)
    roots: dict[str, BoundRoot] = field(default_factory=dict)
    query_type: str = "Query"

    def compilable_fields(self) -> set[tuple[str, str]]:
        """(type, field) pairs declared compilable, including the connection roots."""
        pairs = {(t.type_name, f) for t in self.tables.values() for f in t.fields}
        pairs |= {(self.query_type, r) for r in self.roots}
        return pairs


def _named(t: GraphQLOutputType) -> tuple[Any, bool, bool]:
    """(named type, non-null, list)."""
    non_null = isinstance(t, GraphQLNonNull)
    if non_null:
        t = t.of_type  # type: ignore[union-attr]
    is_list = isinstance(t, GraphQLList)
    while isinstance(t, GraphQLList | GraphQLNonNull):
        t = t.of_type
    return t, non_null, is_list


class Registry:
    def __init__(self) -> None:
        self._tables: list[_Table] = []
        self._roots: list[_Root] = []

    def table(
        self,
        gql_type: type,
        model: Any,
        fields: dict[str, FieldMap],
        derived: dict[str, Any] | None = None,
    ) -> None:
        """`derived`: columns (name -> SQLAlchemy type) that the rows of a ToManyFrom add to
        the table's; such a type is reachable through ToManyFrom fields only."""
        self._tables.append(_Table(gql_type, model, dict(fields), dict(derived or {})))

    def connection(
        self, owner: type, field: str, model: Any, filters: dict[str, Filter] | None = None
    ) -> None:
        """A root returning a keyset-paginated Connection (`first`, `after`, as `paginate`)."""
        self._roots.append(_Root("connection", owner, field, model, dict(filters or {})))

    def lookup(self, owner: type, field: str, model: Any, filters: dict[str, Filter]) -> None:
        """A root returning one row or null, found by its arguments."""
        self._roots.append(_Root("lookup", owner, field, model, dict(filters)))

    def listing(self, owner: type, field: str, model: Any, order_by: tuple[str, ...]) -> None:
        """A root without arguments returning every row, in `order_by` (then `id`)."""
        self._roots.append(_Root("list", owner, field, model, {}, tuple(order_by)))

    def bind(self, schema: strawberry.Schema) -> Bound:
        """The mapping checked against this schema and the models."""
        names = schema.config.name_converter
        gschema = schema._schema
        bound = Bound()
        query_type = gschema.query_type
        assert query_type is not None
        bound.query_type = query_type.name
        for decl in self._tables:
            definition = decl.gql_type.__strawberry_definition__  # type: ignore[attr-defined]
            gtype = gschema.type_map.get(definition.name)
            if not isinstance(gtype, GraphQLObjectType):
                raise MappingError(f"{definition.name} is not an object type of the schema")
            by_python = {f.python_name: f for f in definition.fields}
            columns = decl.model.__table__.c
            types = {c.name: c.type for c in columns}
            for name, derived_type in decl.derived.items():
                if name in types:
                    raise MappingError(f"{definition.name}: derived {name!r} is a column")
                types[name] = derived_type
            fields: dict[str, BoundField] = {}
            for python_name, spec in decl.fields.items():
                sfield = by_python.get(python_name)
                if sfield is None:
                    raise MappingError(f"{definition.name} has no field {python_name!r}")
                if sfield.permission_classes or sfield.extensions:
                    raise MappingError(f"{definition.name}.{python_name} has permissions")
                gname = names.get_graphql_name(sfield)
                gfield = gtype.fields[gname]
                where = f"{definition.name}.{gname}"
                if gfield.args and not isinstance(spec, ToManyFrom | ToManyPage):
                    raise MappingError(f"{where} takes arguments")
                named, _, is_list = _named(gfield.type)
                if isinstance(spec, Col):
                    column = spec.column or python_name
                    if column not in types:
                        raise MappingError(f"{where}: no column {column!r}")
                    printer = _printer(where, named, types[column])
                    fields[gname] = BoundField("scalar", column, printer)
                elif isinstance(spec, GlobalId):
                    if getattr(named, "name", None) != "ID" or spec.column not in columns:
                        raise MappingError(f"{where}: a global id is an ID from a column")
                    fields[gname] = BoundField("id", spec.column, type_name=spec.type_name)
                elif isinstance(spec, ToOne):
                    if is_list or not isinstance(named, GraphQLObjectType):
                        raise MappingError(f"{where}: ToOne needs an object field")
                    if spec.fk not in columns:
                        raise MappingError(f"{where}: no column {spec.fk!r}")
                    fallback = None
                    if spec.fallback is not None:
                        fallback = _fallback(where, spec.fallback, named, types, names)
                    fields[gname] = BoundField("one", spec.fk, target=named.name, fallback=fallback)
                elif isinstance(spec, ToManyThrough):
                    if not is_list or not isinstance(named, GraphQLObjectType):
                        raise MappingError(f"{where}: ToManyThrough needs a list of objects")
                    link = spec.link.__table__.c
                    for column in (spec.parent_fk, spec.child_fk, *spec.order_by, "id"):
                        if column not in link:
                            raise MappingError(f"{where}: no link column {column!r}")
                    fields[gname] = BoundField(
                        "many",
                        spec.parent_fk,
                        target=named.name,
                        order_by=spec.order_by,
                        link=(spec.link.__tablename__, spec.parent_fk, spec.child_fk),
                        target_order_by=spec.target_order_by,
                    )
                elif isinstance(spec, ToManyFrom):
                    if not is_list or not isinstance(named, GraphQLObjectType):
                        raise MappingError(f"{where}: ToManyFrom needs a list of objects")
                    by_python_arg = {a.python_name: a for a in sfield.arguments}
                    if set(spec.args) != set(by_python_arg):
                        raise MappingError(f"{where}: arguments {sorted(by_python_arg)} need Args")
                    field_args = tuple(
                        (names.get_graphql_name(by_python_arg[p]), p, arg)
                        for p, arg in spec.args.items()
                    )
                    if set(gfield.args) != {a[0] for a in field_args}:
                        raise MappingError(f"{where}: arguments differ from the schema's")
                    fields[gname] = BoundField(
                        "from",
                        "id",
                        target=named.name,
                        order_by=spec.order_by,
                        source=spec.sql,
                        args=field_args,
                    )
                elif isinstance(spec, ToManyPage):
                    fields[gname] = _page(where, spec, sfield, gfield, named, names)
                else:
                    if not is_list or not isinstance(named, GraphQLObjectType):
                        raise MappingError(f"{where}: ToMany needs a list of objects")
                    fields[gname] = BoundField(
                        "many", spec.fk, target=named.name, order_by=spec.order_by
                    )
            bound.tables[definition.name] = BoundTable(
                definition.name, decl.model.__tablename__, fields, frozenset(decl.derived)
            )
        # Targets must be mapped tables whose columns exist.
        models = {d.gql_type.__strawberry_definition__.name: d.model for d in self._tables}  # type: ignore[attr-defined]
        for table in bound.tables.values():
            for name, f in table.fields.items():
                where = f"{table.type_name}.{name}"
                if f.kind in ("one", "many", "from", "page") and f.target not in bound.tables:
                    raise MappingError(f"{where}: {f.target} is not mapped")
                if f.kind in ("one", "many", "page") and bound.tables[f.target].derived:
                    raise MappingError(f"{where}: {f.target} has derived columns")
                if f.fallback is not None and set(f.fallback) != set(bound.tables[f.target].fields):
                    # Whatever the document selects of the target, the stand-in prints it too.
                    raise MappingError(
                        f"{where}: the fallback must give each of {f.target}'s fields"
                    )
                if f.kind == "many" and f.link is None:
                    child = models[f.target].__table__.c
                    for column in (f.column, *f.order_by):
                        if column not in child:
                            raise MappingError(f"{where}: no column {column!r}")
                if f.kind == "many" and f.link is not None:
                    child = models[f.target].__table__.c
                    for column in f.target_order_by:
                        if column not in child:
                            raise MappingError(f"{where}: no column {column!r}")
                if f.kind == "page":
                    child = models[f.target].__table__.c
                    if f.column not in child:
                        raise MappingError(f"{where}: no column {f.column!r}")
                    table.fields[name] = replace(f, largest_key=largest_key(child["id"].type))
        for root in self._roots:
            definition = root.owner.__strawberry_definition__  # type: ignore[attr-defined]
            sfield = next((f for f in definition.fields if f.python_name == root.field), None)
            if sfield is None:
                raise MappingError(f"{definition.name} has no field {root.field!r}")
            gname = names.get_graphql_name(sfield)
            gfield = query_type.fields.get(gname)
            if gfield is None:
                raise MappingError(f"Query has no field {gname!r}")
            named, _, _ = _named(gfield.type)
            if root.kind == "connection":
                edges = named.fields["edges"].type
                node_type = _named(_named(edges)[0].fields["node"].type)[0]
                args = set(gfield.args) - {"first", "after"}
            elif root.kind == "list":
                if not isinstance(gfield.type, GraphQLNonNull) or not _named(gfield.type)[2]:
                    raise MappingError(f"Query.{gname}: a list root needs a non-null list")
                node_type = named
                args = set(gfield.args)
                for column in root.order_by:
                    if column not in root.model.__table__.c:
                        raise MappingError(f"Query.{gname}: no column {column!r}")
            else:
                node_type = named
                args = set(gfield.args)
            by_python_arg = {a.python_name: a for a in sfield.arguments}
            filters: dict[str, Filter] = {}
            for python_arg, flt in root.filters.items():
                if python_arg not in by_python_arg:
                    raise MappingError(f"Query.{gname} has no argument {python_arg!r}")
                filters[names.get_graphql_name(by_python_arg[python_arg])] = flt
            if set(filters) != args:
                raise MappingError(f"Query.{gname}: arguments {sorted(args)} need filters")
            if node_type.name not in bound.tables:
                raise MappingError(f"Query.{gname}: {node_type.name} is not mapped")
            if bound.tables[node_type.name].derived:
                raise MappingError(f"Query.{gname}: {node_type.name} has derived columns")
            largest = largest_key(root.model.__table__.c["id"].type)
            bound.roots[gname] = BoundRoot(
                root.kind,
                gname,
                root.model.__tablename__,
                node_type.name,
                "id",
                largest,
                filters,
                root.order_by,
            )
        return bound


def _page(
    where: str,
    spec: ToManyPage,
    sfield: Any,
    gfield: Any,
    connection: Any,
    names: Any,
) -> BoundField:
    """A ToManyPage checked against its field: a Connection (pageInfo, edges of nodes,
    totalCount) with `first` and `after`, each other argument a filter."""
    if not isinstance(connection, GraphQLObjectType) or not {
        "pageInfo",
        "edges",
        "totalCount",
    } <= set(connection.fields):
        raise MappingError(f"{where}: ToManyPage needs a Connection")
    node = _named(_named(connection.fields["edges"].type)[0].fields["node"].type)[0]
    by_python_arg = {a.python_name: a for a in sfield.arguments}
    for python_name in spec.filters:
        if python_name not in by_python_arg:
            raise MappingError(f"{where} has no argument {python_name!r}")
    filters = tuple(
        (names.get_graphql_name(by_python_arg[p]), p, flt) for p, flt in spec.filters.items()
    )
    if set(gfield.args) != {"first", "after", *(f[0] for f in filters)}:
        raise MappingError(f"{where}: arguments {sorted(gfield.args)} need first, after, filters")
    return BoundField("page", spec.fk, target=node.name, args=filters)


def _fallback(
    where: str,
    specs: dict[str, Col | FixedId],
    target: GraphQLObjectType,
    types: dict[str, Any],
    names: Any,
) -> dict[str, BoundField]:
    """A ToOne's stand-in: the target's fields (GraphQL names) from this row's columns."""
    definition = _definition_of(target)
    by_python = {f.python_name: f for f in definition.fields}
    fallback: dict[str, BoundField] = {}
    for python_name, spec in specs.items():
        sfield = by_python.get(python_name)
        if sfield is None:
            raise MappingError(f"{where}: {target.name} has no field {python_name!r}")
        gname = names.get_graphql_name(sfield)
        named, _, is_list = _named(target.fields[gname].type)
        if isinstance(spec, FixedId):
            if getattr(named, "name", None) != "ID":
                raise MappingError(f"{where}: fallback {gname}: a fixed id is an ID")
            fallback[gname] = BoundField("fixed_id", str(spec.key), type_name=spec.type_name)
        else:
            column = spec.column or python_name
            if column not in types or is_list:
                raise MappingError(f"{where}: fallback {gname}: no column {column!r}")
            fallback[gname] = BoundField("scalar", column, _printer(where, named, types[column]))
    return fallback


def _definition_of(gtype: GraphQLObjectType) -> Any:
    """The Strawberry definition behind a graphql-core object type."""
    definition = (gtype.extensions or {}).get("strawberry-definition")
    if definition is None:
        raise MappingError(f"{gtype.name} is not a Strawberry type")
    return definition


def _printer(where: str, named: Any, column_type: Any) -> str:
    """How the SQL prints a column so that it reads as Strawberry serialises the field."""
    if isinstance(named, GraphQLEnumType):
        enum_class: type[enum.Enum] | None = getattr(column_type, "enum_class", None)
        if not isinstance(column_type, SqlEnum) or enum_class is None:
            raise MappingError(f"{where}: an enum needs an enum column")
        if any(m.name != m.value for m in enum_class) or set(named.values) != {
            m.name for m in enum_class
        }:
            raise MappingError(f"{where}: enum names differ from the stored values")
        return "plain"
    if not isinstance(named, GraphQLScalarType):
        raise MappingError(f"{where}: Col needs a scalar field")
    expected: dict[str, tuple[type, ...]] = {
        "String": (String, Text),
        "Int": (Integer,),
        "Boolean": (SqlBoolean,),
        "Decimal": (Quantity,),
        "DateTime": (UTCDateTime,),
        "Float": (Float,),
    }
    if named.name not in expected:
        # ID, JSON, custom scalars: no exact printer.
        raise MappingError(f"{where}: {named.name} has no exact SQL printer")
    if not isinstance(column_type, expected[named.name]) or (
        named.name == "Float" and not _is_float8(column_type)
    ):
        raise MappingError(f"{where}: a {named.name} field from a {column_type!r} column")
    if named.name == "Int" and type(column_type).__name__ == "BigInteger":
        # GraphQL's Int is 32-bit: the printer fails the statement beyond it (graphql-core
        # refuses such a value, so the resolvers answer with their error).
        return "int32"
    return {"Decimal": "decimal", "DateTime": "datetime", "Float": "float"}.get(named.name, "plain")


def _is_float8(column_type: Any) -> bool:
    """A `double precision` column read as a Python float. The float printer prints a double's
    shortest digits; a `real`'s value reaches Python widened to a double, whose shortest
    digits are not the real's (0.1 in a real is 0.10000000149011612), and asdecimal gives a
    Decimal."""
    precision = column_type.precision
    return (
        not isinstance(column_type, REAL)
        and not column_type.asdecimal
        and (precision is None or precision > 24)
    )


REGISTRY = Registry()
"""The application's mapping; the domains add to it when `backend.compiled` loads them."""
