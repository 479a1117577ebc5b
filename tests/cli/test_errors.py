"""Every foundation error case prints one line naming the problem and exits 2 (run in process:
the console script itself is checked in test_bad_input_cli.py)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from tests.cli.run_cli import assert_one_line_error, run_in_process
from tests.helpers import linear_stack


def test_unknown_model_lists_builtins():
    assert_one_line_error(
        run_in_process("profile", "no-such-model"), "no-such-model", "digits-cnn", "minilm"
    )


def test_factory_module_not_importable():
    done = run_in_process("profile", "no_such_pkg.models:build", "--input-shape", "64")
    assert_one_line_error(done, "cannot import module 'no_such_pkg.models'")


def test_factory_not_returning_a_module():
    done = run_in_process("profile", "tests.helpers:not_a_module", "--input-shape", "64")
    assert_one_line_error(done, "returned str, not a torch.nn.Module")


def test_weights_file_corrupt(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a safetensors file at all")
    done = run_in_process(
        "profile", "tests.helpers:linear_stack", "--input-shape", "64", "--weights", str(bad)
    )
    assert_one_line_error(done, "corrupt or truncated")


def test_weights_file_truncated(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in linear_stack().state_dict().items()}, str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    done = run_in_process(
        "profile", "tests.helpers:linear_stack", "--input-shape", "64", "--weights", str(truncated)
    )
    assert_one_line_error(done, "corrupt or truncated")


def test_weights_not_matching_model_names_keys(tmp_path):
    state = {k: v.contiguous() for k, v in linear_stack().state_dict().items()}
    state.pop("4.bias")
    state["extra.weight"] = torch.zeros(3)
    state["0.weight"] = torch.zeros(5, 5)
    path = tmp_path / "mismatch.safetensors"
    save_file(state, str(path))
    done = run_in_process(
        "profile", "tests.helpers:linear_stack", "--input-shape", "64", "--weights", str(path)
    )
    assert_one_line_error(done, "missing keys 4.bias", "unexpected keys extra.weight", "0.weight")


def test_invalid_onnx(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage")
    assert_one_line_error(run_in_process("profile", str(path)), "invalid ONNX file")


def test_output_path_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - cast: {method: bf16}\nbackend: eager\n")
    done = run_in_process("compress", "digits-cnn", "-r", str(recipe), "-o", str(blocker / "out"))
    assert_one_line_error(done, "cannot create output directory")


def test_batch_size_not_positive():
    assert_one_line_error(
        run_in_process("profile", "digits-cnn", "--batch-sizes", "0,32"), "--batch-sizes"
    )
    assert_one_line_error(
        run_in_process("profile", "digits-cnn", "--batch-sizes", "-4"), "--batch-sizes"
    )


def test_unknown_region():
    done = run_in_process("profile", "digits-cnn", "--region", "XX")
    assert_one_line_error(done, "unknown region 'XX'")
