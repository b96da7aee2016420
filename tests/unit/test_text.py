"""Untrusted text on a terminal: control characters shown, never acted on."""

from __future__ import annotations

import pytest

from syncd.core.text import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name-1.yaml", "plain name-1.yaml"),
        ("a\x1b[2J\x1b[31mred", "a\\x1b[2J\\x1b[31mred"),
        ("bad.yaml\n  good  ok", "bad.yaml\\n  good  ok"),
        ("tab\there\r", "tab\\there\\r"),
        ("evil\u202etxt.yaml", "evil\\u202etxt.yaml"),
        ("del\x7fc1\x9b", "del\\x7fc1\\x9b"),
        ("ünïcode ✓", "ünïcode ✓"),
    ],
)
def test_control_characters_are_shown_as_escapes(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert "\n" not in printable(text)
