"""A lookup draft for speculative decoding: no network, only tables of what the target says next.

Two sources of drafted tokens, tried in this order each round:
1. prompt lookup: the last n-gram (3, then 2 tokens) of the text so far is searched earlier in
   the same text, and the tokens that followed it there are proposed (Saxena's prompt lookup
   decoding; transformers' `prompt_lookup_num_tokens` does the same through `generate`);
2. an n-gram table distilled from the target (`compress.lookup_draft`): for each context of
   1..`order` tokens, the token the target itself predicts most often after it, chained
   token by token, longest context first.

A draft token costs microseconds of dictionary lookup instead of a draft network's forward,
which is what makes speculative decoding pay when the target's forward is cheap (a small model
on a CPU). The target verifies every token, so greedy output is the target's own whatever the
tables say (`models.speculative`).

Saved as a directory: `lookup_draft.safetensors` (for each order n, `keys_n` (M, n) and
`values_n` (M,) int64) and `wattwise_lookup_draft.json` (settings and provenance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wattwise.errors import ConfigError

MARKER = "wattwise_lookup_draft.json"
TABLES = "lookup_draft.safetensors"
# Tokens drafted per round: measured on tiny-lm (docs/benchmarks.md), 6 gave the most tokens/s
# of 3-8 (more drafts, fewer accepted per drafted token).
DRAFT_TOKENS = 6
# n-gram lengths prompt lookup matches, longest first.
PROMPT_LOOKUP_NGRAMS = (3, 2)


@dataclass
class LookupDraft:
    """N-gram tables of the target's next token plus prompt lookup.

    Attributes:
        tables: `tables[n - 1]` maps a context of n token ids to the target's next token.
        draft_tokens: tokens proposed per round at most.
        vocabulary: the target's vocabulary size (a draft only fits its own target's tokens).
        description: what it was built from, for reports.
        provenance: how it was built (target, token counts, seconds), saved with it.
    """

    tables: list[dict[tuple[int, ...], int]]
    draft_tokens: int = DRAFT_TOKENS
    vocabulary: int = 0
    description: str = "lookup draft"
    provenance: dict = field(default_factory=dict)

    @property
    def order(self) -> int:
        """The longest context the tables hold."""
        return len(self.tables)

    def propose(self, tokens: list[int], count: int) -> list[int]:
        """Up to `count` drafted tokens to follow `tokens` (prompt lookup, then the tables)."""
        if count <= 0:
            return []
        proposal = prompt_lookup(tokens, count)
        context = tokens + proposal
        while len(proposal) < count:
            following = self._next(context)
            if following is None:
                break
            proposal.append(following)
            context.append(following)
        return proposal

    def _next(self, tokens: list[int]) -> int | None:
        for n in range(min(self.order, len(tokens)), 0, -1):
            following = self.tables[n - 1].get(tuple(tokens[-n:]))
            if following is not None:
                return following
        return None

    def save(self, directory: str | Path) -> None:
        """Write the tables (safetensors) and settings as `directory`, atomically (a
        directory that was there is replaced)."""
        from safetensors.torch import save_file

        from wattwise.paths import atomic_directory

        tensors = {}
        for n, table in enumerate(self.tables, start=1):
            keys = torch.tensor(list(table), dtype=torch.int64).reshape(len(table), n)
            tensors[f"keys_{n}"] = keys
            tensors[f"values_{n}"] = torch.tensor(list(table.values()), dtype=torch.int64)
        settings = {
            "kind": "lookup-draft",
            "order": self.order,
            "draft_tokens": self.draft_tokens,
            "vocabulary": self.vocabulary,
            "description": self.description,
            "provenance": self.provenance,
        }
        with atomic_directory(Path(directory)) as staging:
            save_file(tensors, str(Path(staging) / TABLES))
            (Path(staging) / MARKER).write_text(json.dumps(settings, indent=2))


def is_lookup_draft(directory: str | Path) -> bool:
    """Whether `directory` holds a saved lookup draft."""
    return (Path(directory) / MARKER).is_file()


def load_lookup_draft(directory: str | Path) -> LookupDraft:
    """A saved lookup draft (safetensors only: nothing is unpickled)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not is_lookup_draft(directory) or not (directory / TABLES).is_file():
        raise ConfigError(
            f"{directory} is not a lookup draft (no {MARKER} and {TABLES}); make one with "
            "`wattwise optimize MODEL --objective tokens_per_s` or pass --draft lookup"
        )
    settings = json.loads((directory / MARKER).read_text())
    tensors = load_file(str(directory / TABLES))
    tables = []
    for n in range(1, int(settings["order"]) + 1):
        keys = tensors[f"keys_{n}"].tolist()
        tables.append(dict(zip(map(tuple, keys), tensors[f"values_{n}"].tolist(), strict=True)))
    return LookupDraft(
        tables,
        int(settings.get("draft_tokens", DRAFT_TOKENS)),
        int(settings.get("vocabulary", 0)),
        str(settings.get("description", "lookup draft")),
        dict(settings.get("provenance", {})),
    )


def prompt_lookup(tokens: list[int], count: int) -> list[int]:
    """The `count` tokens that followed the latest earlier occurrence of the text's last n-gram
    (n from PROMPT_LOOKUP_NGRAMS), or [] when it never occurred before.

    Compared with numpy, all positions at once: a Python scan cost 0.34 ms per round at 2,048
    tokens of context (about a third of a tiny-lm step), this 0.035 ms."""
    array = np.fromiter(tokens, dtype=np.int64, count=len(tokens))
    for n in PROMPT_LOOKUP_NGRAMS:
        if len(tokens) <= n:
            continue
        # hit[s]: the n tokens from s equal the last n (s < len - n: never the tail itself).
        hit = np.ones(len(tokens) - n, dtype=bool)
        for offset in range(n):
            hit &= array[offset : len(tokens) - n + offset] == array[len(tokens) - n + offset]
        found = np.flatnonzero(hit)
        if found.size:
            start = int(found[-1]) + n
            return tokens[start : start + count]
    return []
