"""Hardware priors: what this CPU actually does with fp32, bf16 and int8 matmuls, measured.

ISA flags say what instructions exist, not what the libraries make of them: on an AVX2-only
host torchao's int8 ran at 0.05x fp32 and bf16 eager at 0.14x, while ONNX Runtime int8 gained
1.2-1.7x (../shared/FIELD-NOTES.md). So before a search, a probe of a few seconds times one
Linear layer of the model's own dominant shape, at the batch's row count, through each path the
candidates use; a candidate's prior is the ratio of its path to fp32 eager. Models whose work
is in convolutions get their dominant Conv2d timed too (`probe_conv`). Priors order the
candidates and decide which are worth starting; the search then measures the real thing.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from wattwise.search.machine import MachineInfo
from wattwise.search.probe_conv import conv_paths, conv_work, probe_input
from wattwise.search.probe_onnx import onnx_layer_runs

# Time per block of calls. A path's block sits between two fp32 blocks; the ratio is the mean
# of the fp32 medians over the path's median. Not paired alternation (what candidates get):
# for a one-layer call of a millisecond, every switch of library wakes a thread pool, and that
# cost swamped the kernel. Measured in one process, three probes: ORT int8 alternating 6.4x,
# 15.1x, 8.1x; in blocks 6.4x, 6.5x, 5.9x (torch.ao int8: 5.3, 5.5, 2.8 vs 5.7, 5.6, 6.0).
# One noisy ratio once put torchao + inductor first in a 100 s demo, and its compile left no
# time for the fused ONNX Runtime candidates (2.0x held-out instead of ~5x).
PATH_SECONDS = 0.4
MAX_ROWS = 1024
MIN_CONV_SHARE = 0.05  # below this share of the FLOPs the convolutions are not probed
# What a path's int8 does to the layers it does not quantize, for the model-level prior: dynamic
# int8 leaves convolutions in fp32 (ONNX Runtime's then run in its own fp32 kernels), and ONNX
# Runtime's static int8 runs a MatMul through the same int8 kernels as its dynamic int8.
CONV_STAND_IN = {"ort_int8": "ort_fp32", "torch_ao_int8": "fp32", "torchao_int8": "fp32"}
LINEAR_STAND_IN = {"ort_int8_static": "ort_int8"}


@dataclass
class Priors:
    """Measured speed of each compute path relative to fp32 eager PyTorch (>1: faster).

    Attributes:
        ratios: path → fp32 time ÷ the path's time, for one Linear layer of `shape`.
        linear_share: the share of the model's FLOPs in its Linear layers (the part the
            ratios speak for; a GRU's recurrent matmuls are not).
        shape: (rows, in_features, out_features) the layer was timed at.
        fp32_ms: fp32 eager milliseconds for that layer.
        conv_ratios, conv_share, conv_shape, conv_fp32_ms: the same for the model's dominant
            Conv2d (`probe_conv`), when convolutions hold at least MIN_CONV_SHARE of the FLOPs.
        failures: path → why it could not be timed here.
        seconds: the probe's wall time.
        isa_flags: the CPU's ISA flags, for the report.
    """

    ratios: dict[str, float] = field(default_factory=dict)
    linear_share: float = 1.0
    shape: tuple[int, int, int] = (0, 0, 0)
    fp32_ms: float = 0.0
    conv_ratios: dict[str, float] = field(default_factory=dict)
    conv_share: float = 0.0
    conv_shape: str = ""
    conv_fp32_ms: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    isa_flags: list[str] = field(default_factory=list)

    def ratio(self, path: str, default: float = 1.0) -> float:
        """The model-level prior of `path`: its measured Linear and Conv2d ratios applied to
        their shares of the work only (Amdahl: 1 / ((1 − f − g) + f / linear + g / conv));
        `default` when a part with a share of the work was not measured for it."""
        f = min(max(self.linear_share, 0.0), 1.0)
        g = min(max(self.conv_share, 0.0), 1.0 - f) if self.conv_ratios else 0.0
        linear = self.ratios.get(LINEAR_STAND_IN.get(path, path))
        conv_path = CONV_STAND_IN.get(path, path)
        conv = 1.0 if conv_path == "fp32" else self.conv_ratios.get(conv_path)
        if (f > 0 and linear is None) or (g > 0 and conv is None) or f + g == 0:
            return default
        time = (1.0 - f - g) + f / max(linear or 1.0, 1e-6) + g / max(conv or 1.0, 1e-6)
        return 1.0 / time

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def dominant_linear(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of the Linear shape holding the most weights."""
    weights: Counter[tuple[int, int]] = Counter()
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            shape = (layer.in_features, layer.out_features)
            weights[shape] += layer.in_features * layer.out_features
    return weights.most_common(1)[0][0] if weights else None


