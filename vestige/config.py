"""Where the memory lives, and the named defaults every part of Vestige shares.

This module is the one place for the data-directory rules, so the server, the CLI and the
library always agree on which file they open:

1. an explicit ``--data-dir`` (library: the ``data_dir`` argument),
2. else ``VESTIGE_DATA_DIR`` (an empty value is ignored),
3. else the platform default (macOS ``~/Library/Application Support/com.vestige.core``,
   Linux ``$XDG_DATA_HOME/vestige/core`` i.e. ``~/.local/share/vestige/core``,
   Windows ``%APPDATA%\\vestige\\core``).

The value is always a directory; the database is ``<dir>/vestige.db``.  The names of the
backups Vestige makes (``backup_names``) are ruled here too.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
import stat
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import apsw
import platformdirs.unix
import platformdirs.windows

from vestige.errors import ConfigError, DatabaseMissing, DataDirError
from vestige.printable import escape_controls, shell_arg

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Environment variable naming the data directory (beaten by an explicit argument).
DATA_DIR_ENV: Final = "VESTIGE_DATA_DIR"
#: Environment variable choosing durability: "balanced" (synchronous=NORMAL) or "hardened" (FULL).
DURABILITY_ENV: Final = "VESTIGE_SQLITE_DURABILITY"
#: "1" turns off the write gate and the retry (busy_timeout only): the load test's baseline,
#: to show what they buy.  Never set it for real use.
NAIVE_WRITES_ENV: Final = "VESTIGE_UNSAFE_NAIVE_WRITES"
#: Milliseconds to sleep inside every write transaction, before COMMIT: a fault the load
#: test's own test injects to prove its latency bounds catch a slow write path.  Never set
#: it for real use.
WRITE_DELAY_ENV: Final = "VESTIGE_FAULT_WRITE_DELAY_MS"
#: How many changelog entries to keep (default CHANGELOG_KEEP_ROWS).
CHANGELOG_KEEP_ENV: Final = "VESTIGE_CHANGELOG_KEEP"

DATABASE_FILE: Final = "vestige.db"
#: The cross-process write gate: a kernel lock on its own file, never on the database files.
GATE_FILE: Final = "vestige.gate.lock"
BACKUP_DIR: Final = "backups"
#: A backup named by Vestige is ``<prefix>-<UTC time>.db`` (then ``-2``, ``-3`` in one second).
BACKUP_PREFIX: Final = "vestige"
BACKUP_STAMP: Final = "%Y%m%d-%H%M%S"

#: The injected write delay stays well under the write deadline.
MAX_WRITE_DELAY_MS: Final = 1_000.0

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600

#: The longest name SQLite gives a file beside the database (``vestige.db-journal``).
_LONGEST_SUFFIX: Final = "-journal"
#: A file or folder name's limit on every filesystem Vestige supports (NAME_MAX).
_NAME_MAX: Final = 255
#: SQLite's unix VFS limit, for a default VFS that does not say (``mxPathname``).
_SQLITE_MAX_PATH_FALLBACK: Final = 512

#: The oldest SQLite Vestige accepts: 3.51.3 fixed the WAL-reset corruption bug (3.7.0-3.51.2).
MIN_SQLITE_VERSION: Final = (3, 51, 3)

# Connection settings (both connections), with units.
BUSY_TIMEOUT_MS: Final = 5_000
CACHE_SIZE_KIB: Final = 64_000  # PRAGMA cache_size takes -KiB
MMAP_SIZE_BYTES: Final = 268_435_456  # 256 MiB
JOURNAL_SIZE_LIMIT_BYTES: Final = 67_108_864  # 64 MiB: WAL truncated to this when it resets
#: A write that leaves the WAL this long (4 KiB pages) checkpoints it after the write, out of
#: the write gate (SQLite's auto-checkpoint threshold, which would do it inside COMMIT).
WAL_CHECKPOINT_PAGES: Final = 1_000
#: 0x10000 check all tables, 0x10 bounded analysis (analysis_limit), 0x2 run ANALYZE where useful.
#: 0x10002 (the Rust original's value) has no analysis limit and grows with the database.
OPTIMIZE_MASK: Final = 0x10012

# Write transactions.
WRITE_DEADLINE_S: Final = 10.0  # a write that cannot start within this fails with StoreBusyError
RETRY_BASE_S: Final = 0.005  # full-jitter backoff: uniform(0, min(cap, base * 2**attempt))
RETRY_CAP_S: Final = 0.250

# Input limits.
MAX_CONTENT_BYTES: Final = 1_000_000  # UTF-8 bytes, as the Rust original
MAX_TAGS: Final = 50
MAX_TAG_CHARS: Final = 100
MAX_SOURCE_CHARS: Final = 2_000
MAX_QUERY_CHARS: Final = 10_000
MAX_LIMIT: Final = 1_000

# Maintenance.
DECAY_BATCH_ROWS: Final = 500  # rows per decay transaction: keeps each write short
#: The changelog keeps this many newest entries; the decay pass trims the rest, in batches
#: of CHANGELOG_TRIM_BATCH_ROWS.  A reader asking for older ones is told of the gap.
CHANGELOG_KEEP_ROWS: Final = 100_000
CHANGELOG_TRIM_BATCH_ROWS: Final = 5_000
CHANGELOG_DEFAULT_LIMIT: Final = 50  # changes per page, MCP and `vestige log`
CHANGELOG_MAX_LIMIT: Final = 1_000
MAINTENANCE_LEASE_S: Final = 60.0  # a claimed run that stops renewing is free after this
#: A request key (``vestige.request_keys``) is remembered this long, then a repeat runs
#: again.  A day: far longer than any failover (seconds) or client retry (minutes at most),
#: so a retry always finds its key, and short enough that the table stays small (one row of
#: a few hundred bytes per keyed write of the last day).
REQUEST_KEY_TTL_S: Final = 24 * 3600.0


class DataDirSource(StrEnum):
    """Which rule chose the data directory (shown by `vestige doctor`)."""

    ARGUMENT = "argument"
    ENVIRONMENT = "environment"
    DEFAULT = "default"


class Durability(StrEnum):
    """How hard a commit pushes to disk.

    ``balanced`` (synchronous=NORMAL) survives a crash or kill -9 of any process; a power
    loss may roll back the last transactions.  ``hardened`` (synchronous=FULL) also survives
    power loss, at about 3x the cost per commit.
    """

    BALANCED = "balanced"
    HARDENED = "hardened"


@dataclass(frozen=True, slots=True)
class DataDir:
    """A resolved data directory and the rule that chose it."""

    path: Path
    source: DataDirSource

    @property
    def database(self) -> Path:
        return self.path / DATABASE_FILE

    @property
    def sqlite_files(self) -> tuple[Path, Path, Path]:
        """The database and the two files SQLite keeps beside it in WAL mode.

        They belong together: only SQLite opens them, and they are moved together or not at
        all (a -wal without its database, or with another one, is damage).
        """
        db = self.database
        return db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")

    @property
    def gate(self) -> Path:
        return self.path / GATE_FILE

    @property
    def backups(self) -> Path:
        return self.path / BACKUP_DIR

    def describe(self) -> str:
        """The path and the rule that chose it, for messages: "/x (chosen by --data-dir)"."""
        why = {
            DataDirSource.ARGUMENT: "chosen by --data-dir",
            DataDirSource.ENVIRONMENT: f"chosen by {DATA_DIR_ENV}",
            DataDirSource.DEFAULT: "the platform default",
        }[self.source]
        return f"{self.path} ({why})"


def default_data_dir(platform: str | None = None) -> Path:
    """The platform's default data directory (``platform`` as in ``sys.platform``)."""
    platform = platform or sys.platform
    if platform == "darwin":
        # The seed's reverse-DNS name, as the Rust original used.  Not platformdirs' MacOS:
        # since 4.3 it honours XDG_DATA_HOME on macOS, which would move the memory.
        return Path.home() / "Library" / "Application Support" / "com.vestige.core"
    if platform.startswith("win"):
        # %APPDATA% (roaming), then vestige\core.
        return Path(platformdirs.windows.Windows("core", "vestige", roaming=True).user_data_dir)
    # Unix: $XDG_DATA_HOME (default ~/.local/share) / vestige / core.
    return Path(platformdirs.unix.Unix("vestige").user_data_dir) / "core"


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    environ: dict[str, str] | None = None,
    platform: str | None = None,
) -> DataDir:
    """Apply the precedence rules; expand ``~`` and make the path absolute. Creates nothing."""
    env = os.environ if environ is None else environ
    if data_dir is not None:
        raw, source = os.fspath(data_dir), DataDirSource.ARGUMENT
        if not raw.strip():
            raise DataDirError(
                "the data directory given is empty",
                hint="Pass a directory path, e.g. --data-dir ./.vestige, or leave it out.",
            )
    elif env.get(DATA_DIR_ENV, "").strip():
        raw, source = env[DATA_DIR_ENV], DataDirSource.ENVIRONMENT
    else:
        return DataDir(default_data_dir(platform), DataDirSource.DEFAULT)
    return DataDir(_absolute(raw), source)


