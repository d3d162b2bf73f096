"""Process-wide counters of which path served each GraphQL read, in Prometheus text format."""

from __future__ import annotations

import threading
from collections import Counter


class ReadMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads: Counter[str] = Counter({"compiled": 0, "resolvers": 0})
        self.fallbacks: Counter[str] = Counter()

    def served(self, path: str, reason: str | None = None) -> None:
        with self._lock:
            self.reads[path] += 1
            if reason is not None:
                self.fallbacks[reason] += 1

    def render(self) -> str:
        with self._lock:
            reads, fallbacks = dict(self.reads), dict(self.fallbacks)
        lines = [
            "# HELP mes_graphql_reads_total GraphQL queries, by the path that served them.",
            "# TYPE mes_graphql_reads_total counter",
            *(f'mes_graphql_reads_total{{path="{p}"}} {n}' for p, n in sorted(reads.items())),
            "# HELP mes_compiled_fallbacks_total Queries the compiled path left to the resolvers.",
            "# TYPE mes_compiled_fallbacks_total counter",
            *(
                f'mes_compiled_fallbacks_total{{reason="{r}"}} {n}'
                for r, n in sorted(fallbacks.items())
            ),
        ]
        return "\n".join(lines) + "\n"


METRICS = ReadMetrics()
