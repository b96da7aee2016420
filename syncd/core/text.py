"""Untrusted text made safe to print on a terminal or in a table cell, and short enough to keep.

Pure. File names, reasons and values from a followed repo (and from CloudFormation) reach the
text output of `status`, `sync`, `validate` and `plan`. A control character could move the
cursor, recolour or clear the terminal (ANSI escapes), a newline could forge a row, and a
bidirectional override could make a name read as another. Each is shown as its escape instead.

Anyone who can push to a followed repo chooses those values, and a value can be as long as a
file (a megabyte of stack name). So every reason syncd builds from what it read is cut to a
known length (`bounded`, `quoted`) before it reaches a message, the journal or a log line.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable

# C0 and C1 controls (DEL included), and the bidirectional embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

REASON_LIMIT = 1000  # characters of a whole reason (an invalid stack's, an error's)
VALUE_LIMIT = 100  # characters of one value from a repo quoted inside a reason
PATH_LIMIT = 300  # characters of a file path from a repo shown on its own (a `file` field)
LIST_LIMIT = 5  # items of a list from a repo named in a reason; the rest are counted

# repr of a mapping or list from a repo without walking all of it (a few items, short strings).
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 2
_SHORT_REPR.maxdict = _SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxset = 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60


def printable(text: str) -> str:
    """`text` on one line, every control character shown as its escape (`\\x1b`, `\\n`)."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def bounded(text: str, limit: int = REASON_LIMIT) -> str:
    """`text` made printable and at most `limit` characters long: a longer one keeps its
    start and its end, and says how much was cut in between ("abc…[+1234 characters]…yz")."""
    shown = printable(text)
    if len(shown) <= limit:
        return shown
    keep = limit - 16 - len(str(len(shown)))  # room for the marker and its count
    if keep < 2:
        return shown[:limit]
    head = (keep * 2) // 3
    tail = keep - head
    cut = len(shown) - head - tail
    return f"{shown[:head]}…[+{cut} characters]…{shown[len(shown) - tail :]}"


def quoted(value: object, limit: int = VALUE_LIMIT) -> str:
    """A value from a repo as a reason quotes it (`'app-prod'`, `['a', 'b']`), bounded."""
    text = repr(value) if isinstance(value, str) else _SHORT_REPR.repr(value)
    return bounded(text, limit)


def listed(items: Iterable[object], limit: int = LIST_LIMIT) -> str:
    """`a, b, c and 4 more`: at most `limit` items from a repo named, each bounded."""
    names = list(items)
    shown = ", ".join(bounded(str(n), VALUE_LIMIT) for n in names[:limit])
    rest = len(names) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'parameters'?)` for a word close to one of `choices`, else "". Long
    words (from a repo, any length) are not compared: difflib's cost grows with their square."""
    import difflib

    if len(word) > 64:
        return ""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
