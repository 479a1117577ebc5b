"""The client side: a Flower `Client` that trains on its own file and sends a coded update.

The client's samples never leave this process: it sends the coded weight update, the sample
count, and a few numbers about its own work (loss, seconds, energy with its source).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.client import Client
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    Parameters,
    Status,
    parameters_to_ndarrays,
)

from wattwise.errors import WattwiseError
from wattwise.federate.codec import UpdateEncoder, tensor_type
from wattwise.federate.data import build_model, fresh_model, open_local_data
from wattwise.federate.settings import Compression, kill_round
from wattwise.federate.training import LocalTraining, load_arrays, model_arrays
from wattwise.measure.energy import detect_energy_source
from wattwise.paths import atomic_write_bytes

RECONNECT_PAUSE_S = 1.0


class ServerUnreachableError(WattwiseError):
    """The federate server could not be reached (or was lost) for longer than the client waits."""


@dataclass(frozen=True)
class ClientSpec:
    """One client: its partition number, its own data file, and where it keeps its state.

    `fault` makes it misbehave on purpose ("nan", "garbage", "shape", "slow", "die:ROUND") to
    test the server; "none" in real use. `slow_s` is how long a "slow" client sleeps before
    answering. A "die:ROUND" client SIGKILLs its own process in that round, after it received
    the global weights and before it answers: a real mid-round dropout at a known moment.
    """

    partition: int
    data: Path
    model: str
    compression: Compression
    state_dir: Path
    fault: str = "none"
    slow_s: float = 0.0


class WattwiseClient(Client):
    """Trains the global model on this client's data and answers with a coded update."""

    def __init__(self, spec: ClientSpec) -> None:
        import torch

        # Many clients share a machine's cores in tests, benches and simulation: one thread
        # each, which also makes a client's arithmetic the same in every mode.
        torch.set_num_threads(1)
        self.spec = spec
        self.data = open_local_data(spec.model, spec.data)
        self.model = fresh_model(build_model(spec.model), seed=0)
        self.energy = detect_energy_source("cpu")
        self.last_fit_monotonic: float | None = None
        # One step at learning rate 0 before any round: the first backward/optimizer step of a
        # process pays one-time costs (lazy imports, kernel set-up, ~3 CPU-s here) that are not
        # training; kept out of round 1's energy so rounds compare with each other and with the
        # centralised baseline, which runs in a warm process. The weights do not change.
        warm_up = LocalTraining(epochs=1, batch_size=2, learning_rate=0.0, seed=0, max_steps=1)
        self.data.train(self.model, warm_up)

    def rounds_done_since(self, moment: float) -> bool:
        """True when this client answered a round after `moment` (time.monotonic())."""
        return self.last_fit_monotonic is not None and self.last_fit_monotonic > moment

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        from flwr.common import ndarrays_to_parameters

        return GetParametersRes(
            Status(Code.OK, "ok"), ndarrays_to_parameters(model_arrays(self.model))
        )

    def _residual_path(self) -> Path:
        return self.spec.state_dir / f"client-{self.spec.partition}-residual.npz"

    def _load_encoder(self) -> UpdateEncoder:
        path = self._residual_path()
        residual = None
        if self.spec.compression.kind == "topk" and path.is_file():
            with np.load(path, allow_pickle=False) as data:
                residual = [data[f"t{i}"] for i in range(len(data.files))]
        return UpdateEncoder(self.spec.compression, residual)

    def _save_encoder(self, encoder: UpdateEncoder) -> None:
        if encoder.residual is None:
            return
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **{f"t{i}": r for i, r in enumerate(encoder.residual)})
        atomic_write_bytes(self._residual_path(), buffer.getvalue())

    def fit(self, ins: FitIns) -> FitRes:
        """One round: load the global weights, train locally, code the update, report the cost."""
        config = ins.config
        global_arrays = parameters_to_ndarrays(ins.parameters)
        load_arrays(self.model, global_arrays)
        round_number = int(config.get("round", 0))
        if kill_round(self.spec.fault) == round_number:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no goodbye: a killed process
        seed = int(config.get("seed", 0)) * 1_000_003 + round_number * 1_009 + self.spec.partition
        token = self.energy.start()
        started = time.perf_counter()
        max_steps = int(config.get("local_steps", 0))
        training = LocalTraining(
            epochs=int(config.get("local_epochs", 1)),
            batch_size=int(config.get("batch_size", 32)),
            learning_rate=float(config.get("learning_rate", 0.05)),
            seed=seed,
            proximal_mu=float(config.get("proximal_mu", 0.0)),
            max_steps=max_steps or None,
        )
        loss = self.data.train(self.model, training)
        update = [
            local - start
            for local, start in zip(model_arrays(self.model), global_arrays, strict=True)
        ]
        encoder = self._load_encoder()
        tensors = self._faulty(update, encoder) if self.spec.fault != "none" else None
        if tensors is None:
            tensors = encoder.encode(update)
            self._save_encoder(encoder)
        train_s = time.perf_counter() - started
        reading = self.energy.stop(token)
        if self.spec.fault == "slow":
            time.sleep(self.spec.slow_s)
        self.last_fit_monotonic = time.monotonic()
        metrics = {
            "partition": self.spec.partition,
            "train_loss": loss,
            "train_s": train_s,
            "energy_j": reading.energy_j,
            "energy_source": reading.source,
            "energy_uncertainty_pct": reading.uncertainty_pct,
            "process_id": os.getpid(),
        }
        return FitRes(
            Status(Code.OK, "ok"),
            Parameters(tensors=tensors, tensor_type=tensor_type(self.spec.compression)),
            len(self.data),
            metrics,
        )

    def _faulty(self, update: list[np.ndarray], encoder: UpdateEncoder) -> list[bytes] | None:
        """A deliberately bad update for the fault tests; None for faults that code normally."""
        if self.spec.fault == "nan":
            poisoned = [np.full_like(update[0], np.nan), *update[1:]]
            return UpdateEncoder(self.spec.compression).encode(poisoned)
        if self.spec.fault == "garbage":
            rng = np.random.default_rng(self.spec.partition)
            return [rng.bytes(17) for _ in update]
        if self.spec.fault == "shape":
            return encoder.encode(update)[:-1]
        return None


