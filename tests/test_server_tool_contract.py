"""The tools describe themselves and refuse what they don't understand (issue 10).

Through the MCP SDK's client and a real ``vestige-mcp``: unknown arguments are refused with
the likely name, every input schema is closed and every result has a real output schema
that its structured content meets, bad values get one line, the annotations say what each
tool does, the resources are served, and no response outgrows its byte budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from tests.server_helpers import stdio_params, tool_text
from tests.test_server_stdio import TOOLS, call, error, ok
from vestige.server.resources import RECENT_MEMORIES
from vestige.server.results import RESPONSE_BUDGET_BYTES, SUMMARY_CONTENT_CHARS

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

READS = {"search", "memory", "memory_timeline", "stats", "health_check", "memory_changelog"}
#: Tools that can remove a memory or replace what it says.
DESTRUCTIVE = {"delete_memory", "edit_memory", "memory_undo"}
TAG_ARGUMENTS = {
    "ingest": "tags",
    "smart_ingest": "tags",
    "edit_memory": "tags",
    "search": "tags",
    "memory_timeline": "tags",
}


def good_calls(mid: str, seq: int) -> dict[str, dict[str, Any]]:
    """Arguments every tool accepts, given a memory id and a changelog seq to undo."""
    return {
        "ingest": {"content": "Grace keeps the runbook in docs/ops.md", "tags": ["ops"]},
        "smart_ingest": {"content": "Grace keeps the runbook in docs/ops.md", "tags": ["ops"]},
        "search": {"query": "runbook", "limit": 5, "detail_level": "full"},
        "memory": {"action": "get", "id": mid},
        "promote_memory": {"id": mid, "reason": "useful"},
        "demote_memory": {"id": mid},
        "edit_memory": {"id": mid, "tags": ["ops", "docs"]},
        "memory_changelog": {"limit": 5, "include_before": True},
        "memory_undo": {"change_seq": seq},
        "memory_timeline": {"detail_level": "brief"},
        "consolidate": {},
        "stats": {},
        "health_check": {},
        "delete_memory": {"id": mid},
    }


def test_every_tool_is_closed_typed_and_meets_its_output_schema(
    tmp_path: Path, data_dir: Path
) -> None:
    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert set(listed) == TOOLS
            for name, tool in listed.items():
                assert tool.input_schema.get("additionalProperties") is False, name
                out = tool.output_schema
                assert out is not None, name
                assert out["type"] == "object", name
                assert out.get("additionalProperties") is False, name
                assert out["properties"], name  # declared fields, not "any object"
                jsonschema.Draft202012Validator.check_schema(out)
            smart = listed["smart_ingest"].output_schema or {}
            assert {"id", "decision", "superseded_id"} <= set(smart["properties"])
            hit_kinds = listed["search"].output_schema or {}
            assert "combined_score" in hit_kinds["$defs"]["BriefHit"]["properties"]

            mid = (await ok(client, "ingest", {"content": "Grace maintains the runbook"}))["id"]
            other = (await ok(client, "ingest", {"content": "Zebra stripes are unique"}))["id"]
            edit = await ok(client, "edit_memory", {"id": other, "tags": ["zoo"]})
            for name, args in good_calls(mid, edit["change_seq"]).items():
                result = await call(client, name, args)
                assert not result.is_error, (name, tool_text(result))
                schema = listed[name].output_schema
                jsonschema.validate(result.structured_content, schema)
                assert json.loads(tool_text(result)) == result.structured_content

    anyio.run(scenario)


def test_unknown_arguments_are_refused_with_the_likely_name(tmp_path: Path, data_dir: Path) -> None:
    """Before: `tag` stored an untagged memory and `forceCreate` reinforced; now both fail."""

    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            first = await ok(client, "smart_ingest", {"content": "Ada ships on Fridays"})
            assert first["decision"] == "create"

            text = await error(
                client, "smart_ingest", {"content": "Ada ships on Fridays", "forceCreate": True}
            )
            assert text == "unknown argument 'forceCreate'; did you mean 'force_create'?"
            text = await error(client, "ingest", {"content": "tagged?", "tag": ["x"]})
            assert text == "unknown argument 'tag'; did you mean 'tags'?"
            text = await error(client, "stats", {"verbose": True})
            assert text == "unknown argument 'verbose': this tool takes no arguments"
            text = await error(client, "search", {"query": "x", "zzz": 1})
            assert text.startswith("unknown argument 'zzz'; this tool takes detail_level, ")
            # Refused before anything ran: the memory was neither reinforced nor added to.
            stats = await ok(client, "stats", {})
            assert stats["total_memories"] == 1
            log = await ok(client, "memory_changelog", {})
            assert [c["kind"] for c in log["changes"]] == ["created"]

            made = await ok(
                client, "smart_ingest", {"content": "Ada ships on Fridays", "force_create": True}
            )
            assert made["decision"] == "create"

    anyio.run(scenario)


WHOLE = "argument 'limit' is {}: send a whole number from 1 to {}"
TRUE_FALSE = "argument 'include_superseded' is {}: send true or false"
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("search", {"query": "x", "limit": 0}, "argument 'limit' is 0, below 1: send a whole number"),
    ("search", {"query": "x", "limit": 1000}, "above 100: send a whole number from 1 to 100"),
    ("ingest", {"content": 42}, "argument 'content' is 42 (a whole number): send a string"),
    ("ingest", {}, "argument 'content' is required: send a string"),
    ("ingest", {"content": ""}, "argument 'content' is empty: send a string"),
    ("ingest", {"content": "x", "tags": [f"t{i}" for i in range(51)]}, "more than 50"),
    ("ingest", {"content": "x", "tags": ["ok", ""]}, "argument 'tags' (item 1) is empty"),
    ("ingest", {"content": "x", "node_type": "two words"}, "send a word of letters"),
    ("smart_ingest", {"content": "x", "force_create": "maybe"}, "send true or false"),
    ("memory", {"action": "delete", "id": "abc"}, "To delete, call delete_memory"),
    ("memory", {"action": "get", "id": "no/such"}, "send a memory id of letters"),
    ("memory_timeline", {"limit": "many"}, "argument 'limit' is \"many\" (a string)"),
    ("memory_changelog", {"since_seq": -1}, "argument 'since_seq' is -1, below 0"),
    ("memory_undo", {"change_seq": 1.5}, "argument 'change_seq' is 1.5, not a whole number"),
    ("search", {"query": "x", "limit": 0, "detail_level": "all"}, "; argument 'detail_level'"),
    # Strict types: the JSON type the schema names, nothing pydantic could coerce.
    ("search", {"query": "x", "limit": "5"}, WHOLE.format('"5" (a string)', 100)),
    ("search", {"query": "x", "limit": True}, WHOLE.format("true (a boolean)", 100)),
    (
        "search",
        {"query": "x", "limit": 5.0},
        WHOLE.format("5.0 (a number with a decimal point)", 100),
    ),
    ("memory_changelog", {"since_seq": True}, "argument 'since_seq' is true (a boolean): send"),
    ("memory_changelog", {"before_seq": True}, "argument 'before_seq' is true (a boolean): send"),
    ("search", {"query": "x", "include_superseded": "yes"}, TRUE_FALSE.format('"yes" (a string)')),
    ("search", {"query": "x", "include_superseded": 1}, TRUE_FALSE.format("1 (a whole number)")),
    ("search", {"query": "x", "min_retention": "0.5"}, 'is "0.5" (a string): send a number'),
    ("search", {"query": "x", "min_retention": True}, "is true (a boolean): send a number"),
    # Each error names the tool's own argument, whatever the store calls it.
    ("memory_changelog", {"since_seq": 2**70}, "argument 'since_seq' is 1180591620717411303424"),
    ("memory_undo", {"change_seq": 2**70}, "argument 'change_seq' is 1180591620717411303424"),
    ("memory_changelog", {"kinds": ["created"] * 2}, "(a kind appears twice): send a list"),
    ("memory_changelog", {"kinds": ["created"] * 14}, "a list of 14 items, more than 13"),
]


def test_bad_values_get_one_line_naming_the_argument_and_what_to_send(
    tmp_path: Path, data_dir: Path
) -> None:
    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            for name, args, expected in BAD_VALUES:
                text = await error(client, name, args)  # one line, no pydantic dump
                assert expected in text, (name, args, text)
                assert "send" in text, text
            assert (await ok(client, "stats", {}))["total_memories"] == 0

    anyio.run(scenario)


#: Calls the store refuses after the schema let them through, and what it says.
STORE_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("memory_timeline", {"start": "2999-01-01"}, "start '2999-01-01' is after now: the window"),
    (
        "memory_changelog",
        {"since_seq": 10, "before_seq": 5},
        "since_seq 10 is not below before_seq 5: no change is both after",
    ),
    ("memory_timeline", {"start": "y" * 64}, "start 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy'..."),
]


def test_errors_are_short_and_name_the_tools_arguments(tmp_path: Path, data_dir: Path) -> None:
    """A 500,000-character start used to come back whole in a 500 KB error; store errors
    named after_seq for since_seq, and a future start "after end 'now'"."""

    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            text = await error(client, "memory_timeline", {"start": "y" * 500_000})
            assert text.startswith("argument 'start' is \"yyyy"), text
            assert "(500,000 characters), longer than 64 characters" in text
            assert len(text) < 300, len(text)
            for name, args, expected in STORE_REFUSALS:
                text = await error(client, name, args)
                assert expected in text, (name, args, text)
                assert len(text.splitlines()[0]) < 200, text
            listed = {t.name: t for t in (await client.list_tools()).tools}
            for name, argument in (
                ("memory_timeline", "start"),
                ("memory_timeline", "end"),
                ("memory_changelog", "since"),
            ):
                prop = listed[name].input_schema["properties"][argument]["anyOf"][0]
                assert prop["maxLength"] == 64, (name, argument)
            kinds = listed["memory_changelog"].input_schema["properties"]["kinds"]["anyOf"][0]
            assert (kinds["maxItems"], kinds["uniqueItems"]) == (13, True)

    anyio.run(scenario)


def test_schemas_say_the_limits_the_server_applies(tmp_path: Path, data_dir: Path) -> None:
    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            for name, tool in listed.items():
                assert "\n    " not in (tool.description or ""), name  # no docstring indent
                for prop in tool.input_schema.get("properties", {}).values():
                    assert "\n    " not in prop.get("description", ""), name
            for name in ("ingest", "smart_ingest", "edit_memory"):
                content = listed[name].input_schema["properties"]["content"]
                content = content.get("anyOf", [content])[0]
                assert "maxLength" not in content, name  # bytes are not characters
                described = listed[name].input_schema["properties"]["content"]["description"]
                assert "1,000,000 bytes of UTF-8" in described, name
            for name, argument in TAG_ARGUMENTS.items():
                tags = listed[name].input_schema["properties"][argument]["anyOf"][0]
                assert tags["maxItems"] == 50, name
            for name, default, most in (("search", 10, 100), ("memory_timeline", 50, 200)):
                limit = listed[name].input_schema["properties"]["limit"]
                assert (limit["default"], limit["maximum"]) == (default, most)
                assert f"default {default}, at most {most}" in limit["description"]
            query = listed["search"].input_schema["properties"]["query"]["description"]
            assert "ignored" not in query
            assert "AND, OR, NOT and NEAR are looked for as plain words" in query

            # The byte limit is the server's: 400,000 "é" are 800,000 bytes, so accepted,
            # while 600,000 of them (fewer characters than the limit) are refused, in bytes.
            await ok(client, "ingest", {"content": "é" * 400_000})
            text = await error(client, "ingest", {"content": "é" * 600_000})
            assert "content is 1,200,000 bytes; the limit is 1,000,000 bytes" in text

    anyio.run(scenario)


def test_annotations_say_what_each_tool_does(tmp_path: Path, data_dir: Path) -> None:
    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            for name, tool in listed.items():
                hints = tool.annotations
                assert hints is not None, name
                assert hints.open_world_hint is False, name
                assert hints.read_only_hint is (name in READS), name
                if name not in READS:
                    assert hints.destructive_hint is (name in DESTRUCTIVE), name
            # memory only reads now: deleting is its own, destructive, tool.
            actions = listed["memory"].input_schema["properties"]["action"]["enum"]
            assert actions == ["get", "state"]
            assert listed["delete_memory"].annotations is not None
            assert listed["delete_memory"].annotations.idempotent_hint is True

    anyio.run(scenario)


def test_a_timeline_that_ends_before_it_starts_is_an_error(tmp_path: Path, data_dir: Path) -> None:
    """Before: an empty success; now the store refuses the window."""

    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            await ok(client, "ingest", {"content": "something to find"})
            text = await error(
                client, "memory_timeline", {"start": "2026-03-02", "end": "2026-03-01"}
            )
            assert text.startswith("start '2026-03-02' is after end '2026-03-01'"), text
            assert "\nHint: Give a start before the end" in text
            same_day = await ok(
                client, "memory_timeline", {"start": "2026-03-01", "end": "2026-03-01"}
            )
            assert same_day["total"] == 0  # a one-day window is fine

    anyio.run(scenario)


def test_resources_are_served_and_prompts_not_advertised(tmp_path: Path, data_dir: Path) -> None:
    async def scenario() -> None:
        for mode in ("legacy", "auto"):
            async with Client(stdio_params(data_dir, home=tmp_path), mode=mode) as client:
                caps = client.server_capabilities
                assert caps is not None
                assert caps.prompts is None, mode
                assert caps.resources is not None, mode
                assert caps.resources.subscribe is True, mode  # test_server_notify.py
                with pytest.raises(MCPError) as refused:
                    await client.list_prompts()
                assert refused.value.error.code == -32601  # method not found

                uris = {str(r.uri): r for r in (await client.list_resources()).resources}
                assert set(uris) == {"memory://stats", "memory://recent", "memory://changes"}
                assert {r.mime_type for r in uris.values()} == {"application/json"}
                if mode == "legacy":
                    for i in range(RECENT_MEMORIES + 3):
                        await ok(client, "ingest", {"content": f"memory number {i} " + "x" * 600})
                stats = json.loads(await _read(client, "memory://stats"))
                assert stats["total_memories"] == RECENT_MEMORIES + 3
                recent = json.loads(await _read(client, "memory://recent"))
                assert recent["count"] == RECENT_MEMORIES
                newest = recent["memories"][0]
                assert newest["content"].startswith(f"memory number {RECENT_MEMORIES + 2} ")
                assert len(newest["content"]) == SUMMARY_CONTENT_CHARS
                assert newest["content_truncated"] is True

    anyio.run(scenario)


async def _read(client: Client, uri: str) -> str:
    contents = (await client.read_resource(uri)).contents
    assert len(contents) == 1
    text = getattr(contents[0], "text", None)
    assert isinstance(text, str)
    return text


def test_responses_stay_within_their_byte_budget(tmp_path: Path, data_dir: Path) -> None:
    """Before: a timeline of large memories came to 396 MB and summary showed whole texts."""
    size = 300_000  # bytes per memory: four of them pass the 1 MiB budget
    count = 6

    async def scenario() -> None:
        async with Client(stdio_params(data_dir, home=tmp_path)) as client:
            ids = [
                (await ok(client, "ingest", {"content": f"bulky{i} " + "lorem " * (size // 6)}))[
                    "id"
                ]
                for i in range(count)
            ]
            for i in ids:  # each edit keeps a whole previous row in the changelog
                await ok(client, "edit_memory", {"id": i, "content": "lorem, shortened"})
                await ok(client, "memory_undo", {"change_seq": await _newest_edit(client, i)})

            for detail in ("summary", "brief"):
                small = await ok(client, "memory_timeline", {"detail_level": detail})
                assert (small["total"], small["truncated"], small["hint"]) == (count, False, None)
            summary = await ok(client, "memory_timeline", {})
            for item in summary["days"][0]["memories"]:
                assert len(item["content"]) == SUMMARY_CONTENT_CHARS
                assert item["content_truncated"] is True

            checks = [
                ("memory_timeline", {"detail_level": "full"}, "total"),
                ("search", {"query": "lorem", "detail_level": "full"}, "total"),
                ("memory_changelog", {"include_before": True}, None),
            ]
            for name, args, total in checks:
                result = await call(client, name, args)
                assert not result.is_error, tool_text(result)
                found = result.structured_content
                assert isinstance(found, dict)
                body = len(json.dumps(found, ensure_ascii=False).encode())
                assert body <= RESPONSE_BUDGET_BYTES, (name, body)
                assert found["truncated"] is True, name
                assert "bytes of JSON" in found["hint"], name
                if total is not None:
                    assert 1 <= found[total] < count, (name, found[total])
            page = await ok(client, "memory_changelog", {"include_before": True})
            assert page["more"] is True  # the rest is one before_seq away
            rest = await ok(
                client,
                "memory_changelog",
                {"include_before": True, "before_seq": page["changes"][-1]["seq"]},
            )
            assert rest["changes"], rest

    anyio.run(scenario)


async def _newest_edit(client: Client, memory_id: str) -> int:
    page = await ok(client, "memory_changelog", {"memory_id": memory_id, "kinds": ["edited"]})
    return int(page["changes"][0]["seq"])
