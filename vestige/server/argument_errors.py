"""Bad tool arguments, said in one line: which argument, what was wrong, what to send.

The SDK would answer with pydantic's dump (model names, ``[type=..., input_value=...]``, an
errors.pydantic.dev address), which reads as a crash to a model and to a person.  Here each
error is rewritten from the tool's own input schema, so the "send ..." part always matches
what ``tools/list`` published:

    unknown argument 'forceCreate'; did you mean 'force_create'?
    argument 'limit' is 0, below 1: send a whole number from 1 to 100
    argument 'limit' is "5" (a string): send a whole number from 1 to 100

Values are quoted as JSON (the client sent JSON), and a value of the wrong JSON type says
which type it was: the tools validate strictly, so ``"5"``, ``true`` and ``5.0`` are not
taken for the whole number 5.
"""

from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import ValidationError
    from pydantic_core import ErrorDetails

#: At most this many problems are named; the rest are counted.
MAX_NAMED: Final = 3
#: Characters of a rejected value shown back to the caller.
SHOWN_CHARS: Final = 40
#: The forms the tool schemas constrain by pattern (the store checks the same rules).
NODE_TYPE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_-]{0,49}$"
ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]+$"
#: What each pattern means, for "send ...".
PATTERN_FORMS: Final = {
    NODE_TYPE_PATTERN: "a word of letters, digits, _ or -, starting with a letter, at most "
    "50 characters (e.g. fact, decision, note)",
    ID_PATTERN: "a memory id of letters, digits, _ . : or - (at most 128 characters), as "
    "returned by ingest, smart_ingest or search",
}


def explain(exc: ValidationError, schema: dict[str, Any]) -> str:
    """One line for every problem pydantic found with a call's arguments."""
    errors = exc.errors(include_url=False)
    said = [_one(error, schema) for error in errors[:MAX_NAMED]]
    if len(errors) > MAX_NAMED:
        said.append(f"and {len(errors) - MAX_NAMED} more")
    return "; ".join(dict.fromkeys(said))


def unknown(key: str, valid: Sequence[str]) -> str:
    """An argument the tool does not take, and the one that was probably meant."""
    if not valid:
        return f"unknown argument {key!r}: this tool takes no arguments"
    squashed = {_squash(name): name for name in valid}
    guess = squashed.get(_squash(key))
    if guess is None:
        close = difflib.get_close_matches(_squash(key), list(squashed), n=1, cutoff=0.6)
        guess = squashed[close[0]] if close else None
    if guess is not None:
        return f"unknown argument {key!r}; did you mean {guess!r}?"
    return f"unknown argument {key!r}; this tool takes {', '.join(sorted(valid))}"


def _squash(name: str) -> str:
    """``forceCreate``, ``force-create`` and ``force_create`` are one name."""
    return name.lower().replace("_", "").replace("-", "")


def _one(error: ErrorDetails, schema: dict[str, Any]) -> str:
    properties: dict[str, Any] = schema.get("properties", {})
    loc = [part for part in error["loc"] if isinstance(part, int | str)]
    if not loc:
        return f"the arguments are {_shown(error['input'])}: send an object of named arguments"
    name = str(loc[0])
    kind = error["type"]
    if kind == "extra_forbidden":
        return unknown(name, list(properties))
    prop = _resolve(properties.get(name, {}), schema)
    where = f"argument {name!r}"
    for index in (part for part in loc[1:] if isinstance(part, int)):
        prop = _resolve(_non_null(prop).get("items", {}), schema)
        where += f" (item {index})"
    send = f"send {expected(prop, schema)}"
    if kind == "missing":
        return f"{where} is required: {send}"
    value = error["input"]
    ctx = error.get("ctx", {})
    problem = _problem(kind, value, ctx)
    if kind in ("literal_error", "enum") and prop.get("description"):
        send += f" ({prop['description'].rstrip('.')})"
    return f"{where} is {_shown(value)}{problem}: {send}"