def _absolute(raw: str) -> Path:
    # "~" is the home directory and "~name" that user's, as in a shell; an unknown name is
    # an error, never a folder called "~name" in the working directory.  A relative path
    # is taken from the working directory.
    if raw.startswith("~"):
        expanded = os.path.expanduser(raw)
        if expanded == raw:
            user = raw[1:].split("/", 1)[0].split(os.sep, 1)[0]
            raise DataDirError(
                f"the data directory {raw} starts with ~{user}, but there is no user {user!r}",
                hint="Write the path out in full, or use ~ (your home) or ~NAME of an "
                "existing user.",
            )
        raw = expanded
    return Path(os.path.abspath(raw))


def check_data_dir(data_dir: DataDir) -> os.stat_result | None:
    """What can be told of a data directory without creating anything: its path is not too
    long, and it is a directory if it exists.  Its ``stat``, or None when it does not exist.

    :raises DataDirError: it is not usable, with what to do.
    """
    check_path_length(data_dir)
    st = _stat(data_dir.path)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise DataDirError(
            f"the data directory {data_dir.path} exists but is not a directory",
            hint="Point --data-dir (or VESTIGE_DATA_DIR) at a directory; Vestige keeps "
            f"{DATABASE_FILE} inside it.",
        )
    return st


