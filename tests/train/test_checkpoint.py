"""Checkpoints: resume bit-identical, corrupt ones skipped, keep-last-k, disk full, bad config."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wattwise.api import train
from wattwise.errors import ConfigError
from wattwise.train.chaos import tiny_settings, write_config
from wattwise.train.checkpoint import newest_committed, snapshot
from wattwise.train.journal import read_events
from wattwise.train.replication import Replicator
from wattwise.train.store import DiskFullError, LocalStore, checkpoint_name


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Weights of an uninterrupted 40-step run."""
    root = tmp_path_factory.mktemp("reference")
    result = train(tiny_settings(root))
    assert result.final_step == 40 and result.resumed_from_step is None
    return Path(result.weights_path)


def test_resumed_run_ends_bit_identical_to_uninterrupted_run(tmp_path, reference):
    train(tiny_settings(tmp_path))
    for replica in ("replica-a", "replica-b"):  # as if the process died before committing 40
        (tmp_path / replica / checkpoint_name(40) / "manifest.json").unlink()
    resumed = train(tiny_settings(tmp_path))
    assert resumed.resumed_from_step == 30 and resumed.final_step == 40
    assert same_weights(Path(resumed.weights_path), reference)


def test_truncated_and_hash_mismatched_checkpoints_are_skipped_with_a_warning(tmp_path, reference):
    settings = tiny_settings(tmp_path, replicas=[str(tmp_path / "only")])
    train(settings)
    newest = tmp_path / "only" / checkpoint_name(40) / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    older = tmp_path / "only" / checkpoint_name(30) / "state.safetensors"
    data = bytearray(older.read_bytes())
    data[-1] ^= 0xFF  # same size, different hash
    older.write_bytes(bytes(data))
    resumed = train(settings)
    assert resumed.resumed_from_step == 20
    warnings = [
        e["message"]
        for e in read_events(tmp_path / "run" / "events.jsonl")
        if e["event"] == "warning"
    ]
    assert any("truncated" in w and checkpoint_name(40) in w for w in warnings)
    assert any("sha256" in w and checkpoint_name(30) in w for w in warnings)
    assert same_weights(Path(resumed.weights_path), reference)


def test_checkpoint_without_valid_manifest_never_counts(tmp_path):
    train(tiny_settings(tmp_path, replicas=[str(tmp_path / "only")]))
    store = LocalStore(tmp_path / "only")
    (tmp_path / "only" / checkpoint_name(40) / "manifest.json").unlink()  # crash before commit
    (tmp_path / "only" / checkpoint_name(30) / "manifest.json").write_text('{"format": "wattw')
    assert newest_committed([store], warn=lambda message: None).step == 20


def test_only_the_last_k_checkpoints_are_kept(tmp_path):
    train(tiny_settings(tmp_path, checkpoint={"every_steps": 5, "keep_last": 2}))
    for replica in ("replica-a", "replica-b"):
        names = sorted(p.name for p in (tmp_path / replica).glob("step-*"))
        assert names == [checkpoint_name(35), checkpoint_name(40)]


class _FullDiskStore(LocalStore):
    """A LocalStore whose disk fills up after `budget` bytes (used where tmpfs cannot mount)."""

    def __init__(self, root, budget: int) -> None:
        super().__init__(root)
        self.budget = budget

    def _write_bytes(self, handle, data: bytes) -> None:
        if len(data) > self.budget:
            handle.write(data[: self.budget])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(data)
        handle.write(data)


def _small_disk(tmp_path: Path, kind: str):
    """A 192 KiB disk: a real tmpfs (needs mount rights) or a store that runs out the same way."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if kind == "injected":
        return _FullDiskStore(mount, budget=192 * 1024), lambda: None
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected variant still runs")
    return LocalStore(mount), lambda: subprocess.run(["umount", "-l", str(mount)], check=False)


def _model_and_optimizer(width: int):
    torch.manual_seed(0)
    model = torch.nn.Linear(width, width)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, width)).sum().backward()
    optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("disk", ["tmpfs", "injected"])
def test_disk_full_raises_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, disk):
    store, cleanup = _small_disk(tmp_path, disk)
    try:
        replicator = Replicator([store], "sync", keep_last=1)
        small, small_optimizer = _model_and_optimizer(8)  # a few KB: fits
        replicator.save(snapshot(1, small, small_optimizer, None, 0, 1))
        large, large_optimizer = _model_and_optimizer(256)  # ~790 KB: does not fit in 192 KiB
        with pytest.raises(
            DiskFullError, match=r"disk full.*previous committed checkpoint is intact"
        ):
            replicator.save(snapshot(2, large, large_optimizer, None, 0, 2))
        replicator.close()
        survivor = newest_committed([store], warn=lambda message: None)
        assert survivor is not None and survivor.step == 1
        assert torch.equal(survivor.model["weight"], small.weight.detach())
    finally:
        cleanup()


def test_unknown_config_field_prints_one_line_and_exits_2(tmp_path):
    config = write_config(tmp_path, chekpoint={"every_steps": 5})
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from wattwise.cli import main; main()",
            "train",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown field 'chekpoint'" in lines[0]


def test_fp16_on_cpu_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="use bf16 on CPU"):
        train(tiny_settings(tmp_path, precision="fp16"))


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path):
    train(tiny_settings(tmp_path, steps=10, replicas=[str(tmp_path / "only")]))
    directory = tmp_path / "only" / checkpoint_name(10)
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["manifest.json", "model.safetensors", "state.json", "state.safetensors"]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["step"] == 10 and set(manifest["files"]) == set(names) - {"manifest.json"}
    state = json.loads((directory / "state.json").read_text())
    assert {"optimizer", "scheduler", "rng", "data", "step"} <= set(state)
    assert set(state["rng"]) == {"numpy", "python"} and state["data"]["position"] == 10
