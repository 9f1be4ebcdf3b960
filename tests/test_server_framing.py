"""The rules for a client's message before the SDK sees it (no process needed).

The same rules run in the real server over stdio and HTTP (test_server_stdio_faults.py,
test_server_http_guards.py, test_server_ts_client.py); here are the cases too large or too
many to send through a process each.
"""

from __future__ import annotations

import json

import pytest
from mcp.shared.message import SessionMessage

from vestige.server.framing import Refusal, frame
from vestige.server.stdio import MAX_LINE_BYTES, LineSplitter


def request(params: object, rid: object = 1, method: str = "tools/call") -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()


def refused(line: bytes) -> Refusal:
    result = frame(line)
    assert isinstance(result, Refusal), result
    return result


def test_valid_messages_pass_unchanged_and_blank_lines_are_nothing() -> None:
    ok = frame(request({"name": "ingest", "arguments": {"content": "hello 😀"}}))
    assert isinstance(ok, SessionMessage)
    assert ok.message.params["arguments"]["content"] == "hello 😀"  # type: ignore[union-attr]
    pair = frame(b'{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":"\\ud83d\\ude00"}}')
    assert isinstance(pair, SessionMessage)  # an escaped pair is one character, not a fault
    assert frame(b"   \r") is None


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"name": "ingest", "arguments": {"content": "a\udc00"}}, "argument content holds"),
        ({"name": "search", "arguments": {"tags": ["x", "\ud800y"]}}, "argument tags[1] holds"),
        ({"name": "x", "arguments": {"\ud83d": 1}}, "argument a key in the message holds"),
        ({"name": "x\udfff"}, "params.name holds"),
    ],
)
def test_a_lone_surrogate_is_named_where_it_is(params: object, named: str) -> None:
    line = json.dumps({"jsonrpc": "2.0", "id": "r", "method": "tools/call", "params": params})
    result = refused(line.encode())
    assert (result.reason, result.code, result.request_id, result.answer) == (
        "bad-text",
        -32602,
        "r",
        True,
    )
    assert named in result.message
    assert result.message.endswith("send valid UTF-16 pairs / UTF-8")
    # The answer itself is valid JSON in valid UTF-8 (the surrogate is quoted escaped).
    reply = result.reply().message.model_dump_json(by_alias=True, exclude_unset=True)
    reply.encode("utf-8")


def test_a_long_string_is_quoted_in_part() -> None:
    text = "x" * 5000 + "\ud83d"
    message = refused(request({"name": "ingest", "arguments": {"content": text}})).message
    assert "at character 5000" in message
    assert len(message) < 200


@pytest.mark.parametrize(
    ("line", "reason", "rid", "answer"),
    [
        (b"{oops", "not-json", None, True),
        (b"[]", "not-jsonrpc", None, True),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', "not-jsonrpc", None, True),
        (b'{"jsonrpc":"2.0","id":{"a":1}}', "not-jsonrpc", None, True),
        (b'{"jsonrpc":"1.0","id":3,"method":"ping"}', "not-jsonrpc", 3, True),
        (b'{"jsonrpc":"2.0","method":"x","params":{"a":"\\ud800"}}', "bad-text", None, False),
        (b'{"jsonrpc":"2.0","id":4,"result":{"a":"\\ud800"}}', "bad-text", 4, False),
        (b'{"jsonrpc":"2.0","id":5,"method":"ping","params":{"a":"\xff"}}', "bad-text", 5, True),
        (b"[" * 100_000, "not-json", None, True),
    ],
    ids=[
        "not-json",
        "array",
        "bool-id",
        "no-method",
        "wrong-version",
        "notification",
        "response",
        "not-utf8",
        "deep",
    ],
)
def test_refusals(line: bytes, reason: str, rid: object, answer: bool) -> None:
    result = refused(line)
    assert (result.reason, result.request_id, result.answer) == (reason, rid, answer)


def test_lines_are_split_as_they_stream_and_an_overlong_one_is_dropped() -> None:
    lines = LineSplitter()
    assert list(lines.feed(b'{"a":')) == []
    assert list(lines.feed(b'1}\n{"b":2}\n{"c"')) == [b'{"a":1}', b'{"b":2}']
    chunk = b"x" * (1024 * 1024)
    dropped = [line for _ in range(MAX_LINE_BYTES // len(chunk) + 2) for line in lines.feed(chunk)]
    assert dropped == []
    assert list(lines.feed(b'still the long one\n{"d":4}\n')) == [None, b'{"d":4}']
    assert list(lines.feed(b'{"e":5}')) == []
    assert list(lines.end()) == [b'{"e":5}']  # the last message may lack its newline
