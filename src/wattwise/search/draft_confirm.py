"""The draft search's held-out check: the best candidates, loaded back from disk, re-timed on
the test prompts until one holds (greedy output identical for a draft or compiled decoding;
the quality budget on test for an int8 target)."""

from __future__ import annotations

import torch

from wattwise.compress.variant import load_variant
from wattwise.models.lookup_draft import is_lookup_draft, load_lookup_draft
from wattwise.search.confirm import agreement
from wattwise.search.deadline import SLICE_SHARE
from wattwise.search.decode_runs import DecodeRunner, OutputChanged, reference_run
from wattwise.search.draft_calls import NO_GAIN, role_of, time_decoding
from wattwise.search.ranking import rank
from wattwise.tasks.base import forward_on_its_device


def load_saved_draft(directory: str):
    """A draft the search saved: a lookup draft's tables or a draft network's module."""
    if is_lookup_draft(directory):
        return load_lookup_draft(directory)
    # Trusted: the search wrote this variant from the model the user named.
    return load_variant(directory, trust_code=True).module


def confirm_choice(search) -> dict:
    """Re-time `search`'s (a `DraftSearch`) best candidates on the test prompts until one
    holds; the first that does is chosen, the target alone when it ranks first."""
    found: dict = {"attempts": [], "timing": None, "agreement": "", "chosen": None}
    test_prompts = search.prompts("test")
    reference: list[torch.Tensor] = []
    for position, result in enumerate(rank([search.baseline, *search.results], search.objective)):
        if result.id == "original":
            found["chosen"], found["outcome"] = result, NO_GAIN
            break
        if position and search.deadline.left_with_grace() < search.measure_s(role_of(result)):
            found["attempts"].append({"id": result.id, "skipped": "no time left"})
            break
        if not reference:
            reference, _ = reference_run(
                search.target, test_prompts, search.new_tokens, search.decode
            )
        role = role_of(result)
        module = search.target if role == "compiled" else load_saved_draft(result.variant_dir)
        runner: DecodeRunner = search._runner(module, role, test_prompts, reference)
        slice_s = max(1.0, min(SLICE_SHARE * search.deadline.limit_s,
                               search.deadline.left_with_grace() / 4))  # fmt: skip
        attempt: dict = {"id": result.id, "label": result.label, "met": False}
        found["attempts"].append(attempt)
        try:
            timing = time_decoding(runner, search._alone(test_prompts), slice_s)
            runner.check_remaining()
        except OutputChanged:
            attempt.update(identical_to_target=False, mismatch=runner.mismatch)
            continue
        attempt.update(timing=timing.to_dict(), identical_to_target=runner.identical,
                       mismatch=runner.mismatch, acceptance_rate=runner.acceptance_rate)  # fmt: skip
        if not _holds_on_test(search, module, role, runner, attempt):
            continue
        found.update(chosen=result, timing=timing.to_dict())
        found["agreement"] = agreement(result.paired, timing)
        found["outcome"] = (
            f"Chosen: {result.label}, {timing.describe()} the target alone's tokens/s on "
            "held-out test prompts at batch 1."
        )
        break
    return found


def _holds_on_test(search, module, role: str, runner: DecodeRunner, attempt: dict) -> bool:
    if role in ("draft", "compiled"):
        attempt["met"] = runner.identical
        return runner.identical
    task = search.loaded.task
    before = task.evaluate(forward_on_its_device(search.target), "test").metrics
    after = task.evaluate(forward_on_its_device(module), "test").metrics
    attempt.update(test_quality=dict(after), met=search.budget.met(before, after))
    return attempt["met"]
