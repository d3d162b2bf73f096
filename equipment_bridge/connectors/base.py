"""What a connector needs from the rest of the bridge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from equipment_bridge.events import Observation


class Sink(Protocol):
    """The pipeline of one machine. Each call commits what it produced before returning."""

    async def observe(self, batch: Sequence[Observation]) -> None:
        """One poll or one notification batch, in order."""

    async def link(self, up: bool, detail: str = "") -> None:
        """The machine connection was established (`up`) or lost."""

    async def tick(self) -> None:
        """Called about once a second while the connector runs (heartbeats)."""

    async def config_error(self, signal: str, detail: str) -> None:
        """A configured signal does not exist on the machine."""
