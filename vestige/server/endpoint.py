"""Where an owner accepts attached sessions, and the handshake that opens one.

Every exclusive owner of a data directory (a plain ``vestige-mcp`` or the detached owner that
``--attach`` proxies start) listens on a local endpoint and publishes it in
``<data-dir>/vestige.attach.json``:

- a Unix socket ``<data-dir>/vestige.attach.sock``, mode 0600 inside the 0700 data directory,
  so only its user (and root) can connect;
- or loopback TCP on a port the kernel picks, where a Unix socket cannot be used: the socket
  path is too long for ``sun_path`` (108 bytes on Linux, 104 on macOS), or Windows (written,
  untested here).

Either way a proxy must present the random token from the endpoint file, which is 0600 too:
reading it is the proof of being the same user.  The file is written whole (a temporary file,
fsync, rename), so a reader never sees half of one, and it is removed only by the owner it
names.  A stale file (its owner was killed) is harmless: its socket refuses connections, and
the next owner replaces it.

The handshake proves, both ways, that each side knows the token, without ever sending it:
a process that only pretends to be the owner (another user who took the loopback port of
an owner that died) learns nothing it could use and cannot pass as the owner::

    proxy: {"vestige_attach": 1, "pid": 4242, "version": "0.3.0", "nonce": N1}
    owner: {"vestige_attach": 1, "ok": true, "pid": 4100, "version": "0.3.0", "nonce": N2,
            "proof": HMAC(token, "owner:" + N1)}
       or: {"vestige_attach": 1, "ok": false, "error": "...", "hint": "...",
            "proof": HMAC(token, "owner:" + N1)}
    proxy: {"proof": HMAC(token, "proxy:" + N2)}

The proxy checks the owner's proof before it believes anything the owner says (a refusal
included) or sends anything of its client's; the owner checks the proxy's before it serves
a session.  A proof that fails on the proxy's side is a
file that named an earlier owner (or an impostor): the proxy tries again with the file as it
is then.  ``vestige_attach`` is the attach protocol.  Both sides refuse another number with
a message naming both versions, never a garbled session; package versions may differ as
long as the protocol is the same (the relayed messages are plain MCP).

This module is light on purpose: the proxy imports it, and a proxy must start fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from vestige.config import FILE_MODE

if TYPE_CHECKING:
    from pathlib import Path

ENDPOINT_FILE: Final = "vestige.attach.json"
SOCKET_FILE: Final = "vestige.attach.sock"
#: The detached owner's log (it has no client to show its stderr to).
OWNER_LOG_FILE: Final = "vestige-mcp.attach.log"
#: The attach protocol: the handshake and the framing of the relayed messages.
PROTOCOL: Final = 1
TOKEN_BYTES: Final = 32
NONCE_BYTES: Final = 16
PROOF_CHARS: Final = 64  # hex of an HMAC-SHA256
#: Longest Unix socket path used; longer ones fall back to loopback TCP.  ``sun_path`` holds
#: 108 bytes on Linux and 104 on macOS, both with a terminating NUL.
MAX_SOCKET_PATH_BYTES: Final = 100
_LINUX: Final = sys.platform.startswith("linux")
#: Unix sockets where the platform has them for local use.
UNIX_SOCKETS: Final = sys.platform != "win32"
#: Seconds a connecting proxy has to send its hello, and to get the answer.
HELLO_TIMEOUT_S: Final = 2.0
#: A hello longer than this is refused unread.
MAX_HELLO_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One owner's published endpoint."""

    pid: int
    version: str
    protocol: int
    token: str
    #: The Unix socket's path, or None for loopback TCP.
    unix: str | None
    #: The loopback TCP port, or None for a Unix socket.
    port: int | None

    def describe(self) -> str:
        return self.unix if self.unix is not None else f"127.0.0.1:{self.port}"


def socket_path(data_dir: Path) -> Path | None:
    """The Unix socket to listen on, or None where TCP must be used instead."""
    path = data_dir / SOCKET_FILE
    if not UNIX_SOCKETS or len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        return None
    return path


def publish(data_dir: Path, endpoint: Endpoint) -> None:
    """Write the endpoint file whole, 0600: a temporary file, fsync, then rename."""
    body = json.dumps(
        {
            "pid": endpoint.pid,
            "version": endpoint.version,
            "protocol": endpoint.protocol,
            "token": endpoint.token,
            "unix": endpoint.unix,
            "port": endpoint.port,
        }
    ).encode()
    tmp = data_dir / f".{ENDPOINT_FILE}.{endpoint.pid}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, FILE_MODE)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, data_dir / ENDPOINT_FILE)


