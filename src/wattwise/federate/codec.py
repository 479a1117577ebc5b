"""Update coding: what a client sends instead of its fp32 model update, and how the server reads it.

Flower carries opaque byte tensors and has no update compression of its own, so the coding is
ours: "none" sends the fp32 update; "int8" quantizes it symmetrically with one fp32 scale per
block of `INT8_BLOCK` values (1 byte per value + 4 bytes per block, ~3.98x smaller); "topk:F"
keeps the F largest-magnitude entries as a bitmask (1 bit per value) plus their fp16 values,
and carries what was left out into the next round's update (error feedback: Stich et al.,
"Sparsified SGD with Memory", NeurIPS 2018; Karimireddy et al., ICML 2019). Every decode checks
sizes and finiteness, so a malformed or non-finite update raises instead of being averaged.
"""

from __future__ import annotations

import math

import numpy as np

from wattwise.errors import WattwiseError
from wattwise.federate.settings import Compression

INT8_BLOCK = 1024
TENSOR_TYPE_PREFIX = "wattwise-update/"


class MalformedUpdateError(WattwiseError):
    """A client update that does not decode to finite tensors of the global model's shapes."""


def tensor_type(compression: Compression) -> str:
    """The label a coded update carries (Flower's `Parameters.tensor_type`)."""
    return TENSOR_TYPE_PREFIX + compression.label()


def _encode_int8(values: np.ndarray) -> bytes:
    blocks = math.ceil(values.size / INT8_BLOCK)
    padded = np.zeros(blocks * INT8_BLOCK, dtype=np.float32)
    padded[: values.size] = values
    padded = padded.reshape(blocks, INT8_BLOCK)
    scales = (np.abs(padded).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    with np.errstate(invalid="ignore"):  # a NaN update keeps its NaN scale: the server refuses it
        quantized = np.clip(np.rint(padded / safe), -127, 127).astype(np.int8)
    return scales.astype("<f4").tobytes() + quantized.reshape(-1)[: values.size].tobytes()


def _decode_int8(data: bytes, size: int) -> np.ndarray:
    blocks = math.ceil(size / INT8_BLOCK)
    if len(data) != 4 * blocks + size:
        raise MalformedUpdateError(
            f"int8 tensor of {len(data)} bytes for {size} values (expected {4 * blocks + size})"
        )
    scales = np.frombuffer(data[: 4 * blocks], dtype="<f4")
    quantized = np.frombuffer(data[4 * blocks :], dtype=np.int8).astype(np.float32)
    return quantized * np.repeat(scales, INT8_BLOCK)[:size]


def _encode_topk(values: np.ndarray, fraction: float) -> bytes:
    keep = max(1, math.ceil(fraction * values.size))
    chosen = np.argpartition(np.abs(values), values.size - keep)[values.size - keep :]
    mask = np.zeros(values.size, dtype=bool)
    mask[chosen] = True
    return np.packbits(mask).tobytes() + values[mask].astype("<f2").tobytes()


def _decode_topk(data: bytes, size: int) -> np.ndarray:
    mask_bytes = math.ceil(size / 8)
    if len(data) < mask_bytes:
        raise MalformedUpdateError(f"top-k tensor of {len(data)} bytes is shorter than its mask")
    mask = np.unpackbits(np.frombuffer(data[:mask_bytes], dtype=np.uint8), count=size).astype(bool)
    kept = int(mask.sum())
    if len(data) != mask_bytes + 2 * kept:
        raise MalformedUpdateError(
            f"top-k tensor of {len(data)} bytes for {kept} kept values "
            f"(expected {mask_bytes + 2 * kept})"
        )
    out = np.zeros(size, dtype=np.float32)
    out[mask] = np.frombuffer(data[mask_bytes:], dtype="<f2").astype(np.float32)
    return out


def encode_tensor(values: np.ndarray, compression: Compression) -> bytes:
    """One fp32 update tensor → the bytes sent for it."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if compression.kind == "none":
        return flat.astype("<f4").tobytes()
    if compression.kind == "int8":
        return _encode_int8(flat)
    return _encode_topk(flat, compression.fraction or 1.0)


def decode_tensor(data: bytes, shape: tuple[int, ...], compression: Compression) -> np.ndarray:
    """Bytes of one coded tensor → fp32 values of `shape`; raises MalformedUpdateError."""
    size = int(np.prod(shape)) if shape else 1
    if compression.kind == "none":
        if len(data) != 4 * size:
            raise MalformedUpdateError(f"fp32 tensor of {len(data)} bytes for {size} values")
        values = np.frombuffer(data, dtype="<f4").astype(np.float32)
    elif compression.kind == "int8":
        values = _decode_int8(data, size)
    else:
        values = _decode_topk(data, size)
    if not np.isfinite(values).all():
        raise MalformedUpdateError("update holds NaN or infinite values")
    return values.reshape(shape)


def decode_update(
    tensors: list[bytes], label: str, shapes: list[tuple[int, ...]], compression: Compression
) -> list[np.ndarray]:
    """A client's coded update → fp32 tensors of the global model's shapes, or raise."""
    if label != tensor_type(compression):
        raise MalformedUpdateError(
            f"update coded as {label!r}, this run expects {tensor_type(compression)!r}"
        )
    if len(tensors) != len(shapes):
        raise MalformedUpdateError(f"{len(tensors)} tensors sent, the model has {len(shapes)}")
    return [decode_tensor(t, s, compression) for t, s in zip(tensors, shapes, strict=True)]


class UpdateEncoder:
    """A client's coder: codes each round's update, keeping the top-k residual (error feedback)."""

    def __init__(self, compression: Compression, residual: list[np.ndarray] | None = None) -> None:
        self.compression = compression
        self.residual = residual

    def encode(self, update: list[np.ndarray]) -> list[bytes]:
        """fp32 update tensors → coded bytes; for top-k, what was dropped is kept for next time."""
        if self.compression.kind != "topk":
            return [encode_tensor(u, self.compression) for u in update]
        if self.residual is None or [r.shape for r in self.residual] != [u.shape for u in update]:
            self.residual = [np.zeros_like(u, dtype=np.float32) for u in update]
        corrected = [u.astype(np.float32) + r for u, r in zip(update, self.residual, strict=True)]
        coded = [encode_tensor(c, self.compression) for c in corrected]
        sent = [
            decode_tensor(b, c.shape, self.compression)
            for b, c in zip(coded, corrected, strict=True)
        ]
        self.residual = [c - s for c, s in zip(corrected, sent, strict=True)]
        return coded
