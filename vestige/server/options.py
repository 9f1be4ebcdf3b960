"""Command line and environment of ``vestige-mcp``: parsed before anything heavy is imported."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from vestige import __version__, config
from vestige.errors import ConfigError
from vestige.local_access import is_loopback

if TYPE_CHECKING:
    from vestige.config import DataDir

SHARED_WRITERS_ENV: Final = "VESTIGE_SHARED_WRITERS"
CONSOLIDATION_INTERVAL_ENV: Final = "VESTIGE_CONSOLIDATION_INTERVAL_HOURS"
LOG_LEVEL_ENV: Final = "VESTIGE_LOG_LEVEL"
ATTACH_ENV: Final = "VESTIGE_ATTACH"
#: A message longer than this is not read (stdio, attached sessions, the proxy): a million
#: characters of content, every one escaped as ``\\uXXXX``, is about 6 MiB.
MAX_MESSAGE_BYTES: Final = 32 * 1024 * 1024
#: The ``params._meta`` key of a ``tools/call`` that carries its request key: a write sent
#: again with the same key (a proxy's retry after its owner died) gets the first answer and
#: changes nothing.  Tool input schemas refuse unknown arguments, so it cannot be one.
REQUEST_KEY_META: Final = "vestige/request-key"
DEFAULT_CONSOLIDATION_INTERVAL_H: Final = 6.0
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 3928  # the Rust original's HTTP port
HTTP_PATH: Final = "/mcp"
HTTP_REQUEST_TIMEOUT_ENV: Final = "VESTIGE_HTTP_REQUEST_TIMEOUT_S"
#: Seconds a client has to send a whole request (head and body), counted from its connect
#: or from the first byte of each later request on the connection.
DEFAULT_HTTP_REQUEST_TIMEOUT_S: Final = 10.0
#: Seconds an idle keep-alive connection stays open after a response (uvicorn's setting).
HTTP_KEEP_ALIVE_TIMEOUT_S: Final = 5
#: Open HTTP connections at most.  Past it, a new connection closes the oldest one that has
#: no request in service; when every one is busy, the new one gets 503.
HTTP_MAX_CONNECTIONS: Final = 100
#: File descriptors kept back from RLIMIT_NOFILE for SQLite, locks and logs: the connection
#: cap shrinks to fit under the soft limit (256 by default on macOS).
HTTP_FD_RESERVE: Final = 64
#: Pending connections the kernel queues before the server accepts them.  asyncio also
#: accepts up to this many in one go before any is handed over (and could be closed), so
#: the connection cap leaves this many descriptors free as well.
HTTP_BACKLOG: Final = 32
#: Bytes of a request head (request line and headers) at most: h11's limit.
HTTP_MAX_HEAD_BYTES: Final = 16 * 1024
#: Seconds between two log lines about the same kind of refused or dropped connection.
HTTP_LOG_INTERVAL_S: Final = 10.0
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOG_LEVELS: Final[tuple[LogLevel, ...]] = ("DEBUG", "INFO", "WARNING", "ERROR")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"", "0", "false", "no", "off"})

DESCRIPTION: Final = """\
Serve a Vestige memory over MCP (stdio by default, or streamable HTTP).

One vestige-mcp owns a data directory: a second one on the same directory is refused with
exit code 3 and a message naming the owner.  With --attach, every window shares one owner
through a small proxy, and a dead owner is replaced without any window noticing.  Servers
started with --shared-writers share a directory with each other (never with an owner)."""

EPILOG: Final = f"""\
environment:
  {config.DATA_DIR_ENV}   data directory when --data-dir is not given
  {SHARED_WRITERS_ENV}   1/true: same as --shared-writers
  {ATTACH_ENV}   1/true: same as --attach
  {CONSOLIDATION_INTERVAL_ENV}   hours between decay passes (default 6)
  {config.DURABILITY_ENV}   balanced (default) or hardened
  VESTIGE_AUTH_TOKEN   bearer token for --transport http, 32+ characters (else
                       <data-dir>/auth_token, created with a random token)
  {HTTP_REQUEST_TIMEOUT_ENV}   seconds to send a whole HTTP request (default 10)
  {LOG_LEVEL_ENV}   DEBUG, INFO (default), WARNING or ERROR; logs go to stderr

