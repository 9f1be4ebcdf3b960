"""Doctor's checks on the directory itself: where it is, its filesystem, its permissions.

Strictly private.  Only ``stat`` and ``os.access`` touch the files here; nothing is opened.
"""

from __future__ import annotations

import os
import stat
from typing import Final

import apsw
import psutil

from vestige import config
from vestige.config import DataDirSource
from vestige.doctor._report import Report, Status
from vestige.errors import DataDirError
from vestige.printable import shell_arg

#: Filesystem types where WAL's shared memory and file locks are not reliable (pitfall 14).
NETWORK_FILESYSTEMS: Final = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "afpfs", "afs", "ncpfs",
        "9p", "ceph", "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "fuse.sshfs", "sshfs",
        "davfs", "fuse.davfs", "webdav", "vboxsf", "vmhgfs", "fuse.vmhgfs-fuse", "prl_fs",
        "virtiofs", "drvfs", "fuse.s3fs", "fuse.rclone",
    }
)  # fmt: skip
SOURCE_LABELS: Final = {
    DataDirSource.ARGUMENT: "--data-dir",
    DataDirSource.ENVIRONMENT: config.DATA_DIR_ENV,
    DataDirSource.DEFAULT: "the platform default",
}


def check_data_dir(report: Report) -> bool:
    """Where the data is and which rule chose it; False when nothing more can be checked."""
    dd = report.data_dir
    path = dd.path
    report.facts["data_dir"] = {
        "path": str(path),
        "source": dd.source.value,
        "chosen_by": SOURCE_LABELS[dd.source],
        "exists": path.exists(),
    }
    chosen = f"{path} (chosen by {SOURCE_LABELS[dd.source]})"
    if path.exists() and not path.is_dir():
        report.add(
            "data-dir",
            Status.FAIL,
            f"{chosen} is a file, not a directory",
            "Point --data-dir or VESTIGE_DATA_DIR at the directory that holds vestige.db.",
        )
        return False
    if not path.exists():
        report.add(
            "data-dir",
            Status.FAIL,
            f"{chosen} does not exist",
            "Check --data-dir / VESTIGE_DATA_DIR; vestige-mcp creates it on first start.",
        )
        return False
    if not os.access(path, os.R_OK | os.X_OK):
        report.add(
            "data-dir",
            Status.FAIL,
            f"{chosen} cannot be read by this user",
            f"Run doctor as the directory's owner, or fix it: chmod u+rwx {path}",
        )
        return False
    report.add("data-dir", Status.OK, chosen)
    return True


def check_sqlite_version(report: Report) -> None:
    version = apsw.sqlite_lib_version()
    have = tuple(int(p) for p in version.split(".")[:3])
    need = ".".join(map(str, config.MIN_SQLITE_VERSION))
    if have < config.MIN_SQLITE_VERSION:
        report.add(
            "sqlite-version",
            Status.FAIL,
            f"SQLite {version} is older than {need} (it has the WAL-reset corruption bug)",
            "Upgrade APSW, which bundles SQLite: pip install --upgrade apsw",
        )
    else:
        report.add("sqlite-version", Status.OK, f"SQLite {version} (>= {need})")


def check_filesystem(report: Report) -> None:
    real = os.path.realpath(report.data_dir.path)
    best = None
    try:
        for part in psutil.disk_partitions(all=True):
            mount = part.mountpoint
            inside = real == mount or real.startswith(mount.rstrip(os.sep) + os.sep)
            if inside and (best is None or len(mount) > len(best.mountpoint)):
                best = part
    except (OSError, RuntimeError):
        best = None
    if best is None:
        report.add("filesystem", Status.WARN, "could not tell which filesystem holds it")
        return
    report.facts["filesystem"] = {"mountpoint": best.mountpoint, "type": best.fstype}
    if best.fstype.lower() in NETWORK_FILESYSTEMS or "remote" in best.opts.split(","):
        report.add(
            "filesystem",
            Status.WARN,
            f"a network or shared filesystem ({best.fstype} at {best.mountpoint}): "
            "SQLite's WAL and file locks are not reliable there",
            "Move the data directory to a local disk and point --data-dir at it.",
        )
    else:
        report.add("filesystem", Status.OK, f"{best.fstype} at {best.mountpoint} (local)")


def check_permissions(report: Report, *, sqlite_files: bool = True) -> None:
    """Can this user write here, and are the directory and files private to this user?

    ``sqlite_files=False`` leaves out the modes of ``vestige.db``, ``-wal`` and ``-shm``: for
    a file that is not Vestige's (``recheck_foreign``), which Vestige leaves as it is.
    """
    dd = report.data_dir
    if config.mounted_read_only(dd.path):
        refusal = config.read_only_filesystem(dd.path, "reads work, writes are refused")
        report.add("permissions", Status.WARN, refusal.message, refusal.hint or "")
        return
    if not os.access(dd.path, os.W_OK):
        try:
            config.prepare_data_dir(dd)  # only checks: the directory exists
        except DataDirError as exc:
            report.add("permissions", Status.FAIL, exc.message, exc.hint or "")
            return
    try:
        config.refuse_foreign_files(dd, writing=True)
    except DataDirError as exc:
        report.add("permissions", Status.FAIL, exc.message, exc.hint or "")
        return
    if os.name != "posix":
        report.add("permissions", Status.OK, "writable by this user")
        return
    problems: list[str] = []
    fixes: list[str] = []
    mode = stat.S_IMODE(dd.path.stat().st_mode)
    if mode & 0o077:
        problems.append(f"the directory is {mode:04o}, so other users can look in")
        fixes.append(f"chmod 700 {shell_arg(dd.path)}")
    for path in dd.sqlite_files if sqlite_files else ():
        try:
            st = path.stat()  # stat only: SQLite's files are never opened outside SQLite
        except FileNotFoundError:
            continue
        if stat.S_IMODE(st.st_mode) & 0o077:
            problems.append(f"{path.name} is {stat.S_IMODE(st.st_mode):04o}")
            fixes.append(f"chmod 600 {shell_arg(path)}")
        if st.st_uid != os.getuid():
            problems.append(f"{path.name} belongs to uid {st.st_uid}, not to you")
            fixes.append(
                f"run Vestige as uid {st.st_uid}, or chown {os.getuid()} {shell_arg(path)}"
            )
    if problems:
        report.add("permissions", Status.WARN, "; ".join(problems), "; ".join(fixes))
    else:
        report.add("permissions", Status.OK, "private to this user (0700 directory, 0600 files)")


def recheck_foreign(report: Report) -> None:
    """The database turned out not to be Vestige's: take the permissions check again without
    advice for its files (``chmod 600`` on a file Vestige says it will not touch), in place."""
    if not report.facts.get("database", {}).get("foreign"):
        return
    where = next((i for i, c in enumerate(report.checks) if c.name == "permissions"), None)
    if where is None:
        return
    del report.checks[where]
    check_permissions(report, sqlite_files=False)
    report.checks.insert(where, report.checks.pop())