def prepare_data_dir(data_dir: DataDir) -> DataDir:
    """Create the directory if missing (0700 when created) and check it is usable.

    Nothing is created for a path SQLite could not open, and a creation that fails half way
    removes the folders it made.
    """
    path = data_dir.path
    st = check_data_dir(data_dir)
    if st is None:
        try:
            make_private_dir(path)
        except OSError as exc:
            raise _unusable(path, exc, "cannot create the data directory") from exc
    if mounted_read_only(path):
        raise read_only_filesystem(path, "nothing can be written there")
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(
            f"the data directory {path} is not writable by this user{_owned_by_other(path)}",
            hint=_give_back_hint([path], recursive=True)
            or f"Fix its permissions (chmod u+rwx {shell_arg(path)}) or choose another --data-dir.",
        )
    refuse_linked_database(data_dir)
    _refuse_non_file(data_dir)
    refuse_foreign_files(data_dir, writing=True)
    return data_dir


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents, each 0700 whatever the umask.

    An existing folder is left as it is.  If a step fails, the folders made before it are
    removed again, so a failed start leaves nothing behind.
    """
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if _stat(folder) is not None:
            break
        missing.append(folder)
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=DIR_MODE)
            except FileExistsError:
                if not folder.is_dir():
                    raise
                continue  # another process made it first: fine, and not ours to remove
            made.append(folder)
            folder.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    except OSError:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def check_path_length(data_dir: DataDir) -> None:
    """Refuse a directory whose database path is longer than SQLite can open.

    SQLite's file names (``vestige.db-journal`` the longest) must fit its VFS's limit,
    and every part of the path the filesystem's; checked before anything is created.
    """
    limit = _sqlite_max_path()
    longest = len(os.fsencode(data_dir.database)) + len(_LONGEST_SUFFIX)
    if longest > limit:
        raise DataDirError(
            f"the data directory {data_dir.path} is too long: SQLite opens paths of at most "
            f"{limit} bytes, and {data_dir.database}{_LONGEST_SUFFIX} has {longest}",
            hint="Choose a shorter --data-dir (or VESTIGE_DATA_DIR).",
        )
    for part in data_dir.path.parts:
        if len(os.fsencode(part)) > _NAME_MAX:
            raise DataDirError(
                f"the data directory {data_dir.path} has a part of {len(os.fsencode(part))} "
                f"bytes ({part[:20]}...); a file or folder name has at most {_NAME_MAX}",
                hint="Choose a shorter --data-dir (or VESTIGE_DATA_DIR).",
            )


def _sqlite_max_path() -> int:
    default = apsw.vfs_names()[0]
    for vfs in apsw.vfs_details():
        if vfs["zName"] == default:
            return int(vfs["mxPathname"])
    return _SQLITE_MAX_PATH_FALLBACK


def _stat(path: Path) -> os.stat_result | None:
    """``path``'s stat, None if it does not exist; a path that cannot be looked at fails."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _unusable(path, exc, "cannot use the data directory") from exc


