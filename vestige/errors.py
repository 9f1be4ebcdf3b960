"""Every error Vestige raises on purpose.

A leaf module: it imports nothing from the rest of the package, so any module (and a
worker process unpickling an error) can use it.  Each error carries a ``hint`` naming the
next step a person can take; faces (the CLI, the MCP server) print ``message`` and ``hint``
and never a traceback.
"""

from __future__ import annotations

from typing import Any


class VestigeError(Exception):
    """Base of every error Vestige raises on purpose."""

    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return f"{self.message}\nHint: {self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # For pickling across processes: rebuild with the same message and hint.
        return (_rebuild, (type(self), self.message, self.hint, self.__dict__))


def _rebuild(
    cls: type[VestigeError], message: str, hint: str, state: dict[str, Any]
) -> VestigeError:
    err = cls.__new__(cls)
    VestigeError.__init__(err, message, hint=hint)
    err.__dict__.update(state)
    return err


class ConfigError(VestigeError, ValueError):
    """Raised when a setting (flag, environment variable, argument) has an unusable value."""


class DataDirError(ConfigError):
    """Raised when the data directory cannot be used: it is a file, unwritable, or empty."""


class InvalidInput(VestigeError, ValueError):
    """Raised when a caller passes a value the store refuses (empty content, bad tags, ...)."""


class StoreError(VestigeError):
    """Raised when the database itself cannot do what was asked."""


class SQLiteTooOld(StoreError):
    """Raised when the SQLite library is older than the version Vestige requires."""

    default_hint = "Upgrade APSW: pip install --upgrade apsw"


class MigrationError(StoreError):
    """Raised when the schema cannot be brought to the current version."""


class DatabaseMissing(StoreError):
    """Raised when a command that only reads finds no database (it never creates one)."""


class DatabaseInUse(StoreError):
    """Raised when other processes have the database open, so it must not be replaced."""


class StoreBusyError(StoreError, TimeoutError):
    """Raised when a write could not get the database within its deadline."""

    default_hint = (
        "Another process kept the database busy. Run `vestige doctor` to see which process "
        "holds it, then retry."
    )


class CorruptionError(StoreError):
    """Raised when SQLite reports the database file as damaged or not a database."""

    default_hint = (
        "Stop every process that uses this data directory and run `vestige doctor --deep`, "
        "which reads the whole file and names the next steps: `vestige salvage -o "
        "rescue.jsonl` reads what is still readable, then `vestige restore BACKUP "
        "--move-damaged` and `vestige import rescue.jsonl` bring back a backup and what came "
        "after it."
    )


class MemoryNotFound(StoreError, KeyError):
    """Raised when no memory has the given id."""

    default_hint = "Check the id; `vestige search` or the `search` tool lists existing memories."

    def __init__(self, memory_id: str) -> None:
        super().__init__(f"no memory with id {memory_id!r}")
        self.memory_id = memory_id

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return VestigeError.__str__(self)


class ImportFileError(InvalidInput):
    """Raised when an import file is not JSON Lines or has a bad row; nothing is imported.

    The message starts with where: ``<source>, line 3: ...`` (``item 3`` in a JSON array).
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        hint: str | None = None,
        unit: str = "line",
        source: str | None = None,
    ) -> None:
        where = ", ".join(p for p in (source, f"{unit} {line}" if line is not None else None) if p)
        super().__init__(
            f"{where}: {message}" if where else message,
            hint=hint or "Fix or remove that line; nothing was imported.",
        )
        self.line = line


class OwnerLockHeld(VestigeError):
    """Raised when another process holds the data directory's owner lock: the refusal.

    The message names the database and each live holder (pid, mode, command line, since
    when); the hint says what to do.  ``owners`` holds their ``vestige.owner.OwnerInfo``
    (empty while a holder is still starting and has not published itself).
    """

    def __init__(
        self, message: str, *, owners: tuple[Any, ...] = (), hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.owners = owners


class OwnerLockUnsupported(DataDirError):
    """Raised when the data directory's filesystem cannot take the owner lock (fail closed)."""
