"""Every HTTP request is judged on its head before a byte of its body is read.

The SDK reads the whole body before it checks the token, Host or Origin.  A local process
with no token could therefore hold a connection "in service" for as long as it dribbled a
body (a byte every half second), and 130 such connections left a real client 117 times out
of 148 with 503 (the connection cap cannot close a connection whose request is in service).
So here, on the head alone:

- a ``Content-Length`` over :data:`MAX_BODY_BYTES` gets 413 (a body without a length is
  cut off there too);
- a ``Host`` that is not loopback or the --host given gets 421, an ``Origin`` that is not
  ``http(s)://`` one of those gets 403 (DNS rebinding; the rules are
  :class:`vestige.local_access.HostRules`, shared with the dashboard);
- a missing or wrong bearer token gets 401 (compared in constant time).

Each refusal closes the connection.  The connection guard asks :meth:`RequestGate.admits`
as soon as a head is in: until it passes, its connection is one the cap may close.

Then the body of a ``POST`` is read (up to the limit) and given to
:func:`vestige.server.framing.frame`, the rules stdio uses.  A message it refuses (a lone
surrogate, an id that is null, a bool, a float or an object, a batch, text that is not
JSON) gets the same JSON-RPC error as over stdio, without the SDK seeing it: the SDK would
answer 202 to a request whose id it cannot use (and never run it), a pydantic dump to a
batch, or a 500 to an id it cannot write back.  Everything else goes to the SDK unchanged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from vestige.http_connections import plain_response
from vestige.local_access import HostRules
from vestige.server import framing
from vestige.server.options import HTTP_PATH, MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from vestige.server.http import StaticToken

log = logging.getLogger("vestige.server.http")

#: A request body longer than this is refused with 413 before it is read: the largest
#: message stdio takes (a megabyte of content, every character escaped, fits).
MAX_BODY_BYTES: Final = MAX_MESSAGE_BYTES


_TOO_LARGE: Final = plain_response(
    413,
    f"the request body is larger than {MAX_BODY_BYTES:,} bytes: send smaller messages\n",
)
_BAD_HOST: Final = plain_response(
    421,
    "the Host header does not name this server (loopback or its --host)\n",
)
_BAD_ORIGIN: Final = plain_response(
    403,
    "the Origin header does not name this server (loopback or its --host)\n",
)
_NO_TOKEN: Final = plain_response(
    401,
    "send Authorization: Bearer <token>; the token is VESTIGE_AUTH_TOKEN, else the "
    "contents of <data-dir>/auth_token\n",
    (b"www-authenticate", b'Bearer realm="vestige"'),
)


class RequestGate:
    """ASGI middleware in front of the SDK's app: head checks, then the framing rules."""

    def __init__(self, app: ASGIApp, token: StaticToken, hosts: Iterable[str]) -> None:
        self._app = app
        self._token = token
        self._rules = HostRules(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        refusal = self.judge_head(scope["headers"])
        if refusal is not None:
            for message in refusal:
                await send(message)
            return
        if scope["method"] != "POST" or scope["path"] != HTTP_PATH:
            await self._app(scope, receive, send)
            return
        received, body = await _read_body(receive)
        if body is None:
            for message in _TOO_LARGE:
                await send(message)
            return
        framed = framing.frame(body)
        if isinstance(framed, framing.Refusal):
            log.warning("refused %s from an HTTP client: %s", framed.what, framed.message)
            await _send_refusal(send, framed)
            return
        replay = iter(received)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self._app(scope, replayed, send)

    def admits(self, scope: Mapping[str, Any]) -> bool:
        return self.judge_head(scope["headers"]) is None

    def judge_head(self, headers: Iterable[tuple[bytes, bytes]]) -> list[Message] | None:
        """The refusal a request gets on its head alone, or None if it may go on."""
        headers = list(headers)
        found: dict[bytes, bytes] = {}
        for name, value in headers:
            found.setdefault(name.lower(), value)
        length = found.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return _TOO_LARGE
        match self._rules.refusal(headers):
            case "host":
                return _BAD_HOST
            case "origin":
                return _BAD_ORIGIN
        scheme, _, token = found.get(b"authorization", b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not self._token.matches(token.strip()):
            return _NO_TOKEN
        return None


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages of a request body, and the body (None if it passed MAX_BODY_BYTES)."""
    received: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        received.append(message)
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            return received, None
        if message["type"] != "http.request" or not message.get("more_body"):
            return received, bytes(body)


async def _send_refusal(send: Send, refusal: framing.Refusal) -> None:
    """The refusal as the JSON-RPC answer to its request (200), or 400 when it has no id.

    A notification or a response gets the error too, with ``id: null``: HTTP must answer
    something, and 400 with the reason beats 202 for a message that was dropped.
    """
    message: Any = refusal.reply().message
    if not refusal.answer:
        message = message.model_copy(update={"id": None})
    body = framing.dump(message)
    status = 200 if refusal.answer and refusal.request_id is not None else 400
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
