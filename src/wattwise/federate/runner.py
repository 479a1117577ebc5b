"""Run a federated job: clients as OS processes on gRPC, Flower's simulation engine, or a server
waiting for remote clients. One server implementation behind all three.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wattwise.federate.data import fresh_model, open_workload
from wattwise.federate.results import FederateResult, RoundRecord
from wattwise.federate.server import FederatedServer, RoundCheckpoints
from wattwise.federate.settings import FederateSettings, parse_address
from wattwise.federate.strategy import BoundedClientManager, RoundBook, make_strategy
from wattwise.federate.training import load_arrays, model_arrays
from wattwise.federate.wire import ByteCountingRelay, free_port
from wattwise.paths import ensure_writable_dir

CLI = "from wattwise.cli import main; main()"
WIRE_SOCKET = "socket: bytes through a loopback TCP relay in front of Flower's gRPC port"
WIRE_NONE = "none: simulation has no network; payload bytes are the serialized tensors"


@dataclass
class Hooks:
    """Callbacks for tests and the bench: a round starts / ends; clients are the processes."""

    round_started: Callable[[int, list[subprocess.Popen]], None] = lambda r, clients: None
    round_ended: Callable[[RoundRecord, list[subprocess.Popen]], None] = lambda r, c: None
    clients: list[subprocess.Popen] = field(default_factory=list)
    capture_upstream: bool = False
    relay: ByteCountingRelay | None = None


def quiet_flower(verbose: bool = False) -> None:
    """Flower logs every message at INFO; keep its warnings only unless asked."""
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.WARNING)


def straggler_delay_s(settings: FederateSettings) -> float:
    """How long a "slow" client stalls before it answers: (rounds + 1) round timeouts.

    Each round lasts at most one round timeout (plus scoring), so the straggler's late answer
    comes after the whole run: it is dropped at the timeout of its first round and its answer
    never lands in a later round's bytes, however fast or slow the machine is.
    """
    return (settings.rounds + 1) * settings.round_timeout_s


def client_command(
    settings: FederateSettings, partition: int, data: Path, address: str, state_dir: Path
) -> list[str]:
    """The `wattwise federate-client` command line of one client process."""
    command = [sys.executable, "-c", CLI, "federate-client", "--server", address]
    command += ["--data", str(data), "--model", settings.model, "--partition-id", str(partition)]
    command += ["--update-compression", settings.compression.label()]
    command += ["--state-dir", str(state_dir), "--max-wait", str(int(settings.join_timeout_s))]
    fault = settings.client_faults.get(partition, "none")
    if fault != "none":
        command += ["--fault", fault, "--slow-s", str(straggler_delay_s(settings))]
    return command


def _spawn_clients(settings, parts, address, out: Path) -> list[subprocess.Popen]:
    logs = ensure_writable_dir(out / "logs")
    processes = []
    for partition, data in enumerate(parts):
        log_file = (logs / f"client-{partition}.log").open("wb")
        processes.append(
            subprocess.Popen(
                client_command(settings, partition, data, address, out / "client-state"),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
        log_file.close()
    return processes


def stop_processes(processes: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """Ask each process we started to stop, then kill what is still running."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ClientFactory:
    """Flower `client_fn` for simulation: partition-id → a client reading only its own file."""

    def __init__(self, settings: FederateSettings, parts: list[Path], state_dir: Path) -> None:
        self.settings = settings
        self.parts = [str(p) for p in parts]
        self.state_dir = str(state_dir)

    def __call__(self, context):
        from wattwise.federate.client import ClientSpec, WattwiseClient

        partition = int(context.node_config["partition-id"])
        fault = self.settings.client_faults.get(partition, "none")
        spec = ClientSpec(
            partition,
            Path(self.parts[partition]),
            self.settings.model,
            self.settings.compression,
            Path(self.state_dir),
            fault,
            straggler_delay_s(self.settings),
        )
        return WattwiseClient(spec).to_client()