def _unusable(path: Path, exc: OSError, what: str) -> DataDirError:
    """One line for an OS error on the data directory, naming the folder that refused."""
    if isinstance(exc, PermissionError):
        blocked = _first_closed_parent(path)
        if blocked is not None:
            return DataDirError(
                f"{what} {path}: this user may not enter {blocked}",
                hint=f"Run as a user who may, fix it (chmod u+x {blocked}), or choose another "
                "--data-dir.",
            )
    if exc.errno == errno.EROFS:
        return read_only_filesystem(path, what)
    if exc.errno == errno.ENOSPC:
        return DataDirError(
            f"{what} {path}: the disk holding it is full",
            hint="Free some space there, or choose a --data-dir on another disk.",
        )
    return DataDirError(
        f"{what} {path}: {exc.strerror or exc}",
        hint="Choose a location you can write to with --data-dir or VESTIGE_DATA_DIR.",
    )


def _first_closed_parent(path: Path) -> Path | None:
    """The outermost folder above ``path`` that this user may not enter, if any."""
    for parent in reversed(path.parents):
        try:
            if not stat.S_ISDIR(parent.stat().st_mode):
                return None
        except OSError:
            return None
        if not os.access(parent, os.X_OK):
            return parent
    return None


def refuse_linked_database(data_dir: DataDir) -> None:
    """Refuse a ``vestige.db`` that another directory can reach too: every command, the
    server and doctor's report go through here.

    A symbolic link into another directory is used there under that directory's write gate
    and owner lock, so two gates let two writers in at once.  A hard link is worse: SQLite
    keeps a ``-wal`` and ``-shm`` beside each name, so two processes write one file with two
    WALs that know nothing of each other, which corrupts it.  A link within the directory
    is the same file under the same gate, and is fine.  Only ``lstat`` looks at it.
    """
    database = data_dir.database
    try:
        st = os.lstat(database)
    except OSError:
        return  # not created yet, or unreadable: the store reports that itself
    shown = escape_controls(str(database))
    if stat.S_ISLNK(st.st_mode):
        real = Path(os.path.realpath(database))
        if real.parent == Path(os.path.realpath(data_dir.path)):
            return
        raise DataDirError(
            f"{shown} is a symbolic link to {escape_controls(str(real))}, in another directory; "
            "used through the link, it would be written under another write gate and owner "
            "lock than the processes using it there, so Vestige refuses it",
            hint=f"Use the directory that holds the file: --data-dir "
            f"{shell_arg(real.parent)} (or move the file here in place of the link).",
        )
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        raise DataDirError(
            f"{shown} has {st.st_nlink} hard links: another directory can open the same file "
            "under another name, with another write gate, owner lock and -wal, which "
            "corrupts it",
            hint="Keep one name: replace the other links with copies made by `vestige backup`, "
            "or remove them.",
        )


