"""`train.yaml`: what `wattwise train` trains, where checkpoints go, and who is primary.

Unknown fields are errors (one line, exit 2), never silently ignored. Relative paths are
resolved against the config file's directory, so a config and its run directory travel together.

Example:
    model: digits-cnn
    from_scratch: true
    steps: 400
    batch_size: 64
    precision: bf16            # fp32 | bf16 (CPU or CUDA) | fp16 (CUDA, GradScaler)
    checkpoint: {every_steps: 100, keep_last: 3}
    replicas: [runs/a/ckpt, /mnt/backup/ckpt, s3://bucket/ckpt]
    replication: sync          # or async
    lease: {backend: file, ttl_s: 2}
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wattwise.config_files import read_yaml
from wattwise.errors import ConfigError
from wattwise.fit.loop import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointSettings(_Strict):
    """every_steps: checkpoint interval (the final step is always saved); keep_last: per replica."""

    every_steps: int = Field(100, ge=1)
    keep_last: int = Field(3, ge=1)


class LeaseSettings(_Strict):
    """Primary/standby lease: file (one machine) or etcd (several), TTL and standby polling."""

    backend: Literal["file", "etcd"] = "file"
    path: str | None = None  # file lease directory; default <run_dir>/lease
    endpoints: list[str] = ["http://127.0.0.1:2379"]
    key: str = "/wattwise/train/primary"
    ttl_s: float = Field(2.0, gt=0)
    poll_s: float = Field(0.1, gt=0)


class DigitsSize(_Strict):
    """Size of a from-scratch digits-cnn (smaller is faster for tests and chaos benches)."""

    channels: tuple[int, int] = (32, 64)
    hidden: int = 256


class TrainSettings(_Strict):
    """Everything `wattwise train` reads from its config file."""

    model: str = "digits-cnn"
    from_scratch: bool = False
    digits_cnn: DigitsSize = DigitsSize()
    data: str | None = None
    metric: str | None = None
    sample: float | int | None = None
    steps: int = Field(200, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accumulation: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    energy: bool = True
    run_dir: str = "runs/train"
    checkpoint: CheckpointSettings = CheckpointSettings()
    replicas: list[str] | None = None  # default [<run_dir>/checkpoints]
    replication: Literal["sync", "async"] = "sync"
    async_queue_size: int = Field(2, ge=1)
    on_replica_failure: Literal["fail", "degrade"] = "fail"
    lease: LeaseSettings = LeaseSettings()

    def replica_urls(self) -> list[str]:
        """The configured replicas, or the run directory's `checkpoints` folder."""
        return list(self.replicas) if self.replicas else [str(Path(self.run_dir) / "checkpoints")]

    def lease_dir(self) -> Path:
        """Directory of the file lease."""
        return Path(self.lease.path) if self.lease.path else Path(self.run_dir) / "lease"


def _resolve(path: str, base: Path) -> str:
    if "://" in path or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown field {where!r}; remove it or fix its spelling"
    return f"{source}: {where}: {first['msg']}"


def parse_settings(raw: dict, source: str = "config", base: Path | None = None) -> TrainSettings:
    """Validate a dict into TrainSettings; relative paths resolve against `base`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        settings = TrainSettings.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_one_line(error, source)) from None
    if settings.precision == "fp16" and not settings.device.startswith("cuda"):
        raise ConfigError(f"{source}: precision fp16 needs CUDA; use bf16 on CPU")
    if base is None:
        return settings
    lease = settings.lease
    if lease.path:
        lease = lease.model_copy(update={"path": _resolve(lease.path, base)})
    update = {
        "run_dir": _resolve(settings.run_dir, base),
        "replicas": [_resolve(url, base) for url in settings.replicas]
        if settings.replicas
        else None,
        "lease": lease,
    }
    if settings.data:
        update["data"] = _resolve(settings.data, base)
    return settings.model_copy(update=update)


def load_settings(path: str | Path) -> TrainSettings:
    """Read and validate a train.yaml."""
    path = Path(path)
    raw = read_yaml(path, "config", "pass --config PATH") or {}
    return parse_settings(raw, str(path), path.parent.resolve())


def train_config(settings: TrainSettings) -> TrainConfig:
    """The trainer's config from the run settings (each TrainConfig field has its namesake there)."""
    return TrainConfig(**settings.model_dump(include={f.name for f in fields(TrainConfig)}))
