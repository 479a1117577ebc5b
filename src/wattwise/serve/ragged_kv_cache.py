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

A speculative step (a served lookup draft) writes several columns per row and each row keeps
its own number of them. Rejected columns stay where they are as holes, masked like padding
(`valid`), instead of moving every row's cache; when holes make the cache much wider than its
longest row, one gather per layer packs each row right-aligned again (`_compact`).
"""

from __future__ import annotations

import torch
from torch.nn import functional
from transformers.cache_utils import DynamicLayer

# Spare columns allocated beyond a layer's current length, so decode steps write in place; a
# layer that runs out grows by at least this much (or half its length) at once.
HEADROOM_COLUMNS = 64
# Holes from rejected draft tokens are packed away when the cache is this much wider than its
# longest row (plus a few columns).
COMPACT_WIDTH_RATIO = 1.5
COMPACT_SLACK_COLUMNS = 16


class RaggedKVCache:
    """Left-padded per-layer keys and values of the running rows, and each row's length."""

    def __init__(self, sdpa_mask: bool = False) -> None:
        """`sdpa_mask`: the model attends with SDPA, so decode steps can take the padding mask
        ready-made as (rows, 1, q, columns) booleans, which transformers passes through as is
        instead of building it from a 2D mask at every step (7-8 % of a tiny-lm step, 8 rows)."""
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.lengths: list[int] = []
        self.sdpa_mask = sdpa_mask
        # (rows, columns) booleans once a speculative step left holes; None: every row's
        # tokens are its last `lengths[r]` columns.
        self.valid: torch.Tensor | None = None
        self.compactions = 0  # times holes were packed away
        self._cache = None

    @property
    def rows(self) -> int:
        """Requests in the batch."""
        return len(self.lengths)

    @property
    def columns(self) -> int:
        """Token positions held per row (the longest row's length, plus any holes)."""
        return self.layers[0][0].shape[2] if self.layers else 0

    def add(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append one request's prefilled cache (per layer, (1, heads, tokens, width))."""
        length = layers[0][0].shape[2]
        if not self.layers:
            self.layers = [(k, v) for k, v in layers]
        else:
            width = max(self.columns, length)
            if self.valid is not None:
                self.valid = torch.cat(
                    [_left_pad_mask(self.valid, width), _right_aligned(length, width)[None]]
                )
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
            self.layers, self.valid, self._cache = [], None, None
            return
        index = torch.tensor(keep)
        if self.valid is None:
            start = self.columns - max(self.lengths)
        else:
            self.valid = self.valid[index]
            start = int(self.valid.any(dim=0).long().argmax())
            self.valid = self.valid[:, start:]
        self.layers = [
            (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
            for k, v in self.layers
        ]
        self._cache = None

    def decode_inputs(self, new_tokens: int = 1) -> dict:
        """The attention mask, position ids and cache for one step that feeds `new_tokens`
        tokens per row (1 for a plain decode step, more for draft verification)."""
        from transformers import DynamicCache

        if self._cache is None:
            self._cache = DynamicCache()
            self._cache.layers = [_PreallocatedLayer(k, v) for k, v in self.layers]
        columns = self.columns
        positions = torch.tensor(self.lengths)[:, None] + torch.arange(new_tokens)
        inputs = {"position_ids": positions, "past_key_values": self._cache}
        if self.valid is None and all(length == columns for length in self.lengths):
            return inputs  # no padding: every row attends to every column (causally)
        # Row r attends to its valid columns, and causally to the new ones.
        past = self.valid if self.valid is not None else self._contiguous()
        if not self.sdpa_mask:
            return {**inputs, "attention_mask": _with_new(past, new_tokens).long()}
        new = torch.ones(new_tokens, new_tokens, dtype=torch.bool).tril()
        mask = torch.cat(
            [
                past[:, None, None, :].expand(-1, 1, new_tokens, -1),
                new[None, None].expand(self.rows, 1, -1, -1),
            ],
            dim=-1,
        )
        return {**inputs, "attention_mask": mask}

    def advance(self, grown, kept: list[int]) -> None:
        """Take the cache a step returned: every row got one more column, or (a speculative
        step) several, of which row r keeps the first `kept[r]`."""
        per_row = list(kept)
        widest = max(per_row)
        for layer in grown.layers:
            if isinstance(layer, _PreallocatedLayer):
                layer.keep(self.columns + widest)
        if min(per_row) < widest:  # rows that kept fewer columns get holes
            past = self.valid if self.valid is not None else self._contiguous()
            block = torch.arange(widest)[None, :] < torch.tensor(per_row)[:, None]
            self.valid = torch.cat([past, block], dim=1)
        elif self.valid is not None:
            self.valid = _with_new(self.valid, widest)
        self._cache = grown
        self.layers = [(k, v) for k, v, *_ in grown]
        self.lengths = [length + count for length, count in zip(self.lengths, per_row, strict=True)]
        if self.valid is not None and self.columns > (
            COMPACT_WIDTH_RATIO * max(self.lengths) + COMPACT_SLACK_COLUMNS
        ):
            self._compact()

    def _contiguous(self) -> torch.Tensor:
        """The (rows, columns) validity of right-aligned rows (no holes)."""
        return torch.stack([_right_aligned(length, self.columns) for length in self.lengths])

    def _compact(self) -> None:
        """Pack each row's valid columns right-aligned (one gather per layer; holes gone)."""
        widest = max(self.lengths)
        index = torch.zeros(self.rows, widest, dtype=torch.long)
        for row, length in enumerate(self.lengths):
            index[row, widest - length :] = torch.nonzero(self.valid[row]).flatten()
        self.layers = [
            tuple(
                tensor.gather(
                    2, index[:, None, :, None].expand(-1, tensor.shape[1], -1, tensor.shape[3])
                )
                for tensor in pair
            )
            for pair in self.layers
        ]
        self.valid, self._cache = None, None
        self.compactions += 1


def _right_aligned(length: int, columns: int) -> torch.Tensor:
    return torch.arange(columns) >= columns - length


def _left_pad_mask(valid: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - valid.shape[1]
    return functional.pad(valid, (missing, 0), value=False) if missing else valid


def _with_new(past: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """`past` validity with `new_tokens` valid columns appended to every row."""
    return torch.cat([past, torch.ones(past.shape[0], new_tokens, dtype=torch.bool)], dim=1)


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
