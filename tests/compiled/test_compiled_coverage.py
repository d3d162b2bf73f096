"""A field declared compilable must be selected by a compiled document of some corpus: new
compilable fields cannot land without their differential cases."""

from __future__ import annotations

import test_compiled_lots
import test_compiled_orders
import test_compiled_quality
from compiled_support import selected_fields

from backend.compiled import default_registry
from backend.graphql import build_schema
from backend.settings import Settings


def test_every_compilable_field_is_in_a_corpus(settings: Settings) -> None:
    schema = build_schema(settings)
    bound = default_registry().bind(schema)
    corpus = [
        *test_compiled_orders._corpus("x", "y"),
        *test_compiled_lots.corpus("x", "y"),
        *test_compiled_quality.corpus(),
    ]
    missing = sorted(bound.compilable_fields() - selected_fields(schema._schema, corpus))
    assert not missing, f"compilable but in no compiled corpus document: {missing}"
