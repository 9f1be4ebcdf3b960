"""Side traffic through the ``vestige`` command line while the servers are loaded.

A person (or a cron job) reading stats and searching, taking backups, and running the decay
pass by hand: each command is a fresh process on the same data directory, as in real use.
Every command must exit 0 with readable JSON; each backup is kept with the time window it was
taken in, so the checks can hold it to everything acknowledged before it started.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio

from loadtest.client import ErrorKind, classify
from loadtest.spawn import wait_exit
from loadtest.workload import Sample

if TYPE_CHECKING:
    from pathlib import Path

    from loadtest.client import Clock
    from loadtest.spawn import Registry
    from loadtest.workload import Recorder, Workload

#: A CLI command is an interpreter start plus one short store call; a minute is a hang.
CLI_TIMEOUT_S: Final = 60.0
#: Each loop waits its interval +/- this fraction, so the commands do not beat in step.
JITTER: Final = 0.2


@dataclass
class CliResult:
    ok: bool
    code: int | None
    data: dict[str, Any] | None
    stderr: str


@dataclass
class BackupRecord:
    path: Path
    started: float
    ended: float
    ok: bool
    detail: str = ""


class CliTraffic:
    def __init__(
        self,
        *,
        registry: Registry,
        argv: list[str],
        data_dir: Path,
        env: dict[str, str],
        clock: Clock,
        recorder: Recorder,
        workload: Workload,
        backups_dir: Path,
        seed: int,
    ) -> None:
        self.registry, self.argv, self.data_dir, self.env = registry, argv, data_dir, env
        self.clock, self.recorder, self.workload = clock, recorder, workload
        self.backups_dir = backups_dir
        self.backups: list[BackupRecord] = []
        self.rng = random.Random(seed)

    async def command(self, kind: str, *args: str, json_out: bool = True) -> CliResult:
        """Run ``vestige <args> --data-dir D --json``; time it; record any failure.

        ``json_out=False`` drops ``--json``, for a command that writes a file (export).
        """
        argv = [*self.argv, *args, "--data-dir", str(self.data_dir)]
        argv += ["--json"] if json_out else []
        started = self.clock.now()
        child = await self.registry.spawn(f"cli-{kind}", argv, self.env, stdin=False)
        stdout = child.process.stdout
        assert stdout is not None
        out = b""
        with anyio.move_on_after(CLI_TIMEOUT_S):
            async for chunk in stdout:
                out += chunk
        exited = await wait_exit(child, 5.0)
        code = child.returncode if exited else await self.registry.stop(child, grace_s=0)
        latency_ms = (self.clock.now() - started) * 1000
        stderr = child.stderr_tail(2000)
        self.registry.forget(child)
        data: dict[str, Any] | None = None
        error: str | None = None
        if not exited:
            error = ErrorKind.TIMEOUT
        elif code != 0:
            error = classify(stderr)
            if error == ErrorKind.TOOL_ERROR:
                error = "cli_error"
        elif json_out:
            try:
                loaded = json.loads(out)
                data = loaded if isinstance(loaded, dict) else {"result": loaded}
            except ValueError:
                error = ErrorKind.PROTOCOL
        self.recorder.add(Sample(started, f"cli_{kind}", "cli", latency_ms, error))
        if error is not None:
            self.recorder.error(error, f"vestige {kind}", f"exit {code}: {stderr.strip()[-400:]}")
        return CliResult(error is None, code, data, stderr)

    async def _every(self, seconds: float) -> bool:
        """Sleep about ``seconds``; False once the run is stopping."""
        with anyio.move_on_after(seconds * self.rng.uniform(1 - JITTER, 1 + JITTER)):
            await self.workload.stop.wait()
        return not self.workload.stop.is_set()

    async def readers(self, every_s: float, commands: tuple[str, ...]) -> None:
        """stats, search (for a live memory's token), health, in turn."""
        turn = 0
        while commands and await self._every(every_s):
            choice = commands[turn % len(commands)]
            turn += 1
            if choice == "search":
                record = self.workload.live.pick(self.rng)
                await self.command("search", "search", record.token if record else "memory")
            else:
                await self.command(choice, choice)

    async def backups_loop(self, every_s: float) -> None:
        while await self._every(every_s):
            path = self.backups_dir / f"backup-{len(self.backups) + 1:03d}.db"
            started = self.clock.now()
            result = await self.command("backup", "backup", str(path))
            self.backups.append(
                BackupRecord(
                    path,
                    started,
                    self.clock.now(),
                    result.ok and path.is_file(),
                    "" if result.ok else result.stderr.strip()[-300:],
                )
            )

    async def consolidate_loop(self, every_s: float) -> None:
        while await self._every(every_s):
            await self.command("consolidate", "consolidate")
