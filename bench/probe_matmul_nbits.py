"""Probe: ONNX Runtime MatMulNBits (weight-only, int8 activations) vs MatMulInteger and fp32.

    bench/as_avx2.sh .venv/bin/python bench/probe_matmul_nbits.py FP32_ONNX CHOSEN_ONNX

FP32_ONNX: an unfused fp32 `model.onnx` of a text encoder (e.g. an `onnxruntime` variant with no
steps); CHOSEN_ONNX: the variant to compare with. Every MatMul of FP32_ONNX is replaced by
MatMulNBits (block 32, symmetric, accuracy level 4) at 8 and 4 bits; all run at batch 32 ×
128 random token ids, 2 threads, 6 alternated timed runs (100 ms apart), medians printed with
the mean cosine of each output to fp32's. Evidence for docs/benchmarks.md, not a goal figure.
"""

import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
)


def nbits_model(source: str, bits: int) -> str:
    """FP32 model with every MatMul as MatMulNBits of `bits`; returns its path."""
    config = DefaultWeightOnlyQuantConfig(
        block_size=32, is_symmetric=True, accuracy_level=4, bits=bits
    )
    quantizer = MatMulNBitsQuantizer(onnx.load(source), algo_config=config)
    quantizer.process()
    path = f"/tmp/wattwise-nbits{bits}.onnx"
    quantizer.model.save_model_to_file(path, use_external_data_format=False)
    return path


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    fp32, chosen = sys.argv[1], sys.argv[2]
    paths = {"fp32": fp32, "chosen": chosen, "nbits8": nbits_model(fp32, 8)}
    paths["nbits4"] = nbits_model(fp32, 4)
    sessions = {name: session(path) for name, path in paths.items()}
    rng = np.random.default_rng(0)
    feed = {
        "input_ids": rng.integers(1000, 20000, (32, 128)).astype(np.int64),
        "attention_mask": np.ones((32, 128), np.int64),
        "token_type_ids": np.zeros((32, 128), np.int64),
    }

    def run(name: str) -> np.ndarray:
        inputs = {i.name: feed[i.name] for i in sessions[name].get_inputs()}
        return sessions[name].run(None, inputs)[0]

    reference = run("fp32")
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(6):
        for name in sessions:
            time.sleep(0.1)
            start = time.perf_counter()
            run(name)
            times[name].append(time.perf_counter() - start)
    for name in sessions:
        out = run(name)
        cosine = (out * reference).sum(1) / (
            np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1)
        )
        median = float(np.median(times[name]))
        speedup = np.median(times["fp32"]) / median
        print(
            f"{name}: {1000 * median:.1f} ms, {speedup:.2f}x ORT fp32, cosine {cosine.mean():.5f}"
        )


if __name__ == "__main__":
    main()
