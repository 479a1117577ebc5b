"""The default search space: what is worth trying for this task on this machine.

Ordered by prior: ONNX Runtime int8 first on CPUs (a scout measured it 3.3x faster than fp32
eager on MiniLM at cosine 0.993, see docs/benchmarks.md), torch-side int8 next, reduced
precision and compilation after; structure-changing families (pruning, layer dropping) need
training and come last. On CPUs without int8 dot-product instructions (VNNI/AMX), torchao's
int8 kernels are known to be 3-20x slower than fp32: they are measured once (as the peer) so the
report can show it, never explored further.
"""

from __future__ import annotations

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
    space.add_family(
        "onnxruntime-int8",
        [
            {"steps": [], "backend": ort},
            {
                "steps": [_quantize("int8_dynamic", granularity="per_channel", implementation=ort)],
                "backend": ort,
            },
            {
                "steps": [_quantize("int8_dynamic", granularity="per_tensor", implementation=ort)],
                "backend": ort,
            },
        ],
    )
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
                    "backend": ort,
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
                    "backend": ort,
                }
                for k in keep
            ],
            note="needs distillation (minutes on CPU): tried last",
        )
    return space