exit codes:
  0 clean shutdown   1 internal error   2 bad command line   3 data directory owned by
  another process   4 unusable configuration, data directory or port   5 database error"""


@dataclass(frozen=True, slots=True)
class Options:
    data_dir: DataDir
    transport: str  # "stdio" | "http"
    host: str
    port: int
    shared_writers: bool
    consolidation_interval_s: float
    log_level: LogLevel
    #: --allow-remote-host: listen on a non-loopback address (HTTP).
    allow_remote_host: bool
    http_request_timeout_s: float
    #: The process that started us, read first thing: the stdio watchdog exits when it dies.
    parent_pid: int
    #: --attach: relay this client to the directory's owner, starting one if there is none.
    attach: bool = False
    #: The detached owner that --attach proxies start (a hidden flag): serves attached
    #: sessions only, outlives the proxy that started it, ends after the last one leaves.
    attach_owner: bool = False

    @property
    def endpoint(self) -> str | None:
        if self.transport != "http":
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{HTTP_PATH}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vestige-mcp",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # "--data" must not silently mean --data-dir
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"directory holding vestige.db (default: ${config.DATA_DIR_ENV}, else the "
        "platform's data directory)",
    )
    parser.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (one client, launched by it) or http (streamable HTTP, many clients)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"HTTP address to listen on (default {DEFAULT_HOST}); a non-loopback address "
        "is refused unless --allow-remote-host is given",
    )
    parser.add_argument(
        "--allow-remote-host",
        action="store_true",
        help="allow a --host other than loopback; the bearer token then crosses the network "
        "in cleartext, so put a TLS proxy in front",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--shared-writers",
        action="store_true",
        default=None,
        help="share the data directory with other servers started with this flag "
        "(supported, opt-in: the store's write gate and retries keep concurrent writes "
        "safe; --attach, one server shared by every window, is the simpler choice)",
    )
    parser.add_argument(
        "--attach",
        action="store_true",
        default=None,
        help="share this data directory with every other window: relay this client to the "
        "server that owns the directory, starting one in the background if there is none; "
        "when that server dies, another takes over and the session goes on (stdio only)",
    )
    parser.add_argument("--attach-owner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-V", "--version", action="version", version=f"vestige-mcp {__version__}")
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return port


def parse(argv: list[str] | None, environ: dict[str, str] | None = None) -> Options:
    """Parse flags (argparse exits 2 on a bad one, 0 for --help/--version) and environment.

    :raises ConfigError: an environment variable or the data directory value is unusable.
    """
    parent_pid = os.getppid()
    env = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)
    shared = args.shared_writers or _flag(env, SHARED_WRITERS_ENV)
    attach = bool(args.attach or args.attach_owner or _flag(env, ATTACH_ENV))
    if attach and shared:
        raise ConfigError(
            "--attach and --shared-writers are two different ways to share a directory",
            hint="Use --attach alone (one server, every window attached to it), or "
            "--shared-writers alone (each window its own server); see docs/SERVER.md.",
        )
    if attach and args.transport != "stdio":
        raise ConfigError(
            "--attach relays a stdio client: it cannot be used with --transport http",
            hint="Drop --attach: an HTTP server already serves many clients (and accepts "
            "attached windows itself).",
        )
    if args.transport == "http" and not args.allow_remote_host and not is_loopback(args.host):
        raise ConfigError(
            f"--host {args.host} is not a loopback address: the bearer token would cross the "
            "network in cleartext",
            hint=f"Keep the default --host {DEFAULT_HOST}, or add --allow-remote-host if "
            "other machines must reach this server (put a TLS proxy in front).",
        )
    return Options(
        data_dir=config.resolve_data_dir(args.data_dir, environ=env),
        transport=args.transport,
        host=args.host,
        port=args.port,
        shared_writers=shared,
        consolidation_interval_s=_hours(env) * 3600.0,
        log_level=_log_level(env),
        allow_remote_host=args.allow_remote_host,
        http_request_timeout_s=_seconds(
            env, HTTP_REQUEST_TIMEOUT_ENV, DEFAULT_HTTP_REQUEST_TIMEOUT_S
        ),
        parent_pid=parent_pid,
        attach=attach and not args.attach_owner,
        attach_owner=bool(args.attach_owner),
    )


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(
            f"{name}={raw!r} is not a positive number of seconds",
            hint=f"Use e.g. {name}={default:g}, or unset it for the default.",
        )
    return seconds


def _flag(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value", hint=f"Set {name}=1 or unset it.")


def _hours(env: dict[str, str]) -> float:
    raw = env.get(CONSOLIDATION_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_CONSOLIDATION_INTERVAL_H
    try:
        hours = float(raw)
    except ValueError:
        hours = float("nan")
    if not hours > 0 or hours == float("inf"):
        raise ConfigError(
            f"{CONSOLIDATION_INTERVAL_ENV}={raw!r} is not a positive number of hours",
            hint=f"Use e.g. {CONSOLIDATION_INTERVAL_ENV}=6, or unset it for the default.",
        )
    return hours


def _log_level(env: dict[str, str]) -> LogLevel:
    raw = env.get(LOG_LEVEL_ENV, "").strip().upper() or "INFO"
    for level in LOG_LEVELS:
        if raw == level:
            return level
    raise ConfigError(
        f"{LOG_LEVEL_ENV}={raw!r} is not a log level",
        hint=f"Use one of {', '.join(LOG_LEVELS)}.",
    )
