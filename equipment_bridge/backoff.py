"""Exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

from __future__ import annotations

import random

from equipment_bridge.config import Backoff


def full_jitter(backoff: Backoff, attempt: int, rng: random.Random | None = None) -> float:
    """Sleep before retry number `attempt` (0-based): uniform(0, min(cap, base * 2**attempt))."""
    ceiling = min(backoff.cap_s, backoff.base_s * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0, ceiling)


class Retry:
    """Backoff state for one link: `next_delay()` grows, `reset()` after a success."""

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        self.backoff = backoff
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = full_jitter(self.backoff, self.attempt, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
