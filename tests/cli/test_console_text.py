"""Human output prints user text verbatim: brackets in layer names, errors and generated text
are not read as rich markup (they used to vanish: "ignore: [enc.layers.0.self_attn, ...]")."""

from __future__ import annotations

from rich.table import Table

from wattwise.progress import console, info, result_console

QUOTED = "ignore: [enc.layers.0.self_attn, ...]; def f(x: list[int]) -> dict[str, int]; [bold]x[/]"


def test_status_lines_keep_brackets(monkeypatch):
    monkeypatch.delenv("WATTWISE_QUIET", raising=False)
    with console.capture() as captured:
        info(QUOTED)
    assert QUOTED in captured.get().replace("\n", "")


def test_result_tables_keep_brackets():
    table = Table(title="steps: [a] [b]")
    table.add_column("step")
    table.add_row("prune [before]")
    with result_console.capture() as captured:
        result_console.print(table)
    text = captured.get()
    assert "prune [before]" in text and "steps: [a] [b]" in text
