"""Input rules shared by every domain: codes are trimmed, texts bounded, quantities positive,
floats finite."""

from __future__ import annotations

import math
from decimal import Decimal

from backend.db import to_quantity
from backend.errors import Problems

CODE_MAX = 64
NAME_MAX = 200  # titles and names
TEXT_MAX = 10_000  # free text


def code(problems: Problems, field: str, value: str, *, max_length: int = CODE_MAX) -> str:
    """A trimmed, non-empty code without control characters."""
    trimmed = value.strip()
    if not trimmed:
        problems.invalid(field, "must not be empty")
    elif len(trimmed) > max_length:
        problems.invalid(field, f"must be at most {max_length} characters")
    elif any(ord(ch) < 32 for ch in trimmed):
        problems.invalid(field, "must not contain control characters")
    return trimmed


def name(problems: Problems, field: str, value: str, *, max_length: int = NAME_MAX) -> str:
    """A trimmed, non-empty name or title."""
    trimmed = value.strip()
    if not trimmed:
        problems.invalid(field, "must not be empty")
    elif len(trimmed) > max_length:
        problems.invalid(field, f"must be at most {max_length} characters")
    return trimmed


def text(
    problems: Problems, field: str, value: str | None, *, max_length: int = TEXT_MAX
) -> str | None:
    """Optional free text; blank becomes None."""
    if value is None or not value.strip():
        return None
    if len(value) > max_length:
        problems.invalid(field, f"must be at most {max_length} characters")
    return value.strip()


def positive_quantity(problems: Problems, field: str, value: Decimal) -> Decimal:
    """A quantity > 0 with at most six decimal places."""
    try:
        exact = to_quantity(value)
    except ValueError as error:
        problems.invalid(field, str(error))
        return Decimal(0)
    if exact <= 0:
        problems.invalid(field, "must be greater than 0")
    elif exact >= Decimal(10) ** 12:
        problems.invalid(field, "is too large")
    return exact


def non_negative_quantity(problems: Problems, field: str, value: Decimal) -> Decimal:
    """A quantity >= 0 with at most six decimal places."""
    try:
        exact = to_quantity(value)
    except ValueError as error:
        problems.invalid(field, str(error))
        return Decimal(0)
    if exact < 0:
        problems.invalid(field, "must not be negative")
    elif exact >= Decimal(10) ** 12:
        problems.invalid(field, "is too large")
    return exact


def finite(problems: Problems, field: str, value: float | None) -> bool:
    """Whether `value` is absent or a finite number; else a problem on `field`.

    A GraphQL literal such as `1e999` reaches a service as infinity (graphql-core checks
    variables, not literals), and NaN can come from any Python caller. Neither can be read
    back through GraphQL nor compared against sensibly, so no Float input is stored unless it
    passes here.
    """
    if value is None or math.isfinite(value):
        return True
    problems.invalid(field, "must be a finite number")
    return False
