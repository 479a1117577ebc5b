"""`wattwise federate`, `wattwise federate-server`, `wattwise federate-client`: training on Flower
across clients that keep their data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from wattwise.cli import app
from wattwise.cli.common import INPUT_SHAPE_OPTION, JSON_OPTION, OptionGroup, print_json
from wattwise.durations import parse_duration
from wattwise.errors import ConfigError
from wattwise.progress import result_console

CLIENTS = typer.Option(4, "--clients", help="Number of clients the train split is dealt to.")
ROUNDS = typer.Option(5, "--rounds", help="Federated rounds (in total, across resumes).")
FRACTION = typer.Option(1.0, "--fraction", help="Share of connected clients asked each round.")
PARTITION = typer.Option("iid", "--partition", help="iid or dirichlet:ALPHA (non-IID).")
COMPRESSION = typer.Option(
    "none", "--update-compression", help="none, int8 or topk:F (top-k with error feedback)."
)
STRATEGY = typer.Option("fedavg", "--strategy", help="fedavg or fedprox (Flower's).")
MU = typer.Option(0.01, "--proximal-mu", help="FedProx μ.")
EPOCHS = typer.Option(1, "--local-epochs", help="Local epochs per round on each client.")
BATCH = typer.Option(32, "--batch-size", help="Local batch size.")
LR = typer.Option(None, "--lr", help="Local learning rate (default 0.05 SGD; minilm 1e-4 AdamW).")
STEPS = typer.Option(
    None, "--local-steps", help="Cap each client's optimizer steps per round (default: none)."
)
MIN_CLIENTS = typer.Option(
    None, "--min-clients", help="Fewest accepted updates per round (default: half the clients)."
)
ROUND_TIMEOUT = typer.Option("120s", "--round-timeout", help="Stragglers past this are dropped.")
JOIN_TIMEOUT = typer.Option("120s", "--join-timeout", help="Wait this long for clients to join.")
OUT = typer.Option(Path("federate-out"), "--out", help="Report, client files, checkpoints.")
REPLICA = typer.Option(None, "--replica", help="Checkpoint replica dir/URL (repeatable).")
RESUME = typer.Option(False, "--resume", help="Continue after the newest committed round.")
DATA = typer.Option(None, "--data", help="Data file (.npz/.csv/.jsonl) for a module:factory model.")
SEED = typer.Option(0, "--seed", help="Seed for the split, the initial model and local shuffles.")
CENTRAL = typer.Option(
    0, "--centralised-epochs", help="Also train centrally for this many epochs (the baseline)."
)
FAULT = typer.Option(
    None, "--client-fault", help="Testing aid: PARTITION=nan|garbage|shape|slow|die:ROUND."
)
# The flags of the rounds and of the clients' local training, handed to a command as one dict.
ROUND_FLAGS = OptionGroup(
    flags=(
        ("clients", int, CLIENTS),
        ("rounds", int, ROUNDS),
        ("fraction", float, FRACTION),
        ("partition", str, PARTITION),
        ("update_compression", str, COMPRESSION),
        ("strategy", str, STRATEGY),
        ("proximal_mu", float, MU),
        ("local_epochs", int, EPOCHS),
        ("batch_size", int, BATCH),
        ("lr", float, LR),
        ("local_steps", int, STEPS),
        ("min_clients", int, MIN_CLIENTS),
        ("round_timeout", str, ROUND_TIMEOUT),
        ("join_timeout", str, JOIN_TIMEOUT),
    )
)
# Where the run keeps its files, the data it trains on and its seed, as one dict.
RUN_FLAGS = OptionGroup(
    flags=(
        ("out", Path, OUT),
        ("replica", list[str], REPLICA),
        ("resume", bool, RESUME),
        ("data", Path, DATA),
        ("input_shape", str, INPUT_SHAPE_OPTION),
        ("seed", int, SEED),
    )
)


def _faults(items: list[str] | None) -> dict[int, str]:
    faults = {}
    for item in items or []:
        partition, _, fault = item.partition("=")
        if not partition.strip().isdigit() or not fault:
            raise ConfigError(f"bad --client-fault {item!r}: use PARTITION=FAULT, e.g. 2=nan")
        faults[int(partition)] = fault.strip()
    return faults


def _settings(mode: str, **values):
    from wattwise.federate.settings import FederateSettings, parse_compression, parse_partition

    clients = values["clients"]
    return FederateSettings(
        model=values["model"],
        data=values["data"],
        input_shape=values["input_shape"],
        clients=clients,
        rounds=values["rounds"],
        fraction=values["fraction"],
        partition=parse_partition(values["partition"]),
        compression=parse_compression(values["update_compression"]),
        strategy=values["strategy"],
        proximal_mu=values["proximal_mu"],
        local_epochs=values["local_epochs"],
        batch_size=values["batch_size"],
        learning_rate=values["lr"],
        local_steps=values["local_steps"],
        seed=values["seed"],
        min_clients=values["min_clients"] or max(1, clients // 2),
        round_timeout_s=parse_duration(values["round_timeout"]),
        join_timeout_s=parse_duration(values["join_timeout"]),
        mode=mode,
        server_address=values["server_address"],
        out=values["out"],
        replicas=tuple(values["replica"] or ()),
        resume=values["resume"],
        client_faults=_faults(values.get("client_fault")),
        centralised_epochs=values["centralised_epochs"],
    )


def _run(settings, as_json: bool) -> None:
    """Run the federated training `settings` describe, then show its result."""
    from wattwise.api import federate as run

    _show(run(settings, show_progress=not as_json), as_json)


def _show(result, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    from wattwise.federate.report import headline

    table = Table(title=f"wattwise federate: {result.model} ({result.mode})")
    for column in (
        "round",
        f"{result.metric} %",
        "accepted",
        "rejected",
        "dropped",
        "up bytes",
        "down bytes",
        "energy J",
    ):
        table.add_column(column, justify="right")
    for r in result.rounds:
        up = r.wire_up_bytes if r.wire_up_bytes is not None else r.payload_up_bytes
        down = r.wire_down_bytes if r.wire_down_bytes is not None else r.payload_down_bytes
        table.add_row(
            str(r.round), f"{100 * r.accuracy:.2f}", str(r.accepted), str(r.rejected),
            str(r.dropped), str(up), str(down), f"{r.client_energy_j + r.server_energy_j:.3g}",
        )  # fmt: skip
    result_console.print(table, soft_wrap=False)
    result_console.print(headline(result))
    result_console.print(f"bytes: {result.wire_source}")
    result_console.print(f"energy: {result.energy_method}")
    result_console.print(f"report: {result.report_path}")


@app.command()
def federate(
    model: str = typer.Argument(..., help="digits-cnn, minilm or module:factory."),
    round_flags: dict = ROUND_FLAGS,
    simulation: bool = typer.Option(
        False, "--simulation", help="Run clients in Flower's simulation engine (Ray, loopback)."
    ),
    server_address: str = typer.Option(
        None, "--server-address", help="HOST:PORT: serve remote clients there instead of spawning."
    ),
    run_flags: dict = RUN_FLAGS,
    centralised_epochs: int = CENTRAL,
    client_fault: list[str] = FAULT,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train across clients that keep their data (local processes on gRPC, or --simulation)."""
    if simulation and server_address:
        raise ConfigError("--simulation runs clients here; drop --server-address or --simulation")
    mode = "simulation" if simulation else ("server" if server_address else "processes")
    settings = _settings(
        mode,
        model=model,
        server_address=server_address,
        centralised_epochs=centralised_epochs,
        client_fault=client_fault,
        **round_flags,
        **run_flags,
    )
    _run(settings, as_json)


