"""The live gateway's figures, in the process's default Prometheus registry.

The gateway and the Bottle app share a process in ``chinwag.asgi``, so the existing ``GET
/metrics`` (which renders that registry) shows these too.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge(
    "chinwag_live_connections",
    "Open live connections held by this gateway process, by transport",
    ["transport"],
)
FANNED_OUT = Counter(
    "chinwag_live_events_fanned_out",
    "Events written to live connections (one per event and connection)",
)
FANOUT_SECONDS = Histogram(
    "chinwag_live_fanout_seconds",
    "From an event's creation to its being written to a live connection",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SLOW_CONSUMERS = Counter(
    "chinwag_live_slow_consumers_dropped",
    "Live connections closed because their send queue overflowed",
)
TAIL_READS = Counter(
    "chinwag_live_tail_reads",
    "Reads of new event rows by this gateway process (independent of the connections held)",
)