def _one_line_background_errors() -> None:
    """Flower's deprecation notices and errors raised in gRPC's threads while a refused stream
    is torn down (seen on a loaded machine: a traceback after the client's one-line error) become
    one line each: the client process reports its own errors."""
    import logging
    import sys
    import threading

    logging.getLogger("flwr").setLevel(logging.ERROR)

    def one_line(kind: str, error: BaseException | None) -> None:
        print(f"warning: {kind}: {type(error).__name__}: {error}", file=sys.stderr)

    threading.excepthook = lambda args: one_line("in a background thread", args.exc_value)
    sys.unraisablehook = lambda unraisable: one_line("at clean-up", unraisable.exc_value)


def run_client(spec: ClientSpec, server_address: str, max_wait_s: float = 120.0) -> None:
    """Connect to a federate server over gRPC and train until it says the run is over.

    Flower's legacy gRPC stream cannot be re-opened once it failed (its retry re-reads the same
    dead stream), so a refused or lost connection is retried here with a fresh one, for up to
    `max_wait_s` seconds without a server: a server restarted with --resume finds its clients.
    """
    import grpc
    from flwr.client import start_client

    _one_line_background_errors()
    client = WattwiseClient(spec)
    lost_since = time.monotonic()
    while True:
        try:
            start_client(server_address=server_address, client=client.to_client(), insecure=True)
            return  # the server ended the run
        except grpc.RpcError as error:
            if getattr(error, "code", lambda: None)() != grpc.StatusCode.UNAVAILABLE:
                raise ServerUnreachableError(
                    f"federate server at {server_address} failed: {error}; check its log"
                ) from error
            if client.rounds_done_since(lost_since):
                lost_since = time.monotonic()  # it was connected and training: a new outage
            if time.monotonic() - lost_since > max_wait_s:
                raise ServerUnreachableError(
                    f"no federate server answered at {server_address} for {max_wait_s:.0f} s; "
                    "start `wattwise federate-server` there or fix --server"
                ) from error
            time.sleep(RECONNECT_PAUSE_S)


def join_server(
    server: str,
    data: Path | str,
    model: str = "digits-cnn",
    partition_id: int = 0,
    compression: str = "none",
    state_dir: Path | str = ".",
    fault: str = "none",
    slow_s: float = 0.0,
    max_wait_s: float = 120.0,
) -> None:
    """Check the client's arguments, then `run_client` (the CLI's and the API's one entry)."""
    from wattwise.errors import ConfigError
    from wattwise.federate.settings import (
        CLIENT_FAULTS,
        is_client_fault,
        parse_address,
        parse_compression,
    )

    parse_address(server)
    if not is_client_fault(fault):
        raise ConfigError(f"unknown --fault {fault!r}: use one of {', '.join(CLIENT_FAULTS)}")
    spec = ClientSpec(
        partition_id,
        Path(data),
        model,
        parse_compression(compression),
        Path(state_dir),
        fault,
        slow_s,
    )
    run_client(spec, server, max_wait_s)
