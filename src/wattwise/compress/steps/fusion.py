"""ONNX Runtime transformer fusion, applied by the onnxruntime backend before quantization.

    steps:
      - fuse: {method: onnxruntime_transformer}
      - quantize: {method: int8_dynamic, granularity: per_channel}
    backend: {name: onnxruntime, exporter: torchscript}

`onnxruntime.transformers.optimizer.optimize_model` rewrites the exported BERT-like graph into
ONNX Runtime's fused operators (Attention, SkipLayerNormalization, BiasGelu,
EmbedLayerNormalization); int8 dynamic quantization after it turns Attention into QAttention.
The attention pattern only matches a graph exported from eager attention (an SDPA export keeps
Attention unfused), so the step switches a Hugging Face model to eager attention for the export.
Which fused operators were made is recorded in the variant (`deferred_step_metrics`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from torch import nn

from wattwise.backends.onnx_quantize import register_onnx_quantizer
from wattwise.compress.steps.base import (
    OnnxRuntimeStep,
    refuse_outside_onnxruntime,
    register_step,
)
from wattwise.errors import ConfigError


def transformer_config(module: nn.Module):
    """The Hugging Face config of the first submodule that has one (None if none does)."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "num_attention_heads"):
            return config
    return None


def use_eager_attention(module: nn.Module) -> nn.Module:
    """Switch every Hugging Face model inside `module` to eager attention (same weights)."""
    for sub in module.modules():
        configured = hasattr(sub, "set_attn_implementation") and hasattr(sub, "config")
        if configured and getattr(sub.config, "_attn_implementation", "eager") != "eager":
            sub.set_attn_implementation("eager")
    return module


@register_step(refuse_outside_onnxruntime)
class TransformerFusion(OnnxRuntimeStep):
    """`fuse: {method: onnxruntime_transformer, model_type, num_heads, hidden_size, opt_level,
    attention, gelu_approximation}`.

    `num_heads`/`hidden_size` 0: read from the model's Hugging Face config. `opt_level` is the
    optimizer's ONNX Runtime level: 1 (basic) is what lets Attention fuse on a graph that
    symbolic shape inference cannot read (level 0 fused only BiasGelu on MiniLM). `attention:
    eager` exports Hugging Face models with eager attention so the Attention pattern matches.
    `gelu_approximation: true` turns (Bias)Gelu into FastGelu, the tanh approximation (the
    optimizer's `enable_gelu_approximation`): a different function, so the budget decides.
    """

    kind = "fuse"
    outside_onnxruntime = (
        "fuse {step.method} rewrites an ONNX graph and needs 'backend: onnxruntime' "
        "(this recipe's backend is {backend})"
    )
    libraries = ("onnxruntime",)
    method: Literal["onnxruntime_transformer"] = "onnxruntime_transformer"
    model_type: Literal["bert"] = "bert"
    num_heads: int = 0
    hidden_size: int = 0
    opt_level: Literal[0, 1] = 1
    attention: Literal["eager", "unchanged"] = "eager"
    gelu_approximation: bool = False

    def prepare_export(self, module: nn.Module) -> nn.Module:
        """Eager attention for the export when asked (the module is already a copy)."""
        return use_eager_attention(module) if self.attention == "eager" else module

    def shape(self, module: nn.Module) -> tuple[int, int]:
        """(num_heads, hidden_size): the step's values, else the model's config."""
        config = transformer_config(module)
        heads = self.num_heads or getattr(config, "num_attention_heads", 0)
        hidden = self.hidden_size or getattr(config, "hidden_size", 0)
        if not heads or not hidden:
            raise ConfigError(
                "fuse onnxruntime_transformer: the model has no Hugging Face config with "
                "num_attention_heads/hidden_size; set num_heads and hidden_size in the step"
            )
        return int(heads), int(hidden)


@register_onnx_quantizer(TransformerFusion)
def onnx_transformer_fusion(
    context, module: nn.Module, step: TransformerFusion, source: Path, target: Path
):
    """`optimize_model` on the exported graph; notes and metrics carry the fused op counts."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = step.shape(module)
    options = FusionOptions(step.model_type)
    options.enable_gelu_approximation = step.gelu_approximation
    optimized = optimize_model(
        str(source),
        model_type=step.model_type,
        num_heads=heads,
        hidden_size=hidden,
        opt_level=step.opt_level,
        use_gpu=False,
        only_onnxruntime=False,
        optimization_options=options,
    )
    optimized.save_model_to_file(str(target), use_external_data_format=False)
    fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    listed = ", ".join(f"{name} ×{count}" for name, count in sorted(fused.items())) or "none"
    note = f"ONNX Runtime transformer fusion ({step.model_type}, {heads} heads): {listed}"
    return [note], {"fused_operators": fused, "num_heads": heads, "hidden_size": hidden}
