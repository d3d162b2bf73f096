"""Machine connectors: each reads one machine and hands observations to a `Sink`."""

from equipment_bridge.connectors.base import Sink

__all__ = ["Sink"]
