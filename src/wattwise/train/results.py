"""What one `wattwise train` process did (the result of `run_training`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainRunResult:
    """What one `wattwise train` process did.

    Attributes:
        role: the role it started as; `promoted` says whether a standby took over.
        epoch: its lease epoch.
        final_step: the step the run reached (== config steps when it finished).
        resumed_from_step: the checkpoint step it resumed from (None for a fresh start).
        resumed_from_replica: the replica that checkpoint came from.
        promotion_s: standby only: seconds from acquiring the lease to the first resumed step.
        final_loss: loss of the last step trained in this process (NaN if it trained none).
        train_s: wall seconds spent in the training loop.
        checkpoints: checkpoints saved by this process.
        replication: "sync" or "async"; degraded lists replicas that fell back to async.
        stall_s_mean: mean seconds the loop waited per checkpoint (snapshot + queue or writes).
        max_lag_steps / max_lag_s: the largest loss window seen (not yet on every replica).
        energy_j: energy of the trained steps; energy_source and its ± band.
        activation_memory: bytes without/with gradient checkpointing, when switched on.
        weights_path: final weights (safetensors), written when the run finished.
        journal_path: the JSONL event log.
    """

    role: str
    epoch: int
    final_step: int
    resumed_from_step: int | None = None
    resumed_from_replica: str | None = None
    promoted: bool = False
    promotion_s: float | None = None
    final_loss: float = float("nan")
    train_s: float = 0.0
    checkpoints: int = 0
    replication: str = "sync"
    degraded: list[str] = field(default_factory=list)
    stall_s_mean: float = 0.0
    max_lag_steps: int = 0
    max_lag_s: float = 0.0
    energy_j: float = 0.0
    energy_source: str | None = None
    energy_uncertainty_pct: float | None = None
    activation_memory: dict[str, Any] | None = None
    weights_path: str | None = None
    journal_path: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)
