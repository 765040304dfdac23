"""The ``mmdata`` command line (Typer). Commands only wire library entry points together.

Exit codes shared by every command: 0 success, 1 the data has a problem (gap,
mismatch, ...), 2 the input or options are unusable, 3 an internal error (a bug:
set ``MMDATA_DEBUG=1`` to see the traceback).
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from mmdata import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="mmdata",
    help=(
        "Record, verify, replay and serve crypto Level-2 order books and trades "
        "(Binance Spot, Kraken WS v2, Bitfinex WS v2)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``mmdata: error: message`` on stderr and return the Exit to raise."""
    # Messages carry paths and OS errors ("[Errno 2] ..."): never read them as rich markup.
    err_console.print(f"[bold red]mmdata: error:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        typer.echo(f"mmdata {__version__}")
        raise typer.Exit(0)


# Command modules register themselves on `app` when imported.
from mmdata.cli import demo as _demo  # noqa: E402, F401
from mmdata.cli import export as _export  # noqa: E402, F401
from mmdata.cli import history as _history  # noqa: E402, F401
from mmdata.cli import record as _record  # noqa: E402, F401
from mmdata.cli import replay as _replay  # noqa: E402, F401
from mmdata.cli import serve as _serve  # noqa: E402, F401
from mmdata.cli import sim as _sim  # noqa: E402, F401
from mmdata.cli import validate as _validate  # noqa: E402, F401
from mmdata.cli import watch as _watch  # noqa: E402, F401


def main() -> None:
    """Console-script entry point: run the app, turning unexpected errors into one clear line."""
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input: keep the traceback out of users' faces
        if os.environ.get("MMDATA_DEBUG"):
            raise
        err_console.print(
            f"[bold red]mmdata: internal error:[/] {type(exc).__name__}: {escape(str(exc))}\n"
            "This is a bug; rerun with MMDATA_DEBUG=1 for the traceback and report it.",
            markup=True,
        )
        sys.exit(3)
