"""`wattwise train` under `torchrun`: DDP (gloo on CPU, nccl on CUDA), sharded checkpoints.

Every rank trains the same `fit` loop on its own data stream (seed + rank) with gradients averaged
by DistributedDataParallel. Checkpoints are written with torch.distributed.checkpoint: each rank
writes its shard as safetensors (`HuggingFaceStorageWriter`, so no pickle) plus its own RNG state
and data position; after a barrier rank 0 fsyncs every file, hashes it, copies the checkpoint to
the other replicas, and writes the manifest last on each. Rank 0 holds the primary lease; its
epoch fences replicas exactly as in a single-process run.

Scope: replication is synchronous here (`replication: async` runs as sync and says so); the
first replica must be a directory every rank can reach (one machine, or a shared file system);
a standby is torchrun's own job (`--max-restarts`), so `--role standby` is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel

from wattwise.errors import ConfigError
from wattwise.fit.loop import StepLog, make_optimizer, make_scheduler
from wattwise.models.weights import save_weights
from wattwise.tasks.base import ResumableBatches
from wattwise.train.checkpoint import FORMAT, capture_rng, newest_committed, restore_rng
from wattwise.train.config import TrainSettings, train_config
from wattwise.train.journal import Journal
from wattwise.train.lease import FencedError, LeaseKeeper, LeaseUnavailableError, make_lease
from wattwise.train.replication import fence_replicas
from wattwise.train.results import TrainRunResult
from wattwise.train.store import MANIFEST, LocalStore, checkpoint_name, open_store, step_of

STATE_FILE = "state.json"


def _flatten(model, optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """DCP-ready flat tensors (model.<fqn>, optim.<fqn>.<key>) and the JSON remainder."""
    model_state, optim_state = get_state_dict(model, optimizer)
    tensors = {f"model.{name}": value for name, value in model_state.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for fqn, entry in optim_state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{fqn}.{key}"] = value
            else:
                scalars.setdefault(fqn, {})[key] = value
    return tensors, {"param_groups": optim_state["param_groups"], "scalars": scalars}


def _unflatten(tensors: dict[str, torch.Tensor], meta: dict[str, Any]):
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    state: dict[str, dict[str, Any]] = {fqn: dict(v) for fqn, v in meta["scalars"].items()}
    for name, value in tensors.items():
        if name.startswith("optim."):
            fqn, key = name[len("optim.") :].rsplit(".", 1)
            state.setdefault(fqn, {})[key] = value
    return model_state, {"state": state, "param_groups": meta["param_groups"]}


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardedCheckpointer:
    """Saves and restores DCP checkpoints for one rank; rank 0 commits."""

    def __init__(self, settings: TrainSettings, rank: int, epoch: int, keeper, journal) -> None:
        self.stores = [open_store(url) for url in settings.replica_urls()]
        if not isinstance(self.stores[0], LocalStore):
            raise ConfigError(
                "under torchrun the first replica must be a directory all ranks can write; "
                "list remote replicas after it"
            )
        self.settings, self.rank, self.epoch = settings, rank, epoch
        self.keeper, self.journal = keeper, journal

    def save(self, step: int, model, optimizer, scheduler, batches: ResumableBatches) -> float:
        """Write this rank's shard and state; rank 0 commits. Returns seconds stalled."""
        started = time.perf_counter()
        name = checkpoint_name(step)
        target = self.stores[0]
        if self.rank == 0:
            self.keeper.check()
            for store in self.stores:
                store.remove_file(name, MANIFEST)  # un-commit before rewriting the same step
        dist.barrier()
        tensors, optim_meta = _flatten(model, optimizer)
        directory = target.local_path(name)
        directory.mkdir(parents=True, exist_ok=True)
        dcp.save(
            tensors,
            storage_writer=dcp.HuggingFaceStorageWriter(str(directory), save_distributed=True),
        )
        rng_tensors, rng_meta = capture_rng()
        own = {"rng": rng_meta, "data": {"seed": batches.seed, "position": batches.position}}
        target.write_file(name, f"rank{self.rank}.safetensors", save_safetensors(rng_tensors))
        target.write_file(name, f"rank{self.rank}.json", json.dumps(own).encode())
        if self.rank == 0:
            shared = {"step": step, "optimizer": optim_meta, "scheduler": scheduler.state_dict()}
            target.write_file(name, STATE_FILE, json.dumps(shared, default=float).encode())
        dist.barrier()
        if self.rank == 0:
            self._commit(step, name)
        return time.perf_counter() - started

    def _commit(self, step: int, name: str) -> None:
        directory = self.stores[0].local_path(name)
        files = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.name != MANIFEST and not path.name.startswith("."):
                _fsync_file(path)  # DCP's writer does not fsync; durability is ours to ensure
                files[path.name] = path.read_bytes()
        entries = {
            n: {"size_bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for n, d in files.items()
        }
        manifest = {
            "format": FORMAT,
            "step": step,
            "epoch": self.epoch,
            "files": entries,
            "committed_unix": time.time(),
            "sharded": "torch.distributed.checkpoint",
        }
        encoded = json.dumps(manifest, indent=1, sort_keys=True).encode()
        for store in self.stores:
            self.keeper.check()
            if store.read_fence() > self.epoch:
                raise FencedError(f"replica {store.url} was fenced by a newer primary; stopping")
            if store is not self.stores[0]:
                for filename, data in files.items():
                    store.write_file(name, filename, data)
            store.write_file(name, MANIFEST, encoded)  # last: this is the commit
            self._prune(store)

    def _prune(self, store) -> None:
        names = store.list_checkpoints()
        committed = [n for n in names if store.exists(n, MANIFEST)]
        keep = committed[: self.settings.checkpoint.keep_last]
        oldest = min((step_of(n) for n in keep), default=0)
        for name in names:
            if name not in keep and step_of(name) < oldest:
                store.remove_checkpoint(name)

    def restore(self, model, optimizer, scheduler) -> tuple[int, int]:
        """Load the newest verified checkpoint on every rank; returns (step, data position)."""
        found: list[Any] = [None]
        if self.rank == 0:
            newest = newest_committed(
                self.stores, warn=lambda m: self.journal.write("warning", message=m)
            )
            if newest is not None:
                store = next(s for s in self.stores if s.url == newest.replica)
                found = [
                    (newest.step, str(store.local_path(newest.name)))
                    if isinstance(store, LocalStore)
                    else None
                ]
        dist.broadcast_object_list(found, src=0)
        if found[0] is None:
            return 0, 0
        step, directory = found[0]
        directory = Path(directory)
        template, _ = _flatten(model, optimizer)  # shapes to load into
        template = {k: torch.empty_like(v) for k, v in template.items()}
        dcp.load(template, storage_reader=dcp.HuggingFaceStorageReader(str(directory)))
        shared = json.loads((directory / STATE_FILE).read_text())
        model_state, optim_state = _unflatten(template, shared["optimizer"])
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
        scheduler.load_state_dict(shared["scheduler"])
        own = json.loads((directory / f"rank{self.rank}.json").read_text())
        rng = load_safetensors((directory / f"rank{self.rank}.safetensors").read_bytes())
        restore_rng(rng, own["rng"])
        return step, own["data"]["position"]


def run_distributed(settings: TrainSettings, role: str, show_progress: bool):
    """One torchrun rank: init the process group, train with DDP, checkpoint with DCP."""
    from wattwise.train.build import build_setup

    if role != "primary":
        raise ConfigError(
            "under torchrun use --role primary; torchrun restarts failed workers itself"
        )
    cuda = settings.device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        settings = settings.model_copy(update={"device": f"cuda:{local_rank}"})
    torch.set_num_threads(settings.threads or 1)
    journal = Journal(Path(settings.run_dir) / "events.jsonl", f"primary-rank{rank}")
    keeper = None
    try:
        setup = build_setup(settings)
        epoch_box: list[Any] = [None]
        if rank == 0:
            lease = make_lease(settings)
            epoch_box = [lease.try_acquire()]
            if epoch_box[0] is not None:
                keeper = LeaseKeeper(lease, epoch_box[0])
        dist.broadcast_object_list(epoch_box, src=0)
        if epoch_box[0] is None:
            raise LeaseUnavailableError("the primary lease is held by another primary; wait for it")
        epoch = journal.epoch = epoch_box[0]
        checkpointer = ShardedCheckpointer(settings, rank, epoch, keeper, journal)
        if rank == 0:
            fence_replicas(checkpointer.stores, epoch, settings, journal)
        result = TrainRunResult(f"primary-rank{rank}", epoch, 0, replication="sync")
        if settings.replication == "async":
            result.notes.append("replication: async is not implemented under torchrun; ran sync")
        config = train_config(settings)
        model = DistributedDataParallel(setup.model)
        optimizer = make_optimizer(model, config)
        scheduler = make_scheduler(optimizer, config)
        start_step, position = checkpointer.restore(model, optimizer, scheduler)
        if start_step:
            result.resumed_from_step = start_step
            journal.write("resumed", step=start_step, world_size=world)
        batches = ResumableBatches(setup.make_batches, settings.seed + rank, position)
        stalls: list[float] = []

        def after_step(entry: StepLog) -> None:
            if keeper is not None:
                keeper.check()
            result.final_step, result.final_loss = entry.step, entry.loss
            journal.write("step", step=entry.step, loss=entry.loss, seconds=entry.seconds)
            if entry.step % settings.checkpoint.every_steps == 0 or entry.step == settings.steps:
                stalls.append(checkpointer.save(entry.step, model, optimizer, scheduler, batches))
                if rank == 0:
                    journal.write(
                        "checkpoint", step=entry.step, stall_s=stalls[-1], world_size=world
                    )

        started = time.perf_counter()
        setup.train_from(
            start_step,
            model,
            batches,
            config,
            show_progress=show_progress and rank == 0,
            optimizer=optimizer,
            scheduler=scheduler,
            on_step_log=after_step,
        )
        result.train_s = time.perf_counter() - started
        result.checkpoints = len(stalls)
        result.stall_s_mean = sum(stalls) / len(stalls) if stalls else 0.0
        result.final_step = max(result.final_step, start_step)
        if rank == 0:
            weights = Path(settings.run_dir) / "final.safetensors"
            save_weights(model.module, weights)
            result.weights_path = str(weights)
            journal.write("done", final_step=result.final_step, weights=str(weights))
        dist.barrier()
        return result
    finally:
        if keeper is not None:
            keeper.stop(release=True)
        dist.destroy_process_group()
