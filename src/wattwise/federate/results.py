"""What a federated run reports: per round, per client, and against centralised training."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientRound:
    """One client's answer in one round.

    Attributes:
        partition: the client's partition number (-1 when it never said).
        accepted: whether its update was averaged in.
        reason: why it was rejected ("" when accepted).
        num_examples: samples it trained on.
        payload_up_bytes: bytes of its coded update tensors as received by the server.
        train_s: its local training wall time, seconds.
        energy_j / energy_source / energy_uncertainty_pct: its own energy reading for the round.
    """

    partition: int
    accepted: bool
    reason: str
    num_examples: int
    payload_up_bytes: int
    train_s: float
    energy_j: float
    energy_source: str
    energy_uncertainty_pct: float
    train_loss: float


@dataclass
class RoundRecord:
    """One federated round as the server saw it.

    Attributes:
        round: 1-based round number.
        accuracy: the global model's score (fraction) on the held-out test split: top-1
            accuracy, or recall@10 for minilm (`FederateResult.metric` names it).
        selected / accepted / rejected / dropped: clients asked, averaged, refused, lost
            (crashed, disconnected or past the round timeout).
        aggregated: False when fewer than min_clients updates were accepted (model unchanged).
        payload_*_bytes: bytes of the weight tensors sent down / coded updates received up.
        wire_*_bytes: bytes counted at the socket relay (None in simulation: no network).
        client_energy_j: sum of the answering clients' own readings; server_energy_j: the
            server process during the round (aggregation, evaluation, checkpoint).
        duration_s: wall time of the round.
        committed: its checkpoint was committed to every replica.
    """

    round: int
    accuracy: float
    selected: int
    accepted: int
    rejected: int
    dropped: int
    aggregated: bool
    payload_down_bytes: int
    payload_up_bytes: int
    wire_down_bytes: int | None
    wire_up_bytes: int | None
    client_energy_j: float
    server_energy_j: float
    energy_source: str
    duration_s: float
    committed: bool = False
    clients: list[ClientRound] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> RoundRecord:
        clients = [ClientRound(**c) for c in data.get("clients", [])]
        return RoundRecord(**{**data, "clients": clients})


@dataclass
class CentralisedRun:
    """The same model trained on all clients' data pooled in one place (the baseline).

    accuracy_per_epoch: test accuracy (fraction) after each epoch; energy_j_per_epoch: this
    process's energy reading per epoch, with its source.
    """

    accuracy_per_epoch: list[float]
    energy_j_per_epoch: list[float]
    seconds_per_epoch: list[float]
    energy_source: str


@dataclass
class FederateResult:
    """A finished (or resumed and finished) federated run.

    Attributes:
        rounds: every round, including those committed before a resume.
        final_accuracy: last round's test score (fraction; `metric` names it).
        metric: what every `accuracy` figure is: "accuracy" (top-1) or "recall@10".
        resumed_from_round: the committed round this process started after (None: fresh).
        wire_source: how bytes on the wire were counted.
        energy_method: how energy figures were obtained (an estimate says so).
        centralised: the baseline, when asked for; to_same_accuracy: energy and time each
            side needed to first reach the lower of the two final accuracies.
    """

    model: str
    mode: str
    clients: int
    partition: str
    compression: str
    strategy: str
    rounds: list[RoundRecord]
    final_accuracy: float
    resumed_from_round: int | None
    wire_source: str
    energy_source: str
    energy_method: str
    replicas: list[str]
    centralised: CentralisedRun | None = None
    to_same_accuracy: dict[str, Any] | None = None
    per_client_energy_j: dict[str, float] = field(default_factory=dict)
    report_path: str | None = None
    metric: str = "accuracy"
    notes: list[str] = field(default_factory=list)

    @property
    def total_up_bytes(self) -> int:
        """Uplink bytes: on the wire when counted there, else the payload."""
        return sum(
            (r.wire_up_bytes if r.wire_up_bytes is not None else r.payload_up_bytes)
            for r in self.rounds
        )

    @property
    def total_payload_up_bytes(self) -> int:
        return sum(r.payload_up_bytes for r in self.rounds)

    @property
    def total_energy_j(self) -> float:
        return sum(r.client_energy_j + r.server_energy_j for r in self.rounds)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["total_up_bytes"] = self.total_up_bytes
        data["total_payload_up_bytes"] = self.total_payload_up_bytes
        data["total_energy_j"] = self.total_energy_j
        return data
