"""What ``vestige-mcp`` says to a person who started it on a terminal: on stderr, never stdout.

A newcomer who runs ``vestige-mcp`` by hand saw one log line and then silence: nothing said
that it is an MCP server waiting for a client's JSON-RPC on stdin, how to connect a client,
how to stop it, or what to try instead; and a line typed at it got a JSON-RPC parse error
and a WARNING log line, neither of which says what to do.  So when stdin is a terminal,
the server prints one short block (:func:`banner`), and a typed line that is not a JSON-RPC
message gets :data:`NOT_JSON_RPC_HINT` as well.  Its JSON-RPC answer on stdout is unchanged.

On a pipe, which is how every client starts a server, nothing here runs: stdout carries
only JSON-RPC, as MCP requires, and stderr only the log.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from typing import TYPE_CHECKING, Final

from vestige.config import DataDirSource
from vestige.server.options import DEFAULT_PORT

if TYPE_CHECKING:
    from vestige.server.options import Options

#: One line, after the parse error a typed line gets on stdout.
NOT_JSON_RPC_HINT: Final = (
    "vestige-mcp: that line is not a JSON-RPC message (answered with a JSON-RPC error): this "
    "server talks to an MCP client, not to a person. Connect one (`vestige config "
    "claude-code`), or press Ctrl-D to stop."
)


def stdin_is_terminal() -> bool:
    """Whether fd 0 is a terminal; asked before the transport points fd 0 at the null device."""
    try:
        return os.isatty(0)
    except OSError:
        return False


def banner(opts: Options) -> str:
    """The block shown on a terminal: what this is, how to connect, how to stop, what to try."""
    where = opts.data_dir.path
    # The commands a person copies must reach the same memory: name a --data-dir the
    # command line chose (VESTIGE_DATA_DIR and the default apply in their shell as well).
    flag = (
        f" --data-dir {shlex.quote(str(where))}"
        if opts.data_dir.source is DataDirSource.ARGUMENT
        else ""
    )
    if opts.transport == "http":
        what = (
            f"vestige-mcp: an MCP server for the memory in {where}, serving streamable HTTP "
            f"at {opts.endpoint}\n"
            "  (clients send JSON-RPC there with its bearer token; stdin is not read)."
        )
        port = f" --port {opts.port}" if opts.port != DEFAULT_PORT else ""
        connect = f"vestige config http{flag}{port}   (the URL, the token, each client's entry)"
        stop = "Ctrl-C"
    else:
        relay = " through the server that owns it (--attach)" if opts.attach else ""
        what = (
            f"vestige-mcp: an MCP server for the memory in {where}{relay}, reading JSON-RPC "
            "on stdin.\n"
            "  An MCP client such as Claude Code starts it by itself: you need not run it here."
        )
        connect = f"vestige config claude-code{flag}   (or claude-desktop, cursor, vscode, http)"
        stop = "Ctrl-C, or Ctrl-D (end of input)"
    return (
        f"{what}\n"
        f"  Connect a client:  {connect}\n"
        f"  Stop it:           {stop}\n"
        f"  Try instead:       vestige doctor{flag}\n"
        f'                     vestige ingest{flag} "a fact to keep"\n'
        f'                     vestige search{flag} "fact"\n'
    )


def show(text: str) -> None:
    """Write ``text`` to stderr now; a closed or broken stderr is no reason to fail."""
    if sys.stderr is None:  # started with fd 2 closed: nowhere to say it
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        sys.stderr.flush()
