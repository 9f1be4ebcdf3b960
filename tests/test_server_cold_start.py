"""What a ``vestige-mcp`` start imports, read from the real process's own import log.

``PYTHONPROFILEIMPORTTIME=1`` makes the interpreter write one line per imported module to
stderr (the same as ``python -X importtime``), so these tests see what the installed console
script really loaded, with nothing patched:

- a refused launch (exit 3) stops before the MCP SDK, its types and pydantic: the owner
  lock is taken and the refusal written first (``vestige.server.main``);
- a stdio server never loads vestige's HTTP transport (its connection guard and h11);
- a served start turns the cyclic collector back on once it is built (it is off while the
  SDK's ~95k start-up objects are made, and those are frozen).

Timings live in tests/benchmarks/bench_cold_start.py, not here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.server_helpers import (
    START_TIMEOUT_S,
    ServerProcess,
    owner_of,
    server_command,
    server_env,
)
from vestige.server import EXIT_OWNER_LOCKED

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

IMPORT_LOG: Final = {"PYTHONPROFILEIMPORTTIME": "1"}
#: Top-level packages a refused launch must not load: the SDK and everything it brings.
SDK_PACKAGES: Final = frozenset(
    {"mcp", "mcp_types", "pydantic", "pydantic_core", "anyio", "starlette", "uvicorn", "httpx2"}
)
#: vestige's own HTTP transport, and the HTTP parser only it loads.
HTTP_MODULES: Final = frozenset(
    {"vestige.server.http", "vestige.http_connections", "vestige.server.http_gate", "h11"}
)


def imported(stderr: str) -> set[str]:
    """Module names from the import log (``import time: self | cumulative | name``)."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize("args", [(), ("--shared-writers",)], ids=["exclusive", "shared"])
def test_a_refused_launch_never_imports_the_sdk(
    tmp_path: Path, data_dir: Path, args: tuple[str, ...]
) -> None:
    with ServerProcess(data_dir, home=tmp_path) as owner:
        owner.initialize()
        owner_of(data_dir, owner.pid)
        done = subprocess.run(
            server_command("--data-dir", str(data_dir), *args),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=server_env(tmp_path, **IMPORT_LOG),
            cwd=tmp_path,
            timeout=START_TIMEOUT_S,
            check=False,
        )
    assert done.returncode == EXIT_OWNER_LOCKED, done.stderr[-2000:]
    assert f"pid {owner.pid}" in done.stderr
    loaded = imported(done.stderr)
    assert {"vestige.server", "vestige.owner"} <= loaded  # the log is read right
    assert sorted(m for m in loaded if m.split(".")[0] in SDK_PACKAGES) == []


def test_a_stdio_server_loads_the_sdk_but_not_the_http_transport(
    tmp_path: Path, data_dir: Path
) -> None:
    with ServerProcess(data_dir, home=tmp_path, env=IMPORT_LOG) as server:
        server.initialize()
        result = server.call_tool("search", {"query": "anything"})
        assert result["isError"] is False
        server.close_stdin()
        assert server.wait(START_TIMEOUT_S) == 0
        loaded = imported(server.stderr())
    assert {"vestige.server.lifecycle", "vestige.server.stdio", "mcp.server.mcpserver"} <= loaded
    assert sorted(loaded & HTTP_MODULES) == []


#: Runs the real server, reporting the collector's state as serving begins.
PROBE: Final = """\
import gc, sys
import vestige.server
from vestige.server import lifecycle

serve = lifecycle._serve

async def probed(*args):
    print(f"probe: gc enabled={gc.isenabled()} frozen={gc.get_freeze_count()}",
          file=sys.stderr, flush=True)
    return await serve(*args)

lifecycle._serve = probed
sys.exit(vestige.server.main())
"""


def test_the_collector_runs_again_once_the_server_is_built(tmp_path: Path, data_dir: Path) -> None:
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE, "--data-dir", str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        _, err = probe.communicate(b"", timeout=START_TIMEOUT_S)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    assert probe.returncode == 0, err.decode(errors="replace")[-2000:]
    line = next(x for x in err.decode().splitlines() if x.startswith("probe: "))
    enabled, frozen = (part.split("=")[1] for part in line.split()[2:4])
    assert enabled == "True"
    assert int(frozen) > 10_000  # the start-up's objects, kept out of later collections
