"""One KV cache for a running batch whose requests have different lengths (left-padded rows).

The continuous batcher's requests join and leave between decode steps. Rebuilding a batched
cache from per-request caches at every step copies every request's keys and values per step
(measured: continuous batching ran 0.83x static batching on tiny-lm, docs/benchmarks.md). Here
the batch keeps ONE transformers `DynamicCache`: row r holds its request's `lengths[r]` tokens
right-aligned (left padding, masked), the decode step appends one column for every row in
place, a joining request is padded to the batch's length once, and a leaving row is dropped
once (with the leading columns no row needs any more). transformers has no such ragged batch
cache for plain `generate`, which runs a fixed batch to its end.

Each layer's keys and values live in a buffer with spare columns (`_PreallocatedLayer`): a decode
step writes its one new column in place. transformers' `DynamicLayer` concatenates instead,
copying the whole cache at every step: measured on tiny-lm, 8 rows, ~200 columns, that copy
was 12 % of a decode step.
"""

from __future__ import annotations

import torch
from torch.nn import functional
from transformers.cache_utils import DynamicLayer

# Spare columns allocated beyond a layer's current length, so decode steps write in place; a
# layer that runs out grows by at least this much (or half its length) at once.
HEADROOM_COLUMNS = 64


class RaggedKVCache:
    """Left-padded per-layer keys and values of the running rows, and each row's length."""

    def __init__(self, sdpa_mask: bool = False) -> None:
        """`sdpa_mask`: the model attends with SDPA, so decode steps can take the padding mask
        ready-made as (rows, 1, 1, columns) booleans, which transformers passes through as is
        instead of building it from a 2D mask at every step (7-8 % of a tiny-lm step, 8 rows)."""
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.lengths: list[int] = []
        self.sdpa_mask = sdpa_mask
        self._cache = None

    @property
    def rows(self) -> int:
        """Requests in the batch."""
        return len(self.lengths)

    @property
    def columns(self) -> int:
        """Token positions held per row (the longest row's length)."""
        return self.layers[0][0].shape[2] if self.layers else 0

    def add(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append one request's prefilled cache (per layer, (1, heads, tokens, width))."""
        length = layers[0][0].shape[2]
        if not self.layers:
            self.layers = [(k, v) for k, v in layers]
        else:
            width = max(self.columns, length)
            self.layers = [
                (
                    torch.cat([_left_pad(k, width), _left_pad(new_k, width)]),
                    torch.cat([_left_pad(v, width), _left_pad(new_v, width)]),
                )
                for (k, v), (new_k, new_v) in zip(self.layers, layers, strict=True)
            ]
        self.lengths.append(length)
        self._cache = None

    def remove(self, rows: list[int]) -> None:
        """Drop these rows, then the leading columns no remaining row uses."""
        if not rows:
            return
        dropped = set(rows)
        keep = [r for r in range(self.rows) if r not in dropped]
        self.lengths = [self.lengths[r] for r in keep]
        if not keep:
            self.layers, self._cache = [], None
            return
        index = torch.tensor(keep)
        start = self.columns - max(self.lengths)
        self.layers = [
            (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
            for k, v in self.layers
        ]
        self._cache = None

    def decode_inputs(self) -> dict:
        """The attention mask, position ids and cache for one decode step of every row."""
        from transformers import DynamicCache

        if self._cache is None:
            self._cache = DynamicCache()
            self._cache.layers = [_PreallocatedLayer(k, v) for k, v in self.layers]
        columns = self.columns
        positions = torch.tensor([[length] for length in self.lengths])
        inputs = {"position_ids": positions, "past_key_values": self._cache}
        if all(length == columns for length in self.lengths):
            return inputs  # no padding: every row attends to every column
        # Row r attends to its own last `length` columns and the new one (left padding).
        mask = torch.arange(columns + 1) >= columns - positions
        mask = mask[:, None, None, :] if self.sdpa_mask else mask.long()
        return {**inputs, "attention_mask": mask}

    def advance(self, grown, kept: int = 1) -> None:
        """Take the cache a decode step returned: every row got one more column, or (a
        speculative round of one row) several, of which the first `kept` stay."""
        for layer in grown.layers:
            if isinstance(layer, _PreallocatedLayer):
                layer.keep(self.columns + kept)
        self._cache = grown
        self.layers = [(k, v) for k, v, *_ in grown]
        self.lengths = [length + kept for length in self.lengths]


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[2]
    return functional.pad(tensor, (0, 0, missing, 0)) if missing else tensor


class _PreallocatedLayer(DynamicLayer):
    """A transformers cache layer whose keys/values are views of buffers with spare columns."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._length = keys.shape[2]
        self._key_buffer = _with_room(keys, self._length + HEADROOM_COLUMNS)
        self._value_buffer = _with_room(values, self._length + HEADROOM_COLUMNS)
        self._expose()

    def _expose(self) -> None:
        self.keys = self._key_buffer[:, :, : self._length]
        self.values = self._value_buffer[:, :, : self._length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the new columns in place (growing the buffers when full); all columns back."""
        end = self._length + key_states.shape[2]
        if end > self._key_buffer.shape[2]:
            room = end + max(HEADROOM_COLUMNS, end // 2)
            self._key_buffer = _with_room(self.keys, room)
            self._value_buffer = _with_room(self.values, room)
        self._key_buffer[:, :, self._length : end] = key_states
        self._value_buffer[:, :, self._length : end] = value_states
        self._length = end
        self._expose()
        return self.keys, self.values

    def keep(self, columns: int) -> None:
        """Forget the columns after the first `columns` (rejected draft tokens)."""
        self._length = min(self._length, columns)
        self._expose()


def _with_room(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """A (rows, heads, `columns`, width) buffer holding `tensor` in its first columns."""
    rows, heads, length, width = tensor.shape
    buffer = tensor.new_empty(rows, heads, columns, width)
    buffer[:, :, :length] = tensor
    return buffer
