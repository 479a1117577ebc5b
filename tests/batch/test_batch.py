"""batch: killed with SIGKILL and resumed, every input is processed exactly once and the
output is identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import wattwise.api
from tests.cli.run_cli import REPO, WATTWISE, assert_one_line_error, run_cli
from wattwise.batch.run import OUTPUT_NAME

FACTORY = ["tests.helpers:wide_mlp", "--input-shape", "64"]


def batch_args(inputs: Path, out: Path) -> list[str]:
    return ["batch", *FACTORY, str(inputs), "--out", str(out), "--batch-size", "32",
            "--chunk-size", "64"]  # fmt: skip


@pytest.fixture
def numeric_inputs(tmp_path) -> Path:
    path = tmp_path / "inputs.npz"
    rng = np.random.default_rng(0)
    np.savez(path, inputs=rng.standard_normal((4000, 64)).astype(np.float32))
    return path


def chunk_positions(out: Path) -> list[int]:
    positions = []
    for chunk in sorted((out / "chunks").glob("chunk-*.npz")):
        with np.load(chunk) as data:
            positions.extend(data["positions"].tolist())
    return positions


@pytest.mark.slow
def test_sigkill_then_resume_processes_each_input_once_with_identical_output(
    numeric_inputs, tmp_path
):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    done = run_cli(*batch_args(numeric_inputs, whole), "--json")
    assert done.returncode == 0, done.stderr[-2000:]

    process = subprocess.Popen(
        [str(WATTWISE), *batch_args(numeric_inputs, resumed)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list((resumed / "chunks").glob("chunk-*.npz"))) < 3:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (resumed / OUTPUT_NAME).exists(), "the run finished before the kill: use more inputs"
    written_before = len(list((resumed / "chunks").glob("chunk-*.npz")))

    done = run_cli(*batch_args(numeric_inputs, resumed), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["chunks_reused"] >= written_before >= 3
    positions = chunk_positions(resumed)
    assert sorted(positions) == list(range(4000))  # every input exactly once
    assert not list((resumed / "chunks").glob(".*.tmp"))
    with np.load(whole / OUTPUT_NAME) as a, np.load(resumed / OUTPUT_NAME) as b:
        assert np.array_equal(a["outputs"], b["outputs"])
        assert np.array_equal(a["ids"], b["ids"])


def test_batch_size_is_the_measured_least_energy_per_input(tmp_path):
    from sklearn.datasets import load_digits

    path = tmp_path / "digits.jsonl"
    images = load_digits().images[:300] / 16.0
    path.write_text("".join(json.dumps({"input": img.tolist()}) + "\n" for img in images))
    result = wattwise.api.batch(
        "digits-cnn", str(path), str(tmp_path / "out"), candidates=(1, 16, 64)
    )
    trials = {t["batch_size"]: t["energy_j_per_input"] for t in result.batch_size_trials}
    assert set(trials) == {1, 16, 64}
    assert result.batch_size == min(trials, key=trials.get)
    with np.load(result.output_path) as data:
        assert data["outputs"].shape == (300, 10)
        accuracy = (data["labels"] == load_digits().target[:300]).mean()
    assert accuracy > 0.9  # real predictions, in input order
    assert result.energy_j > 0 and result.water_l > 0 and result.energy_source


@pytest.mark.slow
def test_text_is_length_sorted_and_outputs_come_back_in_input_order(tmp_path):
    texts = ["a short one", "x " * 90, "a somewhat longer sentence about energy use", "mid " * 20]
    texts = texts * 6
    path = tmp_path / "texts.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    result = wattwise.api.batch("minilm", str(path), str(tmp_path / "out"), batch_size=4)
    loaded = wattwise.models.registry.load_model("minilm")
    with np.load(result.output_path) as data:
        outputs, ids = data["outputs"], data["ids"]
    assert ids.tolist() == [f"t{i}" for i in range(len(texts))]
    direct = loaded.task.embed(loaded.module, texts).numpy()
    cosine = (outputs * direct).sum(axis=1)
    assert cosine.min() > 0.999
    from wattwise.batch.inputs import read_inputs

    order = read_inputs(path, loaded).order
    lengths = [len(loaded.task.tokenizer(texts[i])["input_ids"]) for i in order]
    assert lengths == sorted(lengths)


def test_a_changed_input_or_batch_size_is_refused(numeric_inputs, tmp_path):
    out = tmp_path / "out"
    args = dict(batch_size=32, chunk_size=64, options=None)
    small = tmp_path / "small.npz"
    np.savez(small, inputs=np.ones((40, 1, 8, 8), dtype=np.float32))
    wattwise.api.batch("digits-cnn", str(small), str(out), **args)
    other = tmp_path / "other.npz"
    np.savez(other, inputs=np.zeros((40, 1, 8, 8), dtype=np.float32))
    with pytest.raises(wattwise.errors.ConfigError, match="another input_sha256"):
        wattwise.api.batch("digits-cnn", str(other), str(out), **args)
    with pytest.raises(wattwise.errors.ConfigError, match="--batch-size 32"):
        wattwise.api.batch("digits-cnn", str(small), str(out), batch_size=8)
    assert_one_line_error(
        run_cli("batch", "digits-cnn", "nope.npz", "--out", str(out)), "not found"
    )
