"""Trainer features: bf16 on CPU, gradient accumulation, gradient checkpointing, per-step energy."""

from __future__ import annotations

import json

import pytest
import torch

from wattwise.api import train
from wattwise.fit.loop import TrainConfig, fit
from wattwise.fit.memory import measure_activation_memory
from wattwise.models.digits import DigitsCNN
from wattwise.tasks.arrays import digits_task
from wattwise.train.chaos import tiny_settings
from wattwise.train.journal import read_events
from wattwise.train.store import checkpoint_name


def test_bf16_autocast_trains_on_cpu_and_loss_falls(tmp_path):
    result = train(tiny_settings(tmp_path, precision="bf16", steps=60, learning_rate=0.01))
    losses = [
        e["loss"] for e in read_events(tmp_path / "run" / "events.jsonl") if e["event"] == "step"
    ]
    assert result.final_step == 60
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_every_step_logs_its_time_and_energy_with_the_source(tmp_path):
    result = train(tiny_settings(tmp_path, steps=5))
    steps = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5]
    assert all(e["seconds"] > 0 and e["energy_j"] > 0 for e in steps)
    assert {e["energy_source"] for e in steps} == {result.energy_source}
    assert result.energy_source in ("nvml", "rapl", "estimate")


def test_gradient_accumulation_of_two_halves_matches_one_full_batch():
    task = digits_task()
    batches = task.training_batches(32, seed=0)
    full = next(batches)
    halves = iter(
        [
            type(full)((full.inputs[0][:16],), full.targets[:16]),
            type(full)((full.inputs[0][16:],), full.targets[16:]),
        ]
    )
    torch.manual_seed(0)
    one, two = DigitsCNN((4, 8), 16), DigitsCNN((4, 8), 16)
    two.load_state_dict(one.state_dict())
    config = TrainConfig(steps=1, max_grad_norm=0, seed=0)
    fit(one, iter([full]), task.supervised_loss, config, show_progress=False)
    fit(
        two,
        halves,
        task.supervised_loss,
        TrainConfig(steps=1, max_grad_norm=0, seed=0, grad_accumulation=2),
        show_progress=False,
    )
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradient_checkpointing_saves_measured_activation_memory_and_keeps_gradients():
    task = digits_task()
    batch = next(task.training_batches(64, seed=0))
    torch.manual_seed(0)
    plain, checkpointed = DigitsCNN(), DigitsCNN()
    checkpointed.load_state_dict(plain.state_dict())
    measured = measure_activation_memory(checkpointed, batch, task.supervised_loss)
    assert measured.bytes_with < measured.bytes_without
    assert measured.saving_pct > 30
    for model in (plain, checkpointed):
        model.train()
        task.supervised_loss(model, batch).backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert list(plain.state_dict()) == list(checkpointed.state_dict())


def test_gradient_checkpointing_switch_reports_the_saving(tmp_path):
    result = train(tiny_settings(tmp_path, steps=5, gradient_checkpointing=True))
    memory = result.activation_memory
    assert memory["bytes_with"] < memory["bytes_without"] and memory["saving_pct"] > 0


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_mixed_precision_trains_checkpoints_and_resumes(tmp_path, precision):
    settings = tiny_settings(tmp_path, device="cuda", precision=precision, threads=None)
    first = train(settings)
    assert first.final_step == 40 and first.energy_source in ("nvml", "estimate")
    state = json.loads((tmp_path / "replica-a" / checkpoint_name(40) / "state.json").read_text())
    assert (state["scaler"] is not None) == (precision == "fp16")  # GradScaler state is saved
    for replica in ("replica-a", "replica-b"):
        (tmp_path / replica / checkpoint_name(40) / "manifest.json").unlink()
    assert train(settings).resumed_from_step == 30