def rows_per_batch(inputs: tuple[torch.Tensor, ...]) -> int:
    """Rows a Linear sees for one batch: batch × sequence for token inputs, else batch."""
    first = inputs[0]
    if first.dim() == 2 and not first.is_floating_point():
        return int(first.shape[0] * first.shape[1])
    return int(first.shape[0])


def sample_flops(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one sample (0 when they cannot be counted)."""
    from wattwise.measure.flops import count_flops

    return count_flops(module, tuple(t[:1] for t in inputs)) or 0


def linear_flop_share(module: nn.Module, inputs: tuple[torch.Tensor, ...], total: int) -> float:
    """Share of one sample's `total` FLOPs spent in nn.Linear layers (1.0 when the total is
    unknown)."""
    sample = tuple(t[:1] for t in inputs)
    rows = rows_per_batch(sample)
    linear = sum(
        2 * layer.in_features * layer.out_features * rows
        for layer in module.modules()
        if isinstance(layer, nn.Linear)
    )
    if not total or not linear:
        return 1.0 if not total else 0.0
    return min(1.0, linear / total)


def _median_ms(run: Callable[[], object]) -> float:
    run()  # warm-up
    samples = []
    started = time.perf_counter()
    while len(samples) < 3 or (time.perf_counter() - started < PATH_SECONDS and len(samples) < 50):
        begin = time.perf_counter()
        run()
        samples.append((time.perf_counter() - begin) * 1000)
    return sorted(samples)[len(samples) // 2]


def _onnx_paths(layer: nn.Linear, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """ONNX Runtime runs of the layer in fp32 and dynamic int8 (per-channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def int8(source: str, target: str) -> None:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)

    return onnx_layer_runs(layer, x, int8)


def _torch_paths(layer: nn.Linear, x: torch.Tensor, machine: MachineInfo):
    paths: dict[str, Callable[[], object]] = {}
    bf16_layer, bf16_x = nn.Linear(layer.in_features, layer.out_features).bfloat16(), x.bfloat16()
    paths["torch_bf16"] = lambda: bf16_layer(bf16_x)
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice, not the user's problem
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(nn.Sequential(layer), {nn.Linear}, dtype=torch.qint8)
    paths["torch_ao_int8"] = lambda: quantized(x)
    return paths


def _torchao_path(layer: nn.Linear, x: torch.Tensor):
    import copy

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = nn.Sequential(copy.deepcopy(layer))
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return lambda: model(x)


def probe(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    machine: MachineInfo,
    budget_s: float = 15.0,
) -> Priors:
    """Time one Linear of the model's dominant shape through each path, and its dominant
    Conv2d when convolutions hold a share of the work; a few seconds, and never more than
    `budget_s` (paths left when it is spent are listed as not probed).

    A path that fails (a library missing, a kernel absent on this CPU) is left out with its
    reason; a path whose single call is over 20x fp32 is not timed further (it is recorded).
    """
    started = time.perf_counter()
    priors = Priors(isa_flags=list(machine.isa_flags))
    shape = dominant_linear(module)
    try:
        conv = conv_work(module, inputs)
    except Exception:  # noqa: BLE001 - a model the hooks cannot run: no conv prior, no harm
        conv = None
    if shape is None and conv is None:
        priors.failures["all"] = "the model has no Linear or Conv2d layer to probe"
        priors.seconds = time.perf_counter() - started
        return priors
    total = sample_flops(module, inputs)
    priors.linear_share = linear_flop_share(module, inputs, total) if shape else 0.0
    if conv is not None and total:
        priors.conv_share = min(1.0, conv[1] / total)
    if shape is not None:
        rows, left_s = min(rows_per_batch(inputs), MAX_ROWS), budget_s - priors_age(started)
        _probe_linear(priors, shape, rows, machine, left_s)
    if conv is not None and priors.conv_share >= MIN_CONV_SHARE:
        if priors_age(started) > budget_s:
            priors.failures["conv"] = f"not probed: the probe's {budget_s:.0f} s were spent"
        else:
            _probe_conv(priors, conv[0], int(inputs[0].shape[0]))
    priors.seconds = time.perf_counter() - started
    return priors


