"""Property tests of the config loader and of the journal's fold.

1. syncd.core.config.parse_config: whatever the text, a Config or a ConfigError whose problems
   each say where (a key path, or a line and column for YAML that does not parse). These found
   scalars that leaked other exceptions (ValueError, KeyError, AttributeError, IndexError,
   OverflowError, RuntimeError, RecursionError), a duration no thread can wait for, `url:` left
   empty dropping its repo without a word, and an empty key or a control character reported
   without a place; each is pinned as an example.
2. syncd.core.journal_state: the fold takes every record verify lets through. This found a
   record with a good hash whose optional `outputs`, `parameters` or `tags` was not a mapping:
   it passed verify and then failed the fold with TypeError (at start-up, in `status`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from syncd.core.cfn_yaml import SafeLoader
from syncd.core.config import BackupConfig, Config, HttpConfig, parse_config
from syncd.core.journal_format import GENESIS, Damage, encode, verify
from syncd.core.journal_state import REQUIRED, JournalState, Kind, Result
from syncd.core.text import quoted
from syncd.errors import ConfigError
from tests.support.properties import (
    JOURNAL_FIELDS,
    YAML_TAGS,
    bounded_settings,
    dump_yaml,
    hostile_text,
    json_values,
    odd_scalars,
    yaml_values,
)

ROOT = Path(__file__).resolve().parents[2]


def property_settings(max_examples: int) -> settings:
    """As the other property files, but a failure is reported as found, not shrunk: shrinking
    a RecursionError costs minutes."""
    return settings(
        bounded_settings(max_examples),
        phases=[Phase.explicit, Phase.generate],
        report_multiple_bugs=False,
    )


BASE = Path("/etc/syncd")
EXAMPLES = {p.name: p.read_text() for p in sorted((ROOT / "config").glob("*.yaml"))}

# --- the config loader ------------------------------------------------------------------------

TOP = ["state_dir", "aws", "backup", "http", "defaults", "concurrency", "repos", "notify"]
AWS = [
    "region",
    "profile",
    "endpoint_url",
    "embedded",
    "role_arn",
    "template_bucket",
    "wait_poll",
    "calls_per_second",
    "external_id",
    "session_name",
    "account_id",
]
TARGET = ["region", "profile", "role_arn", "external_id", "session_name", "account_id"]
COMMIT_STATUS = ["forge", "api_url", "repository", "token_file", "target_url", "per", "context"]
WEBHOOK = ["name", "url", "url_file", "secret_file", "format", "events", "repos", "timeout"]
VERIFY = ["allowed_signers_file", "keyring"]
BACKUP = ["url", "interval", "sse", "kms_key_id", "key_file"]
HTTP = ["listen", "allowed_hosts", "dashboard", "token_file", "users_file"]
OPTIONS = ["capabilities", "approval", "on_failure", "prune", "adopt", "drift_interval", "on_drift"]
REPO = [
    "name",
    "url",
    "branch",
    "poll_interval",
    "watch",
    "webhook_secret_file",
    "deployments",
    "stack_prefix",
    "stacks",
    "init_from",
    *OPTIONS,
]

# Values a real key may be given: good ones, nearly good ones, and wrong types.
NEAR = [
    "5s",
    "500ms",
    "0s",
    "-1s",
    "1.5h",
    "off",
    "9" * 400 + "s",
    "100000000000h",
    "platform",
    "Bad Name",
    "main",
    "--upload-pack=touch x",
    "a..b",
    "/srv/git/app.git",
    "file:///srv/git/app.git",
    "~nosuchuser-syncd/x",
    "~/x",
    "https://git.example.com/a.git",
    "s3://bucket/prefix/",
    "s3://B",
    "http://127.0.0.1:5000",
    "127.0.0.1:9280",
    "[::1]:80",
    "9280",
    "AES256",
    "aws:kms",
    "CAPABILITY_IAM",
    "auto",
    "manual",
    "keep",
    "retry",
    "recreate",
    "report",
    "block",
    "deployments/*.yaml",
    "../x",
    "/abs/*.yaml",
]
VALUES = st.one_of(
    st.sampled_from(NEAR),
    st.lists(st.sampled_from(NEAR), max_size=3),
    st.integers(-(10**400), 10**400),
    yaml_values(max_leaves=6),
)
# Unquoted scalars, bare or tagged, in a real key's place: what a dumper would always quote.
RAW = st.tuples(
    st.sampled_from(["", *YAML_TAGS[:8]]), st.one_of(odd_scalars(), st.sampled_from(NEAR))
)
PLACES = [
    "state_dir: {v}\nrepos: [{{name: a, url: /r}}]\n",
    "state_dir: /s\nconcurrency: {v}\nrepos: [{{name: a, url: /r}}]\n",
    "state_dir: /s\naws: {{calls_per_second: {v}}}\nrepos: [{{name: a, url: /r}}]\n",
    "state_dir: /s\naws: {{wait_poll: {v}}}\nrepos: [{{name: a, url: /r}}]\n",
    "state_dir: /s\nbackup: {{interval: {v}, key_file: {v}}}\nrepos: [{{name: a, url: /r}}]\n",
    "state_dir: /s\nhttp: {{listen: {v}, allowed_hosts: [{v}]}}\nrepos: [{{name: a, url: /r}}]\n",
    "state_dir: /s\nhttp: {{dashboard: {v}, token_file: {v}, users_file: {v}}}\n"
    "repos: [{{name: a, url: /r}}]\n",
    "state_dir: /s\ndefaults: {{capabilities: [{v}], prune: {v}}}\nrepos: [{{name: a, url: /r}}]\n",
    "state_dir: /s\nrepos: [{{name: {v}, url: /r}}]\n",
    "state_dir: /s\nrepos: [{{name: a, url: {v}}}]\n",
    "state_dir: /s\nrepos: [{{name: a, url: /r, poll_interval: {v}, branch: {v}}}]\n",
    "state_dir: /s\nrepos: [{{name: a, url: /r, init_from: {v}, webhook_secret_file: {v}}}]\n",
    "state_dir: /s\nrepos: [{{name: a, url: /r, deployments: [{v}], stack_prefix: {v}}}]\n",
    "state_dir: /s\nrepos: [{{name: a, url: /r, stacks: {{{v}: {{drift_interval: {v}}}}}}}]\n",
]


def section(keys: list[str]) -> st.SearchStrategy[Any]:
    key = st.one_of(st.sampled_from(keys), st.sampled_from(TOP), st.text(max_size=8))
    return st.one_of(st.dictionaries(key, VALUES, max_size=len(keys)), VALUES)


def webhooks() -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(section(WEBHOOK), max_size=2), VALUES)


def repos() -> st.SearchStrategy[Any]:
    stacks = st.dictionaries(
        st.text(max_size=8) | st.sampled_from(["network", "9x"]), section([*OPTIONS, "aws"])
    )
    notify = st.fixed_dictionaries(
        {}, optional={"commit_status": section(COMMIT_STATUS), "webhooks": webhooks()}
    )
    nested = st.fixed_dictionaries(
        {}, optional={"aws": section(TARGET), "notify": notify, "verify": section(VERIFY)}
    )
    repo = st.tuples(section(REPO), stacks, nested).map(
        lambda r: (
            {**r[0], **({"stacks": r[1]} if r[1] else {}), **r[2]}
            if isinstance(r[0], dict)
            else r[0]
        )
    )
    return st.one_of(st.lists(repo, max_size=3), VALUES)


def config_docs() -> st.SearchStrategy[Any]:
    """Config documents with the real keys at every level, each given any value."""
    return st.fixed_dictionaries(
        {},
        optional={
            "state_dir": VALUES,
            "aws": section(AWS),
            "backup": section(BACKUP),
            "http": section(HTTP),
            "defaults": section(OPTIONS),
            "concurrency": VALUES,
            "repos": repos(),
            "notify": st.fixed_dictionaries({}, optional={"webhooks": webhooks()}),
            "extra": VALUES,
        },
    )


def paths_in(doc: object, prefix: str = "", depth: int = 6) -> set[str]:
    """Every key path of a document (`repos[0].stacks.x`), down to the deepest a problem can
    name (a stack's option under a repo)."""
    found = {prefix} if prefix else set()
    if depth and isinstance(doc, dict):
        for key, value in doc.items():
            found |= paths_in(value, f"{prefix}.{key}" if prefix else str(key), depth - 1)
    elif depth and isinstance(doc, list) and prefix:
        for i, value in enumerate(doc):
            found |= paths_in(value, f"{prefix}[{i}]", depth - 1)
    return found


def names_a_path(problem: str, doc: object) -> bool:
    """Whether `problem` starts with a key path of `doc` and ": ". A key may be named as it is
    (an empty one as '') or quoted (`backup.'a b'`); a long problem is cut in its middle
    (syncd.core.text.bounded), and then what is left of its start must lead into the doc."""
    head, cut, _ = problem.partition("…[+")
    return _leads(head if cut else problem, doc, 6, bool(cut), top=True)


def _leads(text: str, node: object, depth: int, cut: bool, top: bool) -> bool:
    if not top and (text.startswith(": ") or (cut and ": ".startswith(text))):
        return True
    if not depth:
        return False
    steps: list[tuple[str, object]] = []
    if isinstance(node, dict):
        dot = "" if top else "."
        for key, value in node.items():
            steps += [(dot + name, value) for name in {str(key) or "''", quoted(key)}]
    elif isinstance(node, list) and not top:
        steps = [(f"[{i}]", value) for i, value in enumerate(node)]
    for step, value in steps:
        if text.startswith(step) and _leads(text[len(step) :], value, depth - 1, cut, False):
            return True
        if cut and step.startswith(text):  # cut inside this very step
            return True
    return False


# Keys a section needs that a mutation may delete (a forge's, a receiver's).
REQUIRED_IN_SECTIONS = ("forge", "repository", "token_file", "api_url", "target_url", "name")

# A YAML error says where; only nesting too deep for the parser may say just that.
_LOCATED = r"not valid YAML: (.*line \d+, column \d+|nested too deeply$)"


def check_config(text: str) -> Config | None:
    try:
        config = parse_config(text, "syncd.yaml", BASE)
    except ConfigError as exc:
        assert exc.source == "syncd.yaml"
        assert exc.problems, "a ConfigError with no problem"
        for problem in exc.problems:
            assert problem.strip(), exc.problems
            if problem.startswith("not valid YAML: "):
                assert re.match(_LOCATED, problem), problem
                continue
            # The document as parse_config read it (syncd's loader: no base-60), for its paths.
            doc = yaml.load(text, Loader=SafeLoader)
            if doc is None:
                doc = {}
            if not isinstance(doc, dict):  # the document itself is wrong, and what it lacks
                assert problem.startswith(("must be a mapping, not ", "state_dir: ", "repos: "))
                continue
            # What a problem may name beyond the document's own keys: a key it lacks.
            repos = doc.get("repos") if isinstance(doc.get("repos"), list) else []
            missing = {"state_dir", "repos", "backup.kms_key_id", "aws.region"}
            missing |= {f"repos[{i}].{k}" for i in range(len(repos)) for k in ("name", "url")}
            # A target's account_id, which a profile of its own needs (in a repo's or a stack's
            # aws block, which may itself be missing).
            lacks_account = re.match(r"repos\[\d+\](\.stacks\.[^ ]+)?\.aws\.account_id: ", problem)
            # Or a key a section lacks that it needs (`...commit_status.api_url: required ...`):
            # then the section itself is in the document.
            lacks = re.match(f"(.+)\\.(?:{'|'.join(REQUIRED_IN_SECTIONS)}): required", problem)
            assert (
                names_a_path(problem, doc)
                or any(problem.startswith(f"{p}: ") for p in missing)
                or lacks_account
                or (lacks and names_a_path(f"{lacks[1]}: ", doc))
            ), problem
        return None
    assert config.repos and len({r.name for r in config.repos}) == len(config.repos)
    assert config.concurrency >= 1
    # a duration a thread waits for (the poll timer, the backup's): it must be waitable
    for seconds in [*(r.poll_interval for r in config.repos), config.backup.interval]:
        assert 0 < seconds <= threading.TIMEOUT_MAX, seconds
    return config


_FOUND = [
    "state_dir: 2001-13-45\nrepos: [{name: a, url: /r}]\n",  # ValueError
    "state_dir: !!bool foo\nrepos: [{name: a, url: /r}]\n",  # KeyError
    "state_dir: !!timestamp foo\nrepos: [{name: a, url: /r}]\n",  # AttributeError
    "state_dir: !!int ''\nrepos: [{name: a, url: /r}]\n",  # IndexError
    "state_dir: " + "1" * 5000 + "\nrepos: [{name: a, url: /r}]\n",  # ValueError
    "state_dir: /s\naws: {calls_per_second: " + "9" * 400 + "}\nrepos: [{name: a, url: /r}]\n",
    "state_dir: ~nosuchuser-syncd/x\nrepos: [{name: a, url: /r}]\n",  # RuntimeError
    "state_dir: /s\nrepos: [{name: a, url: '~nosuchuser-syncd/x'}]\n",  # RuntimeError
    "[" * 5000,  # RecursionError
    "state_dir: /s\nrepos: [{name: a, url: /r, poll_interval: 100000000000h}]\n",  # accepted
    "state_dir: /s\nrepos: [{name: a, url: /r}]\nx: \x00\n",  # "position 24", no line
    "state_dir: /s\nrepos: [{name: a, url: /r}]\n'': 1\n",  # "unknown key", no path
    "state_dir: /s\nrepos: [{name: a, url: /r, stacks: {'': {}}}]\n",  # "repos[0].stacks.: "
    "state_dir: /s\nrepos: [{name: app, url: }]\n",  # a Config without repos, no problem
]


def _examples(texts: list[str]) -> Any:
    def decorate(test: Any) -> Any:
        for text in texts:
            test = example(text)(test)
        return test

    return decorate


@property_settings(200)
@given(hostile_text())
@_examples(_FOUND)
def test_any_text_is_a_config_or_errors_that_say_where(text: str) -> None:
    check_config(text)


@property_settings(200)
@given(
    st.one_of(
        config_docs().map(dump_yaml),
        st.tuples(st.sampled_from(PLACES), RAW).map(
            lambda p: p[0].format(v=f"{p[1][0]} {p[1][1]}".strip() or "''")
        ),
    )
)
@example("state_dir: /s\nrepos: [{name: a, url: /r, poll_interval: !!bool x}]\n")  # KeyError
def test_any_document_with_the_real_keys_is_a_config_or_located_errors(text: str) -> None:
    check_config(text)


_HOSTILE = hostile_text()


def _paths_of(name: str) -> list[str]:
    return sorted(paths_in(yaml.safe_load(EXAMPLES[name])))


@property_settings(150)
@given(
    st.sampled_from(sorted(EXAMPLES)),
    st.sampled_from(["text", "set", "delete"]),
    st.integers(0, 10**6),  # where: an offset in the text, or which key path
    st.integers(0, 20),  # how much text is replaced
    _HOSTILE,
    VALUES,
)
@example("local.yaml", "text", 0, 0, "[" * 5000, None)  # RecursionError
@example("production.example.yaml", "delete", 131072, 10, "x", None)  # lacks api_url
@example("local.yaml", "set", _paths_of("local.yaml").index("repos[0].url"), 0, "", None)
def test_a_mutated_example_config_is_a_config_or_located_errors(
    name: str, how: str, where: int, span: int, insert: str, value: Any
) -> None:
    text = EXAMPLES[name]
    if how == "text":  # a span of the text replaced by hostile text
        start = where % (len(text) + 1)
        text = text[:start] + insert + text[start + span :]
    else:  # one key path of the document given any value, or taken away
        doc = yaml.safe_load(text)
        paths = sorted(paths_in(doc))
        holder, key = _locate(doc, paths[where % len(paths)])
        if how == "delete":
            del holder[key]
        else:
            holder[key] = value
        text = dump_yaml(doc)
    check_config(text)


def _locate(doc: Any, path: str) -> tuple[Any, Any]:
    """The container of `path` in `doc` and its key there."""
    holder: Any = None
    key: Any = None
    node = doc
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        holder = node
        key = int(part[1:-1]) if part.startswith("[") else next(k for k in node if str(k) == part)
        node = node[key]
    return holder, key


@pytest.mark.parametrize(("keys", "loaded"), [(HTTP, HttpConfig), (BACKUP, BackupConfig)])
def test_the_documents_drawn_have_every_key_of_http_and_backup(keys: list[str], loaded: Any):
    """A key the loader reads that these lists leave out is never drawn, and its reader never
    tried (`http.dashboard`, `token_file` and `users_file` were left out once)."""
    assert sorted(keys) == sorted(f.name for f in dataclasses.fields(loaded))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_example_configs_parse(name: str) -> None:
    assert check_config(EXAMPLES[name]) is not None


# --- the journal's fold -----------------------------------------------------------------------


def _required(kind: Kind) -> dict[str, Any]:
    data: dict[str, Any] = {k: 1 if t == (int,) else "x" for k, t in REQUIRED[kind].items()}
    if kind is Kind.RESULT:
        data["result"] = Result.SUCCEEDED.value
    if kind is Kind.DRIFT_CHECKED:
        data["result"] = "in_sync"
    return data


_DEPLOYED = [  # a stack being applied, so that a result record goes the whole way
    (Kind.VERSION, {"repo": "r", "stack": "x", "version": 1, "commit": "c", "digest": "d",
                    "action": "create"}),
    (Kind.EXECUTING, {"stack": "x"}),
]  # fmt: skip


def journal_of(entries: list[tuple[Kind, dict[str, Any]]]) -> bytes:
    prev = GENESIS
    lines = []
    for seq, (kind, data) in enumerate(entries, start=1):
        line, prev = encode(seq, "2026-12-01T00:00:00.000Z", kind.value, data, prev)
        lines.append(line)
    return b"".join(lines)


@property_settings(200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(Kind)),
            st.dictionaries(st.sampled_from(JOURNAL_FIELDS), json_values(max_leaves=6), max_size=6),
        ),
        min_size=1,
        max_size=6,
    )
)
@example([(Kind.OBSERVED, {"outputs": 1})])
@example([(Kind.RESULT, {"outputs": [1]})])
@example([(Kind.VERSION, {"parameters": None})])
@example([(Kind.VERSION, {"tags": "x"})])
def test_the_fold_takes_every_record_verify_lets_through(entries: Any) -> None:
    """Records of real kinds with their required fields, whose other fields hold anything:
    verify keeps each or names it as Damage; what it keeps, the fold takes."""
    full = [*_DEPLOYED, *((kind, {**fields, **_required(kind)}) for kind, fields in entries)]
    try:
        result = verify(journal_of(full), where="segment")
    except Damage:
        return
    state = JournalState()
    for record in result.records:
        state.apply(record)
    # and a snapshot of it (as the store writes one) reads back as the same state
    snapshot = json.loads(json.dumps(state.to_snapshot()))
    assert JournalState.from_snapshot(snapshot).to_snapshot() == snapshot
