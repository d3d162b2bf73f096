"""Expected failures, as data.

    DomainError            raised by services; carries one or more Problems
      └─ Problem(code, message, field)
                           becomes a `MutationError` in the payload's `errors`

Anything else that escapes a service is a fault: the transaction rolls back and the
client sees a masked top-level error.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class ErrorCode(enum.StrEnum):
    NOT_FOUND = "NOT_FOUND"
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    FORBIDDEN = "FORBIDDEN"
    CONFLICT = "CONFLICT"
    UNKNOWN_BARCODE = "UNKNOWN_BARCODE"
    WRONG_MATERIAL = "WRONG_MATERIAL"
    LOT_UNAVAILABLE = "LOT_UNAVAILABLE"
    LOT_EXPIRED = "LOT_EXPIRED"
    INSUFFICIENT_QUANTITY = "INSUFFICIENT_QUANTITY"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    SELF_APPROVAL = "SELF_APPROVAL"


@dataclass(frozen=True)
class Problem:
    code: ErrorCode
    message: str
    field: str | None = None


class DomainError(Exception):
    """One or more expected failures; the unit of work rolls back and nothing is written."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in self.problems))

    @classmethod
    def one(cls, code: ErrorCode, message: str, field: str | None = None) -> DomainError:
        return cls([Problem(code, message, field)])


class Problems:
    """Collects validation problems so that a client hears about all of them at once."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        self.items.append(Problem(code, message, field))

    def invalid(self, field: str, message: str) -> None:
        self.add(ErrorCode.INVALID_INPUT, message, field)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise DomainError(self.items)
