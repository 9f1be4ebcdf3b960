"""What an MCP client needs to start or reach ``vestige-mcp``: a snippet in the client's own format.

`vestige config CLIENT` prints these; nothing here edits a client's files, which belong to
that program (a wrong merge would lose the user's other servers).

Every stdio snippet names the server by the **absolute** path of the ``vestige-mcp``
installed beside this interpreter and gives an **absolute** data directory: Claude Desktop
starts servers from an unrelated working directory, often without the user's ``PATH``, so a
bare ``vestige-mcp`` or a ``./.vestige`` either fails to start or keeps its memory somewhere
unexpected.  The formats differ in small ways that matter:

- Claude Code: the ``claude mcp add`` command; every option comes before the server's name,
  and the server's own command line after ``--``;
- Claude Desktop and Cursor: an ``mcpServers`` object of ``{"command", "args"}``;
- VS Code: a ``servers`` object whose entries need ``"type": "stdio"`` (or ``"http"``);
- HTTP: one ``vestige-mcp --transport http`` that every client reaches at its URL with the
  bearer token of :mod:`vestige.local_access`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from vestige.config import check_data_dir, prepare_data_dir
from vestige.local_access import AUTH_TOKEN_ENV, TOKEN_FILE, load_token
from vestige.server.options import DEFAULT_HOST, DEFAULT_PORT, HTTP_PATH

if TYPE_CHECKING:
    from vestige.config import DataDir

__all__ = [
    "CLIENTS",
    "DEFAULT_NAME",
    "DEFAULT_PORT",
    "DEFAULT_SCOPE",
    "SCOPES",
    "Client",
    "Scope",
    "Snippet",
    "server_command",
    "snippet",
]

Client = Literal["claude-code", "claude-desktop", "cursor", "vscode", "http"]
CLIENTS: Final[tuple[Client, ...]] = ("claude-code", "claude-desktop", "cursor", "vscode", "http")
Scope = Literal["user", "project", "local"]
#: Claude Code's scopes: user (every project of yours), project (.mcp.json at the project
#: root, shared through version control), local (this project, only you; its default).
SCOPES: Final[tuple[Scope, ...]] = ("user", "project", "local")
DEFAULT_SCOPE: Final[Scope] = "user"
DEFAULT_NAME: Final = "vestige"
#: How many spaces JSON snippets are indented by (what the clients' own examples use).
JSON_INDENT: Final = 2

_SERVER_SCRIPT: Final = "vestige-mcp.exe" if os.name == "nt" else "vestige-mcp"


@dataclass(frozen=True, slots=True)
class Snippet:
    """A configuration to paste, and where it goes.

    ``text`` is exactly what goes into the file or the shell (it ends with a newline);
    ``where`` is for the person: which file or shell takes it, and what to do next.
    ``secret`` says that ``text`` holds the HTTP bearer token.
    """

    client: Client
    text: str
    where: str
    secret: bool = False


def server_command() -> list[str]:
    """The absolute command that starts this installation's ``vestige-mcp``.

    The console script beside this interpreter (a virtualenv's, pipx's or uv's ``bin``), then
    the user scheme's (``pip install --user``), and only then ``python -m vestige.server``:
    the same program, by this interpreter's absolute path.  ``PATH`` is never consulted: it
    may name another installation, and the client that runs the command may not have it.
    """
    schemes = [sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")]
    for scheme in dict.fromkeys(schemes):
        script = Path(sysconfig.get_path("scripts", scheme)) / _SERVER_SCRIPT
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "vestige.server"]


def snippet(
    client: Client,
    data_dir: DataDir,
    *,
    attach: bool = False,
    scope: Scope = DEFAULT_SCOPE,
    name: str = DEFAULT_NAME,
    port: int = DEFAULT_PORT,
) -> Snippet:
    """The configuration that connects ``client`` to a ``vestige-mcp`` on ``data_dir``.

    :param attach: add ``--attach`` (every window shares one server; stdio only).
    :param scope: Claude Code's scope, for ``claude-code`` and the ``claude`` line of ``http``.
    :param port: the HTTP port (``http`` only).
    :raises ConfigError: the data directory cannot be one (a file, a path too long); for
        ``http``, it or its token cannot be made ready (the snippet carries the token the
        server will use, so it is created if missing).
    """
    if attach and client == "http":
        raise ValueError("--attach relays a stdio client; an HTTP server serves many itself")
    if client == "http":
        return _http(data_dir, scope=scope, name=name, port=port)
    check_data_dir(data_dir)  # a snippet that names a file would only fail in the client
    command = server_command()
    memory = str(data_dir.path.absolute())  # the default is already; say so, whatever HOME is
    args = [*command[1:], *(["--attach"] if attach else []), "--data-dir", memory]
    if client == "claude-code":
        line = _shell(["claude", "mcp", "add", "--scope", scope, name, "--", command[0], *args])
        return Snippet(client, line + "\n", _CLAUDE_CODE_WHERE[scope])
    entry: dict[str, Any] = {"command": command[0], "args": args}
    if client == "vscode":
        vscode = {"servers": {name: {"type": "stdio", **entry}}}
        return Snippet(client, _json(vscode), _VSCODE.format(name=name))
    where = _CLAUDE_DESKTOP if client == "claude-desktop" else _CURSOR
    return Snippet(client, _json({"mcpServers": {name: entry}}), where.format(name=name))


def _http(data_dir: DataDir, *, scope: Scope, name: str, port: int) -> Snippet:
    ready = prepare_data_dir(data_dir)
    token = load_token(ready.path)
    url = f"http://{DEFAULT_HOST}:{port}{HTTP_PATH}"
    header = f"Authorization: Bearer {token}"
    start = [*server_command(), "--transport", "http", "--data-dir", str(ready.path.absolute())]
    if port != DEFAULT_PORT:
        start += ["--port", str(port)]
    claude = ["claude", "mcp", "add", "--transport", "http", "--scope", scope, name, url]
    headers = {"Authorization": f"Bearer {token}"}
    cursor = {"mcpServers": {name: {"url": url, "headers": headers}}}
    vscode = {"servers": {name: {"type": "http", "url": url, "headers": headers}}}
    source = (
        f"${AUTH_TOKEN_ENV}, so start the server where it is set"
        if os.environ.get(AUTH_TOKEN_ENV, "").strip()
        else str(ready.path / TOKEN_FILE)
    )
    text = "\n".join(
        [
            "# 1. Start one server for every client (it runs until Ctrl-C or SIGTERM):",
            _shell(start),
            "",
            f'# 2. Point each client at {url} with the header "{header}"',
            f"#    (the token comes from {source}; keep it secret).",
            "# Claude Code:",
            _shell([*claude, "--header", header]),
            "# Cursor: ~/.cursor/mcp.json (not a project's .cursor/mcp.json, often committed):",
            "#   " + json.dumps(cursor),
            "# VS Code: your user mcp.json (MCP: Open User Configuration), not .vscode/mcp.json:",
            "#   " + json.dumps(vscode),
            "",
        ]
    )
    where = (
        "Run step 1 in a terminal (or a login item) and keep it running; then run or merge "
        "the lines of step 2 for your clients. This text holds the bearer token."
    )
    return Snippet("http", text, where, secret=True)


def _shell(words: list[str]) -> str:
    """One command line a person can paste into their shell (cmd.exe's quoting on Windows)."""
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=JSON_INDENT) + "\n"


_CLAUDE_CODE_WHERE: Final[dict[Scope, str]] = {
    "user": "Run this in a shell: Claude Code then starts the server in every project of "
    "yours (`claude mcp list` shows it).",
    "project": "Run this at the project's root: Claude Code writes it into .mcp.json, shared "
    "through version control; the absolute paths in it are this machine's.",
    "local": "Run this in the project's folder: Claude Code starts the server in this project, "
    "for you only.",
}
_CLAUDE_DESKTOP: Final = (
    'Merge the "{name}" entry into the "mcpServers" of claude_desktop_config.json (Settings '
    "> Developer > Edit Config opens it: ~/Library/Application Support/Claude/ on macOS, "
    "%APPDATA%\\Claude\\ on Windows), then restart Claude Desktop."
)
_CURSOR: Final = (
    'Merge the "{name}" entry into the "mcpServers" of ~/.cursor/mcp.json (every project) or '
    "of .cursor/mcp.json in a project (that project only)."
)
_VSCODE: Final = (
    'Merge the "{name}" entry into the "servers" of .vscode/mcp.json in a workspace, or of '
    "your user mcp.json (command palette: MCP: Open User Configuration). VS Code's file uses "
    '"servers" and "type", not "mcpServers".'
)
