"""Data-directory rules: precedence, path handling, permissions, platform defaults, bad input."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs.windows
import pytest

from tests.fs_helpers import small_tmpfs
from vestige import Store
from vestige.config import (
    DATA_DIR_ENV,
    DURABILITY_ENV,
    DataDirSource,
    Durability,
    default_data_dir,
    durability_from_env,
    resolve_data_dir,
)
from vestige.errors import ConfigError, DataDirError


def tree(root: Path) -> set[Path]:
    """Every path under root: to prove a failed open created nothing anywhere."""
    return {p.relative_to(root) for p in root.rglob("*")}


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# -- precedence ---------------------------------------------------------------------------


def test_argument_beats_environment_and_default(tmp_path: Path) -> None:
    env = {DATA_DIR_ENV: str(tmp_path / "from-env")}
    resolved = resolve_data_dir(tmp_path / "from-arg", environ=env)
    assert resolved.path == tmp_path / "from-arg"
    assert resolved.source is DataDirSource.ARGUMENT
    assert resolved.database == tmp_path / "from-arg" / "vestige.db"


def test_environment_beats_default(tmp_path: Path) -> None:
    resolved = resolve_data_dir(None, environ={DATA_DIR_ENV: str(tmp_path / "from-env")})
    assert resolved.path == tmp_path / "from-env"
    assert resolved.source is DataDirSource.ENVIRONMENT


def test_environment_is_read_from_the_process_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env-dir"))
    with Store.open() as store:
        assert store.path == tmp_path / "env-dir" / "vestige.db"
    assert (tmp_path / "env-dir" / "vestige.db").is_file()


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_empty_environment_value_is_ignored(value: str) -> None:
    resolved = resolve_data_dir(None, environ={DATA_DIR_ENV: value}, platform="linux")
    assert resolved.source is DataDirSource.DEFAULT
    assert resolved.path == default_data_dir("linux")


def test_default_when_nothing_is_set() -> None:
    resolved = resolve_data_dir(None, environ={}, platform="linux")
    assert resolved.source is DataDirSource.DEFAULT
    assert resolved.path == Path(os.environ["XDG_DATA_HOME"]) / "vestige" / "core"


@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_empty_argument_is_an_error_even_with_env_set(tmp_path: Path, value: str) -> None:
    env = {DATA_DIR_ENV: str(tmp_path / "from-env")}
    with pytest.raises(DataDirError, match="empty") as info:
        resolve_data_dir(value, environ=env)
    assert "--data-dir" in info.value.hint
    with pytest.raises(DataDirError):
        Store.open(value, environ=env)
    assert not (tmp_path / "from-env").exists()


# -- path handling ----------------------------------------------------------------------


def test_leading_tilde_is_the_home_directory() -> None:
    home = Path(os.environ["HOME"])
    assert resolve_data_dir("~/vestige-x", environ={}).path == home / "vestige-x"
    assert resolve_data_dir("~", environ={}).path == home


def test_tilde_in_environment_value_is_expanded() -> None:
    # The seed's example quotes the value, so the shell leaves "~" for Vestige to expand.
    resolved = resolve_data_dir(None, environ={DATA_DIR_ENV: "~/.vestige"})
    assert resolved.path == Path(os.environ["HOME"]) / ".vestige"


@pytest.mark.skipif(os.name != "posix", reason="~NAME homes come from the POSIX user database")
def test_tilde_user_form_is_that_users_home() -> None:
    import pwd  # noqa: PLC0415 - POSIX only

    root_home = Path(pwd.getpwnam("root").pw_dir)
    assert resolve_data_dir("~root/x", environ={}).path == root_home / "x"


def test_tilde_of_an_unknown_user_is_refused_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataDirError) as info:
        resolve_data_dir("~no-such-user-x/x", environ={})
    assert "there is no user 'no-such-user-x'" in info.value.message
    assert info.value.hint
    with pytest.raises(DataDirError):
        Store.open("~no-such-user-x/x")
    assert tree(tmp_path) == set()  # no ./~no-such-user-x folder


def test_a_path_longer_than_sqlite_opens_is_refused_before_creating_anything(
    tmp_path: Path,
) -> None:
    deep = tmp_path.joinpath(*["d" * 100] * 5)  # > 512 bytes with /vestige.db-journal
    with pytest.raises(DataDirError) as info:
        Store.open(deep)
    assert "too long: SQLite opens paths of at most 512 bytes" in info.value.message
    assert tree(tmp_path) == set()


def test_a_path_part_longer_than_a_file_name_is_refused(tmp_path: Path) -> None:
    target = tmp_path / ("n" * 300) / "data"
    with pytest.raises(DataDirError) as info:
        Store.open(target)
    assert "a part of 300 bytes" in info.value.message
    assert tree(tmp_path) == set()


def test_folders_made_for_a_data_dir_are_removed_when_the_disk_runs_out(tmp_path: Path) -> None:
    # A real tmpfs with room for 3 more inodes: a/b/c can be made, a/b/c/d/data cannot.
    with small_tmpfs(tmp_path / "small", nr_inodes=4) as mount:
        target = mount / "a" / "b" / "c" / "d" / "data"
        with pytest.raises(DataDirError) as info:
            Store.open(target)
        assert f"cannot create the data directory {target}: the disk holding it is full" in (
            info.value.message
        )
        assert tree(mount) == set()  # a, a/b and a/b/c were removed again


def test_relative_path_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    resolved = resolve_data_dir("./.vestige", environ={})
    assert resolved.path == work / ".vestige"
    assert resolved.path.is_absolute()
    with Store.open("./.vestige") as store:
        store.ingest("relative data dir")
    assert (work / ".vestige" / "vestige.db").is_file()


def test_resolving_creates_nothing(tmp_path: Path) -> None:
    resolve_data_dir(tmp_path / "a" / "b", environ={})
    assert tree(tmp_path) == set()


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_new_directory_is_0700_and_database_0600(tmp_path: Path, mask: int) -> None:
    # With umask 000 the modes can only come from Vestige's explicit chmod.
    target = tmp_path / "nested" / "data"
    with umask(mask), Store.open(target) as store:
        store.ingest("private")
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        assert stat.S_IMODE((target / "vestige.db").stat().st_mode) == 0o600
        assert stat.S_IMODE((target / "vestige.gate.lock").stat().st_mode) == 0o600
    assert stat.S_IMODE((target / "vestige.db").stat().st_mode) == 0o600


def test_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(0o755)
    with Store.open(target):
        pass
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "vestige.db").stat().st_mode) == 0o600


def test_existing_database_is_made_private(tmp_path: Path) -> None:
    target = tmp_path / "data"
    with Store.open(target):
        pass
    (target / "vestige.db").chmod(0o644)
    with Store.open(target):
        pass
    assert stat.S_IMODE((target / "vestige.db").stat().st_mode) == 0o600


# -- bad data directories ---------------------------------------------------------------


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("hello")
    before = tree(tmp_path)
    with pytest.raises(DataDirError) as info:
        Store.open(file)
    assert str(file) in info.value.message
    assert "not a directory" in info.value.message
    assert info.value.hint
    assert tree(tmp_path) == before
    assert file.read_text() == "hello"


def test_path_under_a_file_is_refused(tmp_path: Path) -> None:
    # Fails for root too (unlike a chmod-ed directory): a file cannot have children.
    file = tmp_path / "plain-file"
    file.write_text("x")
    target = file / "sub" / "data"
    before = tree(tmp_path)
    with pytest.raises(DataDirError) as info:
        Store.open(target)
    assert str(target) in info.value.message
    assert tree(tmp_path) == before


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root bypasses directory permissions, so an unwritable directory cannot be made; "
    "test_path_under_a_file_is_refused covers an unusable path for root",
)
def test_unwritable_directory_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(DataDirError) as info:
            Store.open(locked)
        assert str(locked) in info.value.message
        assert "writable" in info.value.message
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_empty_argument_to_store_open_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    with pytest.raises(DataDirError):
        Store.open("")
    assert tree(tmp_path) == before


# -- platform defaults ------------------------------------------------------------------------


def test_linux_default_uses_xdg_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir("linux") == tmp_path / "xdg" / "vestige" / "core"


def test_linux_default_without_xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME")
    home = Path(os.environ["HOME"])
    assert default_data_dir("linux") == home / ".local" / "share" / "vestige" / "core"


@pytest.mark.parametrize("xdg", [True, False])
def test_macos_default_is_application_support(monkeypatch: pytest.MonkeyPatch, xdg: bool) -> None:
    # The seed promises this path whatever XDG_DATA_HOME says (the Rust original ignored it).
    if not xdg:
        monkeypatch.delenv("XDG_DATA_HOME")
    home = Path(os.environ["HOME"])
    expected = home / "Library" / "Application Support" / "com.vestige.core"
    assert default_data_dir("darwin") == expected


def test_windows_default_is_appdata_vestige_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appdata = tmp_path / "Users" / "sam" / "AppData" / "Roaming"
    asked: list[str] = []

    def fake_get_win_folder(csidl_name: str) -> str:
        asked.append(csidl_name)
        return str(appdata)

    monkeypatch.setattr(platformdirs.windows, "get_win_folder", fake_get_win_folder)
    assert default_data_dir("win32") == appdata / "vestige" / "core"
    assert asked == ["CSIDL_APPDATA"]  # roaming %APPDATA%, not %LOCALAPPDATA%


def test_default_is_used_by_store_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with Store.open() as store:
        assert store.data_dir.source is DataDirSource.DEFAULT
        assert store.path == default_data_dir() / "vestige.db"
    # conftest points HOME and XDG_DATA_HOME into tmp_path: never the real memory.
    assert str(default_data_dir()).startswith(os.environ["HOME"])


# -- durability setting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", Durability.BALANCED),
        ("balanced", Durability.BALANCED),
        ("hardened", Durability.HARDENED),
        (" HARDENED ", Durability.HARDENED),
    ],
)
def test_durability_from_env(value: str, expected: Durability) -> None:
    assert durability_from_env({DURABILITY_ENV: value}) is expected


def test_bad_durability_in_env_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        durability_from_env({DURABILITY_ENV: "paranoid"})
    assert DURABILITY_ENV in info.value.message
    assert "balanced" in info.value.hint
    assert "hardened" in info.value.hint
