"""The standard descriptors of a process whose stdout is a wire (the stdio server, the proxy)."""

from __future__ import annotations

import contextlib
import os


def claim_standard_fds() -> tuple[int, int]:
    """Private copies of stdin and stdout for the wire; fd 0 reads nothing, fd 1 is stderr.

    A stray ``print`` (ours or a library's) then goes to the log instead of corrupting a frame.
    """
    stdin, stdout = os.dup(0), os.dup(1)
    for fd in (stdin, stdout):
        os.set_inheritable(fd, False)
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    with contextlib.suppress(OSError):
        os.dup2(2, 1)
    return stdin, stdout
