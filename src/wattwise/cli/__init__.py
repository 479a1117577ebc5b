"""The `wattwise` command line. Each `*_command.py` module in this package adds commands.

Errors from the WattwiseError family print as one line on stderr and exit with their code
(2 for bad input, 3 when optimize finds nothing within budget); never a traceback. Anything
else prints one line naming a log file with the traceback and exits 1 (see `failures.py`).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from wattwise.cli.common import with_option_groups


class _Commands(typer.Typer):
    """typer.Typer whose commands may take an `OptionGroup` (flags several commands share)."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)
        return lambda function: register(with_option_groups(function))


app = _Commands(
    name="wattwise",
    help="Compress PyTorch models, measure what they cost (latency, energy, carbon), serve them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Compress PyTorch models, measure what they cost (latency, energy, carbon), serve them."""


def _register_commands() -> None:
    package = sys.modules[__name__]
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.endswith("_command"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_commands()


def main() -> None:
    """Console-script entry point."""
    import warnings

    from wattwise.errors import WattwiseError

    # Library deprecation chatter is for developers; CLI users get results and our own errors.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    try:
        # standalone_mode=False: click returns the exit code of typer.Exit instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except WattwiseError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 (the last resort: one line + a log, never a traceback)
        # Usage errors from typer's click (bad option, missing argument): show them, exit 2.
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            error.show()
            sys.exit(2)
        from wattwise.cli.failures import report_unexpected

        sys.exit(report_unexpected(error))
