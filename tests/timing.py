"""Duration bounds that hold on a busy machine.

A test that promises "fast" judges a duration against a baseline measured in the same test,
on the same machine, moments apart: the start-up of a Python process that imports what the
process under test imports before it does the timed work.  Load from elsewhere slows both
alike; a regression in our code (the MCP SDK imported before a refusal, a shutdown that
waits out a timeout) slows only the timed part.  A failure prints both figures.

Hang guards (a timeout for something that would otherwise never finish) are not bounds in
this sense and stay plain timeouts.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Final

#: Start-ups timed for one baseline; the median resists one descheduled run.
BASELINE_RUNS: Final = 3
#: What a refused or stopping ``vestige-mcp`` imports before the timed work: the owner lock,
#: the options and the errors, without the MCP SDK.
SERVER_STARTUP: Final = "import vestige.server"
#: From a stop signal (or stdin EOF) to the server having exited, in such start-ups:
#: finishing the writes in flight and a checkpoint take a fraction of one (16 ms on a quiet
#: machine, bench_server.py); waiting out any timeout would not fit.
SHUTDOWN_TIMES_STARTUP: Final = 5.0


def startup_s(code: str = SERVER_STARTUP, env: dict[str, str] | None = None) -> float:
    """Median wall time of ``python -c CODE`` (the baseline a "fast" bound is a multiple of)."""
    times = []
    for _ in range(BASELINE_RUNS):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
        times.append(time.monotonic() - began)
    return statistics.median(times)


def assert_within(
    elapsed_s: float,
    *,
    times: float,
    baseline_s: float,
    what: str,
    plus_s: float = 0.0,
    plus_why: str = "",
    baseline_what: str = "`python -c` start-up, same test",
) -> None:
    """``elapsed_s <= times x baseline_s + plus_s``, with every figure in the failure message.

    ``plus_s`` is for a wait the design itself prescribes (a poll interval), never for slack.
    """
    bound = times * baseline_s + plus_s
    plus = f" + {plus_s * 1000:.0f} ms ({plus_why})" if plus_s else ""
    assert elapsed_s <= bound, (
        f"{what} took {elapsed_s * 1000:.0f} ms; bound {times:g} x baseline "
        f"{baseline_s * 1000:.0f} ms ({baseline_what}){plus} "
        f"= {bound * 1000:.0f} ms"
    )
