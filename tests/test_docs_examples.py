"""Every example in README.md and docs/*.md runs, so the docs cannot drift from the program.

A fenced block says what it is with its language: ``bash`` and ``console`` (the ``$ ``
lines) are commands, ``python`` is a program, ``json`` must parse, and anything else
(``text``, ``sql``, ``cron``) is read, not run.  A command block is left out only when the
line before it says why, ``<!-- docs-test: skip: REASON -->`` (a client's own command, one
that runs until stopped, one that takes minutes); a block that shows a failure says which
exit status it ends with, ``<!-- docs-test: exit N -->``.

Each block runs as a newcomer would type it, with ``bash -e -o pipefail``, from a project
folder in a home of its own (``HOME``, so the default data directory and ``~`` are inside the
test's temp dir, never the user's): a memory of ~130 changes where the examples' ids, change
numbers, backup and files exist, and the ``vestige`` and ``vestige-mcp`` of this checkout
first on ``PATH``.  Standard input is empty, so a ``vestige-mcp`` started by an example sees
end of input at once and stops cleanly, as it does when its client goes away.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from vestige import Store

ROOT: Final = Path(__file__).resolve().parents[1]
DOCS: Final = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
#: Languages whose blocks run, parse, or are only read.
RUN: Final = frozenset({"bash", "console", "python"})
PARSE: Final = frozenset({"json"})
READ: Final = frozenset({"text", "sql", "cron"})
#: The id, change number and backup the examples name, made to exist in the test's memory.
EXAMPLE_ID: Final = "5558aac0-b14a-4cde-810e-c96509896539"
EXAMPLE_UNDO: Final = 42
EXAMPLE_BACKUP: Final = ".local/share/vestige/core/backups/vestige-20250101-120000.db"
#: A hang guard per block, not a bound: an example normally takes a second or two.
BLOCK_DEADLINE_S: Final = 120.0

#: A fence at any indent (a block inside a list item), with backticks or tildes.
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```|~~~)(?P<lang>\S*)\s*$")
_MARK = re.compile(r"^ *<!-- docs-test: (?:skip: (?P<reason>.+?)|exit (?P<code>\d+)) -->$")


@dataclass(frozen=True)
class Block:
    file: Path
    line: int
    lang: str
    body: str
    skip: str | None
    exit: int

    @property
    def name(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"

    def script(self) -> str:
        if self.lang == "console":
            return "\n".join(ln[2:] for ln in self.body.splitlines() if ln.startswith("$ "))
        return self.body


def blocks() -> Iterator[Block]:
    for path in DOCS:
        lines = path.read_text("utf-8").splitlines()
        i = 0
        while i < len(lines):
            fence = _FENCE.match(lines[i])
            if fence is None:
                i += 1
                continue
            indent, mark_of = len(fence["indent"]), fence["fence"]
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == mark_of)
            mark = _MARK.match(lines[i - 1]) if i > 0 else None
            yield Block(
                path,
                i + 1,
                fence["lang"],
                "".join(ln[indent:] + "\n" for ln in lines[i + 1 : end]),
                mark["reason"] if mark and mark["reason"] else None,
                int(mark["code"]) if mark and mark["code"] else 0,
            )
            i = end + 1


ALL: Final = list(blocks())


def test_every_block_says_what_it_is_and_every_skip_why() -> None:
    for block in ALL:
        assert block.lang in RUN | PARSE | READ, (
            f"{block.name}: a fence needs a language ({sorted(RUN | PARSE | READ)}), "
            f"got {block.lang!r}"
        )
        if block.skip is not None:
            assert len(block.skip.split()) >= 3, f"{block.name}: say why it is not run"
            assert block.lang in RUN, f"{block.name}: only command blocks are skipped"
        if block.exit:
            # With bash -e the failing command ends the block: nothing may hide after it.
            commands = [c for c in block.script().splitlines() if c.strip()[:1] not in "#"]
            assert len(commands) == 1, f"{block.name}: an exit mark needs a one-command block"
    marks = sum(
        1 for path in DOCS for ln in path.read_text("utf-8").splitlines() if "docs-test:" in ln
    )
    assert marks == sum(1 for b in ALL if b.skip is not None or b.exit), (
        "a docs-test mark that is not on the line before a fence, or is malformed"
    )


@pytest.mark.parametrize("block", [b for b in ALL if b.lang in PARSE], ids=lambda b: b.name)
def test_json_examples_parse(block: Block) -> None:
    json.loads(block.body)


@pytest.fixture(scope="module")
def lived_in_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose default memory has what the examples name; copied for each block."""
    home = tmp_path_factory.mktemp("home")
    data = home / ".local" / "share" / "vestige" / "core"
    project = home / "project"
    project.mkdir()
    seed = project / "seed.jsonl"
    seed.write_text(
        json.dumps({"id": EXAMPLE_ID, "content": "Deploys are on Fridays", "tags": ["ops"]}) + "\n",
        "utf-8",
    )
    with Store.open(data) as store, seed.open("r", encoding="utf-8") as rows:
        store.import_jsonl(rows)
        kept = [store.ingest(f"Memory {n} about deploy friday", tags=["ops"]) for n in range(40)]
        for memory in kept:  # edits, so the example's change number is one undo accepts
            store.edit(memory.id, content=memory.content + ", edited")
        for n in range(60):
            store.ingest(f"Later memory {n}")
        assert store.change(EXAMPLE_UNDO).kind == "edited"
        backup = home / EXAMPLE_BACKUP
        backup.parent.mkdir(parents=True, exist_ok=True)
        store.backup(backup)
        with (project / "memories.jsonl").open("w", encoding="utf-8") as out:
            store.export_jsonl(out)
    seed.unlink()
    rows = [json.loads(ln) for ln in (project / "memories.jsonl").read_text("utf-8").splitlines()]
    (project / "memories.json").write_text(json.dumps(rows), "utf-8")
    (project / "note.txt").write_text("Deploys are on Mondays, after the standup.\n", "utf-8")
    git = ["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run(
        [*git, "commit", "-q", "--allow-empty", "-m", "Decision: deploy on Mondays"],
        cwd=project,
        check=True,
    )
    return home


def _env(home: Path) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "VESTIGE_LOG_LEVEL": "WARNING",
    }


@pytest.mark.timeout(BLOCK_DEADLINE_S + 30)
@pytest.mark.parametrize("block", [b for b in ALL if b.lang in RUN], ids=lambda b: b.name)
def test_command_examples_run(block: Block, lived_in_home: Path, tmp_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(f"not run: {block.skip}")
    home = tmp_path / "home"
    shutil.copytree(lived_in_home, home, symlinks=True)  # no process has this copy open
    if block.lang == "python":
        command = [sys.executable, "-c", block.script()]
    else:
        # inherit_errexit: a failure inside $(...) fails the block too.
        script = f"shopt -s inherit_errexit\n{block.script()}"
        command = ["bash", "-e", "-o", "pipefail", "-c", script]
    result = subprocess.run(
        command,
        cwd=home / "project",
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BLOCK_DEADLINE_S,
        check=False,
    )
    assert result.returncode == block.exit, (
        f"{block.name} ended with {result.returncode}, expected {block.exit}:\n"
        f"--- block\n{block.body}--- stdout\n{result.stdout[-3000:]}"
        f"--- stderr\n{result.stderr[-3000:]}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    if block.exit == 0:  # a command that failed but was not the last one
        assert not re.search(r"^Error: ", result.stderr, re.M), result.stderr