def priors_age(started: float) -> float:
    """Seconds since `started` (a perf_counter reading)."""
    return time.perf_counter() - started


def _probe_linear(
    priors: Priors, shape: tuple[int, int], rows: int, machine: MachineInfo, budget_s: float = 15.0
) -> None:
    started = time.perf_counter()
    torch.manual_seed(0)
    layer = nn.Linear(*shape).eval()
    x = torch.randn(rows, shape[0])
    priors.shape = (rows, *shape)
    fp32 = lambda: layer(x)  # noqa: E731
    with torch.inference_mode():
        priors.fp32_ms = _median_ms(fp32)
    # ONNX Runtime before torchao: on CPUs it is the likelier int8 winner, and torchao's
    # import alone takes seconds; whatever the budget leaves out is listed as not probed.
    builders: list[tuple[str, Callable[[], dict[str, Callable[[], object]]]]] = [
        ("torch", lambda: _torch_paths(layer, x, machine)),
        ("onnxruntime", lambda: _onnx_paths(layer, x)),
        ("torchao", lambda: {"torchao_int8": _torchao_path(layer, x)}),
    ]
    for library, build in builders:
        if time.perf_counter() - started > budget_s:
            priors.failures[library] = f"not probed: the probe's {budget_s:.0f} s were spent"
            continue
        _time_paths(priors.ratios, priors.failures, library, build, fp32, priors.fp32_ms)


def _probe_conv(priors: Priors, shape, batch: int) -> None:
    layer = shape.layer()
    x = probe_input(shape, batch)
    priors.conv_shape = f"{x.shape[0]} × {shape.text()}"
    fp32 = lambda: layer(x)  # noqa: E731
    with torch.inference_mode():
        priors.conv_fp32_ms = _median_ms(fp32)
    failures: dict[str, str] = {}
    build = lambda: conv_paths(layer, x)  # noqa: E731
    _time_paths(priors.conv_ratios, failures, "conv", build, fp32, priors.conv_fp32_ms)
    priors.failures |= {f"conv {name}": why for name, why in failures.items()}


def _time_paths(ratios, failures, library: str, build, fp32, fp32_ms: float) -> None:
    """Build one library's paths and time each against fp32 into `ratios`; a build that
    fails is recorded under `library`."""
    try:
        with torch.inference_mode():
            paths = build()
    except Exception as error:  # noqa: BLE001 - a missing kernel is a fact to report
        failures[library] = f"{type(error).__name__}: {str(error)[:120]}"
        return
    for name, run in paths.items():
        ratios[name] = path_ratio(run, fp32, fp32_ms, failures, name)


def _call_ms(run: Callable[[], object]) -> float:
    begin = time.perf_counter()
    run()
    return (time.perf_counter() - begin) * 1000


def path_ratio(
    run: Callable[[], object],
    fp32: Callable[[], object],
    fp32_ms: float,
    failures: dict[str, str],
    name: str,
) -> float:
    """fp32 time ÷ `run`'s time, each a median of a block, `run`'s between two fp32 blocks;
    a path far slower than fp32 even after its first call is recorded in `failures`."""
    with torch.inference_mode():
        call_ms = _call_ms(run)
        if call_ms > 20 * fp32_ms * 3:
            # A first call may be one-time set-up (oneDNN builds a bf16 convolution's kernel:
            # 5 ms against 0.07 ms of fp32 work, which once read as "0.01x, not started"), so
            # only a second call that slow says the path is hopeless here.
            call_ms = _call_ms(run)
            if call_ms > 20 * fp32_ms:
                failures[name] = (
                    f"a call took {call_ms:.2f} ms vs {fp32_ms:.3f} ms fp32: not timed further"
                )
                return fp32_ms / call_ms
        before, path_ms, after = _median_ms(fp32), _median_ms(run), _median_ms(fp32)
        return (before + after) / 2 / path_ms
