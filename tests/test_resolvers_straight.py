"""`call_resolvers_straight`: graphql-core calls attribute fields and `plain_field`s with no
Strawberry wrapping, and the answers stay the same."""

from __future__ import annotations

import enum
from typing import Any

import pytest
import strawberry

from backend.gql import StraightExecution, call_resolvers_straight, plain_field
from backend.graphql import build_schema


def _resolver_name(schema: strawberry.Schema, type_name: str, field: str) -> str:
    graphql_type: Any = schema._schema.type_map[type_name]
    return str(graphql_type.fields[field].resolve.__qualname__)


def test_the_app_schema_calls_hot_fields_straight() -> None:
    schema = build_schema()
    assert _resolver_name(schema, "ProductionOrder", "number").startswith("_attribute")
    assert _resolver_name(schema, "OrderComponent", "quantityRequired").startswith("_attribute")
    for type_name, field in [
        ("ProductionOrder", "product"),
        ("ProductionOrder", "operations"),
        ("OrderComponent", "material"),
        ("Lot", "material"),
        ("Deviation", "lots"),
    ]:
        assert _resolver_name(schema, type_name, field).startswith("_call"), (type_name, field)
    # a field with arguments keeps Strawberry's wrapping
    assert not _resolver_name(schema, "Lot", "trace").startswith(("_call", "_attribute"))


@strawberry.type
class Item:
    name: str
    python_name_differs: int

    @plain_field()
    def owner(self, info: strawberry.Info) -> str:
        return f"{self.name} of {info.context['user']}"

    @strawberry.field
    def label(self, prefix: str) -> str:
        return prefix + self.name


@strawberry.type
class ItemQuery:
    @strawberry.field
    def items(self) -> list[Item]:
        return [Item(name="a", python_name_differs=1), Item(name="b", python_name_differs=2)]


async def test_answers_are_the_same_called_straight_or_wrapped() -> None:
    document = '{ items { name pythonNameDiffers owner label(prefix: "x-") } }'
    wrapped = strawberry.Schema(query=ItemQuery)
    straight = strawberry.Schema(query=ItemQuery)
    call_resolvers_straight(straight)
    assert _resolver_name(straight, "Item", "owner").startswith("_call")
    results = [
        await schema.execute(document, context_value={"user": "ann"})
        for schema in (wrapped, straight)
    ]
    assert results[0].errors is None
    assert (
        results[0].data
        == results[1].data
        == {
            "items": [
                {"name": "a", "pythonNameDiffers": 1, "owner": "a of ann", "label": "x-a"},
                {"name": "b", "pythonNameDiffers": 2, "owner": "b of ann", "label": "x-b"},
            ]
        }
    )


@strawberry.type
class Bad:
    @plain_field()
    def greet(self, info: strawberry.Info, name: str) -> str:
        return name


@strawberry.type
class BadQuery:
    @strawberry.field
    def bad(self) -> Bad:
        return Bad()


def test_a_plain_field_with_arguments_is_refused_when_the_schema_is_built() -> None:
    with pytest.raises(TypeError, match=r"Bad\.greet: not plain"):
        call_resolvers_straight(strawberry.Schema(query=BadQuery))


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Odd:
    """Values the short way must hand back to graphql-core: nulls, refused values."""

    name: str
    count: int
    maybe: int | None
    colour: Colour
    ratio: float


@strawberry.type
class OddQuery:
    @strawberry.field
    def odds(self) -> list[Odd | None]:
        fine = Odd(name="a", count=1, maybe=None, colour=Colour.RED, ratio=0.5)
        null_name = Odd(name=None, count=2, maybe=3, colour=Colour.BLUE, ratio=1.0)  # type: ignore[arg-type]
        too_big = Odd(name="c", count=2**31, maybe=2**40, colour=Colour.RED, ratio=2.0)
        not_a_colour = Odd(name="d", count=4, maybe=5, colour="green", ratio=float("inf"))  # type: ignore[arg-type]
        return [fine, null_name, too_big, not_a_colour]


@pytest.mark.parametrize(
    "document",
    [
        "{ odds { name count maybe colour ratio } }",
        "{ odds { count } }",
        "{ odds { maybe } }",
        "{ odds { colour ratio } }",
        "{ odds { name } }",
    ],
)
async def test_the_short_way_gives_graphql_cores_answers_and_errors(document: str) -> None:
    wrapped = strawberry.Schema(query=OddQuery)
    straight = strawberry.Schema(query=OddQuery, execution_context_class=StraightExecution)
    call_resolvers_straight(straight)
    results = [await schema.execute(document) for schema in (wrapped, straight)]
    assert results[0].data == results[1].data
    assert [e.formatted for e in results[0].errors or []] == [
        e.formatted for e in results[1].errors or []
    ]
    if document.startswith("{ odds { name count"):
        assert len(results[0].errors or []) == 3  # each odd item: its first error nulls it
