"""What optimize minimizes: a cost read from a measured Profile at the user's batch size."""

from __future__ import annotations

from dataclasses import dataclass

from wattwise.errors import ConfigError
from wattwise.measure.profile import Profile

OBJECTIVES = ("throughput", "latency", "energy", "size", "tokens_per_s")
# Objectives measured by generating text end to end (causal LMs), not read from a Profile: the
# draft search (`search/drafts.py`). Speculative decoding runs at batch 1.
GENERATION_OBJECTIVES = ("tokens_per_s",)


@dataclass(frozen=True)
class Objective:
    """A named cost. Lower cost is better for every objective (throughput is inverted).

    `cost` is seconds per 1,000 samples for throughput, p50 milliseconds per batch for
    latency, joules per 1,000 inferences for energy, bytes for size, and seconds per 1,000
    generated tokens for tokens_per_s (measured by the draft search, `search/drafts.py`).
    """

    name: str
    batch_size: int

    def cost(self, profile: Profile) -> float:
        """Measured cost of a profile; never derived from operation counts or method names."""
        if self.generates:
            raise ConfigError(
                "tokens_per_s is measured by generating text, not read from a profile"
            )
        key = str(self.batch_size)
        if self.name == "throughput":
            return 1000.0 / profile.throughput_per_s[key]
        if self.name == "latency":
            return profile.latency_ms[key].p50_ms
        if self.name == "energy":
            return profile.energy_j_per_1k_by_batch[key]
        return float(profile.size_bytes)

    def display(self, profile: Profile) -> str:
        """Human figure of the objective for one profile."""
        key = str(self.batch_size)
        if self.name == "throughput":
            return f"{profile.throughput_per_s[key]:,.1f} samples/s"
        if self.name == "latency":
            return f"{profile.latency_ms[key].p50_ms:.2f} ms p50"
        if self.name == "energy":
            return f"{profile.energy_j_per_1k_by_batch[key]:.4g} J/1k"
        return f"{profile.size_bytes / 1e6:.3f} MB"

    def display_scaled(self, original: dict, ratio: float) -> str:
        """A speed objective's figure for a candidate timed at `ratio` x the original (whose
        profile, as a dict, is `original`)."""
        key = str(self.batch_size)
        if self.name == "throughput":
            return f"{original['throughput_per_s'][key] * ratio:,.1f} samples/s"
        return f"{original['latency_ms'][key]['p50_ms'] / ratio:.2f} ms p50"

    @property
    def unit(self) -> str:
        """Unit of `cost`."""
        return {
            "throughput": "s per 1k samples",
            "latency": "ms p50",
            "energy": "J per 1k",
            "size": "bytes",
            "tokens_per_s": "s per 1k tokens",
        }[self.name]

    @property
    def depends_on_speed(self) -> bool:
        """Whether speed moves this objective's cost (energy is estimated from time); size is
        the one that does not."""
        return self.name != "size"

    @property
    def timing_precision(self) -> float:
        """The precision a candidate's paired speed ratio is timed to: ±3% when the objective
        depends on speed, ±10% otherwise, where the ratio is shown beside the result and not
        ranked on (far fewer pairs)."""
        return 0.03 if self.depends_on_speed else 0.10

    @property
    def is_speed(self) -> bool:
        """Speed objectives must never choose a candidate slower than the original."""
        return self.name in ("throughput", "latency", "tokens_per_s")

    @property
    def generates(self) -> bool:
        """Whether the cost is measured end to end by generating text (a causal LM's draft
        search) rather than read from a Profile."""
        return self.name in GENERATION_OBJECTIVES


def parse_objective(name: str, batch_size: int) -> Objective:
    """Validate the objective name and batch size."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}: use one of {', '.join(OBJECTIVES)}")
    if batch_size <= 0:
        raise ConfigError(f"--batch-size must be ≥1, got {batch_size}")
    # Speculative decoding (transformers' assisted generation) runs at batch 1.
    return Objective(name, 1 if name in GENERATION_OBJECTIVES else batch_size)
