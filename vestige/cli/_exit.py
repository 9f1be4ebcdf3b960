"""The exit codes of `vestige`, named in one place (as pip's ``status_codes``).

Scripts can rely on them: they are documented in docs/CLI.md and never renumbered.
"""

from __future__ import annotations

from enum import IntEnum

from vestige.errors import (
    ConfigError,
    CorruptionError,
    DatabaseInUse,
    DatabaseMissing,
    InvalidInput,
    MemoryNotFound,
    MigrationError,
    OwnerLockHeld,
    OwnerLockUnsupported,
    StoreBusyError,
    VestigeError,
)


class ExitCode(IntEnum):
    OK = 0
    #: Something failed that is not one of the cases below.
    ERROR = 1
    #: A wrong command line: unknown option, missing argument, bad --data-dir (click uses 2).
    USAGE = 2
    #: `vestige doctor` (or `health`) found a failing check, or the database is damaged.
    UNHEALTHY = 3
    #: Another process holds what was needed: the owner lock, the database, the write gate.
    IN_USE = 4
    #: A file or value given to the command is unusable (import rows, restore file, target).
    BAD_INPUT = 5
    #: There is nothing to work on: no database in the data directory, no such memory.
    NOT_FOUND = 6


def exit_code_for(exc: VestigeError) -> ExitCode:
    """Map a library error to the exit code a script can branch on."""
    mapping: tuple[tuple[type[VestigeError], ExitCode], ...] = (
        (DatabaseMissing, ExitCode.NOT_FOUND),
        (MemoryNotFound, ExitCode.NOT_FOUND),
        (StoreBusyError, ExitCode.IN_USE),
        (OwnerLockHeld, ExitCode.IN_USE),
        (DatabaseInUse, ExitCode.IN_USE),
        (OwnerLockUnsupported, ExitCode.ERROR),
        (CorruptionError, ExitCode.UNHEALTHY),
        (MigrationError, ExitCode.UNHEALTHY),
        (ConfigError, ExitCode.USAGE),
        (InvalidInput, ExitCode.BAD_INPUT),
    )
    for kind, code in mapping:
        if isinstance(exc, kind):
            return code
    return ExitCode.ERROR
