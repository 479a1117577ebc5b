"""What a federated run is asked to do: parsed, checked settings with units in their names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wattwise.errors import ConfigError

STRATEGIES = ("fedavg", "fedprox")
MODES = ("processes", "simulation", "server")
SIMPLE_CLIENT_FAULTS = ("none", "nan", "garbage", "shape", "slow")
CLIENT_FAULTS = (*SIMPLE_CLIENT_FAULTS, "die:ROUND")  # the forms, for help and error messages


@dataclass(frozen=True)
class Partition:
    """How the training split is dealt to clients: "iid" or "dirichlet" with concentration α."""

    kind: str
    alpha: float | None = None

    def label(self) -> str:
        return "iid" if self.kind == "iid" else f"dirichlet:{self.alpha:g}"


@dataclass(frozen=True)
class Compression:
    """How an update is coded before it is sent: "none" (fp32), "int8", or "topk" keeping a fraction."""

    kind: str
    fraction: float | None = None

    def label(self) -> str:
        return self.kind if self.kind != "topk" else f"topk:{self.fraction:g}"


def kill_round(fault: str) -> int | None:
    """The round a "die:ROUND" client kills itself in (ROUND >= 1); None for any other fault."""
    kind, _, value = fault.partition(":")
    if kind == "die" and value.isdigit() and int(value) >= 1:
        return int(value)
    return None


def is_client_fault(fault: str) -> bool:
    """True for a fault a client can be told to simulate (see CLIENT_FAULTS)."""
    return fault in SIMPLE_CLIENT_FAULTS or kill_round(fault) is not None


def default_learning_rate(model: str) -> float:
    """Local learning rate when none is given: SGD's 0.05 suits the small classifiers; minilm
    trains with AdamW at 1e-4, the usual ceiling for BERT-size fine-tuning."""
    return 1e-4 if model == "minilm" else 0.05


def _number_after(text: str, kind: str) -> float | None:
    """The number in 'KIND:NUMBER' (None when `text` is another kind or no number follows)."""
    prefix, _, value = text.partition(":")
    if prefix != kind:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_partition(text: str) -> Partition:
    """'iid' or 'dirichlet:0.3' → Partition; anything else is a ConfigError naming the forms."""
    text = text.strip().lower()
    if text == "iid":
        return Partition("iid")
    alpha = _number_after(text, "dirichlet")
    if alpha is not None and alpha > 0:
        return Partition("dirichlet", alpha)
    raise ConfigError(f"bad --partition {text!r}: use iid or dirichlet:ALPHA with ALPHA > 0")


def parse_compression(text: str) -> Compression:
    """'none', 'int8' or 'topk:0.1' → Compression; the top-k fraction must be in (0, 1]."""
    text = text.strip().lower()
    if text in ("none", "int8"):
        return Compression(text)
    fraction = _number_after(text, "topk")
    if fraction is not None and 0 < fraction <= 1:
        return Compression("topk", fraction)
    raise ConfigError(
        f"bad --update-compression {text!r}: use none, int8 or topk:F with 0 < F <= 1"
    )


@dataclass(frozen=True)
class FederateSettings:
    """One federated training run.

    Attributes:
        model: "digits-cnn", "minilm" (pre-trained, fine-tuned on retrieval pairs) or
            "module:factory" (a fresh, seeded model is built from it).
        data: the user's whole data file (.npz/.csv/.jsonl) for a factory model; split 60/20/20,
            clients share the train split, the server keeps the test split.
        clients: number of clients the train split is dealt to.
        rounds: federated rounds to run (in total, counting rounds done before a resume).
        fraction: share of connected clients asked to train each round.
        min_clients: fewest accepted updates that make a round; fewer and the round is skipped.
        round_timeout_s: a client that has not answered by then counts as dropped (straggler).
        join_timeout_s: how long the server waits for enough clients to be connected.
        learning_rate / local_epochs / batch_size: each client's local training (SGD with
            momentum for classifiers, AdamW for minilm); learning_rate None picks the model's
            default (0.05, or 1e-4 for minilm).
        local_steps: cap on each client's optimizer steps per round (None: every batch of
            every local epoch).
        proximal_mu: FedProx's μ (only with strategy "fedprox").
        mode: "processes" (server here, one OS process per client, gRPC on loopback),
            "simulation" (Flower's simulation engine on Ray) or "server" (wait for remote clients).
        server_address: HOST:PORT the gRPC server binds (loopback and a free port if None).
        replicas: checkpoint store URLs or directories (default: OUT/checkpoints).
        resume: continue from the newest committed round in the replicas.
        client_faults: partition → fault, to test the server's defences ("nan", "garbage",
            "shape", "slow", "die:ROUND"); empty in real runs.
        centralised_epochs: epochs of the centralised baseline (0 = no baseline).
    """

    model: str = "digits-cnn"
    data: Path | None = None
    input_shape: str | None = None
    clients: int = 4
    rounds: int = 5
    fraction: float = 1.0
    partition: Partition = Partition("iid")
    compression: Compression = Compression("none")
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float | None = None
    local_steps: int | None = None
    seed: int = 0
    min_clients: int = 1
    round_timeout_s: float = 120.0
    join_timeout_s: float = 120.0
    mode: str = "processes"
    server_address: str | None = None
    out: Path = Path("federate-out")
    replicas: tuple[str, ...] = ()
    resume: bool = False
    client_faults: dict[int, str] = field(default_factory=dict)
    centralised_epochs: int = 0

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ConfigError(f"--clients {self.clients}: give at least 1 client")
        if self.rounds < 1:
            raise ConfigError(f"--rounds {self.rounds}: give at least 1 round")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction {self.fraction}: give a share in (0, 1], e.g. 0.5")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown --strategy {self.strategy!r}: use fedavg or fedprox")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not 1 <= self.min_clients <= self.clients:
            raise ConfigError(
                f"--min-clients {self.min_clients}: give 1..{self.clients} (the client count)"
            )
        if self.round_timeout_s <= 0 or self.join_timeout_s <= 0:
            raise ConfigError("timeouts must be positive seconds, e.g. --round-timeout 60")
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", default_learning_rate(self.model))
        if self.local_epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError("local epochs, batch size and learning rate must be positive")
        if self.local_steps is not None and self.local_steps < 1:
            raise ConfigError(f"--local-steps {self.local_steps}: give at least 1 step")
        for partition_id, fault in self.client_faults.items():
            if not is_client_fault(fault) or not 0 <= partition_id < self.clients:
                raise ConfigError(
                    f"bad client fault {partition_id}={fault!r}: use PARTITION=FAULT with a "
                    f"partition below {self.clients} and one of {', '.join(CLIENT_FAULTS)}"
                )

    def replica_urls(self) -> list[str]:
        """Where round checkpoints go: the given replicas, else OUT/checkpoints."""
        return list(self.replicas) or [str(Path(self.out) / "checkpoints")]


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' → (host, port), with a one-line error naming the form."""
    host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"bad server address {text!r}: use HOST:PORT, e.g. 127.0.0.1:9092")
    return host, int(port_text)
