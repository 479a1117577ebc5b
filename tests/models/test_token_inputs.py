"""Models on token ids: inputs keep their integer dtype from the data to the served signature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import wattwise
from tests.cli.run_cli import assert_one_line_error, run_in_process
from wattwise.compress.steps.quantize_common import calibration_batches
from wattwise.errors import ConfigError, DataError
from wattwise.measure.latency import QUICK_TIMING
from wattwise.models.registry import ModelOptions, load_model
from wattwise.serve.signature import array_inputs, describe_model

GRU = "tests.helpers:token_gru"
VOCABULARY = 200


def token_npz(path, count=80, length=12, vocabulary=VOCABULARY, dtype=np.int64):
    """Token ids with a label the GRU can learn (the first id mod 3)."""
    ids = np.random.default_rng(0).integers(0, vocabulary, (count, length)).astype(dtype)
    np.savez(path, inputs=ids, labels=ids[:, 0] % 3)
    return path


def test_npz_token_ids_stay_int64_through_splits_calibration_and_serving(tmp_path):
    loaded = load_model(GRU, ModelOptions(data=str(token_npz(tmp_path / "ids.npz"))))
    assert loaded.extra["input_shapes"] == [((12,), torch.int64)]  # taken from the data
    for split in ("train", "val", "test"):
        (batch,) = loaded.task.example_inputs(4, split)
        assert batch.dtype == torch.int64 and batch.shape == (4, 12)
    calibration = next(calibration_batches(loaded.task, 8, 8, seed=0))
    assert calibration[0].dtype == torch.int64
    assert "accuracy" in loaded.task.evaluate(loaded.module, "val").metrics
    signature = describe_model(loaded)
    assert signature.input_dtype == "int64"
    assert (signature.value_min, signature.value_max) == (0, VOCABULARY - 1)
    (served,) = array_inputs(signature, [signature.example])
    assert served.dtype == torch.int64
    loaded.module(served)  # the example a client sees runs


def test_profile_of_a_gru_on_token_ids_measures_it(tmp_path):
    options = ModelOptions(data=str(token_npz(tmp_path / "ids.npz")), input_shape="12:int64")
    profile = wattwise.profile(GRU, batch_sizes=(1, 8), options=options, timing=QUICK_TIMING)
    assert profile.inputs.startswith("int64 tensor of shape (batch, 12)")
    assert 0.0 <= profile.quality["accuracy"] <= 1.0
    assert profile.throughput_per_s["8"] > 0


def test_int32_data_and_declared_dtypes_are_kept(tmp_path):
    path = token_npz(tmp_path / "ids32.npz", dtype=np.int32)
    loaded = load_model(GRU, ModelOptions(data=str(path), input_shape="12:int32"))
    assert loaded.task.example_inputs(2)[0].dtype == torch.int32
    loaded.module(*loaded.task.example_inputs(2))


def test_random_token_inputs_default_to_the_embedding_rows_and_honour_a_range():
    loaded = load_model(GRU, ModelOptions(input_shape="12"))
    ids = loaded.task.features
    assert ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) < VOCABULARY
    assert int(ids.max()) > VOCABULARY // 2  # the whole vocabulary, not a fixed 0..100
    narrow = load_model(GRU, ModelOptions(input_shape="12", input_range="10,20"))
    assert int(narrow.task.features.min()) >= 10 and int(narrow.task.features.max()) < 20
    as_int32 = load_model(GRU, ModelOptions(input_shape="12", input_dtype="int32"))
    assert as_int32.task.features.dtype == torch.int32


def test_float_models_keep_float_inputs_and_take_a_float_range():
    loaded = load_model("tests.helpers:linear_stack", ModelOptions(input_shape="64"))
    assert loaded.task.features.dtype == torch.float32
    ranged = load_model(
        "tests.helpers:linear_stack", ModelOptions(input_shape="64", input_range="-2,2")
    )
    assert float(ranged.task.features.min()) >= -2 and float(ranged.task.features.max()) < 2


def test_bad_token_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="input embedding 'embedding' of 200 rows"):
        load_model(GRU, ModelOptions(input_shape="12", input_range="0,1000"))
    with pytest.raises(ConfigError, match="unknown --input-dtype 'int8'"):
        load_model(GRU, ModelOptions(input_shape="12", input_dtype="int8"))
    with pytest.raises(ConfigError, match="low must be below high"):
        load_model(GRU, ModelOptions(input_shape="12", input_range="5,5"))
    too_big = token_npz(tmp_path / "big.npz", vocabulary=1000)
    with pytest.raises(DataError, match="200 rows"):
        load_model(GRU, ModelOptions(data=str(too_big)))
    fractions = tmp_path / "fractions.npz"
    np.savez(fractions, inputs=np.full((20, 12), 1.5), labels=np.zeros(20, dtype=np.int64))
    with pytest.raises(DataError, match="fractions"):
        load_model(GRU, ModelOptions(data=str(fractions)))


def test_cli_input_range_outside_the_vocabulary_is_one_line_exit_2():
    result = run_in_process("profile", GRU, "--input-shape", "12", "--input-range", "0,1000")
    assert_one_line_error(result, "input embedding")
