"""A field declared compilable must be selected by a compiled document of some corpus: new
compilable fields cannot land without their differential cases."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from compiled_support import Case, selected_fields

from backend.compiled import default_registry
from backend.graphql import build_schema
from backend.settings import Settings


def every_corpus() -> list[Case]:
    """The cases of each `corpus(...)` in the test_compiled_* modules here, found by name so
    that a new domain's module counts without being listed. Their required parameters are
    cursors, which select no field: any string stands in for them (the others keep their
    defaults)."""
    cases: list[Case] = []
    for path in sorted(Path(__file__).parent.glob("test_compiled_*.py")):
        make = getattr(importlib.import_module(path.stem), "corpus", None)
        if make is not None:
            parameters = inspect.signature(make).parameters.values()
            required = [p for p in parameters if p.default is inspect.Parameter.empty]
            cases += make(*["x"] * len(required))
    return cases


def test_every_compilable_field_is_in_a_corpus(settings: Settings) -> None:
    schema = build_schema(settings)
    bound = default_registry().bind(schema)
    missing = sorted(bound.compilable_fields() - selected_fields(schema._schema, every_corpus()))
    assert not missing, f"compilable but in no compiled corpus document: {missing}"
