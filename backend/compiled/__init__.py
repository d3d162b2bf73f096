"""Compiled reads: a read-only query whose every field is declared compilable is answered by
one PostgreSQL statement that prints the response's `data` (see extension.py)."""

from __future__ import annotations

import importlib

from backend.compiled.registry import REGISTRY, Registry

# The domains that declare compilable types and roots, next to their schema modules.
MAPPING_MODULES = (
    "backend.auth.compiled",
    "backend.catalog.compiled",
    "backend.equipment.compiled",
    "backend.orders.compiled",
    "backend.lots.compiled",
    "backend.quality.compiled",
)


def default_registry() -> Registry:
    """The application's mapping, with every domain's declarations loaded (once)."""
    for module in MAPPING_MODULES:
        importlib.import_module(module)
    return REGISTRY
