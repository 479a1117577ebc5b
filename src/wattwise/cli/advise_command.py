"""`wattwise advise PATH`: energy smells in PyTorch code, for people and for CI."""

from __future__ import annotations

import json
import sys

import typer

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, print_json
from wattwise.errors import ConfigError
from wattwise.progress import result_console as console

FAIL_ON_CHOICES = ("info", "warning", "error", "never")


@app.command()
def advise(
    path: str = typer.Argument(..., help="A Python file or a directory to scan."),
    fail_on: str = typer.Option(
        "warning",
        "--fail-on",
        help="Exit 1 when a finding is at or above: info, warning, error, never.",
    ),
    select: str = typer.Option(None, "--select", help="Only these rule codes, e.g. WW101,WW104."),
    sarif: bool = typer.Option(False, "--sarif", help="Print SARIF 2.1.0 (for CI code scanning)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Find energy smells (ast analysis): file:line, why it costs energy, and the fix."""
    from wattwise.advise.sarif import to_sarif
    from wattwise.api import advise as run_advise

    if fail_on not in FAIL_ON_CHOICES:
        raise ConfigError(f"bad --fail-on {fail_on!r}: use one of {', '.join(FAIL_ON_CHOICES)}")
    codes = [c.strip().upper() for c in select.split(",") if c.strip()] if select else None
    result = run_advise(path, select=codes)
    if sarif:
        json.dump(to_sarif(result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif as_json:
        print_json(result.to_dict())
    else:
        for finding in result.findings:
            console.print(
                f"{finding.location}: {finding.code} [{finding.severity}] {finding.name}: "
                f"{finding.why}.\n    fix: {finding.fix}",
                markup=False,
                highlight=False,
            )
        for note in result.skipped:
            console.print(f"skipped {note}", markup=False)
        console.print(
            f"{len(result.findings)} finding(s) in {result.files_scanned} file(s); "
            "measured cost of each rule: docs/advise.md",
            markup=False,
        )
    if fail_on != "never" and result.at_or_above(fail_on):
        raise typer.Exit(1)
