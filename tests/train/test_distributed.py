"""torchrun with 2 CPU processes (gloo, loopback): sharded checkpoints save and resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wattwise.train.chaos import write_config
from wattwise.train.journal import read_events
from wattwise.train.store import checkpoint_name


def torchrun(config: Path) -> None:
    wattwise = Path(sys.executable).parent / "wattwise"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--no-python", str(wattwise), "train", "--config", str(config), "--json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_save_sharded_checkpoints_and_resume_bit_identical(tmp_path):
    config = write_config(tmp_path, steps=60, checkpoint={"every_steps": 20, "keep_last": 5})
    torchrun(config)
    final = tmp_path / "run" / "final.safetensors"
    uninterrupted = {k: v.clone() for k, v in load_file(str(final)).items()}
    newest = tmp_path / "replica-a" / checkpoint_name(60)
    manifest = json.loads((newest / "manifest.json").read_text())
    assert manifest["sharded"] == "torch.distributed.checkpoint"
    assert {"rank0.json", "rank1.json"} <= set(manifest["files"])
    assert any(name.startswith("shard-") for name in manifest["files"])
    for step in (40, 60):  # as if both ranks died before those commits
        for replica in ("replica-a", "replica-b"):
            (tmp_path / replica / checkpoint_name(step) / "manifest.json").unlink()
    torchrun(config)
    resumed = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e["event"] == "resumed"]
    assert {e["step"] for e in resumed} == {20} and len(resumed) == 2  # both ranks
    again = load_file(str(final))
    assert all(torch.equal(again[k], uninterrupted[k]) for k in uninterrupted)
