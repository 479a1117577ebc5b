"""The Python API's bad-input table: every row is one bad call and the error it must raise.

Each row asserts the WattwiseError subclass and its exit code (what the CLI would exit with),
a one-line message holding the row's fragment, nothing printed on stderr (so no traceback),
and nothing half-written in the output directory.

Add a row: (id, call taking (files, out), error class, fragment); files come from
tests/bad_inputs.py.
"""

from __future__ import annotations

import pytest

import wattwise.api
from tests.bad_inputs import make_bad_files
from wattwise.compress.variant import load_variant, open_model
from wattwise.errors import (
    ConfigError,
    DataError,
    ModelLoadError,
    ModelRunError,
    OutputPathError,
    UnknownModelError,
    UntrustedCodeError,
    VariantIntegrityError,
    WattwiseError,
)
from wattwise.measure.latency import QUICK_TIMING
from wattwise.models.registry import ModelOptions

STACK = "tests.helpers:linear_stack"
CAST = {"steps": [{"cast": {"method": "bf16"}}], "backend": "eager"}


def _profile(model, **options):
    def call(files, out):
        opts = {
            k: (str(files[v[1:-1]]) if str(v).startswith("{") else v) for k, v in options.items()
        }
        wattwise.api.profile(
            model, batch_sizes=(1,), options=ModelOptions(**opts), timing=QUICK_TIMING
        )

    return call


def _data(name: str):
    return _profile("digits-cnn", data="{" + name + "}")


ROWS = [
    ("profile-input-shape", _profile(STACK, input_shape="32"), ModelRunError, "(2, 32) float32"),
    (
        "profile-factory-missing",
        _profile("no_pkg.m:build", input_shape="4"),
        ModelLoadError,
        "no_pkg.m",
    ),
    ("profile-unknown", _profile("no-such-model"), UnknownModelError, "no-such-model"),
    (
        "profile-weights-other",
        _profile(STACK, input_shape="64", weights="{other-model.safetensors}"),
        ModelLoadError,
        "missing keys",
    ),
    (
        "profile-batch-negative",
        lambda f, o: wattwise.api.profile("digits-cnn", batch_sizes=(-1,)),
        ConfigError,
        "positive",
    ),
    (
        "profile-batch-zero",
        lambda f, o: wattwise.api.profile("digits-cnn", batch_sizes=(0, 8)),
        ConfigError,
        "positive",
    ),
    (
        "profile-threads-negative",
        lambda f, o: wattwise.api.profile("digits-cnn", threads=-2),
        ConfigError,
        "--threads",
    ),
    (
        "profile-region",
        lambda f, o: wattwise.api.profile(
            "digits-cnn", batch_sizes=(1,), region="XX", timing=QUICK_TIMING
        ),
        ConfigError,
        "XX",
    ),
    ("data-empty", _data("empty.csv"), DataError, "empty"),
    ("data-nan-csv", _data("nan.csv"), DataError, 'column "p5"'),
    ("data-inf-csv", _data("inf.csv"), DataError, 'column "p2"'),
    ("data-nan-npz", _data("nan.npz"), DataError, "NaN"),
    ("data-nan-jsonl", _data("nan.jsonl"), DataError, "record 9"),
    ("data-strings", _data("strings.npz"), DataError, "dtype"),
    ("data-one-class", _data("one-class.csv"), DataError, "single class"),
    ("data-label-range", _data("label-12.csv"), DataError, "out of range"),
    ("data-label-negative", _data("label-neg.csv"), DataError, "class indices"),
    ("data-few", _data("few.csv"), DataError, "at least 10"),
    (
        "variant-untrusted-load",
        lambda f, o: load_variant(f["factory-variant"]),
        UntrustedCodeError,
        "trust_code=True",
    ),
    (
        "variant-untrusted-open",
        lambda f, o: open_model(str(f["factory-variant"])),
        UntrustedCodeError,
        "--trust-code",
    ),
    (
        "variant-untrusted-profile",
        lambda f, o: wattwise.api.profile(str(f["factory-variant"])),
        UntrustedCodeError,
        "--trust-code",
    ),
    (
        "variant-no-manifest",
        lambda f, o: load_variant(f["no-manifest"]),
        VariantIntegrityError,
        "variant.json",
    ),
    (
        "variant-manifest-list",
        lambda f, o: load_variant(f["manifest-list"]),
        VariantIntegrityError,
        "JSON object",
    ),
    (
        "variant-swapped",
        lambda f, o: load_variant(f["weights-swapped"]),
        VariantIntegrityError,
        "sha256",
    ),
    (
        "variant-swapped-rehashed",
        lambda f, o: load_variant(f["weights-swapped-rehashed"]),
        WattwiseError,
        "model.safetensors",
    ),
    (
        "compress-step-twice",
        lambda f, o: wattwise.api.compress(
            "digits-cnn",
            {"steps": [{"cast": {"method": "bf16"}}, {"cast": {"method": "fp16"}}]},
            o / "v",
        ),
        ConfigError,
        "twice",
    ),
    (
        "compress-out-under-file",
        lambda f, o: wattwise.api.compress("digits-cnn", CAST, f["a-file"] / "v", batch_sizes=(1,)),
        OutputPathError,
        "a-file",
    ),
    (
        "compress-batch-negative",
        lambda f, o: wattwise.api.compress("digits-cnn", CAST, o / "v", batch_sizes=(-8,)),
        ConfigError,
        "positive",
    ),
    (
        "optimize-time-limit-zero",
        lambda f, o: wattwise.api.optimize("digits-cnn", out=o / "r", time_limit_s=0),
        ConfigError,
        "--time-limit",
    ),
    (
        "optimize-batch-negative",
        lambda f, o: wattwise.api.optimize("digits-cnn", out=o / "r", batch_size=-1),
        ConfigError,
        "--batch-size",
    ),
    (
        "optimize-out-unwritable",
        lambda f, o: wattwise.api.optimize(
            "digits-cnn", out="/proc/wattwise-r", space=str(f["space-one.yaml"])
        ),
        OutputPathError,
        "/proc",
    ),
    (
        "loadtest-clients",
        lambda f, o: wattwise.api.loadtest("http://127.0.0.1:9", clients=0),
        ConfigError,
        "--clients",
    ),
    (
        "serve-batch-negative",
        lambda f, o: wattwise.api.serve("digits-cnn", max_batch_size=-1, block=False),
        ConfigError,
        "--max-batch-size",
    ),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return make_bad_files(tmp_path_factory.mktemp("bad-files"))


@pytest.mark.parametrize(
    ("call", "error", "fragment"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS]
)
def test_bad_call_row(call, error, fragment, bad_files, tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(error) as raised:
        call(bad_files, out)
    message = str(raised.value)
    assert raised.value.exit_code == 2
    assert "\n" not in message and fragment in message, message
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) <= 1
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert not leftovers, leftovers


def test_trusted_factory_variant_loads_with_trust_code(bad_files):
    loaded = load_variant(bad_files["factory-variant"], trust_code=True)
    assert loaded.kind == "variant"
    profile = wattwise.api.profile(
        str(bad_files["factory-variant"]), batch_sizes=(1,), timing=QUICK_TIMING, trust_code=True
    )
    assert profile.parameters > 0
