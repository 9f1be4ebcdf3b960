"""Errors survive pickling (a worker process can hand them back) and always show their hint."""

from __future__ import annotations

import pickle

import pytest

from vestige import decay, errors
from vestige.errors import ImportFileError, MemoryNotFound, VestigeError

#: The storage layer's modules; errors of the faces (CLI, server) are tested with them.
STORAGE_MODULES = {errors.__name__, decay.__name__}


def all_subclasses(
    cls: type[VestigeError], *, include_self: bool = False
) -> list[type[VestigeError]]:
    found: list[type[VestigeError]] = [cls] if include_self else []
    for sub in cls.__subclasses__():
        found += all_subclasses(sub, include_self=True)
    return sorted(set(found), key=lambda c: c.__qualname__)


ERROR_CLASSES = [
    c for c in all_subclasses(VestigeError, include_self=True) if c.__module__ in STORAGE_MODULES
]


def make(cls: type[VestigeError], hint: str | None) -> VestigeError:
    if cls is MemoryNotFound:
        err = MemoryNotFound("0f8fad5b-d9cb-469f-a165-70867728950e")
        if hint is not None:
            err.hint = hint
        return err
    if issubclass(cls, ImportFileError):
        return cls("expected a JSON object", line=7, hint=hint)
    return cls("something specific went wrong", hint=hint)


def test_every_error_class_is_covered() -> None:
    names = {c.__name__ for c in ERROR_CLASSES}
    exported = {
        name
        for name in dir(errors)
        if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), Exception)
    }
    assert exported <= names
    assert "LeaseLost" in names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=[c.__name__ for c in ERROR_CLASSES])
@pytest.mark.parametrize("hint", ["Do this next: run `vestige doctor`.", None])
def test_pickle_round_trip(cls: type[VestigeError], hint: str | None) -> None:
    err = make(cls, hint)
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - bytes we just made
    assert type(copy) is cls
    assert copy.message == err.message
    assert copy.hint == err.hint
    assert str(copy) == str(err)
    assert copy.__dict__ == err.__dict__
    if isinstance(err, MemoryNotFound):
        assert copy.memory_id == err.memory_id == "0f8fad5b-d9cb-469f-a165-70867728950e"  # type: ignore[attr-defined]
    if isinstance(err, ImportFileError):
        assert copy.line == 7  # type: ignore[attr-defined]
        assert copy.message.startswith("line 7: ")


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=[c.__name__ for c in ERROR_CLASSES])
def test_str_contains_message_and_hint(cls: type[VestigeError]) -> None:
    err = make(cls, "Try the obvious fix.")
    assert err.message in str(err)
    assert str(err).endswith("Hint: Try the obvious fix.")
    default = make(cls, None)
    if default.hint:
        assert default.hint in str(default)
    else:
        assert str(default) == default.message


HINTED: list[type[VestigeError]] = [
    errors.StoreBusyError,
    errors.CorruptionError,
    errors.MemoryNotFound,
    errors.SQLiteTooOld,
    errors.ImportFileError,
]


@pytest.mark.parametrize("cls", HINTED, ids=[c.__name__ for c in HINTED])
def test_errors_people_meet_have_a_default_hint(cls: type[VestigeError]) -> None:
    assert make(cls, None).hint


def test_error_families() -> None:
    assert issubclass(errors.InvalidInput, ValueError)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.DataDirError, errors.ConfigError)
    assert issubclass(errors.StoreBusyError, TimeoutError)
    assert issubclass(errors.MemoryNotFound, KeyError)
    assert issubclass(errors.ImportFileError, errors.InvalidInput)
    assert "vestige doctor" in errors.StoreBusyError("x").hint


def test_memory_not_found_str_is_not_quoted_like_a_key_error() -> None:
    err = MemoryNotFound("abc")
    assert str(err).startswith("no memory with id 'abc'")
