"""A pass over suspended stacks (`syncd suspend`): no change set, no AWS call, no loop; their
approvals refused, their broken files still reported; resumed, applied at once. moto over
HTTP, real Git repos."""

from __future__ import annotations

import threading
from typing import Any

from syncd.apply import Outcome
from syncd.core.journal_state import Kind, StackState, status_rows
from tests.conftest import TOPIC_TEMPLATE, deployment, topic_stack
from tests.integration.conftest import Syncd
from tests.support.timing import PATIENCE


def suspend(s: Syncd, stack: str) -> None:
    s.app.journal.append(Kind.SUSPENDED, repo="r", stack=stack, reason="test", by="t@h")


def resume(s: Syncd, stack: str) -> None:
    s.app.journal.append(Kind.RESUMED, repo="r", stack=stack, by="t@h")


def test_a_suspended_stack_waiting_for_approval_costs_no_pass_and_no_approval(
    repo, aws, syncd, tmp_path
):
    from syncd.approvals import Approval, Approvals

    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo}, defaults={"approval": "manual"})
    assert s.sync().outcomes["s"] is Outcome.AWAITING_APPROVAL
    waiting = s.state.stacks["s"].attempt.change_set
    suspend(s, "s")
    aws.proxy.reset()
    # Its open attempt would make every pass run; suspended, nothing happens to it.
    assert s.sync().skipped and s.sync().skipped
    assert aws.proxy.count() == 0

    Approvals(tmp_path / "state").request(Approval("s", waiting, "alice@host"))
    report = s.sync()
    assert report.outcomes["s"] is Outcome.REFUSED
    refused = [r for r in s.app.journal.records() if r.kind is Kind.APPROVAL_REFUSED]
    assert refused[-1].data["reason"] == "the stack is suspended"
    assert aws.proxy.count("ExecuteChangeSet") == 0
    assert s.state.stacks["s"].attempt.awaiting_approval  # still waits, for after resume

    resume(s, "s")
    Approvals(tmp_path / "state").request(Approval("s", waiting, "alice@host"))
    assert s.sync().outcomes["s"] is Outcome.SUCCEEDED
    assert aws.proxy.count("ExecuteChangeSet") == 1


def test_resumed_on_an_unchanged_commit_the_next_pass_applies_it(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    suspend(s, "s")
    repo.commit({"deployments/s.yaml": deployment(Name="v2")})
    report = s.sync()
    assert report.ok and report.outcomes == {"s": Outcome.SUSPENDED}
    assert s.sync().skipped  # nothing to do while suspended: no loop
    resume(s, "s")  # the commit has not moved since: the pass runs all the same
    assert s.sync().outcomes == {"s": Outcome.SUCCEEDED}
    assert aws.parameters("s") == {"Name": "v2"}
    assert s.sync().skipped


def test_a_broken_file_of_a_suspended_stack_is_still_reported(repo, aws, syncd):
    topic_stack(repo, "s", "v1")
    s = syncd({"r": repo})
    assert s.sync().ok
    suspend(s, "s")
    aws.proxy.reset()
    repo.commit({"deployments/s.yaml": "template-file-path: [broken\n"})
    report = s.sync()
    assert "deployments/s.yaml" in report.invalid["s"]
    assert not report.ok  # the commit is broken, whether or not the stack is suspended
    assert aws.proxy.count() == 0
    assert s.kinds("s")[-1] is Kind.INVALID
    view = s.state.stacks["s"]
    assert view.state is StackState.FAILED and view.invalid_file == "deployments/s.yaml"
    assert status_rows(s.state)[0]["state"] == "suspended"


TWO_PARAMETERS = TOPIC_TEMPLATE.replace(
    "Parameters:\n  Name:\n    Type: String\n",
    "Parameters:\n  Name:\n    Type: String\n  Other:\n    Type: String\n",
)


def test_a_stack_suspended_while_its_pass_runs_is_not_started(repo, aws, syncd):
    def commit(net: str, app: str) -> None:
        repo.commit(
            {
                "templates/topic.yaml": TOPIC_TEMPLATE,
                "templates/two.yaml": TWO_PARAMETERS,
                "deployments/net.yaml": deployment(Name=net),
                "deployments/app.yaml": deployment(
                    "templates/two.yaml", Name=app, Other={"stack-output": "net.TopicName"}
                ),
            }
        )

    commit("n1", "a1")
    s = syncd({"r": repo})
    assert s.sync().ok
    commit("n2", "a2")
    aws.proxy.reset()
    aws.proxy.slow("net", polls=100_000)  # net's update runs until app is suspended
    executing = threading.Event()
    s.app.journal.subscribe(lambda r: executing.set() if r.kind is Kind.EXECUTING else None)
    before_reset: list[Any] = []

    def suspend_app_then_let_net_finish() -> None:
        try:
            if executing.wait(PATIENCE):
                suspend(s, "app")
        finally:
            before_reset.extend(aws.proxy.log)
            aws.proxy.reset()  # net's update completes

    suspender = threading.Thread(target=suspend_app_then_let_net_finish)
    suspender.start()
    report = s.sync()
    suspender.join()
    assert report.outcomes == {"net": Outcome.SUCCEEDED, "app": Outcome.SUSPENDED}
    calls = before_reset + list(aws.proxy.log)
    assert [c.stack for c in calls if c.action == "CreateChangeSet"] == ["net"]
    assert aws.parameters("app") == {"Name": "a1", "Other": "n1"}


def test_requests_are_read_only_from_small_regular_files_in_order(tmp_path):
    import os
    import threading

    import structlog

    from syncd.journal.store import Journal
    from syncd.requests import Request, Requests, deliver

    state = tmp_path / "state"
    journal = Journal.open(state, writer=True, warn=lambda m: None)
    try:
        journal.append(Kind.SUSPENDED, repo="r", stack="", reason="", by="x")  # a journal
        box = Requests(state)
        first = box.send(Request("suspend", "r", (), "first", "ops@host"))
        second = box.send(Request("resume", "r", (), "", "ops@host"))
        other = box.send(Request("suspend", "gone", (), "", "ops@host"))  # not in the config
        os.mkfifo(box.folder / "fifo.json")  # would block a reader that opened it plainly
        (box.folder / "link.json").symlink_to(box.path(first))
        (box.folder / "bad.json").write_text('{"action": "suspend", "repo": 1}')
        done: list[set[str]] = []
        reader = threading.Thread(
            target=lambda: done.append(
                deliver(state, journal, ["r"], structlog.get_logger("test"))
            ),
            daemon=True,
        )
        reader.start()
        reader.join(timeout=PATIENCE)
        assert done == [{"r"}], "the reader blocked"
        recorded = [(r.kind, r.data.get("request")) for r in journal.records(after=1)]
        assert recorded == [(Kind.SUSPENDED, first.id), (Kind.RESUMED, second.id)]
        assert journal.state.repos["r"].suspended is None  # in the order they were made
        assert list(box.folder.iterdir()) == []  # answered, refused (`other`) or junk: gone
        assert other.id not in {r.data.get("request") for r in journal.records()}
    finally:
        journal.close()
