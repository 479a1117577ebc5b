"""An ONNX file behind the same call as a PyTorch module (ONNX Runtime inference session)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class RunOptions:
    """How an ONNX model runs beyond threads and optimization level (the backend's options).

    Attributes:
        micro_batch / micro_batch_tokens / streams: the execution plan (see OnnxModule).
        disabled_optimizers: ONNX Runtime graph transformers not to apply when the session is
            created, by name (e.g. "SkipLayerNormFusion").
    """

    micro_batch: int | None = None
    micro_batch_tokens: int | None = None
    streams: int = 1
    disabled_optimizers: tuple[str, ...] = field(default_factory=tuple)


def load_onnx_session(
    path: Path,
    threads: int | None = None,
    optimization: str = "all",
    disabled_optimizers: tuple[str, ...] = (),
):
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
        return ort.InferenceSession(
            str(path), options, providers=providers, disabled_optimizers=list(disabled_optimizers)
        )
    except Exception as error:
        raise ModelLoadError(
            f"invalid ONNX file {path} ({str(error).splitlines()[0][:160]}); "
            "re-export it with torch.onnx.export or check it with onnx.checker"
        ) from error


def threads_per_stream(threads: int, streams: int) -> int:
    """Intra-op threads of each stream session when `threads` are shared by `streams`."""
    return max(1, threads // streams)


class OnnxModule(nn.Module):
    """Runs an ONNX model with ONNX Runtime; forward(*tensors) → first output as a tensor.

    `options` (RunOptions) may hold an execution plan: each call's batch is cut into
    micro-batches (`micro_batch` samples, or `micro_batch_tokens` tokens for token ids) run on
    `streams` sessions side by side, each with threads // streams intra-op threads (ONNX
    Runtime releases the GIL while it runs). ONNX Runtime has no such option: its intra-op pool
    splits every operator of the whole batch across threads and joins after each, and MiniLM's
    batch-32 FFN activations (25 MB fp32) do not stay in cache; micro-batches of 2 on one
    single-threaded session per core ran fused int8 MiniLM 1.2x faster than the whole batch on
    one two-threaded session (2-core AVX-512 EPYC, docs/benchmarks.md). Batches too small to
    split run whole on the full-thread session.
    """

    def __init__(
        self,
        path: Path,
        threads: int | None = None,
        optimization: str = "all",
        options: RunOptions | None = None,
    ) -> None:
        super().__init__()
        options = options or RunOptions()
        disabled = options.disabled_optimizers
        self.path = Path(path)
        self.session = load_onnx_session(self.path, threads, optimization, disabled)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self.micro_batch = options.micro_batch
        self.micro_batch_tokens = options.micro_batch_tokens
        self.stream_sessions: list = []
        self._pool: ThreadPoolExecutor | None = None
        if (self.micro_batch or self.micro_batch_tokens) and options.streams > 1:
            per_stream = threads_per_stream(threads or torch.get_num_threads(), options.streams)
            self.stream_sessions = [
                load_onnx_session(self.path, per_stream, optimization, disabled)
                for _ in range(options.streams)
            ]
            self._pool = ThreadPoolExecutor(
                options.streams, thread_name_prefix="wattwise-ort-stream"
            )

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {
            name: t.detach().cpu().numpy() for name, t in zip(self.input_names, inputs, strict=True)
        }
        batch = len(inputs[0]) if inputs and inputs[0].dim() else 0
        size = self.micro_batch_size(inputs)
        if not size or batch <= size:
            return self._run(self.session, feed)
        parts = [
            {name: array[start : start + size] for name, array in feed.items()}
            for start in range(0, batch, size)
        ]
        if not self.stream_sessions:
            return torch.cat([self._run(self.session, part) for part in parts])
        count = len(self.stream_sessions)
        shares = [
            parts[i * len(parts) // count : (i + 1) * len(parts) // count] for i in range(count)
        ]
        futures = [
            self._pool.submit(self._run_all, session, share)
            for session, share in zip(self.stream_sessions, shares, strict=True)
            if share
        ]
        return torch.cat([output for future in futures for output in future.result()])

    def micro_batch_size(self, inputs: tuple[torch.Tensor, ...]) -> int | None:
        """Samples per micro-batch: `micro_batch_tokens` ÷ the sequence length for token ids
        (short texts get more samples per call, so ONNX Runtime's per-call cost stays small
        beside the work), else `micro_batch`."""
        first = inputs[0] if inputs else None
        is_tokens = first is not None and first.dim() == 2 and not first.is_floating_point()
        if self.micro_batch_tokens and is_tokens:
            return max(1, self.micro_batch_tokens // max(1, first.shape[1]))
        return self.micro_batch

    def _run_all(self, session, feeds: list[dict]) -> list[torch.Tensor]:
        return [self._run(session, feed) for feed in feeds]

    def _run(self, session, feed: dict) -> torch.Tensor:
        (output,) = session.run([self.output_name], feed)
        return torch.from_numpy(np.ascontiguousarray(output))

    def input_spec(self) -> list[tuple[list, torch.dtype]]:
        """Each input's shape (ints or symbolic names) and dtype, as the graph declares them."""
        return [
            (list(i.shape), ORT_TYPES.get(i.type, torch.float32)) for i in self.session.get_inputs()
        ]

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
