"""sweep: the table and plot on CPU, the Zeus pick, and power limits restored on GPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import wattwise.api
from tests.cli.run_cli import REPO, assert_one_line_error, run_cli, run_in_process
from wattwise.measure.latency import QUICK_TIMING
from wattwise.models.registry import load_model
from wattwise.sweep.run import SweepPoint, sweep_model, zeus_cost


def test_zeus_cost_weighs_energy_against_time():
    frugal = SweepPoint(32, 1, None, 10.0, 3200.0, 0.001, 0.0003, 10)
    fast = SweepPoint(8, 2, None, 1.0, 8000.0, 0.002, 0.000125, 10)
    assert zeus_cost(frugal, 1.0, 7.0) < zeus_cost(fast, 1.0, 7.0)  # energy only
    assert zeus_cost(fast, 0.0, 7.0) < zeus_cost(frugal, 0.0, 7.0)  # time only
    assert zeus_cost(frugal, 0.5, 7.0) == pytest.approx(0.5 * 0.001 + 0.5 * 7.0 * 0.0003)


def test_digits_cpu_sweep_picks_the_least_cost_point_and_labels_estimates():
    loaded = load_model("digits-cnn")
    result = sweep_model(loaded, (1, 16), (1,), eta=0.7, timing=QUICK_TIMING)
    assert len(result.points) == 2
    assert result.pick.cost == min(p.cost for p in result.points)
    for point in result.points:
        assert point.cost == pytest.approx(zeus_cost(point, 0.7, result.max_power_w))
        assert point.energy_j_per_inference > 0 and point.throughput_per_s > 0
    if result.energy_source == "estimate":
        assert result.energy_uncertainty_pct > 0
        assert any("cannot see" in note for note in result.notes)
        assert "estimate ceiling" in result.max_power_source


@pytest.mark.slow
@pytest.mark.parametrize("model", ["digits-cnn", "minilm"])
def test_cli_sweep_prints_the_table_and_writes_the_plot(model, tmp_path):
    # One thread: two OpenMP threads on a shared 2-core machine stall each other for seconds.
    done = run_cli(
        "sweep", model, "--batch-sizes", "1,8", "--threads", "1", "--out", str(tmp_path)
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mJ/inference" in done.stdout and "★" in done.stdout and "pick" in done.stdout
    png = (tmp_path / "sweep.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert {p["batch_size"] for p in saved["points"]} == {1, 8}


def test_power_limits_are_refused_on_cpu_with_one_line():
    done = run_in_process("sweep", "digits-cnn", "--power-limits", "200")
    assert_one_line_error(done, "--device cuda")
    with pytest.raises(wattwise.errors.ConfigError, match="eta"):
        wattwise.api.sweep("digits-cnn", batch_sizes=(1,), eta=1.5)


@pytest.mark.gpu
def test_gpu_power_limits_are_swept_and_restored():
    import pynvml

    from wattwise.sweep.power import gpu_max_watts, journal_path

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    before = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
    low = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)[0] / 1000
    limits = (low, gpu_max_watts(0))
    result = wattwise.api.sweep(
        "digits-cnn", batch_sizes=(64,), power_limits_w=limits, device="cuda"
    )
    assert {p.power_limit_w for p in result.points} == set(limits)
    assert result.energy_source == "nvml"
    assert pynvml.nvmlDeviceGetPowerManagementLimit(handle) == before
    assert not journal_path().exists()


@pytest.mark.gpu
def test_gpu_power_limit_is_restored_after_ctrl_c_and_after_sigkill():
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    before = pynvml.nvmlDeviceGetPowerManagementLimit(handle)
    low = pynvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)[0] / 1000
    script = (
        "from wattwise.sweep.power import PowerLimits\nimport time\n"
        f"with PowerLimits(0) as limits:\n    limits.set_watts({low})\n"
        "    print('set', flush=True)\n    time.sleep(60)\n"
    )
    for sig in (signal.SIGINT, signal.SIGKILL):
        process = subprocess.Popen(
            [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )  # fmt: skip
        assert process.stdout.readline().strip() == "set"
        assert pynvml.nvmlDeviceGetPowerManagementLimit(handle) == round(low * 1000)
        process.send_signal(sig)
        process.wait(timeout=30)
        if sig == signal.SIGKILL:  # no code ran: the next sweep replays the journal
            from wattwise.sweep.power import restore_from_journal

            time.sleep(0.5)
            assert restore_from_journal() == [0]
        assert pynvml.nvmlDeviceGetPowerManagementLimit(handle) == before
