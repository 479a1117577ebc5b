"""Update coding: sizes, fidelity, error feedback, and refusal of malformed bytes."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="install federate-requirements.txt (make install does)")

import numpy as np

from wattwise.federate.codec import (
    MalformedUpdateError,
    UpdateEncoder,
    decode_tensor,
    decode_update,
    encode_tensor,
    tensor_type,
)
from wattwise.federate.settings import Compression, parse_compression

SHAPES = [(64, 32, 3, 3), (64,), (10, 256)]


def _update(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.01, s).astype(np.float32) for s in SHAPES]


def test_int8_is_four_times_smaller_and_close():
    update = _update()
    fp32 = sum(len(encode_tensor(u, Compression("none"))) for u in update)
    int8 = [encode_tensor(u, Compression("int8")) for u in update]
    assert fp32 / sum(len(b) for b in int8) > 3.9
    decoded = decode_update(int8, tensor_type(Compression("int8")), SHAPES, Compression("int8"))
    for original, back in zip(update, decoded, strict=True):
        assert np.abs(original - back).max() <= np.abs(original).max() / 127 + 1e-7


def test_topk_keeps_the_largest_tenth_in_under_an_eighth_of_the_bytes():
    values = _update()[0]
    coded = encode_tensor(values, Compression("topk", 0.1))
    assert len(coded) * 8 < values.size * 4
    back = decode_tensor(coded, values.shape, Compression("topk", 0.1))
    kept = back != 0
    assert abs(kept.mean() - 0.1) < 0.01
    assert np.abs(values[kept]).min() >= np.abs(values[~kept]).max() - 1e-6


def test_error_feedback_sends_what_was_left_out_later():
    compression = Compression("topk", 0.1)
    encoder = UpdateEncoder(compression)
    update = _update()
    sent_total = [np.zeros(s, np.float32) for s in SHAPES]
    for _ in range(30):
        coded = encoder.encode(update)
        decoded = decode_update(coded, tensor_type(compression), SHAPES, compression)
        sent_total = [t + d for t, d in zip(sent_total, decoded, strict=True)]
    # what was sent plus what is still owed equals everything the client meant to send
    for total, residual, u in zip(sent_total, encoder.residual, update, strict=True):
        np.testing.assert_allclose(total + residual, 30 * u, rtol=1e-3, atol=1e-4)
    # and without feedback, the small entries would never be sent at all
    assert np.abs(encoder.residual[0]).max() < np.abs(30 * update[0]).max()


@pytest.mark.parametrize("kind", ["none", "int8", "topk:0.1"])
def test_malformed_or_non_finite_updates_raise(kind):
    compression = parse_compression(kind)
    good = [encode_tensor(u, compression) for u in _update()]
    label = tensor_type(compression)
    with pytest.raises(MalformedUpdateError):
        decode_update([good[0][:-3], *good[1:]], label, SHAPES, compression)
    with pytest.raises(MalformedUpdateError):
        decode_update(good[:-1], label, SHAPES, compression)
    with pytest.raises(MalformedUpdateError):
        decode_update(good, "numpy.ndarray", SHAPES, compression)
    poisoned = [np.full(SHAPES[0], np.nan, np.float32), *_update()[1:]]
    with pytest.raises(MalformedUpdateError, match="NaN"):
        decode_update(UpdateEncoder(compression).encode(poisoned), label, SHAPES, compression)