#: What was wrong, by pydantic error type, filled from the error's context.
PROBLEMS: Final = {
    "greater_than_equal": ", below {ge}",
    "greater_than": ", not above {gt}",
    "less_than_equal": ", above {le}",
    "less_than": ", not below {lt}",
    "string_too_short": ", shorter than {min_length} characters",
    "string_too_long": ", longer than {max_length:,} characters",
    "too_long": ", more than {max_length}",
    "too_short": ", fewer than {min_length}",
    "string_pattern_mismatch": ", not in the expected form",
    "literal_error": ", not one of the choices",
    "enum": ", not one of the choices",
    "int_from_float": ", not a whole number",
    "value_error": " ({error})",
}


def _problem(kind: str, value: Any, ctx: dict[str, Any]) -> str:
    if value == "":
        return ""  # "is empty" says it
    if kind == "int_type" and isinstance(value, float) and not value.is_integer():
        return PROBLEMS["int_from_float"]
    if kind.endswith("_type"):
        said = _json_type(value)
        return f" ({said})" if said else ""
    try:
        return PROBLEMS.get(kind, "").format(**ctx)
    except (KeyError, ValueError):
        return ""


def expected(prop: dict[str, Any], schema: dict[str, Any]) -> str:
    """What a value of this schema looks like, in words."""
    prop = _resolve(prop, schema)
    alternatives = prop.get("anyOf")
    if alternatives:
        kinds = [a for a in alternatives if a.get("type") != "null"]
        said = " or ".join(expected(a, schema) for a in kinds) or "null"
        return f"{said} (or null)" if kinds and len(kinds) < len(alternatives) else said
    if "enum" in prop or "const" in prop:
        return "one of " + ", ".join(repr(c) for c in prop.get("enum", [prop.get("const")]))
    kind = prop.get("type")
    if kind == "string":
        return _expected_string(prop)
    if kind == "array":
        items = expected(prop.get("items", {}), schema)
        return f"a list{_bounds(prop.get('minItems'), prop.get('maxItems'), 'items')}, each {items}"
    if kind in ("integer", "number"):
        noun = "a whole number" if kind == "integer" else "a number"
        return noun + _range(prop.get("minimum"), prop.get("maximum"))
    return {"boolean": "true or false", "object": "an object"}.get(
        str(kind), "a value as the tool's input schema describes"
    )


def _expected_string(prop: dict[str, Any]) -> str:
    pattern = prop.get("pattern")
    if pattern is not None:
        return PATTERN_FORMS.get(pattern, f"a string matching {pattern}")
    return "a string" + _bounds(prop.get("minLength"), prop.get("maxLength"), "characters")


def _bounds(low: int | None, high: int | None, unit: str) -> str:
    if low is not None and high is not None:
        return f" of {low:,} to {high:,} {unit}"
    if high is not None:
        return f" of at most {high:,} {unit}"
    if low is not None:
        return f" of at least {low:,} {unit[:-1] if low == 1 else unit}"
    return ""


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {_number(low)} to {_number(high)}"
    if high is not None:
        return f" at most {_number(high)}"
    if low is not None:
        return f" of at least {_number(low)}"
    return ""


def _number(bound: float) -> str:
    return f"{bound:,}" if isinstance(bound, int) and abs(bound) >= 10_000 else f"{bound:g}"


def _json_type(value: Any) -> str:
    """The JSON type of a value sent where another was expected (lists, objects and null
    say so in the value itself)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number with a decimal point"
    return ""


def _shown(value: Any) -> str:
    """A rejected value, short enough for one line."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "an object"
    if not isinstance(value, str):
        return repr(value)
    if len(value) > SHOWN_CHARS:
        return f"{_quoted(value[:SHOWN_CHARS])}... ({len(value):,} characters)"
    return _quoted(value) if value else "empty"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    for alternative in prop.get("anyOf", ()):
        if alternative.get("type") != "null":
            return alternative  # type: ignore[no-any-return]
    return prop


def _resolve(prop: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})  # type: ignore[no-any-return]
    return prop