def _refuse_non_file(data_dir: DataDir) -> None:
    db = data_dir.database
    if db.exists() and not db.is_file():
        raise DataDirError(
            f"{db} is not a regular file", hint="Move it away; Vestige keeps a SQLite file there."
        )


# -- read-only filesystems and files that belong to someone else ----------------------------


def mounted_read_only(path: Path) -> bool:
    """Is the filesystem holding ``path`` (or its nearest existing folder) mounted read-only?

    Such a memory can still be read: SQLite opens it without its write gate and without
    creating ``-wal``/``-shm`` (``read_only_uri``).  Nothing can be written, whatever the
    permissions say, so no message may advise ``chmod``.
    """
    for folder in (path, *path.parents):
        try:
            flags = os.statvfs(folder).f_flag
        except FileNotFoundError:
            continue
        except (OSError, AttributeError):  # no statvfs (Windows), or no way to look
            return False
        return bool(flags & getattr(os, "ST_RDONLY", 1))
    return False


def _mount_point(path: Path) -> Path:
    """The folder where the filesystem holding ``path`` is mounted (the last one on its device)."""
    path = next((p for p in (path, *path.parents) if p.exists()), path)
    try:
        device = path.stat().st_dev
        for parent in path.parents:
            if parent.stat().st_dev != device:
                return path
            path = parent
    except OSError:
        pass
    return path


def read_only_filesystem(path: Path, what: str, *, upgrade: bool = False) -> DataDirError:
    """One message for a write refused because ``path``'s filesystem is mounted read-only.

    ``upgrade``: the database has an older schema, which this version can neither read
    nor upgrade there, so the usual advice (read there, or back it up elsewhere) would fail.
    """
    mount = _mount_point(path)
    remount = f"mount -o remount,rw {shell_arg(mount)}"
    if upgrade:
        hint = (
            f"This database was written by an older vestige and must be upgraded once before "
            f"this version can read it. Remount the filesystem read-write ({remount}) and run "
            f"any vestige command on it, or copy the whole data directory to a writable disk "
            f"(cp -a {shell_arg(path.parent)} DEST) and use --data-dir DEST."
        )
    else:
        hint = (
            f"Reading works there (search, stats, export, doctor). To write, remount it "
            f"read-write ({remount}), or choose a --data-dir on a writable disk (vestige "
            "backup PATH copies the memory there)."
        )
    return DataDirError(
        f"the filesystem holding {path} is mounted read-only ({mount}): {what}", hint=hint
    )


def read_only_uri(database: Path) -> str:
    """How SQLite reads ``database`` on a read-only filesystem, creating and changing nothing.

    With ``-shm`` there (a server was running, or was killed), ``readonly_shm`` maps it
    read-only and reads the WAL too.  Without it, SQLite cannot build the shared memory a
    WAL database needs (it would create ``-shm``) and refuses to open, so the file is read
    as ``immutable``: nobody can write to it on this mount, which is what that promises.
    A ``-wal`` with changes in it but no ``-shm`` cannot be read that way without losing
    them, so it is refused.
    """
    _, wal, shm = DataDir(database.parent, DataDirSource.ARGUMENT).sqlite_files
    base = f"file:{quote(str(database.absolute()))}?mode=ro"
    if shm.exists():
        return f"{base}&readonly_shm=1"
    if _size(wal) > 0:
        raise read_only_filesystem(
            database.parent,
            f"{wal.name} holds changes that SQLite can only read with {shm.name} beside it, "
            "and it cannot create that file here",
        )
    return f"{base}&immutable=1"


