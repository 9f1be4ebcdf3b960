"""Vestige: a local memory for AI agents, kept in one SQLite file that processes share safely.

The library is the product; the ``vestige-mcp`` server and the ``vestige`` CLI are thin
faces over :class:`Store`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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
from vestige.models import Decision, Memory, SearchHit
from vestige.store import Store

try:
    __version__ = version("vestige")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

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
