"""Untrusted text made safe to print on a terminal or in a table cell.

Pure. File names, reasons and values from a followed repo (and from CloudFormation) reach the
text output of `status`, `sync`, `validate` and `plan`. A control character could move the
cursor, recolour or clear the terminal (ANSI escapes), a newline could forge a row, and a
bidirectional override could make a name read as another. Each is shown as its escape instead.
"""

from __future__ import annotations

import re

# C0 and C1 controls (DEL included), and the bidirectional embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` on one line, every control character shown as its escape (`\\x1b`, `\\n`)."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
