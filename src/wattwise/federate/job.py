"""`wattwise federate` as one call: the federated run, the centralised baseline, the report."""

from __future__ import annotations

from pathlib import Path

from wattwise.federate.centralised import to_same_accuracy, train_centralised
from wattwise.federate.data import open_workload
from wattwise.federate.report import write_report
from wattwise.federate.results import FederateResult, RoundRecord
from wattwise.federate.runner import Hooks, run_federated
from wattwise.federate.settings import FederateSettings
from wattwise.progress import progress_bar


def federate(
    settings: FederateSettings,
    hooks: Hooks | None = None,
    show_progress: bool = False,
    verbose: bool = False,
) -> FederateResult:
    """Run the federated job, then (when asked) the centralised baseline; write the report."""
    with progress_bar("federated rounds", settings.rounds, enabled=show_progress) as bar:

        def on_round(record: RoundRecord) -> None:
            bar.advance(
                f"round {record.round}: accuracy {100 * record.accuracy:.1f}%, "
                f"{record.accepted} accepted, {record.dropped} dropped"
            )

        result = run_federated(settings, hooks=hooks, on_round=on_round, verbose=verbose)
    if settings.centralised_epochs > 0:
        workload = open_workload(settings.model, settings.data, settings.input_shape)
        result.centralised = train_centralised(settings, workload)
        result.to_same_accuracy = to_same_accuracy(result, result.centralised)
    result.report_path = str(write_report(result, Path(settings.out)))
    return result


__all__ = ["federate"]
