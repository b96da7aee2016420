"""Shared pieces of the property-based tests (tests/unit/test_properties_*.py): hypothesis
settings, strategies for hostile YAML, JSON and bytes, and an in-memory commit (`MemoryTree`).

The strategies build inputs nobody planned for: text made of YAML's own punctuation, tags
(CloudFormation's short forms and YAML's `!!int`, `!!timestamp`, ...), anchors and aliases,
deep nesting, huge numbers, control and bidirectional characters, and bytes that are not
UTF-8.

The suite draws the same examples at every run (derandomized), so that a red run means a change
broke something, not that this run happened on a new input. `SYNCD_PROPERTIES=explore` draws
new ones, ten times as many: run it after changing a reader (the README's test section has the
command), and pin what it finds with `@example` beside the test. No example database is kept:
a failure prints its minimal example.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from syncd.core.deployments import TreeError


def dump_yaml(value: Any, **options: Any) -> str:
    """yaml.safe_dump through libyaml's emitter: the same text, many times faster on the long
    scalars these strategies make (drawing examples is most of these tests' time)."""
    options.setdefault("sort_keys", False)
    return str(yaml.dump(value, Dumper=yaml.CSafeDumper, **options))


EXPLORE = os.environ.get("SYNCD_PROPERTIES") == "explore"


def bounded_settings(max_examples: int) -> settings:
    """Modest runs without a deadline: the suite's time, not a timing, is what is bounded."""
    return settings(
        max_examples=max_examples * (10 if EXPLORE else 1),
        derandomize=not EXPLORE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- text made of YAML's own pieces ---------------------------------------------------------

CFN_TAGS = [
    "!Ref",
    "!Sub",
    "!GetAtt",
    "!If",
    "!Join",
    "!Select",
    "!Split",
    "!Base64",
    "!Equals",
    "!Not",
    "!And",
    "!Or",
    "!FindInMap",
    "!GetAZs",
    "!ImportValue",
    "!Condition",
    "!Transform",
    "!Cidr",
]
YAML_TAGS = [
    "!!int",
    "!!float",
    "!!bool",
    "!!timestamp",
    "!!str",
    "!!null",
    "!!binary",
    "!!set",
    "!!omap",
    "!!pairs",
    "!!map",
    "!!seq",
    "!!merge",
    "!!value",
    "!<tag:yaml.org,2002:int>",
    "!!python/object/apply:os.system",
    "!!python/name:os.system",
    "!",
    "!!",
    "!foo!bar",
]
KEYS = [
    "Resources",
    "Parameters",
    "Type",
    "Properties",
    "NoEcho",
    "Default",
    "Outputs",
    "Transform",
    "AWSTemplateFormatVersion",
    "template-file-path",
    "parameters",
    "tags",
    "stack-name",
    "stack-output",
    "approval",
    "prune",
    "on-failure",
    "<<",
]
# Scalars YAML 1.1 reads as something other than a string, or fails to read.
ODD_SCALARS = [
    "true",
    "yes",
    "No",
    "off",
    "null",
    "~",
    "",
    "0",
    "-0",
    "+",
    "-",
    "0x",
    "0xFF",
    "0o17",
    "0b101",
    "0777",
    "1_000",
    "1:30",
    "190:20:30",
    "1.5:2",
    ".inf",
    "-.Inf",
    ".NaN",
    "1e400",
    "1.0e+400",
    "6.8523015e+5",
    "2001-12-14",
    "2001-13-45",
    "2001-02-30",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 25:61:61",
    "=",
    "<<",
    "\\ud800",
    "\u202eevil",
    "\u00e9t\u00e9",
    "\U0001f600",
    "\u2028",
    "\x85",
    "\ufeff",
    "\uffff",
]
# Numbers past what Python prints or parses (4,300 digits), in every base YAML 1.1 has, and a
# long base-60 one: (prefix, digits, count), written out by `odd_scalars` (a strategy's repr
# quotes its values, and these would make it megabytes).
_HUGE = [
    ("", "1", 5000),
    ("0x", "f", 4000),
    ("0b", "1", 20000),
    ("-0", "7", 6000),
    ("1", ":1", 300),
]


def odd_scalars() -> st.SearchStrategy[str]:
    """ODD_SCALARS, and numbers far too long to be numbers."""
    huge = st.sampled_from(_HUGE).map(lambda h: h[0] + h[1] * h[2])
    return st.one_of(st.sampled_from(ODD_SCALARS), huge)


PUNCTUATION = [
    "{",
    "}",
    "[",
    "]",
    ", ",
    ",",
    ": ",
    ":",
    "- ",
    "-",
    "? ",
    "\n",
    "\n  ",
    "\n    ",
    "\n- ",
    "  ",
    "\t",
    "'",
    '"',
    "\\",
    "# ",
    "| ",
    "|-\n  ",
    "> ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%YAML 9.9\n",
    "%TAG !e! tag:example.com,2000:\n",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "*missing",
    "&" + "x" * 300 + " ",
    "\r\n",
    "\r",
    "\x00",
    "\x07",
    "\x1b[2J",
    "@",
    "`",
    "%",
]
FRAGMENTS = [*PUNCTUATION, *KEYS, *(t + " " for t in CFN_TAGS + YAML_TAGS)]


def fragment_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Text stitched together from YAML punctuation, keys, tags, odd scalars and any
    characters at all: mostly invalid, often nearly valid, which is where parsers break."""
    piece = st.one_of(st.sampled_from(FRAGMENTS), odd_scalars(), st.text(max_size=8))
    return st.lists(piece, max_size=max_size).map("".join)


def deep_text() -> st.SearchStrategy[str]:
    """Nesting at and past the 100 levels syncd allows, and far past the recursion limit."""
    depth = st.one_of(st.integers(95, 105), st.integers(1000, 20_000))
    return st.one_of(
        depth.map(lambda n: "[" * n + "]" * n),
        depth.map(lambda n: "Resources: " + "[" * n),
        depth.map(lambda n: "{a: " * n + "1" + "}" * n),
        depth.map(lambda n: '{"Resources": ' + "[" * n + "]" * n + "}"),
        depth.map(lambda n: "".join(f"{'  ' * i}- \n" for i in range(min(n, 300)))),
        depth.map(lambda n: "".join(f"{' ' * i}k{i}:\n" for i in range(min(n, 300)))),
        depth.map(lambda n: "!Ref " * min(n, 300) + "x"),
    )


def alias_text() -> st.SearchStrategy[str]:
    """Anchors and aliases: a billion laughs, self-reference, merge keys, undefined aliases."""
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    return st.sampled_from(
        [
            laughs + "Resources: {A: *i}\n",
            "Resources: &r {A: {Type: T, Properties: *r}}\n",
            "a: &a [*a]\nResources: {A: 1}\n",
            "base: &b {Type: T}\nResources: {A: {<<: *b}}\n",
            "Resources: {A: {<<: [*x]}}\n",
            "Resources: &r\n  A: {Type: T}\nOther: *r\n",
            "template-file-path: &t templates/t.yaml\nstack-name: *t\n",
            "Resources: {A: &anchor {Type: T}}\n",
        ]
    )


def odd_json() -> st.SearchStrategy[str]:
    """JSON that parses into what no template holds: numbers too long to read or to be
    finite, NaN, duplicate keys."""
    number = st.sampled_from(["1" * 5000, "-" + "9" * 4400, "1e999999", "NaN", "-Infinity"])
    return st.one_of(
        number.map(lambda n: '{"Resources": {"A": {"Type": "T", "Properties": {"V": ' + n + "}}}}"),
        number.map(lambda n: '{\n  "Resources": ' + n + "\n}"),
        st.just('{"Resources": {"A": {}}, "Resources": {}}'),
    )


def scalar_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**60), max_value=10**60),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        odd_scalars(),
    )


def json_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Values json.dumps and yaml.safe_dump can both write (string keys, finite floats)."""
    return st.recursive(
        scalar_values(),
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(
                st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), children, max_size=5
            ),
        ),
        max_leaves=max_leaves,
    )


