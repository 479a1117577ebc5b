"""Build a lookup draft (`models.lookup_draft`) from the target itself: its next-token choices
distilled into n-gram tables, within a time budget.

Two passes over the task's train text (never its val or test text, which the search and the
benchmarks decode from):
1. teacher-forced: the target reads train blocks in batches; after every context of 1..order
   tokens its argmax is counted;
2. closed loop: the target continues train prompts greedily (through the lookup loop, with the
   tables of pass 1 as its draft, so it is fast) and every token it chose is counted after its
   contexts. This is the distribution speculative decoding meets: the target continuing its
   own text. Its counts take precedence over pass 1's.

Each context keeps its most frequent next token. Counting is Python dictionaries: about 5 s for
118k train tokens of tiny-lm on 2 cores, the target's forwards included.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict

import torch

from wattwise.errors import ConfigError, WattwiseError
from wattwise.models.causal_lm import context_tokens
from wattwise.models.lookup_draft import LookupDraft
from wattwise.models.registry import LoadedModel
from wattwise.progress import progress_bar

ORDER = 3
BATCH_BLOCKS = 32
CONTINUATION_PROMPTS = 200
CONTINUATION_PROMPT_TOKENS = 16
CONTINUATION_TOKENS = 128
# Tokens read per sequence when the model's config names no context length.
DEFAULT_CONTEXT_TOKENS = 4096
# Seconds for both passes together by default: the teacher-forced pass stops at half of them.
DEFAULT_SECONDS = 30.0

Counts = list[defaultdict[tuple[int, ...], Counter]]


def build_lookup_draft(
    target: LoadedModel,
    order: int = ORDER,
    seconds: float = DEFAULT_SECONDS,
    show_progress: bool = False,
) -> LookupDraft:
    """A lookup draft distilled from `target` (a causal LM with a language-model task) in about
    `seconds` (both passes stop early at their share of it).

    Example:
        draft = build_lookup_draft(load_model("tiny-lm"))
        tokens, stats = greedy_generate(loaded.module, prompt_ids, 64, draft=draft)
    """
    blocks = getattr(target.task, "blocks", {}).get("train") if target.task else None
    if not target.extra.get("causal_lm") or blocks is None:
        raise ConfigError(
            f"{target.name!r} is not a causal LM with a text task; lookup drafts are built from "
            "causal LMs (tiny-lm or a Hugging Face causal-LM directory)"
        )
    if order < 1:
        raise ConfigError(f"a lookup draft's order must be at least 1, got {order}")
    started = time.perf_counter()
    lm = target.module.lm.eval()
    positions = context_tokens(lm) or DEFAULT_CONTEXT_TOKENS
    blocks = blocks[:, :positions]
    teacher: Counts = [defaultdict(Counter) for _ in range(order)]
    teacher_tokens = _count_teacher_forced(
        lm, blocks, teacher, started + seconds / 2, show_progress
    )
    draft = LookupDraft(_most_frequent(teacher), vocabulary=lm.config.get_text_config().vocab_size)
    own: Counts = [defaultdict(Counter) for _ in range(order)]
    own_tokens = _count_continuations(
        target, draft, own, started + seconds, show_progress, positions
    )
    tables = draft.tables  # the teacher-forced tables, completed in place
    for table, own_table in zip(tables, _most_frequent(own), strict=True):
        table.update(own_table)
    elapsed = time.perf_counter() - started
    draft.description = (
        f"lookup draft: {sum(map(len, tables)):,} contexts of 1-{order} tokens distilled from "
        f"{target.name} + prompt lookup"
    )
    draft.provenance = {
        "target": target.name,
        "teacher_forced_tokens": teacher_tokens,
        "greedy_tokens": own_tokens,
        "build_s": round(elapsed, 2),
    }
    return draft


def cached_lookup_draft(target: LoadedModel, show_progress: bool = False) -> LookupDraft:
    """`build_lookup_draft(target)` once per model weights: saved in the cache directory
    (`$WATTWISE_CACHE/lookup-drafts/`, keyed by a hash of the weights) and loaded from there
    afterwards, so `generate --draft lookup` pays the build only on first use."""
    from wattwise.models.lookup_draft import is_lookup_draft, load_lookup_draft
    from wattwise.paths import cache_dir

    directory = cache_dir() / "lookup-drafts" / f"v1-{weights_digest(target.module)[:20]}"
    if is_lookup_draft(directory):
        return load_lookup_draft(directory)
    draft = build_lookup_draft(target, show_progress=show_progress)
    with contextlib.suppress(OSError, WattwiseError):  # a read-only cache: still serve this call
        draft.save(directory)
    return draft


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state (names and values; quantized tensors by their integers)."""
    import hashlib

    digest = hashlib.sha256()

    def add(value) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.int_repr() if value.is_quantized else value
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(value, (tuple, list)):
            for item in value:
                add(item)
        else:
            digest.update(repr(value).encode())

    for name, value in module.state_dict().items():
        digest.update(name.encode())
        add(value)
    return digest.hexdigest()


def _count_teacher_forced(
    lm, blocks: torch.Tensor, counts: Counts, stop_at: float, show: bool
) -> int:
    """Count the target's argmax after every context in the train blocks until `stop_at`."""
    counted = 0
    batches = range(0, blocks.shape[0], BATCH_BLOCKS)
    with progress_bar("lookup draft: target's next tokens", len(batches), show) as bar:
        for first in batches:
            if time.perf_counter() > stop_at:
                break
            batch = blocks[first : first + BATCH_BLOCKS]
            with torch.inference_mode():
                chosen = lm(batch.to(lm.device)).logits.argmax(-1).tolist()
            for row, next_tokens in zip(batch.tolist(), chosen, strict=True):
                _count_row(row, next_tokens, 0, counts)
                counted += len(row)
            bar.advance()
    return counted


def _count_continuations(
    target: LoadedModel, draft: LookupDraft, counts: Counts, stop_at: float, show: bool,
    positions: int,
) -> int:  # fmt: skip
    """Count the target's own greedy continuations of train prompts until `stop_at` (prompt
    and continuation within the model's `positions`)."""
    from wattwise.models.speculative import lookup_generate

    counted = 0
    prompt_tokens = min(CONTINUATION_PROMPT_TOKENS, positions // 4)
    new_tokens = min(CONTINUATION_TOKENS, positions - prompt_tokens)
    prompts = target.task.prompts(CONTINUATION_PROMPTS, prompt_tokens, "train")
    with progress_bar("lookup draft: target's own continuations", len(prompts), show) as bar:
        for prompt in prompts:
            if time.perf_counter() > stop_at:
                break
            new, _ = lookup_generate(target.module, prompt, new_tokens, draft, False)
            row = prompt[0].tolist() + new[0].tolist()
            # Position t's context ends at t - 1 and is followed by row[t]: shift by one.
            start = prompt.shape[1] - 1
            _count_row(row[:-1], row[1:], start, counts)
            counted += new.shape[1]
            bar.advance()
    return counted


def _count_row(row: list[int], next_tokens: list[int], start: int, counts: Counts) -> None:
    """For positions t >= start: count next_tokens[t] after each context row[t-n+1..t]."""
    for t in range(start, len(row)):
        for n in range(1, len(counts) + 1):
            if t - n + 1 < 0:
                break
            counts[n - 1][tuple(row[t - n + 1 : t + 1])][next_tokens[t]] += 1


def _most_frequent(counts: Counts) -> list[dict[tuple[int, ...], int]]:
    return [{context: c.most_common(1)[0][0] for context, c in table.items()} for table in counts]
