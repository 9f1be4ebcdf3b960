"""The CLI documents itself: help for every command, docs/CLI.md in step, progress on a TTY."""

from __future__ import annotations

import importlib
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from tests.cli_helpers import CLI, cli_json, run_cli
from vestige.cli import COMMAND_MODULES, cli
from vestige.cli._exit import ExitCode

DOCS = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"
COMMANDS = cli.list_commands(click.Context(cli))


def command(name: str) -> click.Command:
    found = cli.get_command(click.Context(cli), name)
    assert found is not None, name
    return found


def test_each_command_is_loaded_from_the_module_that_defines_it() -> None:
    """The lazy table (COMMAND_MODULES) names every command of every module, and no other."""
    defined = {
        c.name: module
        for module in set(COMMAND_MODULES.values())
        for c in importlib.import_module(f"vestige.cli.{module}").COMMANDS
    }
    assert defined == COMMAND_MODULES
    for name in COMMANDS:
        assert command(name).name == name


def test_stats_does_not_import_the_process_scan() -> None:
    """A reading command loads its own module only (issue 12: CLI start-up)."""
    probe = (
        "import sys\n"
        "from vestige.cli import main\n"
        "try:\n"
        "    main(['stats', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('psutil', 'vestige.processes', 'vestige.doctor') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]"


def test_every_command_is_documented_with_its_options() -> None:
    docs = DOCS.read_text("utf-8")
    assert COMMANDS == [
        "backup", "config", "consolidate", "dashboard", "delete", "doctor", "edit", "export",
        "health", "import", "ingest", "log", "purge", "restore", "salvage", "search", "sql",
        "stats", "undo", "watch",
    ]  # fmt: skip
    for name in COMMANDS:
        assert re.search(rf"^##+ `vestige {name}\b", docs, re.M), name
        for param in command(name).params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in ("--data-dir", "--json"):
                    assert re.search(rf"`[^`]*{re.escape(opt)}\b[^`]*`", docs), (name, opt)


def test_the_exit_code_table_matches_the_code() -> None:
    docs = DOCS.read_text("utf-8")
    rows = re.findall(r"^\| (\d+) +\| `(\w+)` +\|", docs, re.M)
    assert [(int(n), name) for n, name in rows] == [(c.value, c.name) for c in ExitCode]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name: str) -> None:
    result = run_cli(name, "--help")
    assert result.returncode == 0
    assert f"Usage: vestige {name}" in result.stdout
    assert "Example:\n    vestige " in result.stdout
    assert "--data-dir" in result.stdout


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_progress_is_drawn_on_a_terminal_and_never_in_a_pipe(data_dir: Path) -> None:
    cli_json("ingest", "first", data_dir=data_dir)
    cli_json("ingest", "second thing entirely", data_dir=data_dir)
    piped = run_cli("export", data_dir=data_dir)
    assert piped.stderr == "Exported 2 memories.\n"
    main, child = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, "export", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=child,
        )
        os.close(child)
        out, _ = proc.communicate(timeout=60)
        seen = b""
        end = time.monotonic() + 10
        while time.monotonic() < end:
            ready, _, _ = select.select([main], [], [], 0.2)
            if not ready:
                break
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child side is closed: everything was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]  # stdout stays pure JSON Lines
    assert len([m for m in lines if "change" not in m]) == 2
    assert "Exporting… 2".encode() in seen
    assert b"Exported 2 memories." in seen
