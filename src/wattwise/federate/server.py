"""The server's round loop: Flower's `Server`, plus a committed checkpoint after every round.

Each round's global model and the records so far go to the replicated checkpoint store
(wattwise.train: files first, manifest last, to every replica). A server started with
`resume` reads the newest committed round and carries on after it, so killing the server
loses at most the round in flight, never a committed one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import History, Server

from wattwise.errors import ConfigError, WattwiseError
from wattwise.federate.results import RoundRecord
from wattwise.federate.settings import FederateSettings
from wattwise.federate.strategy import RoundBook
from wattwise.federate.wire import ByteCountingRelay
from wattwise.measure.energy import detect_energy_source
from wattwise.train.checkpoint import Snapshot, newest_committed
from wattwise.train.replication import Replicator
from wattwise.train.store import open_store

log = logging.getLogger("wattwise.federate")


class TooFewClientsError(WattwiseError):
    """Fewer clients connected than the run's minimum."""


def run_key(settings: FederateSettings) -> dict:
    """What must match for a resume to continue the same run."""
    return {
        "model": settings.model,
        "clients": settings.clients,
        "partition": settings.partition.label(),
        "compression": settings.compression.label(),
        "strategy": settings.strategy,
        "seed": settings.seed,
    }


class RoundCheckpoints:
    """Round checkpoints in the project's replicated store (sync commits, last 3 kept)."""

    def __init__(self, settings: FederateSettings, names: list[str]) -> None:
        self.settings = settings
        self.names = names
        self.stores = [open_store(url) for url in settings.replica_urls()]
        self.replicator = Replicator(self.stores, mode="sync", keep_last=3)

    def newest(self) -> tuple[int, list[np.ndarray], list[RoundRecord]] | None:
        """The newest committed round: its number, global weights and records, or None."""
        restored = newest_committed(self.stores, warn=log.warning)
        if restored is None:
            return None
        extra = restored.meta.get("extra", {})
        if extra.get("run") != run_key(self.settings):
            raise ConfigError(
                f"the checkpoints in {', '.join(self.settings.replica_urls())} belong to another "
                f"run ({extra.get('run')}); use a new --out or the same settings"
            )
        arrays = [restored.model[name].numpy() for name in self.names]
        records = [RoundRecord.from_dict(r) for r in extra.get("rounds", [])]
        return restored.step, arrays, records

    def newest_exists(self) -> bool:
        """True when any replica holds a committed round."""
        return newest_committed(self.stores, warn=log.warning) is not None

    def commit(self, round_number: int, arrays: list[np.ndarray], records: list[RoundRecord]):
        """Commit one round (blocks until every replica holds it)."""
        model = {
            name: torch.from_numpy(np.ascontiguousarray(a))
            for name, a in zip(self.names, arrays, strict=True)
        }
        extra = {"run": run_key(self.settings), "rounds": [dataclasses.asdict(r) for r in records]}
        meta = {"step": round_number, "extra": extra}
        self.replicator.save(Snapshot(round_number, model, {}, meta))

    def close(self) -> None:
        self.replicator.close()


class FederatedServer(Server):
    """Flower's server loop with per-round records, held-out scoring and committed checkpoints."""

    def __init__(
        self,
        *,
        client_manager,
        strategy,
        settings: FederateSettings,
        book: RoundBook,
        checkpoints: RoundCheckpoints,
        score: Callable[[list[np.ndarray]], float],
        relay: ByteCountingRelay | None = None,
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> None:
        super().__init__(client_manager=client_manager, strategy=strategy)
        self.settings = settings
        self.book = book
        self.checkpoints = checkpoints
        self.score = score
        self.relay = relay
        self.on_round = on_round or (lambda record: None)
        self.records: list[RoundRecord] = []
        self.round_started: Callable[[int], None] = lambda round_number: None
        self.resumed_from_round: int | None = None
        self.energy = detect_energy_source("cpu")

    def _start(self) -> int:
        """Initial weights (fresh or from the newest committed round); returns rounds done."""
        found = self.checkpoints.newest() if self.settings.resume else None
        if found is None:
            if self.checkpoints.newest_exists():
                raise ConfigError(
                    f"{', '.join(self.settings.replica_urls())} already holds round checkpoints; "
                    "pass --resume to continue that run or choose a new --out"
                )
            self.parameters = self.strategy.initialize_parameters(self._client_manager)
            return 0
        done, arrays, records = found
        self.parameters = ndarrays_to_parameters(arrays)
        self.records = records
        self.resumed_from_round = done
        log.warning("resuming after committed round %s", done)
        return done

    def fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        """Run rounds after the last committed one up to `num_rounds`, committing each."""
        history = History()
        done = self._start()
        started_all = time.perf_counter()
        self._client_manager.wait_for(self.settings.clients, int(self.settings.join_timeout_s))
        if self._client_manager.num_available() < self.settings.min_clients:
            raise TooFewClientsError(
                f"{self._client_manager.num_available()} clients connected after "
                f"{self.settings.join_timeout_s:.0f} s, fewer than --min-clients "
                f"{self.settings.min_clients}; start more clients or lower --min-clients"
            )
        last_wire = self.relay.count() if self.relay else None
        for round_number in range(done + 1, num_rounds + 1):
            self.book.reset(round_number)
            token = self.energy.start()
            round_started = time.perf_counter()
            self.round_started(round_number)
            res_fit = self.fit_round(server_round=round_number, timeout=timeout)
            if res_fit is None:
                raise TooFewClientsError(
                    f"round {round_number}: fewer than --min-clients {self.settings.min_clients} "
                    f"clients connected within {self.settings.join_timeout_s:.0f} s; the last "
                    "committed round is kept: restart clients and rerun with --resume"
                )
            if res_fit[0] is not None:
                self.parameters = res_fit[0]
            arrays = parameters_to_ndarrays(self.parameters)
            wire = self.relay.count() if self.relay else None
            record = RoundRecord(
                round=round_number,
                accuracy=self.score(arrays),
                selected=self.book.selected,
                accepted=sum(1 for c in self.book.clients if c.accepted),
                rejected=sum(1 for c in self.book.clients if not c.accepted),
                dropped=self.book.dropped,
                aggregated=self.book.aggregated,
                payload_down_bytes=self.book.payload_down_bytes,
                payload_up_bytes=sum(c.payload_up_bytes for c in self.book.clients),
                wire_down_bytes=wire.down_bytes - last_wire.down_bytes if wire else None,
                wire_up_bytes=wire.up_bytes - last_wire.up_bytes if wire else None,
                client_energy_j=sum(c.energy_j for c in self.book.clients),
                server_energy_j=0.0,
                energy_source=self.energy.name,
                duration_s=0.0,
                clients=list(self.book.clients),
                rejections=list(self.book.rejections),
            )
            last_wire = wire
            reading = self.energy.stop(token)
            record.server_energy_j = reading.energy_j
            record.duration_s = time.perf_counter() - round_started
            record.committed = True  # stored as committed: the manifest write is what makes it so
            self.checkpoints.commit(round_number, arrays, [*self.records, record])
            self.records.append(record)
            history.add_metrics_centralized(round_number, {"accuracy": record.accuracy})
            self.on_round(record)
        return history, time.perf_counter() - started_all
