"""Real small filesystems for the fault tests: a tmpfs mounted for one test, filled to the brim.

Mounting needs root (CI runs as root); elsewhere the test is skipped and says why.  Every
mount is unmounted when its test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

MOUNT_DEADLINE_S: Final = 30.0
#: Chunk sizes used to fill a disk: big first, then down to a single byte.
_CHUNKS: Final = (1 << 20, 1 << 16, 4096, 512, 64, 1)


def _mount_refusal() -> str | None:
    if not sys.platform.startswith("linux"):
        return "tmpfs mounts are a Linux test fixture"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs these tests as root)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "no mount/umount command on PATH"
    return None


@contextlib.contextmanager
def small_tmpfs(where: Path, *, size: str = "2m", nr_inodes: int | None = None) -> Iterator[Path]:
    """A tmpfs of ``size`` (and at most ``nr_inodes`` files) mounted at ``where``."""
    refusal = _mount_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=MOUNT_DEADLINE_S,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs was refused here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], timeout=MOUNT_DEADLINE_S, check=True)


@contextlib.contextmanager
def small_ext4(where: Path, *, size_mib: int = 8, block_bytes: int = 1024) -> Iterator[Path]:
    """An ext4 of ``size_mib`` with ``block_bytes`` blocks, in a file, loop-mounted at ``where``.

    Blocks smaller than a memory page are the case tmpfs cannot show: a file SQLite grows by
    writing one byte per 4 KiB page keeps holes that a full disk cannot fill later.  ``-m 0``
    keeps no blocks for root, so root fills it to the last block as anyone would.
    """
    refusal = _mount_refusal()
    if refusal is None and shutil.which("mkfs.ext4") is None:
        refusal = "no mkfs.ext4 on PATH"
    if refusal is not None:
        pytest.skip(refusal)
    image = where.with_name(where.name + ".img")
    with image.open("wb") as f:
        f.truncate(size_mib << 20)
    made = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-b", str(block_bytes), "-m", "0", str(image)],
        capture_output=True,
        text=True,
        timeout=MOUNT_DEADLINE_S,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed here: {made.stderr.strip()}")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(where)],
        capture_output=True,
        text=True,
        timeout=MOUNT_DEADLINE_S,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a loop mount was refused here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], timeout=MOUNT_DEADLINE_S, check=True)
        image.unlink()


def fill(folder: Path, name: str = "filler") -> int:
    """Fill the disk holding ``folder`` to the last byte it will give; return bytes written."""
    written = 0
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in _CHUNKS:
            block = b"\0" * chunk
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


def tree(root: Path) -> set[str]:
    """Every path under ``root``, relative: to prove that nothing was left behind."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}
