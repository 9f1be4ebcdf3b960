"""`vestige config`: print what an MCP client needs to start vestige-mcp; never edit its files.

The snippets come from :mod:`vestige.client_config`; this module only checks the options,
prints (or writes a new file), and says on stderr where the snippet goes, so that stdout
stays exactly the snippet (``vestige config cursor > mcp.json`` is a valid file).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

import click

from vestige import client_config
from vestige.cli._options import data_dir_option, resolved_data_dir
from vestige.errors import InvalidInput

#: A server name every client accepts as a key and Claude Code as an argument.
#: Never a leading "-": `claude mcp add --help` would read it as an option.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: A snippet that holds the bearer token is written readable by its owner only.
SECRET_FILE_MODE: Final = 0o600
PLAIN_FILE_MODE: Final = 0o666  # before the umask, as any new file


def _server_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise click.BadParameter(
            f"{value!r}: use 1 to 64 letters, digits, '-' or '_', starting with a letter or "
            "digit (a key in every client's file)"
        )
    return value


@click.command()
@click.argument("client", type=click.Choice(client_config.CLIENTS), metavar="CLIENT")
@click.option(
    "--scope",
    type=click.Choice(client_config.SCOPES),
    default=None,
    help="Claude Code's scope (claude-code and http): user (every project of yours, the "
    "default), project (.mcp.json, shared through version control) or local (this project, "
    "you only).",
)
@click.option(
    "--attach",
    is_flag=True,
    help="Start the server with --attach: every window and client shares one server "
    "(stdio clients only).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help=f"HTTP port (http only; default {client_config.DEFAULT_PORT}).",
)
@click.option(
    "--name",
    default=client_config.DEFAULT_NAME,
    show_default=True,
    callback=_server_name,
    help="The server's name in the client.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the snippet to this new file instead of printing it (an existing file is "
    "never overwritten).",
)
@data_dir_option
def config(
    *,
    client: client_config.Client,
    scope: client_config.Scope | None,
    attach: bool,
    port: int | None,
    name: str,
    output: Path | None,
) -> None:
    """Print the configuration that connects an MCP client to vestige-mcp.

    \b
    CLIENT is one of:
      claude-code     the `claude mcp add` command to run in your shell; Claude Code
                      keeps it in ~/.claude.json (--scope user, local) or .mcp.json
                      (--scope project)
      claude-desktop  the "mcpServers" entry for claude_desktop_config.json, in
                      ~/Library/Application Support/Claude/ (macOS) or
                      %APPDATA%\\Claude\\ (Windows)
      cursor          the "mcpServers" entry for ~/.cursor/mcp.json (every project)
                      or .cursor/mcp.json (one project)
      vscode          the "servers" entry, with "type": "stdio", for .vscode/mcp.json
                      or your user mcp.json (MCP: Open User Configuration)
      http            how to start one `vestige-mcp --transport http` for every client,
                      and each client's entry with its URL and bearer token

    The server is named by the absolute path of the vestige-mcp installed with this
    vestige, and the data directory (--data-dir, else $VESTIGE_DATA_DIR, else the
    platform's) is made absolute: Claude Desktop starts servers from an unrelated folder,
    often without your PATH.  Nothing is changed in any client's files: the snippet is
    printed on stdout (or written to a new file with --output), and stderr says where it
    goes.  `http` creates the data directory and its token file if they are missing, so
    that the token it prints is the one the server will use.

    \b
    Example:
      vestige config claude-code --data-dir ~/.vestige
      vestige config vscode --attach -o .vscode/mcp.json
    """
    if client != "http" and port is not None:
        raise click.UsageError("--port is for the http form only")
    if client == "http" and attach:
        raise click.UsageError(
            "--attach relays a stdio client: an HTTP server already serves many clients; "
            "drop --attach",
        )
    if client == "http" and scope == "project":
        raise click.UsageError(
            "--scope project would write the bearer token into .mcp.json, which is shared "
            "through version control: use --scope user or local for the http form",
        )
    if scope is not None and client not in ("claude-code", "http"):
        raise click.UsageError(
            f"--scope is Claude Code's; for {client}, the file you put the entry in decides "
            "(see `vestige config --help`)",
        )
    snippet = client_config.snippet(
        client,
        resolved_data_dir(),
        attach=attach,
        scope=scope or client_config.DEFAULT_SCOPE,
        name=name,
        port=client_config.DEFAULT_PORT if port is None else port,
    )
    if output is None:
        click.echo(snippet.text, nl=False)
    else:
        _write_new(output, snippet)
        click.echo(f"Wrote {output}.", err=True)
    click.echo(snippet.where, err=True)


def _write_new(path: Path, snippet: client_config.Snippet) -> None:
    """Create ``path`` with the snippet; an existing file may be a client's own, so never
    replace it (O_EXCL, also against a file that appears meanwhile)."""
    mode = SECRET_FILE_MODE if snippet.secret else PLAIN_FILE_MODE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise InvalidInput(
            f"the output file {path} already exists, and vestige config never overwrites a file",
            hint="Pick a new path, or print the snippet (leave out --output) and merge it "
            "into the existing file by hand: it may hold other servers.",
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(snippet.text)


COMMANDS = (config,)
