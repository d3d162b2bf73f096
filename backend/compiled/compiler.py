"""A validated query document -> one PostgreSQL statement that prints the response's `data`.

The statement is built set-wise: each root list is a MATERIALIZED CTE (one keyset page), each
to-one relation a LEFT JOIN, each to-many relation one CTE that aggregates the children of all
parents at once (`GROUP BY fk`, `array_agg(... ORDER BY <resolver order>, id)`; through a link
table, the CTE runs over the links joined to the targets; for a declared query such as
Lot.trace's recursive walk, one CTE of its rows and one aggregating CTE, the field's arguments
parameters bound per request; for a nested connection such as Equipment.events, one keyset
page per parent, see `_page`), a list root one ordered aggregate over the whole table.
Objects are sub-select records and lists `array_to_json(array_agg(...))`:
PostgreSQL prints both as compact JSON, byte for byte what orjson prints for the resolvers'
answer. Scalars are printed
as Strawberry serialises them (Decimal via `::text`, DateTime as `isoformat()`, Float as
orjson prints a Python float, ids and cursors base64 as `to_global_id` / `encode_cursor`).

Values never appear in the SQL: every argument is a parameter, so one shape is one prepared
statement whatever its arguments. Anything the compiler does not know exactly raises
`NotCompilable`; the document then runs through the resolvers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    BooleanValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLSchema,
    InlineFragmentNode,
    NamedTypeNode,
    OperationDefinitionNode,
    SelectionNode,
    SelectionSetNode,
    VariableNode,
    is_abstract_type,
)

from backend.compiled.registry import Arg, Bound, BoundField, BoundRoot, BoundTable, Filter

MAX_IDENTIFIER = 63  # PostgreSQL truncates longer column names: such an alias is refused
INT32 = (-(2**31), 2**31 - 1)  # GraphQL's Int
FLOAT8_MAX = "1.7976931348623157e308::numeric"  # beyond it, a numeric does not cast to float8


class NotCompilable(Exception):
    """The document (or this request of it) runs through the resolvers; the message says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class RootSelection:
    key: str  # response key
    root: BoundRoot | None  # None: `__typename`
    nodes: tuple[FieldNode, ...]


@dataclass(frozen=True)
class Slot:
    """One statement parameter: the root it belongs to and which of its values."""

    root: str  # response key, or the site of a nested field's arguments
    name: str  # "size", "after", "previous" or an argument name


@dataclass(frozen=True)
class NestedArguments:
    """A nested field's arguments in the statement: their values are bound per request (from
    the literals or the variables of `node`) into the slots (`site`, Python name). A nested
    connection's `first` and `after` go to the slots (`site`, "size" / "lowest" / "previous")
    as `paginate` reads them, its cursor keys at most `page_largest_key`."""

    site: str
    definition: GraphQLField
    node: FieldNode
    args: tuple[tuple[str, str, Arg | Filter], ...]  # (GraphQL name, Python name, Arg)
    page_largest_key: int | None = None  # a nested connection's; None for other fields


@dataclass
class Statement:
    sql: str
    slots: list[Slot]
    nested: list[NestedArguments] = field(default_factory=list)