def yaml_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Values yaml.safe_dump can write, with keys of every scalar type YAML has."""
    key = st.one_of(
        st.sampled_from(KEYS),
        st.text(max_size=10),
        st.integers(-(10**30), 10**30),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False),
    )
    return st.recursive(
        scalar_values(),
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(key, children, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def _flow_scalar() -> st.SearchStrategy[str]:
    return st.one_of(
        odd_scalars(),
        st.sampled_from(KEYS),
        st.text(max_size=12).map(json.dumps),  # double-quoted, escapes included
        st.integers().map(str),
        st.from_regex(r"[A-Za-z][A-Za-z0-9.]{0,12}", fullmatch=True),
    )


def flow_yaml() -> st.SearchStrategy[str]:
    """YAML written in flow style, with CloudFormation short tags, YAML tags and anchors on
    any node: !Ref/!Sub/!GetAtt/!If as real templates use them, and as no one would."""

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.lists(children, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.lists(st.tuples(_flow_scalar(), children), max_size=4).map(
                lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
            ),
            st.tuples(st.sampled_from(CFN_TAGS + YAML_TAGS), children).map(" ".join),
            st.tuples(st.sampled_from(["&a", "&b", "*a", "*b"]), children).map(" ".join),
        )

    return st.recursive(_flow_scalar(), extend, max_leaves=20)


def block_yaml() -> st.SearchStrategy[str]:
    """Documents yaml.safe_dump writes (block style, every scalar type), sometimes with a
    second document, a duplicate key or a tag spliced in."""
    dumped = yaml_values().map(lambda v: dump_yaml(v, allow_unicode=True))
    return st.one_of(
        dumped,
        st.tuples(dumped, dumped).map(lambda d: d[0] + "---\n" + d[1]),
        st.tuples(dumped, st.sampled_from(CFN_TAGS + YAML_TAGS)).map(
            lambda d: d[0].replace(": ", f": {d[1]} ", 1)
        ),
        dumped.map(lambda d: d + d),  # every key twice, when it is a mapping
    )


def hostile_text() -> st.SearchStrategy[str]:
    """Every kind of text above."""
    return st.one_of(
        st.text(max_size=200),
        fragment_text(),
        flow_yaml(),
        block_yaml(),
        json_values().map(json.dumps),
        deep_text(),
        alias_text(),
        odd_json(),
    )


def hostile_bytes() -> st.SearchStrategy[bytes]:
    """Hostile text as UTF-8, and bytes that are not UTF-8 (a binary file, a UTF-16 one)."""
    return st.one_of(
        hostile_text().map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=200),
        hostile_text().map(lambda t: t.encode("utf-16")),
        st.sampled_from([b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xfe\x00", b"\x00" * 64]),
    )


# Every field some kind of journal record carries (syncd.core.journal_state.Kind's comments).
JOURNAL_FIELDS = [
    "repo", "stack", "commit", "previous", "forced", "changes", "message", "file", "reason",
    "version", "digest", "action", "deployment_file", "template_file", "parameters", "tags",
    "dependencies", "rollback_of", "arn", "name", "awaiting_approval", "change_set", "by",
    "result", "stack_status", "outputs", "retryable", "drift", "detection", "resources",
    "more_resources", "request", "stacks", "deadline", "error", "source_error", "invalid",
    "outcomes", "refused", "stack_id",
]  # fmt: skip


# --- an in-memory commit ----------------------------------------------------------------------


class MemoryTree:
    """A commit's files held in a dict: the deployments `Tree` protocol without Git."""

    def __init__(self, files: Mapping[str, str | bytes]) -> None:
        self.files = {
            path: data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
            for path, data in files.items()
        }

    def paths(self) -> Iterable[str]:
        return list(self.files)

    def read(self, path: str) -> bytes:
        try:
            return self.files[path]
        except KeyError:
            raise TreeError(f"{path!r} is not in the commit") from None

    def blob_id(self, path: str) -> str:
        if path not in self.files:
            raise TreeError(f"{path!r} is not in the commit")
        return hashlib.sha1(self.files[path]).hexdigest()
