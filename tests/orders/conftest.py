"""Fixtures of the order tests: an ERP caller and a small plant (materials, work centers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from orders_support import (
    PLANT_MATERIALS,
    PLANT_WORK_CENTERS,
    UPSERT_MATERIALS,
    UPSERT_WORK_CENTERS,
    Caller,
)

from backend.principal import Role


@pytest.fixture
async def erp(as_role: Callable[..., Awaitable[Caller]]) -> Caller:
    """A GraphQL caller with the ERP role."""
    return await as_role(Role.ERP, username="erp")


@pytest.fixture
async def plant(erp: Caller) -> None:
    """Materials FG-1, RM-1, RM-2, PK-1 and work centers WC-1 (with EQ-1) and WC-2."""
    materials = await erp.data(UPSERT_MATERIALS, {"input": PLANT_MATERIALS})
    assert materials["upsertMaterials"]["errors"] == []
    centers = await erp.data(UPSERT_WORK_CENTERS, {"input": PLANT_WORK_CENTERS})
    assert centers["upsertWorkCenters"]["errors"] == []
