"""The default search space: what is worth trying for this task on this machine.

The space lists candidates; the order they are tried in comes from the hardware probe's
measured ratios (`search.ordering`), so a path that is slow on this CPU (torchao int8 without
VNNI, bf16 without native support) is tried late or not at all. ONNX Runtime candidates use the
TorchScript exporter (fast to export, fusable graphs); the dynamo exporter's graph is one more
candidate, so the exporter is a measured choice. Cross-library recipes (TorchScript export + ORT
transformer fusion + ORT int8; selective int8 chosen by measured per-layer sensitivity) sit
beside the single-library ones; structure-changing families (pruning, layer dropping) need
training and get their steps cut to the time left.
"""

from __future__ import annotations

import torch

from wattwise.search.machine import MachineInfo
from wattwise.search.space import SearchSpace, add_default_peers


def _quantize(method: str, **fields) -> dict:
    return {"quantize": {"method": method, **fields}}


def default_space(
    task_output_kind: str, device: str, machine: MachineInfo, layer_count: int | None = None
) -> SearchSpace:
    """Candidates suited to the task (classifier vs encoder) and device."""
    space = SearchSpace()
    add_default_peers(space)
    ort = "onnxruntime"
    if device.startswith("cuda"):
        space.add_family(
            "reduced-precision",
            [
                {"steps": [{"cast": {"method": "bf16"}}], "backend": "eager"},
                {"steps": [{"cast": {"method": "fp16"}}], "backend": "eager"},
            ],
        )
        space.add_family(
            "weight-only",
            [
                {"steps": [_quantize("int8_weight_only")], "backend": "eager"},
                {"steps": [_quantize("int4_weight_only", group_size=128)], "backend": "eager"},
            ],
        )
        return space
    # TorchScript export: seconds instead of the dynamo exporter's tens of seconds, 1.08-1.16x
    # faster ORT graphs on MiniLM (FIELD-NOTES, docs/benchmarks.md), and the graph ORT's
    # transformer optimizer fuses (Attention, SkipLayerNorm, BiasGelu) before int8 (QAttention):
    # 1.12x plain per-channel int8 at cosine 0.9933 on AVX-512 (bench/recipes.py).
    ts = {"name": ort, "exporter": "torchscript"}
    fuse = {"fuse": {"method": "onnxruntime_transformer"}}
    per_channel = _quantize("int8_dynamic", granularity="per_channel", implementation=ort)
    per_tensor = _quantize("int8_dynamic", granularity="per_tensor", implementation=ort)
    if task_output_kind == "embeddings":
        # The same graph (1) run through wattwise's execution plan (micro-batches of 256
        # tokens, one single-threaded session per core side by side) without ONNX Runtime's
        # SkipLayerNormFusion, whose CPU kernel took 29% of the fused int8 graph's time (1.35x
        # slower than LayerNormalization + Add): 4.75-5.13x fp32 eager vs 3.15-3.41x with ORT's
        # defaults on AVX-512 (docs/benchmarks.md); (2) with ORT's defaults, the single-library
        # reference; (3) without the slow fusion only, run whole (short real texts, where the
        # plan does not pay); (4) = (1) with ORT's FastGelu (tanh approximation) instead of
        # BiasGelu (erf): 2.06x vs 1.97x fp32 eager on AVX2 (masked), fidelity 0.9911 vs
        # 0.9913, 1.02x on AVX-512 (bench/recipes.py). Each piece is measured, never assumed.
        streams = max(1, torch.get_num_threads())
        no_skip_ln = {"disabled_optimizers": ["SkipLayerNormFusion"]}
        planned = {**ts, **no_skip_ln, "micro_batch_tokens": 256, "streams": streams}
        # Separate families: the same compression run three ways is not a milder-to-harsher
        # series, so one breaking the budget must not skip the others.
        fused = "cross-library: TorchScript export + ORT transformer fusion + ORT int8"
        fast_gelu = {"fuse": {"method": "onnxruntime_transformer", "gelu_approximation": True}}
        plan = " + wattwise's execution plan"
        for name, fusion, backend, extra in (
            ("fused-onnxruntime-int8-planned", fuse, planned, plan),
            ("fused-onnxruntime-int8-planned-fastgelu", fast_gelu, planned, plan + ", FastGelu"),
            ("fused-onnxruntime-int8", fuse, ts, ""),
            ("fused-onnxruntime-int8-no-skip-ln", fuse, {**ts, **no_skip_ln}, ""),
        ):
            space.add_family(
                name, [{"steps": [fusion, per_channel], "backend": backend}], fused + extra
            )
    space.add_family(
        "onnxruntime-int8",
        [
            {"steps": [], "backend": ts},
            {"steps": [per_channel], "backend": ts},
            {"steps": [per_tensor], "backend": ts},
        ],
    )
    space.add_family(
        "selective-int8",
        [
            {
                "steps": [
                    _quantize("int8_selective", granularity="per_tensor", min_fidelity=0.995)
                ],
                "backend": ts,
            }
        ],
        note="cross-library: per-layer sensitivity measured, the fewest layers kept fp32",
    )
    # The exporter is a measured choice: the dynamo exporter's graph, same quantization.
    space.add_family("onnxruntime-int8-dynamo", [{"steps": [per_channel], "backend": ort}])
    # torchao's int8 kernels are meant to run compiled; with VNNI/AMX they keep fidelity 0.998
    # on MiniLM at ~3.7-3.9x fp32 eager. Eager torchao int8 is measured once, as the peer.
    if machine.has_int8_dot_product:
        space.add_family(
            "torchao-int8-compiled",
            [
                {
                    "steps": [
                        _quantize(
                            "int8_dynamic", granularity="per_channel", implementation="torchao"
                        )
                    ],
                    "backend": "torch_compile",
                },
            ],
        )
    native_bf16 = any(f in machine.isa_flags for f in ("avx512_bf16", "amx_bf16"))
    bf16 = [{"cast": {"method": "bf16"}}]
    space.add_family(
        "reduced-precision",
        [{"steps": bf16, "backend": "eager"}, {"steps": bf16, "backend": "torch_compile"}]
        if native_bf16
        else [{"steps": bf16, "backend": "eager"}],
        note="" if native_bf16 else "no native bf16 on this CPU: expected slow, measured once",
    )
    space.add_family(
        "onnxruntime-int8-static",
        [
            {"steps": [_quantize("static", calibration_samples=128)], "backend": ort},
        ],
    )
    space.add_family(
        "torch-int8-dynamic",
        [
            {
                "steps": [
                    _quantize("int8_dynamic", granularity="per_channel", implementation="torch_ao")
                ],
                "backend": "eager",
            },
        ],
    )
    if task_output_kind == "logits":
        # Small classifiers: pruning + distillation is cheap enough to search.
        space.add_family(
            "structured-pruning+distill",
            [
                {
                    "steps": [
                        {"prune": {"method": "structured", "sparsity": s}},
                        {"distill": {"steps": 150}},
                    ],
                    "backend": ts,
                }
                for s in (0.3, 0.5, 0.7)
            ],
        )
    elif layer_count:
        keep = [k for k in (layer_count - 1, layer_count - 2) if k >= 1]
        space.add_family(
            "drop-layers+distill+int8",
            [
                {
                    "steps": [
                        {"drop_layers": {"keep": k}},
                        {"distill": {"steps": 150, "loss": "cosine"}},
                        _quantize("int8_dynamic", granularity="per_channel"),
                    ],
                    "backend": ts,
                }
                for k in keep
            ],
            note="needs distillation (minutes on CPU): tried last",
        )
    return space
