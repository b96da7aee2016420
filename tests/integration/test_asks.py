"""The ask folder (syncd.asks) against a real journal on disk: what the daemon takes, what it
refuses, and how a command reads the answers back. Files in state_dir/asks are untrusted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from syncd.asks import Ask, AskBox, _parse, answers, deadline_in, open_asks
from syncd.core.journal_state import Kind
from syncd.journal.store import Journal


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def info(self, event: str, **kw: object) -> None:
        self.events.append((event, kw))

    warning = info


@pytest.fixture
def journal(tmp_path: Path):
    journal = Journal.open(tmp_path, writer=True, warn=lambda m: None)
    yield journal
    journal.close()


GOOD = {"action": "sync", "repo": "r", "stacks": [], "by": "me", "deadline": deadline_in(60)}


@pytest.mark.parametrize(
    "doc, why",
    [
        ([], "not a sync"),
        (GOOD | {"action": "delete"}, "not a sync"),
        (GOOD | {"stacks": "app"}, "not a list"),
        (GOOD | {"stacks": [1]}, "not a list"),
        (GOOD | {"repo": None}, "wrong type"),
        (GOOD | {"deadline": "soon"}, "Invalid isoformat"),
        (GOOD | {"action": "rollback", "stacks": ["a"], "version": True, "commit": "c"}, "one"),
        (GOOD | {"action": "rollback", "stacks": ["a", "b"], "version": 1, "commit": "c"}, "one"),
        (GOOD | {"action": "rollback", "stacks": ["a"], "version": 1}, "one stack"),
    ],
)
def test_an_ask_that_is_not_one_is_refused_with_the_reason(doc, why):
    with pytest.raises(ValueError, match=why):
        _parse(doc, "id")


def test_the_asker_and_the_commit_are_bounded():
    ask = _parse(
        GOOD | {"action": "rollback", "stacks": ["a"], "version": 2, "commit": "c" * 10_000}, "x"
    )
    assert len(ask.commit or "") <= 64 and ask.version == 2
    assert len(_parse(GOOD | {"by": "b" * 10_000}, "x").by) <= 200


def test_the_daemon_journals_good_asks_and_removes_every_file(tmp_path, journal):
    box = AskBox(tmp_path)
    sent = box.send(Ask("sync", "r", ("app",), "me", deadline_in(60)))
    box.send(Ask("sync", "gone", (), "me", deadline_in(60)))  # a repo not in the config
    (box.folder / "junk.json").write_text("{not json")
    os.mkfifo(box.folder / "fifo.json")  # would block a reader that opened it plainly
    (box.folder / "big.json").write_text(json.dumps(GOOD | {"by": "x" * 400_000}))
    log = Log()
    assert box.take(journal, ["r"], log) == {"r"}
    assert sorted(p.name for p in box.folder.iterdir()) == []
    events = [e for e, _ in log.events]
    assert events.count("ask.unreadable") == 3 and "ask.refused" in events and "ask.sync" in events
    [asked] = open_asks(journal.state, "r")
    assert (asked.id, asked.stacks, asked.by) == (sent.id, ("app",), "me")
    assert open_asks(journal.state, "gone") == [] and "gone" not in journal.state.repos


def test_answers_follow_the_records_of_each_ask(tmp_path, journal):
    ask = AskBox(tmp_path).send(Ask("sync", "r", (), "me", deadline_in(60)))
    seen = journal.state.last_seq
    assert answers([ask], journal.records(after=seen))[ask.id].taken is False
    journal.append(Kind.ASKED, request=ask.id, **ask.as_json())
    assert answers([ask], journal.records(after=seen))[ask.id].taken is True
    journal.append(
        Kind.ANSWERED,
        repo="r",
        request=ask.id,
        error=None,
        source_error=None,
        commit="c1",
        outcomes={"app": "succeeded", "odd": "not-an-outcome"},
        invalid={"bad": "deployments/bad.yaml: nope"},
    )
    answer = answers([ask], journal.records(after=seen))[ask.id]
    report = answer.report()
    assert (report.commit, report.invalid) == ("c1", {"bad": "deployments/bad.yaml: nope"})
    assert {n: o.value for n, o in report.outcomes.items()} == {"app": "succeeded"}
    assert open_asks(journal.state, "r") == []


def test_a_deadline_that_is_not_a_time_or_has_no_zone_does_not_break_the_pass():
    from datetime import UTC, datetime

    from syncd.asks import _expired

    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert _expired("not a time", now)
    assert _expired("2026-12-02T11:00:00", now) and not _expired("2026-12-02T13:00:00", now)
    assert not _expired("2026-12-02T13:00:00+00:00", now)
