"""optimize --objective tokens_per_s on tiny-lm (test preset): drafts searched end to end, every
measured draft's greedy output equal to the target's, the choice reloadable, a draft that
changes output failed and never chosen."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from tests.cli.run_cli import assert_one_line_error, run_cli, run_in_process
from tests.models.lm_helpers import tiny_lm  # noqa: F401
from wattwise.api import generate
from wattwise.compress.variant import load_variant
from wattwise.models.generation import greedy_generate
from wattwise.models.lookup_draft import is_lookup_draft, load_lookup_draft
from wattwise.report.write import write_report
from wattwise.search.deadline import Deadline
from wattwise.search.draft_calls import PROMPTS
from wattwise.search.optimize_drafts import search_drafts

LIMIT_S = 45.0
ROW_FIELDS = {
    "id", "label", "role", "status", "tokens_per_s", "speedup", "speedup_low", "speedup_high",
    "acceptance_rate", "compress_s", "distill_steps", "libraries", "identical_to_target",
    "within_budget",
    "quality", "chosen", "reason",
}  # fmt: skip


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_lm):  # noqa: F811 - trained before the clock starts
    out = tmp_path_factory.mktemp("drafts") / "report"
    started = time.perf_counter()
    done = run_cli(
        "optimize", "tiny-lm", "--objective", "tokens_per_s", "--time-limit", f"{LIMIT_S:.0f}s",
        "--out", str(out), "--json",
    )  # fmt: skip
    wall_s = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    return json.loads(done.stdout), report, wall_s


def _measured_drafts(report: dict) -> list[dict]:
    return [
        c
        for c in report["candidates"]
        if c["status"] == "measured" and c["generation"]["role"] == "draft"
    ]


@pytest.mark.slow
def test_draft_search_ends_within_its_time_limit(searched):
    cli, report, wall_s = searched
    assert report["elapsed_s"] <= LIMIT_S * 1.1
    # The process's own start and exit on top of the run (the CLI counts its start-up).
    assert wall_s <= LIMIT_S * 1.1 + 3.0
    assert cli["exit_code"] == 0 and report["objective"] == "tokens_per_s"
    assert report["batch_size"] == 1


@pytest.mark.slow
def test_compiled_decoding_is_measured_first_with_the_targets_own_tokens(searched):
    _, report, _ = searched
    compiled = [c for c in report["candidates"] if c["generation"]["role"] == "compiled"]
    assert len(compiled) == 1 and report["candidates"][0] is compiled[0]
    assert compiled[0]["status"] == "measured", compiled[0]["reason"]
    assert compiled[0]["generation"]["identical_to_target"] is True
    assert compiled[0]["generation"]["prompts_checked"] == PROMPTS
    assert compiled[0]["variant_dir"] in (None, "")


@pytest.mark.slow
def test_every_measured_draft_generates_exactly_the_targets_tokens(searched, tiny_lm):  # noqa: F811
    _, report, _ = searched
    drafts = _measured_drafts(report)
    assert drafts, [(c["label"], c["status"], c["reason"]) for c in report["candidates"]]
    prompts = tiny_lm.task.prompts(2, 8, "test")
    for candidate in drafts:
        assert candidate["generation"]["identical_to_target"] is True
        assert candidate["generation"]["prompts_checked"] == PROMPTS
        assert 0 <= candidate["generation"]["acceptance_rate"] <= 1
        # Independently of the search's own check: loaded back, on prompts it never saw.
        directory = candidate["variant_dir"]
        draft = (
            load_lookup_draft(directory)
            if is_lookup_draft(directory)
            else load_variant(directory, check_outputs=True).module
        )
        for prompt in prompts:
            alone, _ = greedy_generate(tiny_lm.module, prompt, 16, stop_at_eos=False)
            assisted, _ = greedy_generate(
                tiny_lm.module, prompt, 16, draft=draft, stop_at_eos=False
            )
            assert torch.equal(alone, assisted), candidate["label"]


@pytest.mark.slow
def test_a_lookup_draft_is_built_and_measured_right_after_compiled_decoding(searched):
    _, report, _ = searched
    lookup = report["candidates"][1]
    assert "lookup draft" in lookup["label"] and lookup["generation"]["role"] == "draft"
    assert lookup["status"] == "measured", lookup["reason"]
    assert is_lookup_draft(lookup["variant_dir"])


@pytest.mark.slow
def test_the_chosen_draft_reloads_and_generate_with_it_gives_the_targets_tokens(searched):
    cli, report, _ = searched
    if cli["chosen_role"] == "draft":
        directory = cli["chosen_variant"]
        assert directory.endswith("draft") and f"--draft {directory}" in cli["usage"]
    else:
        # Nothing beat the target alone, or an int8 target or compiled decoding did: said so,
        # exit 0; a measured draft's directory must still work with generate --draft.
        assert cli["chosen_role"] in ("", "target", "compiled")
        if cli["chosen_role"] == "compiled":
            assert cli["chosen_variant"] == "" and "--compile" in cli["usage"]
        if cli["chosen_role"] == "":
            assert "no draft pays off on this machine" in cli["headline"]
            assert cli["chosen_variant"] == ""
        directory = _measured_drafts(report)[0]["variant_dir"]
    alone = generate("tiny-lm", "Return the", 24)
    drafted = generate("tiny-lm", "Return the", 24, draft=directory)
    assert drafted.identical_to_target is True
    assert drafted.token_ids == alone.token_ids


@pytest.mark.slow
def test_json_output_and_report_have_the_documented_fields(searched):
    cli, report, _ = searched
    assert {"report", "chosen_variant", "chosen", "headline", "partial", "exit_code"} <= set(cli)
    assert {"chosen_role", "usage", "candidates"} <= set(cli)
    assert cli["candidates"] == report["table"]
    original, *candidates = cli["candidates"]
    assert original["role"] == "original" and original["tokens_per_s"] > 0
    assert sum(row["chosen"] for row in cli["candidates"]) == 1
    for row in cli["candidates"]:
        assert set(row) >= ROW_FIELDS, set(row) ^ ROW_FIELDS
        assert "transformers" in row["libraries"]
    for row in candidates:
        if row["status"] == "measured":
            assert row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
            assert row["tokens_per_s"] > 0 and row["compress_s"] > 0
        else:
            assert row["reason"]
    roles = {row["role"] for row in candidates}
    assert {"draft", "target", "compiled"} <= roles
    markdown = (Path(cli["report"]) / "report.md").read_text()
    assert "acceptance" in markdown and "tokens/s" in markdown


def _broken_verification(model, input_ids, max_new_tokens, use_cache=True, draft=None, **kw):
    """Greedy decoding whose speculative path changes the last token: what a draft with broken
    verification would produce."""
    tokens, stats = greedy_generate(model, input_ids, max_new_tokens, use_cache, draft, **kw)
    if draft is not None:
        tokens = tokens.clone()
        tokens[0, -1] += 1
    return tokens, stats


@pytest.mark.slow
def test_a_draft_that_changes_greedy_output_is_failed_and_never_chosen(tmp_path, tiny_lm):  # noqa: F811
    result = search_drafts(
        "tiny-lm", None, Deadline(30.0), tmp_path / "report", decode=_broken_verification
    )
    drafts = [r for r in result.candidates if r.generation["role"] == "draft"]
    tried = [r for r in drafts if r.status != "skipped"]
    assert tried
    for candidate in tried:
        assert candidate.status == "failed", (candidate.label, candidate.status)
        assert "greedy output differs from the target's" in candidate.reason
        assert candidate.generation["identical_to_target"] is False
    assert result.chosen is not None and result.chosen_role != "draft"
    assert not (tmp_path / "report" / "draft").exists()


def test_tokens_per_s_refuses_a_model_that_is_not_a_causal_lm(tmp_path):
    done = run_in_process(
        "optimize", "digits-cnn", "--objective", "tokens_per_s", "--out", str(tmp_path / "r")
    )
    assert_one_line_error(done, "needs a causal LM")
    assert not (tmp_path / "r").exists()


def test_tokens_per_s_refuses_options_it_does_not_take(tmp_path):
    done = run_in_process(
        "optimize", "tiny-lm", "--objective", "tokens_per_s", "--space", "space.yaml",
        "--resume", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert_one_line_error(done, "--space", "--resume")
    assert not (tmp_path / "r").exists()


def _slow_target_alone(model, input_ids, max_new_tokens, use_cache=True, draft=None, **kw):
    """Greedy decoding in which the target alone pays 0.2 s more per call: a machine on which
    drafts pay off (on this one, with the test preset, none does)."""
    if draft is None:
        time.sleep(0.2)
    return greedy_generate(model, input_ids, max_new_tokens, use_cache, draft, **kw)


@pytest.mark.slow
def test_a_faster_draft_is_chosen_rechecked_after_reload_and_saved_for_generate(tmp_path):
    out = tmp_path / "report"
    result = search_drafts("tiny-lm", None, Deadline(30.0), out, decode=_slow_target_alone)
    assert result.exit_code == 0 and result.chosen_role == "draft", result.outcome
    assert result.chosen_variant == str(out / "draft")
    assert f"--draft {out / 'draft'}" in result.usage
    attempt = result.confirmation["attempts"][-1]
    assert attempt["id"] == result.chosen.id and attempt["met"] is True
    assert attempt["identical_to_target"] is True
    assert result.confirmation["timing"]["ratio"] > 1  # the injected 0.2 s per target call
    alone = generate("tiny-lm", "Return the", 24)
    drafted = generate("tiny-lm", "Return the", 24, draft=result.chosen_variant)
    assert drafted.identical_to_target is True
    assert drafted.token_ids == alone.token_ids
    write_report(result, out)
    markdown = (out / "report.md").read_text()
    assert "CHOSEN" in markdown and "Held-out check" in markdown


def test_an_earlier_runs_draft_and_variant_are_removed_but_nothing_else(tmp_path):
    from wattwise.models.lookup_draft import LookupDraft
    from wattwise.search.optimize_drafts import remove_stale_choices

    for name in ("draft", "variant"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "variant.json").write_text("{}")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "variant.json").write_text("{}")
    (tmp_path / "draft-notes").mkdir()  # not a name the search writes
    remove_stale_choices(tmp_path)
    assert not (tmp_path / "draft").exists() and not (tmp_path / "variant").exists()
    LookupDraft([{(1,): 2}]).save(tmp_path / "draft")
    remove_stale_choices(tmp_path)
    assert not (tmp_path / "draft").exists()
    assert (tmp_path / "best").is_dir() and (tmp_path / "draft-notes").is_dir()


def test_the_target_alone_row_shows_its_speed_in_the_pairs_not_its_colder_first_pass():
    from wattwise.search.machine import machine_info
    from wattwise.search.results import CandidateResult, DraftSearchResult

    baseline = CandidateResult(
        "original", "original", 0, "target alone", {}, status="measured",
        generation={"role": "original", "tokens_per_s": 573.3},
    )  # fmt: skip
    drafts = [
        CandidateResult(
            f"d{i}",
            "drafts",
            i,
            f"draft {i}",
            {},
            status="measured",
            generation={"role": "draft", "tokens_per_s": 400.0, "target_tokens_per_s": rate},
        )
        for i, rate in enumerate((853.5, 886.1, 870.0))
    ]
    result = DraftSearchResult(
        model="tiny-lm", budget=None, objective=None, device="cpu", seed=0, time_limit_s=60,
        baseline=baseline, candidates=drafts, chosen=baseline, chosen_variant="",
        chosen_role="", usage="", workload="", confirmation={}, partial=False, stop_reason="",
        elapsed_s=1.0, machine=machine_info(),
    )  # fmt: skip
    row = result.table()[0]
    assert row["tokens_per_s"] == 870.0 and row["tokens_per_s_from"] == "median in the pairs"
    assert result.table()[1]["tokens_per_s_from"] == "own timed calls"
