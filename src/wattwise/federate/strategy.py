"""Flower's FedAvg / FedProx, guarded: updates are decoded, checked, and only then averaged.

The guard sits in `aggregate_fit`: each coded update is decoded against the global model's
shapes; one that is malformed, non-finite or claims no samples is rejected and logged, never
averaged. Accepted updates are turned back into full weights and handed to Flower's own
weighted averaging. Fewer accepted updates than `min_clients` skip the round.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy import FedAvg, FedProx

from wattwise.federate.codec import MalformedUpdateError, decode_update
from wattwise.federate.results import ClientRound
from wattwise.federate.settings import FederateSettings

log = logging.getLogger("wattwise.federate")


class RoundBook:
    """What the strategy saw in the current round, read by the server when the round ends."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, round_number: int) -> None:
        self.round = round_number
        self.selected = 0
        self.dropped = 0
        self.aggregated = False
        self.payload_down_bytes = 0
        self.clients: list[ClientRound] = []
        self.rejections: list[str] = []


def _client_round(res: FitRes, accepted: bool, reason: str) -> ClientRound:
    metrics = res.metrics or {}

    def number(key: str) -> float:
        value = metrics.get(key, 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    return ClientRound(
        partition=int(number("partition")) if "partition" in metrics else -1,
        accepted=accepted,
        reason=reason,
        num_examples=int(res.num_examples),
        payload_up_bytes=sum(len(t) for t in res.parameters.tensors),
        train_s=number("train_s"),
        energy_j=number("energy_j"),
        energy_source=str(metrics.get("energy_source", "unknown")),
        energy_uncertainty_pct=number("energy_uncertainty_pct"),
        train_loss=number("train_loss"),
    )


class _Guard:
    """Mixed in front of a Flower strategy (see the module docstring)."""

    def __init__(
        self, *, settings: FederateSettings, shapes: list[tuple[int, ...]], book: RoundBook, **kw
    ) -> None:
        super().__init__(**kw)
        self.settings = settings
        self.shapes = shapes
        self.book = book
        self._global: list[np.ndarray] = []

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager):
        self._global = parameters_to_ndarrays(parameters)
        instructions: list[tuple] = super().configure_fit(server_round, parameters, client_manager)
        self.book.selected = len(instructions)
        self.book.payload_down_bytes = sum(
            sum(len(t) for t in ins.parameters.tensors) for _, ins in instructions
        )
        return instructions

    def aggregate_fit(self, server_round: int, results, failures):
        accepted = []
        for proxy, res in results:
            try:
                if res.num_examples <= 0:
                    raise MalformedUpdateError(f"claims {res.num_examples} training samples")
                update = decode_update(
                    list(res.parameters.tensors),
                    res.parameters.tensor_type,
                    self.shapes,
                    self.settings.compression,
                )
            except MalformedUpdateError as error:
                record = _client_round(res, accepted=False, reason=str(error))
                message = f"round {server_round}: rejected client {record.partition}: {error}"
                log.warning(message)
                self.book.rejections.append(message)
                self.book.clients.append(record)
                continue
            weights = [g + u for g, u in zip(self._global, update, strict=True)]
            rebuilt = FitRes(res.status, ndarrays_to_parameters(weights), res.num_examples, {})
            accepted.append((proxy, rebuilt))
            self.book.clients.append(_client_round(res, accepted=True, reason=""))
        self.book.dropped = len(failures)
        if len(accepted) < self.settings.min_clients:
            message = (
                f"round {server_round}: {len(accepted)} accepted updates, fewer than "
                f"min_clients {self.settings.min_clients}: round skipped, model unchanged"
            )
            log.warning(message)
            self.book.rejections.append(message)
            return None, {}
        self.book.aggregated = True
        return super().aggregate_fit(server_round, accepted, failures)


class GuardedFedAvg(_Guard, FedAvg):
    """Flower's FedAvg behind the update guard."""


class GuardedFedProx(_Guard, FedProx):
    """Flower's FedProx (clients add μ/2·‖w − w_global‖²) behind the update guard."""


def make_strategy(
    settings: FederateSettings,
    initial: list[np.ndarray],
    book: RoundBook,
) -> FedAvg:
    """The run's Flower strategy: fedavg or fedprox, guarded, sending the local-training config."""

    def fit_config(server_round: int) -> dict:
        return {
            "round": server_round,
            "seed": settings.seed,
            "local_epochs": settings.local_epochs,
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "local_steps": settings.local_steps or 0,  # 0: no cap
        }

    common = {
        "settings": settings,
        "shapes": [tuple(a.shape) for a in initial],
        "book": book,
        "fraction_fit": settings.fraction,
        "fraction_evaluate": 0.0,  # the server scores the global model on its held-out split
        "min_fit_clients": settings.min_clients,
        "min_evaluate_clients": 0,
        "min_available_clients": settings.min_clients,
        "accept_failures": True,
        "on_fit_config_fn": fit_config,
        "initial_parameters": ndarrays_to_parameters(initial),
    }
    if settings.strategy == "fedprox":
        return GuardedFedProx(proximal_mu=settings.proximal_mu, **common)
    return GuardedFedAvg(**common)


class BoundedClientManager(SimpleClientManager):
    """Flower's client manager, waiting at most `join_timeout_s` for enough clients (not a day)."""

    def __init__(self, join_timeout_s: float) -> None:
        super().__init__()
        self.join_timeout_s = join_timeout_s

    def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
        return super().wait_for(num_clients, int(min(timeout, self.join_timeout_s)))


__all__ = ["BoundedClientManager", "FitIns", "RoundBook", "make_strategy"]
