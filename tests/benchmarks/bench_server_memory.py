"""Server memory benchmark: peak unique memory (USS) of the real vestige-mcp per tool call.

Run from the repository root::

    python tests/benchmarks/bench_server_memory.py [--data-dir DIR] [--memories 700]
        [--kib 900]

With large memories, a call that reads whole rows it does not show costs their size in
memory: ``stats`` used to read 500 whole memories for its state counts, ``search`` three
rows per result asked for, content and all, even at ``brief`` detail.  This prints, for each
call, on a server started for it, the server's USS and anonymous memory before the call and
the highest seen while it ran (sampled every 10 ms).  Figures, not verdicts.  Without
--data-dir a store of ``--memories`` memories of ``--kib`` KiB is built first (through the
library, which takes minutes at full size).  ``--source DIR`` runs the server from another
checkout (e.g. ``git archive <commit> vestige | tar -x -C DIR``) to compare with it.  Named
``bench_*`` so pytest never collects it.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # for tests.server_helpers when run as a script

import psutil  # noqa: E402

from tests.server_helpers import ServerProcess  # noqa: E402
from vestige import Store  # noqa: E402

CALLS: Final[list[tuple[str, dict[str, Any]]]] = [
    ("stats", {}),
    ("health_check", {}),
    ("search", {"query": "haystack", "detail_level": "brief", "limit": 100}),
    ("search", {"query": "haystack", "detail_level": "summary", "limit": 100}),
    ("search", {"query": "haystack", "detail_level": "full", "limit": 100}),
    ("memory_timeline", {"start": "2000-01-01", "detail_level": "brief", "limit": 200}),
    ("memory_timeline", {"start": "2000-01-01", "detail_level": "summary", "limit": 200}),
]


def build(data_dir: Path, memories: int, kib: int) -> None:
    rnd = random.Random(1)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=7)) for _ in range(5000)]
    with Store.open(data_dir) as store:
        for i in range(memories):
            text = f"haystack item{i} " + " ".join(rnd.choices(words, k=kib * 128))
            store.ingest(text[: kib * 1000], tags=["hay"])


def anonymous_bytes(pid: int) -> int:
    """Memory the process owns outright (heap, stacks): USS also counts the pages of the
    database file SQLite maps (up to ``config.MMAP_SIZE_BYTES``), which are file cache the
    kernel can drop.  Linux only (0 elsewhere)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) * 1024
    return 0


class Peak:
    """The highest USS (and anonymous memory) of a process, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._proc = psutil.Process(pid)
        self.before = self._proc.memory_full_info().uss
        self.peak = self.before
        self.anon_before = self.anon_peak = anonymous_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_full_info().uss)
            self.anon_peak = max(self.anon_peak, anonymous_bytes(self._pid))
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(data_dir: Path, home: Path, source: Path | None) -> None:
    # A server per call: memory a call freed is kept by the allocator, and would hide the
    # next call's peak.
    for name, args in CALLS:
        env = {"PYTHONPATH": str(source)} if source else None
        with ServerProcess(data_dir, home=home, console_script=source is None, env=env) as srv:
            srv.initialize(timeout=120)
            peak = Peak(srv.pid)
            began = time.monotonic()
            rid = srv.send("tools/call", {"name": name, "arguments": args})
            reply = srv.response(rid, timeout=600)
            elapsed = time.monotonic() - began
            peak.stop()
            error = " ERROR" if reply["result"].get("isError") else ""
            print(
                f"{name:15} {str(args)[:56]:56} USS {peak.before / 1e6:4.0f} -> "
                f"{peak.peak / 1e6:4.0f} MB, anonymous {peak.anon_before / 1e6:4.0f} -> "
                f"{peak.anon_peak / 1e6:4.0f} MB, {elapsed:5.2f} s{error}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--memories", type=int, default=700)
    parser.add_argument("--kib", type=int, default=900)
    parser.add_argument("--source", type=Path, help="run the server from this checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = home / "data"
            began = time.monotonic()
            build(data_dir, args.memories, args.kib)
            print(f"built {args.memories} x {args.kib} KiB in {time.monotonic() - began:.0f} s")
        measure(data_dir, home, args.source)


if __name__ == "__main__":
    main()
