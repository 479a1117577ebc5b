"""The ONNX Runtime side of the hardware probe: one layer exported, quantized, and run."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def onnx_layer_runs(
    layer: nn.Module,
    x: torch.Tensor,
    quantize: Callable[[str, str], None],
    names: tuple[str, str] = ("ort_fp32", "ort_int8"),
) -> dict[str, Callable[[], object]]:
    """A run of `layer` on `x` through ONNX Runtime in fp32 and quantized, named by `names`.

    The layer is exported with TorchScript (input "x"); `quantize(fp32_path, int8_path)` writes
    the quantized twin, with the root logger quiet (ONNX Runtime's quantizers log a
    pre-processing hint at WARNING). The files are deleted once the sessions hold them.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="wattwise-probe-") as folder:
        fp32_path, int8_path = Path(folder) / "layer.onnx", Path(folder) / "layer-int8.onnx"
        with contextlib.redirect_stderr(None), torch.no_grad():
            torch.onnx.export(layer, (x,), str(fp32_path), dynamo=False, input_names=["x"])
        quiet = logging.getLogger()
        level, quiet.level = quiet.level, logging.ERROR
        try:
            quantize(str(fp32_path), str(int8_path))
        finally:
            quiet.setLevel(level)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        sessions = {
            name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in zip(names, (fp32_path, int8_path), strict=True)
        }
    feed = {"x": x.numpy()}
    return {name: (lambda s=session: s.run(None, feed)) for name, session in sessions.items()}
