"""Vestige: a local memory for AI agents, kept in one SQLite file that processes share safely.

The library is the product; the ``vestige-mcp`` server and the ``vestige`` CLI are thin
faces over :class:`Store`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
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

try:
    __version__ = version("vestige")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

#: Imported on first use: a refused `vestige-mcp` launch must exit before paying for APSW
#: and the store (the owner check only needs config and errors).
_LAZY: dict[str, str] = {
    "Decision": "vestige.models",
    "Memory": "vestige.models",
    "SearchHit": "vestige.models",
    "Store": "vestige.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vestige' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