def directive_variables(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> tuple[str, ...]:
    """Variables used by @skip/@include anywhere in the operation (a plan per combination)."""
    found: list[str] = []

    def walk(selection_set: SelectionSetNode | None, seen: set[str]) -> None:
        if selection_set is None:
            return
        for selection in selection_set.selections:
            for directive in selection.directives or ():
                for argument in directive.arguments or ():
                    if isinstance(argument.value, VariableNode):
                        name = argument.value.name.value
                        if name not in found:
                            found.append(name)
            if isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in seen and name in fragments:
                    seen.add(name)
                    walk(fragments[name].selection_set, seen)
            else:
                walk(getattr(selection, "selection_set", None), seen)

    walk(operation.selection_set, set())
    return tuple(found)


class Compiler:
    """Compiles one operation for one combination of directive variables."""

    def __init__(
        self,
        schema: GraphQLSchema,
        bound: Bound,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
    ) -> None:
        self.schema = schema
        self.bound = bound
        self.fragments = fragments
        self.variables = variables

    # ------------------------------------------------------------------ selection

    def _included(self, selection: SelectionNode) -> bool:
        for directive in selection.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                raise NotCompilable("directive", f"@{name}")
            argument = next((a for a in directive.arguments or () if a.name.value == "if"), None)
            if argument is None:
                raise NotCompilable("directive", f"@{name} without if")
            value: Any
            if isinstance(argument.value, BooleanValueNode):
                value = argument.value.value
            elif isinstance(argument.value, VariableNode):
                value = self.variables.get(argument.value.name.value)
                if not isinstance(value, bool):
                    raise NotCompilable("variables", f"@{name} on a non-boolean value")
            else:
                raise NotCompilable("directive", f"@{name} argument")
            if (name == "skip" and value) or (name == "include" and not value):
                return False
        return True

    def _applies(self, condition: NamedTypeNode | None, type_name: str) -> bool:
        if condition is None or condition.name.value == type_name:
            return True
        named = self.schema.get_type(condition.name.value)
        if named is not None and is_abstract_type(named):
            raise NotCompilable("abstract_type", condition.name.value)
        return False

    def collect(
        self, type_name: str, selection_sets: list[SelectionSetNode]
    ) -> dict[str, list[FieldNode]]:
        """graphql-core's field collection on one concrete object type, in first-seen order."""
        fields: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()

        def walk(selection_set: SelectionSetNode) -> None:
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    if not self._included(selection):
                        continue
                    key = selection.alias.value if selection.alias else selection.name.value
                    fields.setdefault(key, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    if not self._included(selection):
                        continue
                    if self._applies(selection.type_condition, type_name):
                        walk(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in visited or not self._included(selection):
                        continue
                    visited.add(name)
                    fragment = self.fragments.get(name)
                    if fragment is not None and self._applies(fragment.type_condition, type_name):
                        walk(fragment.selection_set)

        for selection_set in selection_sets:
            walk(selection_set)
        return fields

    def roots(self, operation: OperationDefinitionNode) -> list[RootSelection]:
        if operation.operation.value != "query":
            raise NotCompilable("not_a_query", operation.operation.value)
        selected = self.collect(self.bound.query_type, [operation.selection_set])
        roots: list[RootSelection] = []
        for key, nodes in selected.items():
            name = nodes[0].name.value
            if name == "__typename":
                roots.append(RootSelection(key, None, tuple(nodes)))
                continue
            if name.startswith("__"):
                raise NotCompilable("introspection", name)
            root = self.bound.roots.get(name)
            if root is None:
                raise NotCompilable("unmapped_field", f"Query.{name}")
            roots.append(RootSelection(key, root, tuple(nodes)))
        return roots


def _key(key: str) -> str:
    if len(key.encode()) > MAX_IDENTIFIER:
        raise NotCompilable("long_alias", key)
    return f'"{key}"'


def _literal(text: str) -> str:
    # Type names only (never a client's value): [_A-Za-z][_0-9A-Za-z]*, maybe with a ":".
    assert text.replace("_", "").replace(":", "").isalnum(), text
    return f"'{text}'::text"


def _base64_id(prefix: str, expr: str) -> str:
    """urlsafe base64 of "<prefix>:<key>", "=" stripped: `to_global_id` / `encode_cursor`."""
    encoded = f"encode(convert_to({_literal(prefix + ':')} || {expr}, 'UTF8'), 'base64')"
    return f"rtrim(translate({encoded}, '+/' || chr(10), '-_'), '=')"


def float_refused(expr: str) -> str:
    """When a float8 has no exact printing here: NaN and the infinities (graphql-core refuses
    them: the resolvers answer an error), any value when PostgreSQL prints fewer than the
    shortest round-trip digits (extra_float_digits < 1; PostgreSQL's default is 1), and a
    value whose shortest digits are a rounding boundary. PostgreSQL's shortest output (Ryu)
    never takes a boundary; Python's repr (and orjson) takes it when it reads back as the same
    double (an even mantissa): 9.5e21 is 9.500000000000001e+21 in PostgreSQL. Below 2**53 a
    boundary has more digits than the shortest. From 2**53 on (integers), a shorter string
    reads back as the same double exactly when PostgreSQL's digits, cut to one digit fewer
    rounding down or up, read back as it."""
    magnitude = f"abs({expr})"
    digits = f"({magnitude})::text::numeric"  # an integer from 2**53 on
    length = f"length(({digits})::text)"
    cut = f"({length} - length(rtrim(({digits})::text, '0')) + 1)"
    down = f"trunc({digits}, -{cut})"
    up = f"({down} + power(10::numeric, {cut}))"
    return (
        f"(NOT ({magnitude} < 'Infinity'::float8 "
        f"AND current_setting('extra_float_digits')::int > 0) "
        f"OR ({magnitude} >= 9007199254740992::float8 AND ("
        f"({down})::float8 = {magnitude} OR CASE WHEN {up} > {FLOAT8_MAX} THEN false "
        f"ELSE {up}::float8 = {magnitude} END)))"
    )


def _float_failure(text: str) -> str:
    """An error when evaluated: a cast of a text that is no number. Its message names the
    value and the setting; the setting (a stable function) also keeps the planner from
    evaluating the cast ahead of time when the value is a constant."""
    message = (
        f"'no exact Float for ' || {text} || ' (extra_float_digits ' || "
        f"current_setting('extra_float_digits') || ')'"
    )
    return f"(({message})::float8)::text"


def _float(expr: str) -> str:
    """A float8 as orjson prints the Python float: its shortest round-trip digits (PostgreSQL's
    float8 output) in fixed notation with at least one fractional digit ("100.0", "0.00001",
    "-0.0") when 1e-5 <= |x| < 1e16, else as d[.ddd]e+N / e-N without leading exponent zeros
    ("1e+16", "1e-7"). PostgreSQL's own output switches at other exponents (1e+15, 1e-05):
    within the fixed range its text goes through `numeric`, which prints the same digits in
    fixed notation. A value `float_refused` fails the statement (a cast of a text that is no
    number), and the resolvers answer. tests/compiled/test_compiled_floats.py compares this
    with orjson."""
    text = f"({expr})::text"
    magnitude = f"abs({expr})"
    return (
        f"(CASE WHEN {expr} IS NULL THEN NULL "
        f"WHEN {float_refused(expr)} THEN {_float_failure(text)} "
        f"WHEN {expr} = 0 THEN {text} || '.0' "
        f"WHEN {magnitude} < 1e-5::float8 OR {magnitude} >= 1e16::float8 "
        f"THEN replace({text}, 'e-0', 'e-') "
        f"WHEN {expr} = trunc({expr}) THEN ({text}::numeric)::text || '.0' "
        f"ELSE ({text}::numeric)::text END)::json"
    )


def _int32(expr: str) -> str:
    """An integer of a bigint column as GraphQL's Int: beyond 32 bits the statement fails (a
    cast of a text that is no number, naming the value), and the resolvers answer."""
    low, high = INT32
    failure = f"(('no 32-bit Int for ' || ({expr})::text)::int8)"
    return f"(CASE WHEN {expr} BETWEEN {low} AND {high} THEN {expr} ELSE {failure} END)"


def _print(printer: str, expr: str) -> str:
    if printer == "float":
        return _float(expr)
    if printer == "int32":
        return _int32(expr)
    if printer == "decimal":
        return f"({expr})::text"
    if printer == "datetime":
        # isoformat() of an aware UTC datetime: microseconds only when not zero.
        utc = f"({expr} AT TIME ZONE 'UTC')"
        return (
            f"(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN "
            f"date_trunc('second', {expr}) = {expr} THEN '' ELSE to_char({utc}, '.US') END "
            f"|| '+00:00')"
        )
    return expr


@dataclass
class _Scope:
    alias: str
    table: BoundTable
    keys_sql: str  # a subquery giving (a superset of) this scope's row ids
    joins: list[str] = field(default_factory=list)


class StatementBuilder:
    """Builds the statement of one operation for one set of present arguments."""

    def __init__(self, compiler: Compiler, roots: list[RootSelection]) -> None:
        self.compiler = compiler
        self.bound = compiler.bound
        self.roots = roots
        self.ctes: list[str] = []
        self.slots: list[Slot] = []
        self.nested: list[NestedArguments] = []
        self.count = 0

    def _alias(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def _param(self, slot: Slot, cast: str) -> str:
        if slot not in self.slots:
            self.slots.append(slot)
        return f"${self.slots.index(slot) + 1}::{cast}"

    def build(self, present: dict[str, frozenset[str]]) -> Statement:
        """`present`: per root response key, the filters (and `after`) given a value."""
        columns: list[str] = []
        for selection in self.roots:
            if selection.root is None:
                expr = _literal(self.bound.query_type)
            elif selection.root.kind == "connection":
                expr = self._connection(selection, present[selection.key])
            elif selection.root.kind == "list":
                expr = self._list(selection)
            else:
                expr = self._lookup(selection)
            columns.append(f"{expr} AS {_key(selection.key)}")
        body = f"(SELECT j$ FROM (SELECT {', '.join(columns)}) j$)"
        with_ = f"WITH {', '.join(self.ctes)} " if self.ctes else ""
        return Statement(
            f"{with_}SELECT convert_to(row_to_json({body})::text, 'UTF8')", self.slots, self.nested
        )

    # ------------------------------------------------------------------ roots

    def _conditions(self, selection: RootSelection, alias: str, names: frozenset[str]) -> list[str]:
        assert selection.root is not None
        return [
            flt.sql.format(t=alias, p=self._param(Slot(selection.key, name), flt.cast))
            for name, flt in selection.root.filters.items()
            if name in names
        ]

    def _lookup(self, selection: RootSelection) -> str:
        root = selection.root
        assert root is not None
        table = self.bound.tables[root.type_name]
        everything = frozenset(root.filters)
        k = self._alias("k")
        keys = f'SELECT {k}."id" FROM "{root.table}" {k} WHERE ' + " AND ".join(
            self._conditions(selection, k, everything)
        )
        t = self._alias("t")
        scope = _Scope(t, table, keys)
        fields = self.compiler.collect(table.type_name, _sets(selection.nodes))
        record = self._record(scope, fields)
        where = " AND ".join(self._conditions(selection, t, everything))
        return f'(SELECT {record} FROM "{root.table}" {t} {" ".join(scope.joins)} WHERE {where})'

    def _list(self, selection: RootSelection) -> str:
        root = selection.root
        assert root is not None
        table = self.bound.tables[root.type_name]
        t = self._alias("t")
        scope = _Scope(t, table, f'SELECT "id" FROM "{root.table}"')
        record = self._record(scope, self.compiler.collect(table.type_name, _sets(selection.nodes)))
        order = ", ".join(f'{t}."{o}"' for o in (*root.order_by, "id"))
        return (
            f"(SELECT coalesce(array_to_json(array_agg({record} ORDER BY {order})), '[]'::json) "
            f'FROM "{root.table}" {t} {" ".join(scope.joins)})'
        )

    def _connection(self, selection: RootSelection, present: frozenset[str]) -> str:
        root = selection.root
        assert root is not None
        schema = self.compiler.schema
        field_def = schema.query_type.fields[root.name]  # type: ignore[union-attr]
        connection_type = _unwrap(field_def.type)
        edge_type = _unwrap(connection_type.fields["edges"].type)
        page_type = _unwrap(connection_type.fields["pageInfo"].type)
        table = self.bound.tables[root.type_name]
        size = self._param(Slot(selection.key, "size"), "int8")
        page, rows = self._alias("s"), self._alias("s")
        x = self._alias("x")
        where = self._conditions(selection, x, present)
        if "after" in present:
            where.append(f'{x}."id" > {self._param(Slot(selection.key, "after"), "int8")}')
        self.ctes.append(
            f'{page} AS MATERIALIZED (SELECT {x}.* FROM "{root.table}" {x}'
            f'{_where(where)} ORDER BY {x}."id" LIMIT {size} + 1)'
        )
        self.ctes.append(
            f'{rows} AS MATERIALIZED (SELECT * FROM {page} ORDER BY "id" LIMIT {size})'
        )

        def part(name: str, nodes: list[FieldNode]) -> str | None:
            if name == "totalCount":
                c = self._alias("x")
                conditions = self._conditions(selection, c, present - {"after"})
                return f'(SELECT count(*) FROM "{root.table}" {c}{_where(conditions)})'
            if name == "pageInfo":
                return self._page_info(selection, page_type.name, nodes, page, rows, size)
            if name == "edges":
                return self._edges(edge_type.name, table, nodes, rows)
            return None

        return self._object(connection_type.name, selection.nodes, part)

    def _page_info(
        self,
        selection: RootSelection,
        type_name: str,
        nodes: list[FieldNode],
        page: str,
        rows: str,
        size: str,
    ) -> str:

        def part(name: str, _nodes: list[FieldNode]) -> str | None:
            if name == "hasNextPage":
                return f"((SELECT count(*) FROM {page}) > {size})"
            if name == "hasPreviousPage":
                return self._param(Slot(selection.key, "previous"), "boolean")
            if name in ("startCursor", "endCursor"):
                order = "" if name == "startCursor" else " DESC"
                cursor = _base64_id("cursor", 'c."id"')
                return f'(SELECT {cursor} FROM {rows} c ORDER BY c."id"{order} LIMIT 1)'
            return None

        return self._object(type_name, nodes, part)

    def _edge(self, type_name: str, scope: _Scope, nodes: list[FieldNode]) -> str:
        """One edge of a connection, as a record of the row in `scope`: its `__typename`,
        `cursor` (of the row's id) and `node`."""

        def part(name: str, sub: list[FieldNode]) -> str | None:
            if name == "cursor":
                return _base64_id("cursor", f'{scope.alias}."id"')
            if name == "node":
                return self._record(scope, self.compiler.collect(scope.table.type_name, _sets(sub)))
            return None

        return self._object(type_name, nodes, part)

    def _edges(self, type_name: str, table: BoundTable, nodes: list[FieldNode], rows: str) -> str:
        t = self._alias("t")
        scope = _Scope(t, table, f'SELECT "id" FROM {rows}')
        edge = self._edge(type_name, scope, nodes)
        return (
            f"(SELECT coalesce(array_to_json(array_agg({edge} ORDER BY {t}.\"id\")), '[]'::json) "
            f"FROM {rows} {t} {' '.join(scope.joins)})"
        )

    # ------------------------------------------------------------------ objects

    def _object(
        self,
        type_name: str,
        selected: list[FieldNode] | tuple[FieldNode, ...] | dict[str, list[FieldNode]],
        field_sql: Callable[[str, list[FieldNode]], str | None],
    ) -> str:
        """An object of `type_name` as a record, one column per response key: `__typename`
        a literal, any other field the SQL `field_sql(name, its nodes)` gives for it (None:
        the field is not compilable). `selected`: the fields collected already, or the nodes
        whose selection sets select them."""
        fields = (
            selected
            if isinstance(selected, dict)
            else self.compiler.collect(type_name, _sets(selected))
        )
        columns: list[str] = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            expr = _literal(type_name) if name == "__typename" else field_sql(name, nodes)
            if expr is None:
                raise NotCompilable("unmapped_field", f"{type_name}.{name}")
            columns.append(f"{expr} AS {_key(key)}")
        return f"(SELECT j$ FROM (SELECT {', '.join(columns)}) j$)"

    def _record(self, scope: _Scope, fields: dict[str, list[FieldNode]]) -> str:
        """A row of `scope` as the object its table is mapped to."""
        table = scope.table

        def mapped_field(name: str, nodes: list[FieldNode]) -> str | None:
            mapped = table.fields.get(name)
            if mapped is None:
                return None
            if mapped.kind not in ("from", "page") and any(n.arguments for n in nodes):
                raise NotCompilable("arguments", f"{table.type_name}.{name}")
            return self._field(scope, mapped, nodes)

        return self._object(table.type_name, fields, mapped_field)

    def _field(self, scope: _Scope, mapped: BoundField, nodes: list[FieldNode]) -> str:
        column = f'{scope.alias}."{mapped.column}"'
        if mapped.kind == "scalar":
            return _print(mapped.printer, column)
        if mapped.kind == "id":
            return _base64_id(mapped.type_name, column)
        if mapped.kind == "fixed_id":
            return _base64_id(mapped.type_name, _literal(mapped.column))
        target = self.bound.tables[mapped.target]
        if mapped.kind == "page":
            return self._page(scope, mapped, target, nodes)
        subfields = self.compiler.collect(target.type_name, _sets(nodes))
        if mapped.kind == "one":
            j, k = self._alias("j"), self._alias("k")
            scope.joins.append(f'LEFT JOIN "{target.table}" {j} ON {j}."id" = {column}')
            keys = (
                f'SELECT {k}."{mapped.column}" FROM "{scope.table.table}" {k} '
                f'WHERE {k}."id" IN ({scope.keys_sql})'
            )
            record = self._record(_Scope(j, target, keys, scope.joins), subfields)
            missing = "NULL"
            if mapped.fallback is not None:
                # The resolver's stand-in: the same fields, printed from this row's columns.
                stand_in = BoundTable(target.type_name, scope.table.table, mapped.fallback)
                missing = self._record(
                    _Scope(scope.alias, stand_in, scope.keys_sql, scope.joins), subfields
                )
            return f'CASE WHEN {j}."id" IS NULL THEN {missing} ELSE {record} END'
        if mapped.link is not None:
            return self._through(scope, mapped, target, subfields)
        if mapped.kind == "from":
            return self._from(scope, mapped, target, subfields, nodes)
        # to-many: one CTE aggregating the children of every parent row at once
        c, k, m = self._alias("c"), self._alias("k"), self._alias("m")
        keys = (
            f'SELECT {k}."id" FROM "{target.table}" {k} '
            f'WHERE {k}."{mapped.column}" IN ({scope.keys_sql})'
        )
        child = _Scope(c, target, keys)
        record = self._record(child, subfields)
        order = ", ".join(f'{c}."{o}"' for o in (*mapped.order_by, "id"))
        self.ctes.append(
            f'{m} AS MATERIALIZED (SELECT {c}."{mapped.column}" AS k, '
            f"array_to_json(array_agg({record} ORDER BY {order})) AS j "
            f'FROM "{target.table}" {c} {" ".join(child.joins)} '
            f'WHERE {c}."{mapped.column}" IN ({scope.keys_sql}) GROUP BY {c}."{mapped.column}")'
        )
        scope.joins.append(f'LEFT JOIN {m} ON {m}.k = {scope.alias}."id"')
        return f"coalesce({m}.j, '[]'::json)"

    def _through(
        self,
        scope: _Scope,
        mapped: BoundField,
        target: BoundTable,
        subfields: dict[str, list[FieldNode]],
    ) -> str:
        """A to-many through a link table: one CTE over the links of every parent row."""
        assert mapped.link is not None
        link, parent_fk, child_fk = mapped.link
        c, k, lk, m = self._alias("c"), self._alias("k"), self._alias("l"), self._alias("m")
        keys = (
            f'SELECT {k}."{child_fk}" FROM "{link}" {k} '
            f'WHERE {k}."{parent_fk}" IN ({scope.keys_sql})'
        )
        child = _Scope(c, target, keys)
        record = self._record(child, subfields)
        order = ", ".join(
            [f'{lk}."{o}"' for o in mapped.order_by]
            + [f'{c}."{o}"' for o in mapped.target_order_by]
            + [f'{lk}."id"']
        )
        self.ctes.append(
            f'{m} AS MATERIALIZED (SELECT {lk}."{parent_fk}" AS k, '
            f"array_to_json(array_agg({record} ORDER BY {order})) AS j "
            f'FROM "{link}" {lk} JOIN "{target.table}" {c} ON {c}."id" = {lk}."{child_fk}" '
            f"{' '.join(child.joins)} "
            f'WHERE {lk}."{parent_fk}" IN ({scope.keys_sql}) GROUP BY {lk}."{parent_fk}")'
        )
        scope.joins.append(f'LEFT JOIN {m} ON {m}.k = {scope.alias}."id"')
        return f"coalesce({m}.j, '[]'::json)"

    def _from(
        self,
        scope: _Scope,
        mapped: BoundField,
        target: BoundTable,
        subfields: dict[str, list[FieldNode]],
        nodes: list[FieldNode],
    ) -> str:
        """A to-many whose rows a declared query picks, its arguments as parameters: one CTE
        of (parent, target id, derived columns) for every parent row, one aggregating CTE."""
        site = self._alias("a")
        definition = self.compiler.schema.get_type(scope.table.type_name).fields[  # type: ignore[union-attr]
            nodes[0].name.value
        ]
        self.nested.append(NestedArguments(site, definition, nodes[0], mapped.args))
        parameters = {p: self._param(Slot(site, p), arg.cast) for _, p, arg in mapped.args}
        w, c, x, m = self._alias("w"), self._alias("c"), self._alias("x"), self._alias("m")
        self.ctes.append(
            f"{w} AS MATERIALIZED ({mapped.source.format(keys=scope.keys_sql, **parameters)})"
        )
        child = _Scope(c, target, f'SELECT "id" FROM {w}')
        record = self._record(child, subfields)
        order = ", ".join(f'{c}."{o}"' for o in mapped.order_by)
        derived = "".join(f', {w}."{d}"' for d in sorted(target.derived))
        self.ctes.append(
            f'{m} AS MATERIALIZED (SELECT {c}."k$" AS k, '
            f"array_to_json(array_agg({record} ORDER BY {order})) AS j "
            f'FROM (SELECT {w}."k" AS "k$"{derived}, {x}.* FROM {w} '
            f'JOIN "{target.table}" {x} ON {x}."id" = {w}."id") {c} '
            f'{" ".join(child.joins)} GROUP BY {c}."k$")'
        )
        scope.joins.append(f'LEFT JOIN {m} ON {m}.k = {scope.alias}."id"')
        return f"coalesce({m}.j, '[]'::json)"

    def _page(
        self, scope: _Scope, mapped: BoundField, target: BoundTable, nodes: list[FieldNode]
    ) -> str:
        """A nested connection: for every parent row, what `paginate` gives for that parent
        alone -- the rows whose `fk` is its id, filtered, after the cursor, in `id` order,
        `first` + 1 of them for `hasNextPage` -- in one CTE of (parent `k$`, the row, its
        place `n$`) over every parent at once; then, per selected part, a CTE of one row per
        parent: the edges aggregated (the extra row dropped), the pageInfo's next page and
        cursors, the count without the cursor. Each is LEFT JOINed to the parent: a parent
        without rows gets `[]`, false, nulls and 0.

        The page is a LATERAL subquery per parent (`ORDER BY id LIMIT first + 1`: it stops
        after first + 1 rows), not `row_number() OVER (PARTITION BY fk ORDER BY id)`, which
        reads and numbers every row of every parent first. EXPLAIN ANALYZE of the board read
        without totalCount (PostgreSQL 15, 20 machines with 5,000 interleaved events each,
        custom and generic plans alike): first 20, LATERAL 3.8-4.5 ms, window 62-75 ms;
        kinds [ALARM], 6.4-7.4 against 41-44 ms; first 50 after the 50,000th event, 9.8-10.2
        against 46-52 ms. A machine with few events needs the index on (equipment_id, id)
        (migration 0008): with only the primary key for the order, the planner walks the
        whole table for it (1M events, a machine with 2: 90 ms; with the index 0.2 ms, as
        PostgreSQL keeps custom plans for this statement). totalCount counts every row
        either way (about 15 ms more).
        """
        name = nodes[0].name.value
        definition = self.compiler.schema.get_type(scope.table.type_name).fields[name]  # type: ignore[union-attr]
        connection = _unwrap(definition.type)
        edge_type = _unwrap(connection.fields["edges"].type)
        page_type = _unwrap(connection.fields["pageInfo"].type)
        site = self._alias("a")
        self.nested.append(
            NestedArguments(site, definition, nodes[0], mapped.args, mapped.largest_key)
        )
        size = self._param(Slot(site, "size"), "int8")
        lowest = self._param(Slot(site, "lowest"), "int8")  # the keyset bound: see _lowest_key
        fk = mapped.column

        def filtered(alias: str) -> list[str]:
            # A null parameter: the resolver applies no condition for that argument's value.
            conditions = []
            for _, python_name, flt in mapped.args:
                assert isinstance(flt, Filter)
                p = self._param(Slot(site, python_name), flt.cast)
                conditions.append(f"({p} IS NULL OR {flt.sql.format(t=alias, p=p)})")
            return conditions

        parents, x, w = self._alias("p"), self._alias("x"), self._alias("w")
        conditions = [f'{x}."{fk}" = {parents}."id"', *filtered(x)]
        conditions.append(f'{x}."id" >= {lowest}')
        # The parents first, each once: the planner may otherwise run the LATERAL page for
        # every row of the parents' table and only then keep the ones asked for.
        self.ctes.append(
            f'{parents} AS MATERIALIZED (SELECT DISTINCT q."id" FROM ({scope.keys_sql}) q("id"))'
        )
        self.ctes.append(
            f'{w} AS MATERIALIZED (SELECT {parents}."id" AS "k$", r.* FROM {parents} '
            f'CROSS JOIN LATERAL (SELECT {x}.*, row_number() OVER (ORDER BY {x}."id") AS "n$" '
            f'FROM "{target.table}" {x}{_where(conditions)} ORDER BY {x}."id" '
            f"LIMIT {size} + 1) r)"
        )
        page_info: list[str] = []  # the pageInfo CTE, made for the first pageInfo selected

        def part(name: str, sub: list[FieldNode]) -> str | None:
            if name == "totalCount":
                n, c = self._alias("n"), self._alias("x")
                counted = [f'{c}."{fk}" IN (SELECT "id" FROM {parents})', *filtered(c)]
                self.ctes.append(
                    f'{n} AS MATERIALIZED (SELECT {c}."{fk}" AS k, count(*) AS n '
                    f'FROM "{target.table}" {c}{_where(counted)} GROUP BY {c}."{fk}")'
                )
                scope.joins.append(f'LEFT JOIN {n} ON {n}.k = {scope.alias}."id"')
                return f"coalesce({n}.n, 0)"
            if name == "pageInfo":
                if not page_info:
                    g = self._alias("g")
                    page_info.append(g)
                    kept = f'FILTER (WHERE "n$" <= {size})'
                    self.ctes.append(
                        f'{g} AS MATERIALIZED (SELECT "k$" AS k, max("n$") > {size} '
                        f'AS more, min("id") {kept} AS first, max("id") {kept} AS last '
                        f'FROM {w} GROUP BY "k$")'
                    )
                    scope.joins.append(f'LEFT JOIN {g} ON {g}.k = {scope.alias}."id"')
                return self._nested_page_info(page_type.name, sub, page_info[0], site)
            if name == "edges":
                return self._nested_edges(scope, edge_type.name, target, sub, w, size)
            return None

        return self._object(connection.name, nodes, part)

    def _nested_page_info(self, type_name: str, nodes: list[FieldNode], g: str, site: str) -> str:
        """A nested connection's pageInfo from its per-parent CTE `g`, as `paginate` sets it."""

        def part(name: str, _nodes: list[FieldNode]) -> str | None:
            if name == "hasNextPage":
                return f"coalesce({g}.more, false)"
            if name == "hasPreviousPage":
                return self._param(Slot(site, "previous"), "boolean")
            if name == "startCursor":
                return _base64_id("cursor", f"{g}.first")  # null without edges
            if name == "endCursor":
                return _base64_id("cursor", f"{g}.last")
            return None

        return self._object(type_name, nodes, part)

    def _nested_edges(
        self,
        scope: _Scope,
        type_name: str,
        target: BoundTable,
        nodes: list[FieldNode],
        w: str,
        size: str,
    ) -> str:
        """A nested connection's edges: the page's rows of `w` (without the extra one),
        aggregated per parent in `id` order."""
        c, m = self._alias("c"), self._alias("m")
        child = _Scope(c, target, f'SELECT "id" FROM {w} WHERE "n$" <= {size}')
        edge = self._edge(type_name, child, nodes)
        self.ctes.append(
            f'{m} AS MATERIALIZED (SELECT {c}."k$" AS k, '
            f'array_to_json(array_agg({edge} ORDER BY {c}."id")) AS j '
            f'FROM {w} {c} {" ".join(child.joins)} WHERE {c}."n$" <= {size} GROUP BY {c}."k$")'
        )
        scope.joins.append(f'LEFT JOIN {m} ON {m}.k = {scope.alias}."id"')
        return f"coalesce({m}.j, '[]'::json)"


def _sets(nodes: tuple[FieldNode, ...] | list[FieldNode]) -> list[SelectionSetNode]:
    return [n.selection_set for n in nodes if n.selection_set is not None]


def _where(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _unwrap(t: Any) -> Any:
    while hasattr(t, "of_type"):
        t = t.of_type
    return t
