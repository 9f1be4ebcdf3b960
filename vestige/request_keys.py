"""Request keys: a write sent again with the same key changes nothing and gets its first answer.

A caller that cannot tell whether its write committed (the process it asked died, the
connection dropped before the answer) sends the write again with the same key.  The key is
recorded in the write's own transaction, through ``Database.write`` like every write, so it
exists exactly when the write committed: a repeat finds it and gets the answer recorded with
it, a write that failed or never ran left no key and runs now.  No caller ever has to look
before it retries.

The store knows nothing of where a key comes from (the MCP server reads it from a tool
call's ``_meta``).  A caller names the call it makes (``fingerprint``: what was asked, and
with which arguments) and says how a result becomes the answer to record (``encode``, JSON
text), then makes its store call inside ``guarding``:

- the key is unknown: the call runs, and its first write transaction that commits records
  the key, the fingerprint and ``encode(result)`` before COMMIT;
- the key is known with the same fingerprint: that transaction stops before changing
  anything and raises ``RequestRepeated`` carrying the recorded answer;
- the key is known with another fingerprint: ``InvalidInput`` (a new key is needed).

One key guards one transaction, the first that commits in its context.  Every store call a
key is meant for writes in one transaction (ingest, smart_ingest, delete, edit, undo,
promote, demote); a store method that writes in several must make the transaction whose
result is its answer the first, or not be given a key (the decay pass is not: see
docs/SERVER.md).  Later transactions in the same context run unguarded.

Keys older than ``config.REQUEST_KEY_TTL_S`` are forgotten, deleted by the next keyed write
(an index on the time keeps that cheap): a repeat after that runs again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from vestige import config
from vestige._rows import as_str
from vestige.errors import InvalidInput

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    import apsw

T = TypeVar("T")

MIN_KEY_CHARS: Final = 8
MAX_KEY_CHARS: Final = 128
#: What a key may be: long enough to be unique when chosen at random, short enough to store
#: with every write, and plain enough to quote in a message as it is.
KEY_PATTERN: Final = re.compile(rf"[A-Za-z0-9._:-]{{{MIN_KEY_CHARS},{MAX_KEY_CHARS}}}")


def check_key(key: object) -> str:
    """``key`` if it is a valid request key; else InvalidInput saying what one is."""
    hint = (
        f"Send {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters of A-Z, a-z, 0-9 and . _ : - "
        "(a random UUID will do), the same for every retry of one call."
    )
    if not isinstance(key, str):
        raise InvalidInput(f"the request key must be a string, not {type(key).__name__}", hint=hint)
    if KEY_PATTERN.fullmatch(key) is None:
        shown = key if len(key) <= MAX_KEY_CHARS and key.isprintable() else "(not shown)"
        raise InvalidInput(f"the request key {shown!r} is not a valid request key", hint=hint)
    return key


def fingerprint(call: str, arguments: Mapping[str, object]) -> str:
    """A hash naming a call: ``call`` (e.g. a tool's name) and its arguments as canonical JSON.

    Two calls with the same name and equal arguments, in any key order, have the same one.
    """
    canonical = json.dumps(
        [call, arguments], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A call's request key, what the call is, and how its result becomes the answer kept."""

    key: str
    #: ``fingerprint(call, arguments)``: the same key with another one is refused.
    fingerprint: str
    #: The result of the guarded transaction -> the answer to record (JSON text).  It runs
    #: inside the transaction, before COMMIT: keep it quick.
    encode: Callable[[Any], str]
    #: Keys older than this are forgotten (a test may shorten it).
    ttl_s: float = config.REQUEST_KEY_TTL_S

    def __post_init__(self) -> None:
        check_key(self.key)


class RequestRepeated(Exception):
    """The call was made before with this key: nothing changed now; ``answer`` is the first.

    Not a ``VestigeError``: the caller that set the key catches it and answers with
    ``answer`` (the JSON text that ``RequestKey.encode`` made the first time).
    """

    def __init__(self, key: str, answer: str) -> None:
        super().__init__(f"request key {key!r} was already used for this call")
        self.key = key
        self.answer = answer


@dataclass(slots=True)
class _Pending:
    request: RequestKey
    #: A transaction of this context committed with the key (or found it): later ones
    #: run unguarded.
    used: bool = field(default=False)


_pending: ContextVar[_Pending | None] = ContextVar("vestige_request_key", default=None)


@contextmanager
def guarding(request: RequestKey | None) -> Iterator[None]:
    """Guard the first write transaction that commits in this context with ``request``.

    ``None`` guards nothing (a call without a key).  Set it in the thread that calls the
    store: a context variable does not follow a call into a thread started elsewhere.
    """
    token = _pending.set(_Pending(request) if request is not None else None)
    try:
        yield
    finally:
        _pending.reset(token)


def pending() -> _Pending | None:
    """For ``Database.write``: the key this context's next write transaction must record."""
    found = _pending.get()
    return found if found is not None and not found.used else None


def run_guarded(conn: apsw.Connection, guard: _Pending, fn: Callable[[apsw.Connection], T]) -> T:
    """Run ``fn(conn)`` in the caller's write transaction, guarded by ``guard``'s key.

    Expired keys go first (so an expired key is unknown here), then a known key stops the
    call before ``fn`` changes anything; the caller's transaction then rolls back empty.
    """
    request = guard.request
    now = time.time()
    conn.execute("DELETE FROM request_keys WHERE recorded_at < ?", (now - request.ttl_s,))
    rows = conn.execute(
        "SELECT fingerprint, answer FROM request_keys WHERE key = ?", (request.key,)
    ).fetchall()
    if rows:
        if as_str(rows[0][0], "request_keys.fingerprint") != request.fingerprint:
            raise InvalidInput(
                f"the request key {request.key!r} was already used for a different call; "
                "use a new key",
                hint="A request key names one call: send its retries with the same key and "
                "the same arguments, and every other call with a key of its own.",
            )
        raise RequestRepeated(request.key, as_str(rows[0][1], "request_keys.answer"))
    result = fn(conn)
    conn.execute(
        "INSERT INTO request_keys(key, fingerprint, answer, recorded_at) VALUES (?, ?, ?, ?)",
        (request.key, request.fingerprint, request.encode(result), now),
    )
    return result


def forget_answers_naming(conn: apsw.Connection, memory_id: str) -> int:
    """Delete the recorded answers that name ``memory_id``, in the caller's write transaction.

    For a purge: an answer may quote the memory's text (a smart_ingest's or an edit's), and
    a purged memory leaves no copy anywhere.  A repeat of such a call then runs again.  Ids
    are UUIDs, so a recorded answer names a memory exactly when it holds its id.  Returns
    how many were deleted.
    """
    conn.execute("DELETE FROM request_keys WHERE instr(answer, ?) > 0", (memory_id,))
    return conn.changes()
