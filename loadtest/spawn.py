"""Starting and stopping every process the load test owns, always by pid.

Each child is started in a new session (a Ctrl-C in the terminal reaches only the harness,
which then stops its children in order). Every child is registered in a ``Registry``; the
runner's ``finally`` calls ``Registry.reap_all`` so nothing outlives a run, whatever failed:
stdin EOF first (a server's clean exit), then SIGTERM, then SIGKILL, each with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio

if TYPE_CHECKING:
    from anyio.abc import Process

#: A server closes on stdin EOF in ~0.1-0.5 s (mcp-sdk.md §6); 5 s covers a loaded machine.
EOF_GRACE_S: Final = 5.0
TERM_GRACE_S: Final = 2.0
_POLL_S: Final = 0.01


class MissingCommand(RuntimeError):
    """Raised when a console script the load test drives is not installed."""


def find_command(name: str) -> str:
    """The console script next to this interpreter (the venv's), else the one on PATH."""
    sibling = Path(sys.executable).parent / name
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which(name)
    if found is None:
        raise MissingCommand(
            f"`{name}` is not installed next to {sys.executable} nor on PATH; "
            "install the project first: pip install -e ."
        )
    return found


@dataclass
class Child:
    """One spawned process: its anyio handle, what it is, and where its stderr went."""

    label: str
    process: Process
    stderr_path: Path
    started: float = field(default_factory=time.monotonic)
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self.killed

    def kill9(self) -> None:
        """SIGKILL now (the fault); the caller decides what the loss means."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[-limit:]


class Registry:
    """Every child of a run, so one ``finally`` can stop them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Child] = []
        self._serial = 0
        _REGISTRIES.append(self)

    async def spawn(
        self, label: str, argv: list[str], env: dict[str, str], *, stdin: bool = True
    ) -> Child:
        self._serial += 1
        stderr_path = self.workdir / f"{self._serial:03d}-{label}.stderr"
        with stderr_path.open("wb") as err:
            # The child inherits the descriptor; ours closes right after the spawn.
            process = await anyio.open_process(
                argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        child = Child(label, process, stderr_path)
        self.children.append(child)
        return child

    async def stop(self, child: Child, *, grace_s: float = EOF_GRACE_S) -> int | None:
        """Stop one child: stdin EOF, then SIGTERM, then SIGKILL; returns its exit code."""
        if child.process.stdin is not None:
            with contextlib.suppress(Exception):
                await child.process.stdin.aclose()
        if await wait_exit(child, grace_s):
            return child.returncode
        for sig, grace in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, TERM_GRACE_S)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, sig)
            if await wait_exit(child, grace):
                return child.returncode
        return child.returncode

    def forget(self, child: Child) -> None:
        """Drop a finished short-lived child (a CLI command) and its stderr file."""
        if child.returncode is not None and child in self.children:
            self.children.remove(child)
            child.stderr_path.unlink(missing_ok=True)

    async def stop_all(self) -> None:
        async with anyio.create_task_group() as tg:
            for child in self.children:
                if child.returncode is None:
                    tg.start_soon(self.stop, child)

    def reap_all(self) -> list[int]:
        """Last resort, synchronous: SIGKILL every child still alive, by pid. Returns them."""
        leftovers = []
        for child in self.children:
            if child.returncode is None and _alive(child.pid):
                leftovers.append(child.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + TERM_GRACE_S
        for pid in leftovers:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(_POLL_S)
        return leftovers


#: Every registry of this process, for ``reap_everything`` (the command line's last resort).
_REGISTRIES: list[Registry] = []


def reap_everything() -> list[int]:
    """SIGKILL every child of every registry still alive (after Ctrl-C, say)."""
    return [pid for registry in _REGISTRIES for pid in registry.reap_all()]


async def wait_exit(child: Child, timeout: float) -> bool:
    """Poll the return code (``Process.wait`` also waits for pipe EOF, which a hung grandchild
    could hold open)."""
    deadline = anyio.current_time() + timeout
    while child.returncode is None:
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(_POLL_S)
    return True


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        # Not our child any more (already reaped by the event loop): ask the kernel.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return done == 0
