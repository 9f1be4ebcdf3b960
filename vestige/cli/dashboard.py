"""`vestige dashboard`: serve the live page of a data directory (``vestige.dashboard``)."""

from __future__ import annotations

from pathlib import Path

import click

from vestige.cli._options import data_dir_option, open_store, resolved_data_dir
from vestige.dashboard import DEFAULT_PORT, bind, serve
from vestige.dashboard.panels import LOADTEST_OUT, ReportSource


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help=f"A load-test report folder (or its report.json) to show. Default: the newest "
    f"under ./{LOADTEST_OUT}.",
)
@data_dir_option
def dashboard(port: int, report_path: Path | None) -> None:
    """Serve a live page of this data directory on loopback, until Ctrl-C.

    The page shows every change any process makes, as it happens; who holds the data
    directory (owner, attached windows, shared writers) and its health, as `vestige doctor`
    finds them; the counts; and the latest load-test report.  It only reads.

    Open the address it prints: it carries the token (the HTTP server's, from
    VESTIGE_AUTH_TOKEN or <data-dir>/auth_token), which the page keeps for its tab.

    \b
    Example:
      vestige dashboard --port 0 --report loadtest-out/20261203-061500
    """
    sock = bind(port)
    try:
        with open_store() as store:

            def ready(address: str) -> None:
                click.echo(f"Vestige dashboard: {address}")
                click.echo("Open it in a browser; Ctrl-C stops the dashboard.", err=True)

            serve(store, resolved_data_dir(), ReportSource(report_path), sock, ready)
    finally:
        sock.close()


COMMANDS = (dashboard,)