def header_journal_mode(database: Path) -> str:
    """The journal mode ``database`` records (bytes 18-19 of its header: 2 is WAL).

    For an immutable open, where ``PRAGMA journal_mode`` always says "delete".  Read through
    SQLite's own VFS, which keeps the process's locks on the file intact.
    """
    f = apsw.VFSFile("", str(database), [apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_MAIN_DB, 0])
    try:
        header = f.xRead(100, 0)
    finally:
        f.xClose()
    return "wal" if header[18:20] == b"\x02\x02" else "delete"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size  # stat only: SQLite's files are never opened outside SQLite
    except OSError:
        return 0


def refuse_foreign_files(data_dir: DataDir, *, writing: bool) -> None:
    """Refuse, naming owner and fix, when this user may not read (or write) Vestige's files.

    The usual cause is a ``sudo vestige ...`` run: the files it made belong to root, private
    to root, inside the user's own folder, and SQLite can only say "unable to open database
    file".  Only ``stat`` and ``os.access`` look at the files; nothing is opened.
    """
    need = os.R_OK | (os.W_OK if writing else 0)
    blocked = [
        p
        for p in (*data_dir.sqlite_files, data_dir.gate)
        if p.exists() and not p.is_dir() and not os.access(p, need)
    ]
    if not blocked:
        return
    names = ", ".join(p.name for p in blocked)
    may = "read and write" if writing else "read"
    raise DataDirError(
        f"this user ({_user_name(os.geteuid())}) may not {may} {names} in {data_dir.path}"
        f"{_owned_by_other(*blocked)}",
        hint=_give_back_hint(blocked)
        or f"Fix the permissions: chmod u+rw {' '.join(shell_arg(p) for p in blocked)}",
    )


def _owners(*paths: Path) -> set[int]:
    owners = set()
    for p in paths:
        with contextlib.suppress(OSError):
            owners.add(p.stat().st_uid)
    return owners - {os.geteuid()}


def _owned_by_other(*paths: Path) -> str:
    """``: it belongs to root (uid 0), ...``, or "" when every path is this user's."""
    owners = _owners(*paths)
    if not owners:
        return ""
    who = " and ".join(f"{_user_name(uid)} (uid {uid})" for uid in sorted(owners))
    sudo = ", perhaps made by a `sudo vestige ...` run" if 0 in owners else ""
    return f": {'they belong' if len(paths) > 1 else 'it belongs'} to {who}{sudo}"


def _give_back_hint(paths: list[Path], *, recursive: bool = False) -> str | None:
    """``sudo chown USER FILES`` when someone else owns them; None when this user does."""
    if not _owners(*paths):
        return None
    me = _user_name(os.geteuid())
    files = " ".join(shell_arg(p) for p in paths)
    return (
        f"Give {'it' if len(paths) == 1 else 'them'} back to yourself: sudo chown "
        f"{'-R ' if recursive else ''}{shell_arg(me)} {files}  (and run Vestige without sudo)"
    )


def _user_name(uid: int) -> str:
    try:
        import pwd  # noqa: PLC0415 - POSIX only

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def backup_names(folder: Path, prefix: str = BACKUP_PREFIX, suffix: str = ".db") -> Iterator[Path]:
    """The names a new backup in ``folder`` may take, best first: the first one free is it.

    ``<prefix>-<UTC time><suffix>``, then ``-2``, ``-3``, ... within the same second.  Two
    runs in one second are offered the same names, so the caller must claim a name in one
    atomic step (a hard link, ``O_EXCL``, ``mkdir``) and move on to the next when it is
    taken; a check-then-write would let one run fail, or overwrite the other.
    """
    stamp = datetime.now(UTC).strftime(BACKUP_STAMP)
    yield folder / f"{prefix}-{stamp}{suffix}"
    for n in itertools.count(2):
        yield folder / f"{prefix}-{stamp}-{n}{suffix}"