def run_federated(
    settings: FederateSettings,
    hooks: Hooks | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    verbose: bool = False,
) -> FederateResult:
    """Train across clients that keep their data; returns the per-round records and totals.

    The train split is dealt to `settings.clients` files under OUT/clients (each client reads
    only its own); the server scores every round on the test split no client sees and commits
    the round to the checkpoint replicas before the next one starts.
    """
    hooks = hooks or Hooks()
    quiet_flower(verbose)
    random.seed(settings.seed)  # Flower samples clients with the `random` module
    out = ensure_writable_dir(Path(settings.out))
    workload = open_workload(settings.model, settings.data, settings.input_shape)
    initial_model = fresh_model(workload.build, settings.seed)
    names = list(initial_model.state_dict())
    initial = model_arrays(initial_model)
    scorer_model = initial_model  # its weights are copied out: it can score every round

    def score(arrays: list[np.ndarray]) -> float:
        load_arrays(scorer_model, arrays)
        return workload.score(scorer_model)

    parts = []
    if settings.mode != "server":
        parts = workload.write_parts(
            settings.clients, settings.partition, settings.seed, out / "clients"
        )
    book = RoundBook()
    strategy = make_strategy(settings, initial, book)
    checkpoints = RoundCheckpoints(settings, names)
    client_manager = BoundedClientManager(settings.join_timeout_s)

    def round_ended(record: RoundRecord) -> None:
        hooks.round_ended(record, hooks.clients)
        if on_round:
            on_round(record)

    relay = None
    server_args = dict(
        client_manager=client_manager,
        strategy=strategy,
        settings=settings,
        book=book,
        checkpoints=checkpoints,
        score=score,
        on_round=round_ended,
    )
    try:
        if settings.mode == "simulation":
            server = FederatedServer(**server_args)
            server.round_started = lambda r: hooks.round_started(r, hooks.clients)
            _run_simulation(settings, server, parts, out)
        else:
            relay_host, relay_port = "127.0.0.1", 0
            if settings.server_address:
                relay_host, relay_port = parse_address(settings.server_address)
            grpc_port = free_port()
            relay = ByteCountingRelay(
                grpc_port, relay_host, relay_port, capture=hooks.capture_upstream
            )
            hooks.relay = relay
            server = FederatedServer(**server_args, relay=relay)
            server.round_started = lambda r: hooks.round_started(r, hooks.clients)
            _run_grpc(settings, server, client_manager, grpc_port, relay, parts, out, hooks)
    finally:
        if relay is not None:
            relay.close()
        checkpoints.close()
        stop_processes(hooks.clients)
    return _result(settings, server, relay is not None, workload.metric)


def _run_grpc(settings, server, client_manager, grpc_port, relay, parts, out, hooks) -> None:
    from flwr.server import ServerConfig
    from flwr.server.server import run_fl
    from flwr.server.superlink.fleet.grpc_bidi.grpc_server import start_grpc_server

    # Flower's own start_server() does these two calls (plus signal handlers we do not want
    # inside a library call); calling them directly lets us always stop the gRPC server.
    grpc_server = start_grpc_server(
        client_manager=client_manager, server_address=f"127.0.0.1:{grpc_port}"
    )
    try:
        if settings.mode == "processes":
            hooks.clients.extend(
                _spawn_clients(settings, parts, f"127.0.0.1:{relay.port}", Path(out))
            )
        run_fl(server, ServerConfig(settings.rounds, settings.round_timeout_s))
    finally:
        grpc_server.stop(grace=1)


def _run_simulation(settings, server, parts, out) -> None:
    from wattwise.serve.runtime import keep_ray_local

    keep_ray_local()
    from flwr.client import ClientApp
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    failure: list[BaseException] = []

    def server_fn(context):
        original_fit = server.fit

        def fit(num_rounds, timeout):
            try:
                return original_fit(num_rounds, timeout)
            except BaseException as error:
                failure.append(error)
                raise

        server.fit = fit
        config = ServerConfig(settings.rounds, settings.round_timeout_s)
        return ServerAppComponents(server=server, config=config)

    cpus = max(1, os.cpu_count() or 1)
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=ClientFactory(settings, parts, Path(out) / "client-state")),
        num_supernodes=settings.clients,
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {"num_cpus": cpus, "_node_ip_address": "127.0.0.1"},
        },
    )
    if failure:
        raise failure[0]


def _result(
    settings: FederateSettings, server: FederatedServer, wire: bool, metric: str
) -> FederateResult:
    records = server.records
    per_client: dict[str, float] = {}
    for record in records:
        for client in record.clients:
            key = str(client.partition)
            per_client[key] = per_client.get(key, 0.0) + client.energy_j
    sources = {c.energy_source for r in records for c in r.clients} | {server.energy.name}
    return FederateResult(
        model=settings.model,
        mode=settings.mode,
        clients=settings.clients,
        partition=settings.partition.label(),
        compression=settings.compression.label(),
        strategy=settings.strategy,
        rounds=records,
        final_accuracy=records[-1].accuracy if records else 0.0,
        metric=metric,
        resumed_from_round=server.resumed_from_round,
        wire_source=WIRE_SOCKET if wire else WIRE_NONE,
        energy_source="+".join(sorted(sources)),
        energy_method=server.energy.method,
        replicas=settings.replica_urls(),
        per_client_energy_j=per_client,
    )
