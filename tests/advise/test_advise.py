"""advise: every smell in the corpus is found, its fixed twin has no finding; CI outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import wattwise.api
from tests.cli.run_cli import assert_one_line_error, run_in_process
from wattwise.advise import RULES, to_sarif
from wattwise.advise.scan import scan_source

CORPUS = Path(__file__).parent / "corpus"


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.code)
def test_each_smell_is_found_and_its_fixed_twin_is_clean(rule):
    smell = CORPUS / f"{rule.code.lower()}_smell.py"
    fixed = CORPUS / f"{rule.code.lower()}_fixed.py"
    found = wattwise.api.advise(str(smell)).findings
    assert rule.code in {f.code for f in found}, found
    assert all(f.line >= 1 and f.path == str(smell) and f.fix and f.why for f in found)
    assert wattwise.api.advise(str(fixed)).findings == []


def test_every_rule_has_a_corpus_pair_and_a_measured_figure_in_the_docs():
    docs = (Path(__file__).parents[2] / "docs" / "advise.md").read_text()
    for rule in RULES:
        assert (CORPUS / f"{rule.code.lower()}_smell.py").is_file()
        assert (CORPUS / f"{rule.code.lower()}_fixed.py").is_file()
        assert f"### {rule.code}" in docs


def test_noqa_silences_one_rule_on_its_line():
    source = "import torch\nmodel = torch.nn.Linear(2, 2)\nmodel.eval()\nmodel(torch.ones(2))  # noqa: WW101\n"
    assert {f.code for f in scan_source(source)} == set()
    source = source.replace("  # noqa: WW101", "")
    assert {f.code for f in scan_source(source)} == {"WW101"}


def test_sarif_names_rules_and_locations():
    result = wattwise.api.advise(str(CORPUS / "ww104_smell.py"))
    sarif = to_sarif(result)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {r.code for r in RULES}
    first = run["results"][0]
    assert first["ruleId"] == "WW104" and first["level"] == "warning"
    assert first["locations"][0]["physicalLocation"]["region"]["startLine"] == 13


def test_cli_exit_code_follows_fail_on_and_json_and_sarif_parse():
    smell = str(CORPUS / "ww105_smell.py")  # one info finding
    assert run_in_process("advise", smell).returncode == 0  # default --fail-on warning
    assert run_in_process("advise", smell, "--fail-on", "info").returncode == 1
    done = run_in_process("advise", str(CORPUS), "--json", "--fail-on", "never")
    assert done.returncode == 0
    codes = {f["code"] for f in json.loads(done.stdout)["findings"]}
    assert codes == {rule.code for rule in RULES}
    sarif = run_in_process("advise", str(CORPUS / "ww108_smell.py"), "--sarif")
    assert sarif.returncode == 1  # WW108 is an error
    assert json.loads(sarif.stdout)["runs"][0]["results"]
    assert_one_line_error(run_in_process("advise", "no/such/dir"), "not found")


def test_unparsable_file_is_skipped_not_fatal(tmp_path):
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "ok.py").write_text("x = 1\n")
    result = wattwise.api.advise(str(tmp_path))
    assert result.files_scanned == 2 and len(result.skipped) == 1
