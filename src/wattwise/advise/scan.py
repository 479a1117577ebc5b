"""Scan files or directories with every rule; the findings and what was skipped."""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wattwise.advise.facts import collect_facts
from wattwise.advise.rules import RULES, SEVERITIES
from wattwise.errors import ConfigError, DataError

SKIPPED_DIRECTORIES = {".git", ".venv", "venv", "__pycache__", "node_modules", "build", "dist"}


@dataclass(frozen=True)
class Finding:
    """One smell at one place: rule code and name, severity, file:line:column, why, fix."""

    code: str
    name: str
    severity: str
    path: str
    line: int
    column: int
    why: str
    fix: str

    @property
    def location(self) -> str:
        """'path:line:column'."""
        return f"{self.path}:{self.line}:{self.column}"


@dataclass
class AdviseResult:
    """Every finding, sorted by file and line, and the files that could not be parsed."""

    findings: list[Finding]
    files_scanned: int
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def at_or_above(self, severity: str) -> list[Finding]:
        """Findings of `severity` or worse."""
        floor = SEVERITIES.index(severity)
        return [f for f in self.findings if SEVERITIES.index(f.severity) >= floor]


def python_files(path: Path) -> list[Path]:
    """`path` itself, or every *.py under it (virtual envs and caches skipped)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path} not found; give a Python file or a directory")
    return sorted(
        p
        for p in path.rglob("*.py")
        if not any(part in SKIPPED_DIRECTORIES or part.startswith(".") for part in p.parts[:-1])
    )


def _suppressed(source_lines: list[str], line: int, code: str) -> bool:
    text = source_lines[line - 1] if 0 < line <= len(source_lines) else ""
    marker = text.partition("# noqa")[2]
    return bool(text.count("# noqa")) and (not marker.strip() or code in marker)


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    """Findings in one file's text (raises SyntaxError when it does not parse)."""
    tree = ast.parse(source, filename=path)
    facts = collect_facts(tree)
    lines = source.splitlines()
    findings = set()
    for rule in RULES:
        for node in rule.check(facts):
            line, column = getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1
            if not _suppressed(lines, line, rule.code):
                findings.add(
                    Finding(
                        rule.code, rule.name, rule.severity, path, line, column, rule.why, rule.fix
                    )
                )
    return sorted(findings, key=lambda f: (f.line, f.column, f.code))


def advise(path: str | Path, select: list[str] | None = None) -> AdviseResult:
    """Scan a file or a directory; `select` keeps only the given rule codes.

    Example:
        result = advise("train.py"); print([f.location for f in result.findings])
    """
    root = Path(path)
    known = {rule.code for rule in RULES}
    unknown = sorted(set(select or []) - known)
    if unknown:
        raise ConfigError(
            f"unknown rule code(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    findings, skipped = [], []
    files = python_files(root)
    for file in files:
        try:
            source = file.read_text(encoding="utf-8")
            found = scan_source(source, str(file))
        except (SyntaxError, UnicodeDecodeError, ValueError) as error:
            skipped.append(f"{file}: not parsed ({type(error).__name__})")
            continue
        findings.extend(f for f in found if not select or f.code in select)
    return AdviseResult(findings, len(files), skipped)
