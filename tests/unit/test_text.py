"""Untrusted text on a terminal: control characters shown, never acted on."""

from __future__ import annotations

import pytest

from syncd.core.text import bounded, listed, printable, quoted


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


# --- bounded, quoted, listed ---------------------------------------------------------------


@pytest.mark.parametrize("limit", [10, 40, 100, 1000])
@pytest.mark.parametrize("size", [0, 39, 40, 41, 999, 1000, 1001, 500_000])
def test_bounded_is_never_longer_than_its_limit(limit: int, size: int) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(size))
    shown = bounded(text, limit)
    assert len(shown) <= limit
    if size <= limit:
        assert shown == text
    elif limit >= 40:  # room for the marker: both ends kept, and how much was cut said
        head, marker, tail = shown.split("…")
        assert text.startswith(head) and text.endswith(tail)
        assert marker == f"[+{size - len(head) - len(tail)} characters]"


def test_bounded_escapes_before_it_cuts() -> None:
    shown = bounded("\x1b[2J" * 10_000, 50)
    assert "\x1b" not in shown and len(shown) <= 50
    assert shown.startswith("\\x1b[2J")


def test_quoted_quotes_a_value_like_repr_and_bounds_it() -> None:
    assert quoted("app-prod") == "'app-prod'"
    assert quoted(12345) == "12345"
    long = quoted("x" * 500_000)
    assert len(long) <= 100 and long.startswith("'xxx") and "characters]" in long
    nested = quoted({"k": list(range(100_000))})
    assert len(nested) <= 100 and "..." in nested
    assert "\n" not in quoted("a\nb") and "\x1b" not in quoted("\x1b[31m")


def test_listed_names_a_few_and_counts_the_rest() -> None:
    assert listed([]) == ""
    assert listed(["a", "b"]) == "a, b"
    assert listed([f"f{i}" for i in range(1000)]) == "f0, f1, f2, f3, f4 and 995 more"
    assert len(listed(["y" * 100_000] * 3)) < 400
