"""The schema file and the API contract.

- `schema.graphql` at the root is exactly what `mes export-schema` prints.
- The served schema breaks the contract (`../shared/contract/schema.graphql`) only where the
  contract's types and fields are not built yet: those are listed in PENDING, by the issue
  that builds them. PENDING is exact: a break not in it fails, and so does an entry that no
  longer breaks anything (delete it when its issue lands).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import graphql
import pytest
from graphql.utilities import BreakingChange, find_breaking_changes
from strawberry.printer import print_schema

from backend.graphql import build_schema
from backend.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schema.graphql"
# CI clones the project with the shared folder beside it.
CONTRACT_FILE = ROOT.parent / "shared" / "contract" / "schema.graphql"

# Issue #3, shop floor: lots, scanning, genealogy, operations.
SHOP_FLOOR: set[str] = set()
# Issue #4, quality: inspections, deviations, signatures.
QUALITY: set[str] = set()
# Issue #5, equipment: events, states, OEE.
EQUIPMENT: set[str] = set()
PENDING = SHOP_FLOOR | QUALITY | EQUIPMENT


def _served_sdl() -> str:
    """What `mes export-schema` prints, made in this process."""
    settings = Settings(secret_key="schema-export", _env_file=None)  # type: ignore[call-arg]
    return print_schema(build_schema(settings)) + "\n"


def test_schema_file_is_the_exported_schema() -> None:
    exported = _served_sdl()
    checked_in = SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else ""
    assert checked_in == exported, (
        "schema.graphql differs from the schema the code serves: run `make schema` "
        "(mes export-schema > schema.graphql) and commit the result"
    )


def _subject(change: BreakingChange, contract: graphql.GraphQLSchema) -> str:
    """The type or `Type.field` a breaking change is about, as PENDING names it."""
    names = re.findall(r"[_A-Za-z]\w*(?:\.[_A-Za-z]\w*)?", change.description)
    for name in names:
        if "." in name and name.split(".")[0] in contract.type_map:
            return name
    for name in names:
        if name in contract.type_map:
            return name
    return change.description


def _contract() -> graphql.GraphQLSchema:
    if not CONTRACT_FILE.exists():
        reason = f"the contract is not at {CONTRACT_FILE} (clone shared/ beside the project)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return graphql.build_schema(CONTRACT_FILE.read_text())


def test_served_schema_breaks_the_contract_only_where_work_is_pending() -> None:
    contract = _contract()
    served = graphql.build_schema(_served_sdl())
    breaks: dict[str, list[str]] = {}
    for change in find_breaking_changes(contract, served):
        breaks.setdefault(_subject(change, contract), []).append(change.description)

    unexpected = sorted(d for subject, ds in breaks.items() if subject not in PENDING for d in ds)
    assert not unexpected, "the served schema breaks the contract:\n" + "\n".join(unexpected)
    built = sorted(PENDING - set(breaks))
    assert not built, (
        "these contract types and fields are served now: remove them from PENDING in "
        f"{Path(__file__).name}: {', '.join(built)}"
    )


def test_pending_names_are_in_the_contract() -> None:
    """A misspelt PENDING entry would otherwise hide nothing and fail only as 'served now'."""
    contract = _contract()
    for name in sorted(PENDING):
        type_name, _, field = name.partition(".")
        assert type_name in contract.type_map, name
        if field:
            fields = contract.type_map[type_name].fields  # type: ignore[union-attr]
            assert field in fields, name
