"""`wattwise train`: the one trainer (`fit`) plus checkpoints, replication and a primary lease.

A primary takes the lease, writes its epoch to every replica (fencing older primaries), resumes
from the newest verified checkpoint on any replica, trains, and checkpoints every N steps. A
standby builds the same model, then polls the lease; once the primary's lease expires it
promotes itself and does exactly what a primary does. Because the model, optimizer, scheduler,
RNG states and data position are all restored, a resumed run ends with the same weights, bit for
bit on CPU, as one that never stopped.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from wattwise.fit.loop import StepLog, make_optimizer, make_scheduler
from wattwise.models.weights import save_weights
from wattwise.progress import info
from wattwise.tasks.base import ResumableBatches
from wattwise.train.build import TrainingSetup, build_setup
from wattwise.train.checkpoint import newest_committed, restore_training, snapshot
from wattwise.train.config import TrainSettings, train_config
from wattwise.train.journal import Journal
from wattwise.train.lease import (
    FencedError,
    LeaseKeeper,
    LeaseUnavailableError,
    describe_holder,
    make_lease,
    wait_for_lease,
)
from wattwise.train.replication import Replicator, fence_replicas
from wattwise.train.results import TrainRunResult
from wattwise.train.store import CheckpointStore, open_store

ROLES = ("primary", "standby")


def run_training(
    settings: TrainSettings, role: str = "primary", show_progress: bool = True
) -> TrainRunResult:
    """Train as primary, or wait as standby and take over; see the module docstring.

    Example:
        result = run_training(load_settings("train.yaml"), role="primary")
    """
    if role not in ROLES:
        from wattwise.errors import ConfigError

        raise ConfigError(f"unknown role {role!r}: use primary or standby")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun
        from wattwise.train.distributed import run_distributed

        return run_distributed(settings, role, show_progress)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    run_dir = Path(settings.run_dir)
    journal = Journal(run_dir / "events.jsonl", role)
    try:
        return _run_with_lease(settings, role, journal, show_progress)
    finally:
        journal.close()


def _run_with_lease(
    settings: TrainSettings, role: str, journal: Journal, show_progress: bool
) -> TrainRunResult:
    journal.write("start", model=settings.model, steps=settings.steps)
    setup = build_setup(settings)  # before waiting: a standby is warm when it promotes
    stores = [open_store(url) for url in settings.replica_urls()]
    lease = make_lease(settings)
    result = TrainRunResult(role, 0, 0, replication=settings.replication)
    result.journal_path = str(journal.path)
    if role == "primary":
        epoch = lease.try_acquire()
        if epoch is None:
            raise LeaseUnavailableError(
                f"the primary lease is held by {describe_holder(lease)}; start this one with "
                "--role standby, or wait for the lease to expire"
            )
    else:
        epoch = wait_for_lease(lease, settings.lease.poll_s, journal)
        result.promoted = True
    acquired = time.perf_counter()
    journal.epoch = result.epoch = epoch
    journal.write("lease_acquired", promoted=result.promoted)
    keeper = LeaseKeeper(lease, epoch)
    try:
        fence_replicas(stores, epoch, settings, journal)
        _train(settings, setup, stores, keeper, journal, result, acquired, show_progress)
    except FencedError as error:
        journal.write("fenced", error=str(error))
        keeper.stop(release=False)  # the lease is someone else's now
        raise
    except BaseException as error:
        journal.write("failed", error=str(error))
        keeper.stop(release=True)
        raise
    keeper.stop(release=True)
    journal.write("done", final_step=result.final_step, weights=result.weights_path)
    return result


def _train(
    settings: TrainSettings,
    setup: TrainingSetup,
    stores: list[CheckpointStore],
    keeper: LeaseKeeper,
    journal: Journal,
    result: TrainRunResult,
    acquired: float,
    show_progress: bool,
) -> None:
    config = train_config(settings)
    model = setup.model
    if settings.gradient_checkpointing:
        result.activation_memory = _measure_memory(setup, settings)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    scaler = (
        torch.amp.GradScaler("cuda")
        if config.precision == "fp16" and settings.device.startswith("cuda")
        else None
    )
    restored = newest_committed(stores, warn=lambda m: _warn(journal, m))
    start_step, position = 0, 0
    if restored is not None:
        restore_training(restored, model, optimizer, scheduler, scaler)
        start_step, position = restored.step, restored.meta["data"]["position"]
        result.resumed_from_step, result.resumed_from_replica = start_step, restored.replica
        journal.write("resumed", step=start_step, replica=restored.replica, name=restored.name)
    batches = ResumableBatches(setup.make_batches, settings.seed, position)
    result.final_step = start_step
    replicator = Replicator(
        stores,
        settings.replication,
        settings.checkpoint.keep_last,
        settings.async_queue_size,
        settings.on_replica_failure,
        epoch=result.epoch,
        lease_check=keeper.check,
        log=lambda message: _log(journal, message),
    )
    energy = None
    if settings.energy:
        from wattwise.measure.energy import detect_energy_source

        energy = detect_energy_source(settings.device)
        result.energy_source, result.energy_uncertainty_pct = energy.name, energy.uncertainty_pct
    stalls: list[float] = []

    def after_step(entry: StepLog) -> None:
        keeper.check()  # a fenced primary stops here, before it could write anything
        replicator.raise_background_error()
        result.final_step, result.final_loss = entry.step, entry.loss
        result.energy_j += entry.energy_j or 0.0
        lag = replicator.lag()
        journal.write(
            "step",
            **asdict(entry),
            lag_steps=lag.steps,
            lag_s=round(lag.seconds, 4),
            durable_step=replicator.durable_step,
        )
        if entry.step == start_step + 1 and result.promoted:
            result.promotion_s = time.perf_counter() - acquired
            journal.write("first_resumed_step", step=entry.step, promotion_s=result.promotion_s)
        if entry.step % settings.checkpoint.every_steps == 0 or entry.step == settings.steps:
            started = time.perf_counter()
            snap = snapshot(
                entry.step, model, optimizer, scheduler, batches.seed, batches.position, scaler
            )
            snapshot_s = time.perf_counter() - started
            event = replicator.save(snap)
            stalls.append(snapshot_s + event.stall_s)
            journal.write(
                "checkpoint",
                step=entry.step,
                mode=settings.replication,
                acknowledged=True,
                committed=settings.replication == "sync" and not replicator.degraded,
                snapshot_s=snapshot_s,
                stall_s=snapshot_s + event.stall_s,
                replicas_committed=event.replicas_committed,
                lag_steps=event.lag_steps,
                lag_s=event.lag_s,
                bound_steps=(settings.async_queue_size + 1) * settings.checkpoint.every_steps,
            )

    started = time.perf_counter()
    try:
        setup.train_from(
            start_step,
            model,
            batches,
            config,
            show_progress=show_progress,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            energy_source=energy,
            on_step_log=after_step,
        )
        replicator.close()
    except BaseException:
        replicator.stop_now()
        raise
    result.train_s = time.perf_counter() - started
    result.checkpoints = len(stalls)
    result.stall_s_mean = sum(stalls) / len(stalls) if stalls else 0.0
    result.max_lag_steps, result.max_lag_s = replicator.max_lag.steps, replicator.max_lag.seconds
    result.degraded = sorted(replicator.degraded)
    weights = Path(settings.run_dir) / "final.safetensors"
    save_weights(model, weights)
    result.weights_path = str(weights)


def _measure_memory(setup: TrainingSetup, settings: TrainSettings) -> dict[str, Any]:
    from wattwise.fit.memory import measure_activation_memory

    batch = next(setup.make_batches(settings.seed))  # a separate iterator: no data consumed
    measured = measure_activation_memory(setup.model, batch, setup.loss_fn, settings.precision)
    info(measured.describe())
    return {
        "bytes_without": measured.bytes_without,
        "bytes_with": measured.bytes_with,
        "saving_pct": measured.saving_pct,
        "method": measured.method,
    }


def _warn(journal: Journal, message: str) -> None:
    journal.write("warning", message=message)
    info(f"warning: {message}", style="yellow")


def _log(journal: Journal, message: str) -> None:
    journal.write("replication", message=message)
    if message.startswith(("warning", "error")):
        info(message)
