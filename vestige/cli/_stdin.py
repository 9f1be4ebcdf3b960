"""Text read from standard input (``vestige ingest -``, ``vestige edit --content -``).

Read as bytes and decoded here, not through ``sys.stdin``: Python's text layer turns bytes
that are not UTF-8 into lone surrogates (under a C or POSIX locale) or a traceback, and the
store could then only say "a lone surrogate", which names neither the byte nor the cause.
At most one byte more than a memory may hold is read, so ``< /dev/zero`` ends at once with a
message instead of filling memory.
"""

from __future__ import annotations

import codecs
import sys
from typing import BinaryIO

from vestige import config
from vestige.errors import InvalidInput


def read_text(stream: BinaryIO | None = None) -> str:
    """Standard input as UTF-8 text (a leading BOM dropped); one clear error otherwise."""
    source = sys.stdin.buffer if stream is None else stream
    limit = config.MAX_CONTENT_BYTES
    data = source.read(limit + len(codecs.BOM_UTF8) + 1)
    data = data.removeprefix(codecs.BOM_UTF8)
    if len(data) > limit:
        raise InvalidInput(
            f"standard input holds more than {limit:,} bytes; the limit for a memory is "
            f"{limit:,} bytes (UTF-8)",
            hint="Split it into several smaller memories.",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"standard input is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start})",
            hint="Convert it to UTF-8 first, naming the encoding it is in (for example: "
            "iconv -f LATIN1 -t UTF-8 FILE), and pipe that in.",
        ) from None
