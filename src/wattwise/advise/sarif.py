"""SARIF 2.1.0 output, the format CI code-scanning (GitHub, GitLab) reads."""

from __future__ import annotations

from typing import Any

from wattwise.advise.rules import RULES
from wattwise.advise.scan import AdviseResult

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"info": "note", "warning": "warning", "error": "error"}


def to_sarif(result: AdviseResult) -> dict[str, Any]:
    """One SARIF run: the rules as the tool's driver rules, each finding as a result."""
    rules = [
        {
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": rule.name.replace("-", " ")},
            "fullDescription": {"text": rule.why},
            "help": {"text": f"Fix: {rule.fix}. Measured cost: docs/advise.md#{rule.code.lower()}"},
            "defaultConfiguration": {"level": LEVELS[rule.severity]},
        }
        for rule in RULES
    ]
    index = {rule.code: position for position, rule in enumerate(RULES)}
    results = [
        {
            "ruleId": finding.code,
            "ruleIndex": index[finding.code],
            "level": LEVELS[finding.severity],
            "message": {"text": f"{finding.why}. Fix: {finding.fix}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": finding.path},
                        "region": {"startLine": finding.line, "startColumn": finding.column},
                    }
                }
            ],
        }
        for finding in result.findings
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {"tool": {"driver": {"name": "wattwise-advise", "rules": rules}}, "results": results}
        ],
    }