@app.command("federate-server")
def federate_server(
    model: str = typer.Argument(..., help="digits-cnn, minilm or module:factory."),
    server_address: str = typer.Option(..., "--server-address", help="HOST:PORT to serve on."),
    round_flags: dict = ROUND_FLAGS.without("partition"),
    run_flags: dict = RUN_FLAGS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve one federated run on gRPC for `wattwise federate-client` processes (any machine)."""
    settings = _settings(
        "server",
        model=model,
        server_address=server_address,
        partition="iid",
        centralised_epochs=0,
        **round_flags,
        **run_flags,
    )
    _run(settings, as_json)


@app.command("federate-client")
def federate_client(
    server: str = typer.Option(..., "--server", help="The federate server's HOST:PORT."),
    data: Path = typer.Option(..., "--data", help="This client's own data (.npz inputs, labels)."),
    model: str = typer.Option(
        "digits-cnn", "--model", help="digits-cnn, minilm or module:factory."
    ),
    partition_id: int = typer.Option(0, "--partition-id", help="This client's number."),
    update_compression: str = COMPRESSION,
    state_dir: Path = typer.Option(
        Path("federate-client-state"), "--state-dir", help="Where the top-k residual is kept."
    ),
    fault: str = typer.Option(
        "none", "--fault", help="Testing aid: nan, garbage, shape, slow, die:ROUND."
    ),
    slow_s: float = typer.Option(0.0, "--slow-s", help="How long a 'slow' client stalls, s."),
    max_wait: float = typer.Option(120.0, "--max-wait", help="Seconds to retry a lost server."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Join a federate server and train on this machine's data until the run ends."""
    # The API twin is wattwise.api.federate_client; the client imports only what it runs, since
    # importing wattwise.api loads every area (seconds per client process on a busy machine).
    from wattwise.federate.client import join_server as run

    run(server, data, model, partition_id, update_compression, state_dir, fault, slow_s, max_wait)
    if as_json:
        print_json({"server": server, "partition": partition_id, "finished": True})
