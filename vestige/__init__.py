"""Vestige: a local memory for AI agents, kept in one SQLite file that processes share safely.

The library is the product; the ``vestige-mcp`` server and the ``vestige`` CLI are thin
faces over :class:`Store`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vestige.config import DataDir, DataDirSource, Durability, resolve_data_dir
from vestige.errors import (
    ConfigError,
    CorruptionError,
    DataDirError,
    ImportFileError,
    InvalidInput,
    MemoryNotFound,
    MigrationError,
    SQLiteTooOld,
    StoreBusyError,
    StoreError,
    VestigeError,
)

if TYPE_CHECKING:
    from vestige.models import Decision, Memory, SearchHit
    from vestige.store import Store

    __version__: str

#: Imported on first use: a refused `vestige-mcp` launch must exit before paying for APSW
#: and the store (the owner check only needs config and errors).
_LAZY: dict[str, str] = {
    "Decision": "vestige.models",
    "Memory": "vestige.models",
    "SearchHit": "vestige.models",
    "Store": "vestige.store",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vestige' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _version() -> str:
    """Read from the installed metadata on first use, as stamina does: importing
    importlib.metadata and finding the distribution was a third of `import vestige`
    (issue 12: `vestige stats` start-up), and most commands never show the version."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    global __version__  # noqa: PLW0603 - computed once, then an ordinary attribute
    try:
        __version__ = version("vestige")
    except PackageNotFoundError:  # running from a source tree that was never installed
        __version__ = "0+unknown"
    return __version__


__all__ = [
    "ConfigError",
    "CorruptionError",
    "DataDir",
    "DataDirError",
    "DataDirSource",
    "Decision",
    "Durability",
    "ImportFileError",
    "InvalidInput",
    "Memory",
    "MemoryNotFound",
    "MigrationError",
    "SQLiteTooOld",
    "SearchHit",
    "Store",
    "StoreBusyError",
    "StoreError",
    "VestigeError",
    "__version__",
    "resolve_data_dir",
]
