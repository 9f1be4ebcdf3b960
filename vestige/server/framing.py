"""What a JSON-RPC message from a client must be before the SDK sees it, and the answer if not.

The SDK's JSON parser refuses a string holding an escaped lone UTF-16 surrogate
(``"hello \\ud83d"``: a JavaScript client that cut a string inside an emoji), and then either
says nothing (stdio, python-sdk #2751) or answers "unexpected end of hex escape at line 1
column 86" with no id (HTTP).  Python's own parser reads such a message, so the request can
be answered properly: with its id, naming the argument and what it held.  Both transports
use :func:`frame`; the rules live here once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import mcp_types as types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from vestige.server import _wire

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Characters of the offending string quoted in a refusal, up to and including the bad one.
EXCERPT_CHARS: Final = 24

#: Why a message was refused: not JSON at all, JSON but not a JSON-RPC message, or a
#: message whose text the SDK cannot take (a lone surrogate, bytes that are not UTF-8).
Reason = Literal["not-json", "not-jsonrpc", "bad-text"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A message the SDK must not see.  ``answer`` is False for notifications and responses."""

    reason: Reason
    code: int
    message: str
    request_id: types.RequestId | None
    answer: bool

    @property
    def what(self) -> str:
        if self.answer:
            return "a line" if self.request_id is None else f"request {self.request_id!r}"
        return "a notification or response (not answered)"

    def reply(self) -> SessionMessage:
        error = types.ErrorData(code=self.code, message=self.message)
        return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=self.request_id, error=error))


def dump(message: types.JSONRPCMessage) -> bytes:
    """A message as JSON in UTF-8, for either transport.

    A refused request's id can hold a lone surrogate (``"id": "\\ud83d"``), which UTF-8
    cannot carry, so pydantic cannot write the answer.  Such a message is written with every
    non-ASCII character as its ``\\u`` escape: valid JSON, and the id the client reads back
    is the very string it sent, so it can still match the answer to its request.
    """
    try:
        return message.model_dump_json(by_alias=True, exclude_unset=True).encode()
    except PydanticSerializationError:
        plain = message.model_dump(by_alias=True, exclude_unset=True)
        return json.dumps(plain, ensure_ascii=True, separators=(",", ":")).encode()


def frame(line: bytes) -> SessionMessage | Refusal | None:
    """One message (a line of stdin, an HTTP body) for the SDK, or its refusal (None: blank)."""
    line = line.strip()
    if not line:
        return None
    text, bad_byte = _decode(line)
    parsed = _parse(text)
    if isinstance(parsed, Refusal):
        return parsed
    kind, request_id = _kind(parsed)
    answer = kind == "request"
    if kind == "invalid" or not isinstance(parsed, dict):
        return Refusal(
            "not-jsonrpc",
            types.INVALID_REQUEST,
            "Invalid request: a message must hold one JSON-RPC 2.0 object with a method "
            "(request, notification) or a result or error (response), and an id that is "
            "a string or an integer",
            request_id,
            answer=True,
        )
    refused = _refused_content(parsed, bad_byte, request_id, answer)
    if refused is not None:
        return refused
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"][1:]) or "the message"
        return Refusal(
            "not-jsonrpc",
            types.INVALID_REQUEST,
            f"Invalid request: {loc}: {first['msg']}",
            request_id,
            answer,
        )


def _refused_content(
    parsed: dict[str, Any], bad_byte: int | None, request_id: types.RequestId | None, answer: bool
) -> Refusal | None:
    """Unusable text anywhere, or a tools/call the SDK would refuse without saying why."""
    problem = _unusable_text(parsed, bad_byte)
    if problem is not None:
        return Refusal("bad-text", *problem, request_id, answer)
    if answer and parsed.get("method") == "tools/call":
        bad_call = _bad_tool_call(parsed.get("params"))
        if bad_call is not None:
            return Refusal("not-jsonrpc", types.INVALID_PARAMS, bad_call, request_id, answer)
    return None


def _bad_tool_call(params: object) -> str | None:
    """What is wrong with a ``tools/call``'s params, said; the SDK says only "Invalid
    request parameters"."""
    if not isinstance(params, dict):
        return (
            f"Invalid params: tools/call params is {_json_kind(params)}: send an object "
            'such as {"name": "search", "arguments": {"query": "..."}}'
        )
    name = params.get("name")
    if not isinstance(name, str) or not name:
        said = "missing" if "name" not in params else f"{_json_kind(name)}, not a tool name"
        return (
            f"Invalid params: tools/call params.name is {said}: send the tool's name as a "
            "string (tools/list lists them)"
        )
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        return (
            f"Invalid params: tools/call {name}: params.arguments is {_json_kind(arguments)}: "
            "send an object of named arguments ({} for none)"
        )
    return None


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value else "a string"
    return "a list" if isinstance(value, list) else "an object"


def _unusable_text(parsed: dict[str, Any], bad_byte: int | None) -> tuple[int, str] | None:
    """Text the SDK's parser would refuse: bytes that are not UTF-8, a lone surrogate."""
    if bad_byte is not None:
        return (
            types.PARSE_ERROR,
            f"Parse error: byte {bad_byte} of the line is not UTF-8: send UTF-8 text",
        )
    surrogate = _first_lone_surrogate(parsed)
    return None if surrogate is None else (types.INVALID_PARAMS, surrogate)


def _parse(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Refusal("not-json", types.PARSE_ERROR, _wire.not_json(exc), None, answer=True)


def _decode(line: bytes) -> tuple[str, int | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return line.decode("utf-8", errors="replace"), exc.start


def _kind(parsed: object) -> tuple[str, types.RequestId | None]:
    """request, notification, response or invalid; and the id to answer with."""
    if not isinstance(parsed, dict):
        return "invalid", None
    raw_id = parsed.get("id")
    # JSON-RPC ids are strings or numbers (MCP: integers); anything else is answered as null.
    request_id = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    if "id" in parsed and request_id is None:
        return "invalid", None  # an id that is null, a bool, a float, an object...
    if "method" in parsed:
        return ("request" if "id" in parsed else "notification"), request_id
    if "id" in parsed and ("result" in parsed or "error" in parsed):
        return "response", request_id
    return "invalid", request_id


def _first_lone_surrogate(message: dict[str, Any]) -> str | None:
    """Name the first string holding an unpaired surrogate, and say what it held.

    ``json.loads`` joins an escaped pair into one character, so any surrogate left in a
    string stands alone.  Strings are checked with the C encoder, not character by character.
    """
    params = message.get("params")
    arguments = params.get("arguments") if isinstance(params, dict) else None
    if message.get("method") == "tools/call" and isinstance(arguments, dict):
        tool = params.get("name") if isinstance(params, dict) else None
        found = next(_bad_strings(arguments, ""), None)
        if found is not None:
            return f"tools/call {tool}: argument {_describe(*found)}"
    found = next(_bad_strings(message, ""), None)
    return None if found is None else _describe(*found)


def _bad_strings(value: object, path: str) -> Iterator[tuple[str, str, int]]:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            yield path or "the value", value, exc.start
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            yield from _bad_strings(key, f"a key in {path or 'the message'}")
            yield from _bad_strings(item, inner)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _bad_strings(item, f"{path}[{i}]")


def _describe(path: str, text: str, index: int) -> str:
    start = max(0, index + 1 - EXCERPT_CHARS)
    excerpt = ("…" if start else "") + text[start : index + 1]
    return (
        f"{path} holds a lone surrogate \\u{ord(text[index]):04x} at character {index} "
        f"({json.dumps(excerpt)}): send valid UTF-16 pairs / UTF-8"
    )
