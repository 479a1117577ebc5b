"""The CLI's bad-input table: every row is one bad input and what the user must see.

Each row asserts the exit code, exactly one line on stderr (the `error:` line, holding the
row's fragment), no traceback, and nothing half-written in the output directory. Rows run
through `wattwise.cli.main` in this process (the console script's code path, without its
3-5 s start-up); `test_console_script_*` below checks the real script for a few of them.

Add a row: (id, argv with {FILE} names from tests/bad_inputs.py and {out}, exit code, fragment).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bad_inputs import make_bad_files
from tests.cli.run_cli import assert_one_line_error, run_cli, run_in_process

STACK = "tests.helpers:linear_stack"

PROFILE_ROWS = [
    ("profile-input-shape-wrong", ["profile", STACK, "--input-shape", "32"], 2, "(2, 32) float32"),
    ("profile-input-shape-text", ["profile", STACK, "--input-shape", "a,b"], 2, "input"),
    (
        "profile-batch-negative",
        ["profile", "digits-cnn", "--batch-sizes", "-4"],
        2,
        "--batch-sizes",
    ),
    ("profile-batch-zero", ["profile", "digits-cnn", "--batch-sizes", "0,32"], 2, "--batch-sizes"),
    ("profile-batch-text", ["profile", "digits-cnn", "--batch-sizes", "abc"], 2, "--batch-sizes"),
    ("profile-region-unknown", ["profile", "digits-cnn", "--region", "XX"], 2, "XX"),
    ("profile-model-unknown", ["profile", "no-such-model"], 2, "no-such-model"),
    ("profile-factory-import", ["profile", "no_pkg.m:build", "--input-shape", "4"], 2, "no_pkg.m"),
    (
        "profile-factory-not-module",
        ["profile", "tests.helpers:not_a_module", "--input-shape", "4"],
        2,
        "not a torch.nn.Module",
    ),
    ("profile-factory-no-shape", ["profile", STACK], 2, "--input-shape"),
    (
        "profile-weights-corrupt",
        ["profile", STACK, "--input-shape", "64", "--weights", "{corrupt.safetensors}"],
        2,
        "corrupt",
    ),
    (
        "profile-weights-other-model",
        ["profile", STACK, "--input-shape", "64", "--weights", "{other-model.safetensors}"],
        2,
        "missing keys",
    ),
    (
        "profile-weights-missing",
        ["profile", STACK, "--input-shape", "64", "--weights", "{out}/none.safetensors"],
        2,
        "none.safetensors",
    ),
    (
        "profile-builtin-weights",
        ["profile", "digits-cnn", "--weights", "{stack.safetensors}"],
        2,
        "--weights",
    ),
    ("profile-onnx-corrupt", ["profile", "{broken.onnx}"], 2, "ONNX"),
    ("profile-onnx-missing", ["profile", "{out}/missing.onnx"], 2, "not found"),
    ("profile-dir-not-model", ["profile", "{out}"], 2, "directory"),
]

VARIANT_ROWS = [
    ("variant-no-manifest", ["profile", "{no-manifest}"], 2, "without variant.json"),
    ("variant-manifest-not-json", ["profile", "{manifest-not-json}"], 2, "not valid JSON"),
    ("variant-manifest-list", ["profile", "{manifest-list}"], 2, "not a JSON object"),
    ("variant-manifest-no-files", ["profile", "{manifest-no-files}"], 2, "'files'"),
    ("variant-manifest-format", ["profile", "{manifest-format}"], 2, "format"),
    ("variant-manifest-no-source", ["profile", "{manifest-no-source}"], 2, "source"),
    ("variant-weights-swapped", ["profile", "{weights-swapped}"], 2, "sha256"),
    (
        "variant-weights-swapped-rehashed",
        ["profile", "{weights-swapped-rehashed}"],
        2,
        "model.safetensors",
    ),
    ("variant-weights-missing", ["profile", "{weights-missing}"], 2, "missing"),
    ("variant-weights-truncated", ["profile", "{weights-truncated}"], 2, "sha256"),
    ("variant-factory-untrusted", ["profile", "{factory-variant}"], 2, "--trust-code"),
    (
        "variant-factory-untrusted-compress",
        ["compress", "{factory-variant}", "-r", "{cast.yaml}", "-o", "{out}/v"],
        2,
        "--trust-code",
    ),
    (
        "variant-factory-untrusted-optimize",
        ["optimize", "{factory-variant}", "--out", "{out}/r", "--space", "{space-one.yaml}"],
        2,
        "--trust-code",
    ),
    (
        "variant-factory-untrusted-serve",
        ["serve", "{factory-variant}", "--port", "1"],
        2,
        "--trust-code",
    ),
]

DATA_ROWS = [
    (
        f"data-{name.replace('.', '-')}",
        ["profile", "digits-cnn", "--data", "{" + name + "}"],
        2,
        fragment,
    )
    for name, fragment in [
        ("empty.csv", "empty"),
        ("empty.jsonl", "empty"),
        ("empty.npz", "empty"),
        ("header-only.csv", "no data rows"),
        ("nan.csv", 'column "p5"'),
        ("inf.csv", 'column "p2"'),
        ("text.csv", "'p1'"),
        ("blank-cell.csv", "'p0'"),
        ("nan-label.csv", "label"),
        ("one-class.csv", "single class"),
        ("label-12.csv", "out of range"),
        ("label-neg.csv", "class indices"),
        ("label-half.csv", "class indices"),
        ("few.csv", "at least 10"),
        ("narrow.csv", "input shape"),
        ("binary.csv", "CSV"),
        ("strings.npz", "dtype"),
        ("nan.npz", "NaN"),
        ("inf-label.npz", "label"),
        ("no-inputs.npz", "'inputs'"),
        ("label-count.npz", "one label per sample"),
        ("corrupt.npz", ".npz"),
        ("nan.jsonl", "record 9"),
        ("ragged.jsonl", "one shape"),
        ("not-json.jsonl", "line 1"),
        ("data.txt", ".csv, .npz or .jsonl"),
    ]
] + [
    ("data-missing-file", ["profile", "digits-cnn", "--data", "{out}/none.csv"], 2, "not found"),
    (
        "data-unknown-metric",
        ["profile", "digits-cnn", "--data", "{good.csv}", "--metric", "f1"],
        2,
        "metric",
    ),
    (
        "data-factory-wrong-width",
        ["profile", STACK, "--input-shape", "64", "--data", "{narrow.csv}"],
        2,
        "input shape",
    ),
]

COMPRESS_ROWS = [
    (
        "compress-recipe-step-twice",
        ["compress", "digits-cnn", "-r", "{twice.yaml}", "-o", "{out}/v"],
        2,
        "twice with conflicting",
    ),
    (
        "compress-recipe-two-casts",
        ["compress", "digits-cnn", "-r", "{two-casts.yaml}", "-o", "{out}/v"],
        2,
        "twice with conflicting",
    ),
    (
        "compress-recipe-unknown-step",
        ["compress", "digits-cnn", "-r", "{unknown-step.yaml}", "-o", "{out}/v"],
        2,
        "shrink",
    ),
    (
        "compress-recipe-unknown-field",
        ["compress", "digits-cnn", "-r", "{unknown-field.yaml}", "-o", "{out}/v"],
        2,
        "flavour",
    ),
    (
        "compress-recipe-bad-value",
        ["compress", "digits-cnn", "-r", "{bad-sparsity.yaml}", "-o", "{out}/v"],
        2,
        "sparsity",
    ),
    (
        "compress-recipe-not-yaml",
        ["compress", "digits-cnn", "-r", "{not-yaml.yaml}", "-o", "{out}/v"],
        2,
        "YAML",
    ),
    (
        "compress-recipe-list",
        ["compress", "digits-cnn", "-r", "{list.yaml}", "-o", "{out}/v"],
        2,
        "mapping",
    ),
    (
        "compress-recipe-backend",
        ["compress", "digits-cnn", "-r", "{bad-backend.yaml}", "-o", "{out}/v"],
        2,
        "warp-drive",
    ),
    (
        "compress-recipe-missing",
        ["compress", "digits-cnn", "-r", "{out}/none.yaml", "-o", "{out}/v"],
        2,
        "none.yaml",
    ),
    (
        "compress-batch-negative",
        ["compress", "digits-cnn", "-r", "{cast.yaml}", "-o", "{out}/v", "--batch-sizes", "-1"],
        2,
        "--batch-sizes",
    ),
    (
        "compress-out-under-file",
        ["compress", "digits-cnn", "-r", "{cast.yaml}", "-o", "{a-file}/v"],
        2,
        "a-file",
    ),
    (
        "compress-out-unwritable",
        ["compress", "digits-cnn", "-r", "{cast.yaml}", "-o", "/proc/wattwise-v"],
        2,
        "/proc",
    ),
]

OPTIMIZE = ["optimize", "digits-cnn", "--space", "{space-one.yaml}", "--objective", "size"]
OPTIMIZE_ROWS = [
    (
        "optimize-time-limit-zero",
        [*OPTIMIZE, "--out", "{out}/r", "--time-limit", "0"],
        2,
        "--time-limit",
    ),
    (
        "optimize-time-limit-negative",
        [*OPTIMIZE, "--out", "{out}/r", "--time-limit", "-5s"],
        2,
        "-5s",
    ),
    (
        "optimize-time-limit-text",
        [*OPTIMIZE, "--out", "{out}/r", "--time-limit", "soon"],
        2,
        "soon",
    ),
    (
        "optimize-batch-negative",
        [*OPTIMIZE, "--out", "{out}/r", "--batch-size", "-3"],
        2,
        "--batch-size",
    ),
    (
        "optimize-batch-zero",
        [*OPTIMIZE, "--out", "{out}/r", "--batch-size", "0"],
        2,
        "--batch-size",
    ),
    (
        "optimize-budget-bad",
        [*OPTIMIZE, "--out", "{out}/r", "--budget", "accuracy<<1"],
        2,
        "bad budget",
    ),
    ("optimize-budget-metric", [*OPTIMIZE, "--out", "{out}/r", "--budget", "bleu>=3"], 2, "bleu"),
    (
        "optimize-objective",
        ["optimize", "digits-cnn", "--out", "{out}/r", "--objective", "cheap"],
        2,
        "unknown objective",
    ),
    (
        "optimize-space-missing",
        ["optimize", "digits-cnn", "--out", "{out}/r", "--space", "{out}/none.yaml"],
        2,
        "none.yaml",
    ),
    (
        "optimize-space-bad",
        ["optimize", "digits-cnn", "--out", "{out}/r", "--space", "{space-bad.yaml}"],
        2,
        "famil",
    ),
    ("optimize-out-under-file", [*OPTIMIZE, "--out", "{a-file}/r"], 2, "a-file"),
    ("optimize-out-unwritable", [*OPTIMIZE, "--out", "/proc/wattwise-report"], 2, "/proc"),
    ("optimize-resume-nothing", [*OPTIMIZE, "--out", "{out}/r", "--resume"], 2, "resume"),
]

SERVE_ROWS = [
    ("serve-replicas-zero", ["serve", "digits-cnn", "--replicas", "0"], 2, "--replicas"),
    (
        "serve-batch-negative",
        ["serve", "digits-cnn", "--max-batch-size", "-1"],
        2,
        "--max-batch-size",
    ),
    ("serve-port-range", ["serve", "digits-cnn", "--port", "70000"], 2, "--port"),
    (
        "serve-body-negative",
        ["serve", "digits-cnn", "--max-body-bytes", "-5"],
        2,
        "--max-body-bytes",
    ),
    ("serve-open-host-no-key", ["serve", "digits-cnn", "--host", "0.0.0.0"], 2, "API key"),
    (
        "serve-key-env-empty",
        ["serve", "digits-cnn", "--api-key-env", "WATTWISE_UNSET_KEY_VAR"],
        2,
        "WATTWISE_UNSET_KEY_VAR",
    ),
    ("serve-model-unknown", ["serve", "no-such-model", "--port", "1"], 2, "no-such-model"),
    (
        "serve-kv-budget-zero",
        ["serve", "digits-cnn", "--kv-cache-budget-bytes", "0"],
        2,
        "--kv-cache-budget-bytes",
    ),
    ("loadtest-clients-zero", ["loadtest", "http://127.0.0.1:9", "--clients", "0"], 2, "--clients"),
    (
        "loadtest-inputs-negative",
        ["loadtest", "http://127.0.0.1:9", "--inputs-per-request", "-2"],
        2,
        "--inputs-per-request",
    ),
    ("loadtest-duration-text", ["loadtest", "http://127.0.0.1:9", "--duration", "soon"], 2, "soon"),
    (
        "loadtest-unreachable",
        ["loadtest", "http://127.0.0.1:9", "--duration", "1s"],
        2,
        "cannot reach",
    ),
    (
        "loadtest-generate-range-text",
        ["loadtest", "http://127.0.0.1:9", "--generate", "--max-new-tokens-range", "many"],
        2,
        "--max-new-tokens-range",
    ),
    (
        "loadtest-generate-range-reversed",
        ["loadtest", "http://127.0.0.1:9", "--generate", "--prompt-words-range", "64,4"],
        2,
        "--prompt-words-range",
    ),
    (
        "loadtest-generate-rate-zero",
        ["loadtest", "http://x:9", "--generate", "--rate", "0"],
        2,
        "--rate",
    ),
    (
        "loadtest-generate-unreachable",
        ["loadtest", "http://127.0.0.1:9", "--generate", "--duration", "1s"],
        2,
        "cannot reach",
    ),
]

ROWS = PROFILE_ROWS + VARIANT_ROWS + DATA_ROWS + COMPRESS_ROWS + OPTIMIZE_ROWS + SERVE_ROWS


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return make_bad_files(tmp_path_factory.mktemp("bad-files"))


def _fill(args: list[str], files: dict, out) -> list[str]:
    names = {"out": str(out), **{name: str(path) for name, path in files.items()}}
    return [re.sub(r"\{([^{}]+)\}", lambda m: names[m.group(1)], arg) for arg in args]


def assert_clean_failure(done, code: int, fragment: str, out) -> None:
    """Exit code, one line on stderr holding `fragment`, no traceback, nothing half-written."""
    assert done.returncode == code, (done.returncode, done.stderr[-1500:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-1500:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert lines[0].startswith("error:"), lines[0]
    assert fragment in lines[0], lines[0]
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else []
    assert not leftovers, leftovers


@pytest.mark.parametrize(
    ("args", "code", "fragment"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_bad_input_row(args, code, fragment, bad_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    done = run_in_process(*_fill(args, bad_files, out))
    assert_clean_failure(done, code, fragment, out)


@pytest.mark.parametrize(
    "args",
    [
        ["profile", STACK, "--input-shape", "32"],
        ["profile", "{factory-variant}"],
        ["profile", "digits-cnn", "--data", "{nan.csv}"],
    ],
    ids=["input-shape", "untrusted-variant", "nan-data"],
)
def test_console_script_prints_one_line_without_traceback(args, bad_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    done = run_cli(*_fill(args, bad_files, out))
    assert done.returncode == 2, done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, done.stderr


def test_an_internal_error_prints_one_line_and_logs_the_traceback(monkeypatch, tmp_path):
    import wattwise.api

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(wattwise.api, "profile", broken)
    done = run_in_process("profile", "digits-cnn")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "internal error (ZeroDivisionError: a bug of ours)" in line
    log = line.split("the traceback is in ")[1].split(";")[0]
    text = Path(log).read_text()
    assert "Traceback" in text and "ZeroDivisionError" in text


def test_serve_on_a_port_another_server_listens_on_is_refused_before_ray_starts():
    # Ray Serve's proxy binds with SO_REUSEPORT: without this check a second server would
    # start on the same port and silently take half of the first one's connections.
    import socket

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = run_in_process("serve", "digits-cnn", "--port", str(port))
    assert_one_line_error(done, f"port {port} on 127.0.0.1 is already in use", "--port")
