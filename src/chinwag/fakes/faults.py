"""What a fake does wrong, and how often: the knobs every fake provider takes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# "5xx": 503 with Retry-After · "429": 429 with Retry-After · "drop": the TCP connection is cut ·
# "goaway": HTTP/2 GOAWAY refusing this stream, then close · "stall": hold the stream, then 503.
KNOWN_FAULTS = frozenset({"5xx", "429", "drop", "goaway", "stall"})


@dataclass
class FaultPlan:
    latency: float = 0.0  # seconds added before answering each request
    error_rate: float = 0.0  # share of requests answered with a fault from `faults`
    faults: tuple[str, ...] = ("5xx", "429", "drop", "goaway", "stall")
    retry_after: int = 1  # seconds sent in Retry-After on 429 / 503
    stall_seconds: float = 30.0  # how long a "stall" holds the stream before answering 503
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - KNOWN_FAULTS
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {sorted(KNOWN_FAULTS)}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {self.error_rate}")
        self._random = random.Random(self.seed)

    def pick(self) -> str | None:
        """The fault for the next request, or None to answer it normally."""
        if self.error_rate <= 0.0 or not self.faults:
            return None
        if self.error_rate < 1.0 and self._random.random() >= self.error_rate:
            return None
        return self._random.choice(self.faults)
