"""An ONNX file behind the same call as a PyTorch module (ONNX Runtime inference session)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wattwise.errors import ModelLoadError

ORT_TYPES = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(double)": torch.float64,
    "tensor(bool)": torch.bool,
}


def load_onnx_session(path: Path, threads: int | None = None, optimization: str = "all"):
    """An ONNX Runtime CPU session with graph optimizations; invalid files raise ModelLoadError."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"ONNX file {path} not found; check the path")
    options = ort.SessionOptions()
    levels = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options.graph_optimization_level = levels[optimization]
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if os.environ.get("WATTWISE_ORT_CUDA") == "1":
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:
        raise ModelLoadError(
            f"invalid ONNX file {path} ({str(error).splitlines()[0][:160]}); "
            "re-export it with torch.onnx.export or check it with onnx.checker"
        ) from error


class OnnxModule(nn.Module):
    """Runs an ONNX model with ONNX Runtime; forward(*tensors) → first output as a tensor."""

    def __init__(self, path: Path, threads: int | None = None, optimization: str = "all") -> None:
        super().__init__()
        self.path = Path(path)
        self.session = load_onnx_session(self.path, threads, optimization)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    def input_spec(self) -> list[tuple[list, torch.dtype]]:
        """Each input's shape (ints or symbolic names) and dtype, as the graph declares them."""
        return [
            (list(i.shape), ORT_TYPES.get(i.type, torch.float32)) for i in self.session.get_inputs()
        ]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {
            name: t.detach().cpu().numpy() for name, t in zip(self.input_names, inputs, strict=True)
        }
        (output,) = self.session.run([self.output_name], feed)
        return torch.from_numpy(np.ascontiguousarray(output))

    def relocate(self, directory: Path) -> None:
        """Point at the same file in `directory` (a variant saved in a staging directory that
        was then renamed into place); the session already holds the graph."""
        self.path = Path(directory) / self.path.name

    def weights_bytes(self) -> int:
        """Bytes of the model file (and its external data, if any)."""
        total = self.path.stat().st_size
        data = self.path.with_suffix(self.path.suffix + ".data")
        return total + (data.stat().st_size if data.exists() else 0)

    def parameter_count(self) -> int:
        """Elements in the graph's initializers (weights), read with onnx."""
        import onnx

        model = onnx.load(str(self.path), load_external_data=False)
        return sum(int(np.prod(t.dims)) if t.dims else 1 for t in model.graph.initializer)


def validate_onnx(path: Path) -> None:
    """Raise ModelLoadError if `path` is not a well-formed ONNX model."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as error:
        raise ModelLoadError(
            f"invalid ONNX file {path} ({str(error).splitlines()[0][:160]}); "
            "re-export it with torch.onnx.export"
        ) from error
