"""Benchmarks run on demand only: `make bench` (MES_BENCH=1 pytest tests/benchmarks -s).

In the normal suite every test in this folder is skipped, so that `make test` stays fast and
no timing ever decides a pass or a failure. The benchmarks print their figures and assert
only correctness (identical responses, rows written, statement counts).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MES_BENCH") == "1":
        return
    skip = pytest.mark.skip(reason="benchmark: runs only with MES_BENCH=1 (make bench)")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)
