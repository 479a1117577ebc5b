"""The baseline: the same model trained where all the clients' data is pooled, epoch by epoch."""

from __future__ import annotations

from typing import Any

from wattwise.federate.data import Workload, fresh_model
from wattwise.federate.results import CentralisedRun, FederateResult
from wattwise.federate.settings import FederateSettings
from wattwise.federate.training import LocalTraining
from wattwise.measure.energy import detect_energy_source


def train_centralised(settings: FederateSettings, workload: Workload) -> CentralisedRun:
    """Train on the whole train split with the clients' optimizer settings; score each epoch."""
    import torch

    model = fresh_model(workload.build, settings.seed)
    pooled = workload.pooled_train()
    energy = detect_energy_source("cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each client does: the energy figures compare like for like
    accuracies, energies, seconds = [], [], []
    try:
        for epoch in range(settings.centralised_epochs):
            token = energy.start()
            epoch_training = LocalTraining(
                epochs=1,
                batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                seed=settings.seed * 7919 + epoch,
            )
            pooled.train(model, epoch_training)
            reading = energy.stop(token)
            accuracies.append(workload.score(model))
            energies.append(reading.energy_j)
            seconds.append(reading.duration_s)
    finally:
        torch.set_num_threads(threads)
    return CentralisedRun(accuracies, energies, seconds, energy.name)


def to_same_accuracy(result: FederateResult, central: CentralisedRun) -> dict[str, Any]:
    """Energy and time each side spent until it first reached the lower of the two final
    accuracies (federated: clients + server, per round; centralised: per epoch)."""
    if not result.rounds or not central.accuracy_per_epoch:
        return {}
    target = min(result.final_accuracy, max(central.accuracy_per_epoch))
    federated = {"energy_j": 0.0, "seconds": 0.0, "rounds": None}
    for record in result.rounds:
        federated["energy_j"] += record.client_energy_j + record.server_energy_j
        federated["seconds"] += record.duration_s
        if record.accuracy >= target:
            federated["rounds"] = record.round
            break
    centralised = {"energy_j": 0.0, "seconds": 0.0, "epochs": None}
    for epoch, accuracy in enumerate(central.accuracy_per_epoch, start=1):
        centralised["energy_j"] += central.energy_j_per_epoch[epoch - 1]
        centralised["seconds"] += central.seconds_per_epoch[epoch - 1]
        if accuracy >= target:
            centralised["epochs"] = epoch
            break
    ratio = federated["energy_j"] / centralised["energy_j"] if centralised["energy_j"] else None
    return {
        "target_accuracy": target,
        "federated": federated,
        "centralised": centralised,
        "energy_ratio_federated_over_centralised": ratio,
    }
