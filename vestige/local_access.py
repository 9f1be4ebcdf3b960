"""Who may talk to a Vestige web face on this machine: the token, and the Host and Origin rules.

Two faces listen on loopback: ``vestige-mcp --transport http`` and ``vestige dashboard``.
Both must refuse the same strangers for the same reasons, so the rules live here, with
nothing of the MCP SDK or of any web framework:

- the **bearer token** is ``VESTIGE_AUTH_TOKEN`` if set, else the contents of
  ``<data-dir>/auth_token``, created (0600, 32 random bytes) on first use.  A token under
  :data:`MIN_TOKEN_CHARS` is refused at start (a cloned repository or a dotfile can ship a
  known short one), and so is an empty file, rather than a face that refuses everyone
  without saying why.  Tokens are compared in constant time;
- the **Host** header must name a loopback address or the host the face was told to listen
  on, and an **Origin** header, when sent, must be ``http(s)://`` one of those, so that a
  web page cannot reach a local face through DNS rebinding.  Names are compared whole, case
  aside: ``localhost:3928.evil.com`` and ``127.0.0.1:3928@evil.com`` are not loopback.  A
  wildcard bind (``0.0.0.0``) is never a name anyone reaches a face by; it stands for this
  machine's own addresses and name.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import secrets
import socket
from typing import TYPE_CHECKING, Final

from vestige.config import FILE_MODE, secure_file
from vestige.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

log = logging.getLogger("vestige.local_access")

AUTH_TOKEN_ENV: Final = "VESTIGE_AUTH_TOKEN"  # noqa: S105 - a variable name, not a secret
TOKEN_FILE: Final = "auth_token"  # noqa: S105 - a file name
MIN_TOKEN_CHARS: Final = 32
_LOOPBACK: Final = ("127.0.0.1", "localhost", "[::1]")
#: A Host header: a name or an IPv4 address, or an IPv6 address in brackets, and a port.
_AUTHORITY: Final = r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::[0-9]{1,5})?"
_HOST: Final = re.compile(_AUTHORITY)
_ORIGIN: Final = re.compile(r"https?://" + _AUTHORITY)


def load_token(data_dir: Path, environ: dict[str, str] | None = None) -> str:
    """The bearer token; ConfigError if it is empty or shorter than MIN_TOKEN_CHARS."""
    env = os.environ if environ is None else environ
    token = env.get(AUTH_TOKEN_ENV, "").strip()
    if token:
        return _long_enough(token, AUTH_TOKEN_ENV, f"unset {AUTH_TOKEN_ENV} to use {TOKEN_FILE}")
    path = data_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(
            f"cannot create the HTTP bearer token {path}: {exc.strerror or exc}",
            hint=f"Set {AUTH_TOKEN_ENV} to a random token (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'), or run once where the data directory is "
            "writable, which writes the file.",
        ) from exc
    else:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        log.info("created the HTTP bearer token in %s", path)
    secure_file(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the HTTP bearer token from {path}: {exc}",
            hint=f"Delete {path}: the next start writes a new random token.",
        ) from exc
    if not token:
        raise ConfigError(
            f"{path} is empty: every HTTP client would be refused",
            hint=f"Delete {path}: the next start writes a new random token.",
        )
    return _long_enough(token, str(path), f"delete {path} and a new random token is written")


def _long_enough(token: str, source: str, fix: str) -> str:
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the HTTP bearer token in {source} has {len(token)} characters; at least "
            f"{MIN_TOKEN_CHARS} are needed, since a short or shipped token is easy to guess",
            hint=f"Use a random one: {fix}, or set {AUTH_TOKEN_ENV} to the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'.",
        )
    return token


def token_matches(given: bytes, token: str) -> bool:
    """Whether ``given`` is the token, in time that does not depend on where they differ."""
    return hmac.compare_digest(given, token.encode())


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; any other name counts as remote."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_names(host: str) -> list[str]:
    """Every name the Host and Origin headers may give: loopback, and the host bound."""
    return list(dict.fromkeys((*_LOOPBACK, *allowed_hosts(host))))


def allowed_hosts(host: str) -> list[str]:
    """Host header values (without port) that name this face, besides loopback."""
    try:
        wildcard = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        return [_bracketed(host)]
    import psutil  # noqa: PLC0415 - only for a wildcard bind

    found = [socket.gethostname()]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.append(_bracketed(address.address.split("%")[0]))
    return found


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class HostRules:
    """The Host and Origin checks for a face known by ``hosts`` (see :func:`host_names`)."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._hosts = frozenset(h.lower() for h in hosts)

    def refusal(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """``"host"`` or ``"origin"`` if that header does not name us, else None.

        Every value counts: a request that repeats Host (loopback first, another name
        second) is refused, whichever one a proxy or framework would have believed.
        """
        hosts: list[bytes] = []
        origins: list[bytes] = []
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"host":
                hosts.append(value)
            elif lowered == b"origin":
                origins.append(value)
        if not hosts or not all(self.host_ok(h) for h in hosts):
            return "host"
        if not all(self.origin_ok(o) for o in origins):
            return "origin"
        return None

    def host_ok(self, value: bytes | None) -> bool:
        """A request must name us in its Host header (HTTP/1.1 requires one)."""
        return self._names_us(_HOST, value)

    def origin_ok(self, value: bytes | None) -> bool:
        """A request may omit Origin (not from a page); if it sends one, it must be us."""
        return value is None or self._names_us(_ORIGIN, value)

    def _names_us(self, form: re.Pattern[str], value: bytes | None) -> bool:
        if value is None:
            return False
        matched = form.fullmatch(value.decode("latin-1").strip().lower())
        return matched is not None and matched.group(1) in self._hosts