def read(data_dir: Path) -> Endpoint | None:
    """The published endpoint, or None when there is none or it cannot be read whole."""
    try:
        with open(data_dir / ENDPOINT_FILE, "rb") as f:
            raw = json.loads(f.read(MAX_HELLO_BYTES))
        endpoint = Endpoint(
            pid=_int(raw["pid"]),
            version=str(raw["version"]),
            protocol=_int(raw["protocol"]),
            token=str(raw["token"]),
            unix=None if raw["unix"] is None else str(raw["unix"]),
            port=None if raw["port"] is None else _int(raw["port"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (endpoint.unix is None) == (endpoint.port is None):
        return None
    return endpoint


def withdraw(data_dir: Path, pid: int) -> None:
    """Remove the endpoint file and socket, if the file still names ``pid``."""
    current = read(data_dir)
    if current is None or current.pid != pid:
        return
    with contextlib.suppress(OSError):
        os.unlink(data_dir / ENDPOINT_FILE)
    if current.unix is not None:
        with contextlib.suppress(OSError):
            os.unlink(current.unix)


def nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def proof(token: str, role: str, their_nonce: str) -> str:
    """What ``role`` ("owner" or "proxy") answers to the other side's nonce."""
    return hmac.new(token.encode(), f"{role}:{their_nonce}".encode(), hashlib.sha256).hexdigest()


def proves(token: str, role: str, our_nonce: str, claimed: object) -> bool:
    """Whether ``claimed`` is ``role``'s proof for our nonce (compared in constant time)."""
    return _hex(claimed, PROOF_CHARS) and hmac.compare_digest(
        str(claimed).encode(), proof(token, role, our_nonce).encode()
    )


def valid_nonce(value: object) -> bool:
    """A nonce as this protocol makes them: hex, of the right length (so it can be signed)."""
    return _hex(value, NONCE_BYTES * 2)


def _hex(value: object, length: int) -> bool:
    return (
        isinstance(value, str)
        and len(value) == length
        and all(c in "0123456789abcdef" for c in value)
    )


def hello(pid: int, version: str, proxy_nonce: str) -> bytes:
    """The proxy's first line."""
    return _line({"vestige_attach": PROTOCOL, "pid": pid, "version": version, "nonce": proxy_nonce})


def welcome(pid: int, version: str, owner_nonce: str, owner_proof: str) -> bytes:
    """The owner's answer to a hello it accepts (so far: the proxy must still prove itself)."""
    return _line(
        {
            "vestige_attach": PROTOCOL,
            "ok": True,
            "pid": pid,
            "version": version,
            "nonce": owner_nonce,
            "proof": owner_proof,
        }
    )


def answer(proxy_proof: str) -> bytes:
    """The proxy's last handshake line."""
    return _line({"proof": proxy_proof})


def refusal(error: str, hint: str, owner_proof: str | None = None) -> bytes:
    """The owner's answer to a hello it refuses; the connection is then closed.

    A proxy believes a refusal only with the owner's proof for its nonce: without one (the
    owner could not read a nonce, or whoever answers is not the owner) it tries again, so a
    process that merely listens where an owner was can neither end a window's session nor
    put words in its error messages.
    """
    return _line(
        {
            "vestige_attach": PROTOCOL,
            "ok": False,
            "error": error,
            "hint": hint,
            "proof": owner_proof,
        }
    )


def parse(line: bytes) -> dict[str, Any] | None:
    """A handshake line as a dict, or None if it is not one."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    version = message.get("vestige_attach") if isinstance(message, dict) else None
    if not isinstance(message, dict) or isinstance(version, bool) or not isinstance(version, int):
        return None
    return message


def mismatch(our_version: str, their_version: object, their_protocol: object, who: str) -> str:
    """The message for two versions that cannot talk: both named, and what to do."""
    return (
        f"{who} runs vestige {their_version} (attach protocol {their_protocol}) and this is "
        f"vestige {our_version} (attach protocol {PROTOCOL}): they cannot share a session"
    )


def peer(sock: socket.socket | None) -> tuple[int | None, int | None]:
    """The pid and uid of the process at the other end of a Unix socket, from the kernel
    (Linux); ``(None, None)`` where the kernel cannot say (TCP, other platforms)."""
    if sock is None or not _LINUX or sock.family != getattr(socket, "AF_UNIX", None):
        return None, None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None, None
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value
