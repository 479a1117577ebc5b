"""Training checkpoints: what is saved, how it is encoded, how a commit is recognised.

A checkpoint holds the model, optimizer, LR scheduler (and GradScaler), the RNG states of torch,
numpy and python, the data-loader position and the step. Tensors go to safetensors, everything
else to JSON: no pickle anywhere. Its files are written first; `manifest.json` (file sizes,
sha256, step, writer's lease epoch) is written last and is what makes it count. Loading verifies
every size and hash; a checkpoint that fails is skipped with a warning and the previous committed
one is used.

Saving is split in two so the training loop stalls only for a copy: `snapshot` clones the state
to CPU memory (the stall), `encode` turns a snapshot into file bytes (safe in a background
thread, CheckFreq's snapshot-then-persist idea, Mohan et al., FAST '21).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from wattwise.progress import console
from wattwise.train.store import MANIFEST, CheckpointError, CheckpointStore, step_of

FORMAT = "wattwise-checkpoint/1"
MODEL_FILE = "model.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_JSON_FILE = "state.json"


@dataclass
class Snapshot:
    """Training state copied to CPU memory at one step.

    Attributes:
        step: optimizer steps completed.
        model: parameter/buffer name → CPU tensor.
        tensors: optimizer and RNG tensors, flattened to names.
        meta: everything else, JSON-ready (scheduler, optimizer scalars, RNG, data position).
        taken_unix: wall-clock time of the snapshot, seconds since the epoch.
    """

    step: int
    model: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    taken_unix: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Restored:
    """A verified checkpoint read back from a replica."""

    step: int
    replica: str
    name: str
    model: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    manifest: dict[str, Any]


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True).contiguous()


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state_dict → (tensors named optimizer.<param>.<key>, JSON for the rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entry in state["state"].items():
        scalars[str(param_id)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{key}"] = _cpu_copy(value)
            else:
                scalars[str(param_id)][key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {
        int(param_id): dict(values) for param_id, values in meta["scalars"].items()
    }
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """RNG states of torch (CPU, CUDA), numpy and python as tensors + JSON."""
    tensors = {"rng.torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state.clone()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": {
            "kind": kind,
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached": cached,
        },
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Put back the RNG states saved by `capture_rng`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    numpy_meta = meta["numpy"]
    keys = tensors["rng.numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (
            numpy_meta["kind"],
            keys,
            numpy_meta["pos"],
            numpy_meta["has_gauss"],
            numpy_meta["cached"],
        )
    )
    python = meta["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))


def snapshot(
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    data_seed: int,
    data_position: int,
    scaler=None,
    extra: dict[str, Any] | None = None,
) -> Snapshot:
    """Copy the whole training state to CPU memory: the only part the training loop waits for."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    model_tensors = {k: _cpu_copy(v) for k, v in inner.state_dict().items()}
    optimizer_tensors, optimizer_meta = _flatten_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = capture_rng()
    meta = {
        "step": step,
        "optimizer": optimizer_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_meta,
        "data": {"seed": data_seed, "position": data_position},
        "extra": extra or {},
    }
    return Snapshot(step, model_tensors, {**optimizer_tensors, **rng_tensors}, meta)


def encode(snap: Snapshot) -> dict[str, bytes]:
    """File name → bytes for a snapshot (safetensors for tensors, JSON for the rest)."""
    return {
        MODEL_FILE: save_safetensors(snap.model),
        STATE_TENSORS_FILE: save_safetensors(snap.tensors),
        STATE_JSON_FILE: json.dumps(snap.meta, sort_keys=True).encode(),
    }


def make_manifest(step: int, files: dict[str, bytes], epoch: int) -> bytes:
    """The manifest that commits a checkpoint: sizes and sha256 of every file, step, epoch."""
    entries = {
        name: {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in sorted(files.items())
    }
    manifest = {
        "format": FORMAT,
        "step": step,
        "epoch": epoch,
        "files": entries,
        "committed_unix": time.time(),
    }
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def parse_manifest(data: bytes, name: str) -> dict[str, Any]:
    """A manifest's JSON if it is well formed and names this checkpoint's step; else raise."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"manifest of {name} is not valid JSON ({error})") from error
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or manifest.get("step") != step_of(name)
        or not isinstance(manifest.get("files"), dict)
    ):
        raise CheckpointError(f"manifest of {name} is incomplete or names another step")
    return manifest


def read_verified(store: CheckpointStore, name: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read a checkpoint's manifest and files; raise CheckpointError on any size/hash mismatch."""
    manifest = parse_manifest(store.read_file(name, MANIFEST), name)
    files: dict[str, bytes] = {}
    for filename, entry in manifest["files"].items():
        data = store.read_file(name, filename)
        if len(data) != entry["size_bytes"]:
            raise CheckpointError(
                f"{name}/{filename} is truncated: {len(data)} of {entry['size_bytes']} bytes"
            )
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(f"{name}/{filename} does not match its sha256")
        files[filename] = data
    return manifest, files


def decode(store: CheckpointStore, name: str, manifest: dict, files: dict[str, bytes]) -> Restored:
    """Verified file bytes → tensors and metadata."""
    meta = json.loads(files[STATE_JSON_FILE])
    return Restored(
        manifest["step"],
        store.url,
        name,
        load_safetensors(files[MODEL_FILE]),
        load_safetensors(files[STATE_TENSORS_FILE]),
        meta,
        manifest,
    )


def newest_on(store: CheckpointStore, warn=None) -> Restored | None:
    """The newest checkpoint on one replica that verifies; skipped ones are warned about."""
    warn = warn or (lambda message: console.print(f"warning: {message}", style="yellow"))
    for name in store.list_checkpoints():
        if not store.exists(name, MANIFEST):
            continue  # never committed (a crash mid-write): not counted, nothing to warn about
        try:
            manifest, files = read_verified(store, name)
        except CheckpointError as error:
            warn(f"checkpoint {name} on replica {store.url} skipped: {error}; using an older one")
            continue
        if MODEL_FILE in files:
            return decode(store, name, manifest, files)
        return Restored(manifest["step"], store.url, name, {}, {}, {}, manifest)
    return None


def newest_committed(stores: list[CheckpointStore], warn=None) -> Restored | None:
    """The newest verified checkpoint across replicas (any replica that has it)."""
    best: Restored | None = None
    for store in stores:
        try:
            found = newest_on(store, warn)
        except CheckpointError as error:
            (warn or (lambda m: console.print(f"warning: {m}", style="yellow")))(
                f"replica {store.url} skipped while looking for checkpoints: {error}"
            )
            continue
        if found is not None and (best is None or found.step > best.step):
            best = found
    return best


def restore_training(
    restored: Restored,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler=None,
) -> None:
    """Load model, optimizer, scheduler, scaler and RNG states from a verified checkpoint."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    inner.load_state_dict(restored.model, strict=True)
    meta = restored.meta
    optimizer.load_state_dict(_unflatten_optimizer(restored.tensors, meta["optimizer"]))
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta.get("scaler") is not None:
        scaler.load_state_dict(meta["scaler"])
    restore_rng(restored.tensors, meta["rng"])