def require_database(data_dir: DataDir) -> DataDir:
    """Check that the directory holds a database to read; create nothing."""
    path, where = data_dir.path, data_dir.describe()
    check_path_length(data_dir)
    _stat(path)  # a path that cannot be looked at is named as such, not as missing
    if path.exists() and not path.is_dir():
        raise DataDirError(
            f"the data directory {where} is a file, not a directory",
            hint="Point --data-dir (or VESTIGE_DATA_DIR) at the directory that holds "
            f"{DATABASE_FILE}.",
        )
    if not path.exists():
        raise DatabaseMissing(
            f"the data directory {where} does not exist",
            hint="Check --data-dir / VESTIGE_DATA_DIR; `vestige doctor` shows which one is used.",
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise DataDirError(
            f"the data directory {where} cannot be read by this user",
            hint=f"Run as the user who owns it, or fix its permissions (chmod u+rwx {path}).",
        )
    if not data_dir.database.exists() or _is_empty_file(data_dir.database):
        # A 0-byte file is no database either: opening it would make a fresh, empty one
        # and a mistyped path would look like a memory that was wiped.
        raise DatabaseMissing(
            f"there is no Vestige database in {where}",
            hint="Check --data-dir / VESTIGE_DATA_DIR, or create it by starting vestige-mcp "
            "or running `vestige ingest TEXT`.",
        )
    refuse_linked_database(data_dir)
    _refuse_non_file(data_dir)
    refuse_foreign_files(data_dir, writing=not mounted_read_only(path))
    return data_dir


def _is_empty_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def durability_from_env(environ: dict[str, str] | None = None) -> Durability:
    env = os.environ if environ is None else environ
    raw = env.get(DURABILITY_ENV, "").strip().lower()
    if not raw:
        return Durability.BALANCED
    return parse_durability(raw, name=DURABILITY_ENV)


def parse_durability(value: str, *, name: str = "durability") -> Durability:
    try:
        return Durability(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(d.value for d in Durability)
        raise ConfigError(
            f"{name}={value!r} is not a durability profile",
            hint=f"Use one of: {choices}.",
        ) from None


def naive_writes_from_env(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get(NAIVE_WRITES_ENV, "").strip() == "1"


def write_delay_from_env(environ: dict[str, str] | None = None) -> float:
    """Seconds of injected delay per write transaction (0 unless the fault switch is set)."""
    env = os.environ if environ is None else environ
    raw = env.get(WRITE_DELAY_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        delay_ms = float(raw)
    except ValueError:
        delay_ms = math.nan
    if not 0 <= delay_ms <= MAX_WRITE_DELAY_MS:
        raise ConfigError(
            f"{WRITE_DELAY_ENV}={raw!r} is not a delay in milliseconds",
            hint=f"Use a number from 0 to {MAX_WRITE_DELAY_MS:g}, or unset it.",
        )
    return delay_ms / 1000


def changelog_keep_from_env(environ: dict[str, str] | None = None) -> int:
    """How many of the newest changelog entries the decay pass keeps."""
    env = os.environ if environ is None else environ
    raw = env.get(CHANGELOG_KEEP_ENV, "").strip()
    if not raw:
        return CHANGELOG_KEEP_ROWS
    try:
        keep = int(raw)
    except ValueError:
        keep = 0
    if not 1 <= keep <= 1_000_000_000:
        raise ConfigError(
            f"{CHANGELOG_KEEP_ENV}={raw!r} is not a number of changelog entries",
            hint=f"Use a whole number from 1 up (default {CHANGELOG_KEEP_ROWS:,}), or unset it.",
        )
    return keep


def secure_file(path: Path) -> None:
    """Make a file we created private to this user (0600); SQLite creates with the umask."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            path.chmod(FILE_MODE)
    except FileNotFoundError:
        pass
